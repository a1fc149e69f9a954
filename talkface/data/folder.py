"""Your own recordings -> the prepared format.

Layout of ``DIR``::

    DIR/<speaker>_<sentence>.wav            speech, any rate libsndfile reads
    DIR/<speaker>_<sentence>.npy            (T, V, 3) or (T, V*3) absolute vertex positions, or
    DIR/<speaker>_<sentence>/               a folder of per-frame meshes (*.obj / *.ply), ordered by the
                                            last number in their names
    DIR/templates/<speaker>.obj|.ply|.npz|.npy   the speaker's neutral face (same mesh as the frames)
    DIR/splits.toml                         optional split file (schema in talkface.data.splits)

The speaker is the name up to the last underscore. Without a split file, every speaker trains (in name
order) and sentence numbers are cut into train / val / test by ``default_splits``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from talkface.data.faceformer import read_motion, read_wav, split_clip_name
from talkface.data.prepared import (
    READ_HINT,
    ClipData,
    DatasetMeta,
    PrepareReport,
    ProgressFn,
    SourceClip,
    check_faces,
    check_same_vertex_count,
    check_template,
    clip_key,
    file_stamp,
    frame_step_for,
    load_faces,
    write_prepared,
)
from talkface.data.splits import SplitRule, Splits, assign_split, resolve_splits, sentence_number
from talkface.errors import DatasetError, TemplateError
from talkface.io.fileio import folder_exists, path_kind, reading_folder
from talkface.io.mesh import load_mesh

MESH_SUFFIXES = (".obj", ".ply")
TEMPLATE_SUFFIXES = (".obj", ".ply", ".npz", ".npy")


def default_splits(speakers: list[str], numbers: list[int]) -> Splits:
    """All speakers train; the last ~10 % of sentence numbers are test, the ~10 % before them val.

    With fewer than 3 distinct sentence numbers everything is train.
    """
    distinct = sorted(set(numbers))
    if len(distinct) < 3:
        first, last = (distinct[0], distinct[-1]) if distinct else (1, 0)
        return Splits(SplitRule(tuple(speakers), first, last), SplitRule((), 1, 0), SplitRule((), 1, 0))
    held = max(1, round(0.1 * len(distinct)))
    train_end, val_end = distinct[-2 * held - 1], distinct[-held - 1]
    everyone = tuple(speakers)
    return Splits(SplitRule(everyone, distinct[0], train_end), SplitRule(everyone, train_end + 1, val_end),
                  SplitRule(everyone, val_end + 1, distinct[-1]))


def _frame_order(path: Path) -> tuple[int, str]:
    digits = re.findall(r"\d+", path.stem)
    return (int(digits[-1]) if digits else -1, path.name)


def read_frame_vertices(path: Path) -> np.ndarray:
    """(V, 3) float32 vertices of one frame mesh; OBJ ``v`` lines are parsed directly (faces not needed).

    Raises:
        DatasetError: unreadable file or no vertices.
    """
    if path.suffix.lower() == ".obj":
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                rows = [line.split()[1:4] for line in f if line.startswith("v ")]
            vertices = np.array(rows, dtype=np.float32).reshape(-1, 3)
        except (OSError, ValueError) as e:
            raise DatasetError(f"{path}: cannot read OBJ vertices ({e})") from e
    else:
        try:
            vertices = load_mesh(path).vertices
        except TemplateError as e:
            raise DatasetError(str(e)) from e
    if vertices.shape[0] == 0:
        raise DatasetError(f"{path}: mesh has no vertices")
    return vertices


def read_mesh_frames(folder: Path, step: int) -> tuple[np.ndarray, int]:
    """Frames ``[::step]`` of a folder of per-frame meshes as (T', V, 3) float32, and the source frame count.

    Raises:
        DatasetError: no meshes, unreadable meshes or differing vertex counts.
    """
    paths = sorted((p for p in folder.iterdir() if p.suffix.lower() in MESH_SUFFIXES), key=_frame_order)
    if not paths:
        raise DatasetError(f"{folder}: no .obj or .ply frames found")
    frames = [read_frame_vertices(p) for p in paths[::step]]
    counts = {f.shape[0] for f in frames}
    if len(counts) != 1:
        raise DatasetError(f"{folder}: frames have different vertex counts {sorted(counts)}; all frames must share "
                           "one mesh")
    return np.stack(frames).astype(np.float32), len(paths)


def load_folder_templates(folder: Path) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """{speaker: (V, 3) float32} from ``folder/<speaker>.<ext>``, and the faces of the first mesh with faces."""
    if not folder_exists(folder):
        raise DatasetError(f"{folder}: no templates folder; put one neutral mesh per speaker there "
                           "(<speaker>.obj, .ply, .npz or .npy)")
    templates: dict[str, np.ndarray] = {}
    faces = None
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in TEMPLATE_SUFFIXES):
        try:
            mesh = load_mesh(path)
        except TemplateError as e:
            raise DatasetError(str(e)) from e
        templates[path.stem] = check_template(mesh.vertices, path.stem, str(path))
        faces = faces if faces is not None else mesh.faces
    check_same_vertex_count(templates, str(folder))
    return templates, faces


def _loader(wav: Path, motion: Path, step: int, source_fps: float) -> Callable[[], ClipData]:
    def load() -> ClipData:
        if path_kind(motion) == "folder":
            vertices, source_frames = read_mesh_frames(motion, step)
        else:
            vertices, source_frames = read_motion(motion, step)
        return ClipData(read_wav(wav), vertices, source_frames / source_fps)

    return load


def _motion_stamp(motion: Path) -> list[object]:
    if path_kind(motion) == "folder":
        return [[p.name, *file_stamp(p)] for p in sorted(motion.iterdir()) if p.suffix.lower() in MESH_SUFFIXES]
    return file_stamp(motion)


def _find_motion(root: Path, stem: str) -> Path | None:
    for candidate in (root / f"{stem}.npy", root / stem):
        if path_kind(candidate) is not None:  # a symlink loop raises: it is not "no motion"
            return candidate
    return None


def prepare_folder(
    raw_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    fps: float,
    source_fps: float | None = None,
    splits: str | os.PathLike[str] | None = None,
    faces: str | os.PathLike[str] | None = None,
    templates: str | os.PathLike[str] | None = None,
    on_progress: ProgressFn | None = None,
    overwrite: bool = False,
) -> PrepareReport:
    """Prepare a folder of your own recordings (layout in the module docstring).

    Args:
        raw_dir: the folder.
        out_dir: prepared dataset folder.
        fps: output frame rate (Hz).
        source_fps: frame rate of the motion files; default ``fps``. It must be a whole multiple of ``fps``.
        splits: TOML split file; default ``RAW_DIR/splits.toml`` if present, else ``default_splits``.
        faces: topology mesh; default the faces of the first template mesh that has some.
        templates: folder of per-speaker templates; default ``RAW_DIR/templates``.
        on_progress: ``on_progress(done, total, clip_name)`` after each clip.
        overwrite: write into a foreign non-empty folder, rewriting every clip.

    Raises:
        DatasetError: missing templates, unreadable or invalid clips, or nothing left to prepare.
        ConfigError: an invalid split file.
        OutputError: ``out_dir`` holds other data (without ``overwrite``) or cannot be written.
    """
    root = Path(raw_dir)
    with reading_folder(root, "it as part of the recordings folder", DatasetError, READ_HINT, output=out_dir):
        return _prepare_folder(root, out_dir, fps=fps, source_fps=source_fps, splits=splits, faces=faces,
                               templates=templates, on_progress=on_progress, overwrite=overwrite)


def _prepare_folder(root: Path, out_dir: str | os.PathLike[str], *, fps: float, source_fps: float | None,
                    splits: str | os.PathLike[str] | None, faces: str | os.PathLike[str] | None,
                    templates: str | os.PathLike[str] | None, on_progress: ProgressFn | None,
                    overwrite: bool) -> PrepareReport:
    if not folder_exists(root):
        raise DatasetError(f"{root}: no such folder")
    rate = float(source_fps if source_fps is not None else fps)
    step = frame_step_for(rate, float(fps))
    speaker_templates, mesh_faces = load_folder_templates(Path(templates) if templates else root / "templates")
    num_vertices = next(iter(speaker_templates.values())).shape[0]
    triangles = load_faces(faces, num_vertices) if faces is not None else (
        check_faces(mesh_faces, num_vertices, "template mesh") if mesh_faces is not None else None)
    found: list[tuple[str, str, Path, Path]] = []
    skipped: list[tuple[str, str]] = []
    for wav in sorted(root.glob("*.wav")):
        parts, motion = split_clip_name(wav.stem), _find_motion(root, wav.stem)
        if parts is None:
            skipped.append((wav.stem, "file name is not <speaker>_<sentence>"))
        elif motion is None:
            skipped.append((wav.stem, f"no motion: neither {wav.stem}.npy nor a folder {wav.stem}/ of meshes"))
        elif parts[0] not in speaker_templates:
            raise DatasetError(f"{root}: no template for speaker {parts[0]} (clip {wav.stem}); add "
                               f"templates/{parts[0]}.obj (or .ply, .npz, .npy)")
        else:
            found.append((parts[0], parts[1], wav, motion))
    speakers = sorted({s for s, _, _, _ in found})
    numbers = [n for _, q, _, _ in found if (n := sentence_number(q)) is not None]
    split_spec, note = resolve_splits(splits, root, default_splits(speakers, numbers),
                                      "all speakers train; the last sentence numbers are val and test")
    clips = [SourceClip(s, q, assign_split(s, sentence_number(q), split_spec),
                        clip_key(source="folder", wav=file_stamp(wav), motion=_motion_stamp(motion), step=step),
                        f"{motion} + {wav}", _loader(wav, motion, step, rate))
             for s, q, wav, motion in found]
    meta = DatasetMeta("folder", float(fps), rate, step, speaker_templates, split_spec, triangles, notes=(note,))
    return write_prepared(out_dir, meta, clips, skipped, on_progress=on_progress, overwrite=overwrite)
