"""``talkface train``: resolve the options, train (``talkface.train``), and show progress and the history."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from talkface.cli import common
from talkface.cli.common import (
    InDir,
    OverwriteOpt,
    ThreadsOpt,
    _fmt,
    console,
    device_flag,
    err,
    finite_flag,
    handle_errors,
    number_flag,
    positive_flag,
)
from talkface.config import SEED_LIMIT
from talkface.io.fileio import check_paths


@handle_errors
def train(
    data_dir: InDir,
    out: Annotated[Path, typer.Option("--out", resolve_path=True, help="Run folder.")],
    config_file: Annotated[Path | None, typer.Option("--config", exists=True, dir_okay=False, resolve_path=True,
                                                     help="TOML file of these options (flags override it).")] = None,
    loss: Annotated[str | None, typer.Option(help="softdtw, mse or softdtw+mse. (default: softdtw)")] = None,
    gamma: Annotated[float | None, typer.Option(callback=finite_flag,
                                                help="Soft-DTW smoothing γ. (default: 1e-3, the paper's)")] = None,
    cost: Annotated[str | None, typer.Option(help="sqeuclidean or euclidean frame cost. (default: sqeuclidean)")]
    = None,
    divergence: Annotated[bool | None, typer.Option("--divergence/--no-divergence",
                                                    help="Soft-DTW divergence (0 at x = y). (default: off)")] = None,
    band: Annotated[int | None, typer.Option(help="Sakoe-Chiba band half-width in frames. (default: none)")] = None,
    mse_weight: Annotated[float | None, typer.Option(callback=number_flag(low=0),
                                                     help="Weight of the MSE term in softdtw+mse. (default: 1)")]
    = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Clips per step (padded, masked). (default: 1)")]
    = None,
    teacher_forcing: Annotated[bool | None, typer.Option(
        "--teacher-forcing/--no-teacher-forcing", help="Feed ground truth. (default: off = autoregressive)")] = None,
    preset: Annotated[str | None, typer.Option(help="vocaset or biwi model numbers.")] = None,
    encoder: Annotated[str | None, typer.Option(help="Pretrained wav2vec 2.0: hub name or local folder; "
                                                     "'synthetic-phonetic' = the small one shipped with talkface "
                                                     "(offline); 'tiny' = small random-init encoder (smoke tests). "
                                                     "(default: facebook/wav2vec2-base-960h)")] = None,
    device: Annotated[str | None, typer.Option(callback=device_flag, help="auto, cpu, cuda or cuda:N. (default: auto)")]
    = None,
    seed: Annotated[int | None, typer.Option(min=0, max=SEED_LIMIT - 1, help="Random seed. (default: 0)")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Epochs. (default: 100)")] = None,
    lr: Annotated[float | None, typer.Option(callback=positive_flag, help="Adam learning rate. (default: 1e-4)")]
    = None,
    grad_accum: Annotated[int | None, typer.Option(min=1, help="Gradient accumulation steps. (default: 1)")] = None,
    amp: Annotated[bool | None, typer.Option("--amp/--no-amp", help="Mixed precision on CUDA. (default: off)")]
    = None,
    feature_dim: Annotated[int | None, typer.Option(min=1, help="Override the decoder width D.")] = None,
    feature_cache_mb: Annotated[float | None, typer.Option(
        min=0, help="Memory (MiB; GPU memory on CUDA) for the frozen CNN's features, computed once per clip "
                    "instead of every epoch; 0 = none. (default: 1024)")] = None,
    feature_cache_disk: Annotated[bool | None, typer.Option(
        "--feature-cache-disk/--no-feature-cache-disk",
        help="Also keep those features in RUN/feature_cache/. (default: on)")] = None,
    threads: ThreadsOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out where it stopped.")] = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Train FaceFormer with the Soft-DTW loss on a prepared dataset.

    Options come from built-in defaults, then --config FILE.toml, then the flags given here. The
    resolved values are saved in RUN/config.json.
    """
    from talkface.config import load_run_values, load_train_file, resolve_train_options

    if resume and overwrite:
        raise typer.BadParameter("--resume continues a run, --overwrite replaces it; give one",
                                 param_hint="--resume/--overwrite")
    from talkface.data.dataset import dataset_reads

    check_paths({"DATA_DIR": dataset_reads(data_dir), "--config": config_file}, {"--out": out},
                output_folders=("--out",), overwrite=overwrite or resume)
    flags = dict(loss=loss, gamma=gamma, cost=cost, divergence=divergence, band=band, mse_weight=mse_weight,
                 batch_size=batch_size, teacher_forcing=teacher_forcing, epochs=epochs, lr=lr, seed=seed,
                 grad_accum=grad_accum, amp=amp, encoder=encoder, preset=preset, device=device,
                 feature_dim=feature_dim, feature_cache_mb=feature_cache_mb, feature_cache_disk=feature_cache_disk,
                 threads=threads)
    file_values = load_train_file(config_file) if config_file else {}
    # On --resume the run's own settings come first, so no flag needs repeating (--epochs may be raised).
    base = load_run_values(out) if resume else None
    config, options = resolve_train_options(file_values, flags, base=base,
                                            source=str(config_file) if config_file else None)
    common.use_threads(options["threads"], encoder=config.encoder)  # before torch loads (talkface.train and talkface.model do)
    from talkface.train import train as run_train

    encoder_config = None
    if config.encoder == "tiny":
        from talkface.model import tiny_encoder_config

        encoder_config = tiny_encoder_config()
    # Under torchrun every rank runs this command; only rank 0 talks (train() logs on rank 0 only).
    main_rank = os.environ.get("RANK", "0") == "0"
    with _train_progress(enabled=main_rank) as on_progress:
        result = run_train(data_dir, out, config, preset=options["preset"], model_overrides=options["model_overrides"],
                           encoder_config=encoder_config, device=options["device"], overwrite=overwrite,
                           resume=resume, on_progress=on_progress)
    if main_rank:
        _history_table(result.history)
        console.print(f"run folder: {result.run_dir} (best: {result.best_path.name if result.best_path else '-'})")


@contextmanager
def _train_progress(enabled: bool = True) -> Iterator[Callable[[dict[str, Any]], None]]:
    """A Rich bar for ``train``'s events: epoch, step, loss, clips/s (validation excluded) and ETA."""
    import time

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    if not enabled:
        yield lambda event: None
        return
    columns = [TextColumn("[bold]{task.description}"), TextColumn("epoch {task.fields[epoch]}"),
               TextColumn("step {task.fields[step]}"), BarColumn(), TextColumn("loss {task.fields[loss]}"),
               TextColumn("{task.fields[rate]} clips/s"), TimeElapsedColumn(), TextColumn("eta"),
               TimeRemainingColumn()]
    with Progress(*columns, console=err, transient=False, speed_estimate_period=300) as progress:
        task = progress.add_task("train", total=None, epoch="-", step="-", loss="-", rate="-")
        state = {"epochs": 0, "steps": 0, "clips": 0, "train_s": 0.0, "mark": time.perf_counter()}

        def on_progress(event: dict[str, Any]) -> None:
            now = time.perf_counter()
            kind = event["event"]
            if kind == "start":
                state.update(epochs=event["epochs"], steps=event["steps_per_epoch"], mark=now)
                start_epoch, start_step = event.get("start_epoch", 1), event.get("start_step", 0)
                done = (start_epoch - 1) * state["steps"] + start_step
                # reset (not update) so that Rich's speed estimate, hence the ETA, ignores resumed steps.
                progress.reset(task, total=state["epochs"] * state["steps"], completed=done,
                               epoch=f"{start_epoch}/{state['epochs']}", step=f"{start_step}/{state['steps']}",
                               loss="-", rate="-")
                progress.console.print(f"training on {event.get('device', '?')}: "
                                       f"{event.get('num_train_clips', '?')} clips, {state['steps']} steps per epoch")
                if done:
                    progress.console.print(f"resuming at epoch {start_epoch}, step {start_step + 1} "
                                           f"({done} of {state['epochs'] * state['steps']} steps done)")
                if event.get("tensorboard") is False:
                    progress.console.print("[dim]TensorBoard not installed: pip install tensorboard to get "
                                           "event files[/]")
            elif kind == "step":
                state["train_s"] += now - state["mark"]
                state["clips"] += event.get("clips", 1)
                rate = state["clips"] / state["train_s"] if state["train_s"] > 0 else 0.0
                progress.update(task, advance=1, description="train", loss=f"{event['loss']:.4g}",
                                epoch=f"{event['epoch']}/{state['epochs']}",
                                step=f"{event['step']}/{state['steps']}", rate=f"{rate:.3g}")
            elif kind == "validate":
                progress.update(task, description="validating…")
            elif kind == "epoch":
                progress.update(task, description="train")
                progress.console.print(_epoch_line(event), highlight=False)
            elif kind == "warning":
                progress.console.print(f"[yellow]warning (epoch {event['epoch']}): {event['message']}[/]",
                                       highlight=False)
            state["mark"] = now

        yield on_progress


def _epoch_line(record: dict[str, Any]) -> str:
    parts = [f"epoch {record['epoch']}", f"train loss {_fmt(record.get('train_loss'))}"]
    if record.get("val_loss") is not None:
        parts.append(f"val loss {_fmt(record['val_loss'])}")
    if record.get("val_lve") is not None:
        parts.append(f"val LVE {_fmt(record['val_lve'], 1e5)}×1e-5 m²")
    if record.get("val_lip_corr") is not None:
        parts.append(f"lip corr {record['val_lip_corr']:.3f}")
    if record.get("val_opening_range") is not None:
        parts.append(f"opening range {record['val_opening_range']:.2f}")
    if record.get("clips_per_s") is not None:
        parts.append(f"{record['clips_per_s']:.3g} clips/s")
    return ", ".join(parts)


def _history_table(history: list[dict[str, Any]]) -> None:
    table = Table(title="training")
    for col in ("epoch", "train loss", "val loss", "val LVE ×1e-5", "s"):
        table.add_column(col, justify="right")
    rows = history if len(history) <= 12 else history[:3] + history[-8:]
    for h in rows:
        table.add_row(str(h["epoch"]), _fmt(h["train_loss"]), _fmt(h.get("val_loss")),
                      _fmt(h.get("val_lve"), 1e5), f"{h['seconds']:.1f}")
    console.print(table)
