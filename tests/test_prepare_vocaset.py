"""``prepare vocaset`` on tiny files in VOCASET's exact raw layout (5023-vertex frames, protocol-2 pickles)."""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from talkface.data import load_prepared, prepare_faceformer, prepare_vocaset
from talkface.errors import ConfigError, DatasetError, OutputError

V = 5023
RATE = 22000  # VOCASET's raw audio rate
TRAIN, VAL, TEST = "FaceTalk_170728_03272_TA", "FaceTalk_170811_03275_TA", "FaceTalk_170809_00138_TA"
# (speaker, sentence) -> frames at 60 fps; odd counts check that [::2] keeps the last frame too
CLIPS = {(TRAIN, "sentence01"): 13, (TRAIN, "sentence02"): 10, (VAL, "sentence21"): 11, (VAL, "sentence05"): 9,
         (TEST, "sentence22"): 12}
AUDIO_ONLY = [(TEST, "sentence32")]  # one of VOCASET's two known gaps
SINE_HZ = 440.0


@dataclass
class RawVocaset:
    root: Path
    frames: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # (T60, V, 3) in time order
    audio: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # int16 at RATE
    templates: dict[str, np.ndarray] = field(default_factory=dict)


def sine(num_samples: int, rate: int) -> np.ndarray:
    return (0.5 * 32767 * np.sin(2 * np.pi * SINE_HZ * np.arange(num_samples) / rate)).astype(np.int16)


def write_raw_vocaset(root: Path, clips: dict[tuple[str, str], int] = CLIPS, seed: int = 0,
                      audio_seconds_scale: float = 1.0) -> RawVocaset:
    """Write the four VOCASET files: rows scattered in data_verts.npy, frame dicts in shuffled order."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    raw = RawVocaset(root)
    total = sum(clips.values())
    placement = rng.permutation(total)
    data = np.zeros((total, V, 3), dtype=np.float32)
    seq: dict[str, dict[str, dict[int, int]]] = {}
    audio: dict[str, dict[str, dict[str, object]]] = {}
    cursor = 0
    for speaker in sorted({s for s, _ in clips} | {s for s, _ in AUDIO_ONLY}):
        raw.templates[speaker] = rng.normal(scale=0.1, size=(V, 3)).astype(np.float32)
    for (speaker, sentence), n in clips.items():
        rows = placement[cursor:cursor + n]
        cursor += n
        frames = (raw.templates[speaker] + rng.normal(scale=0.01, size=(n, V, 3))).astype(np.float32)
        data[rows] = frames
        seq.setdefault(speaker, {})[sentence] = {int(k): int(rows[k]) for k in rng.permutation(n)}
        raw.frames[(speaker, sentence)] = frames
    for speaker, sentence in list(clips) + AUDIO_ONLY:
        n = clips.get((speaker, sentence), 12)
        wave = sine(round(RATE * n / 60 * audio_seconds_scale), RATE)
        audio.setdefault(speaker, {})[sentence] = {"audio": wave, "sample_rate": RATE}
        raw.audio[(speaker, sentence)] = wave
    np.save(root / "data_verts.npy", data)
    (root / "raw_audio_fixed.pkl").write_bytes(pickle.dumps(audio, protocol=2))
    (root / "subj_seq_to_idx.pkl").write_bytes(pickle.dumps(seq, protocol=2))
    (root / "templates.pkl").write_bytes(pickle.dumps(raw.templates, protocol=2))
    return raw


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> RawVocaset:
    return write_raw_vocaset(tmp_path_factory.mktemp("vocaset") / "raw")


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "out"
    return prepare_vocaset(raw.root, out), load_prepared(out)


def test_prepared_frames_are_the_source_frames_every_second_bit_for_bit(raw, prepared) -> None:
    _, dataset = prepared
    assert dataset.fps == 30.0 and dataset.num_vertices == V
    assert len(dataset.clips) == len(CLIPS)
    for info in dataset.clips:
        clip = dataset.load_clip(info)
        expected = raw.frames[(info.speaker, info.sentence)][::2]
        assert clip.vertices.dtype == np.float32 and clip.vertices.shape == expected.shape
        assert clip.vertices.tobytes() == expected.tobytes()
        assert info.num_frames == expected.shape[0]
        np.testing.assert_array_equal(clip.template, raw.templates[info.speaker])


def test_fps_60_keeps_every_frame(raw, tmp_path) -> None:
    prepare_vocaset(raw.root, tmp_path / "out", fps=60)
    dataset = load_prepared(tmp_path / "out")
    assert dataset.meta["frame_step"] == 1 and dataset.fps == 60.0
    info = next(c for c in dataset.clips if c.name == f"{TRAIN}_sentence01")
    assert dataset.load_clip(info).vertices.tobytes() == raw.frames[(TRAIN, "sentence01")].tobytes()
    with pytest.raises(DatasetError, match="every n-th frame"):
        prepare_vocaset(raw.root, tmp_path / "out25", fps=25)


def test_audio_is_resampled_to_16k_at_the_right_duration(raw, prepared) -> None:
    _, dataset = prepared
    for info in dataset.clips:
        clip = dataset.load_clip(info)
        source = raw.audio[(info.speaker, info.sentence)]
        assert clip.audio.dtype == np.float32 and clip.audio.ndim == 1
        assert abs(clip.audio.shape[0] - source.shape[0] * 16000 / RATE) <= 1
        # oracle: the same 440 Hz sine sampled at 16 kHz (away from the resampler's edge transients)
        t = np.arange(clip.audio.shape[0]) / 16000
        expected = 0.5 * 32767 / 32768 * np.sin(2 * np.pi * SINE_HZ * t)
        middle = slice(200, -200)
        assert np.max(np.abs(clip.audio[middle] - expected[middle])) < 2e-3


def test_voca_splits_manifest_and_metadata(raw, prepared) -> None:
    report, dataset = prepared
    assert report.clips_per_split == {"train": 2, "val": 1, "test": 1, "unassigned": 1}
    assert report.written == 5 and report.reused == 0
    assert [c.name for c in dataset.split("val")] == [f"{VAL}_sentence21"]
    assert [c.name for c in dataset.split("test")] == [f"{TEST}_sentence22"]
    assert next(c for c in dataset.clips if c.sentence == "sentence05").split is None
    assert dict(report.skipped)[f"{TEST}_sentence32"].endswith("(a known gap of VOCASET, voca issue #120)")
    meta = json.loads((dataset.path / "dataset.json").read_text())
    assert meta["format"] == "talkface-dataset" and meta["version"] == 1 and meta["source"] == "vocaset"
    assert meta["source_fps"] == 60.0 and meta["frame_step"] == 2 and meta["sample_rate"] == 16000
    assert meta["train_speakers"][:2] == ["FaceTalk_170728_03272_TA", "FaceTalk_170904_00128_TA"]
    assert len(meta["train_speakers"]) == 8 and meta["splits"]["val"]["sentences"] == [21, 40]
    lines = (dataset.path / "manifest.jsonl").read_text().splitlines()
    entry = json.loads(lines[0])
    assert set(entry) == {"name", "speaker", "sentence", "split", "file", "num_frames", "num_samples"}
    assert entry["file"] == f"clips/{entry['name']}.npz"
    assert set(dataset.templates) == {TRAIN, VAL, TEST}
    readme = (dataset.path / "README.md").read_text()
    assert "voca issue #120" in readme and "talkface-dataset" in readme
    expected_minutes = sum(c.num_samples for c in dataset.clips) / 16000 / 60
    assert report.minutes == pytest.approx(expected_minutes)


def test_rerun_reuses_clips_and_an_interrupted_run_resumes(raw, tmp_path) -> None:
    out = tmp_path / "out"

    def stop_after_two(done: int, total: int, name: str) -> None:
        assert total == len(CLIPS)
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare_vocaset(raw.root, out, on_progress=stop_after_two)
    with pytest.raises(DatasetError, match="did not finish"):
        load_prepared(out)
    assert not list((out / "clips").glob(".*"))  # no temp leftovers
    calls: list[tuple[int, int, str]] = []
    report = prepare_vocaset(raw.root, out, on_progress=lambda *a: calls.append(a))
    assert (report.reused, report.written) == (2, 3)
    assert [c[0] for c in calls] == [1, 2, 3, 4, 5]
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "clips").iterdir()}
    again = prepare_vocaset(raw.root, out)
    assert (again.reused, again.written) == (5, 0)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "clips").iterdir()} == stamps
    forced = prepare_vocaset(raw.root, out, overwrite=True)
    assert (forced.reused, forced.written) == (0, 5)
    prepare_vocaset(raw.root, out, fps=60)  # other settings: different clip keys, all rewritten
    assert load_prepared(out).fps == 60.0 and load_prepared(out).clips[0].num_frames == 13


def test_refuses_a_foreign_non_empty_output_folder(raw, tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not empty"):
        prepare_vocaset(raw.root, out)
    prepare_vocaset(raw.root, out, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    meta = json.loads((out / "dataset.json").read_text())
    (out / "dataset.json").write_text(json.dumps(meta | {"source": "biwi"}))
    with pytest.raises(OutputError, match="'biwi'"):
        prepare_vocaset(raw.root, out)


def test_data_verts_is_memory_mapped_read_only(raw, tmp_path, monkeypatch) -> None:
    modes = []
    real_load = np.load

    def spy(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(path).endswith("data_verts.npy"):
            modes.append(kwargs.get("mmap_mode"))
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(np, "load", spy)
    verts = raw.root / "data_verts.npy"
    os.chmod(verts, 0o444)
    try:
        prepare_vocaset(raw.root, tmp_path / "out")
    finally:
        os.chmod(verts, 0o644)
    assert modes and set(modes) == {"r"}


def test_malicious_templates_pickle_is_refused_without_running(raw, tmp_path) -> None:
    bad = tmp_path / "raw"
    bad.mkdir()
    for name in ("data_verts.npy", "raw_audio_fixed.pkl", "subj_seq_to_idx.pkl"):
        (bad / name).symlink_to(raw.root / name)
    marker = tmp_path / "marker"

    class Exploit:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return os.system, (f"touch {marker}",)

    (bad / "templates.pkl").write_bytes(pickle.dumps({TRAIN: Exploit()}, protocol=2))
    with pytest.raises(DatasetError, match="posix.system"):
        prepare_vocaset(bad, tmp_path / "out")
    assert not marker.exists()


def _copy_raw(raw: RawVocaset, dest: Path) -> Path:
    dest.mkdir()
    for name in ("data_verts.npy", "raw_audio_fixed.pkl", "subj_seq_to_idx.pkl", "templates.pkl"):
        (dest / name).symlink_to(raw.root / name)
    return dest


def test_invalid_data_raises_dataset_error_naming_the_clip(tmp_path) -> None:
    raw = write_raw_vocaset(tmp_path / "nan", clips={(TRAIN, "sentence01"): 6, (TRAIN, "sentence02"): 6})
    seq = pickle.loads((raw.root / "subj_seq_to_idx.pkl").read_bytes())
    data = np.load(raw.root / "data_verts.npy", mmap_mode="r+")
    data[seq[TRAIN]["sentence02"][2], 7, 1] = np.nan
    data.flush()
    del data
    with pytest.raises(DatasetError, match="sentence02 motion contains NaN"):
        prepare_vocaset(raw.root, tmp_path / "out1")

    raw = write_raw_vocaset(tmp_path / "empty", clips={(TRAIN, "sentence01"): 6})
    audio = pickle.loads((raw.root / "raw_audio_fixed.pkl").read_bytes())
    audio[TRAIN]["sentence01"]["audio"] = np.zeros(0, dtype=np.int16)
    (raw.root / "raw_audio_fixed.pkl").write_bytes(pickle.dumps(audio, protocol=2))
    with pytest.raises(DatasetError, match="sentence01.*no samples"):
        prepare_vocaset(raw.root, tmp_path / "out2")

    templates = {k: v[:100] for k, v in raw.templates.items()}
    (raw.root / "templates.pkl").write_bytes(pickle.dumps(templates, protocol=2))
    with pytest.raises(DatasetError, match="100 vertices"):
        prepare_vocaset(raw.root, tmp_path / "out3")

    (raw.root / "templates.pkl").unlink()
    with pytest.raises(DatasetError, match="missing templates.pkl"):
        prepare_vocaset(raw.root, tmp_path / "out4")


def test_duration_mismatch_is_skipped_and_nothing_left_is_an_error(tmp_path) -> None:
    raw = write_raw_vocaset(tmp_path / "short", clips={(TRAIN, "sentence01"): 12}, audio_seconds_scale=0.5)
    with pytest.raises(DatasetError, match="no clip could be prepared.*more than 10% apart"):
        prepare_vocaset(raw.root, tmp_path / "out")
    ok = write_raw_vocaset(tmp_path / "ok", clips={(TRAIN, "sentence01"): 12}, audio_seconds_scale=1.08)
    report = prepare_vocaset(ok.root, tmp_path / "out2")
    assert report.written == 1


def test_head_npz_and_splits_toml_next_to_the_raw_files(raw, tmp_path) -> None:
    src = _copy_raw(raw, tmp_path / "raw")
    faces = np.array([[0, 1, 2], [2, 3, V - 1]], dtype=np.int64)
    lips = np.array([5, 6, 7], dtype=np.int64)
    np.savez(src / "head.npz", vertices=raw.templates[TRAIN], faces=faces, lips=lips,
             eye_region=np.array([1, 2], dtype=np.int32))
    (src / "splits.toml").write_text(f'[train]\nspeakers = ["{VAL}", "{TRAIN}"]\nsentences = [1, 21]\n'
                                     f'[test]\nspeakers = ["{TEST}"]\nsentences = [22, 22]\n')
    report = prepare_vocaset(src, tmp_path / "out")
    dataset = load_prepared(tmp_path / "out")
    assert report.clips_per_split == {"train": 4, "val": 0, "test": 1, "unassigned": 0}
    assert dataset.train_speakers == [VAL, TRAIN]
    np.testing.assert_array_equal(dataset.faces, faces)
    assert dataset.faces.dtype == np.int32
    assert set(dataset.regions) == {"lips", "eye_region"}
    np.testing.assert_array_equal(dataset.regions["lips"], lips)

    np.savez(src / "head.npz", vertices=raw.templates[TRAIN], faces=faces, region_lips=lips,  # head-asset keys
             basis_jaw=raw.templates[TRAIN], format_version=np.array(1))
    prepare_vocaset(src, tmp_path / "out1")
    assert set(load_prepared(tmp_path / "out1").regions) == {"lips"}
    (src / "head.npz").unlink()
    prepare_vocaset(src, tmp_path / "out1", splits=src / "splits.toml")  # rerun without topology
    assert load_prepared(tmp_path / "out1").faces is None and load_prepared(tmp_path / "out1").regions == {}
    np.savez(src / "head.npz", vertices=raw.templates[TRAIN], faces=faces, region_lips=lips)

    mesh = tmp_path / "topology.npz"
    np.savez(mesh, vertices=raw.templates[TRAIN], faces=np.array([[4, 5, 6]]))
    prepare_vocaset(src, tmp_path / "out2", faces=mesh)
    np.testing.assert_array_equal(load_prepared(tmp_path / "out2").faces, [[4, 5, 6]])
    bad = tmp_path / "bad.npz"
    np.savez(bad, vertices=raw.templates[TRAIN], faces=np.array([[0, 1, V]]))
    with pytest.raises(DatasetError, match="face indices"):
        prepare_vocaset(src, tmp_path / "out3", faces=bad)
    np.savez(bad, vertices=raw.templates[TRAIN][:10], faces=np.array([[0, 1, 2]]))
    with pytest.raises(DatasetError, match="topology mesh has 10 vertices"):
        prepare_vocaset(src, tmp_path / "out3", faces=bad)
    (src / "splits.toml").write_text("[train]\nspeakers = []\n")
    with pytest.raises(ConfigError):
        prepare_vocaset(src, tmp_path / "out4")


def write_faceformer_layout(raw: RawVocaset, dest: Path) -> Path:
    """What FaceFormer's vocaset/process_voca_data.py makes of the raw files: 60 fps (T, V*3) npy + wavs."""
    import soundfile as sf

    (dest / "wav").mkdir(parents=True)
    (dest / "vertices_npy").mkdir()
    for (speaker, sentence), frames in raw.frames.items():
        np.save(dest / "vertices_npy" / f"{speaker}_{sentence}.npy", frames.reshape(-1, V * 3))
    for (speaker, sentence), wave in raw.audio.items():
        sf.write(dest / "wav" / f"{speaker}_{sentence}.wav", wave, RATE, subtype="PCM_16")
    (dest / "templates.pkl").write_bytes(pickle.dumps(raw.templates, protocol=2))
    return dest


def test_faceformer_layout_gives_the_same_dataset(raw, prepared, tmp_path) -> None:
    _, from_raw = prepared
    layout = write_faceformer_layout(raw, tmp_path / "ff")
    report = prepare_faceformer(layout, tmp_path / "out")
    dataset = load_prepared(tmp_path / "out")
    assert dataset.meta["source"] == "faceformer" and report.clips_per_split == {
        "train": 2, "val": 1, "test": 1, "unassigned": 1}
    assert dict(report.skipped)[f"{TEST}_sentence32"].startswith("no motion")
    assert [c.name for c in dataset.clips] == [c.name for c in from_raw.clips]
    for a, b in zip(dataset.clips, from_raw.clips, strict=True):
        ca, cb = dataset.load_clip(a), from_raw.load_clip(b)
        assert ca.vertices.tobytes() == cb.vertices.tobytes()
        assert ca.audio.tobytes() == cb.audio.tobytes()
        assert a.split == b.split


FLAME = Path("/work/shared/fixtures/flame/flame_template.npz")


@pytest.mark.skipif(not FLAME.is_file(), reason="FLAME fixture not available")
def test_flame_topology_is_copied_with_faces_option(raw, tmp_path) -> None:
    prepare_vocaset(raw.root, tmp_path / "out", faces=FLAME)
    faces = load_prepared(tmp_path / "out").faces
    assert faces.shape == (9976, 3) and faces.dtype == np.int32 and faces.max() == V - 1


def test_path_like_names_in_pickles_are_skipped_not_written(tmp_path) -> None:
    raw = write_raw_vocaset(tmp_path / "raw", clips={(TRAIN, "sentence01"): 6, ("../escape", "sentence01"): 6})
    report = prepare_vocaset(raw.root, tmp_path / "a" / "out")
    assert report.written == 1 and "../escape_sentence01" in dict(report.skipped)
    assert not (tmp_path / "a" / "escape_sentence01.npz").exists()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["out"]
