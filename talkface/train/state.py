"""The resumable training state: everything ``train(..., resume=True)`` needs to continue a run as if it
had never stopped.

``RUN/state.pt`` is written with ``torch.save`` and read back with ``weights_only=True`` (tensors and
plain Python containers only; nothing is unpickled that could run code). It describes one *boundary*:
the moment right after an optimizer step (or the start/end of an epoch), and holds

- ``model``: the model's ``state_dict`` (CPU tensors);
- ``optimizer``, ``scheduler`` (None: constant lr), ``scaler`` (AMP float16 GradScaler, or None);
- ``position``: ``epoch`` (1-based epoch in progress), ``step`` (batches of it already done),
  ``global_step`` (optimizer steps since the start), ``order`` (the epoch's shuffled clip indices, or
  None when the epoch has not started: it is drawn from the data-order RNG), ``epoch_losses``;
- ``rng``: the data-order ``random.Random``, Python's ``random``, numpy's and torch's (CPU, CUDA)
  generator states at that boundary, so dropout and SpecAugment masks continue identically;
- ``best`` (best score so far), ``history`` (one record per finished epoch), ``train_clips`` (names,
  to detect a changed dataset), ``config``/``model_config``/``encoder_config`` (to refuse a resume
  with different settings and to rebuild the model without the hub).

With gradient accumulation, boundaries are optimizer steps only: an interrupted accumulation group is
re-run from its first micro-batch on resume.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from talkface.errors import CheckpointError, ConfigError
from talkface.io.fileio import atomic_path, reading, write_with

STATE_FILE = "state.pt"
STATE_FORMAT = "talkface-train-state"
STATE_VERSION = 1
# TrainConfig fields that change speed, never results: a resume may change them (or find them missing in
# the state of a run started before they existed).
RESULT_NEUTRAL_KEYS = ("feature_cache_mb", "feature_cache_disk")


@dataclass
class Position:
    """Where a run stands, at an optimizer-step boundary.

    Attributes:
        epoch: 1-based epoch in progress (``epochs + 1`` when the run is finished).
        step: batches of ``epoch`` already done (0 .. steps_per_epoch).
        global_step: optimizer steps since the run began.
        order: the epoch's shuffled indices into the train split, or None before it is drawn.
        epoch_losses: training loss of each finished batch of ``epoch``.
        rng: generator states at this boundary (see ``capture_rng``).
    """

    epoch: int = 1
    step: int = 0
    global_step: int = 0
    order: list[int] | None = None
    epoch_losses: list[float] = field(default_factory=list)
    rng: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "step": self.step, "global_step": self.global_step,
                "order": None if self.order is None else list(self.order),
                "epoch_losses": list(self.epoch_losses)}


def capture_rng(data_rng: random.Random) -> dict[str, Any]:
    """Every generator state training draws from, as the generators return them (cheap: taken at every
    optimizer step; ``save_state`` converts them to ``weights_only``-loadable values).

    Args:
        data_rng: the generator that shuffles the train split each epoch.
    """
    import torch

    return {
        "data": data_rng.getstate(), "python": random.getstate(), "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None,
    }


def _saveable_rng(states: dict[str, Any]) -> dict[str, Any]:
    """``capture_rng``'s states as tensors, ints and lists (no numpy arrays, no tuples of tuples)."""
    import torch

    name, keys, pos, has_gauss, cached = states["numpy"]
    return {
        "data": _py_state(states["data"]), "python": _py_state(states["python"]),
        "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64).copy()),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": states["torch"], "cuda": states["cuda"],
    }


def _loaded_rng(saved: dict[str, Any]) -> dict[str, Any]:
    """The inverse of ``_saveable_rng``: states in the form ``capture_rng`` returns."""
    n = saved["numpy"]
    return {"data": _py_tuple(saved["data"]), "python": _py_tuple(saved["python"]),
            "numpy": (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]),
            "torch": saved["torch"], "cuda": saved.get("cuda")}


def restore_rng(states: dict[str, Any], data_rng: random.Random) -> None:
    """Set every generator back to ``states`` (as ``capture_rng`` or ``load_state`` give them)."""
    import torch

    data_rng.setstate(states["data"])
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"].cpu())
    if states.get("cuda") is not None and torch.cuda.is_available():
        saved = [s.cpu() for s in states["cuda"]]
        for index in range(min(len(saved), torch.cuda.device_count())):
            torch.cuda.set_rng_state(saved[index], index)


def _py_state(state: tuple) -> list[Any]:
    version, keys, gauss = state
    return [int(version), [int(k) for k in keys], gauss]


def _py_tuple(state: list[Any]) -> tuple:
    version, keys, gauss = state
    return (int(version), tuple(int(k) for k in keys), gauss)


def save_state(run: Path, *, model: Any, optimizer: Any, scaler: Any, position: Position, best: float,
               history: list[dict[str, Any]], train_clips: list[str], config: dict[str, Any],
               model_config: dict[str, Any], encoder_config: dict[str, Any]) -> Path:
    """Write ``RUN/state.pt`` atomically (temp sibling, fsync, rename).

    Args:
        model: the (unwrapped) model; its weights are stored as CPU tensors.
        optimizer / scaler: their ``state_dict``s are stored (scaler may be None).
        position: the boundary the state describes (``position.rng`` must be set).
        best / history / train_clips / config / model_config / encoder_config: see the module docstring.

    Returns:
        The state file.
    """
    import torch

    state = {
        "format": STATE_FORMAT, "version": STATE_VERSION,
        "model": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(), "scheduler": None,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "position": position.to_dict(), "rng": _saveable_rng(position.rng), "best": float(best),
        "history": [dict(h) for h in history], "train_clips": list(train_clips), "config": dict(config),
        "model_config": dict(model_config), "encoder_config": json.dumps(encoder_config),
    }
    path = run / STATE_FILE
    with atomic_path(path) as tmp:
        write_with(tmp, lambda f: torch.save(state, f))
    return path


def load_state(run: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``RUN/state.pt`` safely (``weights_only``), on the CPU.

    Returns:
        The state dict, with ``position`` as a ``Position`` (its ``rng`` filled in).

    Raises:
        CheckpointError: no state file in the folder, or a damaged/foreign one.
    """
    import torch

    path = Path(run) / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"{Path(run)}: no resumable training state ({STATE_FILE}) in this run folder; "
                              "it was not written by this talkface's `train`, or the run never finished a step. "
                              "Start a new run with --overwrite or another --out")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for damaged zip/pickle data
        raise CheckpointError(f"{path}: cannot read the training state ({e}); it may be damaged. "
                              "Start a new run with --overwrite") from e
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path}: not a talkface training state (expected format {STATE_FORMAT!r})")
    version = state.get("version")
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path}: training state version {version!r} is not supported (expected 1 to "
                              f"{STATE_VERSION}); start a new run with --overwrite")
    if version > STATE_VERSION:
        raise CheckpointError(f"{path}: training state version {version} is newer than this talkface "
                              f"reads ({STATE_VERSION}); upgrade talkface")
    # a state of the right format with a missing or malformed entry: KeyError/TypeError/ValueError, mapped
    with reading(path, "the training state", CheckpointError, "start a new run with --overwrite"):
        p = state["position"]
        state["position"] = Position(epoch=int(p["epoch"]), step=int(p["step"]), global_step=int(p["global_step"]),
                                     order=None if p["order"] is None else [int(i) for i in p["order"]],
                                     epoch_losses=[float(x) for x in p["epoch_losses"]],
                                     rng=_loaded_rng(state["rng"]))
        state["encoder_config"] = json.loads(state["encoder_config"])
    return state


# ----------------------------------------------------------------------------------- other ranks' RNGs
RANK_RNG_FORMAT = "talkface-rank-rng"


def rank_rng_file(run: Path, rank: int) -> Path:
    """``RUN/rng-rank<r>.pt``: the generator states of DDP rank ``r`` > 0 (rank 0's are in ``state.pt``)."""
    return Path(run) / f"rng-rank{rank}.pt"


def position_key(position: Position) -> list[int]:
    """The boundary a state describes, as [epoch, step, global_step] (equal on every rank at a boundary)."""
    return [int(position.epoch), int(position.step), int(position.global_step)]


def save_rank_rng(run: Path, rank: int, position: Position, recent: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Write rank ``rank``'s generator states at ``position`` beside ``state.pt`` (atomically).

    Dropout masks and SpecAugment draw from each rank's own generators, so a bit-exact resume under
    torchrun needs every rank's states, not only rank 0's. The file keeps the two latest boundaries:
    DDP's gradient all-reduce keeps the ranks within one boundary of each other, so whichever boundary
    ``state.pt`` holds when the job is killed, this file holds it too.

    Args:
        recent: what the previous call returned ([] at first).

    Returns:
        The entries written (pass them to the next call).
    """
    import torch

    key = position_key(position)
    entries = [e for e in recent if e["position"] != key][-1:] + [{"position": key,
                                                                   "rng": _saveable_rng(position.rng)}]
    with atomic_path(rank_rng_file(run, rank)) as tmp:
        write_with(tmp, lambda f: torch.save({"format": RANK_RNG_FORMAT, "rank": rank, "entries": entries}, f))
    return entries


def load_rank_rng(run: Path, rank: int, position: Position) -> dict[str, Any] | None:
    """Rank ``rank``'s generator states at ``position`` (as ``capture_rng`` returns them), or None when the
    run has none for that boundary (a run saved by an older talkface, or with another world size).

    Raises:
        CheckpointError: the file exists but is damaged.
    """
    import torch

    path = rank_rng_file(run, rank)
    if not path.is_file():
        return None
    with reading(path, f"rank {rank}'s generator states", CheckpointError, "start a new run with --overwrite"):
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("format") != RANK_RNG_FORMAT:
            raise CheckpointError(f"{path}: not a talkface rank RNG file (format {saved.get('format')!r})")
        key = position_key(position)
        return next((_loaded_rng(e["rng"]) for e in saved["entries"] if list(e["position"]) == key), None)


def read_position(run: str | os.PathLike[str]) -> Position | None:
    """The saved position of a run folder, or None without a readable state (for progress polling)."""
    try:
        return load_state(run)["position"]
    except CheckpointError:
        return None


def config_differences(saved: dict[str, Any], given: dict[str, Any], *, ignore: tuple[str, ...] = ()) -> list[str]:
    """Keys whose values differ between two config dicts, as ``key: saved → given`` strings."""
    keys = sorted((set(saved) | set(given)) - set(ignore))
    return [f"{k}: {saved.get(k)!r} → {given.get(k)!r}" for k in keys if _norm(saved.get(k)) != _norm(given.get(k))]


def _norm(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def check_resumable(state: dict[str, Any], config: dict[str, Any], model_config: dict[str, Any],
                    run: Path) -> None:
    """Refuse a resume whose settings differ from the saved run's (only ``epochs`` may change, upward;
    the feature-cache settings may change freely: they do not change the results).

    Raises:
        ConfigError: naming each differing key with its saved and given values.
    """
    diffs = config_differences(state["config"], config, ignore=("epochs", *RESULT_NEUTRAL_KEYS))
    diffs += [f"model.{d}" for d in config_differences(state["model_config"], model_config)]
    if diffs:
        raise ConfigError(f"{run}: --resume needs the run's own settings; these differ (saved → given): "
                          f"{'; '.join(diffs)}. Only --epochs may be raised")
    done = len(state["history"])
    if int(config["epochs"]) < done:
        raise ConfigError(f"{run}: --epochs {config['epochs']} is below the {done} epochs this run has already "
                          f"finished; pass --epochs {done} or more")


