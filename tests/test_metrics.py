"""Metrics on hand-computed 2–3 vertex cases, and on the FLAME template with the FLAME masks."""

from pathlib import Path

import numpy as np
import pytest

from talkface.evaluate import metrics

FLAME = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "flame"


def test_lve_hand_computed():
    gt = np.zeros((2, 3, 3))
    pred = gt.copy()
    pred[0, 0, 0] = 0.003  # lip vertex: squared error 9e-6
    pred[0, 1, 1] = 0.004  # lip vertex: 1.6e-5  -> frame 0 max 1.6e-5
    pred[1, 2, 2] = 0.010  # not a lip vertex    -> frame 1 max 0
    lips = [0, 1]
    assert float(metrics.lve(pred, gt, lips)) == pytest.approx((1.6e-5 + 0) / 2)
    assert float(metrics.lve_mm(pred, gt, lips)) == pytest.approx((4.0 + 0) / 2)


def test_mve_hand_computed():
    gt = np.zeros((1, 2, 3))
    pred = np.array([[[3.0, 4.0, 0.0], [0.0, 0.0, 1.0]]])
    assert float(metrics.mve(pred, gt)) == pytest.approx((5 + 1) / 2)


def test_fdd_hand_computed():
    template = np.zeros((2, 3))
    gt = np.zeros((2, 2, 3))
    gt[1, 0, 1] = 2.0  # upper vertex 0 squared displacement: 0 then 4 -> std 2
    pred = np.zeros((2, 2, 3))  # static prediction -> std 0
    assert float(metrics.fdd(pred, gt, template, [0])) == pytest.approx(2.0)
    assert float(metrics.fdd(gt, pred, template, [0])) == pytest.approx(-2.0)


def test_pearson_and_alignment():
    a = np.sin(np.linspace(0, 6, 50))
    assert metrics.pearson(a, 3 * a + 1) == pytest.approx(1.0)
    assert metrics.pearson(a, -a) == pytest.approx(-1.0)
    p, g = metrics.align_lengths(np.zeros((5, 2, 3)), np.zeros((3, 2, 3)))
    assert p.shape[0] == g.shape[0] == 3


@pytest.mark.skipif(not (FLAME / "flame_template.npz").is_file(), reason="FLAME fixtures not present in ../shared")
def test_lve_on_flame_lips():
    template = np.load(FLAME / "flame_template.npz")["vertices"]
    lips = np.load(FLAME / "flame_masks.npz")["lips"]
    gt = np.repeat(template[None], 4, axis=0)
    pred = gt.copy()
    pred[:, np.unique(lips), 1] -= 0.005  # every lip vertex 5 mm down
    pred[:, 0, 1] += 0.05  # a far error outside the lips must not count
    assert float(metrics.lve(pred, gt, lips)) == pytest.approx(0.005**2, rel=1e-5)
    assert float(metrics.lve_mm(pred, gt, lips)) == pytest.approx(5.0, rel=1e-5)


# ---------------------------------------------------------------------------- lip-sync measures (issue #27)


def _mouth(opening: np.ndarray) -> np.ndarray:
    """(T, 4, 3) toy mouth: vertices 0, 1 the upper lip at +opening/2, vertices 2, 3 the lower lip at -opening/2."""
    v = np.zeros((opening.size, 4, 3))
    v[:, :2, 1] = opening[:, None] / 2
    v[:, 2:, 1] = -opening[:, None] / 2
    v[:, :, 0] = [-0.01, 0.01, -0.01, 0.01]
    return v


def _syllables(num_frames: int = 90, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(num_frames) / 30.0
    return 0.004 + 0.006 * np.abs(np.sin(2 * np.pi * 2.3 * t + rng.uniform(0, 6))) * (1 + 0.3 * np.sin(t))


def _brute_force_shift(pred, gt, lips, max_shift):
    """Every shift scored with explicit loops over frames and vertices (no slicing tricks)."""
    n, scores = min(len(pred), len(gt)), {}
    for s in range(-max_shift, max_shift + 1):
        frames = [t for t in range(n) if 0 <= t + s < n]
        if not frames:
            continue
        per_frame = [max(sum((pred[t + s][k][c] - gt[t][k][c]) ** 2 for c in range(3)) for k in lips)
                     for t in frames]
        scores[s] = sum(per_frame) / len(per_frame)
    return scores


@pytest.mark.parametrize("seed", range(4))
def test_best_shift_matches_brute_force_on_tiny_arrays(seed):
    rng = np.random.default_rng(seed)
    gt, pred = rng.normal(size=(7, 3, 3)), rng.normal(size=(7, 3, 3))
    lips = [0, 2]
    scores = _brute_force_shift(pred.tolist(), gt.tolist(), lips, 3)
    best = min(scores.values())
    shift, value = metrics.best_shift_lve(pred, gt, lips, 3)
    assert value == pytest.approx(best, rel=1e-12)
    assert scores[shift] == pytest.approx(best, rel=1e-12)
    assert metrics.best_shift_lve(pred, gt, lips, 0) == (0, pytest.approx(scores[0], rel=1e-12))


@pytest.mark.parametrize("delay", [-4, -1, 0, 2, 5])
def test_a_shifted_copy_has_zero_best_shift_lve_at_its_delay(delay):
    gt = _mouth(_syllables())
    late = np.roll(gt, delay, axis=0)  # pred[t + delay] = gt[t] on the frames both cover
    if delay > 0:
        late[:delay] = gt[0]
    elif delay < 0:
        late[delay:] = gt[-1]
    shift, value = metrics.best_shift_lve(late, gt, [0, 1, 2, 3], metrics.max_shift_frames(30.0))
    assert shift == delay and value == 0.0
    assert metrics.max_shift_frames(30.0) == 6 and metrics.max_shift_frames(60.0) == 12  # 200 ms
    assert metrics.max_shift_frames(2.0) == 1  # never 0


def test_a_static_prediction_reports_no_shift():
    gt = _mouth(_syllables())
    static = np.repeat(gt[:1], len(gt), axis=0) * 0  # every frame alike: all shifts score alike or worse
    shift, _ = metrics.best_shift_lve(static, gt, [0, 1, 2, 3], 6)
    assert abs(shift) <= 6


def _all_monotone_paths(n: int, m: int):
    """Every monotone path from (0, 0) to (n-1, m-1), as (cells, steps)."""
    if n == 1 and m == 1:
        yield [(0, 0)], []
        return
    for di, dj in ((1, 0), (0, 1), (1, 1)):
        if n - di >= 1 and m - dj >= 1:
            for cells, steps in _all_monotone_paths(n - di, m - dj):
                yield cells + [(n - 1, m - 1)], steps + [(di, dj)]


@pytest.mark.parametrize("band", [1, 2, 10])
def test_dtw_lip_error_is_the_brute_force_minimum_of_the_weighted_mean(band):
    rng = np.random.default_rng(4)
    pred, gt = rng.normal(size=(5, 4, 3)), rng.normal(size=(6, 4, 3))
    lips = np.array([0, 2, 3])
    cost = ((pred[:, None, lips] - gt[None, :, lips]) ** 2).sum(-1).max(-1)
    width = max(band, 1)  # |n - m| = 1 widens nothing here
    best = float("inf")
    for cells, steps in _all_monotone_paths(5, 6):
        if any(abs(i - j) > width for i, j in cells):
            continue
        weights = [2] + [2 if s == (1, 1) else 1 for s in steps]  # symmetric: diagonal steps count twice
        best = min(best, sum(w * cost[c] for w, c in zip(weights, cells, strict=True)) / (5 + 6))
    assert metrics.dtw_lip_error(pred, gt, lips, band=band) == pytest.approx(best, rel=1e-12)


def test_dtw_lip_error_of_a_locally_warped_copy_within_the_band_is_zero():
    motion = _mouth(_syllables(60))
    # the truth holds frame 40 for two frames, the prediction frame 20: between them it is one frame late
    gt = motion[list(range(41)) + list(range(40, 60))]
    warped = motion[list(range(21)) + list(range(20, 60))]
    lips = [0, 1, 2, 3]
    assert metrics.lve(warped, gt, lips) > 0
    assert metrics.dtw_lip_error(warped, gt, lips, band=2) == 0.0
    assert metrics.dtw_lip_error(gt, gt, lips, band=2) == 0.0
    damped = _mouth(0.5 * _syllables(60))
    assert metrics.dtw_lip_error(damped, gt, lips, band=2) > 0.0  # shape errors stay
    assert metrics.dtw_lip_error(warped, gt, lips, band=2) <= float(metrics.lve(warped, gt, lips))


def test_lip_opening_and_its_correlation_and_range():
    opening = _syllables()
    gt = _mouth(opening)
    upper, lower = [0, 1], [2, 3]
    np.testing.assert_allclose(metrics.lip_opening(gt, upper, lower).numpy(), opening, rtol=1e-12)
    go = metrics.lip_opening(gt, upper, lower)
    assert metrics.pearson(go, go) == pytest.approx(1.0)
    flipped = metrics.lip_opening(_mouth(2 * opening.mean() - opening), upper, lower)  # opens when GT closes
    assert metrics.pearson(flipped, go) == pytest.approx(-1.0)
    for factor in (0.25, 0.5, 1.0, 1.5):
        damped = metrics.lip_opening(_mouth(opening.mean() + factor * (opening - opening.mean())), upper, lower)
        assert metrics.opening_range(damped, go) == pytest.approx(factor, rel=1e-9)
        assert metrics.pearson(damped, go) == pytest.approx(1.0)
    rest = metrics.lip_opening(_mouth(np.full(90, 0.004)), upper, lower)
    assert metrics.opening_range(rest, go) == 0.0
    assert np.isnan(metrics.opening_range(go, rest))  # a flat truth has no range to compare with
    assert np.isnan(metrics.pearson(rest, go))


def test_lip_opening_regions_prefers_named_lips_and_else_splits_by_height():
    from talkface.evaluate.regions import OPENING_SPLIT, lip_opening_regions

    template = _mouth(np.array([0.01]))[0]
    upper, lower, how = lip_opening_regions({"lips": np.array([3, 0, 2, 1])}, template)
    assert sorted(upper) == [0, 1] and sorted(lower) == [2, 3] and how == OPENING_SPLIT
    upper, lower, how = lip_opening_regions({"lips": np.arange(4), "upper_lip": np.array([1]),
                                             "lower_lip": np.array([3])}, template)
    assert list(upper) == [1] and list(lower) == [3] and "upper_lip" in how
    from talkface.errors import DatasetError

    with pytest.raises(DatasetError, match="no lip region"):
        lip_opening_regions({"forehead": np.array([0])}, template)
    with pytest.raises(DatasetError, match="one height"):
        lip_opening_regions({"lips": np.array([0, 1])}, template)


@pytest.mark.skipif(not (FLAME / "flame_template.npz").is_file(), reason="FLAME fixtures not present in ../shared")
@pytest.mark.parametrize("mesh, regions, name", [("flame_template", "flame_masks", "lips"),
                                                 ("biwi_template", "biwi_regions", "lve")])
def test_lip_opening_fallback_on_flame_and_biwi_regions(mesh, regions, name):
    """The height split of FLAME's lips / BIWI's lve region: lowering the lower half opens the mouth."""
    from talkface.evaluate.regions import OPENING_SPLIT, lip_opening_regions

    template = np.load(FLAME / f"{mesh}.npz")["vertices"].astype(np.float64)
    lips = np.load(FLAME / f"{regions}.npz")[name]
    upper, lower, how = lip_opening_regions({name: lips}, template)
    assert how == OPENING_SPLIT and set(upper).isdisjoint(lower)
    assert set(upper) | set(lower) == set(np.unique(lips).tolist())
    assert template[upper, 1].min() > np.median(template[np.unique(lips), 1]) >= template[lower, 1].max()
    frames = np.repeat(template[None], 2, axis=0)
    frames[1, lower, 1] -= 0.004  # the jaw drops 4 mm
    opening = metrics.lip_opening(frames, upper, lower).numpy()
    assert opening[1] - opening[0] == pytest.approx(0.004, rel=1e-6)
