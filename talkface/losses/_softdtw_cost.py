"""Pairwise squared-Euclidean frame cost by GEMM on centred frames, and its chain rule to the frames.

``C[i, j] = |x_i - y_j|² = |x̃_i|² + |ỹ_j|² - 2 x̃_i·ỹ_j`` with ``x̃ = x - μ``, ``ỹ = y - μ`` for one
common centre μ per item. Any μ gives the same exact value; a μ near the data removes the large
common part (the FLAME template, ~0.1 m) before the expansion, so float32 keeps the small
differences that the loss is about, and the result does not move when both sequences are translated.
Nothing of size (B, T, T', D) is ever formed.

The centring is fused into the GEMM by column blocks: each block of x̃ and ỹ is built in a buffer,
multiplied, and reused for the next block, so the forward reads the inputs once and makes no (B, T, D)
temporary (on small CPUs a fresh copy that large costs as much as the GEMM's own memory traffic, in
page faults). The blocks are a few and large, because every torch call is a parallel region whose
threads must all be scheduled: on a busy machine each one costs a scheduler slice. On GPU there is one
block. Padded batches go item by item on the valid prefixes, so padding costs no flops and its values
(even non-finite ones) never matter.
"""

from __future__ import annotations

import numpy as np
import torch

from talkface.losses._softdtw_cpu import run_split, sparse_grad_rows

# Per centred block buffer on CPU: below glibc's largest recycled allocation (32 MB), so the buffers are
# reused across calls instead of being mapped afresh page by page.
_CPU_BLOCK_BYTES = 28 << 20
_MIN_BLOCK_COLUMNS = 512  # narrower GEMMs lose efficiency
# Below this fraction of nonzeros in dL/dC a row-by-row pass over the nonzeros beats the GEMM on CPU
# (a nonzero costs one pass over D; the GEMM costs ~2 M D flops per row at ~10x the throughput).
_SPARSE_MAX_DENSITY = 0.05
_PARALLEL_MIN_ELEMENTS = 1 << 20  # output size above which the sparse pass is split across threads


def _centre(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Common centre per item, (B, 1, D): the mean of the first frames of x and y.

    Any common point keeps the cost exact; one near the data removes the template offset. Two frames
    suffice for that and cost O(D), unlike a mean over all frames (one more pass over the clip).
    """
    return torch.lerp(x[:, :1], y[:, :1], 0.5)


def _block_columns(x: torch.Tensor, y: torch.Tensor) -> int:
    dim = x.shape[2]
    if x.device.type != "cpu":
        return dim
    per_column = x.element_size() * x.shape[0] * max(x.shape[1], y.shape[1])
    return min(dim, max(_MIN_BLOCK_COLUMNS, _CPU_BLOCK_BYTES // per_column))


def _batched_cost(x: torch.Tensor, y: torch.Tensor, same: bool) -> torch.Tensor:
    """(B, N, M) float64 squared distances of full-length batches (``same``: y is x).

    The expansion can round a few ulps below zero; the DP does not mind, ``sqrt`` callers clamp.
    """
    num_batch, num_rows, dim = x.shape
    num_cols = y.shape[1]
    centre = _centre(x, y)
    step = _block_columns(x, y)
    num_blocks = -(-dim // step)
    gram = torch.empty(num_batch, num_rows, num_cols, dtype=x.dtype, device=x.device)
    norms_x = torch.empty(num_blocks, num_batch, num_rows, dtype=x.dtype, device=x.device)
    norms_y = norms_x if same else torch.empty(num_blocks, num_batch, num_cols, dtype=x.dtype, device=x.device)
    block_x = torch.empty(num_batch, num_rows, step, dtype=x.dtype, device=x.device)
    block_y = block_x if same else torch.empty(num_batch, num_cols, step, dtype=x.dtype, device=x.device)
    for index, start in enumerate(range(0, dim, step)):
        cols = slice(start, start + step)
        width = min(step, dim - start)
        xc = torch.sub(x[:, :, cols], centre[:, :, cols], out=block_x[:, :, :width])
        torch.linalg.vector_norm(xc, dim=2, out=norms_x[index])
        yc = xc
        if not same:
            yc = torch.sub(y[:, :, cols], centre[:, :, cols], out=block_y[:, :, :width])
            torch.linalg.vector_norm(yc, dim=2, out=norms_y[index])
        gram.baddbmm_(xc, yc.transpose(1, 2), beta=1.0 if index else 0.0)  # beta 0: gram's garbage ignored
    sq_x = norms_x.double().square_().sum(dim=0)
    sq_y = sq_x if same else norms_y.double().square_().sum(dim=0)
    return torch.add(sq_x.unsqueeze(2), sq_y.unsqueeze(1)).sub_(gram, alpha=2.0)


def pairwise_sq_cost(
    x: torch.Tensor, y: torch.Tensor, x_lengths: list[int], y_lengths: list[int], same: bool
) -> torch.Tensor:
    """Squared-Euclidean cost of every frame pair on each item's valid prefixes.

    Args:
        x: (B, N, D) float32/float64. y: (B, M, D), same dtype and device.
        x_lengths, y_lengths: valid lengths per item.
        same: x and y are one tensor with equal lengths (self-similarity: one centred block, one norm).

    Returns:
        (B, N, M) float64 cost (``>= 0`` up to rounding); zero outside each item's ``n_b x m_b`` block.
    """
    num_batch, num_rows, _ = x.shape
    num_cols = y.shape[1]
    if all(n == num_rows for n in x_lengths) and all(m == num_cols for m in y_lengths):
        return _batched_cost(x, y, same)
    cost = torch.zeros(num_batch, num_rows, num_cols, dtype=torch.float64, device=x.device)
    for b, (n, m) in enumerate(zip(x_lengths, y_lengths, strict=True)):
        cost[b, :n, :m] = _batched_cost(x[b : b + 1, :n], y[b : b + 1, :m], same)[0]
    return cost


def cost_gradients(
    x: torch.Tensor,
    y: torch.Tensor,
    grad_cost: torch.Tensor,
    x_lengths: list[int],
    y_lengths: list[int],
    need_x: bool,
    need_y: bool,
    same: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Chain rule through ``C = |x_i - y_j|²``: ``∂/∂x_i = 2 (r_i x_i - Σ_j W_ij y_j)``, ``r = W 1``.

    The same with ``Wᵀ`` for y. The centre cancels exactly here, and the cancellation left is linear
    (not quadratic as in the cost), so the uncentred form is used and no centred copy is made. On CPU,
    when ``W`` is mostly exact zeros (small γ: about one nonzero per row at γ = 1e-3), a numba kernel
    visits only its nonzeros, one pass over the frames; otherwise one GEMM per input.

    Args:
        x, y: the forward's inputs. grad_cost: (B, N, M) float64 ``W = dL/dC`` (zero in padding).
        same: x and y are one tensor: its whole gradient (through W + Wᵀ) comes back as gx.

    Returns:
        (gx, gy) in the inputs' dtype, zero on padded frames; None where not needed.
    """
    if same:
        grad_cost = grad_cost + grad_cost.transpose(1, 2)
    need_gx, need_gy = need_x or same, need_y and not same
    if x.device.type == "cpu" and _mostly_zero(grad_cost, x_lengths, y_lengths):
        gx = _sparse_grad(grad_cost, y, x, x_lengths, y_lengths) if need_gx else None
        w_t = grad_cost.transpose(1, 2).contiguous() if need_gy else None
        gy = _sparse_grad(w_t, x, y, y_lengths, x_lengths) if w_t is not None else None
        return gx, gy
    num_rows, num_cols = x.shape[1], y.shape[1]
    if all(n == num_rows for n in x_lengths) and all(m == num_cols for m in y_lengths):
        gx = _grad(grad_cost, y, x) if need_gx else None
        gy = _grad(grad_cost.transpose(1, 2), x, y) if need_gy else None
        return gx, gy
    gx = torch.zeros_like(x) if need_gx else None
    gy = torch.zeros_like(y) if need_gy else None
    for b, (n, m) in enumerate(zip(x_lengths, y_lengths, strict=True)):
        w = grad_cost[b : b + 1, :n, :m]
        xb, yb = x[b : b + 1, :n], y[b : b + 1, :m]
        if gx is not None:
            gx[b, :n] = _grad(w, yb, xb)[0]
        if gy is not None:
            gy[b, :m] = _grad(w.transpose(1, 2), xb, yb)[0]
    return gx, gy


def _grad(w: torch.Tensor, other: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
    """``2 (rowsum(w) ⊙ own - w @ other)``: (B, R, C) float64 w, (B, C, D) other, (B, R, D) own."""
    out = torch.bmm(w.to(own.dtype, copy=True).mul_(-2.0), other)  # x2 is exact: cast first, it is cheaper
    return out.addcmul_(own, (2.0 * w.sum(dim=2, keepdim=True)).to(own.dtype))


def _mostly_zero(grad_cost: torch.Tensor, x_lengths: list[int], y_lengths: list[int]) -> bool:
    cells = sum(n * m for n, m in zip(x_lengths, y_lengths, strict=True))
    return int(torch.count_nonzero(grad_cost)) <= _SPARSE_MAX_DENSITY * cells


def _sparse_grad(
    w: torch.Tensor, other: torch.Tensor, own: torch.Tensor, own_lengths: list[int], other_lengths: list[int]
) -> torch.Tensor:
    """``_grad`` from the nonzeros of ``w`` only (CPU, numba), zero on padded rows."""
    own, other = own.detach().contiguous(), other.detach().contiguous()
    out = torch.empty_like(own)
    lengths = (np.asarray(own_lengths, dtype=np.int64), np.asarray(other_lengths, dtype=np.int64))
    args = (w.numpy(), other.numpy(), own.numpy(), out.numpy(), *lengths)
    threads = torch.get_num_threads() if out.numel() >= _PARALLEL_MIN_ELEMENTS else 1
    run_split(sparse_grad_rows, args, own.shape[0] * own.shape[1], threads)
    return out
