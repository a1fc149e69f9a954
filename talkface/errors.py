"""The TalkfaceError family: the only exception types the CLI turns into one-line messages.

Each message says what was expected, what was found and what to do. Library code raises these and
never prints; ``talkface.cli`` maps them to a red line on stderr and exit code 1.
"""

from __future__ import annotations


class TalkfaceError(Exception):
    """Base class of every error a user can cause (bad file, bad flag, missing dependency)."""


class ConfigError(TalkfaceError):
    """A configuration value or flag is out of range or inconsistent."""


class AudioError(TalkfaceError):
    """An audio file is missing, unreadable, empty or not finite."""


class TemplateError(TalkfaceError):
    """A template mesh is missing or does not match the model's vertex count."""


class DatasetError(TalkfaceError):
    """A raw or prepared dataset is malformed, incomplete or unsafe to read."""


class CheckpointError(TalkfaceError):
    """A checkpoint is missing, truncated, foreign or of an unsupported format version."""


class RenderError(TalkfaceError):
    """No OpenGL context could be made, a frame came out empty, or encoding failed."""


class EncoderError(TalkfaceError):
    """The pretrained wav2vec 2.0 encoder could not be loaded (offline, wrong path)."""


class OutputError(TalkfaceError):
    """An output path cannot be written (exists without --overwrite, is a folder, read-only)."""


class InterruptedRun(TalkfaceError):
    """Work was stopped by Ctrl-C after saving what was done; the message says how to resume.

    The CLI prints the message and exits 130 (the shell's code for SIGINT), not 1.
    """


class StreamError(TalkfaceError):
    """A live stream broke: a frame record cut short, or a reader or writer went away."""


class RigError(TalkfaceError):
    """A blendshape rig is unreadable, on another topology, or cannot be solved for (a target named)."""
