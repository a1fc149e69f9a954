"""talkface: speech-driven 3D facial animation (FaceFormer + Soft-DTW loss).

Axis letters used in shapes throughout the code:
    B batch, S audio samples (16 kHz), A audio frames (50 Hz), T motion frames (fps),
    V vertices, F faces, D model width, H/W image height/width.

Importing this package is cheap: torch, transformers and pyrender are imported lazily by the
modules that need them.
"""

from talkface._version import __version__
from talkface.errors import (
    AudioError,
    CheckpointError,
    ConfigError,
    DatasetError,
    EncoderError,
    OutputError,
    RenderError,
    TalkfaceError,
    TemplateError,
)

__all__ = [
    "__version__",
    "TalkfaceError",
    "ConfigError",
    "AudioError",
    "TemplateError",
    "DatasetError",
    "CheckpointError",
    "RenderError",
    "EncoderError",
    "OutputError",
]
