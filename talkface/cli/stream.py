"""``talkface stream``: live speech in (a file or raw PCM on stdin), final mesh frames out with bounded latency.

Parses, validates and delegates to ``talkface.live`` (the run loop and its frame sinks). Every check
that does not depend on the audio comes before stdin is read: with a live microphone it never closes.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from talkface.cli import common
from talkface.cli.common import OverwriteOpt, StepTimer, ThreadsOpt, VerboseOpt, device_flag, err, handle_errors
from talkface.cli.rig import BoundsOpt, FitRegionOpt, L2Opt, RigOpt, SmoothOpt, SymmetryOpt, solve_options
from talkface.config import check_number
from talkface.errors import ConfigError, StreamError
from talkface.io.fileio import check_paths

# flag ranges (ms unless named): beyond these a value is a typo, not a setting
LOOKAHEAD_MAX_MS = 600_000.0  # 10 min: past the end of any stream's audio it only delays the frames
HOP_MAX_MS = 10_000.0
CONTEXT_MAX_MS = 600_000.0
MEMORY_MAX_S = 3_600.0


def _source_flag(value: str) -> str:
    """SOURCE is ``-`` or an existing file: a missing one is a usage error, as ``animate``'s AUDIO is."""
    if value != "-" and not Path(value).exists():
        raise typer.BadParameter(f"File '{value}' does not exist.")
    if value != "-" and Path(value).is_dir():
        raise typer.BadParameter(f"File '{value}' is a directory.")
    return value


def _range(low: float, high: float, note: str = "") -> Any:
    """A typer callback: a finite number in [low, high]."""

    def callback(param: typer.CallbackParam, value: float) -> float:
        name = f"--{(param.name or '').replace('_', '-')}"
        try:
            return check_number(value, name, low=low, high=high)
        except ConfigError as e:
            raise typer.BadParameter(f"{e}{note}") from None

    return callback


def _hop_flag(value: str) -> str:
    if value == "auto":
        return value
    try:
        check_number(float(value), "--hop-ms", low=0, low_open=True, high=HOP_MAX_MS)
    except (ValueError, ConfigError):
        raise typer.BadParameter(f"--hop-ms must be a number of ms or 'auto' (ms in (0, {HOP_MAX_MS:g}]), got {value!r}",
                                 param_hint="--hop-ms") from None
    return value


@handle_errors
def stream(
    source: Annotated[str, typer.Argument(callback=_source_flag,
                                          help="Audio file, or - for raw 16 kHz mono s16le PCM on stdin.")],
    checkpoint: Annotated[Path, typer.Option(exists=True, resolve_path=True, help="Run folder or .safetensors.")],
    style: Annotated[str, typer.Option(help="Training speaker or a mix A:0.7,B:0.3.")],
    frames: Annotated[str | None, typer.Option(help="- (stdout), FILE or a named pipe: each frame as soon as it is "
                                                    "final (uint32 LE index, then V×3 float32 LE metres).")] = None,
    out: Annotated[Path | None, typer.Option(resolve_path=True, help="Whole animation at the end (or on Ctrl-C): "
                                                                     ".npz, .npy, .glb or .gltf.")] = None,
    lookahead_ms: Annotated[float, typer.Option(callback=_range(0, LOOKAHEAD_MAX_MS),
                                                help="Future audio each frame waits for (0-600000).")] = 200.0,
    hop_ms: Annotated[str, typer.Option(callback=_hop_flag, help="Least new audio per encoder pass, in ms (0-10000]; "
                                        "auto = the fewest frames that last 1.5x a pass's compute time (measured "
                                        "at start).")] = "auto",
    context_ms: Annotated[float, typer.Option(callback=_range(0, CONTEXT_MAX_MS),
                                              help="Past audio the encoder attends to (0-600000).")] = 3000.0,
    memory_s: Annotated[float, typer.Option(callback=_range(0, MEMORY_MAX_S, "; 0 means unbounded"),
                                            help="Decoder memory in seconds (bounds a long stream's cost); "
                                                 "0 = unbounded.")] = 20.0,
    realtime: Annotated[bool, typer.Option("--realtime", help="Pace a file at 1× speed, as if it were live.")]
    = False,
    subject: Annotated[str | None, typer.Option(help="Whose neutral face to animate (default: the style's).")] = None,
    template: Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="Any mesh with the model's vertex count.")] = None,
    device: Annotated[str, typer.Option("--device", callback=device_flag, help="cpu (default), auto, cuda or cuda:N.")]
    = "cpu",
    threads: ThreadsOpt = None,
    verbose: VerboseOpt = False,
    rig: RigOpt = None,
    weights: Annotated[str | None, typer.Option(help="With --rig: - (stdout), FILE or a named pipe, each final frame's weights "
                                                     "(bin: uint32 LE index + K float32 LE; csv: a line).")] = None,
    weights_format: Annotated[str, typer.Option(help="bin or csv.")] = "bin",
    livelink: Annotated[str | None, typer.Option(help="With --rig (ARKit names): send Live Link Face packets to "
                                                      "HOST:PORT (Unreal listens on 11111), e.g. 127.0.0.1:11111.")]
    = None,
    bounds: BoundsOpt = "0,1",
    l2: L2Opt = 0.0,
    smooth: SmoothOpt = 0.0,
    symmetry: SymmetryOpt = 0.0,
    fit_region: FitRegionOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Animate live speech: audio in as it arrives, final mesh frames out with bounded latency.

    Frame i is the face at time i/fps; the frame count is animate's for the same audio. Logs go to
    stderr. Ctrl-C or SIGTERM ends the stream: --out gets the frames so far (exit 130 / 143).
    """
    started = time.perf_counter()
    step = StepTimer(verbose)
    if frames is None and out is None and weights is None and livelink is None:
        raise typer.BadParameter("give --frames - (or FILE), --out ANIM.npz, or with --rig --weights/--livelink",
                                 param_hint="--frames/--out")
    if realtime and source == "-":
        raise typer.BadParameter("--realtime paces a file; stdin arrives at its own pace", param_hint="--realtime")
    options = _rig_flags(rig, weights, weights_format, livelink, frames, bounds, l2, smooth, symmetry, fit_region)
    frames_file = None if frames in (None, "-") else Path(frames).absolute()
    weights_file = None if weights in (None, "-") else Path(weights).absolute()
    from talkface.io.run_assets import run_reads
    rig_path = None
    if rig is not None:
        from talkface.rig.retargeting import rig_file

        rig_path = rig_file(rig)

    check_paths({"SOURCE": None if source == "-" else Path(source), "--checkpoint": run_reads(checkpoint),
                 "--template": template, "--rig": rig_path},
                {"--out": out, "--frames": frames_file, "--weights": weights_file}, overwrite=overwrite)

    # stdin is read from here on, while torch and the model load (~2 s): a pipe holds 64 KiB, 2 s of 16 kHz
    # audio, and a microphone writing into a full pipe loses audio (arecord: "overrun")
    from talkface.io.feed import AudioFeed, pcm_producer
    from talkface.io.frames import PcmDecoder

    decoder = PcmDecoder()
    feed = AudioFeed(pcm_producer(sys.stdin.buffer.fileno(), decoder)) if source == "-" else None

    # before torch loads: OpenMP workers that spin next to busy processes stalled passes by ~0.5 s
    common.use_threads(threads)
    from talkface import live
    from talkface.inference.stream import StreamConfig
    from talkface.io.audio import load_audio
    from talkface.io.feed import file_producer
    from talkface.io.frames import record_size

    step("import torch and talkface")

    live.check_stream_outputs(out, frames_file, overwrite=overwrite, weights=weights_file)
    hop = None if hop_ms == "auto" else float(hop_ms)
    config = StreamConfig(lookahead_ms=lookahead_ms, hop_ms=hop or 0.0, context_ms=context_ms,
                          memory_s=memory_s if memory_s > 0 else None)
    audio = None if source == "-" else load_audio(Path(source))  # animate's checks: unreadable, silent, short
    setup = live.open_stream(checkpoint, style, subject=subject, template=template, device=device, config=config,
                             hop_ms=hop, on_step=step)
    sinks: list[Any] = []  # the records first: --out then holds no frame its reader was not sent
    if frames == "-":
        sinks.append(live.RecordSink(sys.stdout.buffer))
    elif frames_file is not None:
        sinks.append(live.RecordSink.open(frames_file))
    if rig is not None:
        sinks.append(_rig_sink(rig, setup, options, fit_region, weights, weights_file, weights_format, livelink))
    if out is not None:
        sinks.append(live.AnimationSink(out, setup, overwrite=overwrite, source=source, checkpoint=checkpoint))
    producer = feed if feed is not None else file_producer(audio, realtime=realtime)
    err.print(f"streaming {source} → {frames or '-'}{f' and {out}' if out else ''}: {setup.fps:g} fps, "
              f"{setup.num_vertices} vertices ({record_size(setup.num_vertices)} bytes per frame record), "
              f"look-ahead {lookahead_ms:g} ms, hop {setup.hop_ms:.0f} ms (a pass took {setup.pass_seconds * 1e3:.0f} "
              f"ms); ready {time.perf_counter() - started:.1f} s after start", highlight=False)
    last_note = [time.perf_counter()]

    def on_behind(seconds: float) -> None:
        now = time.perf_counter()
        if now - last_note[0] > 2.0:
            last_note[0] = now
            err.print(f"[yellow]behind:[/] {seconds:.2f} s of audio was waiting (this machine computes slower than "
                      "the audio arrives); frames stay in order, none dropped", highlight=False)

    try:
        report = live.run_live(setup, producer, sinks, source="stdin" if audio is None else source,
                               checkpoint=checkpoint, behind_s=0.5 if (audio is None or realtime) else float("inf"),
                               on_behind=on_behind)
    except StreamError:
        if frames == "-":
            _silence_stdout()  # the reader is gone: no "Exception ignored" when Python flushes stdout at exit
        raise
    if decoder.pending:
        err.print("[yellow]note:[/] stdin closed in the middle of a sample (an odd byte count); the last byte was "
                  "ignored", highlight=False)
    note = (f"; fell behind {report.behind_events}× (worst backlog {report.max_backlog_s:.2f} s)"
            if report.behind_events else "")
    saved = "".join(f"; wrote {s.count} frames to {s.written}" for s in sinks
                    if isinstance(s, live.AnimationSink) and s.written)
    err.print(f"done: {report.samples / 16000:.2f} s of audio → {report.frames} frames in "
              f"{time.perf_counter() - started:.1f} s{note}{saved}", highlight=False)


def _rig_flags(rig: str | None, weights: str | None, weights_format: str, livelink: str | None, frames: str | None,
               bounds: str, l2: float, smooth: float, symmetry: float, fit_region: str | None) -> Any:
    """Check the rig flags before anything is loaded or read (stdin may never close); the solve options."""
    if rig is None:
        if weights is not None or livelink is not None:
            raise typer.BadParameter("--weights and --livelink send rig weights: give --rig RIG", param_hint="--rig")
        if (bounds, l2, smooth, symmetry, fit_region) != ("0,1", 0.0, 0.0, 0.0, None):
            raise typer.BadParameter("--bounds, --l2, --smooth, --symmetry and --fit-region need --rig RIG",
                                     param_hint="--rig")
        return None
    if weights is None and livelink is None:
        raise typer.BadParameter("--rig needs --weights - (or FILE) and/or --livelink HOST:PORT", param_hint="--rig")
    if weights == "-" and frames == "-":
        raise typer.BadParameter("--frames and --weights cannot both go to stdout; send one to a FILE",
                                 param_hint="--weights")
    if weights_format not in ("bin", "csv"):
        raise typer.BadParameter(f"--weights-format must be bin or csv, got {weights_format!r}",
                                 param_hint="--weights-format")
    if livelink is not None:
        from talkface.io.blendshapes import parse_address

        parse_address(livelink, flag="--livelink")
    return solve_options(bounds, l2, smooth, symmetry)


def _rig_sink(rig: str, setup: Any, options: Any, fit_region: str | None, weights: str | None,
              weights_file: Path | None, weights_format: str, livelink: str | None) -> Any:
    """Read the rig for the model's topology and build the sink that solves and sends each frame's weights."""
    from talkface.io.blendshapes import LiveLinkSender
    from talkface.rig import retargeting
    from talkface.rig.sinks import LiveLinkOut, RigSink, WeightLines, WeightRecords, open_weight_file

    rig_obj = retargeting.resolve_rig(rig, num_vertices=setup.num_vertices, reference=setup.template)
    if livelink is not None:
        retargeting.check_livelink_names(rig_obj, "--livelink")
    prepared = retargeting.setup(rig_obj, options, fit_region)
    for warning in prepared.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    consumers: list[Any] = []
    if weights == "-":
        consumers.append(WeightLines(sys.stdout, rig_obj.names, setup.fps) if weights_format == "csv"
                         else WeightRecords(sys.stdout.buffer))
    elif weights_file is not None:
        consumers.append(open_weight_file(weights_file, weights_format, rig_obj.names, setup.fps))
    if livelink is not None:
        def on_error(error: OSError) -> None:
            err.print(f"[yellow]livelink:[/] sending to {livelink} failed ({error.strerror or error}); the stream goes "
                      "on and keeps writing its other outputs (this is said once)", highlight=False)

        consumers.append(LiveLinkOut(LiveLinkSender(livelink, rig_obj.names, setup.fps, on_error=on_error)))
    err.print(f"rig {rig_obj.source}: {rig_obj.num_targets} weights per frame"
              f"{f' ({weights_format} records: uint32 index + {rig_obj.num_targets} float32)' if weights else ''}"
              f"{f', Live Link Face packets to {livelink}' if livelink else ''}; order: {', '.join(rig_obj.names)}",
              highlight=False, soft_wrap=True)
    return RigSink(prepared, setup.template, consumers)


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
