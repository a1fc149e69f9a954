"""Named dataset/model presets: the numbers that make a model VOCASET- or BIWI-shaped.

Dataset facts live here (and in prepared datasets' metadata), never in branches inside the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from talkface.errors import ConfigError


@dataclass(frozen=True)
class Preset:
    """Model numbers for one dataset family (see REFERENCE §3.1)."""

    name: str
    fps: float
    num_vertices: int
    feature_dim: int
    period: int
    audio_frames_per_motion_frame: int  # 0: interpolate to the motion rate

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``ModelConfig`` (speakers not included)."""
        return {
            "num_vertices": self.num_vertices,
            "feature_dim": self.feature_dim,
            "period": self.period,
            "fps": self.fps,
            "audio_frames_per_motion_frame": self.audio_frames_per_motion_frame,
        }


PRESETS: dict[str, Preset] = {
    "vocaset": Preset("vocaset", fps=30.0, num_vertices=5023, feature_dim=64, period=30,
                      audio_frames_per_motion_frame=0),
    "biwi": Preset("biwi", fps=25.0, num_vertices=23370, feature_dim=128, period=25,
                   audio_frames_per_motion_frame=2),
}

# VOCA's split (identical in VOCA, FaceFormer and CodeTalker); train order is the one-hot order.
VOCASET_TRAIN = (
    "FaceTalk_170728_03272_TA", "FaceTalk_170904_00128_TA", "FaceTalk_170725_00137_TA",
    "FaceTalk_170915_00223_TA", "FaceTalk_170811_03274_TA", "FaceTalk_170913_03279_TA",
    "FaceTalk_170904_03276_TA", "FaceTalk_170912_03278_TA",
)
VOCASET_VAL = ("FaceTalk_170811_03275_TA", "FaceTalk_170908_03277_TA")
VOCASET_TEST = ("FaceTalk_170809_00138_TA", "FaceTalk_170731_00024_TA")
VOCASET_KNOWN_MISSING = (("FaceTalk_170811_03274_TA", "sentence24"), ("FaceTalk_170809_00138_TA", "sentence32"))


def get_preset(name: str) -> Preset:
    """Look a preset up by name.

    Raises:
        ConfigError: unknown name (the message lists the valid ones).
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"--preset: unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
