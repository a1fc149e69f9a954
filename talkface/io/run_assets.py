"""The run folder: what ``train`` writes next to its checkpoints so that ``animate``, ``render`` and
``evaluate`` need nothing else.

Layout::

    RUN/config.json       resolved train + model config, dataset path, versions
    RUN/best.safetensors  best validation checkpoint (self-describing: config inside)
    RUN/last.safetensors  checkpoint of the last finished epoch
    RUN/metrics.jsonl     one JSON object per epoch (train loss, val loss, val LVE, seconds)
    RUN/loss.png          train/val loss and val LVE curves
    RUN/state.pt          resumable state: weights, optimizer, RNG states, data order, position
    RUN/tensorboard/      TensorBoard event files (when tensorboard is installed)
    RUN/templates.npz     (V, 3) float32 neutral face per speaker of the dataset
    RUN/faces.npy         (F, 3) int32 topology, when the dataset has one
    RUN/regions.npz       vertex index sets (lips, forehead, eye_region, ...), when known
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talkface.errors import CheckpointError, TemplateError
from talkface.io.checkpoint_meta import RUN_FILES
from talkface.io.fileio import Reads, atomic_path, file_exists, read_npy, read_npz, reading, reading_folder
from talkface.io.mesh import check_face_indices

RUN_ASSETS = ("templates.npz", "faces.npy", "regions.npz")


def run_reads(checkpoint: str | os.PathLike[str]) -> Reads:
    """The files ``animate``, ``render`` and ``evaluate`` read for ``--checkpoint`` (for ``fileio.check_paths``).

    A run folder: its checkpoints and assets; a checkpoint file: itself and the assets of its folder
    (``load_run_assets`` reads them there). Reports, plots and animations kept in the run folder are not
    read, so ``--overwrite`` may replace them.
    """
    path = Path(checkpoint)
    if path.is_dir():
        return Reads(path, path, (*RUN_FILES, *RUN_ASSETS))
    return Reads(path, path.parent, (path.name, *RUN_ASSETS))


@dataclass(frozen=True)
class RunAssets:
    """Templates, topology and regions stored with a run (or a prepared dataset)."""

    templates: dict[str, np.ndarray]
    faces: np.ndarray | None
    regions: dict[str, np.ndarray]


def copy_run_assets(data_dir: str | os.PathLike[str], run_dir: str | os.PathLike[str]) -> None:
    """Copy the dataset's templates/faces/regions into the run folder (atomically, file by file)."""
    for name in RUN_ASSETS:
        src = Path(data_dir) / name
        if src.is_file():
            with atomic_path(Path(run_dir) / name) as tmp:
                shutil.copyfile(src, tmp)


def load_run_assets(folder: str | os.PathLike[str]) -> RunAssets:
    """Read templates/faces/regions from a run folder or a prepared dataset; missing files give empties.

    Raises:
        CheckpointError: a file exists but cannot be read.
    """
    folder = Path(folder)
    templates: dict[str, np.ndarray] = {}
    regions: dict[str, np.ndarray] = {}
    faces = None
    hint = "copy the run folder again, or re-run training"
    with reading_folder(folder, "it as part of the run folder", CheckpointError, hint):
        present = {name: file_exists(folder / name) for name in RUN_ASSETS}  # a symlink loop is not "absent"
    if present["templates.npz"]:
        templates = read_npz(folder / "templates.npz", "the run's templates", CheckpointError, hint)
        with reading(folder / "templates.npz", "the run's templates", CheckpointError, hint):
            templates = {k: v.astype(np.float32) for k, v in templates.items()}
    if present["faces.npy"]:
        faces = read_npy(folder / "faces.npy", "the run's mesh faces", CheckpointError, hint)
        with reading(folder / "faces.npy", "the run's mesh faces", CheckpointError, hint):
            faces = faces.astype(np.int32)
        if templates and faces.size:  # an index outside the mesh would fail far away, in a renderer or glTF writer
            num_vertices = next(iter(templates.values())).shape[0]
            try:
                faces = check_face_indices(faces, num_vertices, str(folder / "faces.npy"))
            except TemplateError as e:
                raise CheckpointError(f"{e}; {hint}") from e
    if present["regions.npz"]:
        regions = read_npz(folder / "regions.npz", "the run's regions", CheckpointError, hint)
        with reading(folder / "regions.npz", "the run's regions", CheckpointError, hint):
            regions = {k: v.astype(np.int64) for k, v in regions.items()}
    return RunAssets(templates, faces, regions)
