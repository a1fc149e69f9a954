"""glTF 2.0 / GLB export of an ``Animation`` as one mesh with morph targets driven by a weights track.

Pure numpy + json: no glTF library is needed to write (tests re-read the files with ``pygltflib``).

Encoding (why not one target per frame): one morph target per frame with a one-hot weights track is
exact but stores T·V·3 floats of targets plus T² weights, which is ~0.5 GB of weights alone for a
5-minute clip at 30 fps. Instead the displacements ``D = vertices - base`` (T × 3V) are compressed
into K ≤ T morph targets by a truncated SVD, ``D ≈ W · B`` with W (T, K) per-frame weights and B
(K, 3V) targets, and K is the smallest rank whose float32 reconstruction error (the Euclidean
distance per vertex, max over all frames and vertices) is at most ``tolerance`` (1e-6 m by default).
Generated animations are low rank (FaceFormer's motion head is one linear layer from D features, so
K ≤ D + 1, e.g. ≤ 65 for the VOCASET model), which gives files close to the size of the T·K weights
plus K·V·3 targets. Full-rank data (noisy captures) needs K → T; when the SVD would not be smaller
than that, the writer falls back to the exact one-target-per-frame encoding.

The basis is found with a randomized range finder (Halko, Martinsson & Tropp 2011, Alg. 4.2 with a
doubling block size) over row blocks of frames, then an SVD of the small K × 3V projection, so memory
stays at a few blocks of frames beside the animation itself; the cost is O(T·V·K) per doubling.

Timing: frame k is shown at time k/fps and held until (k+1)/fps, like a video frame; the weights
track has T + 1 keys (the last frame repeated at T/fps), so the animation lasts T/fps seconds, the
length of the audio, as the issue asks; between keys the weights are interpolated (``LINEAR``, exact
at the keys; ``STEP`` holds each frame). The mesh's ``extras.targetNames`` names the targets, which
Blender's importer uses as shape-key names; Blender imports the morph targets as shape keys and the
weights track as their animation. Weights may be negative or exceed 1 (each target is scaled so that
its weights peak at ±1): Blender's importer widens the shape-key slider range to fit.
"""

from __future__ import annotations

import base64
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from talkface._version import __version__
from talkface.errors import OutputError, TemplateError
from talkface.io.fileio import atomic_path, write_bytes_atomic

FLOAT, UINT32 = 5126, 5125  # glTF componentType codes
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963
TRIANGLES, POINTS = 4, 0
GLB_MAGIC, GLB_JSON, GLB_BIN = 0x46546C67, 0x4E4F534A, 0x004E4942
BLOCK_FRAMES = 512  # rows of D processed at a time


@dataclass(frozen=True)
class MorphBasis:
    """A displacement basis: ``vertices[k] ≈ base + Σ_i weights[k, i] · targets[i]``.

    Attributes:
        base: (V, 3) float32 rest shape.
        weights: (T, K) float32 per-frame target weights.
        targets: (K, V, 3) float32 target displacements, metres.
        max_error: the largest per-vertex Euclidean reconstruction error over all frames (float32
            arithmetic as a viewer does it), metres.
        one_hot: True when the exact one-target-per-frame fallback was used.
    """

    base: np.ndarray
    weights: np.ndarray
    targets: np.ndarray
    max_error: float
    one_hot: bool


def _blocks(num: int, size: int = BLOCK_FRAMES) -> list[slice]:
    return [slice(a, min(a + size, num)) for a in range(0, num, size)]


def _displacements(vertices: np.ndarray, base: np.ndarray, rows: slice) -> np.ndarray:
    """(n, 3V) float64 displacements of frames ``rows``."""
    return (vertices[rows].astype(np.float64) - base.astype(np.float64)).reshape(rows.stop - rows.start, -1)


def reconstruction_error(vertices: np.ndarray, base: np.ndarray, weights: np.ndarray, targets: np.ndarray) -> float:
    """Max per-vertex Euclidean error of ``base + weights @ targets`` (float32 factors) vs ``vertices``.

    Args:
        vertices: (T, V, 3); base: (V, 3); weights: (T, K); targets: (K, V, 3).

    Returns:
        metres (input units).
    """
    t = np.asarray(targets, dtype=np.float32).astype(np.float64).reshape(targets.shape[0], vertices.shape[1] * 3)
    w = np.asarray(weights, dtype=np.float32).astype(np.float64)
    b32 = np.asarray(base, dtype=np.float32)
    worst = 0.0
    for rows in _blocks(vertices.shape[0]):
        approx = b32.astype(np.float64).reshape(1, -1) + w[rows] @ t
        diff = (approx - vertices[rows].astype(np.float64).reshape(approx.shape[0], -1)).reshape(-1, 3)
        worst = max(worst, float(np.sqrt((diff**2).sum(1)).max(initial=0.0)))
    return worst


def _range_basis(vertices: np.ndarray, base: np.ndarray, rank: int, rng: np.random.Generator,
                 q: np.ndarray | None) -> np.ndarray:
    """Orthonormal (T, r) basis of the range of D = vertices - base, grown by up to ``rank`` columns."""
    num = vertices.shape[0]
    omega = rng.standard_normal((vertices.shape[1] * 3, rank))
    y = np.concatenate([_displacements(vertices, base, rows) @ omega for rows in _blocks(num)])
    scale = float(np.linalg.norm(y, axis=0).max(initial=0.0))
    if q is not None and q.shape[1]:
        for _ in range(2):  # re-orthogonalise twice against the columns already found
            y -= q @ (q.T @ y)
    qy, ry = np.linalg.qr(y)
    keep = np.abs(np.diag(ry)) > 1e-13 * max(scale, 1e-300)  # columns of D's range not yet in q
    qy = qy[:, keep]
    return qy if q is None else np.concatenate([q, qy], axis=1)


def morph_basis(vertices: np.ndarray, base: np.ndarray | None = None, *, tolerance: float = 1e-6,
                seed: int = 0) -> MorphBasis:
    """Compress an animation into the fewest morph targets that reproduce every frame within ``tolerance``.

    Args:
        vertices: (T, V, 3) float, metres.
        base: (V, 3) rest shape (e.g. the neutral template); default the mean frame.
        tolerance: max per-vertex Euclidean error, metres.
        seed: of the random range finder (the result is exact to ``tolerance`` for any seed).

    Returns:
        ``MorphBasis`` with 1 ≤ K ≤ T targets (one per frame in the exact fallback).
    """
    vertices = np.asarray(vertices)
    num, nv = vertices.shape[:2]
    base32 = (vertices.astype(np.float64).mean(0) if base is None else np.asarray(base)).astype(np.float32)
    rng = np.random.default_rng(seed)
    q: np.ndarray | None = None
    step = 16
    while True:
        before = 0 if q is None else q.shape[1]
        q = _range_basis(vertices, base32, min(step, num), rng, q)
        proj = np.zeros((q.shape[1], nv * 3))
        for rows in _blocks(num):
            proj += q[rows].T @ _displacements(vertices, base32, rows)
        u, s, vt = np.linalg.svd(proj, full_matrices=False)
        full_w = (q @ u) * s  # (T, r): frames in the singular basis, strongest first
        if q.shape[1] < num and q.shape[1] > before and s.size and s[-1] > 1e3 * tolerance:
            step = q.shape[1]  # every sampled direction matters: the range is surely not complete yet
            continue
        k = _smallest_rank(vertices, base32, full_w, vt, s, tolerance)
        if k is not None and k < num:
            weights, targets = _scaled(full_w[:, :max(k, 1)], vt[:max(k, 1)], nv)
            if k == 0:  # a static animation: one zero target keeps the file valid
                weights, targets = np.zeros((num, 1), np.float32), np.zeros((1, nv, 3), np.float32)
            return MorphBasis(base32, weights, targets,
                              reconstruction_error(vertices, base32, weights, targets), one_hot=False)
        if k is not None or q.shape[1] >= num or q.shape[1] == before:
            return _one_hot_basis(vertices, base32)
        step = q.shape[1]  # double the basis


def _scaled(weights: np.ndarray, targets: np.ndarray, nv: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 (T, k) weights peaking at ±1 per target and the matching (k, V, 3) targets."""
    scale = np.abs(weights).max(0) if weights.size else np.ones(weights.shape[1])
    scale = np.where(scale > 0, scale, 1.0)
    return ((weights / scale).astype(np.float32),
            (targets * scale[:, None]).astype(np.float32).reshape(targets.shape[0], nv, 3))


def _smallest_rank(vertices: np.ndarray, base: np.ndarray, full_w: np.ndarray, vt: np.ndarray, s: np.ndarray,
                   tolerance: float) -> int | None:
    """Smallest k in 0..r with error ≤ tolerance, or None when even k = r fails.

    The error of rank k is at least the RMS of the discarded part, tail_F(k) / sqrt(T·V), so no k below
    the first one meeting that bound can pass; from there a galloping search (k, k+1, k+2, k+4, ...)
    then a binary search finds the first passing rank in a few passes over the frames (usually one).
    """
    r, nv = full_w.shape[1], vertices.shape[1]

    def ok(k: int) -> bool:
        return reconstruction_error(vertices, base, *_scaled(full_w[:, :k], vt[:k], nv)) <= tolerance

    tail = np.sqrt(np.concatenate([np.cumsum((s**2)[::-1])[::-1], [0.0]]))  # tail[k] = ||s[k:]||
    lo = int(np.argmax(tail / np.sqrt(vertices.shape[0] * nv) <= tolerance))  # tail[r] = 0 always passes
    if ok(lo):
        return lo
    step = 1
    while True:  # invariant: ok(lo) is False
        hi = min(lo + step, r)
        if ok(hi):
            break
        if hi == r:
            return None
        lo, step = hi, step * 2
    while hi - lo > 1:  # ok(hi), not ok(lo)
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _one_hot_basis(vertices: np.ndarray, base: np.ndarray) -> MorphBasis:
    num = vertices.shape[0]
    targets = (vertices.astype(np.float64) - base.astype(np.float64)).astype(np.float32)
    weights = np.eye(num, dtype=np.float32)
    return MorphBasis(base, weights, targets, reconstruction_error(vertices, base, weights, targets), one_hot=True)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) float32 unit area-weighted vertex normals (zero-area vertices get +z)."""
    v = vertices.astype(np.float64)
    n = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])
    out = np.zeros_like(v)
    for i in range(3):
        np.add.at(out, faces[:, i], n)
    length = np.linalg.norm(out, axis=1, keepdims=True)
    out = np.where(length > 0, out / np.where(length > 0, length, 1), [0.0, 0.0, 1.0])
    return out.astype(np.float32)


class _Buffer:
    """Collects binary data, bufferViews and accessors (4-byte aligned)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.views: list[dict[str, Any]] = []
        self.accessors: list[dict[str, Any]] = []

    def add(self, array: np.ndarray, kind: str, *, target: int | None = None, min_max: bool = False) -> int:
        data = np.ascontiguousarray(array)
        component = UINT32 if data.dtype == np.uint32 else FLOAT
        raw = data.astype("<u4" if component == UINT32 else "<f4").tobytes()
        view: dict[str, Any] = {"buffer": 0, "byteOffset": self.size, "byteLength": len(raw)}
        if target is not None:
            view["target"] = target
        pad = (-len(raw)) % 4
        self.chunks += [raw, b"\0" * pad]
        self.size += len(raw) + pad
        self.views.append(view)
        width = {"SCALAR": 1, "VEC3": 3}[kind]
        accessor: dict[str, Any] = {"bufferView": len(self.views) - 1, "componentType": component,
                                    "count": int(data.size // width), "type": kind}
        if min_max:
            flat = data.reshape(-1, width)
            caster = int if component == UINT32 else float
            accessor["min"] = [caster(x) for x in flat.min(0)]
            accessor["max"] = [caster(x) for x in flat.max(0)]
        self.accessors.append(accessor)
        return len(self.accessors) - 1

    def data(self) -> bytes:
        return b"".join(self.chunks)


def morph_document(base: np.ndarray, faces: np.ndarray | None, targets: np.ndarray, names: list[str],
                   weights: np.ndarray, fps: float, *, normals: bool = False, interpolation: str = "LINEAR",
                   name: str = "talkface", extras: dict[str, Any] | None = None) -> tuple[dict[str, Any], bytes]:
    """A glTF document of one mesh with named morph targets and a weights animation, and its binary buffer.

    Args:
        base: (V, 3) float32 rest shape.
        faces: (F, 3) triangles or None (points).
        targets: (K, V, 3) float32 displacements.
        names: K target names (``extras.targetNames``, Blender's shape-key names).
        weights: (T, K) per-frame weights; frame k is keyed at k/fps and the last one held until T/fps.
        fps: frames per second; normals, interpolation, name: as ``build_gltf``.
        extras: JSON-serialisable document extras.
    """
    if interpolation not in ("LINEAR", "STEP"):
        raise OutputError(f"glTF interpolation must be LINEAR or STEP, got {interpolation!r}")
    nv = base.shape[0]
    buf = _Buffer()
    attributes = {"POSITION": buf.add(np.asarray(base, np.float32), "VEC3", target=ARRAY_BUFFER, min_max=True)}
    if faces is not None and (faces.size == 0 or faces.min() < 0 or faces.max() >= nv):
        raise TemplateError(f"faces index vertices outside 0..{nv - 1}; pass the topology of this mesh")
    if normals and faces is not None:
        attributes["NORMAL"] = buf.add(vertex_normals(base, faces), "VEC3", target=ARRAY_BUFFER)
    primitive: dict[str, Any] = {"attributes": attributes, "mode": TRIANGLES if faces is not None else POINTS}
    if faces is not None:
        primitive["indices"] = buf.add(np.asarray(faces).astype(np.uint32).reshape(-1), "SCALAR",
                                       target=ELEMENT_ARRAY_BUFFER, min_max=True)
    k = targets.shape[0]
    primitive["targets"] = [{"POSITION": buf.add(np.asarray(targets[i], np.float32), "VEC3", target=ARRAY_BUFFER,
                                                 min_max=True)} for i in range(k)]
    mesh = {"name": name, "primitives": [primitive], "weights": [0.0] * k, "extras": {"targetNames": list(names)}}
    num = weights.shape[0]
    times = np.arange(num + 1, dtype=np.float64) / float(fps)  # the last frame held until T/fps
    keyed = np.concatenate([weights, weights[-1:]]).astype(np.float32)  # (T + 1, K)
    time_acc = buf.add(times.astype(np.float32), "SCALAR", min_max=True)
    weight_acc = buf.add(keyed.reshape(-1), "SCALAR")
    doc: dict[str, Any] = {
        "asset": {"version": "2.0", "generator": _generator()},
        "scene": 0, "scenes": [{"nodes": [0]}],
        "nodes": [{"name": name, "mesh": 0}],
        "meshes": [mesh],
        "animations": [{"name": "speech", "channels": [{"sampler": 0, "target": {"node": 0, "path": "weights"}}],
                        "samplers": [{"input": time_acc, "output": weight_acc, "interpolation": interpolation}]}],
        "accessors": buf.accessors, "bufferViews": buf.views,
        "buffers": [{"byteLength": buf.size}],
        "extras": {"fps": float(fps), "frames": num, "morph_targets": k, **(extras or {})},
    }
    return doc, buf.data()


def build_gltf(animation: Any, *, base: np.ndarray | None = None, tolerance: float = 1e-6,
               normals: bool = False, interpolation: str = "LINEAR",
               name: str = "talkface") -> tuple[dict[str, Any], bytes, MorphBasis]:
    """The glTF JSON document (without the buffer's ``uri``) and its binary buffer.

    Args:
        animation: an ``Animation`` (vertices (T, V, 3) metres, fps, faces or None).
        base: (V, 3) rest shape (the neutral template when known); default the mean frame.
        tolerance: see ``morph_basis``.
        normals: also store the base mesh's vertex normals (needs faces; targets carry no normal deltas).
        interpolation: "LINEAR" or "STEP" for the weights track.
        name: mesh and node name.

    Returns:
        (document dict, buffer bytes, the basis used).
    """
    vertices = np.asarray(animation.vertices, dtype=np.float32)
    if vertices.ndim != 3 or vertices.shape[2] != 3 or vertices.shape[0] == 0:
        raise TemplateError(f"animation vertices have shape {vertices.shape}; expected (T, V, 3) with T >= 1")
    basis = morph_basis(vertices, base, tolerance=tolerance)
    faces = None if animation.faces is None else np.asarray(animation.faces)
    prefix, k = "frame" if basis.one_hot else "basis", basis.targets.shape[0]
    extras = {"max_error_m": basis.max_error,
              **{key: v for key, v in getattr(animation, "meta", {}).items() if isinstance(v, (str, int, float))}}
    doc, data = morph_document(basis.base, faces, basis.targets, [f"{prefix}_{i:05d}" for i in range(k)],
                               basis.weights, float(animation.fps), normals=normals, interpolation=interpolation,
                               name=name, extras=extras)
    return doc, data, basis


def _generator() -> str:
    return f"talkface {__version__}"


def write_gltf(path: str | os.PathLike[str], animation: Any, *, binary: bool | None = None,
               base: np.ndarray | None = None, tolerance: float = 1e-6, normals: bool = False,
               interpolation: str = "LINEAR", separate_buffer: bool = False) -> Path:
    """Write ``animation`` as a glTF 2.0 file with a morph-target animation (see the module docstring).

    Args:
        path: ``.glb`` (binary) or ``.gltf`` (JSON).
        animation: an ``Animation``.
        binary: force GLB (True) or JSON (False); default by suffix.
        base: (V, 3) rest shape, e.g. the neutral template; default the mean frame.
        tolerance: max per-vertex reconstruction error, metres.
        normals: store base-mesh vertex normals.
        interpolation: "LINEAR" or "STEP".
        separate_buffer: for ``.gltf``, write the buffer to ``<stem>.bin`` beside it instead of embedding
            it as base64 (smaller, two files).

    Returns:
        ``path``.

    Raises:
        OutputError: unknown suffix or unwritable path; TemplateError: bad vertices or faces.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if binary is None:
        if suffix not in (".glb", ".gltf"):
            raise OutputError(f"{p}: glTF files end in .glb (binary) or .gltf (JSON), not {suffix!r}")
        binary = suffix == ".glb"
    doc, data, _ = build_gltf(animation, base=base, tolerance=tolerance, normals=normals,
                              interpolation=interpolation, name=p.stem or "talkface")
    return write_document(p, doc, data, binary=binary, separate_buffer=separate_buffer)


def write_document(path: Path, doc: dict[str, Any], data: bytes, *, binary: bool,
                   separate_buffer: bool = False) -> Path:
    """Write a glTF document and its buffer atomically: GLB, or JSON with the buffer embedded (or beside it)."""
    if binary:
        payload = _glb(doc, data)
        with atomic_path(path) as tmp:
            tmp.write_bytes(payload)
        return path
    if separate_buffer:
        bin_path = path.with_suffix(".bin")
        write_bytes_atomic(bin_path, data)
        doc["buffers"][0]["uri"] = bin_path.name
    else:
        doc["buffers"][0]["uri"] = "data:application/octet-stream;base64," + base64.b64encode(data).decode("ascii")
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, separators=(",", ":")), encoding="utf-8")
    return path


def _glb(doc: dict[str, Any], data: bytes) -> bytes:
    """GLB container: 12-byte header, JSON chunk (space-padded), BIN chunk (zero-padded)."""
    text = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    text += b" " * ((-len(text)) % 4)
    data += b"\0" * ((-len(data)) % 4)
    total = 12 + 8 + len(text) + 8 + len(data)
    return (struct.pack("<III", GLB_MAGIC, 2, total) + struct.pack("<II", len(text), GLB_JSON) + text
            + struct.pack("<II", len(data), GLB_BIN) + data)
