"""FaceFormer's processed layout (REFERENCE §4.2) -> the prepared format.

``DIR/wav/<speaker>_<sentence>.wav`` (any rate), ``DIR/vertices_npy/<speaker>_<sentence>.npy`` of
(T, V*3) or (T, V, 3) frames at the source rate, and ``DIR/templates.pkl`` ``{speaker: (V, 3)}``. This is
what FaceFormer's ``process_voca_data.py`` writes for VOCASET (still 60 fps; its loader then keeps
``[::2]``) and what FaceFormer/CodeTalker ship for BIWI (25 fps). The same frames come out as from
``prepare vocaset`` on the raw files.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from talkface.data.pickles import load_pickle
from talkface.data.prepared import (
    READ_HINT,
    ClipData,
    DatasetMeta,
    PrepareReport,
    ProgressFn,
    SourceClip,
    check_same_vertex_count,
    check_template,
    clip_key,
    file_stamp,
    frame_step_for,
    load_faces,
    write_prepared,
)
from talkface.data.splits import Splits, assign_split, resolve_splits, sentence_number, voca_splits
from talkface.data.vocaset import convert_audio
from talkface.errors import AudioError, DatasetError
from talkface.io.audio import check_audio_file
from talkface.io.fileio import file_exists, folder_exists, reading, reading_folder


def split_clip_name(stem: str) -> tuple[str, str] | None:
    """``FaceTalk_170728_03272_TA_sentence01`` -> (speaker, sentence) at the last underscore; None without one."""
    speaker, sep, sentence = stem.rpartition("_")
    return (speaker, sentence) if sep and speaker and sentence else None


def read_wav(path: Path) -> np.ndarray:
    """(S,) float32 16 kHz mono from any file libsndfile reads.

    Raises:
        DatasetError: unreadable or empty file.
    """
    import soundfile as sf

    try:
        check_audio_file(path)  # names text files and cut-off WAVs, which libsndfile reads as shorter audio
    except AudioError as e:
        raise DatasetError(f"{e} (or remove the clip)") from e
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError/RuntimeError/TypeError for bad files
        raise DatasetError(f"{path}: not a readable audio file ({e}); re-export it or remove the clip") from e
    return convert_audio(data, int(rate), str(path))


def read_motion(path: Path, step: int) -> tuple[np.ndarray, int]:
    """Frames ``[::step]`` of a (T, V*3) or (T, V, 3) ``.npy`` as (T', V, 3) float32, and the source T.

    Raises:
        DatasetError: unreadable file or a shape that is not a frame sequence.
    """
    with reading(path, "a .npy array of float vertex positions", DatasetError,
                 "re-export the motion or remove the clip"):
        mm = np.load(path, mmap_mode="r", allow_pickle=False)
    try:
        if mm.dtype == object or not np.issubdtype(mm.dtype, np.number):
            raise DatasetError(f"{path}: dtype {mm.dtype}; expected float vertex positions; re-export the motion")
        ok = (mm.ndim == 2 and mm.shape[1] % 3 == 0) or (mm.ndim == 3 and mm.shape[2] == 3)
        if not ok or mm.shape[0] == 0 or mm.size == 0:
            raise DatasetError(f"{path}: shape {mm.shape}; expected (T, V*3) or (T, V, 3) frames; re-export the "
                               "motion or remove the clip")
        frames = np.array(mm[::step], dtype=np.float32)
        return frames.reshape(frames.shape[0], -1, 3), int(mm.shape[0])
    finally:
        del mm


def load_layout_templates(path: Path) -> dict[str, np.ndarray]:
    """``templates.pkl`` -> {speaker: (V, 3) float32} (FaceFormer flattens them; both forms are read)."""
    data = load_pickle(path)
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a dict {{speaker: (V, 3) array}}, found {type(data).__name__}")
    templates = {str(k): check_template(v, str(k), str(path)) for k, v in data.items()}
    check_same_vertex_count(templates, str(path))
    return templates


def _loader(wav: Path, npy: Path, step: int, source_fps: float) -> Callable[[], ClipData]:
    def load() -> ClipData:
        vertices, source_frames = read_motion(npy, step)
        return ClipData(read_wav(wav), vertices, source_frames / source_fps)

    return load


def collect_layout_clips(root: Path, source: str, templates: dict[str, np.ndarray], splits: Splits,
                         step: int, source_fps: float) -> tuple[list[SourceClip], list[tuple[str, str]]]:
    """Pair ``wav/*.wav`` with ``vertices_npy/*.npy`` by name; list unpaired files as skipped."""
    wavs = {p.stem: p for p in (root / "wav").glob("*.wav")}
    npys = {p.stem: p for p in (root / "vertices_npy").glob("*.npy")}
    clips: list[SourceClip] = []
    skipped: list[tuple[str, str]] = []
    for stem in sorted(set(wavs) | set(npys)):
        parts = split_clip_name(stem)
        if parts is None:
            skipped.append((stem, "file name is not <speaker>_<sentence>"))
        elif stem not in npys:
            skipped.append((stem, f"no motion: vertices_npy/{stem}.npy is missing"))
        elif stem not in wavs:
            skipped.append((stem, f"no audio: wav/{stem}.wav is missing"))
        elif parts[0] not in templates:
            raise DatasetError(f"{root / 'templates.pkl'}: no template for speaker {parts[0]}, who has clips "
                               f"({stem}); add it or remove the speaker's files")
        else:
            wav, npy = wavs[stem], npys[stem]
            key = clip_key(source=source, wav=file_stamp(wav), npy=file_stamp(npy), step=step)
            split = assign_split(parts[0], sentence_number(parts[1]), splits)
            clips.append(SourceClip(parts[0], parts[1], split, key, f"{npy} + {wav}",
                                    _loader(wav, npy, step, source_fps)))
    return clips, skipped


def check_layout(root: Path, what: str) -> None:
    """Raise DatasetError unless ``root`` has wav/, vertices_npy/ and templates.pkl."""
    missing = [n for n in ("wav", "vertices_npy") if not folder_exists(root / n)]
    missing += [] if file_exists(root / "templates.pkl") else ["templates.pkl"]
    if missing:
        raise DatasetError(f"{root}: missing {', '.join(missing)}; expected {what}'s processed layout "
                           "(wav/, vertices_npy/, templates.pkl)")


def prepare_layout(root: Path, out_dir: str | os.PathLike[str], *, source: str, fps: float, source_fps: float,
                   splits: str | os.PathLike[str] | None, default_splits: Splits, default_name: str,
                   faces: str | os.PathLike[str] | None, on_progress: ProgressFn | None,
                   overwrite: bool) -> PrepareReport:
    """Shared by ``prepare_faceformer`` and ``prepare_biwi``; any OS error reading ``root`` names its file."""
    with reading_folder(root, f"it as part of the {'FaceFormer' if source == 'faceformer' else source.upper()} dataset",
                        DatasetError, READ_HINT, output=out_dir):
        return _prepare_layout(root, out_dir, source=source, fps=fps, source_fps=source_fps, splits=splits,
                               default_splits=default_splits, default_name=default_name, faces=faces,
                               on_progress=on_progress, overwrite=overwrite)


def _prepare_layout(root: Path, out_dir: str | os.PathLike[str], *, source: str, fps: float, source_fps: float,
                    splits: str | os.PathLike[str] | None, default_splits: Splits, default_name: str,
                    faces: str | os.PathLike[str] | None, on_progress: ProgressFn | None,
                    overwrite: bool) -> PrepareReport:
    check_layout(root, "FaceFormer" if source == "faceformer" else source.upper())
    step = frame_step_for(float(source_fps), float(fps))
    templates = load_layout_templates(root / "templates.pkl")
    num_vertices = next(iter(templates.values())).shape[0]
    split_spec, note = resolve_splits(splits, root, default_splits, default_name)
    triangles = load_faces(faces, num_vertices) if faces is not None else None
    clips, skipped = collect_layout_clips(root, source, templates, split_spec, step, float(source_fps))
    meta = DatasetMeta(source, float(fps), float(source_fps), step, templates, split_spec, triangles,
                       notes=(note,))
    return write_prepared(out_dir, meta, clips, skipped, on_progress=on_progress, overwrite=overwrite)


def prepare_faceformer(
    raw_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    fps: float = 30,
    source_fps: float = 60,
    splits: str | os.PathLike[str] | None = None,
    faces: str | os.PathLike[str] | None = None,
    on_progress: ProgressFn | None = None,
    overwrite: bool = False,
) -> PrepareReport:
    """Prepare a VOCASET folder already converted by FaceFormer's ``process_voca_data.py``.

    Args:
        raw_dir: folder with ``wav/``, ``vertices_npy/`` and ``templates.pkl``.
        out_dir: prepared dataset folder.
        fps: output frame rate; 30 keeps every second frame of the 60 fps npy files (FaceFormer's ``[::2]``).
        source_fps: frame rate of the npy files.
        splits: TOML split file; default ``RAW_DIR/splits.toml`` if present, else VOCA's split.
        faces: mesh whose triangles are copied to ``faces.npy`` (e.g. FLAME_sample.ply).
        on_progress: ``on_progress(done, total, clip_name)`` after each clip.
        overwrite: write into a foreign non-empty folder, rewriting every clip.

    Raises:
        DatasetError: missing/unsafe/malformed files, invalid clips, or nothing left to prepare.
        ConfigError: an invalid split file.
        OutputError: ``out_dir`` holds other data (without ``overwrite``) or cannot be written.
    """
    return prepare_layout(Path(raw_dir), out_dir, source="faceformer", fps=fps, source_fps=source_fps,
                          splits=splits, default_splits=voca_splits(),
                          default_name="VOCA's split (VOCA, FaceFormer, CodeTalker)", faces=faces,
                          on_progress=on_progress, overwrite=overwrite)
