"""``talkface info`` and ``talkface import-faceformer``: inspect and import checkpoints (``talkface.model``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from talkface.cli.common import InFile, OverwriteOpt, console, handle_errors
from talkface.io.fileio import check_paths


@handle_errors
def info(checkpoint: Annotated[Path, typer.Argument(exists=True, resolve_path=True, help="Run folder or .safetensors.")]) -> None:
    """Show a checkpoint's config, speakers, fps and size, and its epoch's validation metrics."""
    from talkface.io.checkpoint_meta import read_best_metrics, read_checkpoint_meta  # no torch: info is instant

    meta = read_checkpoint_meta(checkpoint)
    table = Table(title=str(checkpoint), show_header=False)
    for key, value in meta.items():
        if key == "encoder_config" and isinstance(value, dict):
            value = ", ".join(f"{k}={value.get(k)}" for k in ("hidden_size", "num_hidden_layers", "conv_dim"))
        table.add_row(key, str(value))
    record = read_best_metrics(meta)
    if record is not None:
        table.add_section()
        numbers = {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for key, value in numbers.items():
            table.add_row(f"metrics: {key}", f"{value:.6g}" if isinstance(value, float) else str(value))
    console.print(table)


@handle_errors
def import_faceformer_cmd(
    pth: InFile,
    speakers: Annotated[str, typer.Option(help="FaceFormer's --train_subjects, space- or comma-separated, in order.")],
    out: Annotated[Path, typer.Option(resolve_path=True, help="Output folder or .safetensors file.")],
    preset: Annotated[str, typer.Option(help="vocaset or biwi.")] = "vocaset",
    overwrite: OverwriteOpt = False,
) -> None:
    """Convert FaceFormer's released vocaset.pth/biwi.pth into a talkface checkpoint (no pickle code runs)."""
    from talkface.model.faceformer_import import import_faceformer

    names = [n for n in speakers.replace(",", " ").split() if n]
    if not names:
        raise typer.BadParameter("--speakers names no speaker", param_hint="--speakers")
    check_paths({"PTH": pth}, {"--out": out if out.suffix == ".safetensors" else out / "best.safetensors"},
                overwrite=overwrite)
    path = import_faceformer(pth, preset=preset, speakers=names, out=out, overwrite=overwrite)
    console.print(f"wrote {path}; animate with --checkpoint {path}")
