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


_THREAD_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "KMP_BLOCKTIME", "NUMBA_NUM_THREADS")


@pytest.fixture(autouse=True)
def _restore_thread_policy():
    """CLI commands apply talkface.runtime's thread policy to the process; undo it after each test so that
    no test (or the subprocesses it starts) inherits another's threads."""
    import os

    import torch

    saved_env = {k: os.environ.get(k) for k in _THREAD_ENV}
    threads = torch.get_num_threads()
    yield
    for key, value in saved_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
