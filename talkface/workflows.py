"""Multi-step operations behind the CLI commands (no printing): animate many files, load animations
for rendering, evaluate a split. Each returns values the CLI reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from talkface.errors import ConfigError, DatasetError, TalkfaceError, TemplateError

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


def output_path(out: Path, audio: Path, label: str | None, single: bool) -> Path:
    """``out`` itself for a single output with a suffix, else ``out/<audio stem>[_<style>].npz``."""
    if single and out.suffix:
        return out
    name = audio.stem + (f"_condition_{label}" if label else "")
    return out / f"{name}.npz"


def write_animation_file(path: Path, animation: Any, *, overwrite: bool) -> Path:
    """Write by suffix: ``.npz`` (talkface), ``.npy`` (FaceFormer (T, V*3)), ``.obj`` (a folder of frames)."""
    from talkface.animation import save_animation
    from talkface.fileio import atomic_path, check_output_path
    from talkface.mesh import save_obj_sequence

    suffix = path.suffix.lower()
    if suffix == ".obj":
        folder = path.with_suffix("")
        if folder.exists() and any(folder.iterdir()) and not overwrite:
            raise TemplateError(f"{folder}: OBJ folder is not empty; pass --overwrite")
        save_obj_sequence(folder, animation.vertices, animation.faces)
        return folder
    check_output_path(path, overwrite=overwrite)
    if suffix == ".npy":
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, animation.vertices.reshape(animation.num_frames, -1))
        return path
    if suffix != ".npz":
        raise ConfigError(f"{path}: unknown output format {suffix!r}; use .npz, .npy or .obj")
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
) -> list[AnimateResult]:
    """Load the model once and animate every input under every requested style.

    Errors of one input are recorded and the others still run; errors that concern all inputs
    (checkpoint, style) raise.
    """
    from talkface.audio import load_audio
    from talkface.checkpoint import load_checkpoint
    from talkface.inference import animate, choose_template, make_animation, parse_style
    from talkface.runs import load_run_assets
    from talkface.train import resolve_device

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
                path = output_path(out, audio_path, s.label if len(styles) > 1 else None, single)
                result.outputs.append(write_animation_file(path, anim, overwrite=overwrite))
                if render:
                    result.outputs.append(render_animation(anim, path.with_suffix(".mp4"), audio_path, overwrite))
        except TalkfaceError as e:
            result.error = str(e)
        results.append(result)
    return results


def render_animation(animation: Any, out: Path, audio: Path | None, overwrite: bool, **config: Any) -> Path:
    """Render with the default (VOCA-like) camera to ``out`` (.mp4) with ``audio`` muxed in."""
    from talkface.render import RenderConfig, render_video

    if animation.faces is None:
        raise TemplateError("the animation has no faces to render; pass --template with the mesh topology")
    return render_video(animation, out, audio=audio, config=RenderConfig(**config), overwrite=overwrite)


def load_animation_for_render(path: Path, *, template: Path | None, fps: float | None) -> Any:
    """Read an animation and make sure it has faces (from the file or ``template``)."""
    from dataclasses import replace

    from talkface.animation import load_animation
    from talkface.mesh import load_mesh

    anim = load_animation(path, fps=fps)
    if template is not None:
        mesh = load_mesh(template, num_vertices=anim.vertices.shape[1])
        if mesh.faces is None:
            raise TemplateError(f"{template}: mesh has no faces; use an .obj/.ply with the topology")
        anim = replace(anim, faces=mesh.faces)
    if anim.faces is None:
        raise TemplateError(f"{path}: no faces stored; pass --template MESH with the topology (e.g. FLAME_sample.ply)")
    return anim


def _prediction_files(pred_dir: Path, clip: str) -> list[Path]:
    exact = [pred_dir / f"{clip}{s}" for s in (".npz", ".npy") if (pred_dir / f"{clip}{s}").is_file()]
    return exact or sorted(pred_dir.glob(f"{clip}_condition_*.np[yz]"))


def evaluate(
    data: Path,
    *,
    split: str = "test",
    checkpoint: Path | None = None,
    pred: Path | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """Score a split with the FaceFormer/CodeTalker metrics (see ``talkface.metrics``).

    Predictions come from ``checkpoint`` (generated; unseen speakers under every training style) or
    from ``pred`` (files ``<clip>.npy|.npz`` or ``<clip>_condition_<speaker>.npy``). Multiple
    conditions of one clip are averaged (mean over styles), per FaceFormer's protocol.

    Returns:
        dict with lve (m²), lve_mm, fdd (m², signed mean over sequences), mve (m), sequences, frames,
        and per_sequence rows.

    Raises:
        DatasetError: empty split or no lip region; ConfigError: missing predictions.
    """
    import torch

    from talkface import metrics
    from talkface.animation import load_animation
    from talkface.data import load_prepared
    from talkface.runs import load_run_assets

    dataset = load_prepared(data)
    clips = dataset.split(split)
    if not clips:
        raise DatasetError(f"{data}: split {split!r} is empty")
    regions = load_run_assets(data).regions
    if "lips" not in regions:
        raise DatasetError(f"{data}: no lip region (regions.npz with 'lips'); prepare with a region file")
    upper = np.unique(np.concatenate([regions[k] for k in ("forehead", "eye_region") if k in regions]))
    model = None
    if checkpoint is not None:
        from talkface.checkpoint import load_checkpoint
        from talkface.train import resolve_device

        device = resolve_device(device)
        model, _ = load_checkpoint(checkpoint, device=device)
        model.eval()
    rows, lip_frames, mve_frames, num_frames = [], [], [], 0
    for info in clips:
        clip = dataset.load_clip(info)
        num_frames += int(clip.vertices.shape[0])
        if model is not None:
            preds = _generate_all(model, clip, device)
        else:
            files = _prediction_files(pred, info.name)  # type: ignore[arg-type]
            if not files:
                raise ConfigError(f"{pred}: no prediction for clip {info.name} ({info.name}.npy or _condition_*.npy)")
            preds = [load_animation(f, fps=dataset.meta["fps"]).vertices for f in files]
        for p in preds:
            p_, g_ = metrics.align_lengths(p, clip.vertices)
            lip_frames.append(metrics.lip_max_errors(p_, g_, regions["lips"]))
            mve_frames.append(metrics.squared_errors(p_, g_).sqrt().mean(dim=1))
            rows.append({"clip": info.name, "speaker": clip.speaker, "frames": int(g_.shape[0]),
                         "lve": float(metrics.lve(p_, g_, regions["lips"])),
                         "fdd": float(metrics.fdd(p_, g_, clip.template, upper)) if upper.size else None})
    lips_all = torch.cat(lip_frames)
    return {
        "split": split, "sequences": len(clips), "frames": num_frames,
        "lve": float(lips_all.mean()), "lve_mm": float((lips_all.sqrt() * 1000).mean()),
        "fdd": float(np.mean([r["fdd"] for r in rows])) if upper.size else None,
        "mve": float(torch.cat(mve_frames).mean()), "per_sequence": rows,
    }


def _generate_all(model: Any, clip: Any, device: str) -> list[np.ndarray]:
    from talkface.inference import animate, evaluation_styles

    styles = evaluation_styles(clip.speaker, model.config.speakers)
    return [animate(model, clip.audio, clip.template, s, device=device) for s in styles]
