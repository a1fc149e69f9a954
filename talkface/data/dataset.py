"""Reading a prepared dataset (format in ``talkface.data.prepared``): metadata, templates, clips."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from talkface.config import check_number
from talkface.data.prepared import DATASET_FORMAT, DATASET_VERSION, check_faces
from talkface.data.splits import SPLIT_NAMES
from talkface.errors import ConfigError, DatasetError
from talkface.io.audio import SAMPLE_RATE
from talkface.io.fileio import Reads, file_exists, folder_exists, read_npy, read_npz, reading, reading_folder

# What ``load_prepared`` and ``load_clip`` read in a prepared dataset (the README is for people).
DATASET_READS = ("dataset.json", "manifest.jsonl", "templates.npz", "faces.npy", "regions.npz", "clips/*")


def dataset_reads(path: str | os.PathLike[str]) -> Reads:
    """The files a command reads in the prepared dataset ``path`` (for ``fileio.check_paths``)."""
    return Reads(path, path, DATASET_READS)


def clip_reads(path: str | os.PathLike[str]) -> Reads:
    """What reading one clip ``DATA/clips/X.npz`` on its own (``render --compare``) reads: the clip, and its
    dataset's ``faces.npy`` for the topology."""
    return Reads(path, Path(path).parent.parent, ("faces.npy",))


@dataclass(frozen=True)
class ClipInfo:
    """One manifest entry.

    Attributes:
        name: ``<speaker>_<sentence>``.
        split: "train" | "val" | "test" | None.
        path: absolute path of the clip ``.npz``.
        num_frames: T motion frames at the dataset fps.
        num_samples: S audio samples at 16 kHz.
    """

    name: str
    speaker: str
    sentence: str
    split: str | None
    path: Path
    num_frames: int
    num_samples: int


@dataclass(frozen=True)
class Clip:
    """One training clip.

    Attributes:
        audio: (S,) float32, 16 kHz mono in [-1, 1].
        vertices: (T, V, 3) float32 absolute positions (metres for FLAME).
        template: (V, 3) float32 neutral face of ``speaker``.
        fps: motion frame rate, Hz.
    """

    name: str
    speaker: str
    audio: np.ndarray
    vertices: np.ndarray
    template: np.ndarray
    fps: float


@dataclass(frozen=True)
class PreparedDataset:
    """A prepared dataset folder, with its small parts loaded and its clips listed (not loaded).

    Attributes:
        path: the folder.
        meta: dataset.json.
        templates: speaker -> (V, 3) float32.
        faces: (F, 3) int32 or None.
        regions: region name -> (K,) int32 vertex indices (empty when the source had none).
        clips: all manifest entries, in name order.
    """

    path: Path
    meta: dict[str, Any]
    templates: dict[str, np.ndarray]
    faces: np.ndarray | None
    regions: dict[str, np.ndarray]
    clips: list[ClipInfo]

    @property
    def fps(self) -> float:
        return float(self.meta["fps"])

    @property
    def num_vertices(self) -> int:
        return int(self.meta["num_vertices"])

    @property
    def train_speakers(self) -> list[str]:
        """Speakers in one-hot style order."""
        return list(self.meta["train_speakers"])

    def split(self, name: str) -> list[ClipInfo]:
        """Clips of split ``name`` ("train", "val" or "test").

        Raises:
            DatasetError: unknown split name.
        """
        if name not in SPLIT_NAMES:
            raise DatasetError(f"--split: unknown split {name!r} in {self.path}; expected one of {list(SPLIT_NAMES)}")
        return [c for c in self.clips if c.split == name]

    def load_clip(self, info: ClipInfo) -> Clip:
        """Read one clip file.

        Raises:
            DatasetError: missing or malformed clip file, or a speaker without template.
        """
        if info.speaker not in self.templates:
            raise DatasetError(f"{self.path / 'templates.npz'}: no template for speaker {info.speaker}; "
                               "prepare the dataset again")
        with reading(info.path, "a prepared clip", DatasetError, "prepare the dataset again"):
            present = file_exists(info.path)  # a symlink loop or a folder is named as such, not "missing"
        if not present:
            raise DatasetError(f"{info.path}: clip file missing; prepare the dataset again to restore it")
        z = read_npz(info.path, "a prepared clip", DatasetError, "prepare the dataset again")
        with reading(info.path, "a prepared clip", DatasetError, "prepare the dataset again"):
            audio, vertices, fps = z["audio"], z["vertices"], float(z["fps"])
        expected = (info.num_frames, self.num_vertices, 3)
        if vertices.shape != expected or audio.shape != (info.num_samples,):
            raise DatasetError(f"{info.path}: vertices {vertices.shape} and audio {audio.shape} disagree with the "
                               f"manifest ({expected} and ({info.num_samples},)); prepare the dataset again")
        return Clip(info.name, info.speaker, audio.astype(np.float32, copy=False),
                    vertices.astype(np.float32, copy=False), self.templates[info.speaker], fps)


def _read_json(path: Path) -> Any:
    if not file_exists(path):
        raise FileNotFoundError(path)
    with reading(path, "JSON", DatasetError, "prepare the dataset again"):
        return json.loads(path.read_text(encoding="utf-8"))


def _read_meta(root: Path) -> dict[str, Any]:
    try:
        meta = _read_json(root / "dataset.json")
    except FileNotFoundError:
        raise DatasetError(f"{root}: no dataset.json; expected a folder written by `talkface prepare`") from None
    if not isinstance(meta, dict) or meta.get("format") != DATASET_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise DatasetError(f"{root / 'dataset.json'}: format {found!r}; expected {DATASET_FORMAT!r}, a folder "
                           "written by `talkface prepare`")
    if meta.get("version") != DATASET_VERSION:
        raise DatasetError(f"{root / 'dataset.json'}: dataset format version {meta.get('version')!r}; this talkface "
                           f"reads version {DATASET_VERSION}; prepare the dataset again with this version")
    missing = [k for k in ("fps", "sample_rate", "num_vertices", "train_speakers", "splits") if k not in meta]
    if missing:
        raise DatasetError(f"{root / 'dataset.json'}: missing keys {missing}; prepare the dataset again")
    try:
        check_number(meta["fps"], "fps", low=0, low_open=True)
        check_number(meta["num_vertices"], "num_vertices", low=1, integer=True)
    except ConfigError as e:
        raise DatasetError(f"{root / 'dataset.json'}: {e}; prepare the dataset again") from e
    if meta["sample_rate"] != SAMPLE_RATE:
        raise DatasetError(f"{root / 'dataset.json'}: audio at {meta['sample_rate']} Hz; expected {SAMPLE_RATE}")
    return meta


def _read_manifest(root: Path) -> list[ClipInfo]:
    path = root / "manifest.jsonl"
    if not file_exists(path):
        raise DatasetError(f"{root}: no manifest.jsonl, so the prepare run did not finish; rerun the same "
                           "`talkface prepare` command (it resumes)")
    clips = []
    with reading(path, "a manifest", DatasetError, "prepare the dataset again"):
        text = path.read_text(encoding="utf-8")
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            e = json.loads(line)
            clips.append(ClipInfo(str(e["name"]), str(e["speaker"]), str(e["sentence"]), e["split"],
                                  root / e["file"], int(e["num_frames"]), int(e["num_samples"])))
        except (ValueError, KeyError, TypeError) as err:
            raise DatasetError(f"{path}:{number}: malformed manifest entry ({err}); prepare the dataset again") from err
    return clips


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    return read_npz(path, "an npz of arrays", DatasetError, "prepare the dataset again")


def load_prepared(path: str | os.PathLike[str]) -> PreparedDataset:
    """Open a prepared dataset folder.

    Args:
        path: the folder written by ``talkface prepare``.

    Returns:
        The ``PreparedDataset`` (clips listed, not loaded).

    Raises:
        DatasetError: not a prepared dataset, a different format version, an interrupted prepare,
            or malformed files.
    """
    root = Path(path)
    with reading_folder(root, "it as part of a prepared dataset", DatasetError,
                        "fix the link or prepare the dataset again"):
        return _load_prepared(root)


def _load_prepared(root: Path) -> PreparedDataset:
    if not folder_exists(root):
        raise DatasetError(f"{root}: no such folder; expected a dataset written by `talkface prepare`")
    meta = _read_meta(root)
    templates = {k: v.astype(np.float32, copy=False) for k, v in _read_arrays(root / "templates.npz").items()}
    bad = {k: v.shape for k, v in templates.items() if v.shape != (meta["num_vertices"], 3)}
    if bad:
        raise DatasetError(f"{root / 'templates.npz'}: templates {bad} are not ({meta['num_vertices']}, 3)")
    faces = None
    if file_exists(root / "faces.npy"):
        faces = read_npy(root / "faces.npy", "an array of mesh faces", DatasetError, "prepare the dataset again")
        faces = check_faces(faces, int(meta["num_vertices"]), str(root / "faces.npy"))
    regions = _read_arrays(root / "regions.npz") if file_exists(root / "regions.npz") else {}
    return PreparedDataset(root, meta, templates, faces, regions, _read_manifest(root))
