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
3. The primal active-set method (Nocedal & Wright, Alg. 16.3) finishes the frames on which PDAS cycles
   (it can, when Q is not an M-matrix): one bound change per step, never cycling, exact at the end; all
   frames stop when the KKT conditions hold to ~1e-11 relative.
The data enter only through ``G = D·A`` (T × K), one matrix product over the rows the targets move,
so the cost barely depends on the vertex count.

``scipy.optimize.lsq_linear`` on the same stacked system is the oracle the tests compare against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from talkface.errors import ConfigError

KKT_RTOL = 1e-11  # projected-gradient tolerance, relative to the size of the frame's gradient terms
RIDGE = 1e-10  # relative ridge added to Q: keeps a rank-deficient region solvable, negligible otherwise
COARSE_STRIDE = 8  # warm start: every 8th frame is solved first and seeds its neighbours
PDAS_STEPS = 25  # primal-dual active-set iterations before the primal active-set method finishes
MAX_ACTIVE_SET_STEPS = 1000  # a bound for that finish (it needs a few steps per hard frame)
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
    rows = np.flatnonzero(np.any(a != 0, axis=1))  # only the rows a target moves enter G = D·A
    return Problem(basis=a, q=q, scale=scale, options=options, lipschitz=float(np.linalg.eigvalsh(q)[-1]) if k else 1.0,
                   _support_basis=(rows, a[rows]))


def project(displacements: np.ndarray, problem: Problem, *, sum_of_squares: bool = False
            ) -> np.ndarray | tuple[np.ndarray, float]:
    """``G = D·A``: (T, K) float64 from displacements (T, 3N) on the problem's rows.

    Only the rows where a target moves take part. The product is in float64 (in blocks of frames, to
    bound memory) whatever the input's precision: a float32 product's rounding (~1e-7 relative over
    thousands of rows) would move the optimum enough to lose to an exact solver in the 8th digit.
    With ``sum_of_squares``, also ``||D||²`` over all rows (float64), computed on the way.
    """
    d = np.asarray(displacements)
    if problem._support_basis is None:
        rows, a64 = np.arange(problem.basis.shape[0]), problem.basis
    else:
        rows, a64 = problem._support_basis
    full = rows.size == d.shape[1]
    out = np.empty((d.shape[0], a64.shape[1]), dtype=np.float64)
    total = 0.0
    for start in range(0, d.shape[0], BLOCK_FRAMES):
        block = d[start:start + BLOCK_FRAMES].astype(np.float64)
        if sum_of_squares:
            flat = block.reshape(-1)
            total += float(flat @ flat)
        out[start:start + BLOCK_FRAMES] = (block if full else block[:, rows]) @ a64
    return (out, total) if sum_of_squares else out


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


def solve_frames(problem: Problem, g: np.ndarray, *, start: np.ndarray | None = None,
                 multipliers: np.ndarray | None = None) -> np.ndarray:
    """Independent per-frame solves: ``argmin ½wᵀQw - gᵀw`` in the box, for every row of g.

    Args:
        problem: from ``prepare``.
        g: (T, K) float64 ``D·A`` rows (plus any linear term of the caller's).
        start: (T, K) initial weights (clipped into the box); default the clipped unconstrained optimum.
        multipliers: (T, K) the bounds' multipliers at ``start`` (``g - Q·start`` on held weights, 0 on the
            others): with them, ``start``'s active set seeds the first guess (a warm start from a neighbour).

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
        w = _active_set(q, b, np.asarray(start, dtype=np.float64), lo, hi, multipliers)
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
    grad = w @ q - b
    left = np.flatnonzero(~kkt_ok(w, grad, lo, hi, tol))
    if left.size:  # PDAS cycled on these frames: finish them with the primal active-set method
        w[left] = _primal_active_set(q, b[left], w[left], lo, hi, tol[left])
    return w


def _primal_active_set(q: np.ndarray, b: np.ndarray, w: np.ndarray, lo: float, hi: float,
                       tol: np.ndarray) -> np.ndarray:
    """The primal active-set method for box-constrained QPs (Nocedal & Wright, Algorithm 16.3), all frames at once.

    From a feasible point, the working set is the weights at a bound. Each step solves the equality
    problem with those held; a frame whose solution moves takes the longest feasible step towards it
    and holds the first weight it meets at a bound; a frame whose solution stands releases the held weight
    whose multiplier has the wrong sign (most), or stops: it is at the optimum. On a strictly convex
    problem it ends in a finite number of steps; from PDAS's last point the few frames it gets need few.

    Args:
        q: (K, K); b: (n, K); w: (n, K) feasible start; lo, hi: bounds; tol: (n,) KKT tolerances.

    Returns:
        (n, K) weights at the optimum.
    """
    w = np.clip(w, lo, hi)
    at_lo, at_hi = w <= lo, w >= hi
    todo = np.arange(w.shape[0])
    for _ in range(MAX_ACTIVE_SET_STEPS):
        if todo.size == 0:
            break
        n = todo.size
        wl, bl, lo_set, hi_set = w[todo], b[todo], at_lo[todo], at_hi[todo]
        fixed = np.where(hi_set, hi, np.where(lo_set, lo, 0.0))
        free = ~(lo_set | hi_set)
        x = _reduced_solve(q, bl - fixed @ q, free) + fixed
        p = x - wl
        moving = np.abs(p).max(axis=1) > 1e-13 * (hi - lo)
        # A frame that moves takes the longest step along p within the box; the first bound met is held.
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(free & (p < 0), (lo - wl) / p, np.where(free & (p > 0), (hi - wl) / p, np.inf))
        block = ratio.argmin(axis=1)
        alpha = np.minimum(1.0, ratio[np.arange(n), block])
        new = wl + alpha[:, None] * p
        rows = np.flatnonzero(moving & (alpha < 1.0))
        cols = block[rows]
        down = p[rows, cols] < 0
        new[rows, cols] = np.where(down, lo, hi)
        lo_set[rows, cols], hi_set[rows, cols] = down, ~down
        # A frame that stands releases the held weight whose multiplier points into the box the most.
        grad = x @ q - bl
        wrong = np.where(lo_set, -grad, np.where(hi_set, grad, -np.inf))  # > 0: the weight wants to leave its bound
        worst = wrong.argmax(axis=1)
        release = ~moving & (wrong[np.arange(n), worst] > tol[todo])
        rows = np.flatnonzero(release)
        lo_set[rows, worst[rows]] = False
        hi_set[rows, worst[rows]] = False
        w[todo] = np.where(moving[:, None], new, x)
        at_lo[todo], at_hi[todo] = lo_set, hi_set
        todo = todo[moving | release]
    return np.clip(w, lo, hi)


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
