"""VOCASET's raw training data (REFERENCE §4.1) -> the prepared format.

Reads the four files of VOCASET's "Training Data" archive:

- ``data_verts.npy``: (N, V, 3) or (N, V*3) frames at 60 fps, memory-mapped read-only and read clip by clip
  (the real file is ~8 GB; only one clip's frames are in memory at a time);
- ``raw_audio_fixed.pkl``: ``{speaker: {sentence: {"audio": (S,) int16, "sample_rate": int}}}``, a Python-2
  pickle read with latin-1 strings;
- ``subj_seq_to_idx.pkl``: ``{speaker: {sentence: {frame_index: row in data_verts}}}``;
- ``templates.pkl``: ``{speaker: (V, 3)}`` neutral faces.

Frames are taken in sorted frame-index order; 30 fps keeps every second 60 fps frame starting with the
first, which is exactly FaceFormer's ``[::2]``. Every pickle goes through ``talkface.data.pickles``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from talkface.data.pickles import load_pickle
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
from talkface.data.splits import Splits, assign_split, resolve_splits, sentence_number, voca_splits
from talkface.errors import DatasetError
from talkface.io.audio import resample, to_float32
from talkface.io.fileio import file_exists, read_npz, reading, reading_folder
from talkface.presets import VOCASET_KNOWN_MISSING

VOCASET_FILES = ("data_verts.npy", "raw_audio_fixed.pkl", "templates.pkl", "subj_seq_to_idx.pkl")
VOCASET_FPS = 60.0  # capture rate of data_verts.npy
HEAD_FILE = "head.npz"  # optional topology + region masks next to the raw files (talkface's synthetic corpus)


class VertexFile:
    """Read-only access to rows of a large ``.npy`` of frames without loading it.

    The file is mapped only while a clip is read: pages touched through a long-lived mapping would stay
    in this process's resident set, so peak memory would grow towards the file size.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        mm = self._open()
        self.num_rows, self.row_shape, self.dtype = int(mm.shape[0]), tuple(mm.shape[1:]), mm.dtype
        del mm
        if self.dtype == object or not np.issubdtype(self.dtype, np.number):
            raise DatasetError(f"{path}: dtype {self.dtype}; expected float vertex positions")
        size = int(np.prod(self.row_shape)) if self.row_shape else 0
        flat_or_xyz = len(self.row_shape) == 1 or (len(self.row_shape) == 2 and self.row_shape[1] == 3)
        if not flat_or_xyz or size == 0 or size % 3:
            raise DatasetError(f"{path}: array shape ({self.num_rows}, {', '.join(map(str, self.row_shape))}); "
                               "expected (frames, V, 3) or (frames, V*3)")
        self.num_vertices = size // 3

    def _open(self) -> np.ndarray:
        with reading(self.path, "a .npy array", DatasetError, "copy the raw dataset again"):
            return np.load(self.path, mmap_mode="r", allow_pickle=False)

    def read(self, rows: np.ndarray) -> np.ndarray:
        """Frames at ``rows`` (ascending reads are sequential) as (n, V, 3) float32."""
        mm = self._open()
        try:
            frames = np.asarray(mm[rows])
        finally:
            del mm
        return frames.reshape(len(rows), self.num_vertices, 3).astype(np.float32, copy=False)


def _nested(data: Any, origin: str, what: str) -> dict[str, dict[str, Any]]:
    """Check the ``{speaker: {sentence: value}}`` shape of a VOCASET pickle."""
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise DatasetError(f"{origin}: expected a dict {{speaker: {{sentence: {what}}}}}, found {type(data).__name__}")
    return {str(s): {str(q): v for q, v in seqs.items()} for s, seqs in data.items()}


def _frame_rows(frames: Any, origin: str, num_rows: int) -> np.ndarray:
    """Rows of data_verts for one sequence, in sorted frame-index order."""
    if not isinstance(frames, dict) or not frames:
        raise DatasetError(f"{origin}: expected a non-empty {{frame_index: row}} dict, found {type(frames).__name__}")
    try:
        rows = np.array([int(frames[k]) for k in sorted(frames, key=int)], dtype=np.int64)
    except (TypeError, ValueError) as e:
        raise DatasetError(f"{origin}: frame indices and rows must be integers ({e})") from e
    if rows.min() < 0 or rows.max() >= num_rows:
        raise DatasetError(f"{origin}: rows {rows.min()}..{rows.max()} fall outside data_verts.npy "
                           f"(0..{num_rows - 1}); the files come from different VOCASET downloads")
    return rows


def _audio_entry(entry: Any, origin: str) -> tuple[np.ndarray, int]:
    """The waveform and its rate from one raw_audio_fixed.pkl entry."""
    if not isinstance(entry, dict) or "audio" not in entry or "sample_rate" not in entry:
        raise DatasetError(f"{origin}: expected {{'audio': array, 'sample_rate': int}}, found "
                           f"{sorted(entry) if isinstance(entry, dict) else type(entry).__name__}")
    audio, rate = np.asarray(entry["audio"]), entry["sample_rate"]
    if not isinstance(rate, (int, np.integer)) or int(rate) <= 0:
        raise DatasetError(f"{origin}: sample_rate {rate!r} is not a positive integer")
    if audio.dtype == object or not np.issubdtype(audio.dtype, np.number) or audio.ndim not in (1, 2):
        raise DatasetError(f"{origin}: audio is {audio.dtype} {audio.shape}; expected (S,) or (S, C) samples")
    return audio, int(rate)


def convert_audio(audio: np.ndarray, sample_rate: int, origin: str) -> np.ndarray:
    """(S,) or (S, C) PCM/float samples -> (S',) float32 at 16 kHz in [-1, 1] (channels averaged).

    Raises:
        DatasetError: no samples.
    """
    if audio.shape[0] == 0:
        raise DatasetError(f"{origin}: audio has no samples; remove the clip or re-export its audio")
    mono = to_float32(audio)
    if mono.ndim == 2:
        mono = mono.mean(axis=1)
    return resample(mono, sample_rate)


def resolve_topology(raw_dir: Path, faces: str | os.PathLike[str] | None,
                     num_vertices: int) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
    """Faces from ``--faces`` or ``RAW_DIR/head.npz``, and region index arrays from ``head.npz``.

    Returns:
        (F, 3) int32 faces or None, and {region name: (K,) int32 vertex indices}.
    """
    head = raw_dir / HEAD_FILE
    triangles = load_faces(faces, num_vertices) if faces is not None else None
    regions: dict[str, np.ndarray] = {}
    if file_exists(head):
        arrays = read_npz(head, "an npz of faces and regions", DatasetError, "copy the raw dataset again")
        if triangles is None and "faces" in arrays:
            triangles = check_faces(arrays["faces"], num_vertices, f"{head} faces")
        for name, arr in _region_arrays(arrays).items():
            if arr.size and (arr.min() < 0 or arr.max() >= num_vertices):
                raise DatasetError(f"{head}: region {name!r} indexes vertices outside 0..{num_vertices - 1}")
            regions[name] = arr.astype(np.int32)
    return triangles, regions


def _region_arrays(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Region index arrays of a head.npz: ``region_<name>`` keys (talkface's head asset) when there are
    any, else every other 1-D integer array."""
    indices = {k: v for k, v in arrays.items() if v.ndim == 1 and np.issubdtype(v.dtype, np.integer)}
    prefixed = {k[len("region_"):]: v for k, v in indices.items() if k.startswith("region_")}
    return prefixed or {k: v for k, v in indices.items() if k not in ("vertices", "faces")}


def _known_missing_reason(speaker: str, sentence: str) -> str:
    if (speaker, sentence) in VOCASET_KNOWN_MISSING:
        return "no motion in subj_seq_to_idx.pkl (a known gap of VOCASET, voca issue #120)"
    return "no motion in subj_seq_to_idx.pkl"


def _loader(store: VertexFile, rows: np.ndarray, audio: np.ndarray, rate: int, origin: str,
            step: int) -> Callable[[], ClipData]:
    def load() -> ClipData:
        vertices = store.read(rows[::step])
        return ClipData(convert_audio(audio, rate, origin), vertices, len(rows) / VOCASET_FPS)

    return load


def collect_clips(raw: Path, store: VertexFile, audio_data: Any, seq_data: Any, templates: dict[str, np.ndarray],
                  splits: Splits, step: int) -> tuple[list[SourceClip], list[tuple[str, str]]]:
    """Pair audio and motion entries into ``SourceClip``s (sorted by speaker, sentence) and list the skips."""
    audio_pkl, seq_pkl = raw / "raw_audio_fixed.pkl", raw / "subj_seq_to_idx.pkl"
    audio_all = _nested(audio_data, str(audio_pkl), "{'audio', 'sample_rate'}")
    seq_all = _nested(seq_data, str(seq_pkl), "{frame: row}")
    stamp = file_stamp(store.path)
    clips: list[SourceClip] = []
    skipped: list[tuple[str, str]] = []
    for speaker in sorted(set(audio_all) | set(seq_all)):
        audio_seqs, motion_seqs = audio_all.get(speaker, {}), seq_all.get(speaker, {})
        for sentence in sorted(set(audio_seqs) | set(motion_seqs)):
            name = f"{speaker}_{sentence}"
            if sentence not in motion_seqs:
                skipped.append((name, _known_missing_reason(speaker, sentence)))
                continue
            if sentence not in audio_seqs:
                skipped.append((name, "no audio in raw_audio_fixed.pkl"))
                continue
            if speaker not in templates:
                raise DatasetError(f"{raw / 'templates.pkl'}: no template for speaker {speaker}, who has clips; "
                                   "use the templates.pkl of the same VOCASET download")
            origin = f"{seq_pkl}[{speaker!r}][{sentence!r}]"
            rows = _frame_rows(motion_seqs[sentence], origin, store.num_rows)
            audio, rate = _audio_entry(audio_seqs[sentence], f"{audio_pkl}[{speaker!r}][{sentence!r}]")
            key = clip_key(source="vocaset", verts=stamp, rows=rows, step=step, rate=rate,
                           audio=hashlib.sha1(np.ascontiguousarray(audio).tobytes()).hexdigest(),
                           audio_shape=list(audio.shape), audio_dtype=audio.dtype.str)
            clips.append(SourceClip(speaker, sentence, assign_split(speaker, sentence_number(sentence), splits),
                                    key, f"{raw} ({speaker} {sentence})",
                                    _loader(store, rows, audio, rate, f"{audio_pkl}[{speaker!r}][{sentence!r}]", step)))
    return clips, skipped


def load_templates(path: Path) -> dict[str, np.ndarray]:
    """``templates.pkl`` -> {speaker: (V, 3) float32}, all of one size."""
    data = load_pickle(path)
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a dict {{speaker: (V, 3) array}}, found {type(data).__name__}")
    templates = {str(k): check_template(v, str(k), str(path)) for k, v in data.items()}
    check_same_vertex_count(templates, str(path))
    return templates


def prepare_vocaset(
    raw_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    fps: float = 30,
    splits: str | os.PathLike[str] | None = None,
    faces: str | os.PathLike[str] | None = None,
    on_progress: ProgressFn | None = None,
    overwrite: bool = False,
) -> PrepareReport:
    """Prepare VOCASET's raw training data for training.

    Args:
        raw_dir: folder with ``data_verts.npy``, ``raw_audio_fixed.pkl``, ``templates.pkl``,
            ``subj_seq_to_idx.pkl`` (and optionally ``head.npz``, ``splits.toml``).
        out_dir: prepared dataset folder (format in ``talkface.data.prepared``).
        fps: output frame rate; 30 keeps every second 60 fps frame, 60 keeps all.
        splits: TOML split file; default ``RAW_DIR/splits.toml`` if present, else VOCA's split.
        faces: mesh whose triangles are copied to ``faces.npy`` (e.g. FLAME_sample.ply).
        on_progress: ``on_progress(done, total, clip_name)`` after each clip.
        overwrite: write into a non-empty folder that is not a VOCASET prepare, rewriting every clip.

    Returns:
        The ``PrepareReport``.

    Raises:
        DatasetError: missing/unsafe/malformed raw files, invalid clips, or nothing left to prepare.
        ConfigError: an invalid split file.
        OutputError: ``out_dir`` holds other data (without ``overwrite``) or cannot be written.
    """
    raw = Path(raw_dir)
    with reading_folder(raw, "it as part of the VOCASET dataset", DatasetError, READ_HINT, output=out_dir):
        return _prepare_vocaset(raw, out_dir, fps=fps, splits=splits, faces=faces, on_progress=on_progress,
                                overwrite=overwrite)


def _prepare_vocaset(raw: Path, out_dir: str | os.PathLike[str], *, fps: float,
                     splits: str | os.PathLike[str] | None, faces: str | os.PathLike[str] | None,
                     on_progress: ProgressFn | None, overwrite: bool) -> PrepareReport:
    missing = [name for name in VOCASET_FILES if not file_exists(raw / name)]
    if missing:
        raise DatasetError(f"{raw}: missing {', '.join(missing)}; expected the four files of VOCASET's "
                           f"'Training Data' archive ({', '.join(VOCASET_FILES)})")
    step = frame_step_for(VOCASET_FPS, float(fps))
    store = VertexFile(raw / "data_verts.npy")
    templates = load_templates(raw / "templates.pkl")
    if next(iter(templates.values())).shape[0] != store.num_vertices:
        raise DatasetError(f"{raw}: templates.pkl has {next(iter(templates.values())).shape[0]} vertices per face "
                           f"but data_verts.npy has {store.num_vertices}; use files from one VOCASET download")
    split_spec, split_note = resolve_splits(splits, raw, voca_splits(), "VOCA's split (VOCA, FaceFormer, CodeTalker)")
    triangles, regions = resolve_topology(raw, faces, store.num_vertices)
    clips, skipped = collect_clips(raw, store, load_pickle(raw / "raw_audio_fixed.pkl"),
                                   load_pickle(raw / "subj_seq_to_idx.pkl"), templates, split_spec, step)
    meta = DatasetMeta("vocaset", float(fps), VOCASET_FPS, step, templates, split_spec, triangles, regions,
                       (split_note,))
    return write_prepared(out_dir, meta, clips, skipped, on_progress=on_progress, overwrite=overwrite)
