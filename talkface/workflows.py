"""Multi-step operations behind the CLI commands (no printing): animate many files, load animations
for rendering. Each returns values the CLI reports. Evaluation lives in ``talkface.evaluate.evaluation``
(``evaluate`` is re-exported here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from talkface.errors import ConfigError, TalkfaceError, TemplateError
from talkface.evaluate.evaluation import evaluate
from talkface.inference.generate import animate, choose_template, make_animation, parse_style
from talkface.io.animation import load_animation, save_animation
from talkface.io.audio import load_audio
from talkface.io.fileio import atomic_path, check_output_path
from talkface.io.gltf import write_gltf
from talkface.io.mesh import load_mesh, save_obj_sequence
from talkface.model.checkpoint import load_checkpoint
from talkface.render.offscreen import RenderConfig, render_video
from talkface.runtime import resolve_device
from talkface.train.runs import load_run_assets

__all__ = ["AnimateResult", "animate_files", "evaluate", "expand_audio_inputs", "load_animation_for_render",
           "output_path", "render_animation", "write_animation_file"]

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
        if folder.exists() and any(folder.iterdir()) and not overwrite:
            raise TemplateError(f"{folder}: OBJ folder is not empty; pass --overwrite")
        save_obj_sequence(folder, animation.vertices, animation.faces)
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
    results = []
    for audio_path in inputs:
        result = AnimateResult(audio_path)
        try:
            audio = load_audio(audio_path)
            for s in styles:
                name, tmpl, faces = choose_template(assets.templates, subject=subject, style=s,
                                                    speakers=model.config.speakers, template_file=template,
                                                    num_vertices=model.config.num_vertices)
                vertices = animate(model, audio, tmpl, s, device=device)
                anim = make_animation(vertices, model.config.fps, faces if faces is not None else assets.faces,
                                      style=s.label, subject=name, audio=str(audio_path), checkpoint=str(checkpoint))
                path = output_path(out, audio_path, s.label if len(styles) > 1 else None, single, fmt)
                result.outputs.append(write_animation_file(path, anim, overwrite=overwrite, base=tmpl))
                if render:
                    result.outputs.append(render_animation(anim, path.with_suffix(".mp4"), audio_path, overwrite))
        except TalkfaceError as e:
            result.error = str(e)
        results.append(result)
    return results


def render_animation(animation: Any, out: Path, audio: Path | None, overwrite: bool, **config: Any) -> Path:
    """Render with the default (VOCA-like) camera to ``out`` (.mp4) with ``audio`` muxed in."""
    if animation.faces is None:
        raise TemplateError("the animation has no faces to render; pass --template with the mesh topology")
    return render_video(animation, out, audio=audio, config=RenderConfig(**config), overwrite=overwrite)


def load_animation_for_render(path: Path, *, template: Path | None, fps: float | None) -> Any:
    """Read an animation and make sure it has faces (from the file or ``template``)."""
    from dataclasses import replace

    anim = load_animation(path, fps=fps)
    if template is not None:
        mesh = load_mesh(template, num_vertices=anim.vertices.shape[1])
        if mesh.faces is None:
            raise TemplateError(f"{template}: mesh has no faces; use an .obj/.ply with the topology")
        anim = replace(anim, faces=mesh.faces)
    if anim.faces is None:
        raise TemplateError(f"{path}: no faces stored; pass --template MESH with the topology (e.g. FLAME_sample.ply)")
    return anim
