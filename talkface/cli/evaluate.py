"""``talkface evaluate``: score predictions or a checkpoint on a split (``talkface.evaluate``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from talkface.cli import common
from talkface.cli.common import DeviceOpt, OverwriteOpt, ThreadsOpt, _fmt, console, handle_errors, progress_bar
from talkface.io.fileio import check_paths


@handle_errors
def evaluate(
    data: Annotated[Path, typer.Option(exists=True, file_okay=False, resolve_path=True, help="Prepared dataset.")],
    checkpoint: Annotated[Path | None, typer.Option(exists=True, resolve_path=True, help="Run folder or .safetensors.")] = None,
    pred: Annotated[Path | None, typer.Option(exists=True, file_okay=False, resolve_path=True,
                                              help="Folder of predictions (<clip>.npy/.npz or <clip>_condition_<spk>.npy).")] = None,
    split: Annotated[str, typer.Option(help="train, val or test.")] = "test",
    masks: Annotated[Path | None, typer.Option(exists=True, resolve_path=True,
                                               help="Region file: FLAME_masks.pkl, .npz, or BIWI lve.txt/fdd.txt (file or folder).")]
    = None,
    report: Annotated[Path | None, typer.Option(resolve_path=True, help="Write a JSON report here.")] = None,
    csv: Annotated[Path | None, typer.Option("--csv", resolve_path=True,
                                             help="Per-sequence CSV (default: next to --report, .csv).")] = None,
    plot: Annotated[Path | None, typer.Option(resolve_path=True, help="PNG of per-frame lip error under the waveform.")]
    = None,
    plot_clip: Annotated[str | None, typer.Option(help="Clip to plot (default: the first).")] = None,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Score predictions: LVE (m², ×1e-5), LVE (mm, sqrt), FDD, MVE and lip sync (best-shift LVE, DTW lip error,
    lip-opening correlation, opening range); per clip, mean over styles and best style."""
    if (checkpoint is None) == (pred is None):
        raise typer.BadParameter("give exactly one of --checkpoint or --pred", param_hint="--checkpoint/--pred")
    common.use_threads(threads)
    from talkface.evaluate import evaluation as ev
    csv_path = csv if csv is not None else (report.with_suffix(".csv") if report is not None else None)
    from talkface.data.dataset import dataset_reads
    from talkface.io.fileio import check_output_path
    from talkface.io.run_assets import run_reads

    check_paths({"--data": dataset_reads(data), "--checkpoint": run_reads(checkpoint) if checkpoint else None,
                 "--pred": pred, "--masks": masks}, {"--report": report, "--csv": csv_path, "--plot": plot},
                overwrite=overwrite)
    for written in (report, csv_path, plot):
        if written is not None:
            check_output_path(written, overwrite=overwrite)
    if plot is not None:
        ev.check_plot_clip(data, split, plot_clip)  # before anything is written
    with progress_bar("evaluate") as update:
        result = ev.evaluate(data, split=split, checkpoint=checkpoint, pred=pred, masks=masks, device=device,
                             on_progress=lambda done, total, name: update(completed=done, total=total,
                                                                          description=f"evaluate {name}"))
    rep = result.report
    table = Table(title=f"{split} split: {rep['sequences']} sequences, {rep['predictions']} predictions, "
                        f"{rep['frames']} frames", caption=f"regions: {rep['regions']['source']}")
    for col in ("aggregation", "LVE ×1e-5 m²", "LVE mm", "FDD ×1e-7 m²", "MVE mm"):
        table.add_column(col, justify="right" if col != "aggregation" else "left")
    for label, r in (("mean over styles", rep), ("best style", rep["best_style"])):
        table.add_row(label, _fmt(r["lve"], 1e5), _fmt(r["lve_mm"]), _fmt(r["fdd"], 1e7), _fmt(r["mve"], 1e3))
    console.print(table)
    console.print("[dim]LVE: per frame the max over lip vertices of the squared error, mean over frames; "
                  "LVE mm: the same with the square root; FDD: signed, upper face; MVE: mean L2.[/]")
    console.print(_lip_sync_table(rep))
    console.print(f"[dim]shifted: LVE after the constant shift (|shift| <= {rep['max_shift_frames']} frames = 200 ms; "
                  "+ = prediction late) that minimises it; DTW: lip error along the best alignment within ±200 ms; "
                  "corr: Pearson correlation of the lip opening; range: (max−min) of the predicted opening / the "
                  f"true one (< 1: damped). Lip opening: {rep['regions']['lip_opening']}.[/]")
    if report is not None:
        import json

        from talkface.io.fileio import write_text_atomic

        write_text_atomic(report, json.dumps(rep, indent=2))
        console.print(f"report: {report}")
    if csv_path is not None:
        console.print(f"per-sequence CSV: {ev.write_csv(csv_path, result)}")
    if plot is not None:
        console.print(f"plot: {ev.plot_lip_errors(plot, result, data, plot_clip)}")


MAX_CLIP_ROWS = 40  # longer splits: the per-clip rows are in --report / --csv


def _lip_sync_table(rep: dict) -> Table:
    table = Table(title="lip sync: per clip (mean over its styles) and pooled", pad_edge=False)
    for col in ("clip", "LVE ×1e-5", "shifted ×1e-5", "shift ms", "DTW ×1e-5", "corr", "range"):
        table.add_column(col, justify="right" if col != "clip" else "left", no_wrap=col == "clip",
                         min_width=7 if col.startswith("shifted") else None)

    def num(value: float | None, spec: str, scale: float = 1.0) -> str:  # short cells: the table fits 80 columns
        return "-" if value is None else format(value * scale, spec)

    def add(label: str, r: dict, style: str | None = None) -> None:
        table.add_row(label, num(r["lve"], ".3g", 1e5), num(r["lve_shift"], ".3g", 1e5), num(r["shift_ms"], ".0f"),
                      num(r["lve_dtw"], ".3g", 1e5), num(r["lip_corr"], ".3f"), num(r["opening_range"], ".2f"),
                      style=style)

    clips = list(rep["per_clip"].items())
    for name, r in clips[:MAX_CLIP_ROWS]:
        add(name, r)
    if len(clips) > MAX_CLIP_ROWS:
        table.add_row(f"… {len(clips) - MAX_CLIP_ROWS} more clips in --report / --csv", *[""] * 6)
    table.add_section()
    add("mean over styles", rep, style="bold")
    add("best style", rep["best_style"], style="bold")
    return table
