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


# ------------------------------------------------------------------------------ train config files (issue 7)
def _write(tmp_path, text, name="train.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_precedence_defaults_then_file_then_flags(tmp_path):
    from talkface.config import load_train_file, resolve_train_options

    path = _write(tmp_path, 'loss = "mse"\ngamma = 1\nepochs = 7\ndevice = "cpu"\n'
                            '[model]\nfeature_dim = 32\nnum_layers = 2\n')
    values = load_train_file(path)
    flags = dict.fromkeys(("loss", "batch_size", "preset", "feature_dim", "divergence"))  # not given
    flags.update(epochs=3, divergence=False)  # given: the flag wins, even when it equals the default
    config, options = resolve_train_options(values, flags)
    defaults = TrainConfig()
    assert config.loss == "mse" and config.gamma == 1.0 and isinstance(config.gamma, float)  # file
    assert config.epochs == 3 and config.divergence is False  # flags over file
    assert (config.lr, config.batch_size, config.encoder) == (defaults.lr, defaults.batch_size, defaults.encoder)
    assert options == {"preset": None, "device": "cpu", "threads": None,
                       "model_overrides": {"feature_dim": 32, "num_layers": 2}}
    config, options = resolve_train_options(values, {"feature_dim": 16, "device": "cuda"})
    assert options["model_overrides"] == {"feature_dim": 16, "num_layers": 2} and options["device"] == "cuda"
    # no file: the built-in defaults
    config, options = resolve_train_options({}, dict.fromkeys(("loss", "gamma")))
    assert config == defaults and options == {"preset": None, "device": "auto", "threads": None,
                                              "model_overrides": None}


def test_train_table_and_top_level_feature_dim(tmp_path):
    from talkface.config import load_train_file, resolve_train_options

    values = load_train_file(_write(tmp_path, 'feature_dim = 24\n[train]\nband = 4\npreset = "vocaset"\n'))
    config, options = resolve_train_options(values, {})
    assert config.band == 4 and options["preset"] == "vocaset" and options["model_overrides"] == {"feature_dim": 24}
    with pytest.raises(ConfigError, match="both at the top level and in"):
        load_train_file(_write(tmp_path, 'band = 4\n[train]\nband = 5\n', "twice.toml"))


def test_unknown_key_names_file_and_lists_valid_keys(tmp_path):
    from talkface.config import load_train_file

    path = _write(tmp_path, 'loss = "mse"\nbatchsize = 4\n')
    with pytest.raises(ConfigError) as e:
        load_train_file(path)
    msg = str(e.value)
    assert str(path) in msg and "batchsize" in msg and "batch_size" in msg and "gamma" in msg
    with pytest.raises(ConfigError, match=r"\[model\]: unknown key num_vertices"):
        load_train_file(_write(tmp_path, "[model]\nnum_vertices = 4\n", "m.toml"))


@pytest.mark.parametrize("line, key", [('epochs = "10"', "epochs"), ("epochs = true", "epochs"),
                                        ('gamma = "1e-3"', "gamma"), ("divergence = 1", "divergence"),
                                        ("band = 2.5", "band"), ("encoder = 3", "encoder"),
                                        ('[model]\ndropout = "0"', "dropout")])
def test_wrong_type_names_key_and_file(tmp_path, line, key):
    from talkface.config import load_train_file

    path = _write(tmp_path, line + "\n")
    with pytest.raises(ConfigError, match=f"{key} must be") as e:
        load_train_file(path)
    assert str(path) in str(e.value)


def test_bad_toml_reports_the_line(tmp_path):
    from talkface.config import load_train_file

    path = _write(tmp_path, 'loss = "mse"\nepochs = = 3\n')
    with pytest.raises(ConfigError, match=r"invalid TOML.*line 2") as e:
        load_train_file(path)
    assert str(path) in str(e.value)
    with pytest.raises(ConfigError, match="cannot read"):
        load_train_file(tmp_path / "missing.toml")


def test_invalid_resolved_value_names_the_file(tmp_path):
    from talkface.config import load_train_file, resolve_train_options

    path = _write(tmp_path, "gamma = 0\n")
    with pytest.raises(ConfigError, match=f"gamma must be in.*{path.name}"):
        resolve_train_options(load_train_file(path), {}, source=str(path))
    config, _ = resolve_train_options(load_train_file(path), {"gamma": 0.5}, source=str(path))  # a flag fixes it
    assert config.gamma == 0.5


def test_resumed_run_settings_sit_between_defaults_and_file(tmp_path):
    from talkface.config import load_run_values, resolve_train_options

    run = tmp_path / "run"
    run.mkdir()
    assert load_run_values(run) == {}
    saved = {"train": to_dict(TrainConfig(loss="mse", epochs=5, band=3, encoder="tiny")),
             "model": to_dict(ModelConfig(num_vertices=10, feature_dim=32, speakers=("a",))),
             "preset": None, "device": "cpu"}
    (run / "config.json").write_text(json.dumps(saved))
    base = load_run_values(run)
    config, options = resolve_train_options({"model": {"dropout": 0.0}}, {"epochs": 8}, base=base)
    assert config == TrainConfig(loss="mse", epochs=8, band=3, encoder="tiny")
    assert options["model_overrides"]["feature_dim"] == 32 and options["model_overrides"]["dropout"] == 0.0
    assert options["device"] == "auto"  # not carried over: a run may continue elsewhere
    (run / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="cannot read a talkface run config"):
        load_run_values(run)


# --------------------------------------------------------------------------------------------- issue 15
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), True, "3", None])
def test_check_number_refuses_what_comparisons_let_through(value):
    from talkface.config import check_number

    with pytest.raises(ConfigError, match="--fps"):
        check_number(value, "--fps", low=0, low_open=True)


def test_check_number_ranges():
    from talkface.config import check_number

    assert check_number(30, "fps", low=0, low_open=True) == 30.0
    assert check_number(0, "w", low=0) == 0.0
    with pytest.raises(ConfigError, match="> 0"):
        check_number(0, "fps", low=0, low_open=True)
    with pytest.raises(ConfigError, match="<= 10"):
        check_number(11, "gamma", high=10)
    with pytest.raises(ConfigError, match="whole"):
        check_number(2.5, "n", integer=True)


@pytest.mark.parametrize("field, value", [("mse_weight", float("nan")), ("lr", float("nan")), ("gamma", float("inf")),
                                          ("seed", -1), ("seed", 2**32), ("seed", True)])
def test_train_config_refuses_non_finite_and_out_of_range(field, value):
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**{field: value})


def test_model_config_refuses_nan_dropout_and_fps():
    from talkface.config import ModelConfig

    for field in ("dropout", "fps"):
        with pytest.raises(ConfigError, match=field):
            ModelConfig(num_vertices=5, speakers=("a",), **{field: float("nan")})
