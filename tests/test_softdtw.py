"""Soft-DTW: brute force over all alignment paths, gradcheck, invariants, padding, CPU/CUDA agreement."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction
from functools import cache

import pytest
import torch

from talkface.errors import ConfigError
from talkface.losses import SoftDTWLoss, band_mask, masked_mse, soft_dtw
from talkface.losses import _softdtw_cost as cost_module
from talkface.losses import _softdtw_wavefront as wavefront
from talkface.losses import softdtw as sd

GAMMAS = (1e-3, 1e-2, 1e-1, 1.0)
SHAPES = ((1, 1), (1, 4), (4, 1), (3, 3), (4, 6), (6, 5), (6, 6))


# ------------------------------------------------------------------------------------ oracles


@cache
def _paths(n: int, m: int) -> tuple[tuple[tuple[int, int], ...], ...]:
    """Every monotone alignment path from (0, 0) to (n-1, m-1) with steps (1,0), (0,1), (1,1)."""
    if (n, m) == (1, 1):
        return (((0, 0),),)
    out = []
    for di, dj in ((1, 1), (1, 0), (0, 1)):
        if n - di >= 1 and m - dj >= 1:
            out += [p + ((n - 1, m - 1),) for p in _paths(n - di, m - dj)]
    return tuple(out)


def _in_band_exact(i: int, j: int, n: int, m: int, bandwidth: float | None) -> bool:
    if bandwidth is None or n == 1:
        return True
    width = max(Fraction(bandwidth), Fraction(1, 2))
    return abs(i * (m - 1) - j * (n - 1)) <= width * max(n - 1, m - 1)


def _incidence(n: int, m: int, bandwidth: float | None = None) -> torch.Tensor:
    """(num_paths, n*m) float64: 1 where a path visits a cell; only paths inside the band."""
    rows = [
        [1.0 if (i, j) in set(p) else 0.0 for i in range(n) for j in range(m)]
        for p in _paths(n, m)
        if all(_in_band_exact(i, j, n, m, bandwidth) for i, j in p)
    ]
    return torch.tensor(rows, dtype=torch.float64)


def _oracle(x, y, gamma, cost="sqeuclidean", bandwidth=None):
    """Soft-min over all paths of the summed costs, built from differentiable torch ops (x: (n, D))."""
    c = (x[:, None, :] - y[None, :, :]).square().sum(-1)
    if cost == "euclidean":
        c = c.sqrt()
    path_costs = _incidence(x.shape[0], y.shape[0], bandwidth) @ c.reshape(-1)
    return -gamma * torch.logsumexp(-path_costs / gamma, dim=0)


def _hard_dtw(x, y):
    c = (x[:, None, :] - y[None, :, :]).square().sum(-1).tolist()
    n, m = len(c), len(c[0])
    r = [[math.inf] * (m + 1) for _ in range(n + 1)]
    r[0][0] = 0.0
    for i, j in itertools.product(range(1, n + 1), range(1, m + 1)):
        r[i][j] = c[i - 1][j - 1] + min(r[i - 1][j - 1], r[i - 1][j], r[i][j - 1])
    return r[n][m]


def _pair(n, m, dim=3, seed=0, dtype=torch.float64, scale=0.5):
    g = torch.Generator().manual_seed(seed)
    x = (scale * torch.randn(1, n, dim, generator=g, dtype=dtype)).requires_grad_()
    y = (scale * torch.randn(1, m, dim, generator=g, dtype=dtype)).requires_grad_()
    return x, y


def _value_and_grads(fn, x, y):
    value = fn(x, y)
    gx, gy = torch.autograd.grad(value.sum(), (x, y))
    return value.detach(), gx, gy


# --------------------------------------------------------------------------- exactness vs oracle


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("cost", ["sqeuclidean", "euclidean"])
@pytest.mark.parametrize("backward", ["auto", "sparse"])
def test_matches_brute_force_over_all_paths(gamma, cost, backward, monkeypatch):
    if backward == "sparse":  # tables this small are never sparse enough on their own
        monkeypatch.setattr(cost_module, "_SPARSE_MAX_DENSITY", 1.0)
    for seed, (n, m) in enumerate(SHAPES):
        x, y = _pair(n, m, seed=seed)
        got = _value_and_grads(lambda a, b: soft_dtw(a, b, gamma, cost=cost), x, y)
        want = _value_and_grads(lambda a, b: _oracle(a[0], b[0], gamma, cost)[None], x, y)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("bandwidth", [0, 0.5, 1, 1.5, 3])
def test_band_matches_brute_force_over_paths_inside_the_band(bandwidth):
    for seed, (n, m) in enumerate(((6, 6), (3, 6), (6, 2), (5, 4), (1, 5))):
        x, y = _pair(n, m, seed=seed)
        got = _value_and_grads(lambda a, b: soft_dtw(a, b, 0.1, bandwidth=bandwidth), x, y)
        want = _value_and_grads(lambda a, b: _oracle(a[0], b[0], 0.1, bandwidth=bandwidth)[None], x, y)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-10)


def test_band_zero_on_equal_lengths_is_the_diagonal_and_wide_band_is_no_band():
    x, y = _pair(5, 5)
    diagonal = (x - y).square().sum()
    torch.testing.assert_close(soft_dtw(x, y, 1e-2, bandwidth=0)[0], diagonal)
    torch.testing.assert_close(soft_dtw(x, y, 0.3, bandwidth=10), soft_dtw(x, y, 0.3))
    assert band_mask(4, 9, 0).sum() >= 9 and bool(band_mask(4, 9, 0)[0, 0] & band_mask(4, 9, 0)[-1, -1])


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([5, 3]), torch.tensor([4, 2])
    for kwargs in (
        {},
        {"cost": "euclidean"},
        {"divergence": True},
        {"bandwidth": 1},
        {"x_lengths": lengths[0], "y_lengths": lengths[1]},
    ):
        assert torch.autograd.gradcheck(lambda a, b, kw=kwargs: soft_dtw(a, b, 0.3, **kw), (x, y))


@pytest.mark.parametrize("gamma", [1.0, 0.1, 1e-2, 1e-3, 1e-5])
def test_small_gamma_approaches_hard_dtw(gamma):
    # soft-min bounds: min - γ log(#paths) <= softmin <= min, summed along the recursion
    for seed, (n, m) in enumerate(((6, 6), (4, 6), (8, 7))):
        x, y = _pair(n, m, seed=seed)
        hard = _hard_dtw(x[0].detach(), y[0].detach())
        soft = float(soft_dtw(x, y, gamma)[0].detach())
        assert hard - gamma * (n + m) * math.log(3) - 1e-12 <= soft <= hard + 1e-12


def test_large_costs_stay_finite():
    # R/γ ≈ 1e9: an unshifted exp(-R/γ) underflows and float32 R round trips give inf gradients
    x, y = _pair(6, 5, dim=4, scale=1e2)
    value, gx, gy = _value_and_grads(lambda a, b: soft_dtw(a, b, 1e-3), x, y)
    hard = _hard_dtw(x[0].detach(), y[0].detach())
    assert hard / 1e-3 > 1e8
    assert math.isclose(float(value[0]), hard, rel_tol=1e-12)
    assert torch.isfinite(gx).all() and torch.isfinite(gy).all()
    want = _value_and_grads(lambda a, b: _oracle(a[0], b[0], 1e-3)[None], x, y)
    torch.testing.assert_close(gx, want[1], rtol=1e-9, atol=1e-6)


# ----------------------------------------------------------------------------------- divergence


def test_divergence_is_zero_with_zero_gradient_at_equal_inputs():
    for gamma in GAMMAS:
        x, _ = _pair(6, 6, dim=4)
        y = x.detach().clone().requires_grad_()
        value, gx, gy = _value_and_grads(lambda a, b, g=gamma: soft_dtw(a, b, g, divergence=True), x, y)
        assert abs(float(value[0])) < 1e-12
        assert float(gx.abs().max()) < 1e-10 and float(gy.abs().max()) < 1e-10


def test_divergence_is_nonnegative_and_matches_brute_force():
    for seed, gamma in enumerate(GAMMAS * 3):
        n, m = 3 + seed % 4, 6 - seed % 3
        x, y = _pair(n, m, seed=seed, scale=0.3)
        got = _value_and_grads(lambda a, b, g=gamma: soft_dtw(a, b, g, divergence=True), x, y)

        def brute(a, b, g=gamma):
            a, b = a[0], b[0]
            return (_oracle(a, b, g) - 0.5 * (_oracle(a, a, g) + _oracle(b, b, g)))[None]

        want = _value_and_grads(brute, x, y)
        assert float(got[0][0]) >= 0
        for g_, w in zip(got, want, strict=True):
            torch.testing.assert_close(g_, w, rtol=1e-9, atol=1e-10)


def test_divergence_treats_a_target_without_grad_as_a_constant():
    x, y = _pair(5, 4)
    y = y.detach()
    value = soft_dtw(x, y, 0.1, divergence=True)
    (gx,) = torch.autograd.grad(value.sum(), x)
    x2 = x.detach().clone().requires_grad_()
    value2 = soft_dtw(x2, y.clone().requires_grad_(), 0.1, divergence=True)
    (gx2,) = torch.autograd.grad(value2.sum(), x2)
    torch.testing.assert_close(value, value2.detach())
    torch.testing.assert_close(gx, gx2)


# ----------------------------------------------------------------------------- batches, dtypes


@pytest.mark.parametrize("kwargs", [{}, {"divergence": True}, {"bandwidth": 1}, {"cost": "euclidean"}])
def test_padded_batch_equals_per_item(kwargs):
    g = torch.Generator().manual_seed(3)
    xl, yl = torch.tensor([7, 3, 9, 1]), torch.tensor([9, 5, 2, 4])
    x = torch.randn(4, 9, 5, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(4, 9, 5, generator=g, dtype=torch.float64, requires_grad=True)
    value = soft_dtw(x, y, 0.1, x_lengths=xl, y_lengths=yl, **kwargs)
    gx, gy = torch.autograd.grad(value.sum(), (x, y))
    for b in range(4):
        n, m = int(xl[b]), int(yl[b])
        xb, yb = x[b : b + 1, :n].detach().requires_grad_(), y[b : b + 1, :m].detach().requires_grad_()
        vb = soft_dtw(xb, yb, 0.1, **kwargs)
        gxb, gyb = torch.autograd.grad(vb.sum(), (xb, yb))
        torch.testing.assert_close(value[b], vb[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(gx[b, :n], gxb[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(gy[b, :m], gyb[0], rtol=1e-12, atol=1e-12)
        assert not gx[b, n:].any() and not gy[b, m:].any()


def test_threaded_batch_equals_single_items():
    # B * T * T' above both threading thresholds: the batch is split across threads
    g = torch.Generator().manual_seed(4)
    x = torch.randn(4, 300, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(4, 290, 3, generator=g, dtype=torch.float64)
    value = soft_dtw(x, y, 1e-2)
    (gx,) = torch.autograd.grad(value.sum(), x)
    value = value.detach()
    for b in range(4):
        xb = x[b : b + 1].detach().requires_grad_()
        vb = soft_dtw(xb, y[b : b + 1], 1e-2)
        (gxb,) = torch.autograd.grad(vb.sum(), xb)
        assert float(value[b]) == float(vb[0].detach()) and torch.equal(gx[b], gxb[0])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sparse_and_dense_backward_agree(dtype, monkeypatch):
    # at small γ dL/dC is mostly exact zeros and the CPU backward skips them; force each path in turn
    g = torch.Generator().manual_seed(10)
    xl, yl = torch.tensor([9, 4, 7]), torch.tensor([8, 8, 3])
    x = torch.randn(3, 9, 6, generator=g, dtype=dtype, requires_grad=True)
    y = torch.randn(3, 8, 6, generator=g, dtype=dtype, requires_grad=True)
    results = []
    for density in (1.0, 0.0):  # everything sparse, then everything dense
        monkeypatch.setattr(cost_module, "_SPARSE_MAX_DENSITY", density)
        for kwargs in ({"x_lengths": xl, "y_lengths": yl}, {"divergence": True}, {"gamma": 1.0}):
            value = soft_dtw(x, y, **{"gamma": 1e-3, **kwargs})
            results.append(torch.autograd.grad(value.sum(), (x, y)))
    tolerance = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-5}
    for sparse, dense in zip(results[:3], results[3:], strict=True):
        for a, b in zip(sparse, dense, strict=True):
            torch.testing.assert_close(a, b, **tolerance)


def test_translation_invariance_float32_at_flame_scale():
    # FLAME-like: a fixed face (±0.1 m) plus mm-level motion; a common 0.1 m offset must not matter
    g = torch.Generator().manual_seed(5)
    face = 0.1 * torch.randn(1, 1, 3000, generator=g)
    x = face + 2e-3 * torch.randn(2, 30, 3000, generator=g)
    y = face + 2e-3 * torch.randn(2, 26, 3000, generator=g)

    def run(a, b, dtype=torch.float32):
        a = a.to(dtype).requires_grad_()
        value = soft_dtw(a, b.to(dtype), 1e-3)
        return value.double(), torch.autograd.grad(value.sum(), a)[0].double()

    reference = run(x, y, torch.float64)
    base, shifted = run(x, y), run(x + 0.1, y + 0.1)
    # without centring the float32 GEMM expansion is off by ~5e-5 in value and ~1e-2 in gradient here
    for got in (base, shifted):
        torch.testing.assert_close(got[0], reference[0], rtol=1e-6, atol=0)
        assert float((got[1] - reference[1]).norm() / reference[1].norm()) < 3e-5


def test_dtypes_reductions_and_module():
    x, y = _pair(4, 5, dtype=torch.float32)
    values = soft_dtw(x, y, 0.1)
    assert values.dtype == torch.float32 and values.shape == (1,)
    assert soft_dtw(x.double(), y.double(), 0.1).dtype == torch.float64
    batch_x, batch_y = torch.randn(3, 4, 2), torch.randn(3, 6, 2)
    per_item = soft_dtw(batch_x, batch_y, 0.1)
    torch.testing.assert_close(soft_dtw(batch_x, batch_y, 0.1, reduction="sum"), per_item.sum())
    torch.testing.assert_close(SoftDTWLoss(0.1)(batch_x, batch_y), per_item.mean())
    torch.testing.assert_close(SoftDTWLoss(0.1, reduction="none")(batch_x, batch_y, [4, 4, 4], None), per_item)


def test_wavefront_matches_numba_kernels_beyond_1024_frames():
    g = torch.Generator().manual_seed(6)
    cost = torch.rand(3, 40, 1100, generator=g, dtype=torch.float64)
    xl, yl = torch.tensor([40, 33, 40]), torch.tensor([1100, 700, 5])
    for half_width in (-1.0, 2.0):
        v_cpu, w_cpu = sd._dp_forward(cost, xl, yl, 0.05, half_width)
        v_wf, w_wf = wavefront.dp_forward(cost, xl, yl, 0.05, half_width)
        torch.testing.assert_close(v_wf, v_cpu, rtol=1e-12, atol=1e-12)
        scale = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
        e_cpu = sd._dp_backward(w_cpu, xl, yl, scale, 1100)
        e_wf = wavefront.dp_backward(w_wf, xl, yl, scale, 1100)
        torch.testing.assert_close(e_wf, e_cpu, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kwargs", [{}, {"divergence": True, "bandwidth": 2}, {"cost": "euclidean"}])
def test_wavefront_path_through_the_api_matches_the_cpu_path(kwargs, monkeypatch):
    # the CUDA dispatch runs the wavefront; forcing it on CPU checks everything but the device itself
    g = torch.Generator().manual_seed(9)
    x = torch.randn(3, 12, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(3, 9, 4, generator=g, dtype=torch.float64, requires_grad=True)
    lengths = {"x_lengths": torch.tensor([12, 7, 1]), "y_lengths": torch.tensor([9, 9, 4])}
    results = []
    for force in (False, True):
        if force:
            monkeypatch.setattr(sd, "_dp_forward", lambda c, *a: wavefront.dp_forward(c, *a))
            monkeypatch.setattr(sd, "_dp_backward", lambda w, *a: wavefront.dp_backward(w, *a))
        value = soft_dtw(x, y, 0.05, **lengths, **kwargs)
        results.append((value.detach(), *torch.autograd.grad(value.sum(), (x, y))))
    for got, want in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs",
    [
        {"gamma": 0.0},
        {"gamma": -1e-3},
        {"gamma": float("nan")},
        {"cost": "cosine"},
        {"reduction": "max"},
        {"bandwidth": -1},
        {"x_lengths": torch.tensor([0, 3])},
        {"y_lengths": torch.tensor([2.0, 3.0])},
        {"y_lengths": torch.tensor([3])},
    ],
)
def test_invalid_arguments_raise_config_error(kwargs):
    x, y = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    kwargs = {"gamma": 0.1, **kwargs}
    with pytest.raises(ConfigError):
        soft_dtw(x, y, **kwargs)


def test_mismatched_shapes_raise_config_error():
    with pytest.raises(ConfigError, match="frame size D"):
        soft_dtw(torch.randn(1, 3, 4), torch.randn(1, 3, 5))
    with pytest.raises(ConfigError, match="batch size"):
        soft_dtw(torch.randn(2, 3, 4), torch.randn(1, 3, 4))
    with pytest.raises(ConfigError):
        soft_dtw(torch.randn(3, 4), torch.randn(3, 4))
    with pytest.raises(ConfigError):
        SoftDTWLoss(gamma=0)


# ------------------------------------------------------------------------------------------ MSE


def test_masked_mse_matches_mse_loss_and_ignores_padding():
    g = torch.Generator().manual_seed(7)
    pred, target = torch.randn(3, 6, 4, generator=g), torch.randn(3, 6, 4, generator=g)
    torch.testing.assert_close(masked_mse(pred, target), torch.nn.MSELoss()(pred, target))
    lengths = torch.tensor([6, 2, 4])
    valid = torch.cat([(pred[b, :n] - target[b, :n]).reshape(-1) for b, n in enumerate(lengths.tolist())])
    torch.testing.assert_close(masked_mse(pred, target, lengths), valid.square().mean())
    pred[1, 3:] = 1e6  # padding must not leak in
    torch.testing.assert_close(masked_mse(pred, target, lengths), valid.square().mean())
    with pytest.raises(ConfigError):
        masked_mse(pred, target[:, :5])
    with pytest.raises(ConfigError):
        masked_mse(pred, target, torch.tensor([7, 1, 1]))


# ------------------------------------------------------------------------------------------ GPU


@pytest.mark.gpu
def test_cuda_matches_cpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    g = torch.Generator().manual_seed(8)
    x = 0.1 + 2e-2 * torch.randn(3, 1100, 60, generator=g)
    y = 0.1 + 2e-2 * torch.randn(3, 1030, 60, generator=g)
    lengths = torch.tensor([1100, 400, 17]), torch.tensor([1030, 500, 12])
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True  # the loss must not run its GEMMs in TF32 anyway
    try:
        for kwargs in ({}, {"divergence": True, "bandwidth": 40}, {"cost": "euclidean"}):
            results = []
            for device in ("cpu", "cuda"):
                a, b = x.to(device).requires_grad_(), y.to(device).requires_grad_()
                value = soft_dtw(a, b, 1e-2, x_lengths=lengths[0], y_lengths=lengths[1], **kwargs)
                grads = torch.autograd.grad(value.sum(), (a, b))
                results.append([t.double().cpu() for t in (value, *grads)])
            for c, d in zip(*results, strict=True):
                torch.testing.assert_close(d, c, rtol=1e-4, atol=1e-5 * float(c.abs().max()))
        assert torch.backends.cuda.matmul.allow_tf32 is True
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
