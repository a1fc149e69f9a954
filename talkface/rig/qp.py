"""Blendshape weights from vertex motion: the bounded, regularised least-squares problem and its per-frame solve.

For each frame t, with ``A`` the rig's target displacements restricted to the fit region (3N × K) and
``d_t`` the frame's displacement from the neutral (3N), the weights ``w_t`` minimise

    ||A w_t - d_t||²  +  l2 · s · ||w_t||²  +  symmetry · s · Σ_pairs (w_L - w_R)²
                      +  smooth · s · Σ_t ||w_t - w_{t-1}||²              subject to lower ≤ w ≤ upper,

where ``s = mean(diag(AᵀA))`` makes the three weights scale-free (the same numbers work for a rig in
metres or in millimetres, with 5 000 or 50 vertices). Without ``smooth`` the frames are independent
box-constrained quadratic programs sharing one K × K Hessian ``Q = AᵀA + R``; with it they couple
through a block-tridiagonal Hessian.

through a block-tridiagonal Hessian (``rig.solve.solve_smooth``).

Method, all frames at once (one batched LAPACK solve per step):
1. Warm start: every 8th frame is solved first; neighbouring frames share most of their active set,
   so each frame starts from the active set and multipliers of the coarse frame before it.
2. Primal-dual active set (Hintermüller, Ito & Kunisch 2002): guess which weights sit at a bound from
   ``λ + c·(w - bound)``, fix them, solve exactly for the rest; a frame whose guess repeats is at the
   optimum. This settles almost every frame in a few steps.
3. Projected Newton (Bertsekas 1982) finishes any frame that is not yet optimal (PDAS can cycle on hard
   cases): held bound variables, an exact Newton step on the others, projected with an Armijo search,
   so every step descends; it stops when the KKT conditions hold to ~1e-11 relative.
The data enter only through ``G = D·A`` (T × K), one matrix product over the rows the targets move,
so the cost barely depends on the vertex count.

``scipy.optimize.lsq_linear`` on the same stacked system is the oracle the tests compare against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from talkface.errors import ConfigError

MAX_NEWTON_STEPS = 100
KKT_RTOL = 1e-11  # projected-gradient tolerance, relative to the size of the frame's gradient terms
RIDGE = 1e-10  # relative ridge added to Q: keeps a rank-deficient region solvable, negligible otherwise
COARSE_STRIDE = 8  # warm start: every 8th frame is solved first and seeds its neighbours
PN_BATCH_STEPS = 0  # projected Newton steps on a batch before its last few frames go to BVLS
FALLBACK_FRAMES = 64  # at most this many frames left: solve them one by one (BVLS)
PDAS_STEPS = 8  # primal-dual active-set iterations before projected Newton takes over
BLOCK_FRAMES = 128  # frames converted to float64 at a time when forming G = D·A


@dataclass(frozen=True)
class SolveOptions:
    """Weights of the solve's terms and the bounds (see the module docstring for the objective).

    Attributes:
        lower, upper: bounds of every weight (lower < upper, finite).
        l2: pull towards 0, relative to the mean target energy ``s``.
        smooth: temporal smoothness (squared difference of consecutive frames' weights), relative to ``s``.
        symmetry: tie between each ``…Left``/``…Right`` pair (squared difference), relative to ``s``.
    """

    lower: float = 0.0
    upper: float = 1.0
    l2: float = 0.0
    smooth: float = 0.0
    symmetry: float = 0.0

    def __post_init__(self) -> None:
        for name in ("lower", "upper", "l2", "smooth", "symmetry"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not np.isfinite(value):
                raise ConfigError(f"rig solve option {name} must be a finite number, got {value!r}")
        for name in ("l2", "smooth", "symmetry"):
            if getattr(self, name) < 0:
                raise ConfigError(f"rig solve option {name} must be >= 0, got {getattr(self, name)}")
        if not self.lower < self.upper:
            raise ConfigError(f"weight bounds must satisfy lower < upper, got [{self.lower}, {self.upper}]; "
                              "use e.g. --bounds 0,1")


@dataclass(frozen=True)
class Problem:
    """The solve's fixed parts, built once per rig, region and options (``prepare``).

    Attributes:
        basis: (3N, K) float64 target displacements on the fit region (``A``).
        support: (3N,) bool, the rows where some target moves (only those enter ``G = D·A``).
        q: (K, K) float64 Hessian of one frame without the smoothness term (``AᵀA + R``).
        scale: mean diagonal of ``AᵀA`` (the unit of l2, smooth and symmetry).
        options: the options it was built with.
        lipschitz: largest eigenvalue of ``q`` (the step of the projected-gradient fallback).
    """

    basis: np.ndarray
    q: np.ndarray
    scale: float
    options: SolveOptions
    lipschitz: float = 1.0
    support: np.ndarray | None = None
    _support_basis: tuple[np.ndarray, np.ndarray] | None = None  # (rows, basis on those rows)

    @property
    def num_targets(self) -> int:
        return int(self.q.shape[0])


def symmetry_matrix(pairs: list[tuple[int, int]], num_targets: int) -> np.ndarray:
    """(K, K) float64 Laplacian of the left/right ties: ``wᵀSw = Σ_pairs (w_L - w_R)²``."""
    s = np.zeros((num_targets, num_targets))
    for left, right in pairs:
        s[left, left] += 1.0
        s[right, right] += 1.0
        s[left, right] -= 1.0
        s[right, left] -= 1.0
    return s


def prepare(basis: np.ndarray, options: SolveOptions = SolveOptions(), pairs: list[tuple[int, int]] = ()) -> Problem:
    """Build the per-frame Hessian for ``basis``.

    Args:
        basis: (3N, K) target displacements on the fit region, any float dtype (metres or any unit).
        options: bounds and term weights.
        pairs: (left, right) target index pairs tied by ``options.symmetry``.
    """
    a = np.asarray(basis, dtype=np.float64)
    h = a.T @ a
    k = h.shape[0]
    scale = float(np.mean(np.diag(h))) if k else 1.0
    scale = scale if scale > 0 else 1.0
    r = (options.l2 + RIDGE) * scale * np.eye(k)
    if options.symmetry and pairs:
        r += options.symmetry * scale * symmetry_matrix(list(pairs), k)
    q = h + r
    support = np.any(a != 0, axis=1)
    rows = np.flatnonzero(support)
    return Problem(basis=a, q=q, scale=scale, options=options, lipschitz=float(np.linalg.eigvalsh(q)[-1]) if k else 1.0,
                   support=support, _support_basis=(rows, a[rows]))


def project(displacements: np.ndarray, problem: Problem) -> np.ndarray:
    """``G = D·A``: (T, K) float64 from displacements (T, 3N) on the problem's rows.

    Only the rows where a target moves take part. The product is in float64 (in blocks of frames, to
    bound memory) whatever the input's precision: a float32 product's rounding (~1e-7 relative over
    thousands of rows) would move the optimum enough to lose to an exact solver in the 8th digit.
    """
    d = np.asarray(displacements)
    if problem._support_basis is None:
        rows, a64 = np.arange(problem.basis.shape[0]), problem.basis
    else:
        rows, a64 = problem._support_basis
    full = rows.size == d.shape[1]
    out = np.empty((d.shape[0], a64.shape[1]), dtype=np.float64)
    for start in range(0, d.shape[0], BLOCK_FRAMES):
        block = d[start:start + BLOCK_FRAMES]
        out[start:start + BLOCK_FRAMES] = (block if full else block[:, rows]).astype(np.float64) @ a64
    return out


def frame_objective(w: np.ndarray, q: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Per-frame ½wᵀQw - gᵀw: (T,)."""
    return ((0.5 * (w @ q) - g) * w).sum(axis=1)


def binding_set(w: np.ndarray, grad: np.ndarray, lower: float, upper: float, eps: float) -> np.ndarray:
    """Variables at a bound whose gradient points out of the box: held fixed in the Newton step."""
    return ((w <= lower + eps) & (grad > 0)) | ((w >= upper - eps) & (grad < 0))


def kkt_ok(w: np.ndarray, grad: np.ndarray, lower: float, upper: float, tol: np.ndarray) -> np.ndarray:
    """Per frame: the projected gradient is below ``tol`` (T,) — the KKT conditions of the box QP."""
    pg = np.where(w <= lower, np.minimum(grad, 0.0), np.where(w >= upper, np.maximum(grad, 0.0), grad))
    return np.abs(pg).max(axis=1) <= tol


def _reduced_solve(q: np.ndarray, rhs: np.ndarray, free: np.ndarray) -> np.ndarray:
    """Solve ``Q_FF x_F = rhs_F`` per row (x = 0 off F): one batched LAPACK call, identity rows where held."""
    k = q.shape[0]
    m = np.where(free[:, :, None] & free[:, None, :], q, 0.0) + np.where(free, 0.0, 1.0)[:, :, None] * np.eye(k)
    return np.linalg.solve(m, np.where(free, rhs, 0.0)[:, :, None])[:, :, 0]


def _active_set(q: np.ndarray, b: np.ndarray, w: np.ndarray, lo: float, hi: float,
                lam: np.ndarray | None = None) -> np.ndarray:
    """Primal-dual active-set iterations (Hintermüller, Ito & Kunisch 2002), all frames at once.

    With ``λ = b - Qw`` (the bound's multiplier: >= 0 at the upper bound, <= 0 at the lower one), each
    step guesses the active sets from ``λ + c·(w - bound)``, fixes those variables at their bound and
    solves exactly for the rest. It usually settles the active set in a few steps (superlinear
    convergence); it can cycle on hard cases, which ``solve_frames``' projected Newton then finishes
    from the point reached (it only accepts descent). Returns (T, K) weights in the box.
    """
    c = float(np.mean(np.diag(q)))
    x = np.array(w, dtype=np.float64)  # the iterate, not clipped: its excursions past a bound drive the next guess
    lam = np.zeros_like(x) if lam is None else np.array(lam, dtype=np.float64)
    prev_up = prev_low = None
    todo = np.arange(w.shape[0])
    for _ in range(PDAS_STEPS):
        xt, lt, bt = x[todo], lam[todo], b[todo]
        up, low = lt + c * (xt - hi) > 0, lt + c * (xt - lo) < 0
        if prev_up is not None:  # frames whose sets did not change have converged
            moving = ~((up == prev_up).all(1) & (low == prev_low).all(1))
            todo, lt, bt, up, low = todo[moving], lt[moving], bt[moving], up[moving], low[moving]
            if todo.size == 0:
                break
        fixed = np.where(up, hi, np.where(low, lo, 0.0))
        free = ~(up | low)
        xn = _reduced_solve(q, bt - fixed @ q, free) + fixed
        x[todo] = xn
        lam[todo] = np.where(free, 0.0, bt - xn @ q)
        prev_up, prev_low = up, low
    return np.clip(x, lo, hi)


def solve_frames(problem: Problem, g: np.ndarray, *, start: np.ndarray | None = None) -> np.ndarray:
    """Independent per-frame solves: ``argmin ½wᵀQw - gᵀw`` in the box, for every row of g.

    Args:
        problem: from ``prepare``.
        g: (T, K) float64 ``D·A`` rows (plus any linear term of the caller's).
        start: (T, K) initial weights (clipped into the box); default the clipped unconstrained optimum.

    Returns:
        (T, K) float64 weights within the bounds.
    """
    lo, hi = problem.options.lower, problem.options.upper
    k = problem.num_targets
    q, b = problem.q, g
    t = b.shape[0]
    if t == 0 or k == 0:
        return np.zeros((t, k))
    if start is not None:
        w = _active_set(q, b, np.asarray(start, dtype=np.float64), lo, hi)
    elif t > 4 * COARSE_STRIDE:
        # Neighbouring frames share most of their active set: solve every COARSE_STRIDE-th frame first,
        # then seed each frame's sets and multipliers with those of the coarse frame at or before it.
        coarse = solve_frames(problem, b[::COARSE_STRIDE])
        lam = b[::COARSE_STRIDE] - coarse @ q
        lam[(coarse > lo) & (coarse < hi)] = 0.0
        near = np.arange(t) // COARSE_STRIDE
        w = _active_set(q, b, coarse[near], lo, hi, lam[near])
    else:  # the unconstrained optimum's excursions past the bounds seed the sets
        w = _active_set(q, b, np.linalg.solve(q, b.T).T, lo, hi)
    # KKT tolerance per frame, relative to the magnitudes that make up the gradient.
    tol = KKT_RTOL * (np.abs(b).max(axis=1) + np.abs(q).max() * max(abs(lo), abs(hi), 1.0))
    lipschitz = problem.lipschitz
    active = np.arange(t)
    for step_number in range(MAX_NEWTON_STEPS + 1):
        wa, ba = w[active], b[active]
        grad = wa @ q - ba
        done = kkt_ok(wa, grad, lo, hi, tol[active])
        active = active[~done]
        if active.size == 0:
            break
        if step_number == MAX_NEWTON_STEPS or (step_number >= PN_BATCH_STEPS and active.size <= FALLBACK_FRAMES):
            w[active] = _bvls(problem, b[active])  # a few hard frames: an exact active-set solve each
            break
        wa, ba, grad = wa[~done], ba[~done], grad[~done]
        eps = min(1e-12 * (hi - lo), 1e-3 * float(np.abs(grad).max()))
        free = ~binding_set(wa, grad, lo, hi, eps)  # (n, K)
        step = -_reduced_solve(q, grad, free)
        f0 = frame_objective(wa, q, ba)
        new = np.clip(wa + step, lo, hi)
        pending = np.arange(wa.shape[0])  # frames whose step is not accepted yet
        alpha = 1.0
        for _ in range(30):  # Armijo backtracking along the projected path
            cand = new[pending]
            bound = f0[pending] + 1e-4 * ((cand - wa[pending]) * grad[pending]).sum(1) + 1e-15 * np.abs(f0[pending])
            ok = frame_objective(cand, q, ba[pending]) <= bound
            pending = pending[~ok]
            if pending.size == 0:
                break
            alpha *= 0.5
            new[pending] = np.clip(wa[pending] + alpha * step[pending], lo, hi)
        else:  # the projected Newton path did not descend: a projected gradient step always does
            new[pending] = np.clip(wa[pending] - grad[pending] / lipschitz, lo, hi)
        w[active] = new
    return w


def _bvls(problem: Problem, b: np.ndarray) -> np.ndarray:
    """Per-frame bounded least squares on the K × K factor: ``½wᵀQw - bᵀw = ½||Lᵀw - L⁻¹b||² + const``
    with ``Q = LLᵀ``, by scipy's BVLS (Stark & Parker's exact active-set method), for the rare frames on
    which the batched methods are slow."""
    from scipy.linalg import solve_triangular
    from scipy.optimize import lsq_linear

    lo, hi = problem.options.lower, problem.options.upper
    chol = np.linalg.cholesky(problem.q)
    rhs = solve_triangular(chol, b.T, lower=True).T
    out = np.stack([lsq_linear(chol.T, row, bounds=(lo, hi), method="bvls", tol=1e-15).x for row in rhs])
    return np.clip(out, lo, hi)  # BVLS may leave a bound by a rounding error


def objective(problem: Problem, displacements: np.ndarray, weights: np.ndarray) -> float:
    """The full objective of the module docstring (data term + l2 + symmetry + smoothness), float64."""
    d = np.asarray(displacements, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    resid = w @ problem.basis.T - d
    reg = problem.q - problem.basis.T @ problem.basis
    value = float((resid**2).sum() + np.einsum("tk,kl,tl->", w, reg, w))
    if problem.options.smooth and w.shape[0] > 1:
        value += problem.options.smooth * problem.scale * float(((w[1:] - w[:-1]) ** 2).sum())
    return value
