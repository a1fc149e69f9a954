"""Live streaming behind ``talkface stream`` (and any other front end): audio feeds in, frame sinks out.

The run loop (``run_live``) pushes audio pieces through a ``Streamer`` and hands every frame that
became final to a list of *frame sinks*. A sink has two methods, ``write(first, vertices)`` and
``close()`` (plus ``abort()`` for a failed stream), so new consumers (the frame-record wire format, the
whole animation saved at the end, rig weights, a network socket, a browser viewer) plug in without
touching the loop. Audio comes from an ``AudioFeed`` (``talkface.io.feed``): a producer thread (stdin
PCM, a file paced or not, a browser socket) whose waiting pieces the loop takes all at once, so a
consumer that fell behind catches up in one step.

Ctrl-C and SIGTERM (which the CLI turns into ``KeyboardInterrupt``) and a frame reader that went away
end the stream: the sinks are closed (``--out`` gets the frames so far) and ``InterruptedRun`` /
``StreamError`` say what was kept. A refused input (silent, too short, NaN frames) aborts the sinks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np

from talkface.errors import ConfigError, InterruptedRun, OutputError, StreamError
from talkface.inference.generate import check_finite_output, choose_template, make_animation, parse_style
from talkface.inference.stream import StreamConfig, Streamer, auto_hop_ms, measure_pass_seconds
from talkface.io.audio import MIN_SAMPLES, check_not_silent, check_waveform
from talkface.io.feed import AudioFeed, Producer
from talkface.io.fileio import check_output_path, check_writable_folder, special_file_kind
from talkface.io.frames import encode_frames, write_records
from talkface.io.run_assets import load_run_assets
from talkface.model.checkpoint import load_checkpoint
from talkface.runtime import deferred_interrupt, resolve_device
from talkface.workflows import write_animation_file

STREAM_SUFFIXES = (".npz", ".npy", ".glb", ".gltf")  # written atomically at the end (not an OBJ folder)


# --------------------------------------------------------------------------------------------- set-up


@dataclass
class StreamSetup:
    """A ready ``Streamer`` and what its sinks need: rate, vertex count, template, faces, names."""

    streamer: Any
    hop_ms: float
    pass_seconds: float
    fps: float
    num_vertices: int
    template: np.ndarray
    faces: np.ndarray | None
    style: str
    subject: str


def open_stream(checkpoint: Path, style: str, *, subject: str | None = None, template: Path | None = None,
                device: str = "cpu", config: StreamConfig | None = None, hop_ms: float | None = None,
                on_step: Callable[[str], None] | None = None) -> StreamSetup:
    """Load the model and pick style and template exactly as ``animate_files`` does; one style only.

    ``hop_ms`` None picks the hop from a timed probe pass (``auto_hop_ms``); else it replaces
    ``config.hop_ms``. ``on_step(name)`` is called as each start-up step ends (``--verbose``).

    Raises:
        ConfigError, CheckpointError, TemplateError: as ``animate``; also ``--style all`` (several styles).
    """
    step = on_step or (lambda name: None)
    device = resolve_device(device)
    model, _ = load_checkpoint(checkpoint, device=device)
    step("load the model")
    assets = load_run_assets(checkpoint if checkpoint.is_dir() else checkpoint.parent)
    styles = parse_style(style, model.config.speakers)
    if len(styles) != 1:
        raise ConfigError(f"--style {style!r} names {len(styles)} styles; stream animates one: give one training "
                          f"speaker or a mix A:0.7,B:0.3 ({', '.join(model.config.speakers)})")
    name, tmpl, faces = choose_template(assets.templates, subject=subject, style=styles[0],
                                        speakers=model.config.speakers, template_file=template,
                                        num_vertices=model.config.num_vertices)
    step("read the templates")
    # a probe stream warms the ops up (first calls are slow) and times a pass for an automatic hop
    config = config or StreamConfig()
    pass_seconds = measure_pass_seconds(model, tmpl, styles[0].weights, config)
    step("time a pass (auto hop)" if hop_ms is None else "warm up")
    if hop_ms is None:
        frame_ms = 1000.0 / (model.audio_encoder.feature_rate if model.config.audio_frames_per_motion_frame
                             else model.config.fps)
        hop_ms = auto_hop_ms(pass_seconds, frame_ms)
    config = replace(config, hop_ms=hop_ms)
    streamer = Streamer(model, tmpl, styles[0].weights, config)
    return StreamSetup(streamer, streamer.config.hop_ms, pass_seconds, model.config.fps, model.config.num_vertices,
                       tmpl, faces if faces is not None else assets.faces, styles[0].label, name)


# --------------------------------------------------------------------------------------------- frames out


class FrameSink(Protocol):
    """A consumer of final frames.

    ``write(first, vertices)``: (n, V, 3) float32 metres, frame indices ``first .. first + n - 1``,
    called in order, no frame skipped. ``close()``: the stream ended, normally or stopped by the user
    (Ctrl-C, SIGTERM, a reader gone): finish the output with what was written. ``abort()``: the input
    was refused (silent, too short, NaN frames): drop what a failed command must not leave behind.
    A sink that lost its reader raises ``BrokenPipeError`` from ``write``.
    """

    def write(self, first: int, vertices: np.ndarray) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class RecordSink:
    """Frame records (``talkface.io.frames``) to a binary stream, flushed per batch (``--frames``).

    Args:
        stream: an open binary stream (stdout's buffer or a file).
        owned: close ``stream`` on close/abort (a file this sink opened).
    """

    def __init__(self, stream: BinaryIO, *, owned: bool = False) -> None:
        self.stream, self.owned = stream, owned

    @classmethod
    def open(cls, path: Path) -> RecordSink:
        """A sink writing a new file at ``path`` (checked by ``check_stream_outputs``), folders created.

        Raises:
            OutputError: the file or its folder cannot be created.
        """
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return cls(open(path, "wb"), owned=True)  # noqa: SIM115 - closed by close()/abort()
        except OSError as e:
            raise OutputError(f"--frames {path}: cannot create the file ({e.strerror or e}); choose another "
                              "path") from e

    def write(self, first: int, vertices: np.ndarray) -> None:
        write_records(self.stream, encode_frames(first, vertices))

    def close(self) -> None:
        if self.owned:
            self.stream.close()

    abort = close  # the records already left cannot be taken back; a reader saw them live


class AnimationSink:
    """Keeps every frame; ``close()`` writes the whole animation to ``path`` atomically (``--out``).

    Nothing is written when no frame was final yet (``written`` stays None) or on ``abort()``.
    """

    def __init__(self, path: Path, setup: StreamSetup, *, overwrite: bool, source: str, checkpoint: Path) -> None:
        self.path, self.setup, self.overwrite = path, setup, overwrite
        self.meta = {"style": setup.style, "subject": setup.subject, "audio": source, "checkpoint": str(checkpoint)}
        self.kept: list[np.ndarray] = []
        self.count = 0
        self.written: Path | None = None

    def write(self, first: int, vertices: np.ndarray) -> None:
        self.kept.append(vertices)
        self.count += vertices.shape[0]

    def close(self) -> None:
        if not self.count:
            return
        anim = make_animation(np.concatenate(self.kept), self.setup.fps, self.setup.faces,
                              neutral=self.setup.template, **self.meta)
        self.written = write_animation_file(self.path, anim, overwrite=self.overwrite, base=self.setup.template)

    def abort(self) -> None:
        self.kept.clear()


# --------------------------------------------------------------------------------------------- the run loop


@dataclass
class StreamReport:
    """What a stream did: audio heard, frames made, the worst backlog, how it ended."""

    samples: int = 0
    frames: int = 0
    max_backlog_s: float = 0.0
    behind_events: int = 0
    first_frame_s: float | None = None  # seconds from the first audio piece to the first frame
    stopped: str | None = None  # why the stream stopped early (None: the input ended)


def run_stream(streamer: Streamer, feed: AudioFeed, on_frames: Callable[[int, np.ndarray], None], *, source: str,
               behind_s: float = 0.5, on_behind: Callable[[float], None] | None = None,
               report: StreamReport | None = None, checkpoint: Any = "the checkpoint") -> StreamReport:
    """Push the feed's audio through ``streamer``; ``on_frames(first_index, (n, V, 3))`` as frames become final.

    A step that takes more than ``behind_s`` of waiting audio means the machine fell behind:
    ``on_behind(seconds)`` is called, and the frames still come out in order, none dropped. Before
    the first frame, a backlog is pushed in two parts: just enough audio for the first frames, then the
    rest (``Streamer.first_frames_samples``), so the first frames do not wait for the whole backlog.
    At the end the input is checked as ``animate`` checks a file (too short, digital silence). Frames
    are checked as ``animate`` checks them (``check_finite_output``) before ``on_frames`` sees them.

    Raises:
        AudioError: too short or silent input (after the frames already streamed).
        CheckpointError: NaN/inf frames (``checkpoint`` is named in the message).
    """
    report = report or StreamReport()
    head = np.zeros(0, np.float32)
    heard = False
    began = None
    for samples in feed:
        began = began or time.perf_counter()
        if head.size < MIN_SAMPLES:
            head = np.concatenate([head, samples[: MIN_SAMPLES - head.size]])
        heard = heard or bool(np.any(samples))
        backlog = feed.last_batch_s if report.samples else 0.0  # the first batch waited for the model to load
        report.max_backlog_s = max(report.max_backlog_s, backlog)
        if backlog > behind_s:
            report.behind_events += 1
            if on_behind is not None:
                on_behind(backlog)
        report.samples = feed.samples
        first = streamer.first_frames_samples() - streamer.total if streamer.emitted == 0 else 0
        # at start, the audio heard while the model loaded: the first frames after a short pass, the rest in one
        for piece in (samples[:first], samples[first:]) if 0 < first < samples.size else (samples,):
            frames = check_finite_output(streamer.push(piece), streamer.model, checkpoint=checkpoint, audio=source)
            if frames.shape[0]:
                if report.first_frame_s is None:
                    report.first_frame_s = time.perf_counter() - began
                on_frames(streamer.emitted - frames.shape[0], frames)
                report.frames = streamer.emitted
    check_waveform(head, source)
    if not heard:
        check_not_silent(head, source)
    frames = check_finite_output(streamer.finish(), streamer.model, checkpoint=checkpoint, audio=source)
    if frames.shape[0]:
        on_frames(streamer.emitted - frames.shape[0], frames)
    report.frames = streamer.emitted
    return report


def run_live(setup: StreamSetup, producer: Producer | AudioFeed,
             sinks: Sequence[FrameSink], *, source: str, checkpoint: Any = "the checkpoint", behind_s: float = 0.5,
             on_behind: Callable[[float], None] | None = None) -> StreamReport:
    """Stream ``producer``'s audio through ``setup.streamer`` into every sink, and close them.

    Args:
        setup: from ``open_stream``.
        producer: see ``AudioFeed`` (``pcm_producer``, ``file_producer``), or an ``AudioFeed`` already
            reading (stdin read from the start, so that a microphone pipe never fills while the model loads).
        sinks: ``FrameSink``s, written in order for each batch of final frames.
        source: how messages name the input (a path, ``stdin``).
        behind_s: a batch of more waiting audio than this calls ``on_behind(seconds)``
            (``inf``: never, for a file read as fast as it computes).

    Returns:
        The ``StreamReport``.

    Raises:
        InterruptedRun: Ctrl-C (or SIGTERM turned into ``KeyboardInterrupt``); the sinks were closed
            first, so ``--out`` holds the frames so far. The message says how many.
        StreamError: a sink's reader closed its pipe; the other sinks were closed.
        AudioError, CheckpointError: refused input; the sinks were aborted.
    """
    report = StreamReport()

    def on_frames(first: int, vertices: np.ndarray) -> None:
        # Ctrl-C/SIGTERM waits until the batch is in every sink: no record cut in two, and --out holds
        # exactly the frames the reader was sent (a second signal stops a stream whose reader hangs).
        gone = None  # a reader that left: the batch still reaches the other sinks (--out keeps it), then we stop
        with deferred_interrupt(second_escapes=True):
            for sink in sinks:
                try:
                    sink.write(first, vertices)
                except BrokenPipeError as e:
                    gone = gone or e
        if gone is not None:
            raise gone

    try:
        feed = producer if isinstance(producer, AudioFeed) else AudioFeed(producer)
        run_stream(setup.streamer, feed, on_frames, source=source, checkpoint=checkpoint,
                   behind_s=behind_s, on_behind=on_behind, report=report)
    except KeyboardInterrupt:
        report.stopped = "interrupted"
    except BrokenPipeError:
        report.stopped = "the frame reader closed its pipe"
    except BaseException:
        for sink in sinks:
            sink.abort()
        raise
    report.frames = setup.streamer.emitted
    _close_all(sinks, report.stopped is not None)
    if report.stopped == "interrupted":
        raise InterruptedRun(f"stopped after {report.frames} frames{_kept(sinks)}")
    if report.stopped is not None:
        raise StreamError(f"the reader of --frames closed the pipe after {report.frames} frames{_kept(sinks)}; "
                          "stopped streaming (keep the reader open until the stream ends)")
    return report


def _close_all(sinks: Sequence[FrameSink], stopped: bool) -> None:
    """Close every sink; when stopping, a reader already gone (another broken pipe) is not an error."""
    for sink in sinks:
        try:
            sink.close()
        except BrokenPipeError:
            if not stopped:
                raise


def _kept(sinks: Sequence[FrameSink]) -> str:
    saved = [s for s in sinks if isinstance(s, AnimationSink)]
    notes = [f"; wrote {s.count} frames to {s.written}" if s.written else f"; no frame was final yet, {s.path} "
             "not written" for s in saved]
    return "".join(notes)


# --------------------------------------------------------------------------------------------- checks


def check_stream_outputs(out: Path | None, frames: Path | None, *, overwrite: bool,
                         weights: Path | None = None) -> None:
    """Refuse outputs that could not be written, before any audio is read (a microphone never ends).

    ``--out`` is written at the end and ``--frames FILE`` opened once the model is loaded; both create
    missing folders, so the nearest existing folder above each must be a writable folder.

    Raises:
        ConfigError: ``--out`` has a suffix stream cannot write.
        OutputError: a path is a folder, exists without ``overwrite``, or lies under a file or a
            read-only folder.
    """
    if out is not None and out.suffix.lower() not in STREAM_SUFFIXES:
        raise ConfigError(f"--out {out}: unknown output format {out.suffix!r} for stream; use "
                          f"{', '.join(STREAM_SUFFIXES)}")
    for flag, path in (("--out", out), ("--frames", frames), ("--weights", weights)):
        if path is None:
            continue
        try:
            check_output_path(path, overwrite=overwrite, stream=flag != "--out")
        except OutputError as e:
            raise OutputError(f"{flag} {e}") from e  # name the flag: both outputs may sit in one folder
        if special_file_kind(path) is not None:
            continue  # a named pipe or /dev/null: written as it is, nothing created beside it
        folder = path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise OutputError(f"{flag} {path}: {folder} is a file, not a folder; choose a path in a folder")
        check_writable_folder(folder, what=f"{flag} {path}")
