"""``talkface demo``: the whole pipeline offline on a synthetic corpus (``talkface.demo``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from talkface.cli import common
from talkface.cli.common import ThreadsOpt, console, handle_errors, progress_bar


@handle_errors
def demo(
    out: Annotated[Path, typer.Option(resolve_path=True, help="Folder for everything the demo writes.")] = Path("demo-output"),
    epochs: Annotated[int | None, typer.Option(min=1, help="Training epochs (default: the demo's recipe).")] = None,
    threads: ThreadsOpt = None,
) -> None:
    """Run the whole pipeline offline on a synthetic corpus: synthesise → prepare → train → animate → render.

    Writes raw/, data/, run/, the animation and demo.mp4 inside --out, replacing a previous demo's outputs.
    """
    common.use_threads(threads, encoder="synthetic-phonetic")  # the demo's encoder (talkface.demo loads torch)
    from talkface.demo import run_demo

    with progress_bar("demo") as update:
        shown: list[str] = []  # the stage on the current line ("train (epoch 3/80, …)" is stage "train")

        def on_progress(stage: str, done: int | None = None, total: int | None = None) -> None:
            name = stage.split(" (")[0]
            update(new_line=bool(shown) and shown[-1] != name, description=stage, completed=done, total=total)
            shown.append(name)

        result = run_demo(out, epochs=epochs, on_progress=on_progress)
    table = Table(title="talkface demo")
    table.add_column("")
    table.add_column("")
    for key, value in result.summary().items():
        table.add_row(key, value)
    console.print(table)
    console.print(f"[bold green]video with sound:[/] {result.video}")
    console.print(f"[bold green]see it in the browser:[/] talkface view {result.animation}", highlight=False, soft_wrap=True)
