"""What the command modules share: the consoles, option types, error handling and the progress bar.

The CLI is the only layer that prints, uses Rich, reads environment variables for UX, or exits. A
``TalkfaceError`` becomes one red line on stderr and exit code 1; usage errors exit 2 (Click); Ctrl-C
exits 130.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from talkface.errors import InterruptedRun, TalkfaceError

F = TypeVar("F", bound=Callable[..., Any])

err = Console(stderr=True)
console = Console()

# Reusable option types (hf-style aliases).
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
InFile = Annotated[Path, typer.Argument(exists=True, dir_okay=False, resolve_path=True)]
InDir = Annotated[Path, typer.Argument(exists=True, file_okay=False, resolve_path=True)]


def handle_errors(fn: F) -> F:
    """Turn ``TalkfaceError`` into a one-line message + exit 1, Ctrl-C into exit 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InterruptedRun as e:
            err.print(f"[yellow]interrupted:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(130) from None
        except TalkfaceError as e:
            if os.environ.get("TALKFACE_DEBUG"):
                raise
            err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            err.print("[dim](set TALKFACE_DEBUG=1 for the traceback)[/]", highlight=False)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


@contextmanager
def progress_bar(description: str, total: int | None = None) -> Iterator[Callable[..., None]]:
    """A Rich progress bar; yields ``update(completed=None, total=None, description=None, advance=None)``.

    ``update(new_line=True, ...)`` stops the current line, so that its elapsed time stays that of its own
    work, and continues on a new one (the demo gives each stage a line).
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn()]
    with Progress(*columns, console=err, transient=False) as progress:
        task = progress.add_task(description, total=total)

        def update(new_line: bool = False, **kw: Any) -> None:
            nonlocal task
            if new_line:
                progress.stop_task(task)
                task = progress.add_task(kw.get("description") or description, total=kw.get("total"))
            progress.update(task, **{k: v for k, v in kw.items() if v is not None})

        yield update


def _fmt(value: Any, scale: float = 1.0) -> str:
    return "-" if value is None else f"{value * scale:.4g}"
