"""The rig solver against its oracle: ``scipy.optimize.lsq_linear`` (BVLS) on the same stacked least-squares system.

Invariants: in-bounds weights that built the mesh are recovered; the objective equals the oracle's within
1e-6 relative and is never worse; smoothness, l2 and symmetry terms behave as their definitions say;
the live (causal) solve equals the offline one when smoothness is off.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import lsq_linear

from talkface.errors import ConfigError
from talkface.rig.qp import SolveOptions, objective, prepare
from talkface.rig.solve import LiveSolver, solve_weights


def random_rig(rng: np.random.Generator, rows: int = 240, k: int = 10, sparsity: float = 0.5) -> np.ndarray:
    """(rows, K) target displacements with a realistic spread of magnitudes and local support."""
    a = rng.normal(size=(rows, k)) * (rng.random((rows, k)) < sparsity)
    return a * rng.uniform(0.3, 3.0, size=k)


def oracle(basis: np.ndarray, d: np.ndarray, problem, opts: SolveOptions) -> np.ndarray:
    """Weights from lsq_linear on the stacked system [A; L] w ≈ [d; 0] with LᵀL = Q - AᵀA (per frame),
    or, with smoothness, on the whole (T·K)-variable system including the difference rows."""
    t, k = d.shape[0], basis.shape[1]
    reg = problem.q - basis.T @ basis
    chol = np.linalg.cholesky(reg)
    if not opts.smooth:
        m = np.vstack([basis, chol.T])
        return np.stack([lsq_linear(m, np.concatenate([row, np.zeros(k)]), bounds=(opts.lower, opts.upper),
                                    method="bvls", tol=1e-14).x for row in d])
    diff = np.eye(t)[1:] - np.eye(t)[:-1]
    m = np.vstack([np.kron(np.eye(t), basis), np.kron(np.eye(t), chol.T),
                   np.sqrt(opts.smooth * problem.scale) * np.kron(diff, np.eye(k))])
    rhs = np.concatenate([d.reshape(-1), np.zeros(t * k), np.zeros((t - 1) * k)])
    return lsq_linear(m, rhs, bounds=(opts.lower, opts.upper), method="bvls", tol=1e-14).x.reshape(t, k)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("opts", [SolveOptions(), SolveOptions(lower=-0.5, upper=0.7), SolveOptions(l2=0.05),
                                  SolveOptions(symmetry=0.3, l2=0.01), SolveOptions(smooth=0.2)],
                         ids=["plain", "bounds", "l2", "symmetry", "smooth"])
def test_objective_equals_bvls_oracle_and_is_never_worse(seed: int, opts: SolveOptions) -> None:
    rng = np.random.default_rng(seed)
    basis = random_rig(rng)
    t = 12 if opts.smooth else 60
    truth = rng.uniform(-0.4, 1.4, size=(t, basis.shape[1]))  # many weights beyond the bounds: active sets
    d = truth @ basis.T + 0.3 * rng.normal(size=(t, basis.shape[0]))
    problem = prepare(basis, opts, pairs=[(0, 1), (2, 3)])
    w = solve_weights(problem, d)
    assert (w >= opts.lower).all() and (w <= opts.upper).all()
    ours, ref = objective(problem, d, w), objective(problem, d, oracle(basis, d, problem, opts))
    assert abs(ours - ref) <= 1e-6 * ref
    assert ours <= ref * (1 + 1e-12)


def test_float32_motion_matches_the_oracle_too() -> None:
    """talkface's animations are float32: the float32 product must not cost accuracy beyond 1e-6."""
    rng = np.random.default_rng(7)
    basis = random_rig(rng, rows=900, k=20).astype(np.float32)
    d = (rng.uniform(-0.2, 1.2, size=(40, 20)) @ basis.T + 0.05 * rng.normal(size=(40, 900))).astype(np.float32)
    problem = prepare(basis)
    w = solve_weights(problem, d)
    ref = objective(problem, d, oracle(basis.astype(np.float64), d.astype(np.float64), problem, SolveOptions()))
    assert abs(objective(problem, d, w) - ref) <= 1e-6 * ref


def test_in_bounds_weights_are_recovered() -> None:
    rng = np.random.default_rng(1)
    basis = np.linalg.qr(rng.normal(size=(600, 52)))[0] * 0.01  # well conditioned, metres-like
    truth = rng.uniform(0, 1, size=(300, 52))
    truth[rng.random(truth.shape) < 0.3] = 0.0  # many exactly at the lower bound
    truth[rng.random(truth.shape) < 0.1] = 1.0  # and some at the upper one
    w = solve_weights(prepare(basis), (truth @ basis.T).astype(np.float32))
    assert np.abs(w - truth).max() < 1e-4


def test_long_clip_uses_warm_start_and_stays_exact() -> None:
    """Above 32 frames the coarse-frame warm start kicks in; the answer must be the per-frame optimum."""
    rng = np.random.default_rng(3)
    basis = random_rig(rng, rows=300, k=16)
    t = np.arange(400) / 30
    truth = 0.5 + 0.9 * np.sin(2 * np.pi * np.outer(t, rng.uniform(0.2, 2, 16)) + rng.uniform(0, 6, 16))
    d = truth @ basis.T + 0.05 * rng.normal(size=(400, 300))
    problem = prepare(basis)
    w = solve_weights(problem, d)
    sample = np.arange(0, 400, 37)
    ref = oracle(basis, d[sample], problem, SolveOptions())
    assert abs(objective(problem, d[sample], w[sample]) - objective(problem, d[sample], ref)) <= 1e-9 * objective(
        problem, d[sample], ref)


def test_smoothness_reduces_frame_to_frame_change() -> None:
    rng = np.random.default_rng(2)
    basis = random_rig(rng)
    d = rng.uniform(0, 1, size=(30, 10)) @ basis.T + 0.5 * rng.normal(size=(30, basis.shape[0]))
    rough = solve_weights(prepare(basis), d)
    smooth = solve_weights(prepare(basis, SolveOptions(smooth=1.0)), d)
    assert np.abs(np.diff(smooth, axis=0)).sum() < 0.5 * np.abs(np.diff(rough, axis=0)).sum()


def test_symmetry_ties_pull_pairs_together_and_l2_pulls_to_zero() -> None:
    rng = np.random.default_rng(4)
    basis = random_rig(rng, k=4)
    d = np.array([[0.9, 0.1, 0.5, 0.5]]) @ basis.T
    free = solve_weights(prepare(basis), d)[0]
    tied = solve_weights(prepare(basis, SolveOptions(symmetry=100.0), pairs=[(0, 1)]), d)[0]
    assert abs(tied[0] - tied[1]) < 0.05 * abs(free[0] - free[1])
    pulled = solve_weights(prepare(basis, SolveOptions(l2=10.0)), d)[0]
    assert np.abs(pulled).sum() < 0.5 * np.abs(free).sum()


def test_live_solver_without_smoothness_equals_offline_and_is_causal() -> None:
    rng = np.random.default_rng(5)
    basis = random_rig(rng)
    d = rng.uniform(-0.2, 1.2, size=(25, 10)) @ basis.T
    problem = prepare(basis)
    live = LiveSolver(problem)
    streamed = np.concatenate([live.push(d[i:i + 5]) for i in range(0, 25, 5)])
    np.testing.assert_allclose(streamed, solve_weights(problem, d), atol=1e-9)
    # With smoothness, a frame's weights depend only on frames up to it.
    smooth = prepare(basis, SolveOptions(smooth=0.5))
    a, b = LiveSolver(smooth), LiveSolver(smooth)
    first = a.push(d[:10])
    changed = d.copy()
    changed[10:] = 0
    np.testing.assert_array_equal(first, b.push(changed[:10]))


@pytest.mark.parametrize("kwargs", [dict(lower=1.0, upper=0.0), dict(lower=0.0, upper=0.0),
                                    dict(upper=float("inf")), dict(lower=float("nan")), dict(l2=-1.0),
                                    dict(smooth=float("inf"))])
def test_bad_options_are_refused(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        SolveOptions(**kwargs)


@pytest.mark.parametrize("pdas_steps", [0, 1, 3], ids=["active-set-only", "one-pdas-step", "three-pdas-steps"])
def test_each_stage_of_the_solver_alone_reaches_the_oracle(monkeypatch, pdas_steps):
    """PDAS → primal active set: the finishing method must reach the optimum from wherever PDAS stopped."""
    import talkface.rig.qp as qp

    monkeypatch.setattr(qp, "PDAS_STEPS", pdas_steps)
    rng = np.random.default_rng(11)
    basis = random_rig(rng, k=12)
    d = rng.uniform(-0.5, 1.5, size=(80, 12)) @ basis.T + 0.3 * rng.normal(size=(80, basis.shape[0]))
    problem = prepare(basis, SolveOptions(l2=0.01))
    w = solve_weights(problem, d)
    ref = objective(problem, d, oracle(basis, d, problem, SolveOptions(l2=0.01)))
    ours = objective(problem, d, w)
    assert abs(ours - ref) <= 1e-6 * ref and ours <= ref * (1 + 1e-12)
