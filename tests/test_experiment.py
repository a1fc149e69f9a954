"""The Soft-DTW vs MSE experiment (benchmarks/softdtw_vs_mse.py): end to end on the tiny setting, its
fail-fast paths, and its own maths against independent oracles (the library's soft-DTW, a known shift).
"""

from __future__ import annotations

import importlib.util
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from talkface.errors import ConfigError

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "softdtw_vs_mse.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _load_script():
    spec = importlib.util.spec_from_file_location("softdtw_vs_mse", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def exp():
    return _load_script()


@pytest.fixture(scope="module")
def tiny_report(exp, tmp_path_factory):
    root = tmp_path_factory.mktemp("experiment")
    rc = exp.main(["--tiny", "--out", str(root / "docs"), "--work", str(root / "work"), "--jobs", "1"])
    assert rc == 0
    return root / "docs"


def _table_rows(text: str, header_start: str) -> list[list[str]]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def _numbers(cell: str) -> list[float]:
    return [float(x) for x in re.findall(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?", cell)]


def test_tiny_report_has_every_variant_and_finite_numbers(exp, tiny_report):
    text = (tiny_report / "results.md").read_text()
    rows = _table_rows(text, "| variant |")
    assert [r[0] for r in rows] == list(exp.VARIANTS)
    for row in rows:
        for cell in row[1:]:
            values = _numbers(cell)
            assert values and all(math.isfinite(v) for v in values), row
    gamma_rows = _table_rows(text, "| γ (m²) |")
    assert [float(r[0]) for r in gamma_rows] == sorted(exp.tiny_setup().gammas)
    for row in gamma_rows:
        assert all(math.isfinite(v) for cell in row for v in _numbers(cell)), row
    assert "python benchmarks/softdtw_vs_mse.py --tiny" in text
    assert str(tiny_report.parent) not in text  # the rerun command names no folder of this machine
    assert "torch" in text and "min" in text


def test_rerun_command_has_no_machine_specific_folders(exp, tmp_path):
    repo = tmp_path / "repo"
    argv = ["--out", str(repo / "docs"), "--work", str(tmp_path / "elsewhere" / "exp work"), "--seeds", "0", "1"]
    assert exp.rerun_command(argv, repo) == (
        "python benchmarks/softdtw_vs_mse.py --out docs --work 'exp work' --seeds 0 1")
    assert exp.rerun_command([f"--work={tmp_path}/w", "--out=docs"], repo) == (
        "python benchmarks/softdtw_vs_mse.py --work=w --out=docs")


def test_tiny_report_figures_are_real_pngs(tiny_report):
    names = {"results_loss_curves.png", "results_lip_opening.png", "results_gamma.png", "results_alignment.png"}
    text = (tiny_report / "results.md").read_text()
    for name in names:
        data = (tiny_report / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000, name
        assert f"({name})" in text
    import matplotlib.image

    image = matplotlib.image.imread(tiny_report / "results_lip_opening.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert {p.name for p in tiny_report.iterdir()} == names | {"results.md"}  # no temporary files left


def test_missing_data_fails_fast_with_the_path(exp, tmp_path, capsys):
    missing = tmp_path / "no_vocaset"
    rc = exp.main(["--data", str(missing), "--preset", "vocaset", "--out", str(tmp_path / "docs")])
    assert rc == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "talkface prepare" in err
    assert not (tmp_path / "docs").exists()


def test_flag_combinations_are_checked(exp, tmp_path, capsys):
    assert exp.main(["--preset", "vocaset", "--out", str(tmp_path)]) == 2
    assert "--preset only applies with --data" in capsys.readouterr().err
    assert exp.main(["--tiny", "--epochs", "0", "--out", str(tmp_path)]) == 2
    with pytest.raises(SystemExit):
        exp.parse_args(["--variants", "l1"])


def test_data_mode_uses_the_papers_recipe(exp):
    setup = exp.vocaset_setup("prepared", "vocaset", "facebook/wav2vec2-base-960h", "cuda")
    assert (setup.lr, setup.batch_size, setup.epochs, setup.gamma) == (1e-4, 1, 100, 1e-3)
    assert setup.encoder == "facebook/wav2vec2-base-960h" and setup.data == "prepared"


@pytest.mark.parametrize("gamma", [1e-2, 0.5])
def test_expected_alignment_matches_library_soft_dtw(exp, gamma):
    """Value = the library's R[n, m]; Σ_j E_ij·2(x_i − y_j) = the library's autograd gradient."""
    import torch

    from talkface.losses import soft_dtw

    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(7, 3)) * 0.3, rng.normal(size=(5, 3)) * 0.3
    cost = ((x[:, None] - y[None]) ** 2).sum(-1)
    value, e = exp.expected_alignment(cost, gamma)
    xt = torch.tensor(x[None], requires_grad=True)
    ref = soft_dtw(xt, torch.tensor(y[None]), gamma)
    ref.sum().backward()
    assert value == pytest.approx(float(ref.detach()[0]), rel=1e-9, abs=1e-12)
    grad = (e[:, :, None] * 2 * (x[:, None] - y[None])).sum(1)
    np.testing.assert_allclose(grad, xt.grad[0].numpy(), rtol=1e-7, atol=1e-10)
    assert e[0, 0] == pytest.approx(1.0) and e[-1, -1] == pytest.approx(1.0)


def test_expected_alignment_is_the_hard_path_at_small_gamma(exp):
    """A sequence against itself with distinct frames: the diagonal, with no mass elsewhere."""
    x = np.arange(6, dtype=np.float64)[:, None] ** 1.5
    cost = (x - x.T) ** 2
    _, e = exp.expected_alignment(cost, 1e-4)
    np.testing.assert_allclose(e, np.eye(6), atol=1e-9)


def test_best_shift_recovers_a_known_delay(exp):
    rng = np.random.default_rng(0)
    gt = rng.normal(size=(40, 5, 3))
    late = np.concatenate([gt[:1].repeat(3, 0), gt[:-3]])  # the prediction runs 3 frames late
    shift, lve = exp.best_shift_lip_error(late, gt, np.arange(5), 6)
    assert shift == 3 and lve == 0.0
    shift, lve = exp.best_shift_lip_error(gt, gt, np.arange(5), 6)
    assert shift == 0 and lve == 0.0


def test_corpus_timing_spread_is_additive(tmp_path):
    from talkface.synthetic.corpus import make_speakers

    demo, wide = make_speakers(6, 0), make_speakers(6, 0, max_lag_s=0.1, tempo_range=(0.85, 1.15))
    assert sorted(round(s.style.lag_s, 4) for s in demo) == [-0.05, -0.03, -0.01, 0.01, 0.03, 0.05]
    for a, b in zip(demo, wide, strict=True):
        assert b.style.lag_s == pytest.approx(2 * a.style.lag_s, abs=1e-4)
        assert (a.voice, a.shape, a.style.amplitude, a.style.asymmetry) == \
            (b.voice, b.shape, b.style.amplitude, b.style.asymmetry)
        # the same uniform draw mapped onto the wider range
        assert (b.style.tempo - 1.0) / 0.15 == pytest.approx((a.style.tempo - 1.0) / 0.08)
    with pytest.raises(ConfigError, match="max_lag_s"):
        make_speakers(3, 0, max_lag_s=-0.1)
    with pytest.raises(ConfigError, match="tempo_range"):
        make_speakers(3, 0, tempo_range=(1.2, 0.9))
