"""animate on the audio users have: sample rates, stereo, flac, mp3, silence, 0.2 s, long files.

A tiny random-init model (motion head randomised so the face moves) in a run folder. Oracles: the
same speech at any sample rate gives nearly the same motion (resampled to 16 kHz), a stereo file with
equal channels and a lossless flac give exactly the mono wav's motion, frame counts follow the
duration, long audio never builds T×T masks, and frames at the encoder's window/chunk boundaries move
no faster than frames elsewhere (no seams).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from talkface import workflows
from talkface.io.animation import load_animation

SPEAKERS = ("alice", "bob", "carol")
V = 10
FPS = 30.0


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    import torch

    from talkface.config import ModelConfig
    from talkface.model import TalkFaceModel, tiny_encoder_config
    from talkface.model.checkpoint import save_checkpoint

    torch.manual_seed(0)
    config = ModelConfig(num_vertices=V, feature_dim=16, period=3, num_heads=4, num_layers=1, fps=FPS,
                         speakers=SPEAKERS)
    model = TalkFaceModel(config, tiny_encoder_config()).eval()
    torch.nn.init.normal_(model.motion_head.weight, std=0.01)  # zero-initialised: the face would not move
    folder = tmp_path_factory.mktemp("run")
    save_checkpoint(folder / "best.safetensors", model)
    rng = np.random.default_rng(1)
    np.savez(folder / "templates.npz", **{s: rng.normal(scale=0.1, size=(V, 3)).astype(np.float32) for s in SPEAKERS})
    faces = np.stack([np.arange(V - 2), np.arange(1, V - 1), np.arange(2, V)], 1).astype(np.int32)
    np.save(folder / "faces.npy", faces)
    return folder


def speech_like(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """Band-limited (< 3.5 kHz) voiced 'syllables' with random lengths, pitch and loudness, float32 mono."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    edges = np.cumsum(rng.uniform(0.08, 0.35, size=int(seconds / 0.08) + 2))
    seg = np.searchsorted(edges, t)
    loud = rng.uniform(0.0, 1.0, size=edges.size + 1)[seg]
    pitch = rng.uniform(90, 220, size=edges.size + 1)[seg]
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    kernel = np.hanning(max(3, int(0.02 * rate)))
    env = np.convolve(loud, kernel / kernel.sum(), mode="same")
    voice = sum(np.sin(h * phase) / h for h in range(1, 12) if h * 220 < 3500)
    return (0.3 * env * voice).astype(np.float32)


def _animate(run: Path, audio: Path, out: Path, **kw) -> np.ndarray:
    [result] = workflows.animate_files([audio], checkpoint=run, style="alice", out=out, device="cpu", **kw)
    assert result.error is None, result.error
    return load_animation(result.outputs[0]).vertices


def _expected_frames(seconds: float) -> int:
    """FaceFormer's count: int(A / 50 * fps), A = (S - 400) // 320 + 1 wav2vec 2.0 frames of S 16 kHz samples."""
    cnn_frames = (round(seconds * 16000) - 400) // 320 + 1
    return int(cnn_frames / 50 * FPS)


@pytest.fixture(scope="module")
def master(run, tmp_path_factory) -> tuple[np.ndarray, np.ndarray]:
    """2 s of speech at 48 kHz and its animation."""
    path = tmp_path_factory.mktemp("master") / "master.wav"
    audio = speech_like(2.0, 48000)
    sf.write(path, audio, 48000, subtype="FLOAT")
    return audio, _animate(run, path, path.with_suffix(".npz"))


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100])
def test_sample_rates_give_the_same_motion(run, master, tmp_path, rate):
    """The same speech (band-limited below 3.5 kHz) stored at another rate animates the same."""
    from talkface.io.audio import resample

    audio, ref = master
    path = tmp_path / f"a{rate}.wav"
    sf.write(path, resample(audio, 48000, rate), rate, subtype="FLOAT")
    got = _animate(run, path, tmp_path / f"a{rate}.npz")
    assert got.shape[0] == _expected_frames(2.0) and got.shape[1:] == (V, 3)
    n = min(len(ref), len(got))
    motion = np.abs(ref - ref.mean(0)).max()
    assert motion > 1e-3  # the face moves
    assert np.abs(got[:n] - ref[:n]).max() < 0.01 * motion


def test_stereo_and_flac_match_the_mono_wav(run, tmp_path):
    from talkface.io.audio import load_audio

    mono = speech_like(1.5, 44100, seed=3)
    sf.write(tmp_path / "mono.wav", mono, 44100, subtype="PCM_16")
    sf.write(tmp_path / "stereo.wav", np.stack([mono, mono], 1), 44100, subtype="PCM_16")
    sf.write(tmp_path / "mono.flac", mono, 44100, subtype="PCM_16")  # lossless: the same integer samples
    ref = _animate(run, tmp_path / "mono.wav", tmp_path / "mono.npz")
    np.testing.assert_allclose(_animate(run, tmp_path / "stereo.wav", tmp_path / "st.npz"), ref, atol=1e-6)
    # libsndfile scales 16-bit FLAC by 1/32767 and WAV by 1/32768 when reading floats: equal up to 3e-5
    np.testing.assert_allclose(load_audio(tmp_path / "mono.flac"), load_audio(tmp_path / "mono.wav"), atol=1e-4)
    flac = _animate(run, tmp_path / "mono.flac", tmp_path / "flac.npz")
    assert flac.shape == ref.shape
    assert np.abs(flac - ref).max() < 0.01 * np.abs(ref - ref.mean(0)).max()


def test_mp3(run, tmp_path):
    if "MP3" not in sf.available_formats():
        pytest.skip(f"libsndfile {sf.__libsndfile_version__} cannot write mp3 (needs >= 1.1 built with LAME)")
    sf.write(tmp_path / "a.mp3", speech_like(1.5, 44100), 44100, format="MP3")
    got = _animate(run, tmp_path / "a.mp3", tmp_path / "a.npz")
    # mp3 frames pad the end (encoder delay + frame rounding): a frame or two more
    assert _expected_frames(1.5) - 1 <= got.shape[0] <= _expected_frames(1.5) + 3 and np.isfinite(got).all()


def test_silence_and_short_clips(run, tmp_path):
    sf.write(tmp_path / "zeros.wav", np.zeros(16000, np.float32), 16000)  # digital silence: an export mistake
    [zeros] = workflows.animate_files([tmp_path / "zeros.wav"], checkpoint=run, style="alice",
                                      out=tmp_path / "z.npz", device="cpu")
    assert zeros.error is not None and "silent" in zeros.error
    hiss = np.random.default_rng(0).normal(scale=1e-3, size=16000).astype(np.float32)  # -60 dB room tone
    sf.write(tmp_path / "quiet.wav", hiss, 16000)
    quiet = _animate(run, tmp_path / "quiet.wav", tmp_path / "q.npz")
    assert quiet.shape[0] == _expected_frames(1.0) and np.isfinite(quiet).all()
    sf.write(tmp_path / "short.wav", speech_like(0.2, 22050), 22050)
    short = _animate(run, tmp_path / "short.wav", tmp_path / "short.npz")
    assert short.shape[0] == _expected_frames(0.2) and np.isfinite(short).all()
    sf.write(tmp_path / "tiny.wav", hiss[:80] * 100, 16000)  # shorter than one wav2vec frame
    [bad] = workflows.animate_files([tmp_path / "tiny.wav"], checkpoint=run, style="alice", out=tmp_path / "t.npz",
                                    device="cpu")
    assert bad.error is not None and "too short" in bad.error


def _boundary_frames(num_frames: int) -> list[int]:
    """Frames where the encoder's transformer windows start or end, and CNN chunk boundaries (motion frames)."""
    from talkface.model.audio_encoder import AudioEncoder, window_starts

    defaults = AudioEncoder.__init__.__kwdefaults__
    window = round(defaults["window_seconds"] * FPS)
    overlap = min(round(defaults["overlap_seconds"] * FPS), (window - 1) // 2)
    starts = window_starts(num_frames, window, overlap)
    edges = {s for s in starts if s > 0} | {s + window for s in starts if s + window < num_frames}
    edges |= {round(c * FPS) for c in np.arange(defaults["cnn_chunk_seconds"], num_frames / FPS,
                                                defaults["cnn_chunk_seconds"])}
    return sorted(edges)


def _check_no_seams(vertices: np.ndarray) -> None:
    speed = np.linalg.norm(np.diff(vertices.astype(np.float64), axis=0), axis=2).mean(1)  # speed[t]: t -> t+1
    edges = _boundary_frames(len(vertices))
    assert len(edges) >= 3
    near = sorted({t for e in edges for t in range(e - 2, e + 2) if 0 <= t < speed.size})
    others = np.delete(speed, near)
    assert speed[near].max() <= np.quantile(others, 0.999), (edges, speed[near].max(), np.quantile(others, 0.999))


def test_one_minute_no_big_masks_no_seams(run, tmp_path, monkeypatch):
    """60 s (1800 frames, three transformer windows): masks stay O(T), and no seams at the boundaries."""
    import talkface.model.decoder as decoder
    import talkface.model.masks as masks

    sizes = []

    def watch(fn):
        def wrapped(*args, **kwargs):
            out = fn(*args, **kwargs)
            sizes.append(out.numel())
            return out
        return wrapped

    for module in (masks, decoder):
        if hasattr(module, "biased_causal_mask"):
            monkeypatch.setattr(module, "biased_causal_mask", watch(masks.biased_causal_mask))
    monkeypatch.setattr(masks, "alignment_mask", watch(masks.alignment_mask))
    sf.write(tmp_path / "long.wav", speech_like(60.0, 16000, seed=7), 16000)
    vertices = _animate(run, tmp_path / "long.wav", tmp_path / "long.npz")
    assert vertices.shape[0] == _expected_frames(60.0)
    assert sizes and max(sizes) <= 4 * 1800 * 4  # (H, 1, T) rows only, never (H, T, T)
    _check_no_seams(vertices)


PEAK_SCRIPT = """
import json, resource, sys
from pathlib import Path
from talkface import workflows
from talkface.io.animation import load_animation
[r] = workflows.animate_files([Path(sys.argv[1])], checkpoint=Path(sys.argv[2]), style="alice",
                              out=Path(sys.argv[3]), device="cpu")
assert r.error is None, r.error
print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


@pytest.mark.slow
def test_five_minutes_bounded_memory_no_seams(run, tmp_path):
    """5 min (9000 frames) vs 60 s in fresh processes: the peak grows by far less than one (H, T, T) mask."""
    peaks = {}
    for seconds in (60.0, 300.0):
        wav = tmp_path / f"{int(seconds)}.wav"
        sf.write(wav, speech_like(seconds, 16000, seed=11), 16000)
        args = [sys.executable, "-c", PEAK_SCRIPT, str(wav), str(run), str(tmp_path / f"{int(seconds)}.npz")]
        out = subprocess.run(args, capture_output=True, text=True, check=True, env={"OMP_NUM_THREADS": "1", **_env()})
        peaks[seconds] = json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]
    vertices = load_animation(tmp_path / "300.npz").vertices
    assert vertices.shape[0] == _expected_frames(300.0)
    one_mask_mb = 4 * 9000 * 9000 * 4 / 2**20  # float32 (H=4, T, T): 1236 MB
    assert peaks[300.0] - peaks[60.0] < 0.25 * one_mask_mb, peaks
    _check_no_seams(vertices)


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}


def test_cli_unknown_style_lists_valid_ones_and_writes_glb(run, tmp_path):
    from talkface.cli import app

    sf.write(tmp_path / "a.wav", speech_like(0.5, 16000), 16000)
    sf.write(tmp_path / "b.wav", speech_like(0.4, 16000, seed=2), 16000)
    runner = CliRunner()
    bad = runner.invoke(app, ["animate", str(tmp_path / "a.wav"), "--checkpoint", str(run), "--style", "zed",
                              "--out", str(tmp_path / "o.npz"), "--device", "cpu"])
    assert bad.exit_code == 1 and "unknown style 'zed'" in bad.output
    assert "valid styles are: alice, bob, carol" in bad.output
    ok = runner.invoke(app, ["animate", str(tmp_path / "a.wav"), "--checkpoint", str(run), "--style", "bob",
                             "--out", str(tmp_path / "a.glb"), "--device", "cpu"])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "a.glb").read_bytes()[:4] == b"glTF"
    many = runner.invoke(app, ["animate", str(tmp_path / "a.wav"), str(tmp_path / "b.wav"), "--checkpoint", str(run),
                               "--style", "alice", "--out", str(tmp_path / "many"), "--format", "gltf",
                               "--device", "cpu"])
    assert many.exit_code == 0, many.output
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == ["a.gltf", "b.gltf"]
    pygltflib = pytest.importorskip("pygltflib")
    g = pygltflib.GLTF2().load(str(tmp_path / "many" / "a.gltf"))
    assert len(g.meshes[0].primitives[0].targets) >= 1 and g.meshes[0].primitives[0].mode == 4
