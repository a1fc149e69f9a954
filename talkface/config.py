"""Frozen configuration dataclasses, validated on construction and saved inside checkpoints/runs.

``to_dict``/``from_dict`` round-trip through JSON; ``from_dict`` rejects unknown keys so that a
typo in a config file is an error, not a silently ignored setting. ``load_train_file`` and
``resolve_train_options`` implement ``talkface train --config FILE.toml`` (format documented there).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from talkface.errors import ConfigError

C = TypeVar("C")


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """Build ``cls`` from a dict, rejecting unknown keys.

    Raises:
        ConfigError: unknown keys or invalid values.
    """
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown keys {unknown}; valid keys are {sorted(names)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{cls.__name__}: {e}") from e


def check_number(value: Any, name: str, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, integer: bool = False) -> float:
    """The one check of every number talkface reads (flag, config file, data file): finite and in range.

    NaN passes every ``<``/``<=`` test with False, so ``if x <= 0: raise`` lets it through; this checks
    finiteness first. Booleans are refused (``true`` is not 1 here).

    Args:
        value: the number as read.
        name: what to name in the message (``--fps``, ``gamma``, ``clip.npz: fps``).
        low / high: inclusive bounds (``low_open``: ``value > low``).
        integer: also require an integer value.

    Returns:
        ``value`` as a float (or int when ``integer``).

    Raises:
        ConfigError: not a number, NaN/inf, not an integer, or out of range.
    """
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if integer and number != int(number):
        raise ConfigError(f"{name} must be a whole number, got {value!r}")
    if low is not None and (number <= low if low_open else number < low):
        raise ConfigError(f"{name} must be {'>' if low_open else '>='} {low:g}, got {value!r}")
    if high is not None and number > high:
        raise ConfigError(f"{name} must be <= {high:g}, got {value!r}")
    return int(number) if integer else number


def _positive(name: str, value: float) -> None:
    check_number(value, name, low=0, low_open=True)


@dataclass(frozen=True)
class ModelConfig:
    """FaceFormer's architecture, described by numbers only (no dataset names).

    Attributes:
        num_vertices: V, vertices per mesh (5023 FLAME, 23370 BIWI).
        feature_dim: D, decoder width (64 VOCASET, 128 BIWI).
        period: p, frames per period of the positional encoding and of the attention bias steps.
        num_heads: attention heads of the decoder (FaceFormer: 4).
        num_layers: decoder layers (FaceFormer: 1).
        ff_multiplier: feed-forward width as a multiple of D (FaceFormer: 2).
        dropout: decoder and positional-encoding dropout (PyTorch default 0.1).
        fps: motion frames per second (30 VOCASET, 25 BIWI).
        audio_frames_per_motion_frame: 0 = interpolate the 50 Hz CNN features to exactly one per
            motion frame (FaceFormer's VOCASET path); k >= 1 = no interpolation, motion frame i attends
            audio frames k*i .. k*i+k-1 (k = 2 is FaceFormer's BIWI path at 25 fps).
        speakers: training speaker names in one-hot order.
        normalize_audio: zero-mean/unit-variance waveforms, as Wav2Vec2FeatureExtractor does.
    """

    num_vertices: int
    feature_dim: int = 64
    period: int = 30
    num_heads: int = 4
    num_layers: int = 1
    ff_multiplier: int = 2
    dropout: float = 0.1
    fps: float = 30.0
    audio_frames_per_motion_frame: int = 0
    speakers: tuple[str, ...] = ()
    normalize_audio: bool = True

    def __post_init__(self) -> None:
        for name in ("num_vertices", "feature_dim", "period", "num_heads", "num_layers", "ff_multiplier"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"ModelConfig.{name} must be a positive integer, got {value!r}")
        if self.feature_dim % self.num_heads:
            raise ConfigError(
                f"ModelConfig.feature_dim ({self.feature_dim}) must be divisible by num_heads ({self.num_heads})"
            )
        if check_number(self.dropout, "ModelConfig.dropout", low=0.0) >= 1.0:
            raise ConfigError(f"ModelConfig.dropout must be in [0, 1), got {self.dropout}")
        _positive("ModelConfig.fps", self.fps)
        if not isinstance(self.audio_frames_per_motion_frame, int) or self.audio_frames_per_motion_frame < 0:
            raise ConfigError("ModelConfig.audio_frames_per_motion_frame must be 0 (interpolate) or a positive int")
        if not self.speakers:
            raise ConfigError("ModelConfig.speakers is empty; a model needs at least one training speaker")
        if len(set(self.speakers)) != len(self.speakers):
            raise ConfigError(f"ModelConfig.speakers has duplicates: {list(self.speakers)}")

    @property
    def vertex_dim(self) -> int:
        """V*3, the flattened motion dimension (15069 for FLAME)."""
        return self.num_vertices * 3

    @property
    def num_speakers(self) -> int:
        return len(self.speakers)

    @property
    def ff_dim(self) -> int:
        return self.feature_dim * self.ff_multiplier


LOSSES = ("softdtw", "mse", "softdtw+mse")
SEED_LIMIT = 2**32  # numpy's RandomState takes seeds in [0, 2**32)
COSTS = ("sqeuclidean", "euclidean")


@dataclass(frozen=True)
class TrainConfig:
    """Training recipe (the paper's: Soft-DTW, gamma 1e-3, Adam lr 1e-4, 100 epochs, batch 1).

    Attributes:
        loss: ``softdtw``, ``mse`` or ``softdtw+mse``.
        gamma: soft-DTW smoothing, > 0 and <= 10.
        cost: frame cost, ``sqeuclidean`` (default) or ``euclidean`` (the paper's formula 3).
        divergence: use sdtw(x,y) - (sdtw(x,x)+sdtw(y,y))/2.
        band: Sakoe-Chiba band half-width in frames (None: all alignments, the paper's loss).
        mse_weight: weight of the MSE term in ``softdtw+mse``.
        batch_size: clips per step (padded and masked).
        teacher_forcing: feed ground truth instead of the model's own outputs.
        epochs, lr, seed, grad_accum: the usual.
        amp: bfloat16/float16 autocast on CUDA.
        encoder: hub name or local folder of the pretrained wav2vec 2.0.
        feature_cache_mb: memory bound (MiB) of the frozen CNN's feature cache (0: no memory tier). On
            CUDA it holds GPU memory. wav2vec2-base features take 100 KiB per second of audio.
        feature_cache_disk: also keep the features in ``RUN/feature_cache/`` (kept across resumes).
            Neither cache setting changes the results, so both may differ on ``--resume``.
    """

    loss: str = "softdtw"
    gamma: float = 1e-3
    cost: str = "sqeuclidean"
    divergence: bool = False
    band: int | None = None
    mse_weight: float = 1.0
    batch_size: int = 1
    teacher_forcing: bool = False
    epochs: int = 100
    lr: float = 1e-4
    seed: int = 0
    grad_accum: int = 1
    amp: bool = False
    encoder: str = "facebook/wav2vec2-base-960h"
    feature_cache_mb: float = 1024.0
    feature_cache_disk: bool = True

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {list(LOSSES)}, got {self.loss!r}")
        if self.cost not in COSTS:
            raise ConfigError(f"cost must be one of {list(COSTS)}, got {self.cost!r}")
        try:
            check_number(self.gamma, "gamma", low=0, low_open=True, high=10)
        except ConfigError:
            raise ConfigError(f"gamma must be in (0, 10], got {self.gamma!r} (the paper uses 1e-3)") from None
        for name in ("batch_size", "epochs", "grad_accum"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        _positive("lr", self.lr)
        if self.band is not None and (not isinstance(self.band, int) or self.band < 0):
            raise ConfigError(f"band must be a non-negative number of frames, got {self.band!r}")
        check_number(self.mse_weight, "mse_weight", low=0)
        check_number(self.feature_cache_mb, "feature_cache_mb (MiB; 0: no memory tier)", low=0)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < SEED_LIMIT:
            raise ConfigError(f"seed must be an integer in [0, {SEED_LIMIT - 1}] (numpy's range), got {self.seed!r}")


# ------------------------------------------------------------------------------------ train config files
# Keys of a train config file besides the TrainConfig fields: how to build the model and where to run.
RUN_OPTIONS: dict[str, Any] = {"preset": None, "device": "auto", "threads": None}
# ModelConfig fields a user may override; num_vertices, fps and speakers come from the dataset.
MODEL_OVERRIDE_KEYS = ("feature_dim", "period", "num_heads", "num_layers", "ff_multiplier", "dropout",
                       "audio_frames_per_motion_frame", "normalize_audio")


def _expected_types(cls: type, names: tuple[str, ...] | None = None) -> dict[str, tuple[type, ...]]:
    """Accepted TOML value types per field, from the dataclass annotations (int is a valid float)."""
    hints = typing.get_type_hints(cls)
    out: dict[str, tuple[type, ...]] = {}
    for f in dataclasses.fields(cls):
        if names is not None and f.name not in names:
            continue
        hint = hints[f.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
        kinds = tuple(a for a in args if isinstance(a, type))
        out[f.name] = (*kinds, int) if float in kinds else kinds
    return out


def _train_file_types() -> dict[str, tuple[type, ...]]:
    return {**_expected_types(TrainConfig), "preset": (str,), "device": (str,), "threads": (int,)}


def _type_name(kinds: tuple[type, ...]) -> str:
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}
    return " or ".join(dict.fromkeys(names.get(k, k.__name__) for k in kinds))


def _check_table(table: dict[str, Any], types: dict[str, tuple[type, ...]], where: str,
                 also: tuple[str, ...] = ()) -> dict[str, Any]:
    """Reject unknown keys (listing ``types`` and ``also``) and wrong types; ints become floats where due."""
    unknown = sorted(set(table) - set(types))
    if unknown:
        raise ConfigError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                          f"valid keys are: {', '.join(sorted([*types, *also]))}")
    out = {}
    for key, value in table.items():
        kinds = types[key]
        # bool is an int subclass in Python, but `epochs = true` is a mistake, not 1.
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise ConfigError(f"{where}: {key} must be {_type_name(kinds)}, got {value!r} "
                              f"({type(value).__name__})")
        out[key] = float(value) if float in kinds and not isinstance(value, bool) else value
    return out


def load_train_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a ``talkface train --config`` TOML file into flat option values.

    Format: top-level keys named like the ``train`` flags with underscores (any ``TrainConfig`` field:
    ``loss``, ``gamma``, ``cost``, ``divergence``, ``band``, ``mse_weight``, ``batch_size``,
    ``teacher_forcing``, ``epochs``, ``lr``, ``seed``, ``grad_accum``, ``amp``, ``encoder``,
    ``feature_cache_mb``, ``feature_cache_disk``; plus
    ``preset``, ``device`` and ``threads``), or the same keys inside a ``[train]`` table. An optional ``[model]``
    table overrides architecture numbers (``feature_dim``, ``period``, ``num_heads``, ``num_layers``,
    ``ff_multiplier``, ``dropout``, ``audio_frames_per_motion_frame``, ``normalize_audio``); a
    top-level ``feature_dim`` is the ``--feature-dim`` flag. Omit ``band`` for no band (TOML has no
    null). ``--resume``/``--overwrite`` and the folders are command-line only::

        loss = "softdtw+mse"
        gamma = 0.01
        band = 6
        epochs = 50
        [model]
        feature_dim = 128

    Returns:
        ``{key: value}`` for the top-level/``[train]`` keys, with ``"model"`` holding the ``[model]``
        table (when present) and ``feature_dim`` (when given) folded into it.

    Raises:
        ConfigError: unreadable file, invalid TOML (with the parser's line and column), unknown key
            (listing the valid ones), a key given twice, or a value of the wrong type; each names the file.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config file ({e.strerror or e})") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a UTF-8 text file; a config file is TOML") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from e
    types = _train_file_types()
    section = data.pop("train", {})
    model = data.pop("model", {})
    for name, table in (("train", section), ("model", model)):
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {name} must be a table ([{name}]), got {table!r}")
    feature_dim = data.pop("feature_dim", None)
    top = _check_table(data, types, str(path), also=("feature_dim", "[train]", "[model]"))
    inner = _check_table(section, types, f"{path} [train]")
    twice = sorted(set(top) & set(inner))
    if twice:
        raise ConfigError(f"{path}: {', '.join(twice)} given both at the top level and in [train]; keep one")
    values = {**top, **inner}
    overrides = _check_table(model, _expected_types(ModelConfig, MODEL_OVERRIDE_KEYS), f"{path} [model]")
    if feature_dim is not None:
        _check_table({"feature_dim": feature_dim}, {"feature_dim": (int,)}, str(path))
        if "feature_dim" in overrides:
            raise ConfigError(f"{path}: feature_dim given both at the top level and in [model]; keep one")
        overrides["feature_dim"] = feature_dim
    if overrides:
        values["model"] = overrides
    return values


def load_run_values(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The options a run was trained with, from ``RUN/config.json``, as ``load_train_file`` returns them.

    ``--resume`` layers these under the config file and flags, so that resuming needs no flag repeated
    (the training state refuses settings that differ from the run's, except more ``epochs``). The
    device is not carried over: a run may continue on another machine.

    Returns:
        {} when the run has no ``config.json`` (resuming then fails on the missing state, with its own
        message).

    Raises:
        ConfigError: ``config.json`` exists but is not a talkface run config.
    """
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        return {}
    try:  # the bottom-level twin of io.fileio.reading (talkface.io imports this module)
        saved = json.loads(path.read_text(encoding="utf-8"))
        values = dict(saved["train"])
        model = saved["model"]
        values["model"] = {k: model[k] for k in MODEL_OVERRIDE_KEYS if k in model}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        reason = f"missing entry {e}" if isinstance(e, KeyError) else str(e)
        raise ConfigError(f"{path}: cannot read a talkface run config ({reason}); resume a run folder written by "
                          "`talkface train`") from e
    if saved.get("preset") is not None:
        values["preset"] = saved["preset"]
    return values


def resolve_train_options(
    file_values: dict[str, Any], flag_values: dict[str, Any], *, base: dict[str, Any] | None = None,
    source: str | None = None,
) -> tuple[TrainConfig, dict[str, Any]]:
    """Merge built-in defaults < ``base`` < config file < command-line flags into a ``TrainConfig`` (pure).

    Args:
        file_values: ``load_train_file``'s result ({} without a file).
        flag_values: flag values with ``None`` for flags not given on the command line; keys are
            ``TrainConfig`` fields, ``preset``, ``device``, ``threads`` and ``feature_dim``.
        base: values below the file, in the same form (``load_run_values`` of a run being resumed).
        source: the config file's name, for error messages.

    Returns:
        ``(config, options)`` with options ``{"preset": str | None, "device": str, "threads": int | None,
        "model_overrides": dict | None}``.

    Raises:
        ConfigError: an unknown key or an invalid resolved value.
    """
    flags = {k: v for k, v in flag_values.items() if v is not None}
    base = dict(base or {})
    file_values = dict(file_values)
    overrides = {**(base.pop("model", None) or {}), **(file_values.pop("model", None) or {})}
    file_values = {**base, **file_values}
    if "feature_dim" in flags:
        overrides["feature_dim"] = flags.pop("feature_dim")
    train_names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted((set(file_values) | set(flags)) - train_names - set(RUN_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown train options {unknown}; valid are {sorted(train_names | set(RUN_OPTIONS))}")
    merged = {**file_values, **flags}
    try:
        config = TrainConfig(**{k: v for k, v in merged.items() if k in train_names})
    except ConfigError as e:
        if source is None:
            raise
        raise ConfigError(f"{e} (options resolved from {source} and the command line)") from e
    options = {name: merged.get(name, default) for name, default in RUN_OPTIONS.items()}
    if options["threads"] is not None and options["threads"] < 1:  # the flag has min=1, a file may say 0
        raise ConfigError(f"{source or 'options'}: threads must be a positive integer, got {options['threads']}")
    options["model_overrides"] = overrides or None
    return config, options
