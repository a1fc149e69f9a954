"""Soft-DTW loss between two sequences of frames (Cuturi & Blondel, ICML 2017).

``R[0,0] = 0``, ``R[i,0] = R[0,j] = +inf``,
``R[i,j] = C[i-1,j-1] + softmin_γ(R[i-1,j-1], R[i-1,j], R[i,j-1])``,
``softmin_γ(a) = -γ log Σ_k exp(-a_k / γ)``, and the loss of an item is ``R[n, m]``: a soft minimum
over all monotone alignment paths of the summed frame costs. It is a sum over the path, not a mean
(about ``T·D`` times FaceFormer's per-element MSE), it can be negative, and ``sdtw(x, x) != 0``;
``divergence=True`` gives Blondel, Mensch & Vert (2021)'s ``sdtw(x,y) - ½(sdtw(x,x) + sdtw(y,y))``,
which is 0 at ``x = y`` and non-negative for the squared-Euclidean cost.

How it is computed (docs/benchmarks.md has the timings):

* the cost matrix by GEMM on centred frames (``_softdtw_cost``), never a (B, T, T', D) tensor;
* the DP and its backward in float64 whatever the input dtype, with a min-shifted soft-min, storing
  the soft-argmin weights so that the backward needs no ``exp`` (``_softdtw_cpu``: numba on CPU;
  ``_softdtw_wavefront``: anti-diagonal torch ops on other devices, no length limit);
* the gradient w.r.t. the frames by one GEMM per input that requires it, or, on CPU when dL/dC is
  mostly exact zeros (small γ: about one nonzero per row at γ = 1e-3), by one pass over its nonzeros.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from talkface.errors import ConfigError
from talkface.losses import _softdtw_cost, _softdtw_wavefront
from talkface.losses._softdtw_cpu import dp_backward_range, dp_forward_range, run_split

COSTS = ("sqeuclidean", "euclidean")
REDUCTIONS = ("none", "sum", "mean")
# Cells per call above which the batch is split across threads: the forward costs 20-40 ns a cell, the
# backward ~7 ns; below these a thread's start-up and a possibly busy second core cost more than they save.
_PARALLEL_MIN_CELLS_FORWARD = 1 << 15
_PARALLEL_MIN_CELLS_BACKWARD = 1 << 18


def band_mask(n: int, m: int, bandwidth: float | None) -> torch.Tensor:
    """Cells of an ``n x m`` cost table inside the Sakoe-Chiba band, for unequal lengths too.

    Cell ``(i, j)`` (0-based) is inside when ``|i (m-1) - j (n-1)| <= w · max(n-1, m-1)`` with
    ``w = max(bandwidth, ½)``: its distance from the straight line joining the first and the last
    cells, measured in frames of the shorter sequence, is at most ``w``. For ``n = m`` this is the usual
    ``|i - j| <= bandwidth``. Both end cells are always inside, and ``w >= ½`` keeps a monotone path
    between them, so the loss stays finite for any lengths; ``bandwidth = 0`` with ``n = m`` allows
    only the diagonal.

    Returns:
        (n, m) bool; all True for ``bandwidth=None``.
    """
    half_width = _half_width(bandwidth)
    if half_width < 0 or n == 1:
        return torch.ones(n, m, dtype=torch.bool)
    i = torch.arange(n, dtype=torch.float64).view(-1, 1)
    j = torch.arange(m, dtype=torch.float64).view(1, -1)
    return (i * (m - 1) - j * (n - 1)).abs() <= half_width * max(n - 1, m - 1)


def _half_width(bandwidth: float | None) -> float:
    """The kernels' band parameter: ``max(bandwidth, ½)``, or -1 for no band."""
    return -1.0 if bandwidth is None or math.isinf(bandwidth) else max(float(bandwidth), 0.5)


# --------------------------------------------------------------------------------------------- DP


def _dp_threads(num_cells: int, min_cells: int) -> int:
    return torch.get_num_threads() if num_cells >= min_cells else 1


def _dp_forward(
    cost: torch.Tensor, x_lengths: torch.Tensor, y_lengths: torch.Tensor, gamma: float, half_width: float
) -> tuple[torch.Tensor, torch.Tensor]:
    if cost.device.type != "cpu":
        return _softdtw_wavefront.dp_forward(cost, x_lengths, y_lengths, gamma, half_width)

    weights = torch.empty(*cost.shape, 3, dtype=torch.float64)
    values = torch.empty(cost.shape[0], dtype=torch.float64)
    args = (cost.numpy(), x_lengths.numpy(), y_lengths.numpy(), gamma, half_width, weights.numpy(), values.numpy())
    # one item's DP is a sequential chain of cells: the batch is what threads share
    run_split(dp_forward_range, args, cost.shape[0], _dp_threads(cost.numel(), _PARALLEL_MIN_CELLS_FORWARD))
    return values, weights


def _dp_backward(
    weights: torch.Tensor, x_lengths: torch.Tensor, y_lengths: torch.Tensor, scale: torch.Tensor, num_cols: int
) -> torch.Tensor:
    if weights.device.type != "cpu":
        return _softdtw_wavefront.dp_backward(weights, x_lengths, y_lengths, scale, num_cols)

    grad = torch.zeros(weights.shape[:3], dtype=torch.float64)
    args = (weights.numpy(), x_lengths.numpy(), y_lengths.numpy(), scale.numpy(), grad.numpy())
    run_split(dp_backward_range, args, weights.shape[0], _dp_threads(grad.numel(), _PARALLEL_MIN_CELLS_BACKWARD))
    return grad


@contextmanager
def _ieee_fp32_matmul(device: torch.device) -> Iterator[None]:
    """Keep the cost GEMM out of TF32 on GPUs: its 10-bit mantissa ruins γ = 1e-3 (SOFTDTW §1.5)."""
    if device.type != "cuda":
        yield
        return
    precision, allow_tf32 = torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.allow_tf32
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(precision)
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32


class _SoftDTWFunction(torch.autograd.Function):
    """Values (B,) float64 of soft-DTW between x (B, N, D) and y (B, M, D) on their valid prefixes."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        y: torch.Tensor,
        x_lengths: torch.Tensor,
        y_lengths: torch.Tensor,
        gamma: float,
        euclidean: bool,
        half_width: float,
    ) -> torch.Tensor:
        n_list, m_list = x_lengths.tolist(), y_lengths.tolist()
        same = x is y and n_list == m_list
        with _ieee_fp32_matmul(x.device):
            cost = _softdtw_cost.pairwise_sq_cost(x, y, n_list, m_list, same)
        distance = cost.clamp_(min=0.0).sqrt_() if euclidean else None
        values, weights = _dp_forward(cost, x_lengths, y_lengths, gamma, half_width)
        ctx.save_for_backward(x, y, x_lengths, y_lengths, weights, distance)
        ctx.lists, ctx.same, ctx.num_cols = (n_list, m_list), same, y.shape[1]
        return values

    @staticmethod
    def backward(ctx: Any, grad_values: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, y, x_lengths, y_lengths, weights, distance = ctx.saved_tensors
        scale = grad_values.detach().to(torch.float64).contiguous()
        grad_cost = _dp_backward(weights, x_lengths, y_lengths, scale, ctx.num_cols)
        if distance is not None:
            # d sqrt(c)/dc = 1/(2 sqrt(c)); at c = 0 (x_i = y_j) take the subgradient 0, not inf
            positive = distance > 0
            grad_cost = torch.where(positive, grad_cost / (2.0 * torch.where(positive, distance, 1.0)), 0.0)
        need_x, need_y = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        with _ieee_fp32_matmul(x.device):
            gx, gy = _softdtw_cost.cost_gradients(
                x, y, grad_cost, *ctx.lists, need_x or (ctx.same and need_y), need_y, ctx.same
            )
        return gx, gy, None, None, None, None, None


# ---------------------------------------------------------------------------------- validation


def _check_options(gamma: float, cost: str, bandwidth: float | None, reduction: str) -> None:
    if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real) or not (gamma > 0 and math.isfinite(gamma)):
        raise ConfigError(
            f"soft_dtw: gamma must be a finite number > 0 (the soft-min temperature; the paper uses 1e-3), "
            f"got {gamma!r}."
        )
    if cost not in COSTS:
        raise ConfigError(f"soft_dtw: cost must be one of {', '.join(COSTS)}; got {cost!r}.")
    if reduction not in REDUCTIONS:
        raise ConfigError(f"soft_dtw: reduction must be one of {', '.join(REDUCTIONS)}; got {reduction!r}.")
    if bandwidth is not None and (
        isinstance(bandwidth, bool) or not isinstance(bandwidth, numbers.Real) or not bandwidth >= 0
    ):
        raise ConfigError(f"soft_dtw: bandwidth must be None (no band) or a number of frames >= 0; got {bandwidth!r}.")


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, torch.Tensor) or t.dim() != 3 or not t.is_floating_point():
            found = f"{tuple(t.shape)} {t.dtype}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise ConfigError(f"soft_dtw: {name} must be a floating-point (B, T, D) tensor; got {found}.")
        if t.shape[1] == 0:
            raise ConfigError(f"soft_dtw: {name} has no frames (shape {tuple(t.shape)}); pass T >= 1.")
    if x.shape[0] != y.shape[0] or x.shape[2] != y.shape[2]:
        raise ConfigError(
            f"soft_dtw: x and y must share the batch size B and the frame size D; got x {tuple(x.shape)} "
            f"and y {tuple(y.shape)}. Flatten vertices to (B, T, V*3) on both sides."
        )
    if x.device != y.device:
        raise ConfigError(f"soft_dtw: x is on {x.device} but y is on {y.device}; move both to one device.")


def _check_lengths(lengths: Sequence[int] | torch.Tensor | None, name: str, batch: int, frames: int) -> torch.Tensor:
    """(B,) int64 CPU tensor of valid lengths; the full length when ``lengths`` is None."""
    if lengths is None:
        return torch.full((batch,), frames, dtype=torch.int64)
    t = torch.as_tensor(lengths)
    if t.shape != (batch,) or t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ConfigError(
            f"soft_dtw: {name} must be a (B,) = ({batch},) integer tensor of valid frame counts; "
            f"got shape {tuple(t.shape)} {t.dtype}."
        )
    t = t.detach().to("cpu", torch.int64).contiguous()
    if batch and (int(t.min()) < 1 or int(t.max()) > frames):
        raise ConfigError(f"soft_dtw: {name} must lie in [1, {frames}] (the padded length); got {t.tolist()}.")
    return t


# ---------------------------------------------------------------------------------------- API


def soft_dtw(
    x: torch.Tensor,
    y: torch.Tensor,
    gamma: float = 1e-3,
    *,
    x_lengths: Sequence[int] | torch.Tensor | None = None,
    y_lengths: Sequence[int] | torch.Tensor | None = None,
    cost: str = "sqeuclidean",
    divergence: bool = False,
    bandwidth: float | None = None,
    reduction: str = "none",
) -> torch.Tensor:
    """Soft-DTW between two batches of frame sequences, differentiable w.r.t. both.

    Args:
        x: (B, T, D) float tensor, e.g. predicted vertices flattened to D = V·3, metres.
        y: (B, T', D) float tensor on the same device, e.g. ground-truth vertices.
        gamma: soft-min temperature (> 0), in the units of the cost (m² for ``sqeuclidean``).
        x_lengths, y_lengths: (B,) integer valid lengths of padded batches; item b's loss is
            ``R[x_lengths[b], y_lengths[b]]`` and padded frames get zero gradient. None: full length.
        cost: ``"sqeuclidean"`` ``|x_i - y_j|²`` (default, the soft-DTW literature's) or ``"euclidean"``
            ``|x_i - y_j|`` (the paper's formula 3), with gradient 0 where ``x_i = y_j``.
        divergence: return ``sdtw(x,y) - ½(sdtw(x,x) + sdtw(y,y))`` instead (0 at ``x = y``).
        bandwidth: Sakoe-Chiba half-width in frames of the shorter sequence (``band_mask``), or None.
        reduction: ``"none"`` (B,), ``"sum"`` or ``"mean"`` over the batch (scalars).

    Returns:
        (B,) or scalar tensor in the inputs' (promoted, at least float32) dtype. The DP runs in float64.

    Raises:
        ConfigError: gamma <= 0, unknown cost or reduction, negative bandwidth, shapes, devices or
            lengths that do not fit.
    """
    _check_options(gamma, cost, bandwidth, reduction)
    _check_pair(x, y)
    dtype = torch.promote_types(torch.promote_types(x.dtype, y.dtype), torch.float32)
    x, y = x.to(dtype), y.to(dtype)  # no copy when already there
    batch = x.shape[0]
    nx = _check_lengths(x_lengths, "x_lengths", batch, x.shape[1])
    ny = _check_lengths(y_lengths, "y_lengths", batch, y.shape[1])
    if batch == 0:
        raise ConfigError("soft_dtw: empty batch (B = 0); pass at least one sequence pair.")
    options = (float(gamma), cost == "euclidean", _half_width(bandwidth))

    def sdtw(a: torch.Tensor, b: torch.Tensor, na: torch.Tensor, nb: torch.Tensor) -> torch.Tensor:
        on_device = (na.to(a.device), nb.to(a.device)) if a.device.type != "cpu" else (na, nb)
        return _SoftDTWFunction.apply(a, b, *on_device, *options)

    values = sdtw(x, y, nx, ny)
    if divergence:
        # sdtw(y, y) is a constant unless y itself is being optimised: skip its graph then
        with torch.set_grad_enabled(torch.is_grad_enabled() and y.requires_grad):
            self_y = sdtw(y, y, ny, ny)
        values = values - 0.5 * (sdtw(x, x, nx, nx) + self_y)
    values = values.to(dtype)
    if reduction == "sum":
        return values.sum()
    return values.mean() if reduction == "mean" else values


class SoftDTWLoss(nn.Module):
    """``nn.Module`` form of ``soft_dtw`` with the options fixed at construction (validated there).

    Args:
        gamma, cost, divergence, bandwidth, reduction: as in ``soft_dtw``; reduction defaults to mean.
    """

    def __init__(
        self,
        gamma: float = 1e-3,
        cost: str = "sqeuclidean",
        divergence: bool = False,
        bandwidth: float | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        _check_options(gamma, cost, bandwidth, reduction)
        self.gamma, self.cost, self.divergence = gamma, cost, divergence
        self.bandwidth, self.reduction = bandwidth, reduction

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        x_lengths: Sequence[int] | torch.Tensor | None = None,
        y_lengths: Sequence[int] | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, T, D), y (B, T', D), optional (B,) lengths -> (B,) or scalar loss."""
        return soft_dtw(
            x,
            y,
            self.gamma,
            x_lengths=x_lengths,
            y_lengths=y_lengths,
            cost=self.cost,
            divergence=self.divergence,
            bandwidth=self.bandwidth,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return (
            f"gamma={self.gamma}, cost={self.cost!r}, divergence={self.divergence}, "
            f"bandwidth={self.bandwidth}, reduction={self.reduction!r}"
        )
