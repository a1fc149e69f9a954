"""Template meshes: reading OBJ/PLY/NPZ/NPY files and writing OBJ sequences. No torch, no rendering."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talkface.errors import TemplateError
from talkface.io.fileio import file_exists, read_npy, read_npz, reading, write_text_atomic


@dataclass(frozen=True)
class Template:
    """A neutral face.

    Attributes:
        vertices: (V, 3) float32, metres for FLAME.
        faces: (F, 3) int32 triangle indices, or None when unknown.
    """

    vertices: np.ndarray
    faces: np.ndarray | None = None

    @property
    def num_vertices(self) -> int:
        return int(self.vertices.shape[0])


def check_face_indices(faces: np.ndarray, num_vertices: int, source: str) -> np.ndarray:
    """(F, 3) integer triangles whose indices all lie in 0..V-1, as int32.

    Raises:
        TemplateError: naming ``source`` (the file they came from): not integers, or indices outside the mesh.
    """
    faces = np.asarray(faces)
    if faces.dtype == object or not np.issubdtype(faces.dtype, np.integer):
        raise TemplateError(f"{source}: faces are {faces.dtype}; expected (F, 3) integer vertex indices")
    if faces.min() < 0 or faces.max() >= num_vertices:
        raise TemplateError(f"{source}: face indices span {faces.min()}..{faces.max()} but the mesh has "
                            f"{num_vertices} (0..{num_vertices - 1}); the faces belong to another mesh: write the "
                            "file again with its own topology")
    return faces.astype(np.int32)


def check_vertices(vertices: np.ndarray, source: str, num_vertices: int | None = None) -> np.ndarray:
    """Validate a (V, 3) or (V*3,) vertex array and return it as (V, 3) float32.

    Raises:
        TemplateError: wrong rank/shape, non-numeric, NaN/inf or wrong vertex count.
    """
    arr = np.asarray(vertices)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise TemplateError(f"{source}: vertices have dtype {arr.dtype}; expected float numbers")
    if arr.ndim == 1 and arr.shape[0] % 3 == 0:
        arr = arr.reshape(-1, 3)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise TemplateError(f"{source}: vertices have shape {arr.shape}; expected (V, 3) or (V*3,)")
    if not np.isfinite(arr).all():
        raise TemplateError(f"{source}: vertices contain NaN or infinite values")
    if num_vertices is not None and arr.shape[0] != num_vertices:
        raise TemplateError(
            f"{source}: template has {arr.shape[0]} vertices but the model expects {num_vertices}; "
            "use a mesh with the model's topology"
        )
    return arr.astype(np.float32)


def load_mesh(path: str | os.PathLike[str], num_vertices: int | None = None) -> Template:
    """Read a template mesh.

    Args:
        path: ``.obj``/``.ply`` (trimesh, no vertex merging), ``.npz`` with ``vertices`` and optional
            ``faces``, or ``.npy`` of (V, 3) / (V*3,).
        num_vertices: expected vertex count, checked when given.

    Returns:
        The ``Template``.

    Raises:
        TemplateError: missing/unreadable file or wrong vertex count.
    """
    p = Path(path)
    with reading(p, "a mesh", TemplateError, "fix the link or pass another mesh"):
        present = file_exists(p)  # a symlink loop or a folder is named as such, not "no such file"
    if not present:
        raise TemplateError(f"{p}: no such mesh file")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npz":
            z = read_npz(p, "mesh", TemplateError, "expected an npz with 'vertices' (and 'faces')")
            if "vertices" not in z:
                raise TemplateError(f"{p}: npz has keys {sorted(z)}; expected 'vertices' (and 'faces')")
            vertices, faces = z["vertices"], z.get("faces")
        elif suffix == ".npy":
            vertices, faces = read_npy(p, "mesh", TemplateError, "expected a (V, 3) float array"), None
        elif suffix in (".obj", ".ply", ".off", ".stl", ".glb", ".gltf"):
            import trimesh

            mesh = trimesh.load(p, process=False, force="mesh")
            vertices = np.asarray(mesh.vertices)
            faces = np.asarray(getattr(mesh, "faces", np.zeros((0, 3))))
            if vertices.size == 0:
                raise TemplateError(f"{p}: mesh has no vertices (trimesh read it as an empty mesh or point cloud)")
        else:
            raise TemplateError(f"{p}: unknown mesh format {suffix!r}; expected .obj, .ply, .npz or .npy")
    except TemplateError:
        raise
    except Exception as e:
        raise TemplateError(f"{p}: cannot read mesh ({e})") from e
    vertices = check_vertices(vertices, str(p), num_vertices)
    if faces is not None:
        faces = np.asarray(faces)
        if faces.ndim != 2 or faces.shape[1] != 3 or faces.size == 0:
            faces = None
        else:
            faces = check_face_indices(faces, vertices.shape[0], str(p))
    return Template(vertices=vertices, faces=faces)


def obj_text(vertices: np.ndarray, faces: np.ndarray | None) -> str:
    """Wavefront OBJ text for one frame. vertices: (V, 3); faces: (F, 3) 0-based."""
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in np.asarray(vertices, dtype=np.float64)]
    if faces is not None:
        lines += [f"f {a} {b} {c}" for a, b, c in np.asarray(faces, dtype=np.int64) + 1]
    return "\n".join(lines) + "\n"


def save_obj_sequence(folder: str | os.PathLike[str], vertices: np.ndarray, faces: np.ndarray | None) -> list[Path]:
    """Write one OBJ per frame as ``frame_000000.obj`` ... (atomic per file).

    Args:
        folder: output folder (created).
        vertices: (T, V, 3) float32.
        faces: (F, 3) int or None.
    """
    out = Path(folder)
    return [write_text_atomic(out / f"frame_{t:06d}.obj", obj_text(v, faces)) for t, v in enumerate(vertices)]
