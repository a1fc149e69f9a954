"""Numba-compiled soft-DTW dynamic programme for CPU tensors (float64 throughout).

Why numba: it is already a core dependency, it compiles a plain Python loop to machine code with no
C++ toolchain at install time, and ``cache=True`` keeps the compiled kernels on disk so only the very
first call of a fresh install pays the compile (a few seconds; later processes load them in about half
a second, see docs/benchmarks.md). One signature per kernel (float64 arrays, int64 lengths) keeps it to
one compile whatever the input dtype.

The recursion (Cuturi & Blondel 2017), with 1-based cells of ``R`` and 0-based cells of ``C``:
``R[0,0] = 0``, ``R[i,0] = R[0,j] = +inf``,
``R[i,j] = C[i-1,j-1] + softmin_γ(R[i-1,j-1], R[i-1,j], R[i,j-1])``.
The forward keeps only a few rows of ``R`` and stores, per cell, the soft-argmin weights ``P`` of its three
predecessors (diagonal, up, left). The backward propagates the expected alignment
``E[i,j] = Σ_successors P[s, k] E[s]`` from those weights alone: three multiply-adds per cell and no
``exp`` of differences of stored ``R`` (the P form of Blondel, Mensch & Vert 2021).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit

# exp(-z) < 2**-53 for z > 36.8, so 1 + exp(-z) == 1 in float64: skipping those exponentials leaves the
# soft-min unchanged to the last bit and only drops weights below 1e-16.
_SKIP_Z = 37.0
_STRIP = 4  # rows advanced together by the forward kernel


@njit(cache=True, nogil=True)
def _in_band(i: int, j: int, n: int, m: int, span: float) -> bool:
    # Exact in float64 for any realistic length: the left side is an integer below 2**53.
    return abs(i * (m - 1) - j * (n - 1)) <= span


@njit(cache=True, nogil=True)
def _band_limits(i: int, n: int, m: int, half_width: float) -> tuple[int, int]:
    """0-based column range [lo, hi] of row ``i`` inside the band (``softdtw.band_mask`` has the rule)."""
    if half_width < 0.0 or n == 1:
        return 0, m - 1
    span = half_width * max(n - 1, m - 1)
    lo = max(0, math.floor((i * (m - 1) - span) / (n - 1)))
    hi = min(m - 1, math.ceil((i * (m - 1) + span) / (n - 1)))
    # The divisions may round either way; the integer predicate decides.
    while lo <= hi and not _in_band(i, lo, n, m, span):
        lo += 1
    while hi >= lo and not _in_band(i, hi, n, m, span):
        hi -= 1
    return lo, hi


@njit(cache=True, nogil=True)
def _shifted_exp(z: float) -> float:
    """exp(-z) for z >= 0, without calling exp for the minimum itself (z = 0) or for underflows."""
    if z == 0.0:
        return 1.0
    return math.exp(-z) if z < _SKIP_Z else 0.0


@njit(cache=True, nogil=True)
def _cell(r0: float, r1: float, r2: float, gamma: float, inv_gamma: float) -> tuple[float, float, float, float]:
    """Soft-min of the (diag, up, left) predecessors' R and their soft-argmin weights."""
    rmin = min(r0, min(r1, r2))
    if rmin == np.inf:  # unreachable (outside the band's reach): no path, no weight
        return np.inf, 0.0, 0.0, 0.0
    e0 = _shifted_exp((r0 - rmin) * inv_gamma)
    e1 = _shifted_exp((r1 - rmin) * inv_gamma)
    e2 = _shifted_exp((r2 - rmin) * inv_gamma)
    total = e0 + e1 + e2  # >= 1: the minimum contributes exp(0)
    inv_total = 1.0 / total
    softmin = rmin if total == 1.0 else rmin - gamma * math.log1p(total - 1.0)
    return softmin, e0 * inv_total, e1 * inv_total, e2 * inv_total


@njit(cache=True, nogil=True)
def _forward_item(cost: np.ndarray, n: int, m: int, gamma: float, half_width: float, weights: np.ndarray) -> float:
    # Row by row, each cell waits for its left neighbour's exp/log1p: the loop is latency-bound.
    # A strip of _STRIP rows walked as a small wavefront (row r at column t - r) gives the CPU that many
    # independent cells per step to overlap, about 2x faster on one core.
    inf = np.inf
    inv_gamma = 1.0 / gamma
    rows = np.full((_STRIP + 1, m + 1), inf)  # rows[0]: R of the row above the strip (1-based columns)
    rows[0, 0] = 0.0
    lo = np.empty(_STRIP, dtype=np.int64)
    hi = np.empty(_STRIP, dtype=np.int64)
    for top in range(0, n, _STRIP):
        height = min(_STRIP, n - top)
        for r in range(height):
            lo[r], hi[r] = _band_limits(top + r, n, m, half_width)
            rows[r + 1, 0] = inf
        for t in range(m + height - 1):
            for r in range(max(0, t - m + 1), min(height, t + 1)):
                j = t - r
                i = top + r
                if j < lo[r] or j > hi[r]:
                    rows[r + 1, j + 1] = inf
                    weights[i, j, 0] = 0.0
                    weights[i, j, 1] = 0.0
                    weights[i, j, 2] = 0.0
                    continue
                softmin, w0, w1, w2 = _cell(rows[r, j], rows[r, j + 1], rows[r + 1, j], gamma, inv_gamma)
                rows[r + 1, j + 1] = cost[i, j] + softmin
                weights[i, j, 0] = w0
                weights[i, j, 1] = w1
                weights[i, j, 2] = w2
        for j in range(m + 1):
            rows[0, j] = rows[height, j]
    return rows[0, m]


@njit(cache=True, nogil=True)
def _backward_item(weights: np.ndarray, n: int, m: int, scale: float, grad_cost: np.ndarray) -> None:
    below = np.zeros(m + 1)  # E of row i + 1, with a zero column m as the right border
    here = np.zeros(m + 1)
    for i in range(n - 1, -1, -1):
        here[m] = 0.0
        for j in range(m - 1, -1, -1):
            if i == n - 1 and j == m - 1:
                e = 1.0
            else:
                e = here[j + 1] * weights[i, j + 1, 2] if j + 1 < m else 0.0
                if i + 1 < n:
                    e += below[j] * weights[i + 1, j, 1]
                    if j + 1 < m:
                        e += below[j + 1] * weights[i + 1, j + 1, 0]
            here[j] = e
            grad_cost[i, j] = e * scale
        below, here = here, below


@njit(cache=True, nogil=True)
def dp_forward_range(
    cost: np.ndarray,
    x_lengths: np.ndarray,
    y_lengths: np.ndarray,
    gamma: float,
    half_width: float,
    weights: np.ndarray,
    values: np.ndarray,
    start: int,
    stop: int,
) -> None:
    """Soft-DTW forward for batch items ``start <= b < stop``.

    Args:
        cost: (B, N, M) float64 pairwise cost; only ``[:n_b, :m_b]`` is read.
        x_lengths, y_lengths: (B,) int64 valid lengths ``n_b``, ``m_b`` (>= 1).
        gamma: soft-min temperature (> 0).
        half_width: band half-width (``softdtw.band_mask`` has the rule), or -1.0 for no band.
        weights: (B, N, M, 3) float64 output: soft-argmin weights of the (diag, up, left) predecessors.
        values: (B,) float64 output: ``R[n_b, m_b]``.
        start, stop: batch range, so that threads can split the batch (the kernels release the GIL).
    """
    for b in range(start, stop):
        values[b] = _forward_item(cost[b], x_lengths[b], y_lengths[b], gamma, half_width, weights[b])


@njit(cache=True, nogil=True)
def dp_backward_range(
    weights: np.ndarray,
    x_lengths: np.ndarray,
    y_lengths: np.ndarray,
    scale: np.ndarray,
    grad_cost: np.ndarray,
    start: int,
    stop: int,
) -> None:
    """Expected alignment ``E`` times ``scale[b]`` into ``grad_cost[b, :n_b, :m_b]`` for ``start <= b < stop``.

    The rest of ``grad_cost`` (padding) is left untouched; the caller zero-fills it when it matters.
    """
    for b in range(start, stop):
        _backward_item(weights[b], x_lengths[b], y_lengths[b], scale[b], grad_cost[b])


@njit(cache=True, nogil=True)
def sparse_grad_rows(
    weights: np.ndarray,
    other: np.ndarray,
    own: np.ndarray,
    out: np.ndarray,
    own_lengths: np.ndarray,
    other_lengths: np.ndarray,
    start: int,
    stop: int,
) -> None:
    """``out[b, i] = 2 (Σ_j w_ij) own[b, i] - 2 Σ_j w_ij other[b, j]``, visiting only the nonzero ``w_ij``.

    At small γ the expected alignment is exactly zero off a narrow path (the weights below 1e-16 are
    dropped in the forward), about one nonzero per row at γ = 1e-3 and FLAME scale, so this is one pass
    over the frames instead of a (N x M) @ (M x D) GEMM. Same value as the GEMM up to summation order.

    Args:
        weights: (B, N, M) float64 ``W = dL/dC``. other: (B, M, D) and own: (B, N, D), one float dtype.
        out: (B, N, D) output; rows ``i >= own_lengths[b]`` (padding) are zeroed.
        own_lengths, other_lengths: (B,) int64 valid lengths.
        start, stop: range of flattened rows ``b * N + i``, so that threads can split the work.
    """
    num_rows, dim = weights.shape[1], own.shape[2]
    for flat in range(start, stop):
        b = flat // num_rows
        i = flat - b * num_rows
        dst = out[b, i]
        if i >= own_lengths[b]:
            for k in range(dim):
                dst[k] = 0.0
            continue
        row = weights[b, i]
        total = 0.0
        for j in range(other_lengths[b]):
            total += row[j]
        src = own[b, i]
        scale = own.dtype.type(2.0 * total)
        for k in range(dim):
            dst[k] = scale * src[k]
        for j in range(other_lengths[b]):
            if row[j] != 0.0:
                coef = own.dtype.type(-2.0 * row[j])
                frame = other[b, j]
                for k in range(dim):
                    dst[k] += coef * frame[k]


def run_split(kernel: Callable[..., None], args: tuple[Any, ...], num_units: int, threads: int) -> None:
    """Run ``kernel(*args, start, stop)`` over ``range(num_units)`` split across ``threads`` threads.

    The kernels release the GIL, so plain threads run them in parallel (one join, no per-call pool).
    """
    threads = max(1, min(threads, num_units))
    if threads == 1:
        kernel(*args, 0, num_units)
        return
    bounds = np.linspace(0, num_units, threads + 1).round().astype(np.int64)
    workers = [
        threading.Thread(target=kernel, args=(*args, int(start), int(stop)))
        for start, stop in zip(bounds[1:-1], bounds[2:], strict=True)
    ]
    for worker in workers:
        worker.start()
    kernel(*args, int(bounds[0]), int(bounds[1]))
    for worker in workers:
        worker.join()
