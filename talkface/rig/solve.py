"""Blendshape weights from vertex motion: the per-frame solve, the temporally smooth solve and the live solve.

The objective and the per-frame method are in ``rig.qp``. With ``smooth > 0`` the objective couples
consecutive frames by ``smooth · s · Σ_t ||w_t - w_{t-1}||²``, so the Hessian over all T·K weights has
diagonal blocks ``Q + mu·c_t·I`` and off-diagonal blocks ``-mu·I`` (``solve_smooth``): the same projected
Newton method runs on it, and each Newton system is solved by block Gaussian elimination over frames
(O(T·K³)). A live stream cannot wait for future frames: ``LiveSolver`` pulls each frame towards the
previous one instead (causal smoothness).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from talkface.rig.qp import KKT_RTOL, Problem, kkt_ok, project, solve_frames

MAX_NEWTON_STEPS = 100  # projected Newton steps of the smooth solve (it stops at the KKT tolerance)


def frame_objective(w: np.ndarray, q: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Per-frame ½wᵀQw - gᵀw: (T,)."""
    return ((0.5 * (w @ q) - g) * w).sum(axis=1)


def binding_set(w: np.ndarray, grad: np.ndarray, lower: float, upper: float, eps: float) -> np.ndarray:
    """Variables at a bound whose gradient points out of the box: held fixed in a projected Newton step."""
    return ((w <= lower + eps) & (grad > 0)) | ((w >= upper - eps) & (grad < 0))


def solve_weights(problem: Problem, displacements: np.ndarray) -> np.ndarray:
    """Weights for every frame.

    Args:
        problem: from ``prepare`` (its basis rows are the fit region's coordinates).
        displacements: (T, 3N) frame displacements on the same rows (any float dtype, same unit as the basis).

    Returns:
        (T, K) float64 weights within the bounds.
    """
    return solve_products(problem, project(displacements, problem))


def solve_products(problem: Problem, g: np.ndarray) -> np.ndarray:
    """Weights from ``G = D·A`` (T, K): per frame, or all frames together when ``smooth`` > 0."""
    if problem.options.smooth > 0 and g.shape[0] > 1:
        return solve_smooth(problem, g)
    return solve_frames(problem, g)


def solve_smooth(problem: Problem, g: np.ndarray) -> np.ndarray:
    """All frames at once with the temporal smoothness term (block-tridiagonal Hessian), same method.

    Args:
        problem: from ``prepare`` (``options.smooth`` > 0).
        g: (T, K) float64.

    Returns:
        (T, K) float64 weights.
    """
    lo, hi = problem.options.lower, problem.options.upper
    mu = problem.options.smooth * problem.scale
    t, k = g.shape
    if t == 0:
        return np.zeros((0, k))
    w = solve_frames(problem, g)  # a good start: the unsmoothed optimum
    tol = KKT_RTOL * (np.abs(g).max() + (np.abs(problem.q).max() + 4 * mu) * max(abs(lo), abs(hi), 1.0))

    def grad_of(x: np.ndarray) -> np.ndarray:
        lap = np.zeros_like(x)
        lap[1:] += x[1:] - x[:-1]
        lap[:-1] += x[:-1] - x[1:]
        return x @ problem.q + mu * lap - g

    def objective(x: np.ndarray) -> float:
        return float(frame_objective(x, problem.q, g).sum() + 0.5 * mu * ((x[1:] - x[:-1]) ** 2).sum())

    for _ in range(MAX_NEWTON_STEPS):
        grad = grad_of(w)
        if kkt_ok(w.reshape(1, -1), grad.reshape(1, -1), lo, hi, np.array([tol]))[0]:
            break
        eps = min(1e-12 * (hi - lo), 1e-3 * float(np.abs(grad).max()))
        free = ~binding_set(w, grad, lo, hi, eps)
        step = -_block_tridiagonal_solve(problem.q, mu, free, np.where(free, grad, 0.0))
        f0 = objective(w)
        alpha = 1.0
        for _ in range(30):
            new = np.clip(w + alpha * step, lo, hi)
            if objective(new) <= f0 + 1e-4 * float((grad * (new - w)).sum()) + 1e-15 * abs(f0):
                break
            alpha *= 0.5
        else:  # a projected gradient step always descends (the Hessian's norm is at most λmax(Q) + 4·mu)
            new = np.clip(w - grad / (problem.lipschitz + 4 * mu), lo, hi)
        w = new
    return w


def _block_tridiagonal_solve(q: np.ndarray, mu: float, free: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Solve the reduced Newton system of ``solve_smooth`` by block Gaussian elimination over frames.

    The Hessian has diagonal blocks ``Q + mu·c_t·I`` (c_t = 1 at the ends, 2 inside) and off-diagonal
    blocks ``-mu·I``; rows and columns of held variables are replaced by the identity (their step is 0).

    Args:
        q: (K, K); mu: smoothness weight (absolute); free: (T, K) bool; rhs: (T, K), 0 where held.

    Returns:
        (T, K) float64 step.
    """
    t, k = rhs.shape
    eye = np.eye(k)
    count = np.full(t, 2.0)  # the path Laplacian's degrees
    count[0] -= 1.0
    count[-1] -= 1.0
    diag_blocks = []
    for i in range(t):
        f = free[i]
        block = np.where(f[:, None] & f[None, :], q + mu * count[i] * eye, 0.0) + np.diag(np.where(f, 0.0, 1.0))
        diag_blocks.append(block)
    # Off-diagonal block between i and i+1: -mu on the diagonal where both are free.
    off = [-mu * (free[i] & free[i + 1]).astype(np.float64) for i in range(t - 1)]
    # Forward elimination: S_i = D_i - C_i S_{i-1}^{-1} C_i, y_i = r_i - C_i S_{i-1}^{-1} y_{i-1}.
    y = rhs.astype(np.float64).copy()
    schur = [diag_blocks[0]]
    for i in range(1, t):
        c = off[i - 1]
        sol = np.linalg.solve(schur[i - 1], np.column_stack([np.diag(c), y[i - 1]]))
        y[i] -= c * sol[:, k]
        schur.append(diag_blocks[i] - c[:, None] * sol[:, :k])
    x = np.empty_like(y)
    x[t - 1] = np.linalg.solve(schur[t - 1], y[t - 1])
    for i in range(t - 2, -1, -1):
        c = off[i]
        x[i] = np.linalg.solve(schur[i], y[i] - c * x[i + 1])
    return x


class LiveSolver:
    """Frame-by-frame solves for a stream: each frame is pulled towards the previous one (causal smoothness).

    ``smooth`` acts as ``smooth · s · ||w_t - w_{t-1}||²`` with the previous frame's weights fixed, so a
    frame's weights never wait for future frames.
    """

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self.mu = problem.options.smooth * problem.scale
        k = problem.num_targets
        self.pulled = replace(problem, q=problem.q + self.mu * np.eye(k), lipschitz=problem.lipschitz + self.mu)
        self.previous: np.ndarray | None = None

    def push(self, displacements: np.ndarray) -> np.ndarray:
        """(n, 3N) displacements of consecutive frames → (n, K) float64 weights.

        Each frame starts from the previous one's weights and active set (neighbouring frames share most
        of it), so a frame usually needs one or two steps.
        """
        g = project(displacements, self.problem)
        out = np.empty_like(g)
        lo, hi = self.problem.options.lower, self.problem.options.upper
        for i in range(g.shape[0]):
            problem, b = (self.pulled, g[i:i + 1] + self.mu * self.previous[None]) if (
                self.mu and self.previous is not None) else (self.problem, g[i:i + 1])
            if self.previous is None:
                out[i] = solve_frames(problem, b)[0]
            else:
                prev = self.previous[None]
                lam = np.where((prev <= lo) | (prev >= hi), b - prev @ problem.q, 0.0)
                out[i] = solve_frames(problem, b, start=prev, multipliers=lam)[0]
            self.previous = out[i]
        return out
