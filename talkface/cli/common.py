"""What the command modules share: the consoles, option types, error handling and the progress bar.

The CLI is the only layer that prints, uses Rich, reads environment variables for UX, or exits. A
``TalkfaceError`` becomes one red line on stderr and exit code 1; usage errors exit 2 (Click); Ctrl-C
exits 130 and SIGTERM 143, after the same cleanup. Flags are checked where they are parsed (finite
numbers, device names, seeds); commands pass their input and output paths through
``io.fileio.check_paths`` before they write anything.
"""

from __future__ import annotations

import functools
import os
import re
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from talkface import runtime
from talkface.config import SEED_LIMIT, check_number
from talkface.errors import ConfigError, InterruptedRun, TalkfaceError

F = TypeVar("F", bound=Callable[..., Any])

err = Console(stderr=True)
console = Console()

# --------------------------------------------------------------------------------------------- flag checks
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?|mps")


def device_flag(value: str | None) -> str | None:
    """Refuse a device name torch would not understand (``gpu``, ``cuda0``) while parsing."""
    if value is not None and not DEVICE_PATTERN.fullmatch(value):
        raise typer.BadParameter(f"{value!r} is not a device; expected auto, cpu, cuda or cuda:N (e.g. cuda:0)")
    return value


def number_flag(*, low: float | None = None, low_open: bool = False) -> Callable[..., Any]:
    """A typer callback that refuses NaN/inf (which pass every ``<=`` test) and values below ``low``."""

    def callback(param: typer.CallbackParam, value: float | None) -> float | None:
        if value is None:
            return None
        try:
            return check_number(value, f"--{(param.name or '').replace('_', '-')}", low=low, low_open=low_open)
        except ConfigError as e:
            raise typer.BadParameter(str(e)) from None

    return callback


finite_flag = number_flag()
positive_flag = number_flag(low=0, low_open=True)

# Reusable option types (hf-style aliases).
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs (never inputs).")]
DeviceOpt = Annotated[str, typer.Option("--device", callback=device_flag, help="auto, cpu, cuda or cuda:N.")]
SeedOpt = Annotated[int, typer.Option(min=0, max=SEED_LIMIT - 1, help="Random seed.")]
ThreadsOpt = Annotated[int | None, typer.Option(
    "--threads", min=1, help="CPU threads for torch, idle ones sleeping (passive OpenMP waiting). (default: "
                             "OMP_NUM_THREADS when set, else up to 2; see docs/benchmarks.md)")]


def use_threads(requested: int | None, *, encoder: str | None = None) -> None:
    """Apply the CPU thread policy (talkface.runtime) before the command imports torch: the OpenMP
    wait policy is read when torch loads. ``encoder``: the encoder name, when known, for the default."""
    policy = runtime.choose_thread_policy(requested, num_cpus=runtime.available_cpus(),
                                          env_threads=runtime.env_thread_count(),
                                          small_model=encoder in runtime.SMALL_ENCODERS)
    runtime.apply_thread_policy(policy)
VerboseOpt = Annotated[bool, typer.Option("--verbose", help="Print the start-up steps and their times (stderr).")]


class StepTimer:
    """``timer(name)`` prints (when ``verbose``) the seconds since the previous step, to stderr.

    The first step counts from the command's start (Python's own start and the CLI's imports, about
    0.3 s, come before it).
    """

    def __init__(self, verbose: bool) -> None:
        import time

        self.verbose, self.clock = verbose, time.perf_counter
        self.last = self.started = self.clock()

    def __call__(self, name: str) -> None:
        now = self.clock()
        if self.verbose:
            err.print(f"[dim]start-up:[/] {name}: {now - self.last:.2f} s (at {now - self.started:.2f} s)",
                      highlight=False)
        self.last = now


InFile = Annotated[Path, typer.Argument(exists=True, dir_okay=False, resolve_path=True)]
InDir = Annotated[Path, typer.Argument(exists=True, file_okay=False, resolve_path=True)]


_signals: list[int] = []  # SIGTERMs received by the running command


def _terminate(signum: int, frame: Any) -> None:
    """SIGTERM handler: unwind like Ctrl-C, so that every ``finally`` and resume path runs."""
    _signals.append(signum)
    raise KeyboardInterrupt


_terminate._talkface_interrupt = True  # type: ignore[attr-defined]  # runtime.deferred_interrupt holds it too


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While a command runs, SIGTERM (``kill``, a job scheduler, torchrun) unwinds as KeyboardInterrupt."""
    _signals.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt_code() -> int:
    """128 + the signal: 130 for Ctrl-C, 143 for SIGTERM."""
    return 128 + (_signals[-1] if _signals else signal.SIGINT)


def command_flags(fn: Callable[..., Any]) -> dict[str, str]:
    """{parameter name: how the command line spells it} of a Typer command: ``--template``, ``AUDIO``."""
    import typing

    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:  # an annotation that does not resolve: no flags named, the message stays as it is
        return {}
    flags = {}
    for name, hint in hints.items():
        for info in getattr(hint, "__metadata__", ()):
            if isinstance(info, typer.models.OptionInfo):
                decls = [d for d in (*(info.param_decls or ()), info.default) if isinstance(d, str) and
                         d.startswith("--")]
                flags[name] = decls[0].split("/")[0] if decls else "--" + name.replace("_", "-")
            elif isinstance(info, typer.models.ArgumentInfo):
                flags[name] = info.metavar or name.upper()
    return flags


def name_the_flag(message: str, flags: dict[str, str], values: dict[str, Any]) -> str:
    """``--template head.npz: ...`` for a message that starts with a path the user gave (or a file inside it).

    Library errors name the file they came from (``fileio.reading``); only the CLI knows which flag the
    file came through, so it adds the flag here, once for every command, unless the message names it.
    """
    paths = [(os.fspath(v), flags[name]) for name, value in values.items() if name in flags
             for v in (value if isinstance(value, list) else [value]) if isinstance(v, os.PathLike)]
    for text, flag in sorted(paths, key=lambda item: -len(item[0])):  # the most specific path first
        if message.startswith(text) and message[len(text):len(text) + 1] in ("", ":", "/", " ", "("):
            return message if flag in message else f"{flag} {message}"
    return message


def handle_errors(fn: F) -> F:
    """Turn ``TalkfaceError`` into a one-line message + exit 1, Ctrl-C into exit 130, SIGTERM into 143.

    The message gets the flag of the file it names (``name_the_flag``).
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with sigterm_as_interrupt():
                return fn(*args, **kwargs)
        except InterruptedRun as e:
            err.print(f"[yellow]interrupted:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(_interrupt_code()) from None
        except TalkfaceError as e:
            if os.environ.get("TALKFACE_DEBUG"):
                raise
            message = name_the_flag(str(e), command_flags(fn), kwargs)
            err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
            err.print("[dim](set TALKFACE_DEBUG=1 for the traceback)[/]", highlight=False)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]" + (" (SIGTERM)" if _signals else ""))
            raise typer.Exit(_interrupt_code()) from None

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
