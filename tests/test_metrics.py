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
