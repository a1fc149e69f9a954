"""Soft-DTW dynamic programme as an anti-diagonal wavefront of plain torch ops (the CUDA path).

All cells ``(i, j)`` with ``i + j = d`` depend only on diagonals ``d - 1`` and ``d - 2``, so each
diagonal is one vectorised step over the batch and the rows. The tables are stored skewed
(``[b, d, i]`` holds cell ``(i, d - i)``), which turns the three predecessors and the three successors
of a whole diagonal into plain slices: no gather inside the loop, and no limit on the length (the loop
runs ``N + M - 1`` steps whatever ``N`` is, unlike one-thread-per-row kernels capped at 1,024 frames).

The numerics are the CPU kernels' (``_softdtw_cpu``): float64, min-shifted soft-min, soft-argmin
weights ``P`` stored in the forward and an exp-free backward. It runs on any device, which lets the
CPU test suite check it against the numba kernels and the brute-force oracle.
"""

from __future__ import annotations

import torch


def valid_cells(
    x_lengths: torch.Tensor, y_lengths: torch.Tensor, num_rows: int, num_cols: int, half_width: float
) -> torch.Tensor:
    """Skewed mask of the cells each item may use.

    Args:
        x_lengths, y_lengths: (B,) int64 valid lengths ``n_b``, ``m_b``.
        num_rows, num_cols: padded lengths N and M.
        half_width: band half-width (``softdtw.band_mask``), or a negative number for no band.

    Returns:
        (B, N + M - 1, N) bool; ``[b, d, i]`` is True when cell ``(i, d - i)`` is inside item b's
        ``n_b x m_b`` table and inside its band.
    """
    device = x_lengths.device
    d = torch.arange(num_rows + num_cols - 1, device=device).view(1, -1, 1)
    i = torch.arange(num_rows, device=device).view(1, 1, -1)
    j = d - i
    n = x_lengths.view(-1, 1, 1)
    m = y_lengths.view(-1, 1, 1)
    mask = (j >= 0) & (i < n) & (j < m)
    if half_width >= 0:
        span = half_width * torch.maximum(n - 1, m - 1).double()
        offset = (i * (m - 1) - j * (n - 1)).abs().double()
        mask &= (offset <= span) | (n == 1)
    return mask


def _skew(cost: torch.Tensor) -> torch.Tensor:
    """(B, N, M) -> (B, N + M - 1, N) with ``[b, d, i] = cost[b, i, d - i]`` (clamped outside)."""
    num_batch, num_rows, num_cols = cost.shape
    d = torch.arange(num_rows + num_cols - 1, device=cost.device).view(1, 1, -1)
    i = torch.arange(num_rows, device=cost.device).view(1, -1, 1)
    j = (d - i).clamp(0, num_cols - 1).expand(num_batch, num_rows, -1)
    return cost.gather(2, j).transpose(1, 2)


def dp_forward(
    cost: torch.Tensor, x_lengths: torch.Tensor, y_lengths: torch.Tensor, gamma: float, half_width: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft-DTW values and soft-argmin weights by anti-diagonals.

    Args:
        cost: (B, N, M) float64 pairwise cost.
        x_lengths, y_lengths: (B,) int64 valid lengths on ``cost``'s device.
        gamma: soft-min temperature (> 0).
        half_width: band half-width, or negative for no band.

    Returns:
        values: (B,) float64 ``R[n_b, m_b]``.
        weights: (B, N + M + 1, N + 1, 3) float64 skewed weights of the (diag, up, left) predecessors,
            zero-padded by two diagonals and one row so that the backward can slice past the ends.
    """
    num_batch, num_rows, num_cols = cost.shape
    num_diags = num_rows + num_cols - 1
    inf = float("inf")
    valid = valid_cells(x_lengths, y_lengths, num_rows, num_cols, half_width)
    skewed_cost = _skew(cost)
    # r_table[:, d + 2, i + 1] = R of cell (i, d - i); slot (0, 0) is the virtual start R[-1, -1] = 0.
    r_table = torch.full((num_batch, num_diags + 2, num_rows + 1), inf, dtype=torch.float64, device=cost.device)
    r_table[:, 0, 0] = 0.0
    weights = torch.zeros(num_batch, num_diags + 2, num_rows + 1, 3, dtype=torch.float64, device=cost.device)
    for d in range(num_diags):
        preds = torch.stack((r_table[:, d, :-1], r_table[:, d + 1, :-1], r_table[:, d + 1, 1:]), dim=-1)
        rmin = preds.amin(dim=-1, keepdim=True)
        reachable = torch.isfinite(rmin)
        shift = torch.where(reachable, rmin, 0.0)
        expo = torch.exp((shift - preds) / gamma)  # the minimum gives exp(0) = 1, the rest underflow safely
        total = expo.sum(dim=-1, keepdim=True)
        value = skewed_cost[:, d].unsqueeze(-1) + shift - gamma * torch.log(total)
        keep = reachable & valid[:, d].unsqueeze(-1)
        r_table[:, d + 2, 1:] = torch.where(keep, value, inf).squeeze(-1)
        weights[:, d, :-1] = torch.where(keep, expo / total, 0.0)
    ends = (x_lengths + y_lengths).view(-1, 1)  # diagonal of the last cell, + 2 slot offset - 2
    values = r_table.gather(1, ends.view(-1, 1, 1).expand(-1, 1, num_rows + 1)).squeeze(1)
    return values.gather(1, x_lengths.view(-1, 1)).squeeze(1), weights


def dp_backward(
    weights: torch.Tensor, x_lengths: torch.Tensor, y_lengths: torch.Tensor, scale: torch.Tensor, num_cols: int
) -> torch.Tensor:
    """Expected alignment from the stored weights (three multiply-adds per cell, no exp).

    Args:
        weights: skewed weights from ``dp_forward``.
        x_lengths, y_lengths: (B,) int64 valid lengths.
        scale: (B,) float64 upstream gradient of each item's value.
        num_cols: padded length M.

    Returns:
        (B, N, M) float64 ``dR[n_b, m_b] / dC``, zero outside each item's table.
    """
    num_batch, slots, rows_plus_one, _ = weights.shape
    num_rows, num_diags = rows_plus_one - 1, slots - 2
    e_table = torch.zeros(num_batch, slots, num_rows + 1, dtype=torch.float64, device=weights.device)
    rows = torch.arange(num_rows, device=weights.device).view(1, -1)
    end_diag = (x_lengths + y_lengths - 2).view(-1, 1)
    seed = (rows == (x_lengths - 1).view(-1, 1)).double()  # (B, N): the last cell's row
    for d in range(num_diags - 1, -1, -1):
        # successors of (i, d - i): (i + 1, j + 1) on d + 2, (i + 1, j) and (i, j + 1) on d + 1
        e = (
            weights[:, d + 2, 1:, 0] * e_table[:, d + 2, 1:]
            + weights[:, d + 1, 1:, 1] * e_table[:, d + 1, 1:]
            + weights[:, d + 1, :-1, 2] * e_table[:, d + 1, :-1]
        )
        e_table[:, d, :-1] = e + seed * (end_diag == d)
    grad = e_table[:, :num_diags, :-1].transpose(1, 2)  # (B, N, N + M - 1): [b, i, d]
    d_index = torch.arange(num_cols, device=weights.device).view(1, 1, -1) + rows.view(1, -1, 1)
    return grad.gather(2, d_index.expand(num_batch, -1, -1)) * scale.view(-1, 1, 1)
