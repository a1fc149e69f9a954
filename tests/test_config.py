import json

import pytest

from talkface.config import ModelConfig, TrainConfig, from_dict, to_dict
from talkface.errors import ConfigError
from talkface.presets import PRESETS, get_preset


def test_round_trip_through_json():
    cfg = ModelConfig(num_vertices=10, speakers=("a", "b"))
    again = from_dict(ModelConfig, json.loads(json.dumps(to_dict(cfg))))
    assert again == cfg and again.vertex_dim == 30 and again.ff_dim == 128


def test_unknown_keys_rejected():
    with pytest.raises(ConfigError, match="unknown keys"):
        from_dict(TrainConfig, {"lossy": "mse"})


@pytest.mark.parametrize("kwargs", [{"gamma": 0}, {"gamma": -1}, {"gamma": float("nan")}, {"loss": "l1"},
                                    {"batch_size": 0}, {"cost": "cosine"}, {"lr": 0}])
def test_train_config_validation(kwargs):
    with pytest.raises(ConfigError):
        TrainConfig(**kwargs)


def test_model_config_validation():
    with pytest.raises(ConfigError, match="divisible"):
        ModelConfig(num_vertices=5, feature_dim=30, num_heads=4, speakers=("a",))
    with pytest.raises(ConfigError, match="speakers"):
        ModelConfig(num_vertices=5)


def test_presets_match_faceformer():
    voca, biwi = PRESETS["vocaset"], PRESETS["biwi"]
    assert (voca.feature_dim, voca.period, voca.fps, voca.num_vertices) == (64, 30, 30.0, 5023)
    assert (biwi.feature_dim, biwi.period, biwi.fps, biwi.num_vertices) == (128, 25, 25.0, 23370)
    with pytest.raises(ConfigError, match="vocaset"):
        get_preset("nope")
