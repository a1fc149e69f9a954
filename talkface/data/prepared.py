"""The prepared-dataset format, and the one writer every ``talkface prepare`` source goes through.

Layout of a prepared dataset folder OUT:

    OUT/dataset.json     {"format": "talkface-dataset", "version": 1, "source": "vocaset" | "faceformer" |
                          "biwi" | "folder", "fps": 30.0, "sample_rate": 16000, "num_vertices": V,
                          "train_speakers": [... one-hot style order ...], "splits": {... the split spec ...},
                          "source_fps": 60.0, "frame_step": 2, "talkface_version": "..."}
    OUT/manifest.jsonl   one JSON object per prepared clip, in name order:
                          {"name": "<speaker>_<sentence>", "speaker": ..., "sentence": ...,
                           "split": "train" | "val" | "test" | null, "file": "clips/<name>.npz",
                           "num_frames": T, "num_samples": S}
    OUT/templates.npz    one (V, 3) float32 array per speaker name (neutral face, metres)
    OUT/faces.npy        optional (F, 3) int32 triangles (present when the source gave a topology)
    OUT/regions.npz      optional 1-D int32 vertex-index arrays per region name (used by metrics)
    OUT/clips/<name>.npz audio (S,) float32, 16 kHz mono in [-1, 1]; vertices (T, V, 3) float32, absolute
                          positions (metres for FLAME); fps () float64; num_frames, num_samples () int64;
                          key () str, a fingerprint of the source data and settings (resume uses it)
    OUT/README.md        human summary: clips and minutes per split, skipped clips with reasons, frame rates

Split spec (``splits`` in dataset.json): {"train": {"speakers": [...], "sentences": [first, last]},
"val": {...}, "test": {...}}; a clip goes to the first split whose speakers and inclusive sentence-number
range match it, else ``null`` (prepared but unused). ``train_speakers`` equals ``splits.train.speakers``.

Motion is subsampled from ``source_fps`` to ``fps`` by keeping every ``frame_step``-th frame starting at
the first (FaceFormer's ``[::2]`` for VOCASET's 60 fps). Audio is resampled with soxr.

Guarantees: every file is written atomically (complete or absent). Nothing is written until the first
clip has been read and validated. ``manifest.jsonl`` is written last, so a folder without it is an
interrupted (Ctrl-C) or failed prepare; rerunning the same command resumes, reusing each clip file whose
``key`` matches (finished clips are not converted again).

Over 400 lines: the format and its one writer are a single contract (what ``write_prepared``
writes is what the loader and the resume check read), so they stay in one file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from talkface._version import __version__
from talkface.data.splits import Splits, count_by_split
from talkface.errors import DatasetError, OutputError, TemplateError
from talkface.io.audio import SAMPLE_RATE
from talkface.io.fileio import atomic_path, write_text_atomic
from talkface.io.mesh import load_mesh

DATASET_FORMAT = "talkface-dataset"
DATASET_VERSION = 1
SAFE_NAME = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]*")
MAX_DURATION_MISMATCH = 0.10  # relative; FaceFormer silently interpolates over any mismatch
ProgressFn = Callable[[int, int, str], None]
# What every prepare reader says when a file of the source cannot be read at all (fileio.reading_folder).
READ_HINT = "fix the file or link (or remove it and its clip), then run prepare again"


@dataclass(frozen=True)
class ClipData:
    """One clip converted to the prepared format.

    Attributes:
        audio: (S,) float32, 16 kHz mono in [-1, 1].
        vertices: (T, V, 3) float32 absolute positions at the prepared fps.
        motion_seconds: duration of the source motion (source frames / source fps), seconds.
    """

    audio: np.ndarray
    vertices: np.ndarray
    motion_seconds: float


@dataclass(frozen=True)
class SourceClip:
    """A clip a source reader offers: its identity and a deferred loader (so a resumed prepare reads nothing).

    Attributes:
        speaker, sentence: the clip's identity; ``name`` is ``<speaker>_<sentence>``.
        split: "train" | "val" | "test" | None.
        key: fingerprint of the source bytes/settings; an existing clip file with this key is reused.
        origin: what to name in error messages (file paths or pickle entries).
        load: reads and converts the clip.
    """

    speaker: str
    sentence: str
    split: str | None
    key: str
    origin: str
    load: Callable[[], ClipData]

    @property
    def name(self) -> str:
        return f"{self.speaker}_{self.sentence}"


@dataclass(frozen=True)
class DatasetMeta:
    """What a source reader knows about the dataset as a whole.

    Attributes:
        source: "vocaset" | "faceformer" | "biwi" | "folder".
        fps, source_fps: prepared and source frame rates (Hz); ``frame_step`` = source_fps / fps.
        templates: speaker -> (V, 3) float32 neutral face.
        splits: the split spec used.
        faces: (F, 3) int32 or None.
        regions: region name -> (K,) int32 vertex indices.
        notes: extra lines for the README (e.g. where the split came from).
    """

    source: str
    fps: float
    source_fps: float
    frame_step: int
    templates: dict[str, np.ndarray]
    splits: Splits
    faces: np.ndarray | None = None
    regions: dict[str, np.ndarray] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def num_vertices(self) -> int:
        return int(next(iter(self.templates.values())).shape[0])


@dataclass(frozen=True)
class PrepareReport:
    """What a prepare run did.

    Attributes:
        out_dir: the prepared dataset folder.
        clips_per_split: clip counts for "train", "val", "test" and "unassigned".
        minutes: total audio minutes of the prepared clips.
        skipped: (clip name, reason) for every source clip not prepared.
        written: clip files written in this run.
        reused: clip files kept from an earlier run.
        minutes_per_split: audio minutes per split name (same keys as ``clips_per_split``).
    """

    out_dir: Path
    clips_per_split: dict[str, int]
    minutes: float
    skipped: list[tuple[str, str]]
    written: int
    reused: int
    minutes_per_split: dict[str, float] = field(default_factory=dict)


def clip_key(**parts: Any) -> str:
    """A fingerprint of everything a clip file depends on (JSON-able parts; arrays are hashed by bytes)."""
    import hashlib

    digest = hashlib.sha1()
    for name in sorted(parts):
        value = parts[name]
        if isinstance(value, np.ndarray):
            digest.update(f"{name}:{value.dtype.str}{value.shape}:".encode())
            digest.update(np.ascontiguousarray(value).tobytes())
        else:
            digest.update(f"{name}={json.dumps(value, sort_keys=True)};".encode())
    return digest.hexdigest()


def file_stamp(path: Path) -> list[int]:
    """(size, mtime in ns) of a file: a cheap stand-in for its content in clip keys."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def frame_step_for(source_fps: float, fps: float) -> int:
    """The integer subsampling step from ``source_fps`` to ``fps`` (60 -> 30 gives 2).

    Raises:
        DatasetError: fps not positive or ``source_fps / fps`` not a whole number.
    """
    if fps <= 0 or source_fps <= 0:
        raise DatasetError(f"frame rates must be positive; found fps={fps}, source fps={source_fps}")
    step = round(source_fps / fps)
    if step < 1 or abs(step * fps - source_fps) > 1e-6 * source_fps:
        raise DatasetError(f"cannot make {fps:g} fps from {source_fps:g} fps by keeping every n-th frame; "
                           f"choose an fps that divides {source_fps:g} (e.g. {source_fps / 2:g} or {source_fps:g})")
    return step


def check_template(vertices: Any, speaker: str, origin: str) -> np.ndarray:
    """Validate a speaker's neutral face and return it as (V, 3) float32.

    Raises:
        DatasetError: not a numeric (V, 3) / (V*3,) array, or NaN/inf.
    """
    arr = np.asarray(vertices)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise DatasetError(f"{origin}: template of {speaker} has dtype {arr.dtype}; expected float vertices")
    if arr.ndim == 1 and arr.size % 3 == 0:
        arr = arr.reshape(-1, 3)
    if arr.ndim != 2 or arr.shape[1] != 3 or arr.shape[0] == 0:
        raise DatasetError(f"{origin}: template of {speaker} has shape {arr.shape}; expected (V, 3) or (V*3,)")
    if not np.isfinite(arr).all():
        raise DatasetError(f"{origin}: template of {speaker} contains NaN or infinite values; use a clean "
                           "neutral mesh")
    return arr.astype(np.float32)


def check_same_vertex_count(templates: dict[str, np.ndarray], origin: str) -> int:
    """Return the common vertex count V of all templates.

    Raises:
        DatasetError: no templates, or templates of different sizes.
    """
    if not templates:
        raise DatasetError(f"{origin}: no speaker templates found")
    counts = {name: t.shape[0] for name, t in templates.items()}
    if len(set(counts.values())) != 1:
        raise DatasetError(f"{origin}: templates have different vertex counts {counts}; "
                           "all speakers must share one mesh")
    return next(iter(counts.values()))


def load_faces(path: str | os.PathLike[str], num_vertices: int) -> np.ndarray:
    """Triangles of a topology mesh (.ply/.obj/.npz with 'faces') for a V-vertex dataset.

    Returns:
        (F, 3) int32, 0-based.

    Raises:
        DatasetError: unreadable mesh, another vertex count, no faces, or indices outside 0..V-1.
    """
    try:
        mesh = load_mesh(path)
    except TemplateError as e:
        raise DatasetError(str(e)) from e
    if mesh.num_vertices != num_vertices:
        raise DatasetError(f"{path}: topology mesh has {mesh.num_vertices} vertices but the dataset has "
                           f"{num_vertices}; use the dataset's mesh (FLAME_sample.ply for VOCASET, BIWI.ply for BIWI)")
    return check_faces(mesh.faces, num_vertices, str(path))


def check_faces(faces: Any, num_vertices: int, origin: str) -> np.ndarray:
    """Validate (F, 3) triangle indices against V vertices; return them as int32.

    Raises:
        DatasetError: missing, wrong shape, or out-of-range indices.
    """
    arr = None if faces is None else np.asarray(faces)
    if arr is None or arr.ndim != 2 or arr.shape[1] != 3 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
        found = "none" if arr is None else f"{arr.dtype} {arr.shape}"
        raise DatasetError(f"{origin}: expected (F, 3) integer triangles, found {found}")
    if arr.min() < 0 or arr.max() >= num_vertices:
        raise DatasetError(f"{origin}: face indices span {arr.min()}..{arr.max()} but the dataset has "
                           f"{num_vertices} vertices; use the dataset's topology mesh")
    return arr.astype(np.int32)


def validate_clip(data: ClipData, clip: SourceClip, num_vertices: int) -> str | None:
    """Check a converted clip; return a skip reason for a duration mismatch, None when fine.

    Raises:
        DatasetError: empty or non-finite audio or motion, wrong shape or vertex count.
    """
    audio, vertices = data.audio, data.vertices
    if audio.ndim != 1 or audio.shape[0] == 0:
        raise DatasetError(f"{clip.origin}: clip {clip.name} has empty audio (shape {audio.shape}); "
                           "remove the clip or re-export its audio")
    if not np.isfinite(audio).all():
        raise DatasetError(f"{clip.origin}: clip {clip.name} has NaN or infinite audio samples; re-export its "
                           "audio or remove the clip")
    if not np.any(audio):
        raise DatasetError(f"{clip.origin}: clip {clip.name} audio is silent (every sample is 0); re-export its "
                           "audio or remove the clip")
    if vertices.ndim != 3 or vertices.shape[2] != 3 or vertices.shape[0] == 0:
        raise DatasetError(f"{clip.origin}: clip {clip.name} motion has shape {vertices.shape}; expected (T, V, 3); "
                           "re-export the motion or remove the clip")
    if vertices.shape[1] != num_vertices:
        raise DatasetError(f"{clip.origin}: clip {clip.name} has {vertices.shape[1]} vertices per frame but the "
                           f"templates have {num_vertices}; every clip must use the template's mesh")
    if not np.isfinite(vertices).all():
        raise DatasetError(f"{clip.origin}: clip {clip.name} motion contains NaN or infinite values; fix or "
                           "remove the clip")
    audio_seconds = audio.shape[0] / SAMPLE_RATE
    longer = max(audio_seconds, data.motion_seconds)
    if abs(audio_seconds - data.motion_seconds) > MAX_DURATION_MISMATCH * longer:
        return (f"audio lasts {audio_seconds:.2f} s but motion {data.motion_seconds:.2f} s "
                f"(more than {MAX_DURATION_MISMATCH:.0%} apart)")
    return None


def check_output_dir(out_dir: Path, source: str, *, overwrite: bool) -> None:
    """Accept a missing/empty folder or an earlier prepare of the same source; refuse anything else.

    Raises:
        OutputError: OUT is a file, or a non-empty folder that is not a prepare of ``source``
            (without ``overwrite``).
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: is a file; expected a folder for the prepared dataset")
    if not out_dir.exists() or not any(out_dir.iterdir()) or overwrite:
        return
    meta_path = out_dir / "dataset.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = None
    if isinstance(meta, dict) and meta.get("format") == DATASET_FORMAT and meta.get("source") == source:
        return
    found = f"a prepared {meta.get('source')!r} dataset" if isinstance(meta, dict) else "other files"
    raise OutputError(f"{out_dir}: is not empty (holds {found}); choose an empty folder, or pass --overwrite "
                      f"to write the {source} dataset there")


def _reusable(path: Path, key: str) -> tuple[int, int] | None:
    """(num_frames, num_samples) of an existing clip file with this key, else None."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            return int(z["num_frames"]), int(z["num_samples"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None  # unreadable: rewrite it


def write_clip(path: Path, data: ClipData, fps: float, key: str) -> None:
    """Write one clip file atomically (layout in the module docstring)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, audio=np.ascontiguousarray(data.audio, dtype=np.float32),
                 vertices=np.ascontiguousarray(data.vertices, dtype=np.float32), fps=np.float64(fps),
                 num_frames=np.int64(data.vertices.shape[0]), num_samples=np.int64(data.audio.shape[0]),
                 key=np.str_(key))


def _remove_stale(out_dir: Path) -> None:
    # A killed run can leave temp siblings; a stale manifest would describe clips of another run.
    for tmp in (out_dir / "clips").glob(".*.tmp-*"):
        tmp.unlink(missing_ok=True)
    (out_dir / "manifest.jsonl").unlink(missing_ok=True)


def _dataset_json(meta: DatasetMeta) -> dict[str, Any]:
    return {
        "format": DATASET_FORMAT, "version": DATASET_VERSION, "source": meta.source, "fps": float(meta.fps),
        "sample_rate": SAMPLE_RATE, "num_vertices": meta.num_vertices,
        "train_speakers": list(meta.splits.train_speakers), "splits": meta.splits.to_dict(),
        "source_fps": float(meta.source_fps), "frame_step": meta.frame_step, "talkface_version": __version__,
    }


def _write_static(out_dir: Path, meta: DatasetMeta) -> None:
    write_text_atomic(out_dir / "dataset.json", json.dumps(_dataset_json(meta), indent=2) + "\n")
    with atomic_path(out_dir / "templates.npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, **{name: np.asarray(t, dtype=np.float32) for name, t in sorted(meta.templates.items())})
    # Optional files left by an earlier run with other settings would describe the wrong mesh: drop them.
    if meta.faces is not None:
        with atomic_path(out_dir / "faces.npy") as tmp:
            np.save(tmp, np.asarray(meta.faces, dtype=np.int32))
    else:
        (out_dir / "faces.npy").unlink(missing_ok=True)
    if meta.regions:
        with atomic_path(out_dir / "regions.npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, **{name: np.asarray(r, dtype=np.int32) for name, r in sorted(meta.regions.items())})
    else:
        (out_dir / "regions.npz").unlink(missing_ok=True)


def _prepare_clip(out: Path, clip: SourceClip, meta: DatasetMeta, *, overwrite: bool,
                  before_write: Callable[[], None]) -> str | tuple[tuple[int, int], bool]:
    """Reuse or write one clip: ((num_frames, num_samples), written) or a skip reason.

    ``before_write`` runs before the first byte of the clip file is written (it sets the folder up).
    """
    if not SAFE_NAME.fullmatch(clip.name):  # names come from pickle keys and file names: never paths
        return "name has characters other than letters, digits, '.', '_' and '-'"
    path = out / "clips" / f"{clip.name}.npz"
    sizes = None if overwrite else _reusable(path, clip.key)
    if sizes is not None:
        return sizes, False
    data = clip.load()
    reason = validate_clip(data, clip, meta.num_vertices)
    if reason is not None:
        return reason
    before_write()
    write_clip(path, data, meta.fps, clip.key)
    return (int(data.vertices.shape[0]), int(data.audio.shape[0])), True


def write_prepared(
    out_dir: str | os.PathLike[str],
    meta: DatasetMeta,
    clips: Sequence[SourceClip],
    skipped: Sequence[tuple[str, str]] = (),
    *,
    on_progress: ProgressFn | None = None,
    overwrite: bool = False,
) -> PrepareReport:
    """Convert ``clips`` into a prepared dataset at ``out_dir`` (resuming an earlier run).

    Args:
        out_dir: destination folder (created).
        meta: dataset-wide facts (templates, fps, splits, topology).
        clips: the source clips, in the order to process them.
        skipped: clips the source reader already skipped, with reasons (e.g. known missing sequences).
        on_progress: called as ``on_progress(done, total, name)`` after each clip.
        overwrite: accept a foreign non-empty folder and rewrite every clip instead of reusing.

    Returns:
        The ``PrepareReport``.

    Raises:
        OutputError: ``out_dir`` holds something else (see ``check_output_dir``) or cannot be written.
        DatasetError: a clip is invalid, or no clip could be prepared.
    """
    out = Path(out_dir)
    check_output_dir(out, meta.source, overwrite=overwrite)
    started = False

    def start() -> None:
        # Nothing is written before the first clip passes validation, so a source whose first clip is
        # bad leaves no folder behind; after that the folder is a resumable prepare (no manifest yet).
        nonlocal started
        if not started:
            created = not out.exists()
            try:
                out.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise OutputError(f"{out}: cannot create the folder ({e.strerror}); choose another output "
                                  "folder") from e
            try:
                _remove_stale(out)
                _write_static(out, meta)
            except OutputError:  # e.g. a full disk: a folder this run made and could not fill is not left behind
                if created:
                    shutil.rmtree(out, ignore_errors=True)
                raise
            started = True

    skipped_all = list(skipped)
    entries: list[dict[str, Any]] = []
    written = reused = 0
    for done, clip in enumerate(clips, start=1):
        try:
            outcome = _prepare_clip(out, clip, meta, overwrite=overwrite, before_write=start)
        except DatasetError as e:
            if written + reused:
                raise DatasetError(f"{e}. The {written + reused} clips prepared before it are kept in {out}; "
                                   "after fixing it, rerun the same command to resume") from e
            raise
        if isinstance(outcome, str):
            skipped_all.append((clip.name, outcome))
        else:
            sizes, was_written = outcome
            written, reused = written + was_written, reused + (not was_written)
            entries.append({"name": clip.name, "speaker": clip.speaker, "sentence": clip.sentence,
                            "split": clip.split, "file": f"clips/{clip.name}.npz",
                            "num_frames": sizes[0], "num_samples": sizes[1]})
        if on_progress is not None:
            on_progress(done, len(clips), clip.name)
    if not entries:
        reasons = "; ".join(f"{n}: {r}" for n, r in skipped_all[:5]) or "the source has no clips"
        raise DatasetError(f"{out}: no clip could be prepared ({reasons}); check the source folder's layout "
                           "(e.g. <speaker>_<sentence>.wav with matching motion)")
    start()
    entries.sort(key=lambda e: e["name"])
    write_text_atomic(out / "manifest.jsonl", "".join(json.dumps(e) + "\n" for e in entries))
    report = _report(out, entries, skipped_all, written, reused)
    write_text_atomic(out / "README.md", readme_text(meta, report))
    return report


def _report(out: Path, entries: list[dict[str, Any]], skipped: list[tuple[str, str]], written: int,
            reused: int) -> PrepareReport:
    counts = count_by_split([e["split"] for e in entries])
    minutes = dict.fromkeys(counts, 0.0)
    for e in entries:
        minutes[e["split"] or "unassigned"] += e["num_samples"] / SAMPLE_RATE / 60.0
    return PrepareReport(out_dir=out, clips_per_split=counts, minutes=sum(minutes.values()),
                         skipped=skipped, written=written, reused=reused, minutes_per_split=minutes)


def _format_section() -> str:
    doc = __doc__ or ""  # stripped under python -OO
    start, end = doc.find("Layout of"), doc.find("Guarantees:")
    if start < 0 or end < 0:
        return "See the docstring of talkface/data/prepared.py.\n"
    return doc[start:end].strip() + "\n"


def readme_text(meta: DatasetMeta, report: PrepareReport) -> str:
    """The human summary written to ``OUT/README.md``."""
    lines = [f"# Prepared {meta.source} dataset", "",
             f"Written by `talkface prepare` (talkface {__version__}) into {report.out_dir}.", "",
             "| split | clips | minutes |", "|---|---:|---:|"]
    for name, count in report.clips_per_split.items():
        lines.append(f"| {name} | {count} | {report.minutes_per_split.get(name, 0.0):.2f} |")
    lines += [f"| total | {sum(report.clips_per_split.values())} | {report.minutes:.2f} |", "",
              f"Train speakers (one-hot order): {', '.join(meta.splits.train_speakers)}.", "",
              f"Frame rate: {meta.fps:g} fps, {meta.num_vertices} vertices per frame. "
              + (f"The source is {meta.source_fps:g} fps; one frame in every {meta.frame_step} is kept, starting "
                 "with the first (as FaceFormer's loader does)." if meta.frame_step > 1 else
                 f"The source is {meta.source_fps:g} fps; all frames are kept."),
              "Audio: 16 kHz mono float32, resampled with soxr.", ""]
    lines += list(meta.notes) + ([""] if meta.notes else [])
    lines.append(f"## Skipped clips ({len(report.skipped)})")
    lines += [""] + [f"- {name}: {reason}" for name, reason in report.skipped] if report.skipped else ["", "None."]
    lines += ["", "## Format", "", "```", _format_section().rstrip(), "```", ""]
    return "\n".join(lines)
