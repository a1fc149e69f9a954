"""The ``talkface`` command line: parse, validate, delegate, and report.

This is the only module that prints, uses Rich, reads environment variables for UX, or exits.
Heavy libraries (torch, transformers, pyrender) are imported inside the commands, so ``talkface
--help`` stays fast. A ``TalkfaceError`` becomes one red line on stderr and exit code 1; usage
errors exit 2 (Click); Ctrl-C exits 130.
"""

from __future__ import annotations

import functools
import os
import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from talkface._version import __version__
from talkface.errors import InterruptedRun, TalkfaceError

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="talkface",
    help="Speech-driven 3D facial animation on FLAME meshes: FaceFormer trained with the Soft-DTW loss.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
prepare_app = typer.Typer(help="Convert a dataset into talkface's training format.", no_args_is_help=True)
app.add_typer(prepare_app, name="prepare")

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


def _version(value: bool) -> None:
    if value:
        console.print(f"talkface {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    """talkface: prepare data, train (Soft-DTW), animate speech, render video with sound, evaluate."""


@contextmanager
def progress_bar(description: str, total: int | None = None) -> Iterator[Callable[..., None]]:
    """A Rich progress bar; yields ``update(completed=None, total=None, description=None, advance=None)``."""
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

        def update(**kw: Any) -> None:
            progress.update(task, **{k: v for k, v in kw.items() if v is not None})

        yield update


# --------------------------------------------------------------------------------------------- prepare
def _prepare_summary(report: Any) -> None:
    table = Table(title=f"prepared → {report.out_dir}")
    table.add_column("split")
    table.add_column("clips", justify="right")
    for split, n in sorted(report.clips_per_split.items(), key=lambda kv: str(kv[0])):
        table.add_row(str(split), str(n))
    console.print(table)
    console.print(f"{report.minutes:.1f} min of speech; {report.written} clips written, {report.reused} reused")
    for name, reason in report.skipped:
        console.print(f"[yellow]skipped[/] {name}: {reason}")


def _progress_callback(update: Callable[..., None], state: dict[str, Any]) -> Callable[[int, int, str], None]:
    def on_progress(done: int, total: int, name: str) -> None:
        state.update(done=done, total=total)
        update(completed=done, total=total, description=f"prepare {name}")

    return on_progress


def _command_line(words: list[str], options: dict[str, Any]) -> str:
    """The shell command that reruns a command with these options (None/False options left out)."""
    parts = ["talkface", *words]
    for name, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        parts += [flag] if value is True else [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return shlex.join(parts)


@contextmanager
def _prepare_session(source: str, raw_dir: Path, out_dir: Path, **options: Any) -> Iterator[Callable[..., None]]:
    """A progress bar for ``prepare``; Ctrl-C becomes InterruptedRun with the command that resumes.

    Clip files are written atomically one by one, so the finished ones are complete and a rerun
    reuses them (``write_prepared`` matches their keys); ``--overwrite`` is left out of the resume
    command because it would convert them again.
    """
    state: dict[str, Any] = {"done": 0, "total": None}
    try:
        with progress_bar("prepare") as update:
            yield _progress_callback(update, state)
    except KeyboardInterrupt:
        done = f"{state['done']} of {state['total']} clips" if state["total"] else "0 clips"
        command = _command_line(["prepare", source, str(raw_dir), str(out_dir)], options)
        raise InterruptedRun(f"prepare stopped after {done}; the finished clips are kept in {out_dir} and will be "
                             f"reused. Resume with: {command}") from None


@prepare_app.command("vocaset")
@handle_errors
def prepare_vocaset_cmd(
    raw_dir: InDir,
    out_dir: Annotated[Path, typer.Argument(resolve_path=True, help="Output folder.")],
    fps: Annotated[int, typer.Option(help="30 (every second 60 fps frame, as FaceFormer) or 60.")] = 30,
    splits: Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="TOML split file.")] = None,
    faces: Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="Topology mesh (FLAME_sample.ply).")] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """VOCASET raw training data (data_verts.npy, raw_audio_fixed.pkl, templates.pkl, subj_seq_to_idx.pkl)."""
    from talkface.data import prepare_vocaset

    if fps not in (30, 60):
        raise typer.BadParameter(f"--fps must be 30 or 60, got {fps}", param_hint="--fps")
    with _prepare_session("vocaset", raw_dir, out_dir, fps=fps, splits=splits, faces=faces) as on_progress:
        report = prepare_vocaset(raw_dir, out_dir, fps=fps, splits=splits, faces=faces, on_progress=on_progress,
                                 overwrite=overwrite)
    _prepare_summary(report)


SplitsOpt = Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="TOML split file.")]
FacesOpt = Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="Topology mesh (e.g. FLAME_sample.ply).")]


@prepare_app.command("faceformer")
@handle_errors
def prepare_faceformer_cmd(
    raw_dir: InDir,
    out_dir: Annotated[Path, typer.Argument(resolve_path=True, help="Output folder.")],
    fps: Annotated[int, typer.Option(help="Target fps (30 = every second frame of the 60 fps npy files).")] = 30,
    source_fps: Annotated[int, typer.Option(help="Frame rate of vertices_npy/*.npy.")] = 60,
    splits: SplitsOpt = None,
    faces: FacesOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """FaceFormer's processed layout: wav/, vertices_npy/, templates.pkl."""
    from talkface.data import prepare_faceformer

    with _prepare_session("faceformer", raw_dir, out_dir, fps=fps, source_fps=source_fps, splits=splits,
                          faces=faces) as on_progress:
        report = prepare_faceformer(raw_dir, out_dir, fps=fps, source_fps=source_fps, splits=splits, faces=faces,
                                    on_progress=on_progress, overwrite=overwrite)
    _prepare_summary(report)


@prepare_app.command("biwi")
@handle_errors
def prepare_biwi_cmd(
    raw_dir: InDir,
    out_dir: Annotated[Path, typer.Argument(resolve_path=True, help="Output folder.")],
    splits: SplitsOpt = None,
    faces: FacesOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """BIWI as processed by FaceFormer/CodeTalker (70110-d npy at 25 fps, 44.1 kHz wav, templates.pkl)."""
    from talkface.data import prepare_biwi

    with _prepare_session("biwi", raw_dir, out_dir, splits=splits, faces=faces) as on_progress:
        report = prepare_biwi(raw_dir, out_dir, splits=splits, faces=faces, on_progress=on_progress,
                              overwrite=overwrite)
    _prepare_summary(report)


@prepare_app.command("folder")
@handle_errors
def prepare_folder_cmd(
    raw_dir: InDir,
    out_dir: Annotated[Path, typer.Argument(resolve_path=True, help="Output folder.")],
    fps: Annotated[float, typer.Option(help="Frame rate of your motion files.")],
    source_fps: Annotated[float | None, typer.Option(help="Rate of the files when subsampling to --fps.")] = None,
    templates: Annotated[Path | None, typer.Option(exists=True, file_okay=False, help="Folder of <speaker> meshes.")] = None,
    splits: SplitsOpt = None,
    faces: FacesOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Your own data: <speaker>_<sentence>.wav with matching .npy (or a folder of OBJ/PLY frames)."""
    from talkface.data import prepare_folder

    if fps <= 0:
        raise typer.BadParameter(f"--fps must be > 0, got {fps}", param_hint="--fps")
    with _prepare_session("folder", raw_dir, out_dir, fps=fps, source_fps=source_fps, templates=templates,
                          splits=splits, faces=faces) as on_progress:
        report = prepare_folder(raw_dir, out_dir, fps=fps, source_fps=source_fps, splits=splits, faces=faces,
                                templates=templates, on_progress=on_progress, overwrite=overwrite)
    _prepare_summary(report)


@prepare_app.command("synthetic")
@handle_errors
def prepare_synthetic_cmd(
    out_dir: Annotated[Path, typer.Argument(resolve_path=True, help="Folder for the raw VOCASET-format corpus.")],
    speakers: Annotated[int, typer.Option(min=2, help="Number of synthetic speakers.")] = 6,
    sentences: Annotated[int, typer.Option(min=3, help="Sentences per speaker.")] = 8,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Generate a synthetic corpus (procedural head, espeak-ng speech) in VOCASET's raw format."""
    from talkface.synthetic import write_synthetic_vocaset

    with progress_bar("synthesise") as update:
        report = write_synthetic_vocaset(out_dir, num_speakers=speakers, num_sentences=sentences, seed=seed,
                                         on_progress=lambda done, total, name: update(completed=done, total=total))
    console.print(f"wrote {report.clips} clips of {len(report.speakers)} speakers ({report.seconds:.0f} s of speech) "
              f"to {report.out_dir}; next: talkface prepare vocaset {report.out_dir} DATA "
              f"--splits {Path(report.out_dir) / 'splits.toml'}")


# --------------------------------------------------------------------------------------------- train
@app.command()
@handle_errors
def train(
    data_dir: InDir,
    out: Annotated[Path, typer.Option("--out", resolve_path=True, help="Run folder.")],
    config_file: Annotated[Path | None, typer.Option("--config", exists=True, dir_okay=False, resolve_path=True,
                                                     help="TOML file of these options (flags override it).")] = None,
    loss: Annotated[str | None, typer.Option(help="softdtw, mse or softdtw+mse. (default: softdtw)")] = None,
    gamma: Annotated[float | None, typer.Option(help="Soft-DTW smoothing γ. (default: 1e-3, the paper's)")] = None,
    cost: Annotated[str | None, typer.Option(help="sqeuclidean or euclidean frame cost. (default: sqeuclidean)")]
    = None,
    divergence: Annotated[bool | None, typer.Option("--divergence/--no-divergence",
                                                    help="Soft-DTW divergence (0 at x = y). (default: off)")] = None,
    band: Annotated[int | None, typer.Option(help="Sakoe-Chiba band half-width in frames. (default: none)")] = None,
    mse_weight: Annotated[float | None, typer.Option(help="Weight of the MSE term in softdtw+mse. (default: 1)")]
    = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Clips per step (padded, masked). (default: 1)")]
    = None,
    teacher_forcing: Annotated[bool | None, typer.Option(
        "--teacher-forcing/--no-teacher-forcing", help="Feed ground truth. (default: off = autoregressive)")] = None,
    preset: Annotated[str | None, typer.Option(help="vocaset or biwi model numbers.")] = None,
    encoder: Annotated[str | None, typer.Option(help="Pretrained wav2vec 2.0: hub name or local folder; 'tiny' = "
                                                     "small random-init encoder (smoke tests). "
                                                     "(default: facebook/wav2vec2-base-960h)")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N. (default: auto)")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed. (default: 0)")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Epochs. (default: 100)")] = None,
    lr: Annotated[float | None, typer.Option(help="Adam learning rate. (default: 1e-4)")] = None,
    grad_accum: Annotated[int | None, typer.Option(min=1, help="Gradient accumulation steps. (default: 1)")] = None,
    amp: Annotated[bool | None, typer.Option("--amp/--no-amp", help="Mixed precision on CUDA. (default: off)")]
    = None,
    feature_dim: Annotated[int | None, typer.Option(min=1, help="Override the decoder width D.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out where it stopped.")] = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Train FaceFormer with the Soft-DTW loss on a prepared dataset.

    Options come from built-in defaults, then --config FILE.toml, then the flags given here. The
    resolved values are saved in RUN/config.json.
    """
    from talkface.config import load_run_values, load_train_file, resolve_train_options
    from talkface.train import train as run_train

    if resume and overwrite:
        raise typer.BadParameter("--resume continues a run, --overwrite replaces it; give one",
                                 param_hint="--resume/--overwrite")
    flags = dict(loss=loss, gamma=gamma, cost=cost, divergence=divergence, band=band, mse_weight=mse_weight,
                 batch_size=batch_size, teacher_forcing=teacher_forcing, epochs=epochs, lr=lr, seed=seed,
                 grad_accum=grad_accum, amp=amp, encoder=encoder, preset=preset, device=device,
                 feature_dim=feature_dim)
    file_values = load_train_file(config_file) if config_file else {}
    # On --resume the run's own settings come first, so no flag needs repeating (--epochs may be raised).
    base = load_run_values(out) if resume else None
    config, options = resolve_train_options(file_values, flags, base=base,
                                            source=str(config_file) if config_file else None)
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
            state["mark"] = now

        yield on_progress


def _epoch_line(record: dict[str, Any]) -> str:
    parts = [f"epoch {record['epoch']}", f"train loss {_fmt(record.get('train_loss'))}"]
    if record.get("val_loss") is not None:
        parts.append(f"val loss {_fmt(record['val_loss'])}")
    if record.get("val_lve") is not None:
        parts.append(f"val LVE {_fmt(record['val_lve'], 1e5)}×1e-5 m²")
    if record.get("clips_per_s") is not None:
        parts.append(f"{record['clips_per_s']:.3g} clips/s")
    return ", ".join(parts)


def _fmt(value: Any, scale: float = 1.0) -> str:
    return "-" if value is None else f"{value * scale:.4g}"


def _history_table(history: list[dict[str, Any]]) -> None:
    table = Table(title="training")
    for col in ("epoch", "train loss", "val loss", "val LVE ×1e-5", "s"):
        table.add_column(col, justify="right")
    rows = history if len(history) <= 12 else history[:3] + history[-8:]
    for h in rows:
        table.add_row(str(h["epoch"]), _fmt(h["train_loss"]), _fmt(h.get("val_loss")),
                      _fmt(h.get("val_lve"), 1e5), f"{h['seconds']:.1f}")
    console.print(table)


# --------------------------------------------------------------------------------------------- animate
@app.command()
@handle_errors
def animate(
    audio: Annotated[list[Path], typer.Argument(exists=True, resolve_path=True, help="Audio files or folders.")],
    checkpoint: Annotated[Path, typer.Option(exists=True, resolve_path=True, help="Run folder or .safetensors.")],
    style: Annotated[str, typer.Option(help="Training speaker, a mix A:0.7,B:0.3, or 'all'.")],
    out: Annotated[Path, typer.Option(resolve_path=True, help="Output file (one input; format by suffix) or folder.")],
    subject: Annotated[str | None, typer.Option(help="Whose neutral face to animate (default: the style's).")] = None,
    template: Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="Any mesh with the model's vertex count.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="Files written into an --out folder: npz, npy, obj, glb or gltf.")]
    = "npz",
    render: Annotated[bool, typer.Option("--render", help="Also render an mp4 with the audio.")] = False,
    device: DeviceOpt = "auto",
    overwrite: OverwriteOpt = False,
) -> None:
    """Animate speech in a chosen speaker's style (.npz, FaceFormer .npy, an OBJ folder, or glTF/GLB)."""
    from talkface import workflows

    inputs = workflows.expand_audio_inputs(audio)
    results = workflows.animate_files(inputs, checkpoint=checkpoint, style=style, out=out, subject=subject,
                                      template=template, device=device, overwrite=overwrite, render=render,
                                      fmt=fmt)
    failed = 0
    for r in results:
        if r.error is None:
            out_paths = ", ".join(str(p) for p in r.outputs)
            console.print(f"[green]ok[/] {r.audio.name} → {out_paths}")
        else:
            failed += 1
            err.print(f"[bold red]error:[/] {r.error}", highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)


# --------------------------------------------------------------------------------------------- render
def _render_config(size: int, background: str, msaa: bool, shading: str = "fast") -> Any:
    from talkface.render import RenderConfig, parse_background

    return RenderConfig(size=size, background=parse_background(background), msaa=msaa, shading=shading)


@app.command()
@handle_errors
def render(
    animation: InFile,
    out: Annotated[Path, typer.Option(resolve_path=True, help="Output .mp4.")],
    audio: Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="Audio to mux in.")] = None,
    template: Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="Mesh with the faces (for .npy input).")] = None,
    fps: Annotated[float | None, typer.Option(help="Frame rate (required for .npy).")] = None,
    size: Annotated[int, typer.Option(help="Image size in pixels (square).")] = 800,
    background: Annotated[str, typer.Option(help="black, white or #rrggbb.")] = "black",
    compare: Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="Ground truth, shown side by side.")] = None,
    error_map: Annotated[bool, typer.Option("--error-map", help="Colour by per-vertex error vs --compare (mm).")] = False,
    msaa: Annotated[bool, typer.Option(help="Anti-aliasing (slower on software GL).")] = False,
    shading: Annotated[str, typer.Option(help="fast (pyrender's lighting per vertex, ~6x cheaper) or pbr "
                                              "(pyrender's per-pixel shader, pixel-exact with VOCA/FaceFormer).")]
    = "fast",
    overwrite: OverwriteOpt = False,
) -> None:
    """Render an animation offscreen to an H.264 mp4 with the audio muxed in."""
    from talkface import workflows
    from talkface.render import render_video

    if fps is not None and fps <= 0:
        raise typer.BadParameter(f"--fps must be > 0, got {fps}", param_hint="--fps")
    if error_map and compare is None:
        raise typer.BadParameter("--error-map needs --compare GT", param_hint="--error-map")
    config = _render_config(size, background, msaa, shading)
    anim = workflows.load_animation_for_render(animation, template=template, fps=fps)
    gt = workflows.load_animation_for_render(compare, template=template, fps=anim.fps) if compare else None
    with progress_bar("render", total=anim.num_frames) as update:
        path = render_video(anim, out, audio=audio, config=config, compare=gt, error_map=error_map,
                            on_progress=lambda done, total: update(completed=done, total=total), overwrite=overwrite)
    console.print(f"wrote {path}")


# --------------------------------------------------------------------------------------------- evaluate / info
@app.command()
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
) -> None:
    """Score predictions: LVE (m², ×1e-5), LVE (mm, sqrt), FDD and MVE; mean over styles and best style."""
    from talkface.evaluate import evaluation as ev

    if (checkpoint is None) == (pred is None):
        raise typer.BadParameter("give exactly one of --checkpoint or --pred", param_hint="--checkpoint/--pred")
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
    if report is not None:
        import json

        from talkface.io.fileio import write_text_atomic

        write_text_atomic(report, json.dumps(rep, indent=2))
        console.print(f"report: {report}")
    csv_path = csv if csv is not None else (report.with_suffix(".csv") if report is not None else None)
    if csv_path is not None:
        console.print(f"per-sequence CSV: {ev.write_csv(csv_path, result)}")
    if plot is not None:
        console.print(f"plot: {ev.plot_lip_errors(plot, result, data, plot_clip)}")


@app.command()
@handle_errors
def info(checkpoint: Annotated[Path, typer.Argument(exists=True, resolve_path=True, help="Run folder or .safetensors.")]) -> None:
    """Show a checkpoint's config, speakers, fps and size."""
    from talkface.model.checkpoint import read_checkpoint_meta

    meta = read_checkpoint_meta(checkpoint)
    table = Table(title=str(checkpoint), show_header=False)
    for key, value in meta.items():
        if key == "encoder_config" and isinstance(value, dict):
            value = ", ".join(f"{k}={value.get(k)}" for k in ("hidden_size", "num_hidden_layers", "conv_dim"))
        table.add_row(key, str(value))
    console.print(table)


@app.command("import-faceformer")
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
    path = import_faceformer(pth, preset=preset, speakers=names, out=out, overwrite=overwrite)
    console.print(f"wrote {path}; animate with --checkpoint {path}")


# --------------------------------------------------------------------------------------------- demo
@app.command()
@handle_errors
def demo(
    out: Annotated[Path, typer.Option(resolve_path=True, help="Folder for everything the demo writes.")] = Path("demo-output"),
    epochs: Annotated[int | None, typer.Option(min=1, help="Training epochs (default: the demo's recipe).")] = None,
) -> None:
    """Run the whole pipeline offline on a synthetic corpus: synthesise → prepare → train → animate → render.

    Writes raw/, data/, run/, the animation and demo.mp4 inside --out, replacing a previous demo's outputs.
    """
    from talkface.demo import run_demo

    with progress_bar("demo") as update:
        def on_progress(stage: str, done: int | None = None, total: int | None = None) -> None:
            update(description=stage, completed=done, total=total)

        result = run_demo(out, epochs=epochs, on_progress=on_progress)
    table = Table(title="talkface demo")
    table.add_column("")
    table.add_column("")
    for key, value in result.summary().items():
        table.add_row(key, value)
    console.print(table)
    console.print(f"[bold green]video with sound:[/] {result.video}")


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except TalkfaceError as e:  # raised outside a command (callbacks); commands handle their own
        if os.environ.get("TALKFACE_DEBUG"):
            raise
        err.print(f"[bold red]error:[/] {e}", highlight=False)
        sys.exit(1)
