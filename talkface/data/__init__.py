"""Datasets: preparing raw sources into talkface's prepared format, and reading it for training.

``prepare_*`` convert one source each (VOCASET raw, FaceFormer's processed layout, BIWI, your own
folder) into the format documented in ``talkface.data.prepared``; ``load_prepared`` and ``pad_batch``
feed training. Pickles are read only through ``talkface.data.pickles``. torch is imported lazily.
"""

from talkface.data.biwi import prepare_biwi, read_vl, read_vl_folder
from talkface.data.collate import Batch, pad_batch
from talkface.data.dataset import Clip, ClipInfo, PreparedDataset, load_prepared
from talkface.data.faceformer import prepare_faceformer
from talkface.data.folder import prepare_folder
from talkface.data.prepared import PrepareReport
from talkface.data.vocaset import prepare_vocaset

__all__ = [
    "prepare_vocaset",
    "prepare_faceformer",
    "prepare_biwi",
    "prepare_folder",
    "read_vl",
    "read_vl_folder",
    "PrepareReport",
    "load_prepared",
    "PreparedDataset",
    "ClipInfo",
    "Clip",
    "pad_batch",
    "Batch",
]
