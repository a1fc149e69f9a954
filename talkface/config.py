"""Frozen configuration dataclasses, validated on construction and saved inside checkpoints/runs.

``to_dict``/``from_dict`` round-trip through JSON; ``from_dict`` rejects unknown keys so that a
typo in a config file is an error, not a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, TypeVar

from talkface.errors import ConfigError

C = TypeVar("C")


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """Build ``cls`` from a dict, rejecting unknown keys.

    Raises:
        ConfigError: unknown keys or invalid values.
    """
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown keys {unknown}; valid keys are {sorted(names)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{cls.__name__}: {e}") from e


def _positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a positive number, got {value!r}")


@dataclass(frozen=True)
class ModelConfig:
    """FaceFormer's architecture, described by numbers only (no dataset names).

    Attributes:
        num_vertices: V, vertices per mesh (5023 FLAME, 23370 BIWI).
        feature_dim: D, decoder width (64 VOCASET, 128 BIWI).
        period: p, frames per period of the positional encoding and of the attention bias steps.
        num_heads: attention heads of the decoder (FaceFormer: 4).
        num_layers: decoder layers (FaceFormer: 1).
        ff_multiplier: feed-forward width as a multiple of D (FaceFormer: 2).
        dropout: decoder and positional-encoding dropout (PyTorch default 0.1).
        fps: motion frames per second (30 VOCASET, 25 BIWI).
        audio_frames_per_motion_frame: 0 = interpolate the 50 Hz CNN features to exactly one per
            motion frame (FaceFormer's VOCASET path); k >= 1 = no interpolation, motion frame i attends
            audio frames k*i .. k*i+k-1 (k = 2 is FaceFormer's BIWI path at 25 fps).
        speakers: training speaker names in one-hot order.
        normalize_audio: zero-mean/unit-variance waveforms, as Wav2Vec2FeatureExtractor does.
    """

    num_vertices: int
    feature_dim: int = 64
    period: int = 30
    num_heads: int = 4
    num_layers: int = 1
    ff_multiplier: int = 2
    dropout: float = 0.1
    fps: float = 30.0
    audio_frames_per_motion_frame: int = 0
    speakers: tuple[str, ...] = ()
    normalize_audio: bool = True

    def __post_init__(self) -> None:
        for name in ("num_vertices", "feature_dim", "period", "num_heads", "num_layers", "ff_multiplier"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"ModelConfig.{name} must be a positive integer, got {value!r}")
        if self.feature_dim % self.num_heads:
            raise ConfigError(
                f"ModelConfig.feature_dim ({self.feature_dim}) must be divisible by num_heads ({self.num_heads})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"ModelConfig.dropout must be in [0, 1), got {self.dropout}")
        _positive("ModelConfig.fps", self.fps)
        if not isinstance(self.audio_frames_per_motion_frame, int) or self.audio_frames_per_motion_frame < 0:
            raise ConfigError("ModelConfig.audio_frames_per_motion_frame must be 0 (interpolate) or a positive int")
        if not self.speakers:
            raise ConfigError("ModelConfig.speakers is empty; a model needs at least one training speaker")
        if len(set(self.speakers)) != len(self.speakers):
            raise ConfigError(f"ModelConfig.speakers has duplicates: {list(self.speakers)}")

    @property
    def vertex_dim(self) -> int:
        """V*3, the flattened motion dimension (15069 for FLAME)."""
        return self.num_vertices * 3

    @property
    def num_speakers(self) -> int:
        return len(self.speakers)

    @property
    def ff_dim(self) -> int:
        return self.feature_dim * self.ff_multiplier


LOSSES = ("softdtw", "mse", "softdtw+mse")
COSTS = ("sqeuclidean", "euclidean")


@dataclass(frozen=True)
class TrainConfig:
    """Training recipe (the paper's: Soft-DTW, gamma 1e-3, Adam lr 1e-4, 100 epochs, batch 1).

    Attributes:
        loss: ``softdtw``, ``mse`` or ``softdtw+mse``.
        gamma: soft-DTW smoothing, > 0 and <= 10.
        cost: frame cost, ``sqeuclidean`` (default) or ``euclidean`` (the paper's formula 3).
        divergence: use sdtw(x,y) - (sdtw(x,x)+sdtw(y,y))/2.
        band: Sakoe-Chiba band half-width in frames (None: all alignments, the paper's loss).
        mse_weight: weight of the MSE term in ``softdtw+mse``.
        batch_size: clips per step (padded and masked).
        teacher_forcing: feed ground truth instead of the model's own outputs.
        epochs, lr, seed, grad_accum: the usual.
        amp: bfloat16/float16 autocast on CUDA.
        encoder: hub name or local folder of the pretrained wav2vec 2.0.
    """

    loss: str = "softdtw"
    gamma: float = 1e-3
    cost: str = "sqeuclidean"
    divergence: bool = False
    band: int | None = None
    mse_weight: float = 1.0
    batch_size: int = 1
    teacher_forcing: bool = False
    epochs: int = 100
    lr: float = 1e-4
    seed: int = 0
    grad_accum: int = 1
    amp: bool = False
    encoder: str = "facebook/wav2vec2-base-960h"

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {list(LOSSES)}, got {self.loss!r}")
        if self.cost not in COSTS:
            raise ConfigError(f"cost must be one of {list(COSTS)}, got {self.cost!r}")
        if not (isinstance(self.gamma, (int, float)) and math.isfinite(self.gamma) and 0 < self.gamma <= 10):
            raise ConfigError(f"gamma must be in (0, 10], got {self.gamma!r} (the paper uses 1e-3)")
        for name in ("batch_size", "epochs", "grad_accum"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        _positive("lr", self.lr)
        if self.band is not None and (not isinstance(self.band, int) or self.band < 0):
            raise ConfigError(f"band must be a non-negative number of frames, got {self.band!r}")
        if self.mse_weight < 0:
            raise ConfigError(f"mse_weight must be >= 0, got {self.mse_weight}")
