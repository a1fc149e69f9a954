"""The wire formats of ``talkface stream``: raw PCM in, mesh frame records out.

Input: 16 kHz mono signed 16-bit little-endian PCM (``arecord -f S16_LE -r 16000 -c 1 -t raw``,
``ffmpeg -f s16le -ar 16000 -ac 1 -``), in pieces of any size: ``PcmDecoder`` keeps an odd trailing
byte for the next piece.

Output (``--frames``): one record per frame, nothing else, no header::

    uint32 little-endian frame index | V*3 float32 little-endian vertex coordinates in metres (x, y, z per vertex)

so a record has ``4 + 12 V`` bytes (60280 for FLAME's 5023 vertices) and frame i is the face at
time i / fps. ``read_frames`` reads them back; it needs V (``talkface info RUN`` shows the model's).

Rig weights (``--weights`` with ``--rig``): the same layout with the K weights of frame i (in the rig's
target order, which ``stream`` prints at start) in place of the vertices::

    uint32 little-endian frame index | K float32 little-endian weights

(``4 + 4 K`` bytes; ``read_weight_records`` reads them back).
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

from talkface.errors import StreamError
from talkface.io.audio import to_float32

INDEX = struct.Struct("<I")
PCM_DTYPE = np.dtype("<i2")


def record_size(num_vertices: int) -> int:
    """Bytes per frame record: 4 + 12 V."""
    return INDEX.size + 12 * num_vertices


def encode_frame(index: int, vertices: np.ndarray) -> bytes:
    """One record: the frame index, then (V, 3) vertices as float32 little-endian."""
    return INDEX.pack(index) + np.ascontiguousarray(vertices, dtype="<f4").tobytes()


def encode_frames(first: int, vertices: np.ndarray) -> bytes:
    """Records of frames ``first .. first + n - 1`` from (n, V, 3) vertices, in one buffer."""
    return encode_rows(first, np.asarray(vertices).reshape(vertices.shape[0], -1))


def encode_rows(first: int, rows: np.ndarray) -> bytes:
    """Records ``uint32 index | C float32`` of frames ``first .. first + n - 1`` from (n, C) rows."""
    n, c = rows.shape
    out = np.empty((n, INDEX.size + 4 * c), np.uint8)
    out[:, : INDEX.size] = np.arange(first, first + n, dtype="<u4").view(np.uint8).reshape(n, INDEX.size)
    out[:, INDEX.size:] = np.ascontiguousarray(rows, dtype="<f4").view(np.uint8)
    return out.tobytes()


def read_weight_records(stream: BinaryIO, num_weights: int) -> Iterator[tuple[int, np.ndarray]]:
    """Weight records (``--weights``) as they arrive: (frame index, (K,) float32 weights).

    Raises:
        StreamError: the stream ends inside a record (the writer died, or K is wrong).
    """
    yield from _read_records(stream, num_weights, "weight stream", "check the rig's target count")


def _read_records(stream: BinaryIO, floats: int, what: str, hint: str) -> Iterator[tuple[int, np.ndarray]]:
    """``uint32 index | floats × float32`` records as they arrive; ``what`` and ``hint`` for a cut record."""
    size = INDEX.size + 4 * floats
    while True:
        data = _read_exactly(stream, size)
        if not data:
            return
        if len(data) < size:
            raise StreamError(f"{what} ended inside a record ({len(data)} of {size} bytes); expected records of "
                              f"4 + 4 x {floats} bytes: {hint}")
        yield INDEX.unpack_from(data)[0], np.frombuffer(data, dtype="<f4", offset=INDEX.size).astype(np.float32)


def write_records(stream: BinaryIO, data: bytes) -> None:
    """Write all of ``data`` to ``stream`` and flush: through its file descriptor when it has one (a pipe,
    stdout, a file), looping until every byte is out, so that no record is ever cut in two; else with its
    own ``write``."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        stream.write(data)
        stream.flush()
        return
    stream.flush()  # whatever the buffered stream still holds goes first
    view, done = memoryview(data), 0
    while done < len(view):
        done += os.write(fd, view[done:])


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    chunks, got = [], 0
    while got < size:
        chunk = stream.read(size - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_frames(stream: BinaryIO, num_vertices: int) -> Iterator[tuple[int, np.ndarray]]:
    """Frame records from a binary stream (a pipe, ``sys.stdin.buffer``, a file), as they arrive.

    Args:
        stream: opened for binary reading.
        num_vertices: V of the model that wrote them.

    Yields:
        (frame index, (V, 3) float32 vertices in metres).

    Raises:
        StreamError: the stream ends inside a record (the writer died, or V is wrong).
    """
    for index, values in _read_records(stream, 3 * num_vertices, "frame stream",
                                       f"check the vertex count of the model that wrote them (V = {num_vertices})"):
        yield index, values.reshape(num_vertices, 3)


class PcmDecoder:
    """s16le bytes in pieces of any size -> float32 samples in [-1, 1) (an odd byte waits for the next)."""

    def __init__(self) -> None:
        self.pending = b""

    def decode(self, data: bytes) -> np.ndarray:
        """(S,) float32 samples of ``pending + data``, keeping an odd trailing byte."""
        data = self.pending + data
        cut = len(data) - len(data) % 2
        self.pending = data[cut:]
        return to_float32(np.frombuffer(data[:cut], dtype=PCM_DTYPE).astype(np.int16))
