"""Training diagnostics (issue #27): the lip-sync warning rule on hand-made histories, and tiny real runs: a
healthy one does not warn, broken ones do (lr ~0, audio shuffled against the motion, silent audio)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from talkface.train.diagnostics import MIN_LIP_CORR, MIN_OPENING_RANGE, SETTLE_EPOCHS, lip_sync_warning


def _history(corrs, ranges, losses):
    return [{"epoch": i + 1, "train_loss": loss, "val_lip_corr": c, "val_opening_range": r}
            for i, (c, r, loss) in enumerate(zip(corrs, ranges, losses, strict=True))]


def test_rule_on_hand_made_histories():
    falling = [1.0, 0.7, 0.5, 0.4]
    assert lip_sync_warning(_history([0.6] * 4, [0.9] * 4, falling)) is None  # healthy
    static = _history([0.0] * 4, [0.05] * 4, [1.0] * 4)
    assert lip_sync_warning(static[:SETTLE_EPOCHS - 1]) is None  # too early for a verdict
    kind, message = lip_sync_warning(static, lr=1e-4)
    assert kind == "static" and "0.05" in message and "--lr" in message and "lr 0.0001" in message
    for cause in ("learning rate", "encoder", "fps", "templates", "misaligned"):
        assert cause in message
    kind, message = lip_sync_warning(_history([0.5, 0.1, 0.05, 0.02], [0.8] * 4, falling))
    assert kind == "out_of_sync" and "0.02" in message and "misaligned" in message
    # a correlation near 0 while the loss does not fall: nothing is learnt yet, no "out of sync" verdict
    assert lip_sync_warning(_history([0.05] * 4, [0.8] * 4, [1.0, 1.1, 1.0, 1.0])) is None
    # just at the thresholds: no warning; undefined measures (no lips, flat truth): no verdict
    assert lip_sync_warning(_history([MIN_LIP_CORR] * 4, [MIN_OPENING_RANGE] * 4, falling)) is None
    assert lip_sync_warning(_history([None] * 4, [None] * 4, falling)) is None
    assert lip_sync_warning([{"epoch": 4, "train_loss": 1.0}]) is None


# ------------------------------------------------------------------------------------------- tiny real runs


@pytest.fixture(scope="module")
def sync_data(tmp_path_factory):
    """3 synthetic speakers x 6 sentences (formant speech): 8 train clips, 2 validation clips, 30 fps."""
    from talkface.data import prepare_vocaset
    from talkface.synthetic import write_synthetic_vocaset

    root = tmp_path_factory.mktemp("sync")
    write_synthetic_vocaset(root / "raw", num_speakers=3, num_sentences=6, seed=0, use_espeak=False)
    prepare_vocaset(root / "raw", root / "data", splits=root / "raw" / "splits.toml")
    return root / "data"


def _train(data, run, lr=1e-3, epochs=4):
    """The shipped phonetic encoder fine-tuned with a small decoder, MSE; returns (history, warning events)."""
    import torch

    from talkface.config import TrainConfig
    from talkface.train import train

    torch.set_num_threads(1)  # tiny tensors: threads only add overhead (conftest restores the count)
    config = TrainConfig(loss="mse", epochs=epochs, lr=lr, batch_size=4, seed=0, encoder="synthetic-phonetic",
                         feature_cache_disk=False)
    events: list[dict] = []
    result = train(data, run, config, device="cpu", model_overrides={"feature_dim": 32}, on_progress=events.append)
    return result.history, [e for e in events if e["event"] == "warning"]


def _patch_audio(monkeypatch, change):
    """Every clip the trainer loads (train and validation) gets ``change(clip, all clip infos)``'s audio."""
    from dataclasses import replace

    from talkface.data.dataset import PreparedDataset

    original = PreparedDataset.load_clip

    def load_clip(self, info):
        clip = original(self, info)
        return replace(clip, audio=change(self, clip, original).astype(np.float32))

    monkeypatch.setattr(PreparedDataset, "load_clip", load_clip)


def _fit(audio, size):
    return np.resize(audio, size) if audio.size < size else audio[:size]


def test_a_healthy_tiny_run_records_lip_sync_and_does_not_warn(sync_data, tmp_path):
    history, warnings = _train(sync_data, tmp_path / "run")
    assert warnings == []
    for record in history:
        assert isinstance(record["val_lip_corr"], float) and isinstance(record["val_opening_range"], float)
    assert history[-1]["val_lip_corr"] > MIN_LIP_CORR and history[-1]["val_opening_range"] > MIN_OPENING_RANGE
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [line["val_lip_corr"] for line in lines] == [h["val_lip_corr"] for h in history]  # plain numbers
    assert [line["val_opening_range"] for line in lines] == [h["val_opening_range"] for h in history]


def test_a_learning_rate_of_about_zero_warns_that_the_lips_barely_move(sync_data, tmp_path):
    history, warnings = _train(sync_data, tmp_path / "run", lr=1e-12)  # TrainConfig refuses exactly 0
    assert [w["kind"] for w in warnings] == ["static"] and warnings[0]["epoch"] == SETTLE_EPOCHS
    assert "learning rate" in warnings[0]["message"]
    assert history[-1]["val_opening_range"] < MIN_OPENING_RANGE


def test_audio_shuffled_against_the_motion_warns(sync_data, tmp_path, monkeypatch):
    def shuffled(dataset, clip, load):  # each clip hears the next clip's sentence (another speaker or sentence)
        names = [c.name for c in dataset.clips]
        other = dataset.clips[(names.index(clip.name) + 1) % len(names)]
        return _fit(load(dataset, other).audio, clip.audio.size)

    _patch_audio(monkeypatch, shuffled)
    history, warnings = _train(sync_data, tmp_path / "run")
    assert len(warnings) >= 1, history
    assert warnings[0]["kind"] in ("static", "out_of_sync") and "misaligned" in warnings[0]["message"]


def test_silent_audio_warns(sync_data, tmp_path, monkeypatch):
    """An input that carries no speech (a wrong channel, a muted track): the model cannot hear the mouth."""
    rng = np.random.default_rng(0)
    _patch_audio(monkeypatch, lambda dataset, clip, load: 1e-4 * rng.standard_normal(clip.audio.size))
    history, warnings = _train(sync_data, tmp_path / "run")
    assert len(warnings) >= 1, history
    assert warnings[0]["kind"] in ("static", "out_of_sync")


def test_without_a_listener_the_warning_is_a_runtime_warning(sync_data, tmp_path):
    import torch

    from talkface.config import TrainConfig
    from talkface.train import train

    torch.set_num_threads(1)
    config = TrainConfig(loss="mse", epochs=SETTLE_EPOCHS, lr=1e-12, batch_size=8, seed=0,
                         encoder="synthetic-phonetic", feature_cache_disk=False)
    with pytest.warns(RuntimeWarning, match="barely move"):
        train(sync_data, tmp_path / "run", config, device="cpu", model_overrides={"feature_dim": 16})
