"""``prepare faceformer`` / ``biwi`` / ``folder`` and the raw BIWI ``.vl`` reader, on tiny files in each layout."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from talkface.data import load_prepared, prepare_biwi, prepare_faceformer, prepare_folder, read_vl, read_vl_folder
from talkface.data.folder import default_splits
from talkface.data.splits import assign_split
from talkface.errors import DatasetError

BIWI_V = 23370


def _wav(path: Path, seconds: float, rate: int) -> np.ndarray:
    wave = (0.3 * np.sin(2 * np.pi * 220 * np.arange(round(seconds * rate)) / rate)).astype(np.float32)
    sf.write(path, wave, rate, subtype="PCM_16")
    return wave


def write_biwi_layout(root: Path, clips: dict[str, int]) -> dict[str, np.ndarray]:
    """CodeTalker's processed BIWI: (T, 70110) float32 npy at 25 fps, 44.1 kHz wavs, templates.pkl."""
    rng = np.random.default_rng(1)
    (root / "wav").mkdir(parents=True)
    (root / "vertices_npy").mkdir()
    speakers = sorted({name.split("_")[0] for name in clips})
    templates = {s: rng.normal(size=(BIWI_V, 3)).astype(np.float32) for s in speakers}
    frames = {}
    for name, n in clips.items():
        frames[name] = (templates[name.split("_")[0]] + rng.normal(scale=0.01, size=(n, BIWI_V, 3))).astype(np.float32)
        np.save(root / "vertices_npy" / f"{name}.npy", frames[name].reshape(n, -1))
        _wav(root / "wav" / f"{name}.wav", n / 25, 44100)
    # FaceFormer keeps BIWI templates flattened; CodeTalker as (V, 3): accept both
    flat = {s: (t.reshape(-1) if i % 2 else t) for i, (s, t) in enumerate(templates.items())}
    (root / "templates.pkl").write_bytes(pickle.dumps(flat, protocol=2))
    return frames


def test_biwi_layout_keeps_25fps_frames_and_applies_biwi_split(tmp_path) -> None:
    clips = {"F2_e01": 4, "F2_e33": 3, "F2_e37": 5, "F1_e37": 3, "F1_e01": 3}
    frames = write_biwi_layout(tmp_path / "biwi", clips)
    (tmp_path / "biwi" / "wav" / "M1_e02.wav").write_bytes(b"")  # a wav without motion
    report = prepare_biwi(tmp_path / "biwi", tmp_path / "out")
    dataset = load_prepared(tmp_path / "out")
    assert dataset.fps == 25.0 and dataset.num_vertices == BIWI_V and dataset.meta["source"] == "biwi"
    assert dataset.train_speakers == ["F2", "F3", "F4", "M3", "M4", "M5"]
    assert {c.name: c.split for c in dataset.clips} == {
        "F1_e01": None, "F1_e37": "test", "F2_e01": "train", "F2_e33": "val", "F2_e37": "test"}
    assert dict(report.skipped)["M1_e02"].startswith("no motion")
    for info in dataset.clips:
        clip = dataset.load_clip(info)
        assert clip.vertices.tobytes() == frames[info.name].tobytes()
        assert abs(clip.audio.shape[0] - clips[info.name] / 25 * 16000) <= 1
        assert clip.template.shape == (BIWI_V, 3)


def _vl_bytes(vertices: np.ndarray, count_dtype: str) -> bytes:
    return np.array([len(vertices)], dtype=count_dtype).tobytes() + vertices.astype("<f4").tobytes()


@pytest.mark.parametrize("count_dtype", ["<u4", "<u8"])
def test_read_vl_reads_count_then_float32_triplets(tmp_path, count_dtype: str) -> None:
    vertices = np.random.default_rng(0).normal(size=(BIWI_V, 3)).astype(np.float32)
    path = tmp_path / "frame_001.vl"
    path.write_bytes(_vl_bytes(vertices, count_dtype))
    out = read_vl(path)
    assert out.dtype == np.float32 and out.tobytes() == vertices.tobytes()


def test_read_vl_folder_orders_frames_numerically_and_rejects_bad_files(tmp_path) -> None:
    frames = [np.full((5, 3), i, dtype=np.float32) for i in range(12)]
    for i, f in enumerate(frames):
        (tmp_path / f"frame_{i}.vl").write_bytes(_vl_bytes(f, "<u4"))  # frame_10 sorts before frame_2 as text
    np.testing.assert_array_equal(read_vl_folder(tmp_path), np.stack(frames))
    (tmp_path / "frame_12.vl").write_bytes(_vl_bytes(np.zeros((5, 3)), "<u4")[:-2])
    with pytest.raises(DatasetError, match="is not a .vl frame"):
        read_vl_folder(tmp_path)
    with pytest.raises(DatasetError, match="no .vl frames"):
        read_vl_folder(tmp_path / "..")


def test_faceformer_layout_checks_and_resumes(tmp_path) -> None:
    with pytest.raises(DatasetError, match="missing wav, vertices_npy, templates.pkl"):
        prepare_faceformer(tmp_path, tmp_path / "out")
    root = tmp_path / "ff"
    (root / "wav").mkdir(parents=True)
    (root / "vertices_npy").mkdir()
    template = np.zeros((10, 3), np.float32)
    (root / "templates.pkl").write_bytes(pickle.dumps({"A": template.reshape(-1)}, protocol=2))
    motion = np.random.default_rng(0).normal(size=(9, 30)).astype(np.float32)  # 60 fps, (T, V*3)
    np.save(root / "vertices_npy" / "A_sentence03.npy", motion)
    _wav(root / "wav" / "A_sentence03.wav", 9 / 60, 22000)
    np.save(root / "vertices_npy" / "A_sentence04.npy", motion)  # no wav
    (root / "splits.toml").write_text('[train]\nspeakers = ["A"]\nsentences = [1, 5]\n')
    report = prepare_faceformer(root, tmp_path / "out")
    assert report.clips_per_split["train"] == 1 and dict(report.skipped)["A_sentence04"].startswith("no audio")
    dataset = load_prepared(tmp_path / "out")
    clip = dataset.load_clip(dataset.clips[0])
    assert clip.vertices.tobytes() == motion.reshape(9, 10, 3)[::2].tobytes()
    assert prepare_faceformer(root, tmp_path / "out").reused == 1
    np.save(root / "vertices_npy" / "A_sentence03.npy", motion[:, :27])  # now 9 vertices: wrong count
    with pytest.raises(DatasetError, match="9 vertices per frame but the templates have 10"):
        prepare_faceformer(root, tmp_path / "out")


def _write_obj(path: Path, vertices: np.ndarray, faces: np.ndarray | None = None) -> None:
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in vertices]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in (faces if faces is not None else [])]
    path.write_text("\n".join(lines) + "\n")


def test_folder_with_npy_and_obj_frames_and_default_splits(tmp_path) -> None:
    root = tmp_path / "mine"
    (root / "templates").mkdir(parents=True)
    rng = np.random.default_rng(2)
    faces = np.array([[0, 1, 2], [1, 2, 3]])
    for speaker in ("anna", "ben"):
        _write_obj(root / "templates" / f"{speaker}.obj", rng.normal(size=(4, 3)), faces)
    expected = {}
    for sentence in range(1, 11):  # anna: (T, V, 3) npy at 60 fps
        motion = rng.normal(size=(6, 4, 3)).astype(np.float32)
        np.save(root / f"anna_s{sentence:02d}.npy", motion)
        _wav(root / f"anna_s{sentence:02d}.wav", 6 / 60, 16000)
        expected[f"anna_s{sentence:02d}"] = motion[::2]
    frames_dir = root / "ben_s10"  # ben: one clip as OBJ frames
    frames_dir.mkdir()
    obj_frames = rng.normal(size=(5, 4, 3)).round(5)
    for i, f in enumerate(obj_frames):
        _write_obj(frames_dir / f"frame_{i}.obj", f)
    _wav(root / "ben_s10.wav", 5 / 60, 48000)
    _wav(root / "ben_s11.wav", 0.1, 16000)  # no motion
    report = prepare_folder(root, tmp_path / "out", fps=30, source_fps=60)
    dataset = load_prepared(tmp_path / "out")
    assert dataset.train_speakers == ["anna", "ben"]
    np.testing.assert_array_equal(dataset.faces, faces)
    assert report.clips_per_split == {"train": 8, "val": 1, "test": 2, "unassigned": 0}
    assert dict(report.skipped)["ben_s11"].startswith("no motion")
    for info in dataset.clips:
        clip = dataset.load_clip(info)
        if info.speaker == "anna":
            assert clip.vertices.tobytes() == expected[info.name].tobytes()
        else:
            np.testing.assert_allclose(clip.vertices, obj_frames[::2], atol=1e-6)
    _wav(root / "carl_s01.wav", 0.1, 16000)
    np.save(root / "carl_s01.npy", np.zeros((6, 4, 3), np.float32))
    with pytest.raises(DatasetError, match="no template for speaker carl"):
        prepare_folder(root, tmp_path / "out", fps=30, source_fps=60)


def test_default_folder_splits() -> None:
    splits = default_splits(["a", "b"], list(range(1, 21)))
    assert [assign_split("a", n, splits) for n in (1, 16, 17, 18, 19, 20)] == [
        "train", "train", "val", "val", "test", "test"]
    tiny = default_splits(["a"], [1, 2])
    assert assign_split("a", 2, tiny) == "train" and tiny.val.speakers == ()
