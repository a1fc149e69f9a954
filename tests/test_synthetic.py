"""The synthetic corpus: head mesh invariants, speech timing, phoneme-driven motion, VOCASET raw files."""

from __future__ import annotations

import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from talkface.errors import AudioError, ConfigError, OutputError, TemplateError
from talkface.synthetic import (
    BASIS_NAMES,
    REGION_NAMES,
    HeadShape,
    MotionStyle,
    VoiceSpec,
    activation_curves,
    animate_head,
    build_head,
    espeak_available,
    lip_opening,
    load_head_asset,
    synthesize,
    vary_head,
    write_synthetic_vocaset,
)
from talkface.synthetic import corpus as corpus_module
from talkface.synthetic import head as head_module
from talkface.synthetic import speech as speech_module

REPO = Path(__file__).resolve().parents[1]
NO_ESPEAK = "espeak-ng (program and libespeak-ng) is not installed; apt-get install espeak-ng to run this test"


@pytest.fixture(scope="module")
def head():
    return build_head()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic") / "raw"
    report = write_synthetic_vocaset(out, num_speakers=3, num_sentences=3, seed=7, use_espeak=False)
    return out, report


def _load(path: Path):
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


# ------------------------------------------------------------------------------------------ head
def test_shipped_asset_equals_build_head(head):
    shipped = load_head_asset(REPO / "assets" / "synthetic_head.npz")
    np.testing.assert_array_equal(shipped.faces, head.faces)
    np.testing.assert_allclose(shipped.vertices, head.vertices, atol=1e-6, rtol=0)
    assert shipped.regions.keys() == head.regions.keys() and shipped.bases.keys() == head.bases.keys()
    for name in head.regions:
        np.testing.assert_array_equal(shipped.regions[name], head.regions[name])
    for name in head.bases:
        np.testing.assert_allclose(shipped.bases[name], head.bases[name], atol=1e-6, rtol=0)
    assert (REPO / "assets" / "synthetic_head.npz").stat().st_size < 1_000_000


def test_load_head_asset_builds_when_no_asset_is_shipped(monkeypatch, tmp_path, head):
    monkeypatch.setattr(head_module, "default_asset_path", lambda: tmp_path / "absent.npz")
    np.testing.assert_array_equal(load_head_asset().faces, head.faces)
    with pytest.raises(TemplateError, match="no such head asset"):
        load_head_asset(tmp_path / "absent.npz")


def test_head_is_flame_sized_and_oriented(head):
    v, f = head.vertices.astype(np.float64), head.faces
    assert head.vertices.dtype == np.float32 and f.dtype == np.int32
    assert 2000 <= head.num_vertices <= 4000 and f.min() == 0 and f.max() == head.num_vertices - 1
    np.testing.assert_allclose(v.mean(axis=0), 0.0, atol=1e-6)
    extent = v.max(axis=0) - v.min(axis=0)  # FLAME: (0.2025, 0.3131, 0.2336)
    assert 0.17 < extent[0] < 0.23 and 0.27 < extent[1] < 0.34 and 0.20 < extent[2] < 0.26
    # Consistent orientation: no directed edge twice (each shared edge runs both ways once).
    edges = Counter(map(tuple, np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])))
    assert max(edges.values()) == 1
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    assert np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6 > 0.004  # outward (CCW) and about 5 litres
    nose_tip = v[np.argmax(v[:, 2])]
    assert abs(nose_tip[0]) < 0.005 and -0.05 < nose_tip[1] < 0.05  # the face looks along +z
    normals = np.cross(b - a, c - a)
    face_normal = normals[np.isin(f, head.regions["face"]).all(axis=1)].sum(axis=0)
    assert face_normal[2] > 0.9 * np.linalg.norm(face_normal)


def test_regions_are_sets_in_the_right_places(head):
    r, v = head.regions, head.vertices
    assert set(r) == set(REGION_NAMES)
    for name, idx in r.items():
        assert idx.dtype == np.int32 and idx.size > 0, name
        assert np.array_equal(idx, np.unique(idx)) and idx.max() < head.num_vertices, name
    assert not np.intersect1d(r["upper_lip"], r["lower_lip"]).size
    assert np.isin(np.union1d(r["upper_lip"], r["lower_lip"]), r["lips"]).all()
    upper_face = np.union1d(r["forehead"], r["eye_region"])
    assert not np.intersect1d(r["forehead"], r["eye_region"]).size
    assert not np.intersect1d(upper_face, r["lips"]).size
    y = {name: v[idx, 1].mean() for name, idx in r.items()}
    assert y["forehead"] > y["eye_region"] > y["nose"] > y["lips"]
    assert y["upper_lip"] > y["lower_lip"]
    assert np.isin(r["lips"], r["face"]).all()


def test_bases_open_the_jaw_and_shape_the_lips(head):
    assert set(head.bases) == set(BASIS_NAMES)
    for basis in head.bases.values():
        assert basis.shape == (head.num_vertices, 3) and basis.dtype == np.float32
    lower, upper = head.regions["lower_lip"], head.regions["upper_lip"]
    jaw = head.bases["jaw_open"]
    assert np.linalg.norm(jaw[lower], axis=1).max() == pytest.approx(0.015, abs=0.002)
    assert jaw[lower, 1].mean() < -0.008 and np.abs(jaw[upper]).max() < 0.002
    back = head.vertices[:, 2] < head.vertices[:, 2].min() + 0.08
    assert np.abs(np.stack([b[back] for b in head.bases.values()])).max() == 0
    assert head.bases["lip_round"][head.regions["lips"], 2].mean() > 0.003  # pucker pushes forward
    smile = head.bases["smile_asym"]
    assert smile[head.vertices[:, 0] > 0, 1].sum() > 10 * abs(smile[head.vertices[:, 0] < 0, 1].sum())
    pressed = head.vertices + head.bases["lip_close"]
    assert lip_opening(pressed[None], head)[0] <= lip_opening(head.vertices[None], head)[0]


def _ray_hits(vertices: np.ndarray, faces: np.ndarray, origin: np.ndarray, direction: np.ndarray):
    """Brute-force Moller-Trumbore against every triangle: (distances, face indices) of all hits."""
    a, b, c = (vertices[faces[:, k]].astype(np.float64) for k in range(3))
    e1, e2 = b - a, c - a
    p = np.cross(direction, e2)
    det = np.einsum("ij,ij->i", e1, p)
    ok = np.abs(det) > 1e-14
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    s = origin - a
    u = np.einsum("ij,ij->i", s, p) * inv
    q = np.cross(s, e1)
    v = (q @ direction) * inv
    t = np.einsum("ij,ij->i", e2, q) * inv
    hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
    return t[hit], np.flatnonzero(hit)


def test_open_mouth_shows_the_unlit_inside_of_the_head(head):
    """A camera ray into the mouth hits the lips when closed and, when open, a face pointing away."""
    direction = np.array([0.0, 0.0, -1.0])

    def first_hit(vertices):
        lower = vertices[head.regions["lower_lip"]]
        upper = vertices[head.regions["upper_lip"]]
        origin = np.array([0.0, 0.5 * (lower[:, 1].max() + upper[:, 1].min()), 1.0])
        dist, tri = _ray_hits(vertices, head.faces, origin, direction)
        k = int(np.argmin(dist))
        a, b, c = vertices[head.faces[tri[k]]]
        return origin + dist[k] * direction, np.cross(b - a, c - a)

    closed_point, closed_normal = first_hit(head.vertices)
    assert closed_point[2] > head.vertices[head.regions["lips"], 2].min() - 0.002 and closed_normal[2] > 0
    open_point, open_normal = first_hit(head.vertices + head.bases["jaw_open"])
    assert open_point[2] < 0.0 and open_normal[2] < 0  # the back of the head, seen from inside: unlit


def test_vary_head_keeps_topology_and_scales_bases(head):
    shape = HeadShape(scale=1.05, width=0.97, jaw_width=1.08, nose=1.2)
    varied = vary_head(head, shape)
    assert varied.faces is head.faces and varied.vertices.shape == head.vertices.shape
    assert not np.allclose(varied.vertices, head.vertices, atol=1e-3)
    np.testing.assert_allclose(varied.vertices.mean(axis=0), 0.0, atol=1e-6)
    lower = head.regions["lower_lip"]
    np.testing.assert_allclose(varied.bases["jaw_open"][lower, 1], 1.05 * head.bases["jaw_open"][lower, 1], rtol=1e-5)


# ------------------------------------------------------------------------------------------ speech
def _rms(audio: np.ndarray, start: float, end: float, rate: int = 22000) -> float:
    seg = audio[int(start * rate) : int(end * rate)].astype(np.float64)
    return float(np.sqrt(np.mean(seg**2))) if seg.size else 0.0


def _check_timing(audio: np.ndarray, phonemes, rate: int = 22000) -> None:
    assert audio.dtype == np.int16 and audio.ndim == 1
    assert phonemes[0][0] == "_" and phonemes[0][1] == 0.0 and phonemes[-1][2] == pytest.approx(audio.size / rate)
    for (_, _, end), (_, start, _) in zip(phonemes[:-1], phonemes[1:], strict=True):
        assert end == pytest.approx(start, abs=1e-9)
    assert all(e > s for _, s, e in phonemes)
    assert _rms(audio, 0.0, 0.19) < 1.0  # the lead silence is silent


def _vowel_vs_stop(audio, phonemes) -> tuple[float, float]:
    vowels = [_rms(audio, s, e) for p, s, e in phonemes if p in ("a", "A:", "O:", "aI", "oU", "u:", "a#")]
    stops = [_rms(audio, s, s + 0.6 * (e - s)) for p, s, e in phonemes if p in ("p", "b", "t")]  # closures
    return float(np.mean(vowels)), float(np.mean(stops))


def test_fallback_synthesiser_speaks_with_known_timing():
    text = "Mama bought a big blue boat."
    audio, phonemes = synthesize(text, VoiceSpec(rate_wpm=160), use_espeak=False)
    _check_timing(audio, phonemes)
    names = [p for p, _, _ in phonemes]
    assert names[1:4] == ["m", "a", "m"] and "u:" in names and "b" in names
    vowel, stop = _vowel_vs_stop(audio, phonemes)
    assert vowel > 3 * stop  # voiced vowels are loud, stop closures nearly silent
    again, _ = synthesize(text, VoiceSpec(rate_wpm=160), use_espeak=False)
    np.testing.assert_array_equal(audio, again)
    slower, slow_ph = synthesize(text, VoiceSpec(rate_wpm=120), use_espeak=False)
    assert slow_ph[-2][2] - slow_ph[1][1] == pytest.approx((phonemes[-2][2] - phonemes[1][1]) * 160 / 120)


def test_espeak_required_but_missing_is_an_audio_error(monkeypatch):
    monkeypatch.setattr(speech_module.shutil, "which", lambda name: None)
    assert not espeak_available()
    with pytest.raises(AudioError, match="espeak-ng is not installed"):
        synthesize("hello", VoiceSpec(), use_espeak=True)
    audio, _ = synthesize("hello", VoiceSpec())  # auto: falls back
    assert audio.size > 0


def test_broken_espeak_falls_back_with_a_warning(monkeypatch, tmp_path):
    def broken(*args, **kwargs):
        raise AudioError("espeak-ng failed for voice 'en' (boom)")

    monkeypatch.setattr(speech_module, "_run_espeak", broken)
    monkeypatch.setattr(speech_module, "espeak_available", lambda: True)
    monkeypatch.setattr(corpus_module, "espeak_available", lambda: True)
    with pytest.warns(RuntimeWarning, match="formant fallback"):
        audio, _ = synthesize("hello there", VoiceSpec())
    assert audio.size > 0
    with pytest.warns(RuntimeWarning, match="formant fallback"):
        report = write_synthetic_vocaset(tmp_path / "c", num_speakers=2, num_sentences=3)
    assert report.used_espeak is False


@pytest.mark.skipif(not espeak_available(), reason=NO_ESPEAK)
def test_espeak_speaks_with_phoneme_events():
    text = "Paul saw a bright moon above the bay."
    audio, phonemes = synthesize(text, VoiceSpec(espeak_voice="en+f2", rate_wpm=170, pitch=60), use_espeak=True)
    _check_timing(audio, phonemes)
    names = [p for p, _, _ in phonemes]
    assert {"p", "m", "b", "u:"} <= set(names)
    vowel, stop = _vowel_vs_stop(audio, phonemes)
    assert vowel > 3 * stop
    again, _ = synthesize(text, VoiceSpec(espeak_voice="en+f2", rate_wpm=170, pitch=60), use_espeak=True)
    np.testing.assert_array_equal(audio, again)  # one child process per sentence: no carried-over state
    with pytest.raises(AudioError, match="espeak-ng failed"):
        synthesize(text, VoiceSpec(espeak_voice="xx-nonexistent"), use_espeak=True)


# ------------------------------------------------------------------------------------------ motion
PHONEMES = [("_", 0.0, 0.3), ("a", 0.3, 0.6), ("m", 0.6, 0.72), ("A:", 0.72, 1.0), ("_", 1.0, 1.4)]


def test_jaw_opens_for_open_vowels_and_lips_close_for_bilabials(head):
    acts = activation_curves(PHONEMES, num_frames=84)
    at = lambda name, t: acts[name][int(round(t * 60))]  # noqa: E731
    assert at("jaw_open", 0.45) > 0.8 and at("jaw_open", 0.86) > 0.8
    assert at("jaw_open", 0.66) < 0.1 and at("lip_close", 0.66) > 0.9
    assert at("jaw_open", 0.1) < 1e-3
    opening = lip_opening(animate_head(head, acts), head)
    rest = lip_opening(head.vertices[None], head)[0]
    assert opening[int(0.45 * 60)] - rest > 0.008 and opening[int(0.66 * 60)] - rest < 0.001
    assert abs(opening[3] - rest) < 1e-5


def test_rounding_for_rounded_vowels():
    acts = activation_curves([("_", 0.0, 0.3), ("u:", 0.3, 0.6), ("i:", 0.6, 0.9), ("_", 0.9, 1.2)], 72)
    assert acts["lip_round"][27] > 0.8 and acts["lip_round"][45] < 0.2


def test_lag_shifts_the_motion_by_the_set_amount():
    rng = np.random.default_rng(0)
    names = ["a", "m", "u:", "b", "A:", "p", "i:", "O:", "t"]
    edges = 0.3 + np.concatenate([[0.0], np.cumsum(rng.uniform(0.06, 0.2, size=30))])
    phonemes = [("_", 0.0, 0.3)] + [(names[i % 9], edges[i], edges[i + 1]) for i in range(30)]
    n = int(edges[-1] * 60) + 30
    base = activation_curves(phonemes, n)["jaw_open"]
    base = base - base.mean()
    for lag_s, frames in ((0.05, 3), (-0.05, -3), (0.1, 6)):
        shifted = activation_curves(phonemes, n, MotionStyle(lag_s=lag_s))["jaw_open"]
        shifted = shifted - shifted.mean()
        lags = np.arange(-10, 11)
        score = [np.dot(base[max(0, -k) : n - max(0, k)], shifted[max(0, k) : n - max(0, -k)]) for k in lags]
        assert lags[int(np.argmax(score))] == frames


def test_tempo_warps_around_the_clip_centre():
    phonemes = [("_", 0.0, 0.3), ("a", 0.3, 0.4), ("_", 0.4, 2.0)]  # one peak at 0.35 s, centre 1.0 s
    for tempo in (0.9, 1.1):
        jaw = activation_curves(phonemes, 120, MotionStyle(tempo=tempo))["jaw_open"]
        expected = 1.0 + (0.35 - 1.0) / tempo
        assert abs(np.argmax(jaw) / 60 - expected) <= 1 / 60


def test_style_scales_amplitude_and_asymmetry():
    plain = activation_curves(PHONEMES, 84)
    styled = activation_curves(PHONEMES, 84, MotionStyle(amplitude=1.2, asymmetry=-0.4))
    np.testing.assert_allclose(styled["jaw_open"], 1.2 * plain["jaw_open"], rtol=1e-6)
    np.testing.assert_allclose(styled["smile_asym"], -0.4 * 1.2 * plain["jaw_open"], rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------------------ corpus
def test_raw_files_have_vocaset_structure(corpus):
    out, report = corpus
    assert report.clips == 9 and report.speakers == ("SynthTalk_01", "SynthTalk_02", "SynthTalk_03")
    assert report.used_espeak is False
    audio, templates, index = (_load(out / n) for n in ("raw_audio_fixed.pkl", "templates.pkl", "subj_seq_to_idx.pkl"))
    verts = np.load(out / "data_verts.npy", mmap_mode="r")
    num_vertices = templates["SynthTalk_01"].shape[0]
    assert verts.dtype == np.float32 and verts.shape == (report.frames, num_vertices, 3)
    assert type(audio) is dict and type(templates) is dict and type(index) is dict
    assert list(audio) == list(templates) == list(index) == list(report.speakers)
    rows_seen: list[int] = []
    seconds = 0.0
    for subject in report.speakers:
        assert isinstance(templates[subject], np.ndarray) and templates[subject].shape == (num_vertices, 3)
        assert list(audio[subject]) == list(index[subject]) == ["sentence01", "sentence02", "sentence03"]
        for sentence, entry in audio[subject].items():
            assert set(entry) == {"audio", "sample_rate"} and entry["sample_rate"] == 22000
            assert type(entry["sample_rate"]) is int
            assert entry["audio"].dtype == np.int16 and entry["audio"].ndim == 1
            frames = index[subject][sentence]
            assert all(type(k) is int and type(v) is int for k, v in frames.items())
            assert sorted(frames) == list(range(len(frames)))  # 0-based frame keys
            clip = np.stack([verts[frames[k]] for k in sorted(frames)])
            assert abs(entry["audio"].size / 22000 - len(frames) / 60) < 1 / 60
            assert np.abs(clip[0] - templates[subject]).max() < 1e-3  # clips start at rest (lead silence)
            assert np.ptp(clip[:, :, 1], axis=0).max() > 0.005  # and the mouth moves
            rows_seen += list(frames.values())
            seconds += entry["audio"].size / 22000
    assert sorted(rows_seen) == list(range(report.frames))  # every row of data_verts used once
    assert seconds == pytest.approx(report.seconds)


def test_pickles_look_like_python2_vocaset_pickles(corpus):
    out, _ = corpus
    for name in ("raw_audio_fixed.pkl", "templates.pkl", "subj_seq_to_idx.pkl"):
        data = (out / name).read_bytes()
        assert data[:2] == b"\x80\x02"  # protocol 2
        assert b"numpy._core" not in data
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in (out / "templates.pkl").read_bytes()


def test_splits_head_and_readme(corpus):
    tomllib = pytest.importorskip("tomllib")
    out, report = corpus
    splits = tomllib.loads((out / "splits.toml").read_text())
    assert splits["train"] == {"speakers": ["SynthTalk_01", "SynthTalk_02"], "sentences": [1, 1]}
    assert splits["val"] == {"speakers": ["SynthTalk_01", "SynthTalk_02"], "sentences": [2, 2]}
    assert splits["test"] == {"speakers": list(report.speakers), "sentences": [3, 3]}
    head = load_head_asset(out / "head.npz")
    templates = _load(out / "templates.pkl")
    np.testing.assert_array_equal(head.faces, build_head().faces)
    assert head.vertices.shape == templates["SynthTalk_01"].shape
    from talkface.io.mesh import load_mesh

    assert load_mesh(out / "head.npz").faces.shape == head.faces.shape
    assert "SynthTalk_03" in (out / "README.md").read_text()


def test_generation_is_deterministic_and_reruns_in_place(corpus, tmp_path):
    out, report = corpus
    again = write_synthetic_vocaset(tmp_path / "again", num_speakers=3, num_sentences=3, seed=7, use_espeak=False)
    assert again.frames == report.frames
    for name in ("data_verts.npy", "raw_audio_fixed.pkl", "templates.pkl", "subj_seq_to_idx.pkl"):
        assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    write_synthetic_vocaset(tmp_path / "again", num_speakers=2, num_sentences=3, seed=1, use_espeak=False)


def test_refuses_foreign_folders_and_bad_counts(tmp_path):
    (tmp_path / "data_verts.npy").write_bytes(b"real VOCASET")
    with pytest.raises(OutputError, match="not empty"):
        write_synthetic_vocaset(tmp_path, num_speakers=2, num_sentences=3, use_espeak=False)
    with pytest.raises(ConfigError, match="num_speakers"):
        write_synthetic_vocaset(tmp_path / "x", num_speakers=1)
    with pytest.raises(ConfigError, match="num_sentences"):
        write_synthetic_vocaset(tmp_path / "x", num_sentences=2)


def test_lip_opening_follows_the_jaw(head):
    steps = np.linspace(0, 1, 5, dtype=np.float32)
    frames = head.vertices[None] + steps[:, None, None] * head.bases["jaw_open"][None]
    opening = lip_opening(frames, head)
    assert opening.shape == (5,) and opening[0] > 0 and np.all(np.diff(opening) > 0.002)


@pytest.mark.skipif(not espeak_available(), reason=NO_ESPEAK)
def test_espeak_corpus(tmp_path):
    report = write_synthetic_vocaset(tmp_path / "c", num_speakers=2, num_sentences=3, use_espeak=True)
    assert report.used_espeak and report.clips == 6 and 2.0 * 6 < report.seconds < 3.2 * 6


def test_clip_time_shift_keeps_the_motion_in_order_and_within_bounds():
    from talkface.synthetic.motion import clip_time_shift

    rng = np.random.default_rng(3)
    for _ in range(50):
        shift = clip_time_shift(300, 60.0, rng, 0.08, 0.04)
        assert np.all(np.abs(shift) <= 0.08 + 0.04 + 1e-12)
        looked_at = np.arange(300) / 60.0 - shift  # where each frame looks in the unshifted motion
        assert np.all(np.diff(looked_at) > 0)


def test_constant_time_shift_is_a_lag():
    """A constant per-frame shift d must give exactly the motion of a style with lag d."""
    from talkface.synthetic.motion import MotionStyle, activation_curves

    phonemes = [("_", 0.0, 0.2), ("m", 0.2, 0.3), ("a", 0.3, 0.5), ("p", 0.5, 0.6), ("_", 0.6, 0.9)]
    lagged = activation_curves(phonemes, 54, MotionStyle(lag_s=0.05))
    shifted = activation_curves(phonemes, 54, MotionStyle(), time_shift=np.full(54, 0.05))
    for name in lagged:
        np.testing.assert_allclose(shifted[name], lagged[name], atol=1e-7)
    assert np.abs(lagged["jaw_open"] - activation_curves(phonemes, 54)["jaw_open"]).max() > 0.05


def test_clip_jitter_changes_only_the_motion(tmp_path):
    plain = write_synthetic_vocaset(tmp_path / "a", num_speakers=2, num_sentences=3, use_espeak=False)
    jitter = write_synthetic_vocaset(tmp_path / "b", num_speakers=2, num_sentences=3, use_espeak=False,
                                     clip_offset_s=0.08, clip_warp_s=0.04)
    assert plain.frames == jitter.frames
    va, vb = np.load(tmp_path / "a" / "data_verts.npy"), np.load(tmp_path / "b" / "data_verts.npy")
    assert va.shape == vb.shape and np.abs(va - vb).max() > 1e-4
    audio = [(tmp_path / d / "raw_audio_fixed.pkl").read_bytes() for d in ("a", "b")]
    assert audio[0] == audio[1]
    with pytest.raises(ConfigError, match="clip_warp_s"):
        write_synthetic_vocaset(tmp_path / "c", num_speakers=2, num_sentences=3, use_espeak=False, clip_warp_s=0.5)


# ------------------------------------------------------------------------ default corpus timing (issue #27)
# sha256 of data_verts.npy (float32, little-endian bytes) of write_synthetic_vocaset(num_speakers=3,
# num_sentences=3, seed=0, use_espeak=False, **options) for the experiment's three corpora, computed with the
# ORIGINAL code at commit ead7b05 (before the default corpus lost its tempo warp) in a scratch checkout
# (`git archive ead7b05`) on the development machine. The experiment's corpora must not change.
EXPERIMENT_CORPORA = {
    "a-none": ({"max_lag_s": 0.0, "tempo_range": (1.0, 1.0)},
               "4e5bcd48cff24e09adfee11bb133b279a69c95e9e16aeb44e0fcbbf7ae439bee"),
    "b-speaker": ({"max_lag_s": 0.1, "tempo_range": (0.85, 1.15)},
                  "742f2f18acb25ab1a165b225bfcf04bd9db5b9df74ea715d8b9a32d23cd860f3"),
    "c-clip": ({"max_lag_s": 0.0, "tempo_range": (1.0, 1.0), "clip_offset_s": 0.08, "clip_warp_s": 0.04},
               "5f053b5ba17f59c3e45e583b61539e37e661f6da08a543c9ef38a039ae31cb18"),
}


@pytest.mark.parametrize("name", list(EXPERIMENT_CORPORA))
def test_experiment_corpora_are_unchanged(name, tmp_path):
    import hashlib

    options, expected = EXPERIMENT_CORPORA[name]
    write_synthetic_vocaset(tmp_path / "raw", num_speakers=3, num_sentences=3, seed=0, use_espeak=False, **options)
    verts = np.load(tmp_path / "raw" / "data_verts.npy")
    assert hashlib.sha256(np.ascontiguousarray(verts, dtype="<f4").tobytes()).hexdigest() == expected


def _window_delays(out: Path, num_speakers: int, num_sentences: int) -> dict[tuple[int, int], list[float]]:
    """Per clip, the motion's delay (s) against its own phoneme timing in each half of the clip.

    The delay of a half is the d (1 ms grid, ±60 ms) whose unwarped reference motion (the speaker's
    amplitude and asymmetry, lag d, tempo 1) best matches the written lip opening there.
    """
    speakers = corpus_module.make_speakers(num_speakers, 0)  # the corpus' speakers: seed 0, default draws
    verts = np.load(out / "data_verts.npy")
    index = _load(out / "subj_seq_to_idx.pkl")
    base = load_head_asset()
    delays = {}
    grid = np.arange(-60, 61) / 1000.0
    for s, speaker in enumerate(speakers):
        head = vary_head(base, speaker.shape)
        for j in range(num_sentences):
            _, phonemes = synthesize(corpus_module.SENTENCES[j], speaker.voice, use_espeak=False)
            rows = index[speaker.name][corpus_module.sentence_name(j + 1)]
            written = lip_opening(verts[[rows[f] for f in range(len(rows))]], head)
            n = written.size
            errors = np.stack([(lip_opening(animate_head(head, activation_curves(
                phonemes, n, MotionStyle(speaker.style.amplitude, speaker.style.asymmetry, lag_s=float(d)))),
                head) - written) ** 2 for d in grid])  # (D, T)
            halves = (slice(0, n // 2), slice(n // 2, n))
            delays[(s, j)] = [float(grid[np.argmin(errors[:, h].sum(1))]) for h in halves]
    return delays


def test_default_corpus_motion_is_synchronous_with_its_audio(tmp_path):
    """The default corpus: in both halves of every clip the motion sits at the same delay against the phonemes
    (no tempo warp), a per-speaker constant of at most one 60-fps frame. The former default (tempo 0.92-1.08)
    fails the same check, so the check sees a warp."""
    write_synthetic_vocaset(tmp_path / "default", num_speakers=3, num_sentences=3, seed=0, use_espeak=False)
    delays = _window_delays(tmp_path / "default", 3, 3)
    for (s, _), (first, second) in delays.items():
        assert first == pytest.approx(second, abs=0.0015)
        assert abs(first) <= 1 / 60 + 0.0015
        assert first == pytest.approx(delays[(s, 0)][0], abs=0.0015)  # constant per speaker
    speakers = corpus_module.make_speakers(3, 0)
    assert all(sp.style.tempo == 1.0 for sp in speakers)
    write_synthetic_vocaset(tmp_path / "warped", num_speakers=3, num_sentences=3, seed=0, use_espeak=False,
                            max_lag_s=0.05, tempo_range=(0.92, 1.08))
    warped = _window_delays(tmp_path / "warped", 3, 3)
    assert max(abs(a - b) for a, b in warped.values()) > 0.01  # the old default's warp moved the delay
