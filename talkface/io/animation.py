"""Animation: a vertex sequence with its frame rate, saved as a self-describing ``.npz``."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from talkface.config import check_number
from talkface.errors import ConfigError, TemplateError
from talkface.io.fileio import atomic_path, file_exists, read_json_object, read_npy, read_npz, reading
from talkface.io.mesh import check_face_indices

ANIMATION_FORMAT = "talkface-animation"
ANIMATION_VERSION = 1


@dataclass(frozen=True)
class Animation:
    """A facial animation.

    Attributes:
        vertices: (T, V, 3) float32, metres for FLAME.
        fps: frames per second.
        faces: (F, 3) int32 or None.
        meta: JSON-serialisable details (style, source audio path, checkpoint).
        neutral: (V, 3) float32 the face at rest that the motion was made on (the template), or None:
            retargeting onto a rig takes each frame's displacement from it.
    """

    vertices: np.ndarray
    fps: float
    faces: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    neutral: np.ndarray | None = None

    @property
    def num_frames(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def duration(self) -> float:
        """Seconds."""
        return self.num_frames / self.fps


def save_animation(path: str | os.PathLike[str], animation: Animation) -> Path:
    """Write ``animation`` to ``path`` (.npz) atomically."""
    arrays: dict[str, Any] = {
        "vertices": np.asarray(animation.vertices, dtype=np.float32),
        "fps": np.float64(animation.fps),
        "meta": np.array(json.dumps({"format": ANIMATION_FORMAT, "version": ANIMATION_VERSION, **animation.meta})),
    }
    if animation.faces is not None:
        arrays["faces"] = np.asarray(animation.faces, dtype=np.int32)
    if animation.neutral is not None:
        arrays["neutral"] = np.asarray(animation.neutral, dtype=np.float32)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return Path(path)


def load_animation(
    path: str | os.PathLike[str],
    *,
    fps: float | None = None,
    template: np.ndarray | None = None,
    faces: np.ndarray | None = None,
) -> Animation:
    """Read a talkface ``.npz`` or a FaceFormer-style ``.npy`` of (T, V*3) or (T, V, 3).

    Args:
        path: the file.
        fps: frame rate for ``.npy`` files (required there); overrides the file's for ``.npz``.
        template: unused for absolute vertices; kept for offset files in the future.
        faces: (F, 3) faces to attach when the file has none.

    Raises:
        TemplateError: unreadable file, wrong shape, NaN/inf, or missing fps for ``.npy``.
    """
    p = Path(path)
    with reading(p, "an animation", TemplateError, "fix the link or pass another file"):
        present = file_exists(p)  # a symlink loop or a folder is named as such, not "no such file"
    if not present:
        raise TemplateError(f"{p}: no such animation file")
    meta: dict[str, Any] = {}
    hint = "expected a talkface .npz or a (T, V*3) .npy; write it again"
    if p.suffix == ".npz":
        z = read_npz(p, "animation", TemplateError, hint)
        if "vertices" not in z:
            raise TemplateError(f"{p}: npz has keys {sorted(z)}; expected 'vertices'")
        vertices, file_faces, neutral = z["vertices"], z.get("faces"), z.get("neutral")
        file_fps = None
        if "fps" in z:
            with reading(p, "animation's fps", TemplateError, hint):
                file_fps = float(z["fps"])
        if "meta" in z:
            meta = read_json_object(str(z["meta"]), f"{p} (meta)", TemplateError, hint)
    elif p.suffix == ".npy":
        vertices, file_fps, file_faces, neutral = read_npy(p, "animation", TemplateError, hint), None, None, None
    else:
        raise TemplateError(f"{p}: unknown animation format {p.suffix!r}; expected .npz or .npy")
    vertices = np.asarray(vertices)
    if vertices.dtype == object or not np.issubdtype(vertices.dtype, np.number):
        raise TemplateError(f"{p}: dtype {vertices.dtype}; expected float vertices")
    if vertices.ndim == 2 and vertices.shape[1] % 3 == 0:
        vertices = vertices.reshape(vertices.shape[0], -1, 3)
    if vertices.ndim != 3 or vertices.shape[2] != 3 or vertices.shape[0] == 0:
        raise TemplateError(f"{p}: vertices have shape {vertices.shape}; expected (T, V, 3) or (T, V*3)")
    if not np.isfinite(vertices).all():
        raise TemplateError(f"{p}: vertices contain NaN or infinite values")
    rate = fps if fps is not None else file_fps
    if rate is None:
        raise TemplateError(f"{p}: frame rate unknown; pass --fps (e.g. 30 for VOCASET, 25 for BIWI)")
    try:
        rate = check_number(rate, "fps", low=0, low_open=True)
    except ConfigError as e:
        raise TemplateError(f"{p}: {e}; write the animation again with its true frame rate, or pass --fps") from e
    if neutral is not None and (np.shape(neutral) != vertices.shape[1:] or not np.isfinite(neutral).all()):
        raise TemplateError(f"{p}: its 'neutral' has shape {np.shape(neutral)} or non-finite values; expected "
                            f"({vertices.shape[1]}, 3) finite; write the animation again")
    if file_faces is not None:
        file_faces = np.asarray(file_faces)
        if file_faces.ndim != 2 or file_faces.shape[1] != 3 or file_faces.size == 0:
            raise TemplateError(f"{p}: faces have shape {file_faces.shape}; expected (F, 3) vertex indices")
        file_faces = check_face_indices(file_faces, vertices.shape[1], str(p))
    meta.pop("format", None)
    meta.pop("version", None)
    return Animation(vertices.astype(np.float32), float(rate), faces if file_faces is None else file_faces, meta,
                     None if neutral is None else np.asarray(neutral, dtype=np.float32))
