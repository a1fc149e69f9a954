"""Training: FaceFormer with the Soft-DTW loss (or MSE), validation by autoregressive generation,
atomic best/last checkpoints and a metrics log. The model computes predictions; losses are composed here.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from talkface.config import ModelConfig, TrainConfig, to_dict
from talkface.errors import ConfigError, DatasetError, OutputError

ProgressFn = Callable[[dict[str, Any]], None]


@dataclass
class TrainResult:
    """What a finished run produced.

    Attributes:
        run_dir: the run folder.
        history: one dict per epoch (epoch, train_loss, val_loss, val_lve, val_mve, seconds).
        best_path / last_path: checkpoint files.
        num_train_clips / num_val_clips: clips used.
    """

    run_dir: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    best_path: Path | None = None
    last_path: Path | None = None
    num_train_clips: int = 0
    num_val_clips: int = 0


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when available, else ``cpu``; other values are checked."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    return device


def prepare_run_dir(out_dir: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """Create the run folder; refuse a non-empty one unless ``overwrite`` (nothing is deleted).

    Raises:
        OutputError: non-empty folder without overwrite, or a file in the way.
    """
    run = Path(out_dir)
    if run.exists() and not run.is_dir():
        raise OutputError(f"{run}: exists and is not a folder; choose another --out")
    if run.is_dir() and any(run.iterdir()) and not overwrite:
        raise OutputError(f"{run}: run folder is not empty; pass --overwrite to write into it, or choose another --out")
    run.mkdir(parents=True, exist_ok=True)
    return run


def build_model_config(meta: dict[str, Any], *, preset: str | None, overrides: dict[str, Any] | None) -> ModelConfig:
    """Model numbers from the preset (if any), the dataset (vertex count, fps, speakers) and overrides."""
    from talkface.presets import get_preset

    kwargs: dict[str, Any] = get_preset(preset).model_kwargs() if preset else {"period": int(round(meta["fps"]))}
    kwargs.update(num_vertices=int(meta["num_vertices"]), fps=float(meta["fps"]),
                  speakers=tuple(meta["train_speakers"]))
    kwargs.update(overrides or {})
    return ModelConfig(**kwargs)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def sequence_loss(pred: Any, target: Any, lengths: Any, config: TrainConfig) -> Any:
    """The training loss between predicted and ground-truth vertex sequences.

    Args:
        pred, target: (B, T, V, 3) float32, metres (zero-padded past ``lengths``).
        lengths: (B,) long valid frames.
        config: loss choice, gamma, cost, divergence, mse_weight.

    Returns:
        Scalar tensor: mean over the batch of soft-DTW R[len, len] (a sum over the path, see
        SOFTDTW §1.2), and/or the masked MSE.
    """
    from talkface.losses import masked_mse, soft_dtw

    x, y = pred.flatten(2), target.flatten(2)
    total = 0.0
    if config.loss in ("softdtw", "softdtw+mse"):
        total = total + soft_dtw(x, y, config.gamma, x_lengths=lengths, y_lengths=lengths, cost=config.cost,
                                 divergence=config.divergence, bandwidth=config.band, reduction="mean")
    if config.loss in ("mse", "softdtw+mse"):
        weight = 1.0 if config.loss == "mse" else config.mse_weight
        total = total + weight * masked_mse(x, y, lengths)
    return total


def _batches(items: list[Any], batch_size: int, rng: random.Random) -> list[list[Any]]:
    order = list(items)
    rng.shuffle(order)
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def evaluate_clips(model: Any, dataset: Any, clips: list[Any], config: TrainConfig, lips: Any, device: str) -> dict:
    """Autoregressive generation on ``clips``: mean loss, LVE (m², when lips are known) and MVE.

    Speakers outside the training set are generated once per training style and averaged.
    """
    import torch

    from talkface import metrics
    from talkface.inference import evaluation_styles

    speakers = list(model.config.speakers)
    losses, lves, mves = [], [], []
    model.eval()
    with torch.no_grad():
        for info in clips:
            clip = dataset.load_clip(info)
            gt = torch.as_tensor(clip.vertices, device=device)
            for s in evaluation_styles(clip.speaker, speakers):
                style = torch.as_tensor(s.weights, device=device)
                pred = model.generate(torch.as_tensor(clip.audio, device=device),
                                      torch.as_tensor(clip.template, device=device), style,
                                      num_frames=int(gt.shape[0]))
                lengths = torch.tensor([gt.shape[0]], device=device)
                losses.append(float(sequence_loss(pred[None], gt[None], lengths, config)))
                mves.append(float(metrics.mve(pred.cpu(), gt.cpu())))
                if lips is not None:
                    lves.append(float(metrics.lve(pred.cpu(), gt.cpu(), lips)))
    model.train()
    mean = lambda v: float(np.mean(v)) if v else None  # noqa: E731
    return {"val_loss": mean(losses), "val_lve": mean(lves), "val_mve": mean(mves)}


def write_loss_plot(path: Path, history: list[dict[str, Any]]) -> None:
    """Train/val loss (log scale) and val LVE per epoch, as a PNG (atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from talkface.fileio import atomic_path

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    ax1.plot(epochs, [h["train_loss"] for h in history], label="train")
    val = [(h["epoch"], h["val_loss"]) for h in history if h.get("val_loss") is not None]
    if val:
        ax1.plot(*zip(*val, strict=True), label="val")
    ax1.set(xlabel="epoch", ylabel="loss", yscale="symlog", title="loss")
    ax1.legend()
    lve = [(h["epoch"], h["val_lve"] * 1e5) for h in history if h.get("val_lve") is not None]
    if lve:
        ax2.plot(*zip(*lve, strict=True), color="C2")
    ax2.set(xlabel="epoch", ylabel="LVE ×1e-5 m²", title="validation lip vertex error")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)


def train(
    data_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: TrainConfig,
    *,
    preset: str | None = None,
    model_overrides: dict[str, Any] | None = None,
    encoder_config: dict[str, Any] | None = None,
    device: str = "auto",
    overwrite: bool = False,
    on_progress: ProgressFn | None = None,
) -> TrainResult:
    """Train a model on a prepared dataset and write a run folder (see ``talkface.runs``).

    Args:
        data_dir: output of ``talkface prepare``.
        out_dir: run folder (refused when not empty unless ``overwrite``).
        config: the training recipe.
        preset: ``vocaset``/``biwi`` model numbers; default: D 64, period = fps.
        model_overrides: ModelConfig fields to override (e.g. ``feature_dim``).
        encoder_config: a ``Wav2Vec2Config`` dict for a random-init encoder (tests, demo); when None
            the pretrained encoder ``config.encoder`` is loaded once, here.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``.
        overwrite: write into a non-empty run folder.
        on_progress: called with events ``{"event": "start"|"step"|"epoch", ...}``.

    Returns:
        A ``TrainResult``.

    Raises:
        DatasetError: no training clips; ConfigError: bad options; EncoderError: encoder unavailable.
    """
    import torch

    from talkface.checkpoint import save_checkpoint
    from talkface.data import load_prepared, pad_batch
    from talkface.fileio import write_text_atomic
    from talkface.model import TalkFaceModel, load_pretrained_encoder_config
    from talkface.runs import copy_run_assets, load_run_assets

    emit = on_progress or (lambda event: None)
    dataset = load_prepared(data_dir)
    train_clips, val_clips = dataset.split("train"), dataset.split("val")
    if not train_clips:
        raise DatasetError(f"{data_dir}: the train split is empty; check the split file used by `talkface prepare`")
    run = prepare_run_dir(out_dir, overwrite=overwrite)
    device = resolve_device(device)
    seed_everything(config.seed)
    model_config = build_model_config(dataset.meta, preset=preset, overrides=model_overrides)
    pretrained = encoder_config is None
    model = TalkFaceModel(model_config, encoder_config or load_pretrained_encoder_config(config.encoder))
    if pretrained:
        model.load_pretrained_encoder(config.encoder)
    model.to(device).train()
    copy_run_assets(data_dir, run)
    lips = load_run_assets(run).regions.get("lips")
    write_text_atomic(run / "config.json", json.dumps({
        "train": to_dict(config), "model": to_dict(model_config), "data": str(Path(data_dir).resolve()),
        "preset": preset, "device": device}, indent=2))
    write_text_atomic(run / "metrics.jsonl", "")  # a fresh log: --overwrite must not append to an old run's
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    rng = random.Random(config.seed)
    speakers = list(model_config.speakers)
    result = TrainResult(run, num_train_clips=len(train_clips), num_val_clips=len(val_clips))
    best = float("inf")
    steps_per_epoch = -(-len(train_clips) // config.batch_size)
    emit({"event": "start", "epochs": config.epochs, "steps_per_epoch": steps_per_epoch, "device": device})
    for epoch in range(1, config.epochs + 1):
        t0, epoch_losses = time.perf_counter(), []
        for step, infos in enumerate(_batches(train_clips, config.batch_size, rng)):
            batch = pad_batch([dataset.load_clip(i) for i in infos], speakers)
            gt = batch.vertices.to(device)
            out = model(batch.audio.to(device), batch.audio_lengths.to(device), batch.template.to(device),
                        batch.style.to(device), batch.num_frames.to(device),
                        teacher=gt if config.teacher_forcing else None)
            loss = sequence_loss(out.vertices, gt, batch.num_frames.to(device), config)
            (loss / config.grad_accum).backward()
            if (step + 1) % config.grad_accum == 0 or step + 1 == steps_per_epoch:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            epoch_losses.append(float(loss.detach()))
            emit({"event": "step", "epoch": epoch, "step": step + 1, "loss": epoch_losses[-1], "clips": len(infos)})
        record: dict[str, Any] = {"epoch": epoch, "train_loss": float(np.mean(epoch_losses))}
        if val_clips:
            record.update(evaluate_clips(model, dataset, val_clips, config, lips, device))
        record["seconds"] = time.perf_counter() - t0
        result.history.append(record)
        extra = {"epoch": epoch, "train": to_dict(config), **{k: v for k, v in record.items() if v is not None}}
        result.last_path = save_checkpoint(run / "last.safetensors", model, extra=extra)
        score = record["val_loss"] if record.get("val_loss") is not None else record["train_loss"]
        if score <= best:
            best = score
            result.best_path = save_checkpoint(run / "best.safetensors", model, extra=extra)
        with open(run / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        write_loss_plot(run / "loss.png", result.history)
        emit({"event": "epoch", **record})
    return result


def replace_config(config: TrainConfig, **changes: Any) -> TrainConfig:
    """``dataclasses.replace`` that drops ``None`` values (unset CLI flags)."""
    return dataclasses.replace(config, **{k: v for k, v in changes.items() if v is not None})
