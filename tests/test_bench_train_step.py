"""benchmarks/train_step.py stays runnable: its --quick mode (tiny shapes, seconds) runs the same code as
the full benchmark, and the KV-cached and recompute training steps give the same gradients."""

from __future__ import annotations

from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_quick_mode_runs_and_gradients_agree(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import train_step
    from _docs import DOC

    doc_before = DOC.read_text() if DOC.exists() else None
    result = train_step.main(["--quick", "--rounds", "1", "--batches", "2"])
    check = result["check"]
    assert check["grad_rel_diff"] <= 1e-5, check
    assert abs(check["loss_kv"] - check["loss_recompute"]) <= 1e-5 * abs(check["loss_kv"])
    assert check["cache"]["grad_rel_diff"] <= 1e-6 and check["cache"]["loss_rel_diff"] <= 1e-6, check["cache"]
    assert set(result["parts"]) == {2} and result["parts"][2]["step"] > 0
    assert result["talkface"] > 0 and result["recompute"] > 0
    assert [row["batch"] for row in result["throughput"]] == [2] and result["throughput"][0]["clips_per_s"] > 0
    out = capsys.readouterr().out
    assert out.startswith(train_step.SECTION) and "clips/s" in out
    assert (DOC.read_text() if DOC.exists() else None) == doc_before  # --quick writes nothing


def test_write_section_replaces_only_its_own(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import train_step

    doc = tmp_path / "benchmarks.md"
    doc.write_text("## Prepare\n\nA\n\n## Decoding\n\nB\n")
    train_step.write_section("## Training step\n\nold\n", doc=doc)
    assert doc.read_text() == "## Prepare\n\nA\n\n## Decoding\n\nB\n\n## Training step\n\nold\n"
    doc.write_text("## Prepare\n\nA\n\n## Training step\n\nold\n\n## Decoding\n\nB\n")
    train_step.write_section("## Training step\n\nnew\n", doc=doc)
    assert doc.read_text() == "## Prepare\n\nA\n\n## Training step\n\nnew\n\n## Decoding\n\nB\n"


def test_demo_epochs_with_and_without_cache(monkeypatch):
    """The demo-epoch measurement runs (on a smaller corpus) and the cache leaves the losses unchanged."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import train_step

    out = train_step.demo_epochs(2, lambda msg: None, num_speakers=2, num_sentences=3, use_espeak=False)
    assert out["after"]["train_loss"] == pytest.approx(out["before"]["train_loss"], rel=1e-6)
    assert len(out["after"]["epoch_s"]) == 2 and min(out["after"]["train_s"]) > 0
    assert "cache" in train_step.render_demo(out)
