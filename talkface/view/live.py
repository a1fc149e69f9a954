"""Live mode's glue: PCM from the page in, final frames out, through talkface's own streamer.

``open_live_stream`` is the one place that builds a stream (``talkface.live.open_stream``, the code
``talkface stream`` runs); ``LiveStream.push``/``finish`` return frame records in ``talkface stream
--frames`` format (``io.frames``: uint32 LE index, then V×3 float32 LE metres), ready to send.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from talkface import live
from talkface.errors import AudioError, ConfigError
from talkface.inference.generate import check_finite_output
from talkface.inference.stream import StreamConfig
from talkface.io.frames import encode_frames

PCM_FORMATS = ("s16le", "f32le")
MAX_LOOKAHEAD_MS = 5000.0


@dataclass(frozen=True)
class LiveOptions:
    """``talkface view --live`` flags: what every stream of this server is opened with.

    Attributes:
        checkpoint: run folder or ``.safetensors``.
        style: the style the page starts with.
        lookahead_ms: the look-ahead the page starts with.
        hop_ms: least new audio per pass; None: measured at start (``auto_hop_ms``).
        context_ms, memory_s: as ``talkface stream``.
        subject, template: whose face (as ``talkface stream``).
        device: torch device.
    """

    checkpoint: Path
    style: str
    lookahead_ms: float = 200.0
    hop_ms: float | None = None
    context_ms: float = 3000.0
    memory_s: float | None = 20.0
    subject: str | None = None
    template: Path | None = None
    device: str = "cpu"


def open_live_stream(options: LiveOptions, style: str, lookahead_ms: float) -> Any:
    """A fresh ``live.StreamSetup`` for one utterance (model loaded, style and template chosen).

    Raises:
        ConfigError, CheckpointError, TemplateError: as ``talkface stream`` (unknown style, bad look-ahead, ...).
    """
    if not 0 <= lookahead_ms <= MAX_LOOKAHEAD_MS:
        raise ConfigError(f"look-ahead {lookahead_ms} ms; expected 0..{MAX_LOOKAHEAD_MS:g} ms")
    config = StreamConfig(lookahead_ms=lookahead_ms, hop_ms=options.hop_ms or 0.0, context_ms=options.context_ms,
                          memory_s=options.memory_s)
    return live.open_stream(options.checkpoint, style, subject=options.subject, template=options.template,
                                 device=options.device, config=config, hop_ms=options.hop_ms)


def decode_pcm(data: bytes, pcm_format: str) -> np.ndarray:
    """(S,) float32 in [-1, 1] from little-endian s16 or f32 bytes.

    Raises:
        AudioError: a byte count that is not whole samples, or non-finite f32 samples.
    """
    width = 2 if pcm_format == "s16le" else 4
    if len(data) % width:
        raise AudioError(f"a PCM message of {len(data)} bytes is not whole {pcm_format} samples ({width} bytes each)")
    if pcm_format == "s16le":
        return np.frombuffer(data, "<i2").astype(np.float32) / 32768.0
    samples = np.frombuffer(data, "<f4").astype(np.float32)
    if not np.isfinite(samples).all():
        raise AudioError("the PCM message holds NaN or infinite samples; send audio in [-1, 1]")
    return np.clip(samples, -1.0, 1.0)


class LiveStream:
    """One utterance: PCM in, frame records out (each ``bytes`` holds n records, possibly none).

    Args:
        setup: from ``open_live_stream``.
        pcm_format: ``s16le`` or ``f32le``.
    """

    def __init__(self, setup: Any, pcm_format: str) -> None:
        if pcm_format not in PCM_FORMATS:
            raise ConfigError(f"PCM format {pcm_format!r}; expected one of {', '.join(PCM_FORMATS)}")
        self.setup = setup
        self.pcm_format = pcm_format
        self.samples = 0

    def _records(self, frames: np.ndarray) -> bytes:
        streamer = self.setup.streamer
        frames = check_finite_output(frames, streamer.model, checkpoint="the checkpoint", audio="the page's audio")
        return encode_frames(streamer.emitted - frames.shape[0], frames) if frames.shape[0] else b""

    def push(self, data: bytes) -> bytes:
        """Feed one PCM message; the records of the frames that became final."""
        samples = decode_pcm(data, self.pcm_format)
        self.samples += samples.size
        return self._records(self.setup.streamer.push(samples))

    def finish(self) -> bytes:
        """End of the utterance: the remaining records (none when no audio came)."""
        if self.samples == 0:
            return b""
        try:
            return self._records(self.setup.streamer.finish())
        except AudioError:
            return b""  # shorter than one motion frame: nothing to draw

    @property
    def emitted(self) -> int:
        return int(self.setup.streamer.emitted)

    def describe(self) -> dict[str, Any]:
        """What the page shows and needs: rates, sizes, style, look-ahead, the styles to switch to."""
        s = self.setup
        return {"fps": s.fps, "num_vertices": s.num_vertices, "style": s.style, "subject": s.subject,
                "lookahead_ms": s.streamer.config.lookahead_ms, "hop_ms": s.hop_ms,
                "pass_ms": round(s.pass_seconds * 1e3, 1), "styles": list(s.streamer.model.config.speakers),
                "sample_rate": 16000, "format": self.pcm_format}
