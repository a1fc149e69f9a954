"""BIWI (REFERENCE §4.4): FaceFormer/CodeTalker's processed layout -> the prepared format, and raw ``.vl`` frames.

The processed layout is ``wav/<S>_eXX.wav`` (44.1 kHz, from the videos), ``vertices_npy/<S>_eXX.npy`` of
(T, 70110) = 23370 vertices x 3 at 25 fps (already rotated, centred and scaled by CodeTalker's Matlab
scripts), and ``templates.pkl`` ``{S: (23370, 3)}``. talkface keeps the frames as they are (no
re-normalisation) and applies BIWI's split: train e01-e32 and val e33-e36 of F2 F3 F4 M3 M4 M5, test
e37-e40 of those six and of the unseen F1 F5 F6 F7 F8 M1 M2 M6.

Raw BIWI ``faces/`` frames are binary ``.vl`` files: an unsigned vertex count, then ``float32[3 * n]``
(x, y, z per vertex), little-endian. ``read_vl`` reads one; the count's width (4 or 8 bytes) is taken
from the file size, since the format names it only as a C ``ulong``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from talkface.data.faceformer import prepare_layout
from talkface.data.prepared import PrepareReport, ProgressFn
from talkface.data.splits import biwi_splits
from talkface.errors import DatasetError
from talkface.io.fileio import folder_exists, reading, reading_folder

BIWI_FPS = 25.0
BIWI_NUM_VERTICES = 23370


def read_vl(path: str | os.PathLike[str]) -> np.ndarray:
    """One raw BIWI frame.

    Args:
        path: a ``.vl`` file.

    Returns:
        (n, 3) float32 vertex positions, in the file's units.

    Raises:
        DatasetError: missing file, or a size that matches neither a 4- nor an 8-byte vertex count.
    """
    p = Path(path)
    with reading(p, "a .vl frame", DatasetError, "copy the raw BIWI frames again"):
        data = p.read_bytes()
    for width, dtype in ((4, "<u4"), (8, "<u8")):
        if len(data) >= width:
            count = int(np.frombuffer(data, dtype=dtype, count=1)[0])
            if count > 0 and len(data) == width + 12 * count:
                vertices = np.frombuffer(data, dtype="<f4", count=3 * count, offset=width).reshape(count, 3)
                if not np.isfinite(vertices).all():
                    raise DatasetError(f"{p}: vertices contain NaN or infinite values")
                return vertices.astype(np.float32)
    raise DatasetError(f"{p}: {len(data)} bytes is not a .vl frame (a 4- or 8-byte vertex count n followed by "
                       "3*n float32 values)")


def _frame_number(path: Path) -> tuple[int, str]:
    digits = re.findall(r"\d+", path.stem)
    return (int(digits[-1]) if digits else -1, path.name)


def read_vl_folder(folder: str | os.PathLike[str]) -> np.ndarray:
    """All ``.vl`` frames of one sequence folder, ordered by the last number in their names.

    Returns:
        (T, n, 3) float32.

    Raises:
        DatasetError: no frames, or frames with different vertex counts.
    """
    root = Path(folder)
    with reading_folder(root, "a folder of .vl frames", DatasetError, "fix the link or remove the frame"):
        paths = sorted(root.glob("*.vl"), key=_frame_number)
        if not folder_exists(root) or not paths:
            raise DatasetError(f"{root}: no .vl frames found")
        frames = [read_vl(p) for p in paths]
    counts = {f.shape[0] for f in frames}
    if len(counts) != 1:
        raise DatasetError(f"{root}: frames have different vertex counts {sorted(counts)}")
    return np.stack(frames)


def prepare_biwi(
    raw_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    fps: float = BIWI_FPS,
    splits: str | os.PathLike[str] | None = None,
    faces: str | os.PathLike[str] | None = None,
    on_progress: ProgressFn | None = None,
    overwrite: bool = False,
) -> PrepareReport:
    """Prepare BIWI in FaceFormer/CodeTalker's processed layout.

    Args:
        raw_dir: folder with ``wav/``, ``vertices_npy/`` and ``templates.pkl``.
        out_dir: prepared dataset folder.
        fps: output frame rate; 25 (the capture rate) keeps every frame.
        splits: TOML split file; default ``RAW_DIR/splits.toml`` if present, else BIWI's split.
        faces: topology mesh (``BIWI.ply``, 23370 vertices) whose triangles go to ``faces.npy``.
        on_progress: ``on_progress(done, total, clip_name)`` after each clip.
        overwrite: write into a foreign non-empty folder, rewriting every clip.

    Raises:
        DatasetError: missing/unsafe/malformed files, invalid clips, or nothing left to prepare.
        ConfigError: an invalid split file.
        OutputError: ``out_dir`` holds other data (without ``overwrite``) or cannot be written.
    """
    return prepare_layout(Path(raw_dir), out_dir, source="biwi", fps=fps, source_fps=BIWI_FPS, splits=splits,
                          default_splits=biwi_splits(), default_name="BIWI's split (FaceFormer, CodeTalker)",
                          faces=faces, on_progress=on_progress, overwrite=overwrite)
