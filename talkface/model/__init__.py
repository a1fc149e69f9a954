"""The model: FaceFormer (wav2vec 2.0 encoder + autoregressive decoder), its checkpoints and FaceFormer import.

Imports torch; the CLI imports it only inside the commands that run it. See ``talkface.model.talkface``
for the forward pass.
"""

from talkface.model.audio_encoder import (
    BUILTIN_ENCODERS,
    AudioEncoder,
    builtin_encoder_info,
    load_pretrained_encoder_config,
    tiny_encoder_config,
    wav2vec2_base_config,
)
from talkface.model.checkpoint import (
    load_checkpoint,
    read_checkpoint_meta,
    resolve_checkpoint,
    save_checkpoint,
    sniff_format,
)
from talkface.model.faceformer_import import convert_faceformer_state, import_faceformer, load_faceformer_state
from talkface.model.feature_cache import CACHE_DIR, FeatureCache
from talkface.model.masks import alibi_slopes, alignment_mask, biased_causal_mask
from talkface.model.positional import PeriodicPositionalEncoding, periodic_encoding, sinusoid_table
from talkface.model.talkface import ModelOutput, TalkFaceModel

__all__ = [
    "TalkFaceModel",
    "ModelOutput",
    "AudioEncoder",
    "FeatureCache",
    "CACHE_DIR",
    "BUILTIN_ENCODERS",
    "builtin_encoder_info",
    "tiny_encoder_config",
    "wav2vec2_base_config",
    "load_pretrained_encoder_config",
    "alibi_slopes",
    "biased_causal_mask",
    "alignment_mask",
    "PeriodicPositionalEncoding",
    "periodic_encoding",
    "sinusoid_table",
    "save_checkpoint",
    "load_checkpoint",
    "read_checkpoint_meta",
    "resolve_checkpoint",
    "sniff_format",
    "import_faceformer",
    "convert_faceformer_state",
    "load_faceformer_state",
]
