"""Multi-step operations behind the CLI commands (no printing): animate many files, load animations
for rendering. Each returns values the CLI reports. Evaluation lives in ``talkface.evaluate.evaluation``
(``evaluate`` is re-exported here).

Over 400 lines: it chains every stage for the CLI (animate, retarget onto a rig, render, stream); each
chain is short, and splitting them apart would scatter the shared path checks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from talkface.errors import ConfigError, TalkfaceError, TemplateError
from talkface.evaluate.evaluation import evaluate
from talkface.inference.generate import animate, check_finite_output, choose_template, make_animation, parse_style
from talkface.io.animation import load_animation, save_animation
from talkface.io.audio import load_audio
from talkface.io.fileio import atomic_folder, atomic_path, check_output_path, check_paths, read_npy
from talkface.io.gltf import write_gltf
from talkface.io.mesh import load_mesh, save_obj_sequence
from talkface.io.run_assets import load_run_assets, run_reads
from talkface.model.checkpoint import load_checkpoint
from talkface.render.offscreen import RenderConfig, render_video
from talkface.rig import retargeting as retarget_stage
from talkface.runtime import resolve_device

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
    fits: list[Any] = field(default_factory=list)  # rig.retargeting.Fit per style, with --rig


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
    rig: str | None = None,
    solve: Any = None,
    fit_region: str | None = None,
    on_step: Callable[[str], None] | None = None,
) -> list[AnimateResult]:
    """Load the model once and animate every input under every requested style.

    ``on_step(name)`` is called as each start-up step ends (``--verbose`` times them).

    ``fmt`` (npz, npy, obj, glb, gltf) names the files written into a folder ``out``; a single output
    with a suffix is written in the format of its suffix. With ``rig`` (a rig file, folder or built-in
    name) the outputs are the rig's weights instead (``rig.retargeting.write_fit``: Live Link Face CSV,
    Audio2Face-style JSON, GLB/glTF with named targets, npz), solved with ``solve`` (``SolveOptions``) on
    ``fit_region``.

    Errors of one input are recorded and the others still run; errors that concern all inputs
    (checkpoint, style) raise.
    """
    if rig is not None:
        fmt = retarget_stage.weights_format(out, None if fmt == "npz" and out.suffix else fmt)
        rig_path = retarget_stage.rig_file(rig)
    elif f".{fmt.lstrip('.').lower()}" not in ANIMATION_SUFFIXES:
        raise ConfigError(f"--format {fmt!r} is unknown; use one of {', '.join(x[1:] for x in ANIMATION_SUFFIXES)}")
    step = on_step or (lambda name: None)
    device = resolve_device(device)
    model, meta = load_checkpoint(checkpoint, device=device)
    step("load the model")
    assets = load_run_assets(checkpoint if checkpoint.is_dir() else checkpoint.parent)
    step("read the run's templates")
    styles = parse_style(style, model.config.speakers)
    single = len(inputs) == 1 and len(styles) == 1
    planned = {(a, s.label): output_path(out, a, s.label if len(styles) > 1 else None, single,
                                         retarget_stage.WEIGHT_FORMATS[fmt] if rig is not None else fmt)
               for a in inputs for s in styles}
    check_animate_paths(inputs, planned, checkpoint=checkpoint, template=template, render=render,
                        rig=rig_path if rig is not None else None, overwrite=overwrite)
    prepared = None
    if rig is not None:  # the rig is read and checked once, before any audio is animated
        reference = next(iter(assets.templates.values()), None)
        rig_obj = retarget_stage.resolve_rig(rig, num_vertices=model.config.num_vertices, reference=reference)
        if fmt == "csv":
            retarget_stage.check_livelink_names(rig_obj)
        prepared = retarget_stage.setup(rig_obj, solve, fit_region, assets.regions)
    results = []
    for audio_path in inputs:
        result = AnimateResult(audio_path)
        try:
            audio = load_audio(audio_path)
            step(f"read {audio_path.name}")
            for s in styles:
                name, tmpl, faces = choose_template(assets.templates, subject=subject, style=s,
                                                    speakers=model.config.speakers, template_file=template,
                                                    num_vertices=model.config.num_vertices)
                vertices = check_finite_output(animate(model, audio, tmpl, s, device=device), model,
                                               checkpoint=checkpoint, audio=audio_path)
                step(f"animate {audio_path.name} ({s.label})")
                anim = make_animation(vertices, model.config.fps, faces if faces is not None else assets.faces,
                                      neutral=tmpl, style=s.label, subject=name, audio=str(audio_path),
                                      checkpoint=str(checkpoint))
                path = planned[(audio_path, s.label)]
                if prepared is not None:
                    fit = retarget_stage.retarget(vertices, tmpl, prepared, fps=anim.fps, source=audio_path.name,
                                                  extra_regions=assets.regions)
                    result.fits.append(fit)
                    result.outputs.append(retarget_stage.write_fit(path, fit, prepared.rig, fmt=fmt,
                                                                   overwrite=overwrite, meta=anim.meta))
                else:
                    result.outputs.append(write_animation_file(path, anim, overwrite=overwrite, base=tmpl))
                step(f"write {path.name}")
                if render:
                    result.outputs.append(render_animation(anim, path.with_suffix(".mp4"), audio_path, overwrite))
        except TalkfaceError as e:
            result.error = str(e)
        results.append(result)
    return results


def check_animate_paths(inputs: list[Path], planned: dict[tuple[Path, str | None], Path], *, checkpoint: Path,
                        template: Path | None, render: bool, rig: Path | None = None,
                        overwrite: bool = False) -> None:
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
    check_paths({"AUDIO": list(inputs), "--checkpoint": run_reads(checkpoint), "--template": template, "--rig": rig},
                outputs, output_folders=tuple(folders), overwrite=overwrite)


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
