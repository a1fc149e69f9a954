"""Padding clips of different lengths into one training batch (torch is imported lazily)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from talkface.data.dataset import Clip
from talkface.errors import DatasetError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Batch:
    """A zero-padded batch. No attention mask is built for the audio: wav2vec 2.0 base is trained without one.

    Attributes:
        audio: (B, S) float32, zero-padded after each clip's ``audio_lengths`` samples.
        audio_lengths: (B,) int64 valid samples.
        vertices: (B, T, V, 3) float32, zero-padded after each clip's ``num_frames`` frames.
        num_frames: (B,) int64 valid frames.
        template: (B, V, 3) float32.
        style: (B, N) float32 one-hot over the training speakers; an all-zero row for unknown speakers.
        known_speaker: (B,) bool, False where ``style`` is all zero.
        names: clip names.
    """

    audio: torch.Tensor
    audio_lengths: torch.Tensor
    vertices: torch.Tensor
    num_frames: torch.Tensor
    template: torch.Tensor
    style: torch.Tensor
    known_speaker: torch.Tensor
    names: list[str]

    @property
    def frame_mask(self) -> torch.Tensor:
        """(B, T) bool, True on valid frames."""
        import torch

        steps = torch.arange(self.vertices.shape[1], device=self.num_frames.device)
        return steps[None, :] < self.num_frames[:, None]

    @property
    def audio_mask(self) -> torch.Tensor:
        """(B, S) bool, True on valid samples."""
        import torch

        steps = torch.arange(self.audio.shape[1], device=self.audio_lengths.device)
        return steps[None, :] < self.audio_lengths[:, None]

    def to(self, device: torch.device | str) -> Batch:
        """The same batch with every tensor on ``device``."""
        return replace(self, audio=self.audio.to(device), audio_lengths=self.audio_lengths.to(device),
                       vertices=self.vertices.to(device), num_frames=self.num_frames.to(device),
                       template=self.template.to(device), style=self.style.to(device),
                       known_speaker=self.known_speaker.to(device))


def style_vector(speaker: str, speakers: Sequence[str]) -> np.ndarray:
    """(N,) float32 one-hot of ``speaker`` among ``speakers``; all zeros when absent."""
    row = np.zeros(len(speakers), dtype=np.float32)
    if speaker in speakers:
        row[list(speakers).index(speaker)] = 1.0
    return row


def pad_batch(clips: Sequence[Clip], speakers: Sequence[str]) -> Batch:
    """Stack clips into a zero-padded ``Batch``.

    Args:
        clips: B clips with the same vertex count and fps.
        speakers: training speakers in one-hot order (``PreparedDataset.train_speakers``).

    Returns:
        The ``Batch`` (CPU tensors).

    Raises:
        DatasetError: no clips, or clips with different vertex counts or frame rates.
    """
    import torch

    if not clips:
        raise DatasetError("cannot build a batch from zero clips")
    num_vertices = {c.vertices.shape[1] for c in clips}
    rates = {float(c.fps) for c in clips}
    if len(num_vertices) != 1 or len(rates) != 1:
        raise DatasetError(f"clips {[c.name for c in clips]} mix vertex counts {sorted(num_vertices)} or frame "
                           f"rates {sorted(rates)}; a batch needs one mesh and one fps")
    lengths = np.array([c.audio.shape[0] for c in clips], dtype=np.int64)
    frames = np.array([c.vertices.shape[0] for c in clips], dtype=np.int64)
    audio = np.zeros((len(clips), int(lengths.max())), dtype=np.float32)
    vertices = np.zeros((len(clips), int(frames.max()), num_vertices.pop(), 3), dtype=np.float32)
    for i, clip in enumerate(clips):
        audio[i, : lengths[i]] = clip.audio
        vertices[i, : frames[i]] = clip.vertices
    style = np.stack([style_vector(c.speaker, speakers) for c in clips])
    return Batch(
        audio=torch.from_numpy(audio),
        audio_lengths=torch.from_numpy(lengths),
        vertices=torch.from_numpy(vertices),
        num_frames=torch.from_numpy(frames),
        template=torch.from_numpy(np.stack([np.asarray(c.template, dtype=np.float32) for c in clips])),
        style=torch.from_numpy(style),
        known_speaker=torch.from_numpy(style.sum(axis=1) > 0),
        names=[c.name for c in clips],
    )
