"""Multi-step operations behind the CLI commands (no printing): animate many files, load animations
for rendering. Each returns values the CLI reports. Evaluation lives in ``talkface.evaluate.evaluation``
(``evaluate`` is re-exported here)."""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from talkface.errors import ConfigError, TalkfaceError, TemplateError
from talkface.evaluate.evaluation import evaluate
from talkface.inference.generate import animate, check_finite_output, choose_template, make_animation, parse_style
from talkface.inference.stream import StreamConfig, Streamer, auto_hop_ms, measure_pass_seconds
from talkface.io.animation import load_animation, save_animation
from talkface.io.audio import MIN_SAMPLES, SAMPLE_RATE, check_not_silent, check_waveform, load_audio
from talkface.io.fileio import atomic_folder, atomic_path, check_output_path, check_paths, read_npy
from talkface.io.gltf import write_gltf
from talkface.io.mesh import load_mesh, save_obj_sequence
from talkface.model.checkpoint import load_checkpoint
from talkface.render.offscreen import RenderConfig, render_video
from talkface.runtime import resolve_device
from talkface.train.runs import load_run_assets, run_reads

__all__ = ["AnimateResult", "animate_files", "evaluate", "expand_audio_inputs", "load_animation_for_render",
           "load_ground_truth", "output_path", "render_animation", "write_animation_file"]

ANIMATION_SUFFIXES = (".npz", ".npy", ".obj", ".glb", ".gltf")

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".oga", ".opus")


def expand_audio_inputs(paths: list[Path]) -> list[Path]:
    """Files as given; folders expanded to their audio files (sorted).

    Raises:
        ConfigError: a folder holds no audio file.
    """
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                raise ConfigError(f"{p}: folder has no audio files ({', '.join(AUDIO_SUFFIXES)})")
            files += found
        else:
            files.append(p)
    return files


@dataclass
class AnimateResult:
    """Outcome for one input: written files, or the error that stopped it."""

    audio: Path
    outputs: list[Path] = field(default_factory=list)
    error: str | None = None


def output_path(out: Path, audio: Path, label: str | None, single: bool, fmt: str = "npz") -> Path:
    """``out`` itself for a single output with a suffix, else ``out/<audio stem>[_condition_<style>].<fmt>``."""
    if single and out.suffix:
        return out
    name = audio.stem + (f"_condition_{label}" if label else "")
    return out / f"{name}.{fmt.lstrip('.')}"


def write_animation_file(path: Path, animation: Any, *, overwrite: bool, base: np.ndarray | None = None) -> Path:
    """Write by suffix: ``.npz`` (talkface), ``.npy`` (FaceFormer (T, V*3)), ``.obj`` (a folder of frames),
    ``.glb`` / ``.gltf`` (morph-target animation, see ``talkface.io.gltf``; ``base`` = the neutral template)."""
    suffix = path.suffix.lower()
    if suffix not in ANIMATION_SUFFIXES:
        raise ConfigError(f"{path}: unknown output format {suffix!r}; use {', '.join(ANIMATION_SUFFIXES)}")
    if suffix == ".obj":
        folder = path.with_suffix("")
        with atomic_folder(folder, overwrite=overwrite) as tmp:  # all frames or none (full disk, Ctrl-C)
            save_obj_sequence(tmp, animation.vertices, animation.faces)
        return folder
    check_output_path(path, overwrite=overwrite)
    if suffix in (".glb", ".gltf"):
        return write_gltf(path, animation, base=base)
    if suffix == ".npy":
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, animation.vertices.reshape(animation.num_frames, -1))
        return path
    return save_animation(path, animation)


def animate_files(
    inputs: list[Path],
    *,
    checkpoint: Path,
    style: str,
    out: Path,
    subject: str | None = None,
    template: Path | None = None,
    device: str = "auto",
    overwrite: bool = False,
    render: bool = False,
    fmt: str = "npz",
) -> list[AnimateResult]:
    """Load the model once and animate every input under every requested style.

    ``fmt`` (npz, npy, obj, glb, gltf) names the files written into a folder ``out``; a single output
    with a suffix is written in the format of its suffix.

    Errors of one input are recorded and the others still run; errors that concern all inputs
    (checkpoint, style) raise.
    """
    if f".{fmt.lstrip('.').lower()}" not in ANIMATION_SUFFIXES:
        raise ConfigError(f"--format {fmt!r} is unknown; use one of {', '.join(x[1:] for x in ANIMATION_SUFFIXES)}")
    device = resolve_device(device)
    model, meta = load_checkpoint(checkpoint, device=device)
    assets = load_run_assets(checkpoint if checkpoint.is_dir() else checkpoint.parent)
    styles = parse_style(style, model.config.speakers)
    single = len(inputs) == 1 and len(styles) == 1
    planned = {(a, s.label): output_path(out, a, s.label if len(styles) > 1 else None, single, fmt)
               for a in inputs for s in styles}
    check_animate_paths(inputs, planned, checkpoint=checkpoint, template=template, render=render,
                        overwrite=overwrite)
    results = []
    for audio_path in inputs:
        result = AnimateResult(audio_path)
        try:
            audio = load_audio(audio_path)
            for s in styles:
                name, tmpl, faces = choose_template(assets.templates, subject=subject, style=s,
                                                    speakers=model.config.speakers, template_file=template,
                                                    num_vertices=model.config.num_vertices)
                vertices = check_finite_output(animate(model, audio, tmpl, s, device=device), model,
                                               checkpoint=checkpoint, audio=audio_path)
                anim = make_animation(vertices, model.config.fps, faces if faces is not None else assets.faces,
                                      style=s.label, subject=name, audio=str(audio_path), checkpoint=str(checkpoint))
                path = planned[(audio_path, s.label)]
                result.outputs.append(write_animation_file(path, anim, overwrite=overwrite, base=tmpl))
                if render:
                    result.outputs.append(render_animation(anim, path.with_suffix(".mp4"), audio_path, overwrite))
        except TalkfaceError as e:
            result.error = str(e)
        results.append(result)
    return results


def check_animate_paths(inputs: list[Path], planned: dict[tuple[Path, str | None], Path], *, checkpoint: Path,
                        template: Path | None, render: bool, overwrite: bool = False) -> None:
    """Every file ``animate`` will write, against its inputs and each other (``fileio.check_paths``).

    An ``.obj`` output is a folder of frames, and ``--render`` adds an ``.mp4`` beside each output.

    Raises:
        OutputError: an output is an input, lies in the run folder, or two inputs share an output.
    """
    labels = list(dict.fromkeys(label for _, label in planned))
    outputs: dict[str, Any] = {}
    folders: list[str] = []
    for number, audio in enumerate(inputs, 1):  # by position: an input given twice collides with itself
        for label in labels:
            path = planned[(audio, label)]
            name = f"--out (for input {number}, {audio.name}{f' in style {label}' if label else ''})"
            if path.suffix.lower() == ".obj":
                outputs[name], folders = path.with_suffix(""), [*folders, name]
            else:
                outputs[name] = path
            if render:
                outputs[f"{name} --render"] = path.with_suffix(".mp4")
    check_paths({"AUDIO": list(inputs), "--checkpoint": run_reads(checkpoint), "--template": template}, outputs,
                output_folders=tuple(folders), overwrite=overwrite)


def render_animation(animation: Any, out: Path, audio: Path | None, overwrite: bool, **config: Any) -> Path:
    """Render with the default (VOCA-like) camera to ``out`` (.mp4) with ``audio`` muxed in."""
    if animation.faces is None:
        raise TemplateError("--render needs faces: none in the run (faces.npy) and no --template; pass --template MESH")
    return render_video(animation, out, audio=audio, config=RenderConfig(**config), overwrite=overwrite)


def load_ground_truth(path: Path, prediction: Any, *, template: Path | None) -> Any:
    """Read ``render --compare GT``: an animation, a FaceFormer ``.npy`` or a prepared clip (``DATA/clips/*.npz``).

    GT keeps its own frame rate (a ``.npy`` has none: it takes the prediction's); faces come from
    ``template``, GT itself, the prediction, or the prepared dataset GT belongs to.

    Raises:
        ConfigError: GT's frame rate differs from the prediction's (re-timing would show the wrong motion).
        TemplateError: unreadable GT, or no faces anywhere.
    """
    from dataclasses import replace

    gt = load_animation(path, fps=prediction.fps if path.suffix.lower() == ".npy" else None)
    faces = None
    if template is not None:
        faces = load_mesh(template, num_vertices=gt.vertices.shape[1]).faces
    dataset_faces = path.parent.parent / "faces.npy"  # a prepared clip: its dataset (data.dataset.clip_reads)
    if faces is None and gt.faces is None and prediction.faces is None and dataset_faces.is_file():
        faces = read_npy(dataset_faces, "mesh faces", TemplateError, "prepare the dataset again")
    gt = replace(gt, faces=faces if faces is not None else (gt.faces if gt.faces is not None else prediction.faces))
    if gt.faces is None:
        raise TemplateError(f"{path}: --compare has no faces, nor has the prediction; pass --template MESH")
    if abs(gt.fps - prediction.fps) > 1e-6:
        raise ConfigError(f"--compare {path} is at {gt.fps:g} fps, the prediction at {prediction.fps:g} fps; "
                          "render ground truth and prediction at the same frame rate (resample one of them)")
    return gt


def load_animation_for_render(path: Path, *, template: Path | None, fps: float | None, need_faces: bool = True) -> Any:
    """Read an animation and make sure it has faces (from the file or ``template``; with ``need_faces=False``
    they may come from the ground truth later, see ``load_ground_truth``)."""
    from dataclasses import replace

    anim = load_animation(path, fps=fps)
    if template is not None:
        mesh = load_mesh(template, num_vertices=anim.vertices.shape[1])
        if mesh.faces is None:
            raise TemplateError(f"{template}: mesh has no faces; use an .obj/.ply with the topology")
        anim = replace(anim, faces=mesh.faces)
    if anim.faces is None and need_faces:
        raise TemplateError(f"{path}: no faces stored; pass --template MESH with the topology (e.g. FLAME_sample.ply)")
    return anim


# --------------------------------------------------------------------------------------------- stream
STREAM_SUFFIXES = (".npz", ".npy", ".glb", ".gltf")  # written atomically at the end (not an OBJ folder)


@dataclass
class StreamSetup:
    """A ready ``Streamer`` and what the CLI needs to write its frames."""

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
                device: str = "cpu", config: Any = None, hop_ms: float | None = None) -> StreamSetup:
    """Load the model and pick style and template exactly as ``animate_files`` does; one style only.

    ``hop_ms`` None picks the hop from a timed probe pass (``auto_hop_ms``); else it replaces
    ``config.hop_ms``.

    Raises:
        ConfigError, CheckpointError, TemplateError: as ``animate``; also ``--style all`` (several styles).
    """
    device = resolve_device(device)
    model, _ = load_checkpoint(checkpoint, device=device)
    assets = load_run_assets(checkpoint if checkpoint.is_dir() else checkpoint.parent)
    styles = parse_style(style, model.config.speakers)
    if len(styles) != 1:
        raise ConfigError(f"--style {style!r} names {len(styles)} styles; stream animates one: give one training "
                          f"speaker or a mix A:0.7,B:0.3 ({', '.join(model.config.speakers)})")
    name, tmpl, faces = choose_template(assets.templates, subject=subject, style=styles[0],
                                        speakers=model.config.speakers, template_file=template,
                                        num_vertices=model.config.num_vertices)
    # a probe stream warms the ops up (first calls are slow) and times a pass for an automatic hop
    config = config or StreamConfig()
    pass_seconds = measure_pass_seconds(model, tmpl, styles[0].weights, config)
    if hop_ms is None:
        frame_ms = 1000.0 / (model.audio_encoder.feature_rate if model.config.audio_frames_per_motion_frame
                             else model.config.fps)
        hop_ms = auto_hop_ms(pass_seconds, frame_ms)
    config = replace(config, hop_ms=hop_ms)
    streamer = Streamer(model, tmpl, styles[0].weights, config)
    return StreamSetup(streamer, streamer.config.hop_ms, pass_seconds, model.config.fps, model.config.num_vertices,
                       tmpl, faces if faces is not None else assets.faces, styles[0].label, name)


class AudioFeed:
    """Audio pieces made by a producer thread, handed over in arrival order.

    ``produce(put)`` calls ``put(samples)`` for each (S,) float32 piece and returns at the end of the
    input; its exception is re-raised by the iteration. Each step of the iteration takes every piece
    waiting, so a consumer that fell behind catches up in one step and knows by how much (``last_batch_s``).
    """

    def __init__(self, produce: Any) -> None:
        self.queue: queue.Queue[np.ndarray | None] = queue.Queue()
        self.error: BaseException | None = None
        self.samples = 0
        self.last_batch_s = 0.0
        self.thread = threading.Thread(target=self._run, args=(produce,), daemon=True, name="talkface-audio-feed")
        self.thread.start()

    def _run(self, produce: Any) -> None:
        try:
            produce(self.queue.put)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer thread
            self.error = e
        finally:
            self.queue.put(None)

    def __iter__(self) -> Any:
        done = False
        while not done:
            batch = [self.queue.get()]
            while batch[-1] is not None:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            done = batch[-1] is None
            pieces = [b for b in batch if b is not None]
            if pieces:
                samples = np.concatenate(pieces)
                self.samples += samples.size
                self.last_batch_s = samples.size / SAMPLE_RATE
                yield samples
        if self.error is not None:
            raise self.error


def pcm_producer(fd: int, decoder: Any, read_size: int = 8192) -> Any:
    """A producer for ``AudioFeed``: raw s16le from a file descriptor (stdin) until it closes."""
    def produce(put: Any) -> None:
        while True:
            data = os.read(fd, read_size)
            if not data:
                return
            samples = decoder.decode(data)
            if samples.size:
                put(samples)

    return produce


def file_producer(audio: np.ndarray, *, realtime: bool, piece_s: float = 0.02) -> Any:
    """A producer for ``AudioFeed``: a loaded waveform in ``piece_s`` pieces, paced at 1x when ``realtime``."""
    def produce(put: Any) -> None:
        step = max(1, round(piece_s * SAMPLE_RATE))
        start = time.perf_counter()
        for first in range(0, audio.shape[0], step):
            if realtime:
                time.sleep(max(0.0, start + (first + step) / SAMPLE_RATE - time.perf_counter()))
            put(audio[first: first + step])

    return produce


@dataclass
class StreamReport:
    """What a stream did: audio heard, frames made, the worst backlog."""

    samples: int = 0
    frames: int = 0
    max_backlog_s: float = 0.0
    behind_events: int = 0


def run_stream(streamer: Any, feed: AudioFeed, on_frames: Any, *, source: str, behind_s: float = 0.5,
               on_behind: Any = None, report: StreamReport | None = None, checkpoint: Any = "the checkpoint",
               ) -> StreamReport:
    """Push the feed's audio through ``streamer``; ``on_frames(first_index, (n, V, 3))`` as frames become final.

    A step that takes more than ``behind_s`` of waiting audio means the machine fell behind:
    ``on_behind(seconds)`` is called, and the frames still come out in order, none dropped.
    At the end the input is checked as ``animate`` checks a file (too short, digital silence). Frames
    are checked as ``animate`` checks them (``check_finite_output``) before ``on_frames`` sees them.

    Raises:
        AudioError: too short or silent input (after the frames already streamed).
        CheckpointError: NaN/inf frames (``checkpoint`` is named in the message).
    """
    report = report or StreamReport()
    head = np.zeros(0, np.float32)
    heard = False
    for samples in feed:
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
        frames = check_finite_output(streamer.push(samples), streamer.model, checkpoint=checkpoint, audio=source)
        if frames.shape[0]:
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
