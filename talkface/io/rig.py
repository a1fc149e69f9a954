"""Blendshape rigs: a neutral mesh plus named targets on one topology, read from glTF/GLB, a folder or ``.npz``.

A rig's target ``k`` displaces the neutral by ``deltas[k]``; a face with weights ``w`` is
``neutral + Σ_k w_k · deltas[k]``. Readers:

- ``.glb`` / ``.gltf``: the mesh with the most morph targets; its names from ``extras.targetNames``
  (what Blender's exporter writes for shape keys). Sparse accessors (Blender's default for shape keys
  that move few vertices) and external or embedded buffers are read; several primitives of that mesh
  (one per material) are concatenated in order.
- a folder: ``neutral.obj|ply`` and one ``<name>.obj|ply`` per target, each the whole face in that pose.
- ``.npz``: ``names`` (K,) str, ``neutral`` (V, 3), and either ``targets`` (K, V, 3) whole faces in each
  pose or ``deltas`` (K, V, 3) displacements; optional ``faces`` (F, 3) and ``region_<name>`` index arrays.

``check_rig`` refuses what cannot be solved for and says which target is at fault: empty or duplicate
names, non-finite coordinates, a target equal to the neutral, targets that are linear combinations
of others. A glTF export may split vertices along UV seams or sharp edges; ``match_topology`` maps such a
rig back onto the animation's vertices by position when the vertex counts differ.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from talkface.errors import RigError
from talkface.io.fileio import atomic_path, read_npz, reading
from talkface.io.gltf_read import read_accessor, read_gltf_parts
from talkface.io.mesh import load_mesh

MESH_SUFFIXES = (".obj", ".ply")
DEPENDENCE_RTOL = 1e-4  # σ_min/σ_max of the unit-norm targets below which they count as linearly dependent
POSITION_MATCH_RTOL = 1e-5  # position match tolerance, relative to the neutral's extent
DIRECTION_STEMS = ("jaw", "mouth")  # jawLeft = the jaw moves left: not a half-face pair
_SIDE = re.compile(r"^(?P<stem>.+?)(?P<side>Left|Right|_L|_R|\.L|\.R|_left|_right|_l|_r)$")


@dataclass(frozen=True)
class Rig:
    """A blendshape rig.

    Attributes:
        names: K target names, unique and non-empty.
        neutral: (V, 3) float32 rest shape (metres for FLAME-like rigs).
        deltas: (K, V, 3) float32 displacement of each target from the neutral at weight 1.
        faces: (F, 3) int32 triangles or None.
        regions: name -> int32 vertex indices (e.g. ``lips``, ``jaw``), possibly empty.
        source: where it was read from (for messages).
        notes: remarks to show the user (e.g. which targets are not driven by speech).
    """

    names: tuple[str, ...]
    neutral: np.ndarray
    deltas: np.ndarray
    faces: np.ndarray | None = None
    regions: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = "rig"
    notes: tuple[str, ...] = ()

    @property
    def num_targets(self) -> int:
        return len(self.names)

    @property
    def num_vertices(self) -> int:
        return int(self.neutral.shape[0])

    def mesh(self, weights: np.ndarray) -> np.ndarray:
        """(T, K) weights → (T, V, 3) float32 vertices."""
        w = np.asarray(weights, dtype=np.float64)
        flat = w @ self.deltas.reshape(self.num_targets, -1).astype(np.float64)
        return (self.neutral[None].astype(np.float64) + flat.reshape(w.shape[0], -1, 3)).astype(np.float32)


def symmetric_pairs(names: tuple[str, ...] | list[str]) -> list[tuple[int, int]]:
    """(left, right) index pairs of targets named ``…Left``/``…Right`` (also ``_L``/``_R``, ``.L``/``.R``).

    ARKit's ``jawLeft``/``jawRight`` and ``mouthLeft``/``mouthRight`` are excluded: there the side is the
    direction of the motion, not the half of the face, so tying them would be wrong.
    """
    index = {n: i for i, n in enumerate(names)}
    partner = {"Left": "Right", "_L": "_R", ".L": ".R", "_left": "_right", "_l": "_r"}
    pairs = []
    for name, i in index.items():
        m = _SIDE.match(name)
        if m and m["side"] in partner and m["stem"].lower() not in DIRECTION_STEMS:
            j = index.get(m["stem"] + partner[m["side"]])
            if j is not None:
                pairs.append((i, j))
    return pairs


def check_rig(rig: Rig, num_vertices: int | None = None) -> Rig:
    """Refuse a rig that cannot be solved for; return it unchanged otherwise.

    Raises:
        RigError: naming ``rig.source`` and the target: wrong vertex count, empty or duplicate names,
        non-finite coordinates, a target equal to the neutral, linearly dependent targets.
    """
    src, names = rig.source, list(rig.names)
    if rig.neutral.ndim != 2 or rig.neutral.shape[1] != 3 or rig.neutral.shape[0] == 0:
        raise RigError(f"rig {src}: the neutral has shape {rig.neutral.shape}; expected (V, 3)")
    if num_vertices is not None and rig.num_vertices != num_vertices:
        raise RigError(f"rig {src} has {rig.num_vertices} vertices, the animation {num_vertices}: a rig must be on "
                       "the animation's topology (same vertex count and order); build it on the model's template")
    if not names:
        raise RigError(f"rig {src} has no targets; expected named blendshape targets (e.g. jawOpen)")
    if rig.deltas.shape != (len(names), rig.num_vertices, 3):
        raise RigError(f"rig {src}: targets have shape {rig.deltas.shape}; expected ({len(names)}, "
                       f"{rig.num_vertices}, 3) (one per name, on the neutral's vertices)")
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise RigError(f"rig {src}: target {i} has an empty name; give every target a unique name")
        if name in seen:
            raise RigError(f"rig {src}: target name {name!r} appears twice (targets {seen[name]} and {i}); "
                           "names must be unique")
        seen[name] = i
    if not np.isfinite(rig.neutral).all():
        bad = int(np.flatnonzero(~np.isfinite(rig.neutral).all(axis=1))[0])
        raise RigError(f"rig {src}: the neutral has non-finite coordinates (NaN or inf) at vertex {bad}")
    finite = np.isfinite(rig.deltas).all(axis=2)
    if not finite.all():
        k, v = (int(x[0]) for x in np.nonzero(~finite))
        raise RigError(f"rig {src}: target {names[k]!r} has non-finite coordinates (NaN or inf) at vertex {v}")
    extent = float(np.ptp(rig.neutral, axis=0).max()) or 1.0
    moves = np.abs(rig.deltas).reshape(len(names), -1).max(axis=1)
    for k in np.flatnonzero(moves <= 1e-7 * extent):
        raise RigError(f"rig {src}: target {names[k]!r} is identical to the neutral (it moves no vertex); "
                       "remove it or re-export it with its shape")
    _check_independent(rig)
    return rig


def _check_independent(rig: Rig) -> None:
    """Refuse targets that are (nearly) linear combinations of others, naming them."""
    a = rig.deltas.reshape(rig.num_targets, -1).astype(np.float64)
    norms = np.linalg.norm(a, axis=1)
    a = a / norms[:, None]  # unit targets: dependence, not scale
    gram = a @ a.T
    evals, evecs = np.linalg.eigh(gram)  # singular values² of the unit-target matrix, ascending
    if evals[0] > DEPENDENCE_RTOL**2 * evals[-1]:  # σ_min/σ_max of the unit targets above the tolerance
        return
    v = evecs[:, 0]
    involved = np.flatnonzero(np.abs(v) > 0.05 * np.abs(v).max())
    lead = int(involved[np.argmax(np.abs(v[involved]))])
    others = [int(i) for i in involved if i != lead]
    coef = [(-v[i] / v[lead] * norms[lead] / norms[i], rig.names[i]) for i in others]
    combo = " ".join(f"{'-' if c < 0 else '+'} {abs(c):.3g}·{n}" for c, n in coef).lstrip("+ ")
    raise RigError(f"rig {rig.source}: targets {', '.join(repr(rig.names[i]) for i in involved)} are linearly "
                   f"dependent ({rig.names[lead]} ≈ {combo or '0'}), so their weights cannot be told apart; "
                   "remove one of them or make it move differently")


def make_rig(names: Any, neutral: Any, *, targets: Any = None, deltas: Any = None, faces: Any = None,
             regions: dict[str, Any] | None = None, source: str = "rig", notes: tuple[str, ...] = (),
             num_vertices: int | None = None) -> Rig:
    """Build and check a rig from whole target shapes (``targets``) or displacements (``deltas``).

    Args:
        names: K target names.
        neutral: (V, 3) rest shape.
        targets: (K, V, 3) faces in each target's pose; or
        deltas: (K, V, 3) displacements from the neutral.
        faces: (F, 3) triangles or None.
        regions: name -> vertex indices.
        source: the file it came from (for messages).
        num_vertices: the vertex count the rig must have (the animation's), checked when given.
    """
    name_list = tuple(str(n) for n in np.asarray(names).reshape(-1).tolist()) if names is not None else ()
    neutral_arr = np.asarray(neutral, dtype=np.float64)
    if (targets is None) == (deltas is None):
        raise RigError(f"rig {source}: give either whole target shapes ('targets') or displacements ('deltas')")
    if deltas is not None:
        delta_arr = np.asarray(deltas, dtype=np.float64)
    else:
        target_arr = np.asarray(targets, dtype=np.float64)
        if target_arr.ndim == 3 and target_arr.shape[1:] == neutral_arr.shape:
            delta_arr = target_arr - neutral_arr[None]
            _hint_if_deltas(target_arr, neutral_arr, source)
        else:
            delta_arr = target_arr
    if delta_arr.ndim == 2 and neutral_arr.ndim == 2 and delta_arr.shape[1] == neutral_arr.size:
        delta_arr = delta_arr.reshape(delta_arr.shape[0], -1, 3)
    face_arr = None if faces is None else np.asarray(faces, dtype=np.int64)
    if face_arr is not None and (face_arr.ndim != 2 or face_arr.shape[1] != 3 or face_arr.size == 0):
        face_arr = None
    if face_arr is not None and (face_arr.min() < 0 or face_arr.max() >= neutral_arr.shape[0]):
        raise RigError(f"rig {source}: faces index vertices outside 0..{neutral_arr.shape[0] - 1}")
    regs = {}
    for name, idx in (regions or {}).items():
        arr = np.asarray(idx).reshape(-1)
        if arr.size and (not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0 or arr.max() >= len(neutral_arr)):
            raise RigError(f"rig {source}: region {name!r} has indices outside 0..{len(neutral_arr) - 1}")
        regs[name] = np.unique(arr.astype(np.int32))
    rig = Rig(names=name_list, neutral=neutral_arr.astype(np.float32), deltas=delta_arr.astype(np.float32),
              faces=None if face_arr is None else face_arr.astype(np.int32), regions=regs, source=source,
              notes=tuple(notes))
    return check_rig(rig, num_vertices)


def _hint_if_deltas(targets: np.ndarray, neutral: np.ndarray, source: str) -> None:
    """Whole target shapes sit where the neutral sits; displacements sit near 0. Say so instead of a riddle."""
    scale = np.abs(neutral - neutral.mean(axis=0)).mean()
    if scale > 0 and np.abs(targets).mean() < 0.05 * scale:
        raise RigError(f"rig {source}: 'targets' look like displacements (they are near 0, the neutral is not); "
                       "store displacements under the key 'deltas', whole target faces under 'targets'")


# ------------------------------------------------------------------------------------------ readers
def load_rig(path: str | os.PathLike[str], num_vertices: int | None = None,
             reference: np.ndarray | None = None) -> Rig:
    """Read and check a rig (see the module docstring for the formats).

    Args:
        path: ``.glb``/``.gltf``, ``.npz`` or a folder.
        num_vertices: the animation's vertex count, checked when given.
        reference: (V, 3) the animation's neutral: a rig with another vertex count (a glTF export that
            split vertices) is mapped onto it by position (``match_topology``).

    Raises:
        RigError: unreadable, foreign or invalid rig, naming the file and the target.
    """
    p = Path(path)
    if p.is_dir():
        rig = _read_folder(p)
    elif not p.is_file():
        raise RigError(f"--rig {p}: no such file or folder; expected a .glb/.gltf, an .npz or a folder of meshes")
    elif p.suffix.lower() == ".npz":
        rig = _read_npz(p)
    elif p.suffix.lower() in (".glb", ".gltf"):
        rig = _read_gltf(p)
    else:
        raise RigError(f"--rig {p}: unknown rig format {p.suffix.lower()!r}; expected .glb, .gltf, .npz or a folder "
                       "holding neutral.obj and one <name>.obj per target")
    return fit_rig(rig, num_vertices=num_vertices, reference=reference)


def fit_rig(rig: Rig, *, num_vertices: int | None = None, reference: np.ndarray | None = None) -> Rig:
    """Check ``rig`` against the animation: mapped onto ``reference`` when counts differ, then the count checked."""
    if reference is not None and rig.num_vertices != len(reference):
        rig = match_topology(rig, reference)
    expected = num_vertices if num_vertices is not None else (None if reference is None else len(reference))
    return check_rig(rig, expected) if expected is not None and rig.num_vertices != expected else rig


def _read_npz(p: Path) -> Rig:
    z = read_npz(p, "a rig", RigError, "expected an npz with names, neutral and targets (or deltas)")
    missing = [k for k in ("names", "neutral") if k not in z] + ([] if "targets" in z or "deltas" in z
                                                                 else ["targets (or deltas)"])
    if missing:
        raise RigError(f"rig {p}: npz lacks {', '.join(missing)} (it has {', '.join(sorted(z)) or 'nothing'}); "
                       "expected names (K,), neutral (V, 3) and targets (K, V, 3) or deltas (K, V, 3)")
    regions = {k[len("region_"):]: v for k, v in z.items() if k.startswith("region_")}
    return make_rig(z["names"], z["neutral"], targets=z.get("targets"), deltas=z.get("deltas"), faces=z.get("faces"),
                    regions=regions, source=str(p))


def _read_folder(p: Path) -> Rig:
    with reading(p, "a rig folder", RigError, "expected neutral.obj and one <name>.obj per target"):
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in MESH_SUFFIXES and f.is_file())
    neutral_files = [f for f in files if f.stem == "neutral"]
    if not neutral_files:
        raise RigError(f"rig {p}: no neutral.obj or neutral.ply in the folder; expected neutral.obj|ply and one "
                       "<name>.obj|ply per target")
    neutral = load_mesh(neutral_files[0])
    names, shapes = [], []
    for f in files:
        if f.stem == "neutral":
            continue
        if f.stem in names:
            raise RigError(f"rig {p}: target {f.stem!r} is given twice ({f.stem}.obj and {f.stem}.ply)")
        mesh = load_mesh(f)
        if mesh.vertices.shape[0] != neutral.vertices.shape[0]:
            raise RigError(f"rig {p}: target {f.stem!r} ({f.name}) has {mesh.vertices.shape[0]} vertices, the "
                           f"neutral {neutral.vertices.shape[0]}; export every shape with the same topology")
        names.append(f.stem)
        shapes.append(mesh.vertices)
    targets = np.stack(shapes) if shapes else np.zeros((0, *neutral.vertices.shape))
    return make_rig(names, neutral.vertices, targets=targets, faces=neutral.faces, source=str(p))


def _read_gltf(p: Path) -> Rig:
    with reading(p, "a glTF rig", RigError, "re-export it as glTF 2.0 (.glb) with shape keys"):
        doc, buffers = read_gltf_parts(p, RigError)
        meshes = doc.get("meshes", [])
        scored = [(max((len(pr.get("targets", [])) for pr in m.get("primitives", [])), default=0), i)
                  for i, m in enumerate(meshes)]
        if not scored or max(scored)[0] == 0:
            raise RigError(f"rig {p}: no mesh with morph targets; export the mesh with its shape keys "
                           "(Blender: glTF export, Data > Shape Keys)")
        mesh = meshes[max(scored)[1]]
        prims = [pr for pr in mesh["primitives"] if pr.get("targets")]
        counts = {len(pr["targets"]) for pr in prims}
        if len(counts) != 1:
            raise RigError(f"rig {p}: mesh {mesh.get('name', '')!r} has primitives with different numbers of "
                           "morph targets; join them into one mesh before export")
        k = counts.pop()
        names = (mesh.get("extras") or {}).get("targetNames")
        if not isinstance(names, list) or len(names) != k:
            found = "none" if names is None else f"{len(names) if isinstance(names, list) else names!r}"
            raise RigError(f"rig {p}: mesh {mesh.get('name', '')!r} has {k} morph targets but its "
                           f"extras.targetNames has {found} names; export with shape key names (Blender writes them)")
        neutral, deltas, faces, offset = [], [], [], 0
        for pr in prims:
            pos = read_accessor(doc, buffers, pr["attributes"]["POSITION"])
            neutral.append(pos)
            deltas.append(np.stack([read_accessor(doc, buffers, t["POSITION"]) if "POSITION" in t
                                    else np.zeros_like(pos) for t in pr["targets"]]))
            if "indices" in pr and pr.get("mode", 4) == 4:
                faces.append(read_accessor(doc, buffers, pr["indices"]).reshape(-1, 3).astype(np.int64) + offset)
            offset += pos.shape[0]
    return make_rig(names, np.concatenate(neutral), deltas=np.concatenate(deltas, axis=1),
                    faces=np.concatenate(faces) if faces else None, source=str(p))


def match_topology(rig: Rig, reference: np.ndarray, what: str = "the animation's neutral") -> Rig:
    """Map a rig whose vertices were split or reordered (a glTF export) onto ``reference``'s vertices by position.

    Args:
        rig: the rig as read.
        reference: (V, 3) the animation's neutral face; the rig's neutral must contain each of its
            vertices (within 1e-5 of the face's size).
        what: how to name ``reference`` in messages.

    Returns:
        The rig on ``reference``'s vertex order (unchanged when the counts already agree).

    Raises:
        RigError: a vertex of ``reference`` has no counterpart, or split copies of a vertex move differently.
    """
    ref = np.asarray(reference, dtype=np.float64)
    if rig.num_vertices == ref.shape[0]:
        return rig
    from scipy.spatial import cKDTree

    tol = POSITION_MATCH_RTOL * float(np.ptp(ref, axis=0).max())
    dist, idx = cKDTree(rig.neutral.astype(np.float64)).query(ref, k=1)
    far = np.flatnonzero(dist > tol)
    if far.size:
        raise RigError(f"rig {rig.source} has {rig.num_vertices} vertices, {what} {ref.shape[0]}, and {far.size} "
                       f"of the latter's vertices (e.g. vertex {far[0]}) have no vertex of the rig at their position: "
                       "the rig is not on the animation's topology; build it on the model's template")
    # Split copies (UV seams) must move alike: check every rig vertex against the copy that was picked.
    _, owner = cKDTree(ref).query(rig.neutral.astype(np.float64), k=1)
    picked = rig.deltas[:, idx[owner]]
    spread = np.abs(rig.deltas - picked).max()
    if spread > tol:
        raise RigError(f"rig {rig.source}: copies of one vertex (split by the export) move differently "
                       f"(by up to {spread:.3g}); export without splitting vertices, or as an .npz or OBJ folder")
    faces = None if rig.faces is None else owner[rig.faces].astype(np.int32)
    return replace(rig, neutral=ref.astype(np.float32), deltas=np.ascontiguousarray(rig.deltas[:, idx]), faces=faces,
                   regions={k: np.unique(owner[v]).astype(np.int32) for k, v in rig.regions.items()},
                   notes=rig.notes + (f"mapped {rig.num_vertices} exported vertices onto {ref.shape[0]} by position",))


def save_rig(path: str | os.PathLike[str], rig: Rig) -> Path:
    """Write ``rig`` as an ``.npz`` (names, neutral, deltas, faces, region_<name>) atomically."""
    arrays: dict[str, Any] = {"names": np.array(rig.names), "neutral": rig.neutral, "deltas": rig.deltas}
    if rig.faces is not None:
        arrays["faces"] = rig.faces
    arrays.update({f"region_{k}": v for k, v in rig.regions.items()})
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    return Path(path)
