"""evaluate: aggregation (mean over styles vs best style) against brute force, CSV = JSON, region files
(pkl / npz / BIWI txt) equivalent to the dataset's regions, the plot, and the real FLAME/BIWI region files."""

from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from talkface.data.prepared import ClipData, DatasetMeta, SourceClip, write_prepared
from talkface.data.splits import assign_split, sentence_number, splits_from_dict
from talkface.errors import DatasetError
from talkface.evaluate.evaluation import evaluate
from talkface.evaluate.regions import load_regions, upper_face

FLAME = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "flame"
V = 8
LIPS = np.array([1, 2, 3])
FOREHEAD, EYES = np.array([5, 6]), np.array([6, 7])
SPLITS = splits_from_dict({"train": {"speakers": ["A", "B"], "sentences": [1, 1]},
                           "test": {"speakers": ["A", "C"], "sentences": [2, 3]}})
TEST_CLIPS = {("A", "s02"): 9, ("C", "s02"): 7, ("C", "s03"): 11}


def _source(speaker, sentence, frames, seed):
    rng = np.random.default_rng(seed)
    vertices = (rng.normal(scale=0.01, size=(frames, V, 3)) + np.arange(V)[:, None] * 0.1).astype(np.float32)
    audio = (0.3 * np.sin(np.arange(frames * 16000 // 30) * 0.05)).astype(np.float32)
    return SourceClip(speaker, sentence, assign_split(speaker, sentence_number(sentence), SPLITS), f"k{seed}",
                      "test", lambda: ClipData(audio, vertices, frames / 30))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("evaldata")
    templates = {s: (np.arange(V)[:, None] * 0.1 * np.ones(3)).astype(np.float32) for s in "ABC"}
    meta = DatasetMeta("folder", 30.0, 30.0, 1, templates, SPLITS, faces=np.array([[0, 1, 2]]),
                       regions={"lips": LIPS, "forehead": FOREHEAD, "eye_region": EYES})
    clips = [_source("A", "s01", 6, 0), _source("B", "s01", 6, 1)]
    clips += [_source(s, q, n, 10 + i) for i, ((s, q), n) in enumerate(TEST_CLIPS.items())]
    write_prepared(root / "data", meta, clips)
    return root / "data"


@pytest.fixture(scope="module")
def pred(data, tmp_path_factory) -> Path:
    """A's clip under its own style; C's clips under styles A and B (the B one one frame longer)."""
    from talkface.data import load_prepared

    out = tmp_path_factory.mktemp("pred")
    dataset = load_prepared(data)
    rng = np.random.default_rng(5)
    for info in dataset.split("test"):
        gt = dataset.load_clip(info).vertices
        if info.speaker == "A":
            noisy = gt + rng.normal(scale=0.002, size=gt.shape)
            np.save(out / f"{info.name}.npy", noisy.reshape(len(gt), -1).astype(np.float32))
        else:
            for style, scale in (("A", 0.001), ("B", 0.004)):
                p = gt + rng.normal(scale=scale, size=gt.shape)
                if style == "B":
                    p = np.concatenate([p, p[-1:]])  # longer than the ground truth: truncated
                np.save(out / f"{info.name}_condition_{style}.npy", p.astype(np.float32))
    return out


def _dynamics(x, template, upper):
    return ((x - template) ** 2).sum(-1)[:, upper].std(0).mean()


def _brute_force(data: Path, pred: Path, lips, upper):
    """Per clip, per-frame errors averaged over its styles, then frames pooled; best = lowest-LVE style."""
    from talkface.data import load_prepared

    dataset = load_prepared(data)
    mean_frames, best_frames, fdd_mean, fdd_best = [], [], [], []
    for info in dataset.split("test"):
        clip = dataset.load_clip(info)
        gt = clip.vertices.astype(np.float64)
        per_style = []
        for f in sorted(pred.glob(f"{info.name}*.npy")):
            p = np.load(f).reshape(-1, V, 3)[: len(gt)].astype(np.float64)
            err = ((p - gt) ** 2).sum(-1)
            lip = np.array([max(err[t, i] for i in lips) for t in range(len(gt))])

            per_style.append((lip, _dynamics(gt, clip.template, upper) - _dynamics(p, clip.template, upper)))
        mean_frames.append(np.mean([lip for lip, _ in per_style], axis=0))
        fdd_mean.append(np.mean([f for _, f in per_style]))
        best = min(per_style, key=lambda s: s[0].mean())
        best_frames.append(best[0])
        fdd_best.append(best[1])
    return (np.concatenate(mean_frames).mean(), np.mean(fdd_mean), np.concatenate(best_frames).mean(),
            np.mean(fdd_best))


def test_aggregation_matches_brute_force(data, pred):
    result = evaluate(data, pred=pred)
    rep = result.report
    lve_mean, fdd_mean, lve_best, fdd_best = _brute_force(data, pred, LIPS, [5, 6, 7])
    assert rep["sequences"] == 3 and rep["predictions"] == 5
    assert rep["lve"] == pytest.approx(lve_mean, rel=1e-9)
    assert rep["fdd"] == pytest.approx(fdd_mean, rel=1e-9)
    assert rep["best_style"]["lve"] == pytest.approx(lve_best, rel=1e-9)
    assert rep["best_style"]["fdd"] == pytest.approx(fdd_best, rel=1e-9)
    assert rep["best_style"]["lve"] <= rep["lve"] and rep["best_style"]["lve_mm"] <= rep["lve_mm"]
    assert {r["style"] for r in result.rows if r["clip"].startswith("C_")} == {"A", "B"}
    assert sum(r["best_style"] for r in result.rows) == 3
    assert rep["regions"] == {"source": f"{data}/regions.npz", "lips": 3, "upper_face": 3,
                              "lip_opening": "lip region split at the median height of its template vertices"}
    json.dumps(rep)  # JSON-able


def test_cli_writes_report_csv_and_plot(data, pred, tmp_path):
    from talkface.cli import app

    report = tmp_path / "r" / "report.json"
    result = CliRunner().invoke(app, ["evaluate", "--data", str(data), "--pred", str(pred), "--report", str(report),
                                      "--plot", str(tmp_path / "lips.png"), "--plot-clip", "C_s03"])
    assert result.exit_code == 0, result.output
    assert "mean over styles" in result.output and "best style" in result.output
    rep = json.loads(report.read_text())
    rows = list(csv.DictReader((tmp_path / "r" / "report.csv").open()))  # default: next to the report
    assert len(rows) == len(rep["per_sequence"]) == 5
    assert list(rows[0]) == ["clip", "speaker", "style", "frames", "lve", "lve_mm", "fdd", "mve", "lve_shift",
                             "shift_frames", "shift_ms", "lve_dtw", "lip_corr", "opening_range", "best_style"]
    for row, ref in zip(rows, rep["per_sequence"], strict=True):
        assert (row["clip"], row["speaker"], row["style"], int(row["frames"])) == (
            ref["clip"], ref["speaker"], ref["style"], ref["frames"])
        for key in ("lve", "lve_mm", "fdd", "mve", "lve_shift", "shift_ms", "lve_dtw", "lip_corr", "opening_range"):
            assert float(row[key]) == ref[key]
        assert int(row["shift_frames"]) == ref["shift_frames"]
        assert row["best_style"] == str(ref["best_style"])
    assert "lip sync" in result.output and "C_s03" in result.output and "corr" in result.output
    assert f"{rep['lip_corr']:.3f}" in result.output
    assert f"{rep['lve'] * 1e5:.4g}" in result.output  # LVE printed ×1e-5
    assert (tmp_path / "lips.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = CliRunner().invoke(app, ["evaluate", "--data", str(data), "--pred", str(pred), "--plot",
                                   str(tmp_path / "x.png"), "--plot-clip", "nope"])
    assert bad.exit_code == 1 and "C_s03" in bad.output


def _write_region_files(folder: Path, lips, forehead, eyes) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "masks.pkl", "wb") as f:  # FLAME_masks style: dict of int64 arrays, protocol 2
        pickle.dump({"lips": np.asarray(lips, np.int64), "forehead": np.asarray(forehead, np.int64),
                     "eye_region": np.asarray(eyes, np.int64), "neck": np.array([0], np.int64)}, f, protocol=2)
    np.savez(folder / "masks.npz", region_lips=lips, region_forehead=forehead, region_eye_region=eyes)
    biwi = folder / "regions"
    biwi.mkdir(exist_ok=True)
    (biwi / "lve.txt").write_text(", ".join(map(str, lips)))
    (biwi / "fdd.txt").write_text(", ".join(map(str, np.union1d(forehead, eyes))))
    return {"pkl": folder / "masks.pkl", "npz": folder / "masks.npz", "txt": biwi}


@pytest.mark.parametrize("kind", ["pkl", "npz", "txt"])
def test_region_files_give_the_dataset_numbers(data, pred, tmp_path, kind):
    reference = evaluate(data, pred=pred).report
    same = _write_region_files(tmp_path / "same", LIPS, FOREHEAD, EYES)[kind]
    rep = evaluate(data, pred=pred, masks=same).report
    for key in ("lve", "lve_mm", "fdd", "mve"):
        assert rep[key] == pytest.approx(reference[key], rel=1e-12)
        assert rep["best_style"][key] == pytest.approx(reference["best_style"][key], rel=1e-12)
    assert rep["regions"]["source"] == str(same)
    other = _write_region_files(tmp_path / "other", [0, 4], [1], [2])[kind]
    changed = evaluate(data, pred=pred, masks=other).report
    assert changed["lve"] != pytest.approx(reference["lve"]) and changed["fdd"] != pytest.approx(reference["fdd"])


def test_region_file_errors(tmp_path):
    np.savez(tmp_path / "big.npz", lips=np.array([1, 99]))
    with pytest.raises(DatasetError, match="indices 1..99.*8 vertices"):
        load_regions(tmp_path / "big.npz", num_vertices=8)
    (tmp_path / "m.json").write_text("{}")
    with pytest.raises(DatasetError, match="unknown region file format"):
        load_regions(tmp_path / "m.json")
    with open(tmp_path / "obj.pkl", "wb") as f:
        pickle.dump({"lips": np.array([1, "x"], dtype=object)}, f, protocol=2)
    with pytest.raises(DatasetError):
        load_regions(tmp_path / "obj.pkl")
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"lips": Path("x")}, f)
    with pytest.raises(DatasetError, match="does not load"):
        load_regions(tmp_path / "evil.pkl")
    (tmp_path / "bad.txt").write_text("1, 2, x3")
    with pytest.raises(DatasetError, match="x3"):
        load_regions(tmp_path / "bad.txt")
    with open(tmp_path / "list.pkl", "wb") as f:  # SelfTalk's BIWI_lip.pkl: a bare list of ints
        pickle.dump([3, 4, 5], f, protocol=2)
    np.testing.assert_array_equal(load_regions(tmp_path / "list.pkl")["lips"], [3, 4, 5])


def test_evaluate_from_a_checkpoint(data, tmp_path, tiny_encoder_config):
    """Seen speaker A under its own style, unseen C under both training styles."""
    from talkface.config import ModelConfig
    from talkface.model import TalkFaceModel
    from talkface.model.checkpoint import save_checkpoint

    config = ModelConfig(num_vertices=V, feature_dim=16, period=3, num_heads=4, num_layers=1, fps=30.0,
                         speakers=("A", "B"))
    ckpt = save_checkpoint(tmp_path / "m.safetensors", TalkFaceModel(config, tiny_encoder_config).eval())
    result = evaluate(data, checkpoint=ckpt, device="cpu")
    styles = {(r["clip"], r["style"]) for r in result.rows}
    assert styles == {("A_s02", "A"), ("C_s02", "A"), ("C_s02", "B"), ("C_s03", "A"), ("C_s03", "B")}
    assert result.report["best_style"]["lve"] <= result.report["lve"]


@pytest.mark.skipif(not (FLAME / "raw" / "FLAME_masks.pkl").is_file(), reason="FLAME fixtures not present in ../shared")
def test_real_flame_masks_pkl_and_biwi_txt():
    regions = load_regions(FLAME / "raw" / "FLAME_masks.pkl", num_vertices=5023)
    with np.load(FLAME / "flame_masks.npz") as z:
        assert set(regions) == set(z.files)
        for name in z.files:
            np.testing.assert_array_equal(regions[name], z[name])
    assert regions["lips"].size == 254 and upper_face(regions).size == 827  # forehead ∪ eye_region
    biwi = load_regions(FLAME / "raw" / "biwi_lve.txt", num_vertices=23370)
    with np.load(FLAME / "biwi_regions.npz") as z:
        np.testing.assert_array_equal(biwi["biwi_lve"], z["lve"])
        np.testing.assert_array_equal(load_regions(FLAME / "raw" / "biwi_fdd.txt")["biwi_fdd"], z["fdd"])
    with pytest.raises(DatasetError, match="mesh has 5023 vertices"):
        load_regions(FLAME / "raw" / "biwi_lve.txt", num_vertices=5023)


def _write_copies(data: Path, out: Path, make) -> Path:
    from talkface.data import load_prepared

    out.mkdir()
    dataset = load_prepared(data)
    for info in dataset.split("test"):
        clip = dataset.load_clip(info)
        np.save(out / f"{info.name}.npy", make(clip.vertices.astype(np.float64), clip.template).astype(np.float32))
    return out


def test_lip_sync_measures_of_shifted_and_damped_copies(data, tmp_path):
    """A copy 2 frames late: best-shift LVE 0 at shift +2 (66.7 ms), LVE > 0. A copy damped
    about the template: correlation 1, opening range = the damping factor, in every row and pooled."""
    late = _write_copies(data, tmp_path / "late", lambda v, t: np.concatenate([v[:1], v[:1], v[:-2]]))
    rep = evaluate(data, pred=late).report
    assert rep["max_shift_frames"] == 6  # 200 ms at 30 fps
    for row in rep["per_sequence"]:
        assert row["shift_frames"] == 2 and row["shift_ms"] == pytest.approx(2000 / 30)
        assert row["lve_shift"] == pytest.approx(0.0, abs=1e-12) and row["lve"] > 1e-6
        assert row["lve_dtw"] < row["lve"]  # not 0: the truth's last two frames have no match in the copy
    assert rep["shift_ms"] == pytest.approx(2000 / 30) and rep["lve_shift"] == pytest.approx(0.0, abs=1e-12)
    damped = _write_copies(data, tmp_path / "damped", lambda v, t: t + 0.4 * (v - t))
    rep = evaluate(data, pred=damped).report
    for row in [*rep["per_sequence"], rep, rep["best_style"], *rep["per_clip"].values()]:
        assert row["lip_corr"] == pytest.approx(1.0, abs=1e-6)
        assert row["opening_range"] == pytest.approx(0.4, rel=1e-5)
