"""benchmarks/gpu_check.py stays runnable: without CUDA it says so and exits 0 with one table; its
stand-ins for packages a bare GPU machine may lack behave; ``--quick --cpu`` runs every check (slow)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def gpu_check(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import gpu_check

    return gpu_check


def test_without_cuda_it_says_so_and_exits_0(gpu_check, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path / "table.md")]) == 0
    out, err = capsys.readouterr()
    assert "no CUDA device" in err
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert table[0].startswith("| check |") and len(table) >= 5
    assert all("skipped: no CUDA device" in line for line in table[3:])
    assert (tmp_path / "table.md").read_text() == out


def test_a_failing_or_missing_check_becomes_a_row(gpu_check):
    rows: list = []
    budget = gpu_check.Budget(100)

    def broken():
        raise RuntimeError("boom")

    def missing():
        import not_a_module_talkface  # noqa: F401

    gpu_check.guarded(rows, budget, "a", 0, broken, lambda msg: None)
    gpu_check.guarded(rows, budget, "b", 0, missing, lambda msg: None)
    gpu_check.guarded(rows, budget, "c", 1000, broken, lambda msg: None)
    assert [r.notes.split(":")[0] for r in rows] == ["failed", "skipped", "skipped"]
    assert "not_a_module_talkface" in rows[1].notes and "budget" in rows[2].notes


def test_fft_resampler_keeps_a_tone(gpu_check):
    t = np.arange(22000) / 22000
    tone = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    out = gpu_check._fft_resample(tone, 22000, 16000)
    want = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    assert out.shape == (16000,) and out.dtype == np.float32
    assert np.abs(out[100:-100] - want[100:-100]).max() < 1e-3


@pytest.mark.slow
def test_quick_cpu_run_without_optional_packages(gpu_check, monkeypatch, tmp_path, capsys):
    for name in ("soxr", "matplotlib", "pytest_not_needed"):
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--quick", "--cpu", "--epochs", "2", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "failed" not in out
    assert "soxr missing" in out and "| demo epoch, float32 |" in out
