"""Vertex region files for the metrics: FLAME_masks-style pickles, npz, and BIWI region text files.

Formats (REFERENCE §4.5):
- ``.pkl``: a dict ``name -> int index array`` such as ``FLAME_masks.pkl`` (a latin-1 Python-2 pickle),
  read with talkface's restricted unpickler (no code runs); a bare list/array of ints (SelfTalk's
  ``BIWI_lip.pkl``) is read as ``{"lips": ...}``.
- ``.npz``: one 1-D integer array per region (``region_<name>`` keys, as in talkface's ``head.npz``, are
  read as ``<name>``); no pickled objects.
- ``.txt``: BIWI's ``lve.txt`` / ``fdd.txt``: integers separated by commas and/or whitespace; the
  region is named after the file stem. A folder is read as all its ``*.txt`` files.

Which region a metric uses: lips = ``lips``, else ``lve`` (BIWI), else ``lip``; upper face (FDD) =
``upper_face``, else ``fdd`` (BIWI), else ``forehead`` ∪ ``eye_region`` (FLAME masks, as DiffSpeaker).
The lip opening (``metrics.lip_opening``) uses ``upper_lip`` and ``lower_lip`` (talkface's synthetic head);
FLAME's masks and BIWI's files have no such regions, so there the lip region is split at the median height
of its vertices in the template (``lip_opening_regions``): for FLAME's ``lips`` that is the upper and the
lower lip, for BIWI's ``lve`` (the whole mouth area) the upper and the lower half of the mouth.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from talkface.data.pickles import load_pickle
from talkface.errors import DatasetError
from talkface.io.fileio import path_kind, read_npz, reading, reading_folder

LIP_NAMES = ("lips", "lve", "lip")
OPENING_NAMES = ("upper_lip", "lower_lip")
OPENING_SPLIT = "lip region split at the median height of its template vertices"
UPPER_NAMES = ("upper_face", "fdd")
UPPER_PARTS = ("forehead", "eye_region")


def _indices(value: Any, name: str, source: Path) -> np.ndarray:
    arr = np.asarray(value) if not isinstance(value, np.ndarray) else value
    if arr.dtype == object:
        raise DatasetError(f"{source}: region {name!r} is an object array; expected integer vertex indices")
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise DatasetError(f"{source}: region {name!r} has dtype {arr.dtype} and shape {arr.shape}; "
                           "expected a 1-D array of integer vertex indices")
    return arr.astype(np.int64)


def _read_txt(path: Path) -> np.ndarray:
    with reading(path, "a region file of ASCII vertex indices", DatasetError, "write the region file again"):
        text = path.read_text(encoding="ascii")
    tokens = [t for t in re.split(r"[\s,;]+", text.strip()) if t]
    try:
        return np.array([int(t) for t in tokens], dtype=np.int64)
    except ValueError:
        bad = next(t for t in tokens if not t.lstrip("-").isdigit())
        raise DatasetError(f"{path}: {bad!r} is not a vertex index; expected comma-separated integers "
                           "(BIWI's lve.txt / fdd.txt format)") from None


def _read_pkl(path: Path) -> dict[str, np.ndarray]:
    data = load_pickle(path)
    if isinstance(data, (list, tuple, np.ndarray)):
        return {"lips": _indices(data, "lips", path)}
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: pickle holds a {type(data).__name__}; expected a dict of region name -> "
                           "vertex indices (like FLAME_masks.pkl)")
    return {str(k): _indices(v, str(k), path) for k, v in data.items()}


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    arrays = read_npz(path, "an npz of index arrays", DatasetError, "write the region file again")
    return {k.removeprefix("region_"): _indices(v, k, path) for k, v in arrays.items()}


def load_regions(path: str | os.PathLike[str], num_vertices: int | None = None) -> dict[str, np.ndarray]:
    """Read vertex regions from a ``.pkl``, ``.npz``, ``.txt`` file or a folder of ``.txt`` files.

    Args:
        path: the region file or folder (see the module docstring).
        num_vertices: V of the mesh; when given, every index must be in 0..V-1.

    Returns:
        name -> (K,) int64 vertex indices (order and duplicates kept).

    Raises:
        DatasetError: missing path, unknown format, unreadable or unsafe content, non-integer or
            out-of-range indices, or no region at all.
    """
    p = Path(path)
    with reading_folder(p, "a region file", DatasetError, "fix the link or pass another --masks"):
        kind = path_kind(p)
    if kind == "folder":
        files = sorted(f for f in p.iterdir() if f.suffix.lower() == ".txt")
        if not files:
            raise DatasetError(f"{p}: folder has no region .txt files (BIWI's lve.txt, fdd.txt)")
        regions = {f.stem: _read_txt(f) for f in files}
    elif kind is None:
        raise DatasetError(f"{p}: no such region file")
    elif p.suffix.lower() == ".pkl":
        regions = _read_pkl(p)
    elif p.suffix.lower() == ".npz":
        regions = _read_npz(p)
    elif p.suffix.lower() == ".txt":
        regions = {p.stem: _read_txt(p)}
    else:
        raise DatasetError(f"{p}: unknown region file format {p.suffix!r}; use a FLAME_masks-style .pkl, an "
                           ".npz of index arrays, BIWI .txt files, or a folder of them")
    if not regions:
        raise DatasetError(f"{p}: holds no region")
    if num_vertices is not None:
        check_regions(regions, num_vertices, str(p))
    return regions


def check_regions(regions: dict[str, np.ndarray], num_vertices: int, source: str) -> None:
    """Raise ``DatasetError`` when a region indexes a vertex outside 0..V-1."""
    for name, idx in regions.items():
        if idx.size and (idx.min() < 0 or idx.max() >= num_vertices):
            raise DatasetError(f"{source}: region {name!r} has indices {int(idx.min())}..{int(idx.max())}, but the "
                               f"mesh has {num_vertices} vertices (0..{num_vertices - 1}); use the region file "
                               "that matches this topology")


def lip_region(regions: dict[str, np.ndarray]) -> np.ndarray | None:
    """Indices for LVE: ``lips``, else ``lve``, else ``lip``; None when there is none."""
    for name in LIP_NAMES:
        if name in regions and regions[name].size:
            return regions[name]
    return None


def upper_face(regions: dict[str, np.ndarray]) -> np.ndarray:
    """Sorted unique indices for FDD: ``upper_face``, else ``fdd``, else ``forehead`` ∪ ``eye_region``.

    Returns:
        (K,) int64; empty when no upper-face region is known.
    """
    for name in UPPER_NAMES:
        if name in regions and regions[name].size:
            return np.unique(regions[name]).astype(np.int64)
    parts = [regions[k] for k in UPPER_PARTS if k in regions]
    return np.unique(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64)


def lip_opening_regions(regions: dict[str, np.ndarray], template: Any, up_axis: int = 1,
                        ) -> tuple[np.ndarray, np.ndarray, str]:
    """Upper and lower lip vertices for the lip opening, and how they were found.

    ``upper_lip`` and ``lower_lip`` when both are there; else the lip region (``lip_region``) split at
    the median height of its vertices in ``template``: above the median is upper, the rest lower.

    Args:
        regions: name -> vertex indices.
        template: (V, 3) neutral vertices, metres (only read for the split).
        up_axis: the coordinate that points up (1: +y).

    Returns:
        (upper (K1,) int64, lower (K2,) int64, "upper_lip/lower_lip regions" or ``OPENING_SPLIT``).

    Raises:
        DatasetError: no lip region, or a lip region without height (all its vertices at one height).
    """
    if all(name in regions and regions[name].size for name in OPENING_NAMES):
        return (np.asarray(regions["upper_lip"], np.int64), np.asarray(regions["lower_lip"], np.int64),
                "upper_lip/lower_lip regions")
    lips = lip_region(regions)
    if lips is None:
        raise DatasetError(f"no lip region (named {', '.join(LIP_NAMES)} or upper_lip + lower_lip; found "
                           f"{', '.join(regions) or 'none'}); pass --masks with a region file that has one")
    lips = np.unique(np.asarray(lips, np.int64))
    heights = np.asarray(template, dtype=np.float64)[lips, up_axis]
    middle = float(np.median(heights))
    upper, lower = lips[heights > middle], lips[heights <= middle]
    if not upper.size or not lower.size:
        raise DatasetError(f"the lip region's {lips.size} vertices are all at one height in the template; "
                           "expected lips spread over height (+y up) — pass --masks with upper_lip and lower_lip")
    return upper, lower, OPENING_SPLIT
