"""Reading prepared datasets and padding clips into batches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from talkface.data import Batch, Clip, load_prepared, pad_batch
from talkface.data.prepared import ClipData, DatasetMeta, SourceClip, write_prepared
from talkface.data.splits import assign_split, sentence_number, splits_from_dict
from talkface.errors import DatasetError

V = 6
SPLITS = splits_from_dict({"train": {"speakers": ["B", "A"], "sentences": [1, 2]},
                           "val": {"speakers": ["A"], "sentences": [3, 3]},
                           "test": {"speakers": ["A", "C"], "sentences": [4, 4]}})
LENGTHS = {("A", "s01"): 5, ("A", "s03"): 3, ("B", "s02"): 7, ("C", "s04"): 4, ("A", "s04"): 6, ("B", "s09"): 2}


def _clip(speaker: str, sentence: str, frames: int, seed: int) -> SourceClip:
    rng = np.random.default_rng(seed)
    vertices = rng.normal(size=(frames, V, 3)).astype(np.float32)
    audio = rng.uniform(-1, 1, size=frames * 16000 // 30).astype(np.float32)
    return SourceClip(speaker, sentence, assign_split(speaker, sentence_number(sentence), SPLITS), f"k{seed}",
                      "test", lambda: ClipData(audio, vertices, frames / 30))


def make_dataset(out: Path) -> dict[str, SourceClip]:
    templates = {s: np.full((V, 3), i, dtype=np.float32) for i, s in enumerate("ABC")}
    meta = DatasetMeta("folder", 30.0, 30.0, 1, templates, SPLITS, faces=np.array([[0, 1, 2]]),
                       regions={"lips": np.array([1, 2])})
    clips = [_clip(s, q, n, i) for i, ((s, q), n) in enumerate(LENGTHS.items())]
    write_prepared(out, meta, clips)
    return {c.name: c for c in clips}


@pytest.fixture()
def dataset_dir(tmp_path) -> Path:
    make_dataset(tmp_path / "ds")
    return tmp_path / "ds"


def test_load_prepared_lists_clips_by_split(dataset_dir) -> None:
    dataset = load_prepared(dataset_dir)
    assert dataset.train_speakers == ["B", "A"] and dataset.fps == 30.0 and dataset.num_vertices == V
    assert [c.name for c in dataset.clips] == sorted(f"{s}_{q}" for s, q in LENGTHS)
    assert [c.name for c in dataset.split("train")] == ["A_s01", "B_s02"]
    assert [c.name for c in dataset.split("val")] == ["A_s03"]
    assert [c.name for c in dataset.split("test")] == ["A_s04", "C_s04"]
    assert next(c for c in dataset.clips if c.name == "B_s09").split is None
    np.testing.assert_array_equal(dataset.faces, [[0, 1, 2]])
    np.testing.assert_array_equal(dataset.regions["lips"], [1, 2])
    with pytest.raises(DatasetError, match="unknown split"):
        dataset.split("dev")


def test_load_clip_round_trips_the_written_arrays(tmp_path) -> None:
    sources = make_dataset(tmp_path / "ds")
    dataset = load_prepared(tmp_path / "ds")
    for info in dataset.clips:
        clip = dataset.load_clip(info)
        data = sources[info.name].load()
        assert clip.vertices.tobytes() == data.vertices.tobytes()
        assert clip.audio.tobytes() == data.audio.tobytes()
        assert clip.fps == 30.0 and clip.speaker == info.speaker
        np.testing.assert_array_equal(clip.template, dataset.templates[info.speaker])


def test_pad_batch_shapes_padding_masks_and_style(dataset_dir) -> None:
    dataset = load_prepared(dataset_dir)
    clips = [dataset.load_clip(i) for i in dataset.clips]  # includes C, not a training speaker
    batch = pad_batch(clips, dataset.train_speakers)
    assert isinstance(batch, Batch)
    b, t_max, s_max = len(clips), max(LENGTHS.values()), max(c.audio.shape[0] for c in clips)
    assert batch.audio.shape == (b, s_max) and batch.audio.dtype == torch.float32
    assert batch.vertices.shape == (b, t_max, V, 3) and batch.vertices.dtype == torch.float32
    assert batch.template.shape == (b, V, 3) and batch.style.shape == (b, 2)
    assert batch.audio_lengths.dtype == torch.long and batch.num_frames.dtype == torch.long
    assert batch.names == [c.name for c in clips]
    for i, clip in enumerate(clips):
        t, s = clip.vertices.shape[0], clip.audio.shape[0]
        assert batch.num_frames[i] == t and batch.audio_lengths[i] == s
        assert torch.equal(batch.vertices[i, :t], torch.from_numpy(clip.vertices))
        assert not batch.vertices[i, t:].any() and not batch.audio[i, s:].any()
        assert torch.equal(batch.audio[i, :s], torch.from_numpy(clip.audio))
        assert batch.frame_mask[i].tolist() == [k < t for k in range(t_max)]
        assert int(batch.audio_mask[i].sum()) == s
        expected_style = {"B": [1.0, 0.0], "A": [0.0, 1.0], "C": [0.0, 0.0]}[clip.speaker]
        assert batch.style[i].tolist() == expected_style
        assert bool(batch.known_speaker[i]) == (clip.speaker != "C")
    moved = batch.to("cpu")
    assert torch.equal(moved.vertices, batch.vertices)


def test_pad_batch_refuses_mixed_meshes_and_empty_lists() -> None:
    a = Clip("a", "A", np.zeros(10, np.float32), np.zeros((2, 4, 3), np.float32), np.zeros((4, 3), np.float32), 30)
    b = Clip("b", "A", np.zeros(10, np.float32), np.zeros((2, 5, 3), np.float32), np.zeros((5, 3), np.float32), 30)
    with pytest.raises(DatasetError, match="one mesh"):
        pad_batch([a, b], ["A"])
    with pytest.raises(DatasetError, match="zero clips"):
        pad_batch([], ["A"])


def test_interrupted_or_foreign_or_future_folders_are_refused(dataset_dir, tmp_path) -> None:
    meta = json.loads((dataset_dir / "dataset.json").read_text())
    (dataset_dir / "dataset.json").write_text(json.dumps(meta | {"version": 99}))
    with pytest.raises(DatasetError, match="version 99"):
        load_prepared(dataset_dir)
    (dataset_dir / "dataset.json").write_text(json.dumps(meta))
    (dataset_dir / "manifest.jsonl").unlink()
    with pytest.raises(DatasetError, match="did not finish"):
        load_prepared(dataset_dir)
    with pytest.raises(DatasetError, match="no dataset.json"):
        load_prepared(tmp_path)
    with pytest.raises(DatasetError, match="no such folder"):
        load_prepared(tmp_path / "missing")


def test_a_tampered_clip_file_is_reported(dataset_dir) -> None:
    dataset = load_prepared(dataset_dir)
    info = dataset.clips[0]
    np.savez(info.path, audio=np.zeros(3, np.float32), vertices=np.zeros((1, V, 3), np.float32), fps=30.0)
    with pytest.raises(DatasetError, match="disagree with the manifest"):
        dataset.load_clip(info)
    info.path.unlink()
    with pytest.raises(DatasetError, match="clip file missing"):
        dataset.load_clip(info)
