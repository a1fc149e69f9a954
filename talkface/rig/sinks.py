"""Rig weights for a live stream: a frame sink (``talkface.live.FrameSink``) that solves each final frame's weights
and hands them to weight consumers: records or CSV lines (``--weights``) and Live Link Face packets (``--livelink``).

The solve is ``LiveRetargeter`` (causal: with ``--smooth`` each frame is pulled towards the previous one,
never towards the future), so a frame's weights leave as soon as its vertices are final.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, TextIO

import numpy as np

from talkface.errors import OutputError
from talkface.io.blendshapes import LiveLinkSender
from talkface.io.frames import encode_rows, write_records
from talkface.rig.retargeting import LiveRetargeter, Setup

WEIGHT_STREAM_FORMATS = ("bin", "csv")


class WeightRecords:
    """``uint32 index | K float32`` records to a binary stream, flushed per batch (``--weights``, format bin)."""

    def __init__(self, stream: BinaryIO, *, owned: bool = False) -> None:
        self.stream, self.owned = stream, owned

    def write(self, first: int, weights: np.ndarray) -> None:
        write_records(self.stream, encode_rows(first, weights))

    def close(self) -> None:
        if self.owned:
            self.stream.close()


class WeightLines:
    """CSV lines ``frame,time_s,<name>...`` to a text stream, a header first, flushed per batch (format csv)."""

    def __init__(self, stream: TextIO, names: tuple[str, ...], fps: float, *, owned: bool = False) -> None:
        self.stream, self.fps, self.owned = stream, fps, owned
        self.stream.write(",".join(["frame", "time_s", *names]) + "\n")
        self.stream.flush()

    def write(self, first: int, weights: np.ndarray) -> None:
        lines = [f"{first + i},{(first + i) / self.fps:.6f}," + ",".join(f"{x:.6g}" for x in row)
                 for i, row in enumerate(weights)]
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.owned:
            self.stream.close()


class LiveLinkOut:
    """Live Link Face packets, one per frame (``--livelink``); a refused or unreachable port never stops the stream."""

    def __init__(self, sender: LiveLinkSender) -> None:
        self.sender = sender

    def write(self, first: int, weights: np.ndarray) -> None:
        for i, row in enumerate(weights):
            self.sender.send(first + i, row)

    def close(self) -> None:
        self.sender.close()


def open_weight_file(path: Path, fmt: str, names: tuple[str, ...], fps: float) -> WeightRecords | WeightLines:
    """A consumer writing ``path`` (its folder created; checked beforehand by the caller's path checks)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "csv":
            return WeightLines(open(path, "w", encoding="utf-8"), names, fps, owned=True)  # noqa: SIM115
        return WeightRecords(open(path, "wb"), owned=True)  # noqa: SIM115 - closed by close()
    except OSError as e:
        raise OutputError(f"--weights {path}: cannot create the file ({e.strerror or e}); choose another path") from e


class RigSink:
    """Solves every final frame's rig weights and passes them to ``consumers`` (each ``write(first, weights)``,
    ``close()``); ``count`` says how many frames it solved.

    Args:
        prepared: the rig set up for its fit region and options (``retargeting.setup``).
        neutral: (V, 3) the stream's neutral face (its template): displacements are taken from it.
        consumers: weight consumers.
    """

    def __init__(self, prepared: Setup, neutral: np.ndarray, consumers: list) -> None:
        self.retargeter = LiveRetargeter(prepared, neutral)
        self.consumers = consumers
        self.count = 0

    def write(self, first: int, vertices: np.ndarray) -> None:
        weights = self.retargeter.push(vertices)
        for consumer in self.consumers:
            consumer.write(first, weights)
        self.count += weights.shape[0]

    def close(self) -> None:
        for consumer in self.consumers:
            consumer.close()

    abort = close  # weights already sent cannot be taken back
