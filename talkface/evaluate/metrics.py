"""Evaluation metrics of the FaceFormer/CodeTalker lineage (REFERENCE §5), one implementation each.

Conventions (documented because papers disagree):
- LVE: per frame the maximum over lip vertices of the *squared* L2 error, averaged over frames
  (m² for metres; papers print it ×1e-5). ``lve_mm`` is the square-root variant in millimetres.
- FDD: per sequence, std over time of each upper-face vertex's squared displacement from the
  template, averaged over vertices; FDD = S_gt − S_pred (signed), then the mean over sequences.
- MVE: mean over frames and vertices of the L2 error (metres).
Frames are pooled over sequences (frame-weighted) for LVE and MVE, as CodeTalker's script does.

Lip-sync measures (issue #27; shared with ``benchmarks/softdtw_vs_mse.py``), each for one sequence:
- best-shift LVE: LVE of ``pred[t + s]`` against ``gt[t]`` over the frames both cover, minimised over
  constant shifts ``|s| <= max_shift`` (``MAX_SHIFT_S`` = 200 ms); ``s > 0``: the prediction is late.
- DTW lip error: the LVE cell cost ``c(i, j) = max_lips |pred_i - gt_j|²`` averaged along the best monotone
  alignment within a Sakoe-Chiba band ``|i - j| <= band`` (200 ms), Sakoe-Chiba's symmetric weights.
- lip opening: mean height of the upper-lip vertices minus that of the lower lip, per frame (metres).
- lip-opening correlation: Pearson correlation of the predicted and true lip-opening signals.
- opening range: (max - min) of the predicted lip opening over (max - min) of the true one; < 1 means
  damped, over-smoothed motion.
The functions above return torch tensors (float64); the lip-sync ones return Python numbers.
All take torch tensors or numpy arrays.
"""

from __future__ import annotations

import math
from typing import Any

import torch

MAX_SHIFT_S = 0.2  # seconds: the largest constant shift and the DTW band of the lip-sync measures


def _t(x: Any) -> torch.Tensor:
    return torch.as_tensor(x).to(torch.float64)


def _idx(indices: Any) -> torch.Tensor:
    return torch.as_tensor(indices, dtype=torch.long).reshape(-1)


def squared_errors(pred: Any, gt: Any) -> torch.Tensor:
    """Per-vertex squared L2 error.

    Args:
        pred, gt: (T, V, 3) vertices.

    Returns:
        (T, V) float64, squared units (m² for metres).
    """
    return ((_t(pred) - _t(gt)) ** 2).sum(-1)


def lip_max_errors(pred: Any, gt: Any, lips: Any) -> torch.Tensor:
    """Per-frame maximum over lip vertices of the squared L2 error: (T,) float64, m²."""
    return squared_errors(pred, gt)[:, _idx(lips)].max(dim=1).values


def lve(pred: Any, gt: Any, lips: Any) -> torch.Tensor:
    """Lip vertex error (squared convention) of one sequence: scalar, m²."""
    return lip_max_errors(pred, gt, lips).mean()


def lve_mm(pred: Any, gt: Any, lips: Any) -> torch.Tensor:
    """Lip vertex error with the square root, in millimetres (input in metres): scalar."""
    return (lip_max_errors(pred, gt, lips).sqrt() * 1000.0).mean()


def mve(pred: Any, gt: Any) -> torch.Tensor:
    """Mean vertex error: mean over frames and vertices of the L2 error, input units (scalar)."""
    return squared_errors(pred, gt).sqrt().mean()


def upper_face_dynamics(vertices: Any, template: Any, upper: Any) -> torch.Tensor:
    """S = mean over upper-face vertices of the std over time of the squared displacement.

    Args:
        vertices: (T, V, 3); template: (V, 3); upper: vertex indices.

    Returns:
        scalar float64, squared units.
    """
    motion = _t(vertices) - _t(template)[None]
    energy = (motion[:, _idx(upper)] ** 2).sum(-1)  # (T, U)
    return energy.std(dim=0, unbiased=False).mean()


def fdd(pred: Any, gt: Any, template: Any, upper: Any) -> torch.Tensor:
    """Upper-face dynamics deviation of one sequence, S_gt − S_pred (signed scalar)."""
    return upper_face_dynamics(gt, template, upper) - upper_face_dynamics(pred, template, upper)


def align_lengths(pred: Any, gt: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Truncate both sequences to the shorter length (FaceDiffuser/ScanTalk convention)."""
    pred, gt = _t(pred), _t(gt)
    n = min(pred.shape[0], gt.shape[0])
    return pred[:n], gt[:n]


def pearson(a: Any, b: Any) -> float:
    """Pearson correlation of two 1-D signals (nan when either is constant)."""
    a, b = _t(a).reshape(-1), _t(b).reshape(-1)
    n = min(a.numel(), b.numel())
    a, b = a[:n] - a[:n].mean(), b[:n] - b[:n].mean()
    denom = a.norm() * b.norm()
    return float("nan") if denom == 0 else float((a @ b) / denom)


def max_shift_frames(fps: float, seconds: float = MAX_SHIFT_S) -> int:
    """Frames in ``seconds`` at ``fps``, at least 1: the shift limit and DTW band of the lip-sync measures."""
    return max(1, round(seconds * float(fps)))


def best_shift_lve(pred: Any, gt: Any, lips: Any, max_shift: int) -> tuple[int, float]:
    """LVE after the best constant shift: min over ``|s| <= max_shift`` of LVE(pred[t + s], gt[t]).

    Each shift is scored over the frames both sequences cover (``T - |s|`` frames of the common length
    ``T``). Among equal values the smallest ``|s|`` wins (then the negative one), so a static prediction
    reports shift 0.

    Args:
        pred, gt: (T, V, 3) vertices, metres (truncated to the shorter length).
        lips: lip vertex indices.
        max_shift: largest shift in frames (see ``max_shift_frames``), >= 0.

    Returns:
        (shift in frames, positive = the prediction is late; LVE at that shift, m²).
    """
    p, g = align_lengths(pred, gt)
    idx = _idx(lips)
    p, g = p[:, idx], g[:, idx]
    n = p.shape[0]
    limit = min(int(max_shift), n - 1)
    best = (0, math.inf)
    for s in sorted(range(-limit, limit + 1), key=lambda k: (abs(k), k)):
        ps, gs = (p[s:], g[:n - s]) if s >= 0 else (p[:n + s], g[-s:])
        value = float(((ps - gs) ** 2).sum(-1).max(dim=-1).values.mean())
        if value < best[1]:
            best = (s, value)
    return best


def dtw_lip_error(pred: Any, gt: Any, lips: Any, band: int) -> float:
    """Timing-free lip error: LVE's per-frame cost averaged along the best monotone alignment (hard DTW).

    Cells are ``c(i, j) = max over lip vertices of |pred_i - gt_j|²``. With Sakoe and Chiba's symmetric
    weights (a diagonal step counts its cell twice, a horizontal or vertical step once) every path from
    (0, 0) to (n-1, m-1) weighs n + m in total, so the minimum of the weighted sum divided by n + m is the
    lowest mean error of any alignment within ``|i - j| <= band``. The identity alignment (n = m) gives
    LVE, so the result is never above LVE. Only the band's cells are computed (memory ~ n (2 band + 1) L).

    Args:
        pred: (n, V, 3), gt: (m, V, 3) vertices, metres.
        lips: lip vertex indices.
        band: Sakoe-Chiba half-width in frames (widened to |n - m| so that an alignment exists).

    Returns:
        m², float.
    """
    idx = _idx(lips)
    p, g = _t(pred)[:, idx], _t(gt)[:, idx]
    n, m = p.shape[0], g.shape[0]
    band = max(int(band), abs(n - m))
    cost: dict[int, list[float]] = {}  # offset d = j - i -> c(i, i + d) for the rows where i + d is valid
    for d in range(-band, band + 1):
        lo, hi = max(0, -d), min(n, m - d)
        if lo < hi:
            cost[d] = [math.nan] * lo + ((p[lo:hi] - g[lo + d:hi + d]) ** 2).sum(-1).max(dim=-1).values.tolist()
    inf = math.inf
    prev: dict[int, float] = {}
    for i in range(n):
        row: dict[int, float] = {}
        for j in range(max(0, i - band), min(m, i + band + 1)):
            c = cost[j - i][i]
            if i == 0 and j == 0:
                row[j] = 2 * c
                continue
            diag = prev.get(j - 1, inf) + 2 * c if i and j else inf
            up = prev.get(j, inf) + c if i else inf
            left = row.get(j - 1, inf) + c if j else inf
            row[j] = min(diag, up, left)
        prev = row
    return float(prev[m - 1] / (n + m))


def lip_opening(vertices: Any, upper: Any, lower: Any, up_axis: int = 1) -> torch.Tensor:
    """Mouth opening per frame: mean height of the ``upper`` lip vertices minus that of the ``lower`` ones.

    Args:
        vertices: (T, V, 3) metres; upper, lower: vertex indices (``regions.lip_opening_regions``).
        up_axis: the coordinate that points up (1: +y, as FLAME, VOCASET and BIWI meshes).

    Returns:
        (T,) float64 metres: a constant at rest that grows as the mouth opens.
    """
    heights = torch.as_tensor(vertices)[..., up_axis]  # (T, V): select before the float64 copy (exact either way)
    return _t(heights[:, _idx(upper)]).mean(dim=1) - _t(heights[:, _idx(lower)]).mean(dim=1)


def opening_range(pred_opening: Any, gt_opening: Any) -> float:
    """(max - min) of the predicted lip opening over (max - min) of the true one (nan when the truth is flat).

    Below 1 the prediction opens and closes the mouth less than the truth (damped, over-smoothed); a copy
    scaled by a about its mean gives exactly a.
    """
    p, g = _t(pred_opening).reshape(-1), _t(gt_opening).reshape(-1)
    gt_range = float(g.max() - g.min()) if g.numel() else 0.0
    return float(p.max() - p.min()) / gt_range if gt_range > 0 else math.nan
