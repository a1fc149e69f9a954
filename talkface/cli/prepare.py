"""``talkface prepare SOURCE``: convert a dataset into talkface's training format (``talkface.data``)."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from talkface.cli.common import InDir, OverwriteOpt, SeedOpt, console, handle_errors, positive_flag, progress_bar
from talkface.errors import InterruptedRun
from talkface.io.fileio import check_paths

prepare_app = typer.Typer(help="Convert a dataset into talkface's training format.", no_args_is_help=True)

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


def _check_prepare_paths(raw_dir: Path, out_dir: Path, **inputs: Path | None) -> None:
    check_paths({"RAW_DIR": raw_dir, **{f"--{k}": v for k, v in inputs.items()}}, {"OUT_DIR": out_dir},
                output_folders=("OUT_DIR",))


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


SplitsOpt = Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="TOML split file.")]
FacesOpt = Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="Topology mesh (e.g. FLAME_sample.ply).")]


@prepare_app.command("vocaset")
@handle_errors
def prepare_vocaset_cmd(
    raw_dir: InDir,
    out_dir: Annotated[Path, typer.Argument(resolve_path=True, help="Output folder.")],
    fps: Annotated[int, typer.Option(help="30 (every second 60 fps frame, as FaceFormer) or 60.")] = 30,
    splits: SplitsOpt = None,
    faces: FacesOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """VOCASET raw training data (data_verts.npy, raw_audio_fixed.pkl, templates.pkl, subj_seq_to_idx.pkl)."""
    from talkface.data import prepare_vocaset

    if fps not in (30, 60):
        raise typer.BadParameter(f"--fps must be 30 or 60, got {fps}", param_hint="--fps")
    _check_prepare_paths(raw_dir, out_dir, splits=splits, faces=faces)
    with _prepare_session("vocaset", raw_dir, out_dir, fps=fps, splits=splits, faces=faces) as on_progress:
        report = prepare_vocaset(raw_dir, out_dir, fps=fps, splits=splits, faces=faces, on_progress=on_progress,
                                 overwrite=overwrite)
    _prepare_summary(report)


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

    _check_prepare_paths(raw_dir, out_dir, splits=splits, faces=faces)
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

    _check_prepare_paths(raw_dir, out_dir, splits=splits, faces=faces)
    with _prepare_session("biwi", raw_dir, out_dir, splits=splits, faces=faces) as on_progress:
        report = prepare_biwi(raw_dir, out_dir, splits=splits, faces=faces, on_progress=on_progress,
                              overwrite=overwrite)
    _prepare_summary(report)


@prepare_app.command("folder")
@handle_errors
def prepare_folder_cmd(
    raw_dir: InDir,
    out_dir: Annotated[Path, typer.Argument(resolve_path=True, help="Output folder.")],
    fps: Annotated[float, typer.Option(callback=positive_flag, help="Frame rate of your motion files.")],
    source_fps: Annotated[float | None, typer.Option(callback=positive_flag,
                                                     help="Rate of the files when subsampling to --fps.")] = None,
    templates: Annotated[Path | None, typer.Option(exists=True, file_okay=False, help="Folder of <speaker> meshes.")] = None,
    splits: SplitsOpt = None,
    faces: FacesOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Your own data: <speaker>_<sentence>.wav with matching .npy (or a folder of OBJ/PLY frames)."""
    from talkface.data import prepare_folder

    _check_prepare_paths(raw_dir, out_dir, splits=splits, faces=faces, templates=templates)
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
    seed: SeedOpt = 0,
) -> None:
    """Generate a synthetic corpus (procedural head, espeak-ng speech) in VOCASET's raw format."""
    from talkface.synthetic import write_synthetic_vocaset

    with progress_bar("synthesise") as update:
        report = write_synthetic_vocaset(out_dir, num_speakers=speakers, num_sentences=sentences, seed=seed,
                                         on_progress=lambda done, total, name: update(completed=done, total=total))
    console.print(f"wrote {report.clips} clips of {len(report.speakers)} speakers ({report.seconds:.0f} s of speech) "
              f"to {report.out_dir}; next: talkface prepare vocaset {report.out_dir} DATA "
              f"--splits {Path(report.out_dir) / 'splits.toml'}")
