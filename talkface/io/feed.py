"""Audio pieces for a live stream, made by a producer thread and taken all at once by the consumer.

Producers: ``pcm_producer`` (raw s16le from a file descriptor, e.g. stdin) and ``file_producer`` (a
loaded waveform, paced at 1x or not). A browser socket or a microphone library plugs in as another
``produce(put)`` function.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from talkface.io.audio import SAMPLE_RATE

Producer = Callable[[Callable[[np.ndarray], None]], None]  # produce(put): put each (S,) float32 piece


class AudioFeed:
    """Audio pieces made by a producer thread, handed over in arrival order.

    ``produce(put)`` calls ``put(samples)`` for each (S,) float32 piece and returns at the end of the
    input; its exception is re-raised by the iteration. Each step of the iteration takes every piece
    waiting, so a consumer that fell behind catches up in one step and knows by how much (``last_batch_s``).
    """

    def __init__(self, produce: Producer) -> None:
        self.queue: queue.Queue[np.ndarray | None] = queue.Queue()
        self.error: BaseException | None = None
        self.samples = 0
        self.last_batch_s = 0.0
        self.thread = threading.Thread(target=self._run, args=(produce,), daemon=True, name="talkface-audio-feed")
        self.thread.start()

    def _run(self, produce: Producer) -> None:
        try:
            produce(self.queue.put)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer thread
            self.error = e
        finally:
            self.queue.put(None)

    def __iter__(self) -> Any:
        done = False
        while not done:
            batch = [self.queue.get()]
            while batch[-1] is not None:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            done = batch[-1] is None
            pieces = [b for b in batch if b is not None]
            if pieces:
                samples = np.concatenate(pieces)
                self.samples += samples.size
                self.last_batch_s = samples.size / SAMPLE_RATE
                yield samples
        if self.error is not None:
            raise self.error


def pcm_producer(fd: int, decoder: Any, read_size: int = 8192) -> Producer:
    """A producer for ``AudioFeed``: raw s16le from a file descriptor (stdin) until it closes."""
    def produce(put: Callable[[np.ndarray], None]) -> None:
        while True:
            data = os.read(fd, read_size)
            if not data:
                return
            samples = decoder.decode(data)
            if samples.size:
                put(samples)

    return produce


def file_producer(audio: np.ndarray, *, realtime: bool, piece_s: float = 0.02,
                  ) -> Producer:
    """A producer for ``AudioFeed``: a loaded waveform in ``piece_s`` pieces, paced at 1x when ``realtime``."""
    def produce(put: Callable[[np.ndarray], None]) -> None:
        step = max(1, round(piece_s * SAMPLE_RATE))
        start = time.perf_counter()
        for first in range(0, audio.shape[0], step):
            if realtime:
                time.sleep(max(0.0, start + (first + step) / SAMPLE_RATE - time.perf_counter()))
            put(audio[first: first + step])

    return produce
