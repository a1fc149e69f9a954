"""FaceFormer's two attention masks as pure functions of lengths: the periodic ALiBi-style causal
bias of the motion self-attention and the audio/motion alignment mask of the cross-attention.

Fan et al., "FaceFormer: Speech-Driven 3D Facial Animation with Transformers", CVPR 2022, §3.2;
the slopes are those of ALiBi (Press et al., ICLR 2022). Both are computed for any length: there is
no ``max_seq_len`` table to outgrow.
"""

from __future__ import annotations

import math

import torch


def alibi_slopes(num_heads: int) -> list[float]:
    """ALiBi's per-head slopes: a geometric sequence starting at 2^(-8/n) for n a power of two.

    For other head counts the slopes of the closest smaller power of two are followed by every other
    slope of twice that count (ALiBi's rule).

    Args:
        num_heads: attention heads, >= 1.

    Returns:
        ``num_heads`` slopes, e.g. [0.25, 0.0625, 0.015625, 0.00390625] for 4 heads.
    """
    if num_heads < 1:
        raise ValueError(f"num_heads must be >= 1, got {num_heads}")

    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-(2.0 ** -(math.log2(n) - 3)))
        return [start ** (i + 1) for i in range(n)]

    if math.log2(num_heads).is_integer():
        return power_of_two(num_heads)
    closest = 2 ** math.floor(math.log2(num_heads))
    return power_of_two(closest) + alibi_slopes(2 * closest)[0::2][: num_heads - closest]


def biased_causal_mask(
    num_heads: int,
    period: int,
    num_queries: int,
    num_keys: int | None = None,
    *,
    offset: int = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Additive self-attention bias: ``-slope_h * floor((i - j) / period)`` for keys j <= i, -inf after.

    Query row r stands for position ``i = offset + r``; keys are positions 0 .. num_keys-1. With
    ``offset = 0`` and ``num_keys = num_queries`` this is FaceFormer's ``(H, T, T)`` mask; a decoding
    step t uses ``num_queries = 1, num_keys = t + 1, offset = t``, i.e. row t of the full mask.

    Args:
        num_heads: H.
        period: p, frames per bias step.
        num_queries: Lq.
        num_keys: Lk (default ``offset + num_queries``).
        offset: position of the first query.
        device, dtype: of the result.

    Returns:
        (H, Lq, Lk) float mask to add to attention logits.
    """
    num_keys = offset + num_queries if num_keys is None else num_keys
    query = torch.arange(offset, offset + num_queries, device=device)[:, None]
    key = torch.arange(num_keys, device=device)[None, :]
    distance = query - key  # (Lq, Lk), >= 0 for the past
    steps = torch.div(distance.clamp(min=0), period, rounding_mode="floor").to(dtype)
    slopes = torch.tensor(alibi_slopes(num_heads), device=device, dtype=dtype)[:, None, None]
    bias = -slopes * steps
    return bias.masked_fill((distance < 0)[None], float("-inf"))


def alignment_mask(
    num_frames: int,
    num_audio: int,
    audio_frames_per_motion_frame: int,
    *,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Boolean cross-attention mask, True = blocked (``nn.MultiheadAttention``'s convention).

    Motion frame i may attend audio frames ``w*i .. w*i + w - 1`` with ``w = max(k, 1)``: the strict
    diagonal for k = 0 (features already interpolated to the motion rate, VOCASET) and two audio
    frames per motion frame for k = 2 (BIWI at 25 fps against 50 Hz features).

    Args:
        num_frames: T, motion frames (queries).
        num_audio: A, audio feature frames (keys).
        audio_frames_per_motion_frame: k (0 = interpolated, one per frame).
        device: of the result.

    Returns:
        (T, A) bool.
    """
    width = alignment_width(audio_frames_per_motion_frame)
    frame = torch.arange(num_frames, device=device)[:, None]
    audio = torch.arange(num_audio, device=device)[None, :]
    allowed = (audio >= frame * width) & (audio < (frame + 1) * width)
    return ~allowed


def alignment_width(audio_frames_per_motion_frame: int) -> int:
    """Audio frames each motion frame attends: ``max(k, 1)``."""
    return max(int(audio_frames_per_motion_frame), 1)
