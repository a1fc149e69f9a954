"""Evaluation metrics of the FaceFormer/CodeTalker lineage (REFERENCE §5), one implementation each.

Conventions (documented because papers disagree):
- LVE: per frame the maximum over lip vertices of the *squared* L2 error, averaged over frames
  (m² for metres; papers print it ×1e-5). ``lve_mm`` is the square-root variant in millimetres.
- FDD: per sequence, std over time of each upper-face vertex's squared displacement from the
  template, averaged over vertices; FDD = S_gt − S_pred (signed), then the mean over sequences.
- MVE: mean over frames and vertices of the L2 error (metres).
Frames are pooled over sequences (frame-weighted) for LVE and MVE, as CodeTalker's script does.
All functions take torch tensors or numpy arrays and return torch tensors (float64).
"""

from __future__ import annotations

from typing import Any

import torch


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
