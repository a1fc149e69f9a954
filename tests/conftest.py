"""Shared fixtures: tiny, synthetic, generated in code (no downloads, no binary files)."""

from __future__ import annotations

from typing import Any

import pytest

from talkface.config import ModelConfig


@pytest.fixture
def tiny_encoder_config() -> dict[str, Any]:
    """A random-init wav2vec 2.0 config: wav2vec2-base's CNN geometry (50 Hz), 32-d, 2 layers."""
    from talkface.model import tiny_encoder_config as make

    return make()


@pytest.fixture
def tiny_model_config() -> ModelConfig:
    """D 16, 4 heads, period 3 (so short clips span several periods), 10 vertices, 3 speakers, 30 fps."""
    return ModelConfig(num_vertices=10, feature_dim=16, period=3, num_heads=4, num_layers=1, fps=30.0,
                       speakers=("alice", "bob", "carol"))


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """A prepared synthetic corpus: 2 speakers x 3 sentences (formant speech), VOCASET layout, 30 fps."""
    from talkface.data import prepare_vocaset
    from talkface.synthetic import write_synthetic_vocaset

    root = tmp_path_factory.mktemp("corpus")
    write_synthetic_vocaset(root / "raw", num_speakers=2, num_sentences=3, use_espeak=False)
    prepare_vocaset(root / "raw", root / "data", splits=root / "raw" / "splits.toml")
    return root / "data"
