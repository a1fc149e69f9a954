"""Mouth motion from phoneme timing: per-phoneme articulation targets, smoothed, styled, at 60 fps.

Each phoneme asks for a jaw opening, a lip rounding and a lip closure (``articulation``). The
piecewise-constant targets are smoothed with Gaussians (coarticulation: neighbouring sounds blend,
rounding spreads furthest) and a closure gates the jaw, so the lips meet on m/b/p even when the
surrounding vowels are open. A speaker's style then scales the motion (amplitude), adds a one-sided
smile that follows the jaw (asymmetry), delays or advances it against the audio (lag) and stretches
it around the middle of the clip (tempo). Vertices are the template plus the activations times the
head's displacement bases.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from talkface.synthetic.head import Head

FPS = 60.0
_FINE_RATE = 1000.0  # Hz, the grid the targets are smoothed on before sampling at FPS
_SIGMA_S = {"jaw": 0.025, "round": 0.035, "close": 0.015}  # coarticulation widths, seconds

# (jaw opening, lip rounding, lip closure), each 0..1, by espeak-ng phoneme name.
_ARTICULATION: dict[str, tuple[float, float, float]] = {
    # open vowels
    "a": (1.0, 0.0, 0.0), "aa": (1.0, 0.0, 0.0), "A:": (1.0, 0.0, 0.0), "A@": (0.95, 0.0, 0.0),
    "A": (1.0, 0.0, 0.0), "aI": (0.95, 0.0, 0.0), "aI@": (0.9, 0.0, 0.0), "aU": (0.9, 0.5, 0.0),
    "aU@": (0.85, 0.5, 0.0), "a#": (0.65, 0.0, 0.0), "{": (1.0, 0.0, 0.0),
    # mid vowels
    "0": (0.85, 0.4, 0.0), "O:": (0.75, 0.6, 0.0), "O@": (0.75, 0.6, 0.0), "o@": (0.7, 0.6, 0.0),
    "O": (0.75, 0.6, 0.0), "OI": (0.7, 0.6, 0.0), "V": (0.75, 0.0, 0.0), "E": (0.7, 0.0, 0.0),
    "e": (0.65, 0.0, 0.0), "e@": (0.7, 0.0, 0.0), "eI": (0.6, 0.0, 0.0), "3": (0.5, 0.3, 0.0),
    "3:": (0.5, 0.3, 0.0), "@": (0.4, 0.0, 0.0), "@L": (0.4, 0.0, 0.0), "oU": (0.55, 0.8, 0.0),
    # close vowels
    "I": (0.3, 0.0, 0.0), "i": (0.25, 0.0, 0.0), "i:": (0.2, 0.0, 0.0), "i@": (0.35, 0.0, 0.0),
    "U": (0.3, 0.8, 0.0), "U@": (0.4, 0.7, 0.0), "u:": (0.2, 1.0, 0.0), "u": (0.2, 1.0, 0.0),
    # consonants that shape the lips
    "m": (0.0, 0.0, 1.0), "b": (0.0, 0.0, 1.0), "p": (0.0, 0.0, 1.0),
    "f": (0.1, 0.0, 0.5), "v": (0.1, 0.0, 0.5), "w": (0.15, 1.0, 0.0),
    "S": (0.15, 0.5, 0.0), "Z": (0.15, 0.5, 0.0), "tS": (0.15, 0.5, 0.0), "dZ": (0.15, 0.5, 0.0),
    "r": (0.25, 0.4, 0.0), "r-": (0.25, 0.4, 0.0), "h": (0.4, 0.0, 0.0), "l": (0.25, 0.0, 0.0),
    "_": (0.0, 0.0, 0.0),
}
_CONSONANT = (0.15, 0.0, 0.0)  # teeth slightly apart: t, d, s, n, k, g ...
_VOWEL_LETTERS = set("aeiouAEIOUV0@3{")


@dataclass(frozen=True)
class MotionStyle:
    """A speaker's way of moving.

    Attributes:
        amplitude: factor on jaw opening and rounding (about 0.7-1.3).
        asymmetry: smile_asym activation per unit of jaw opening (negative: the other way), about ±0.6.
        lag_s: motion delay against the audio in seconds (negative: motion leads), about ±0.06.
        tempo: motion speed around the clip centre (>1: events drawn towards the centre), about 0.9-1.1.
    """

    amplitude: float = 1.0
    asymmetry: float = 0.0
    lag_s: float = 0.0
    tempo: float = 1.0


def articulation(phoneme: str) -> tuple[float, float, float]:
    """(jaw, round, close) targets in 0..1 for an espeak-ng phoneme name; unknown names are guessed."""
    if phoneme in _ARTICULATION:
        return _ARTICULATION[phoneme]
    if phoneme.startswith("_"):
        return _ARTICULATION["_"]
    stripped = re.sub(r"[#0-9;\-]+$", "", phoneme)  # stress/variant marks: "I2", "@5", "n-", "p;"
    if stripped and stripped in _ARTICULATION:
        return _ARTICULATION[stripped]
    if stripped[:1] in _VOWEL_LETTERS:
        return (0.45, 0.0, 0.0)
    return _CONSONANT


def _targets(phonemes: list[tuple[str, float, float]], times: np.ndarray) -> np.ndarray:
    """Piecewise-constant (jaw, round, close) targets (N, 3) at ``times`` seconds; 0 outside the phonemes."""
    out = np.zeros((times.size, 3))
    for name, start, end in phonemes:
        out[(times >= start) & (times < end)] = articulation(name)
    return out


def _gaussian_smooth(x: np.ndarray, sigma_samples: float) -> np.ndarray:
    """Zero-padded Gaussian smoothing of a 1-D signal (rest is 0, so padding with 0 is right)."""
    radius = int(np.ceil(4 * sigma_samples))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma_samples) ** 2)
    return np.convolve(np.pad(x, radius), kernel / kernel.sum(), mode="valid")


def base_curves(phonemes: list[tuple[str, float, float]], duration_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Unstyled smoothed curves on a 1 kHz grid.

    Returns:
        ``(times, curves)``: times (N,) seconds and curves (N, 3) for jaw (already gated by the
        closure), round and close, all in 0..1.
    """
    times = np.arange(int(np.ceil(duration_s * _FINE_RATE)) + 1) / _FINE_RATE
    raw = _targets(phonemes, times)
    smooth = np.stack([_gaussian_smooth(raw[:, k], _SIGMA_S[name] * _FINE_RATE)
                       for k, name in enumerate(("jaw", "round", "close"))], axis=1)
    close = np.clip(1.5 * smooth[:, 2], 0.0, 1.0)  # short closures still reach full contact
    jaw = smooth[:, 0] * (1.0 - close)
    return times, np.stack([jaw, smooth[:, 1], close], axis=1)


def warp_times(frame_times: np.ndarray, duration_s: float, style: MotionStyle) -> np.ndarray:
    """Where in the unstyled motion each output frame looks: c + (t - lag - c) * tempo, c the clip centre."""
    centre = 0.5 * duration_s
    return centre + (frame_times - style.lag_s - centre) * style.tempo


def clip_time_shift(num_frames: int, fps: float, rng: np.random.Generator, max_offset_s: float,
                    max_warp_s: float) -> np.ndarray:
    """A clip's capture-sync jitter: a constant offset plus a slow sinusoidal time warp, seconds per frame.

    offset ~ U(-max_offset_s, max_offset_s); warp(t) = a * sin(2 pi t / P + phi) with a ~ U(-max_warp_s,
    max_warp_s), P ~ U(1, 2) s, phi ~ U(0, 2 pi). The warp's slope stays below 2 pi max_warp_s / 1 s, so
    for max_warp_s < 0.15 the re-timed motion keeps its order (no frame looks back in time).

    Returns:
        (T,) float64 seconds, positive = the motion is late against the audio at that frame.
    """
    t = np.arange(num_frames) / fps
    offset = rng.uniform(-max_offset_s, max_offset_s)
    amp, period, phase = rng.uniform(-max_warp_s, max_warp_s), rng.uniform(1.0, 2.0), rng.uniform(0, 2 * np.pi)
    return offset + amp * np.sin(2 * np.pi * t / period + phase)


def activation_curves(
    phonemes: list[tuple[str, float, float]], num_frames: int, style: MotionStyle = MotionStyle(), fps: float = FPS,
    time_shift: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Activations of the head's motion bases, one value per frame.

    Args:
        phonemes: contiguous ``(name, start_s, end_s)`` as ``synthesize`` returns them.
        num_frames: T, frames to produce (frame i is at i / fps seconds).
        style: the speaker's style.
        fps: frame rate.
        time_shift: (T,) seconds the motion is late at each frame on top of the style's lag (a clip's
            capture-sync jitter, ``clip_time_shift``); None for none.

    Returns:
        ``{"jaw_open", "lip_round", "lip_close", "smile_asym"}`` -> (T,) float32 activations.
    """
    duration = max(num_frames / fps, phonemes[-1][2] if phonemes else 0.0)
    times, curves = base_curves(phonemes, duration)
    frame_times = np.arange(num_frames) / fps
    if time_shift is not None:
        frame_times = frame_times - np.asarray(time_shift, dtype=np.float64)
    look = warp_times(frame_times, duration, style)
    jaw, rnd, close = (np.interp(look, times, curves[:, k], left=0.0, right=0.0) for k in range(3))
    return {
        "jaw_open": (style.amplitude * jaw).astype(np.float32),
        "lip_round": (style.amplitude * rnd).astype(np.float32),
        "lip_close": close.astype(np.float32),
        "smile_asym": (style.asymmetry * style.amplitude * jaw).astype(np.float32),
    }


def animate_head(head: Head, activations: dict[str, np.ndarray]) -> np.ndarray:
    """vertices(t) = template + sum_k activation_k(t) * basis_k.

    Args:
        head: template and bases (V, 3).
        activations: name -> (T,) activation; names must be bases of ``head``.

    Returns:
        (T, V, 3) float32 vertices, metres.
    """
    names = sorted(activations)
    weights = np.stack([activations[n] for n in names], axis=1).astype(np.float32)  # (T, K)
    bases = np.stack([head.bases[n].reshape(-1) for n in names], axis=0)  # (K, V*3)
    offsets = (weights @ bases).reshape(weights.shape[0], -1, 3)
    return (head.vertices[None] + offsets).astype(np.float32)
