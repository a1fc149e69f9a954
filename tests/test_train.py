"""Training on a tiny prepared dataset: the run folder is complete and re-loadable, --overwrite starts a
fresh log, and a non-empty run folder is refused. (The overfit-per-loss test belongs to issue 7.)"""

import json

import numpy as np
import pytest

from talkface.config import TrainConfig
from talkface.errors import OutputError


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from talkface.data import prepare_vocaset
    from talkface.synthetic import write_synthetic_vocaset

    root = tmp_path_factory.mktemp("corpus")
    write_synthetic_vocaset(root / "raw", num_speakers=2, num_sentences=3, use_espeak=False)
    prepare_vocaset(root / "raw", root / "data", splits=root / "raw" / "splits.toml")
    return root / "data"


def test_train_writes_a_complete_run(tiny_data, tmp_path):
    from talkface.checkpoint import load_checkpoint
    from talkface.model import tiny_encoder_config
    from talkface.train import train

    config = TrainConfig(epochs=3, lr=3e-4, band=2, batch_size=2, encoder="tiny")
    result = train(tiny_data, tmp_path / "run", config, encoder_config=tiny_encoder_config(), device="cpu")
    losses = [h["train_loss"] for h in result.history]
    assert np.isfinite(losses).all() and len(losses) == 3
    for name in ("best.safetensors", "last.safetensors", "config.json", "metrics.jsonl", "loss.png", "templates.npz"):
        assert (tmp_path / "run" / name).is_file(), name
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == list(range(1, 4))
    model, meta = load_checkpoint(tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert model.config.speakers == tuple(saved["model"]["speakers"])
    assert np.isfinite(meta["extra"]["train_loss"])

    with pytest.raises(OutputError, match="not empty"):
        train(tiny_data, tmp_path / "run", config, encoder_config=tiny_encoder_config(), device="cpu")
    again = train(tiny_data, tmp_path / "run", TrainConfig(epochs=1, encoder="tiny"),
                  encoder_config=tiny_encoder_config(), device="cpu", overwrite=True)
    assert len(again.history) == 1
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 1
