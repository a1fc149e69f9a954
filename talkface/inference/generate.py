"""Animate speech with a trained model: style selection, template choice and autoregressive generation."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from talkface.errors import CheckpointError, ConfigError, TemplateError
from talkface.io.animation import Animation
from talkface.io.mesh import check_vertices, load_mesh

if TYPE_CHECKING:
    from talkface.model import TalkFaceModel


@dataclass(frozen=True)
class Style:
    """A style condition: a label for file names and weights over the training speakers.

    Attributes:
        label: e.g. ``FaceTalk_170728_03272_TA`` or ``A0.7+B0.3``.
        weights: (N,) float32, sums to 1 (a one-hot for one speaker).
    """

    label: str
    weights: np.ndarray


def parse_style(spec: str, speakers: tuple[str, ...] | list[str]) -> list[Style]:
    """Parse ``--style``: one speaker name, ``all``, or a mix ``A:0.7,B:0.3``.

    Args:
        spec: the flag's value.
        speakers: training speakers in one-hot order.

    Returns:
        One ``Style`` (several for ``all``).

    Raises:
        ConfigError: unknown speaker (lists the valid ones), empty mix, bad or non-normalised weights.
    """
    speakers = list(speakers)
    valid = ", ".join(speakers)
    spec = spec.strip()
    if not spec:
        raise ConfigError(f"--style is empty; give a training speaker ({valid}), a mix A:0.7,B:0.3, or 'all'")
    if spec == "all":
        return [Style(name, np.eye(len(speakers), dtype=np.float32)[i]) for i, name in enumerate(speakers)]
    weights = np.zeros(len(speakers), dtype=np.float32)
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts:
        raise ConfigError(f"--style {spec!r} names no speaker; valid speakers: {valid}")
    labels = []
    for part in parts:
        name, _, value = part.partition(":")
        name = name.strip()
        if name not in speakers:
            raise ConfigError(f"--style: unknown style {name!r}; valid styles are: {valid} (or 'all', or a mix "
                              "A:0.7,B:0.3)")
        try:
            w = 1.0 if not value else float(value)
        except ValueError:
            raise ConfigError(f"--style weight {value!r} for {name} is not a number") from None
        if not math.isfinite(w) or w < 0:
            raise ConfigError(f"--style weight for {name} must be a finite number >= 0, got {value}")
        weights[speakers.index(name)] += w
        labels.append(f"{name}{w:g}")
    if len(parts) == 1 and ":" not in parts[0]:
        return [Style(parts[0], weights)]
    total = float(weights.sum())
    if abs(total - 1.0) > 1e-3:
        raise ConfigError(f"--style weights sum to {total:g}; they must sum to 1 (e.g. A:0.7,B:0.3)")
    label = "+".join(labels)
    return [Style(label, weights / max(float(weights.sum()), 1e-12))]


def evaluation_styles(speaker: str, speakers: tuple[str, ...] | list[str]) -> list[Style]:
    """FaceFormer's protocol: a training speaker under its own style, an unseen one under every training style.

    Returns:
        One-hot ``Style``s (labels are the training speakers' names).
    """
    speakers = list(speakers)
    eye = np.eye(len(speakers), dtype=np.float32)
    ids = [speakers.index(speaker)] if speaker in speakers else range(len(speakers))
    return [Style(speakers[i], eye[i]) for i in ids]


def choose_template(
    templates: dict[str, np.ndarray],
    *,
    subject: str | None,
    style: Style,
    speakers: tuple[str, ...] | list[str],
    template_file: str | Path | None,
    num_vertices: int,
) -> tuple[str, np.ndarray, np.ndarray | None]:
    """Pick the neutral face to animate.

    Order: ``template_file`` (any mesh with the model's vertex count), else ``subject`` from the
    known templates, else the style's dominant speaker.

    Returns:
        (name, vertices (V, 3) float32, faces (F, 3) int32 or None).

    Raises:
        TemplateError: unknown subject (lists the known ones) or wrong vertex count.
    """
    if template_file is not None:
        mesh = load_mesh(template_file, num_vertices=num_vertices)
        return Path(template_file).stem, mesh.vertices, mesh.faces
    name = subject or list(speakers)[int(np.argmax(style.weights))]
    if name not in templates:
        known = ", ".join(sorted(templates)) or "none"
        raise TemplateError(
            f"--subject: no template for subject {name!r} in the run; known subjects: {known}. Pass --template "
            f"MESH to use any mesh "
            f"with {num_vertices} vertices"
        )
    return name, check_vertices(templates[name], f"template {name}", num_vertices), None


def animate(
    model: TalkFaceModel,
    audio: np.ndarray,
    template: np.ndarray,
    style: Style,
    *,
    device: Any = "cpu",
) -> np.ndarray:
    """Generate vertices for one waveform.

    Args:
        model: a trained ``TalkFaceModel`` (eval mode is set here).
        audio: (S,) float32, 16 kHz mono.
        template: (V, 3) float32 neutral face.
        style: the style condition.
        device: torch device.

    Returns:
        (T, V, 3) float32 vertices, T = audio duration × fps.
    """
    import torch

    model.eval()
    with torch.no_grad():
        vertices = model.generate(
            torch.as_tensor(audio, dtype=torch.float32, device=device),
            torch.as_tensor(template, dtype=torch.float32, device=device),
            torch.as_tensor(style.weights, dtype=torch.float32, device=device),
        )
    return vertices.detach().cpu().numpy().astype(np.float32)


def check_finite_output(vertices: np.ndarray, model: Any, *, checkpoint: Any, audio: Any) -> np.ndarray:
    """Refuse generated vertices that are not all finite, naming the likely cause.

    A model that emits NaN/inf almost always has NaN/inf weights (a diverged or damaged training run);
    finite weights can still overflow on extreme input.

    Args:
        vertices: (T, V, 3) float32 as ``animate`` returns them.
        model: the model that made them (its parameters are inspected only on failure).
        checkpoint / audio: named in the message.

    Returns:
        ``vertices`` unchanged.

    Raises:
        CheckpointError: NaN or infinite vertices.
    """
    if np.isfinite(vertices).all():
        return vertices
    bad = [name for name, t in model.state_dict().items() if t.is_floating_point() and not bool(t.isfinite().all())]
    if bad:
        cause = (f"the checkpoint's weights hold NaN/inf values ({len(bad)} tensors, e.g. {bad[0]}): the training "
                 "run diverged or the file is damaged; use an earlier checkpoint or retrain with a lower --lr")
    else:
        cause = f"the weights are finite, so the input {audio} drove the model out of range; check the audio"
    raise CheckpointError(f"{checkpoint}: the model produced NaN/infinite vertices for {audio}; {cause}")


def make_animation(vertices: np.ndarray, fps: float, faces: np.ndarray | None, *, neutral: np.ndarray | None = None,
                   **meta: Any) -> Animation:
    """Bundle generated vertices (T, V, 3) into an ``Animation`` with JSON-able metadata and the neutral face
    (V, 3) they were generated on (kept so that the motion can later be retargeted onto a rig)."""
    return Animation(vertices=vertices, fps=fps, faces=faces, meta={k: v for k, v in meta.items() if v is not None},
                     neutral=None if neutral is None else np.asarray(neutral, dtype=np.float32))
