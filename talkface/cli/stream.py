"""``talkface stream``: live speech in (a file or raw PCM on stdin), final mesh frames out with bounded latency."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from talkface.cli.common import OverwriteOpt, device_flag, err, finite_flag, handle_errors
from talkface.config import check_number
from talkface.io.fileio import check_paths


def _source_flag(value: str) -> str:
    """SOURCE is ``-`` or an existing file: a missing one is a usage error, as ``animate``'s AUDIO is."""
    if value != "-" and not Path(value).exists():
        raise typer.BadParameter(f"File '{value}' does not exist.")
    if value != "-" and Path(value).is_dir():
        raise typer.BadParameter(f"File '{value}' is a directory.")
    return value


class _Terminated(Exception):
    """SIGTERM, raised in the main thread so that ``stream`` can save what it has."""


@handle_errors
def stream(
    source: Annotated[str, typer.Argument(callback=_source_flag,
                                          help="Audio file, or - for raw 16 kHz mono s16le PCM on stdin.")],
    checkpoint: Annotated[Path, typer.Option(exists=True, resolve_path=True, help="Run folder or .safetensors.")],
    style: Annotated[str, typer.Option(help="Training speaker or a mix A:0.7,B:0.3.")],
    frames: Annotated[str | None, typer.Option(help="- (stdout) or FILE: each frame as soon as it is final "
                                                    "(uint32 LE index, then V×3 float32 LE metres).")] = None,
    out: Annotated[Path | None, typer.Option(resolve_path=True, help="Whole animation at the end (or on Ctrl-C): "
                                                                     ".npz, .npy, .glb or .gltf.")] = None,
    lookahead_ms: Annotated[float, typer.Option(callback=finite_flag, help="Future audio each frame waits for.")] = 200.0,
    hop_ms: Annotated[str, typer.Option(help="Least new audio per encoder pass, in ms; auto = the fewest frames "
                                             "that last 1.5x a pass's compute time (measured at start).")] = "auto",
    context_ms: Annotated[float, typer.Option(callback=finite_flag, help="Past audio the encoder attends to.")] = 3000.0,
    memory_s: Annotated[float, typer.Option(callback=finite_flag, help="Decoder memory in seconds (bounds a long stream's cost); "
                                                 "0 = unbounded.")] = 20.0,
    realtime: Annotated[bool, typer.Option("--realtime", help="Pace a file at 1× speed, as if it were live.")]
    = False,
    subject: Annotated[str | None, typer.Option(help="Whose neutral face to animate (default: the style's).")] = None,
    template: Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="Any mesh with the model's vertex count.")] = None,
    device: Annotated[str, typer.Option("--device", callback=device_flag, help="cpu (default), auto, cuda or cuda:N.")]
    = "cpu",
    overwrite: OverwriteOpt = False,
) -> None:
    """Animate live speech: audio in as it arrives, final mesh frames out with bounded latency.

    Frame i is the face at time i/fps; the frame count is animate's for the same audio. Logs go to
    stderr. Ctrl-C or SIGTERM ends the stream: --out gets the frames so far (exit 130 / 143).
    """
    import signal
    import time

    import numpy as np

    from talkface import workflows
    from talkface.errors import ConfigError, StreamError
    from talkface.inference.generate import make_animation
    from talkface.inference.stream import StreamConfig
    from talkface.io.audio import load_audio
    from talkface.io.fileio import check_output_path
    from talkface.io.frames import PcmDecoder, encode_frames, record_size

    if frames is None and out is None:
        raise typer.BadParameter("give --frames - (or FILE) and/or --out ANIM.npz", param_hint="--frames/--out")
    if out is not None:
        if out.suffix.lower() not in workflows.STREAM_SUFFIXES:
            raise ConfigError(f"--out {out}: unknown output format {out.suffix!r} for stream; use "
                              f"{', '.join(workflows.STREAM_SUFFIXES)}")
        check_output_path(out, overwrite=overwrite)
    if frames not in (None, "-"):
        check_output_path(Path(frames), overwrite=overwrite)
    check_paths({"SOURCE": None if source == "-" else Path(source), "--checkpoint": checkpoint, "--template": template},
                {"--out": out, "--frames": None if frames in (None, "-") else Path(frames)})
    try:
        hop = None if hop_ms == "auto" else check_number(float(hop_ms), "--hop-ms", low=0, low_open=True)
    except (ValueError, ConfigError):
        raise typer.BadParameter(f"--hop-ms must be a number of ms or 'auto', got {hop_ms!r}",
                                 param_hint="--hop-ms") from None
    config = StreamConfig(lookahead_ms=lookahead_ms, hop_ms=hop or 0.0, context_ms=context_ms,
                          memory_s=memory_s if memory_s > 0 else None)
    audio = None
    if source != "-":
        audio = load_audio(Path(source))  # animate's checks: missing, unreadable, truncated, silent, short
    elif realtime:
        raise typer.BadParameter("--realtime paces a file; stdin arrives at its own pace", param_hint="--realtime")
    setup = workflows.open_stream(checkpoint, style, subject=subject, template=template, device=device,
                                  config=config, hop_ms=hop)
    sink = sys.stdout.buffer if frames == "-" else (open(frames, "wb") if frames else None)  # noqa: SIM115
    kept: list[np.ndarray] = []
    started = time.perf_counter()
    last_note = [started]

    def on_frames(first: int, vertices: np.ndarray) -> None:
        if sink is not None:
            sink.write(encode_frames(first, vertices))
            sink.flush()
        if out is not None:
            kept.append(vertices)

    def on_behind(seconds: float) -> None:
        now = time.perf_counter()
        if now - last_note[0] > 2.0:
            last_note[0] = now
            err.print(f"[yellow]behind:[/] {seconds:.2f} s of audio was waiting (this machine computes slower than "
                      "the audio arrives); frames stay in order, none dropped", highlight=False)

    def save(note: str) -> None:
        if out is None:
            return
        vertices = np.concatenate(kept) if kept else np.zeros((0, setup.num_vertices, 3), np.float32)
        if vertices.shape[0] == 0:
            err.print(f"{note}: no frame was final yet; {out} not written", highlight=False)
            return
        anim = make_animation(vertices, setup.fps, setup.faces, style=setup.style, subject=setup.subject,
                              audio=source, checkpoint=str(checkpoint))
        path = workflows.write_animation_file(out, anim, overwrite=overwrite, base=setup.template)
        err.print(f"{note}: wrote {vertices.shape[0]} frames to {path}", highlight=False)

    def on_term(signum: int, frame: Any) -> None:
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, on_term)
    decoder = PcmDecoder()
    producer = (workflows.pcm_producer(sys.stdin.buffer.fileno(), decoder) if audio is None
                else workflows.file_producer(audio, realtime=realtime))
    report = workflows.StreamReport()
    err.print(f"streaming {source} → {frames or '-'}{f' and {out}' if out else ''}: {setup.fps:g} fps, "
              f"{setup.num_vertices} vertices ({record_size(setup.num_vertices)} bytes per frame record), "
              f"look-ahead {lookahead_ms:g} ms, hop {setup.hop_ms:.0f} ms (a pass took {setup.pass_seconds * 1e3:.0f} "
              "ms)", highlight=False)
    try:
        feed = workflows.AudioFeed(producer)
        workflows.run_stream(setup.streamer, feed, on_frames, source="stdin" if audio is None else source,
                             checkpoint=checkpoint, behind_s=0.5 if (audio is None or realtime) else float("inf"),
                             on_behind=on_behind, report=report)
    except (KeyboardInterrupt, _Terminated) as e:
        code = 143 if isinstance(e, _Terminated) else 130
        save(f"interrupted after {setup.streamer.emitted} frames")
        raise typer.Exit(code) from None
    except BrokenPipeError:
        save(f"the frame reader closed stdout after {setup.streamer.emitted} frames")
        raise StreamError("the reader of --frames closed the pipe; stopped streaming") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        if sink is not None and sink is not sys.stdout.buffer:
            sink.close()
    if decoder.pending:
        err.print("[yellow]note:[/] stdin closed in the middle of a sample (an odd byte count); the last byte was "
                  "ignored", highlight=False)
    seconds = report.samples / 16000
    note = (f"; fell behind {report.behind_events}× (worst backlog {report.max_backlog_s:.2f} s)"
            if report.behind_events else "")
    err.print(f"done: {seconds:.2f} s of audio → {setup.streamer.emitted} frames in "
              f"{time.perf_counter() - started:.1f} s{note}", highlight=False)
    save("done")
