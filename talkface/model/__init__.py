"""FaceFormer, faithfully: wav2vec 2.0 encoder + autoregressive transformer decoder (imports torch).

Only imported lazily by the CLI; see ``talkface.model.talkface`` for the forward pass.
"""

from talkface.model.audio_encoder import (
    AudioEncoder,
    load_pretrained_encoder_config,
    tiny_encoder_config,
    wav2vec2_base_config,
)
from talkface.model.masks import alibi_slopes, alignment_mask, biased_causal_mask
from talkface.model.positional import PeriodicPositionalEncoding, periodic_encoding, sinusoid_table
from talkface.model.talkface import ModelOutput, TalkFaceModel

__all__ = [
    "TalkFaceModel",
    "ModelOutput",
    "AudioEncoder",
    "tiny_encoder_config",
    "wav2vec2_base_config",
    "load_pretrained_encoder_config",
    "alibi_slopes",
    "biased_causal_mask",
    "alignment_mask",
    "PeriodicPositionalEncoding",
    "periodic_encoding",
    "sinusoid_table",
]
