"""What the viewer may serve: the files named on the command line (or found in a named folder), by opaque id.

The page never names a path: it asks for ``/api/item/<id>/...``, and ids are handed out here, so a
request cannot reach any other file (no path traversal by construction). Animations are read with
talkface's own readers (``workflows.load_animation_for_render`` and ``load_ground_truth``, as
``talkface render`` reads them); GLB/glTF files are passed to the page's GLTFLoader unchanged. Items of a
folder are read when first asked for, so one bad file shows its message on the page and the rest still
open; a single file is read at start, so a bad one is a command-line error.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from talkface.errors import TalkfaceError, TemplateError
from talkface.evaluate import metrics
from talkface.evaluate.regions import lip_region, load_regions
from talkface.io.fileio import read_json_object
from talkface.render.overlay import ERROR_COLORMAP, colormap_lut
from talkface.workflows import load_animation_for_render, load_ground_truth

MESH_SUFFIXES = (".npz", ".npy")
GLTF_SUFFIXES = (".glb", ".gltf")
VIEW_SUFFIXES = MESH_SUFFIXES + GLTF_SUFFIXES
AUDIO_TYPES = {".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg", ".oga": "audio/ogg",
               ".mp3": "audio/mpeg", ".opus": "audio/ogg"}
ERROR_RANGE_MM = (0.0, 3.0)  # colour-map ends, as ``talkface render --error-map``


@dataclass(frozen=True)
class ViewOptions:
    """How files are read: the flags of ``talkface view`` that apply to every item.

    Attributes:
        audio: audio for a single file (``--audio``); None: the path recorded in the animation's meta.
        compare: ground truth for a single file (``--compare``).
        template: mesh with the faces (``.npy`` input has none).
        fps: frame rate for ``.npy`` input.
        regions: a region file with the lip vertices (for the lip error); None: the run's or dataset's.
    """

    audio: Path | None = None
    compare: Path | None = None
    template: Path | None = None
    fps: float | None = None
    regions: Path | None = None


@dataclass
class MeshData:
    """A vertex animation ready to send.

    Attributes:
        fps: frames per second.
        vertices: (T, V, 3) float32 metres.
        faces: (F, 3) uint32.
        gt: (T', V, 3) float32 metres or None (no ``--compare``).
        lip_errors_mm: (min(T, T'),) float64: per frame, the largest lip-vertex distance to GT in mm
            (LVE's per-frame term with the square root); None without GT or lip region.
        note: why a lip error is missing, for the page.
    """

    fps: float
    vertices: np.ndarray
    faces: np.ndarray
    gt: np.ndarray | None = None
    lip_errors_mm: np.ndarray | None = None
    note: str = ""


@dataclass
class ViewItem:
    """One file the page can show; ``data`` is filled on first use, ``error`` when reading failed."""

    id: str
    path: Path
    audio: Path | None = None
    compare: Path | None = None
    data: MeshData | None = None
    error: str | None = None
    loaded: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def kind(self) -> str:
        return "gltf" if self.path.suffix.lower() in GLTF_SUFFIXES else "mesh"

    def summary(self) -> dict[str, Any]:
        """The JSON the page's list shows."""
        return {"id": self.id, "name": self.path.name, "kind": self.kind, "error": self.error}


def lip_errors_mm(pred: np.ndarray, gt: np.ndarray, lips: np.ndarray) -> np.ndarray:
    """Per-frame lip error over the common frames: max over lip vertices of the L2 distance, in mm.

    Args:
        pred, gt: (T, V, 3) and (T', V, 3) float metres.
        lips: (K,) int vertex indices.

    Returns:
        (min(T, T'),) float64 millimetres.
    """
    n = min(len(pred), len(gt))
    return (metrics.lip_max_errors(pred[:n], gt[:n], lips).sqrt() * 1000.0).numpy().astype(np.float64)


def audio_from_meta(path: Path) -> Path | None:
    """The audio path a talkface ``.npz`` records in its meta, when that file exists; else None."""
    if path.suffix.lower() != ".npz":
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if "meta" not in z:
                return None
            meta = read_json_object(str(z["meta"]), f"{path} (meta)", TemplateError, "")
    except (OSError, ValueError, TalkfaceError):
        return None  # the animation itself is checked (with a clear message) when it is read
    audio = meta.get("audio")
    if not isinstance(audio, str) or not audio:
        return None
    found = Path(audio) if Path(audio).is_absolute() else path.parent / audio
    return found if found.is_file() and found.suffix.lower() in AUDIO_TYPES else None


def _regions_for(item: ViewItem, options: ViewOptions, num_vertices: int, meta: dict[str, Any]) -> np.ndarray | None:
    """Lip indices: ``--regions``, else the checkpoint's run folder, else GT's prepared dataset."""
    candidates = [options.regions] if options.regions is not None else []
    checkpoint = meta.get("checkpoint")
    if isinstance(checkpoint, str) and checkpoint:
        run = Path(checkpoint)
        candidates.append((run if run.is_dir() else run.parent) / "regions.npz")
    if item.compare is not None:
        candidates.append(item.compare.parent.parent / "regions.npz")
    for path in candidates:
        if path is not None and path.is_file():
            return lip_region(load_regions(path, num_vertices=num_vertices))
    return None


def load_mesh_data(item: ViewItem, options: ViewOptions) -> MeshData:
    """Read ``item``'s animation (and ground truth) as ``talkface render`` does.

    Raises:
        TemplateError, ConfigError, DatasetError: unreadable files, no faces, GT at another frame rate.
    """
    anim = load_animation_for_render(item.path, template=options.template, fps=options.fps,
                                     need_faces=item.compare is None)
    gt = load_ground_truth(item.compare, anim, template=options.template) if item.compare is not None else None
    faces = anim.faces if anim.faces is not None else gt.faces
    faces, num_vertices = np.asarray(faces), anim.vertices.shape[1]
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.min(initial=0) < 0 or faces.max(initial=0) >= num_vertices:
        raise TemplateError(f"{item.path}: faces have shape {faces.shape} or indices outside the "
                            f"{anim.vertices.shape[1]} vertices; pass --template with this mesh's topology")
    data = MeshData(anim.fps, anim.vertices, faces.astype(np.uint32))
    if gt is None:
        return data
    if gt.vertices.shape[1] != anim.vertices.shape[1]:
        raise TemplateError(f"--compare {item.compare}: {gt.vertices.shape[1]} vertices, the animation "
                            f"{anim.vertices.shape[1]}; compare results of the same mesh")
    data.gt = gt.vertices
    lips = _regions_for(item, options, anim.vertices.shape[1], anim.meta)
    if lips is None:
        data.note = "no lip region known: pass --regions (a FLAME_masks-style .pkl/.npz or BIWI lve.txt)"
    else:
        data.lip_errors_mm = lip_errors_mm(anim.vertices, gt.vertices, lips)
    return data


def check_gltf(path: Path) -> None:
    """A cheap check that ``path`` is a glTF the page can load: a GLB header, or JSON with an ``asset``.

    Raises:
        TemplateError: anything else (the page's loader would fail with a less clear message).
    """
    hint = "expected a .glb/.gltf such as talkface animate --format glb writes"
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if path.suffix.lower() == ".glb":
                if len(head) < 12 or head[:4] != b"glTF":
                    raise TemplateError(f"{path}: not a GLB file (no 'glTF' header); {hint}")
                return
            doc = json.loads(head + f.read())
    except OSError as e:
        raise TemplateError(f"{path}: cannot be read ({e.strerror}); {hint}") from e
    except (ValueError, UnicodeDecodeError) as e:
        raise TemplateError(f"{path}: not glTF JSON ({e}); {hint}") from e
    if not isinstance(doc, dict) or "asset" not in doc:
        raise TemplateError(f"{path}: JSON without a glTF 'asset' entry; {hint}")


class Catalog:
    """The items the server may serve, by id (``"0"``, ``"1"``, ... in the order given).

    Args:
        paths: animation files (``.npz``/``.npy``/``.glb``/``.gltf``).
        options: how to read them; ``audio``/``compare`` apply when there is one path.
    """

    def __init__(self, paths: list[Path], options: ViewOptions) -> None:
        self.options = options
        self.items: dict[str, ViewItem] = {}
        single = len(paths) == 1
        for index, path in enumerate(paths):
            audio = options.audio if single and options.audio is not None else audio_from_meta(path)
            compare = options.compare if single else None
            self.items[str(index)] = ViewItem(str(index), path, audio, compare)

    def get(self, item_id: str) -> ViewItem | None:
        """The item with ``item_id``, read on first use (a failure is kept in ``item.error``); None if unknown."""
        item = self.items.get(item_id)
        if item is None:
            return None
        with item.lock:
            if not item.loaded:
                try:
                    if item.kind == "gltf":
                        check_gltf(item.path)
                    else:
                        item.data = load_mesh_data(item, self.options)
                except TalkfaceError as e:
                    item.error = str(e)
                item.loaded = True
        return item

    def meta(self, item: ViewItem) -> dict[str, Any]:
        """The JSON the page needs to draw ``item`` (the arrays go separately, as binary)."""
        out: dict[str, Any] = {**item.summary(), "audio": item.audio is not None,
                               "error_range_mm": list(ERROR_RANGE_MM),
                               "colormap": np.round(colormap_lut(ERROR_COLORMAP, 64).astype(np.float64), 4).tolist()}
        data = item.data
        if data is not None:
            out |= {"fps": data.fps, "num_frames": int(data.vertices.shape[0]),
                    "num_vertices": int(data.vertices.shape[1]), "num_faces": int(data.faces.shape[0]),
                    "gt_frames": None if data.gt is None else int(data.gt.shape[0]),
                    "lip_errors_mm": None if data.lip_errors_mm is None else
                    [round(float(x), 4) for x in data.lip_errors_mm], "note": data.note}
        return json.loads(json.dumps(out))


def folder_items(folder: Path) -> list[Path]:
    """The files ``talkface view FOLDER`` lists: every animation directly inside, sorted by name.

    Raises:
        TemplateError: the folder holds none.
    """
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIEW_SUFFIXES)
    if not found:
        raise TemplateError(f"{folder}: no animation inside (looked for {', '.join(VIEW_SUFFIXES)}); give a "
                            "file or a folder of results from talkface animate")
    return found
