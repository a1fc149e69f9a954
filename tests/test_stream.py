"""talkface stream: the streamer against generate, its pure arithmetic, the wire formats, the command."""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from talkface.config import ModelConfig
from talkface.errors import ConfigError, StreamError
from talkface.inference.stream import (
    StreamConfig,
    Streamer,
    WindowCache,
    auto_hop_ms,
    crossfade_weights,
    feature_positions,
    first_layer_stats,
    frames_waited,
    frames_with_inputs,
)
from talkface.io.frames import PcmDecoder, encode_frame, encode_frames, read_frames, record_size
from talkface.model import TalkFaceModel
from talkface.model.audio_encoder import interpolate_features, normalize_audio

SPEAKERS = ("alice", "bob")


def _model(tiny_encoder_config, k: int = 0, fps: float = 30.0, seed: int = 0) -> TalkFaceModel:
    torch.manual_seed(seed)
    config = ModelConfig(num_vertices=10, feature_dim=16, period=int(fps) if k else 3, num_heads=4, num_layers=2,
                         fps=fps, audio_frames_per_motion_frame=k, speakers=SPEAKERS)
    model = TalkFaceModel(config, tiny_encoder_config).eval()
    torch.nn.init.normal_(model.motion_head.weight, std=0.05)  # zero-initialised: would hide every difference
    return model


def _speech(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    voiced = np.sin(2 * np.pi * 170 * t) * np.clip(np.sin(2 * np.pi * 3.3 * t), 0, None)
    return (0.3 * voiced + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def _stream(model, audio, config, pieces, template, style=(1.0, 0.0)) -> tuple[np.ndarray, Streamer]:
    streamer = Streamer(model, template, np.array(style, np.float32), config)
    out, start = [], 0
    for size in pieces:
        out.append(streamer.push(audio[start: start + size]))
        start += size
    out.append(streamer.push(audio[start:]))
    out.append(streamer.finish())
    return np.concatenate(out), streamer


def _random_pieces(n: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    sizes = []
    while sum(sizes) < n:
        sizes.append(int(rng.integers(1, 4000)))
    return sizes


@pytest.mark.parametrize("k,fps", [(0, 30.0), (2, 25.0)])
def test_full_context_stream_equals_generate(tiny_encoder_config, k, fps):
    """Look-ahead and context covering the clip: the same frames as animate/generate, to 1e-5 m."""
    model = _model(tiny_encoder_config, k, fps)
    audio = _speech(2.3)
    template = np.random.default_rng(1).normal(scale=0.1, size=(10, 3)).astype(np.float32)
    offline = model.generate(torch.from_numpy(audio), torch.from_numpy(template), torch.tensor([1.0, 0.0])).numpy()
    whole = StreamConfig(lookahead_ms=5000, context_ms=5000, memory_s=None)
    streamed, _ = _stream(model, audio, whole, _random_pieces(audio.size, 0), template)
    assert streamed.shape == offline.shape
    assert np.abs(streamed - offline).max() < 1e-5
    # the comparison is sensitive: a short look-ahead gives other numbers
    short, _ = _stream(model, audio, StreamConfig(lookahead_ms=100, context_ms=500), [1600] * 30, template)
    assert short.shape == offline.shape
    assert np.abs(short - offline).max() > 1e-3


@pytest.mark.parametrize("overrides", [
    {"feat_extract_norm": "layer", "do_stable_layer_norm": True, "conv_bias": True},  # wav2vec 2.0 large's variant
    {"conv_bias": True},  # group norm after a biased first conv
])
def test_full_context_other_encoder_variants(overrides):
    """Per-frame layer norm in the CNN, a pre-norm transformer, conv biases: equal to generate too."""
    from talkface.model import tiny_encoder_config

    model = _model(tiny_encoder_config(**overrides))
    audio = _speech(1.5, seed=4)
    template = np.zeros((10, 3), np.float32)
    offline = model.generate(torch.from_numpy(audio), torch.from_numpy(template), torch.tensor([0.0, 1.0])).numpy()
    whole = StreamConfig(lookahead_ms=5000, context_ms=5000, memory_s=None)
    streamed, _ = _stream(model, audio, whole, [3000] * 8, template, style=(0.0, 1.0))
    assert streamed.shape == offline.shape
    assert np.abs(streamed - offline).max() < 1e-5


def test_a_backlog_is_encoded_in_one_pass(tiny_encoder_config):
    """Audio that piled up is one pass: pushed at once with a 200 ms look-ahead but a context covering
    it, the frames are generate's (each saw all the audio waiting, as offline does), and the paced
    stream's whose look-ahead covers the backlog, to 1e-5 m; caught up one second per pass (the old
    way) they are not."""
    model = _model(tiny_encoder_config, 2, 25.0)
    audio = _speech(2.3, seed=2)
    template = np.random.default_rng(3).normal(scale=0.1, size=(10, 3)).astype(np.float32)
    offline = model.generate(torch.from_numpy(audio), torch.from_numpy(template), torch.tensor([1.0, 0.0])).numpy()
    config = StreamConfig(lookahead_ms=200, context_ms=5000, memory_s=None)
    streamer = Streamer(model, template, np.array([1.0, 0.0], np.float32), config)
    first = streamer.push(audio)
    assert len(streamer.boundaries) == 1 and 0 < first.shape[0] < offline.shape[0]  # one pass; the last 200 ms wait
    streamed = np.concatenate([first, streamer.finish()])
    assert streamed.shape == offline.shape
    assert np.abs(streamed - offline).max() < 1e-5
    paced, _ = _stream(model, audio, StreamConfig(lookahead_ms=5000, context_ms=5000, memory_s=None), [1600] * 14,
                       template)  # paced in 100 ms pieces, with a look-ahead covering what the backlog held
    assert np.abs(streamed - paced).max() < 1e-5
    per_second, _ = _stream(model, audio, config, [16000, 16000], template)
    assert np.abs(per_second - offline).max() > 1e-4


@pytest.mark.parametrize("k,fps", [(0, 30.0), (2, 25.0)])
def test_catching_up_after_a_stall_keeps_every_frame_in_order(tiny_encoder_config, k, fps):
    """Paced pieces, a 1.5 s stall caught up in one pass, paced again: animate's frame count, in order."""
    model = _model(tiny_encoder_config, k, fps)
    audio = _speech(4.0, seed=5)
    template = np.zeros((10, 3), np.float32)
    streamer = Streamer(model, template, np.array([0.0, 1.0], np.float32), StreamConfig(hop_ms=80))
    out, start = [], 0
    for size in [1600] * 10 + [24000] + [1600] * 10:
        passes = len(streamer.boundaries)
        out.append(streamer.push(audio[start: start + size]))
        if size == 24000:
            assert len(streamer.boundaries) == passes + 1  # the whole backlog in one pass
        start += size
    out += [streamer.push(audio[start:]), streamer.finish()]
    frames = np.concatenate(out)
    assert frames.shape[0] == model.num_frames_for(audio.size) == streamer.emitted
    assert np.isfinite(frames).all()


@pytest.mark.parametrize("k,fps", [(0, 30.0), (2, 25.0)])
def test_frame_count_is_animates_for_any_length_and_pieces(tiny_encoder_config, k, fps):
    model = _model(tiny_encoder_config, k, fps)
    for length in (720, 1000, 5333, 16001):
        audio = _speech(length / 16000, seed=length)
        streamed, _ = _stream(model, audio, StreamConfig(lookahead_ms=100, hop_ms=40), _random_pieces(length, length),
                              np.zeros((10, 3), np.float32))
        assert streamed.shape[0] == model.num_frames_for(length), length


def test_no_seams_at_pass_boundaries(tiny_encoder_config):
    """Frame-to-frame motion where one pass hands over to the next is like the motion elsewhere."""
    model = _model(tiny_encoder_config, seed=3)
    audio = _speech(4.0, seed=3)
    frames, streamer = _stream(model, audio, StreamConfig(lookahead_ms=200, hop_ms=100), [1600] * 40,
                               np.zeros((10, 3), np.float32))
    at = sorted({b - 1 for b in streamer.boundaries if 0 < b < frames.shape[0]})
    assert len(at) > 10

    def seam_ratio(x: np.ndarray) -> float:
        motion = np.linalg.norm(np.diff(x, axis=0), axis=-1).mean(-1)  # (T-1,) step i -> i+1
        elsewhere = np.setdiff1d(np.arange(motion.size), at)
        return float(motion[at].mean() / motion[elsewhere].mean())

    assert seam_ratio(frames) <= 1.25
    # the measure sees a seam: each pass shifted by one typical step (random direction per pass) fails it
    step = np.linalg.norm(np.diff(frames, axis=0), axis=-1).mean()
    passes = np.searchsorted(np.array(sorted(streamer.boundaries)), np.arange(frames.shape[0]), side="right")
    direction = np.random.default_rng(0).normal(size=(passes.max() + 1, 1, 3))
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    assert seam_ratio(frames + step * direction[passes]) > 1.25


def test_crossfade_blends_a_pass_from_the_last_passs_estimate(tiny_encoder_config):
    """A pass's first frames go from the previous pass's look-ahead estimate of them to its own."""
    weights = crossfade_weights(4)
    assert torch.all(torch.diff(weights) > 0) and weights[0] == 0 and weights[-1] < 1
    torch.testing.assert_close(weights, torch.tensor([0.0, 0.25, 0.5, 0.75]))
    streamer = Streamer(_model(tiny_encoder_config), np.zeros((10, 3), np.float32), np.array([1.0, 0.0], np.float32))
    first, second = torch.randn(1, 7, 5), torch.randn(1, 6, 5)
    assert torch.equal(streamer._crossfade(first, commit=3), first)  # nothing before the first pass
    out = streamer._crossfade(second, commit=4)  # frames 3..6 of the first pass are its estimate of these
    w = weights[:, None]
    torch.testing.assert_close(out[0, :4], w * second[0, :4] + (1 - w) * first[0, 3:7])
    assert torch.equal(out[:, 4:], second[:, 4:])  # look-ahead frames stay this pass's own
    third = torch.randn(1, 3, 5)
    assert torch.equal(streamer._crossfade(third, commit=1), third)  # one-frame passes have no seam to hide
    plain = Streamer(_model(tiny_encoder_config), np.zeros((10, 3), np.float32), np.array([1.0, 0.0], np.float32),
                     StreamConfig(crossfade=False))
    plain._crossfade(first, commit=3)
    assert torch.equal(plain._crossfade(second, commit=4), second)


@pytest.mark.parametrize("k,fps,lookahead", [(0, 30.0, 200.0), (0, 30.0, 120.0), (2, 25.0, 200.0)])
def test_lookahead_is_the_wait_for_audio(tiny_encoder_config, k, fps, lookahead):
    """Frame i leaves once, and as soon as, the audio up to i/fps + look-ahead has arrived (hop 1 frame)."""
    model = _model(tiny_encoder_config, k, fps)
    audio = _speech(3.0, seed=7)
    streamer = Streamer(model, np.zeros((10, 3), np.float32), np.array([1.0, 0.0], np.float32),
                        StreamConfig(lookahead_ms=lookahead, hop_ms=0.0))
    piece, heard, emitted = 160, 0, 0  # 10 ms pieces
    width = 2 if k else 1  # an encoder frame is 1/fps (k = 0) or 1/50 s; frames leave in whole motion frames
    slack = 0.010 + 1.0 / fps  # one piece, plus one motion frame when k pairs encoder frames
    for start in range(0, audio.size, piece):
        heard += audio[start: start + piece].size
        emitted += streamer.push(audio[start: start + piece]).shape[0]
        seconds = heard / 16000
        # never before its audio: every emitted frame's look-ahead has arrived
        assert emitted == 0 or (emitted - 1) / fps + lookahead / 1000 <= seconds + 1e-9
        # never later than a piece (and the pairing) after it
        due = int(np.floor((seconds - lookahead / 1000 - slack) * fps + 1e-9)) + 1
        assert emitted >= min(due, model.num_frames_for(heard) - width), (seconds, emitted, due)
    assert emitted + streamer.finish().shape[0] == model.num_frames_for(audio.size)


def test_frames_waited_counts_frames_whose_lookahead_arrived():
    assert frames_waited(0, 0.0, 30.0) == 1  # frame 0 at t = 0 needs no audio
    assert frames_waited(3199, 200.0, 30.0) == 0  # 199.9 ms heard: frame 0 still waits
    assert frames_waited(3200, 200.0, 30.0) == 1
    assert frames_waited(16000, 200.0, 30.0) == 25  # frames 0..24 have t <= 0.8 s
    assert frames_waited(16000, 0.0, 50.0) == 51


def test_bounded_decoder_memory(tiny_encoder_config):
    model = _model(tiny_encoder_config)
    audio = _speech(4.0)
    template = np.zeros((10, 3), np.float32)
    pieces = [1600] * 40
    full, _ = _stream(model, audio, StreamConfig(memory_s=None), pieces, template)
    wide, _ = _stream(model, audio, StreamConfig(memory_s=10.0), pieces, template)  # wider than the clip
    narrow, _ = _stream(model, audio, StreamConfig(memory_s=0.5), pieces, template)
    np.testing.assert_allclose(wide, full, atol=1e-6)
    assert np.abs(narrow[:15] - full[:15]).max() < 1e-6  # identical until the window is full
    assert np.abs(narrow - full).max() > 1e-6


def test_window_cache_keeps_the_last_positions():
    rng = torch.Generator().manual_seed(0)
    cache, every = WindowCache(5), []
    for step in range(40):
        n = 1 + step % 3
        k = torch.randn(1, 2, n, 4, generator=rng)
        every.append(k)
        keys, values = cache.extend(k, -k)
        expect = torch.cat(every, 2)[:, :, -5:]
        assert torch.equal(keys, expect) and torch.equal(values, -expect)


def test_feature_positions_match_offline_interpolation():
    """Anchor 0 is offline's align_corners mapping; other anchors continue the nominal positions."""
    for num_cnn in (2, 7, 50, 151, 1000):
        frames = int(num_cnn / 50 * 30)
        if frames < 1:
            continue
        ramp = torch.arange(num_cnn, dtype=torch.float32)[:, None]
        offline = interpolate_features(ramp, frames)[:, 0].double()
        pos = feature_positions(0, frames, feature_rate=50.0, fps=30.0, anchor=0, num_cnn=num_cnn, num_frames=frames)
        torch.testing.assert_close(pos, offline, atol=1e-4, rtol=0)
        anchor = frames // 2
        late = feature_positions(0, frames, feature_rate=50.0, fps=30.0, anchor=anchor, num_cnn=num_cnn,
                                 num_frames=frames)
        nominal = feature_positions(0, frames, feature_rate=50.0, fps=30.0)
        assert torch.equal(late[: anchor + 1], nominal[: anchor + 1])
        assert abs(float(late[-1]) - (num_cnn - 1)) < 1e-9 or frames - 1 == anchor
        assert bool((late.diff() > 0).all()) and float(late.max()) <= num_cnn - 1 + 1e-9


def test_frames_with_inputs_is_the_last_interpolable_frame():
    for num_cnn in range(0, 200):
        count = frames_with_inputs(num_cnn, 50.0, 30.0, 0)
        brute = sum(1 for e in range(400) if np.ceil(e * 50 / 30 - 1e-9) <= num_cnn - 1)
        assert count == brute
        assert frames_with_inputs(num_cnn, 50.0, 25.0, 2) == num_cnn


def test_first_layer_stats_from_running_sums(tiny_encoder_config):
    model = _model(tiny_encoder_config)
    conv = model.audio_encoder.wav2vec2.feature_extractor.conv_layers[0].conv
    wav = torch.from_numpy(_speech(1.0)) * 3 + 0.2
    u = torch.nn.functional.conv1d(wav[None, None], conv.weight, stride=conv.stride)[0].double()
    m, s, mean, var = first_layer_stats(float(wav.double().sum()), float((wav.double() ** 2).sum()), wav.numel(),
                                        u.sum(1), (u * u).sum(1), u.shape[1], conv.weight.double().sum((1, 2)),
                                        None, True, 1e-7)
    y = conv(normalize_audio(wav)[None, None])[0]  # brute force: normalise, convolve, take statistics
    torch.testing.assert_close(mean[:, 0], y.mean(1), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(var[:, 0], y.var(1, unbiased=False), atol=1e-5, rtol=1e-4)


def test_stream_config_refuses_bad_values():
    for kw in ({"lookahead_ms": -1}, {"hop_ms": float("nan")}, {"memory_s": 0}):
        with pytest.raises(ConfigError):
            StreamConfig(**kw)


# ------------------------------------------------------------------------------------ wire formats


def test_frame_records_round_trip_and_truncation():
    rng = np.random.default_rng(0)
    frames = rng.normal(size=(5, 7, 3)).astype(np.float32)
    data = encode_frames(3, frames[:2]) + b"".join(encode_frame(5 + i, f) for i, f in enumerate(frames[2:]))
    assert len(data) == 5 * record_size(7) == 5 * (4 + 84)
    back = list(read_frames(io.BytesIO(data), 7))
    assert [i for i, _ in back] == [3, 4, 5, 6, 7]
    np.testing.assert_array_equal(np.stack([v for _, v in back]), frames)
    with pytest.raises(StreamError, match="ended inside a record"):
        list(read_frames(io.BytesIO(data[:-3]), 7))


def test_pcm_decoder_any_split():
    rng = np.random.default_rng(1)
    pcm = rng.integers(-32768, 32767, size=999, dtype=np.int16).astype("<i2").tobytes()
    whole = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768
    for _ in range(20):
        cuts = sorted(rng.integers(0, len(pcm), size=7))
        decoder = PcmDecoder()
        parts = [decoder.decode(pcm[a:b]) for a, b in zip([0, *cuts], [*cuts, len(pcm)], strict=True)]
        np.testing.assert_array_equal(np.concatenate(parts), whole)
        assert decoder.pending == b""
    decoder = PcmDecoder()
    assert decoder.decode(pcm[:3]).size == 1 and decoder.pending == pcm[2:3]  # mid-sample: waits


def test_auto_hop_is_the_fewest_frames_covering_the_margin():
    for seconds in (0.0, 0.001, 0.02, 0.05, 0.3):
        hop = auto_hop_ms(seconds, 1000 / 30)
        frames = round(hop * 30 / 1000)
        assert frames >= 1 and hop >= 1.5 * seconds * 1000 - 1e-6
        assert frames == 1 or (frames - 1) * 1000 / 30 < 1.5 * seconds * 1000


# ------------------------------------------------------------------------------------ the command


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    from talkface.model import tiny_encoder_config
    from talkface.model.checkpoint import save_checkpoint

    torch.manual_seed(0)
    config = ModelConfig(num_vertices=10, feature_dim=16, period=3, num_heads=4, num_layers=1, fps=30.0,
                         speakers=SPEAKERS)
    model = TalkFaceModel(config, tiny_encoder_config()).eval()
    torch.nn.init.normal_(model.motion_head.weight, std=0.05)
    folder = tmp_path_factory.mktemp("run")
    save_checkpoint(folder / "best.safetensors", model)
    rng = np.random.default_rng(1)
    np.savez(folder / "templates.npz", **{s: rng.normal(scale=0.1, size=(10, 3)).astype(np.float32) for s in SPEAKERS})
    return folder


def _cli(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.Popen([sys.executable, "-m", "talkface", "stream", *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, **kw)


def _pcm(audio: np.ndarray) -> bytes:
    return np.clip(np.round(audio * 32768), -32768, 32767).astype("<i2").tobytes()  # exact for 16-bit samples


def test_stdin_pcm_to_frames_and_out_like_animate(run, tmp_path):
    """stdin PCM with an odd byte count: stdout holds only frame records, as many as animate makes."""
    from talkface.io.audio import load_audio, write_wav
    from talkface.workflows import animate_files

    wav = write_wav(tmp_path / "a.wav", _speech(2.0))
    audio = load_audio(wav)  # what animate reads from the file: the same samples as the PCM below
    animate_files([wav], checkpoint=run, style="alice", out=tmp_path / "offline.npz", device="cpu")
    offline = np.load(tmp_path / "offline.npz")["vertices"]
    proc = _cli("-", "--checkpoint", str(run), "--style", "alice", "--frames", "-", "--out", str(tmp_path / "s.npz"),
                "--lookahead-ms", "5000", "--context-ms", "5000", "--memory-s", "0", "--hop-ms", "50")
    out, err = proc.communicate(_pcm(audio) + b"\x07", timeout=300)
    assert proc.returncode == 0, err.decode()
    frames = list(read_frames(io.BytesIO(out), 10))  # raises if anything but whole records is on stdout
    assert [i for i, _ in frames] == list(range(offline.shape[0]))
    streamed = np.stack([v for _, v in frames])
    assert np.abs(streamed - offline).max() < 1e-5  # whole-clip context: animate's frames
    np.testing.assert_array_equal(np.load(tmp_path / "s.npz")["vertices"], streamed)
    assert b"middle of a sample" in err


def test_stdin_is_read_while_the_model_loads(run):
    """A microphone pipe holds 2 s of audio (64 KiB); start-up takes about that long, and a microphone writing
    into a full pipe loses audio. stdin is read from before torch loads: 3 s of audio written at once are
    taken before the stream says it is ready."""
    import threading

    proc = _cli("-", "--checkpoint", str(run), "--style", "alice", "--frames", os.devnull)
    with contextlib.suppress(OSError):
        fcntl.fcntl(proc.stdin.fileno(), 1031, 1 << 16)  # F_SETPIPE_SZ: the default 64 KiB, whatever this system's
    written: list[float] = []

    def write() -> None:
        proc.stdin.write(_pcm(_speech(3.0)))  # 96 KiB: blocks until the stream reads
        proc.stdin.flush()
        written.append(time.perf_counter())
        proc.stdin.close()

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    ready = None
    for line in proc.stderr:
        if line.startswith(b"streaming") and ready is None:
            ready = time.perf_counter()
    proc.wait(timeout=300)
    writer.join(60)
    assert proc.returncode == 0 and ready is not None and written
    assert written[0] < ready, f"the audio was taken {written[0] - ready:.2f} s after the stream was ready"


def test_frames_into_a_named_pipe_and_dev_null(run, tmp_path):
    """--frames to a FIFO a reader listens on (no --overwrite: nothing is replaced) gets every record, and the
    FIFO is still a FIFO; --frames /dev/null is a dry run. --out over a FIFO is refused (it is renamed into place)."""
    import threading

    from talkface.io.audio import write_wav

    wav = write_wav(tmp_path / "a.wav", _speech(1.0))
    fifo = tmp_path / "frames"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    proc = _cli(str(wav), "--checkpoint", str(run), "--style", "alice", "--frames", str(fifo), "--hop-ms", "50")
    _, err = proc.communicate(timeout=300)
    reader.join(60)
    assert proc.returncode == 0, err.decode()
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    direct = _cli(str(wav), "--checkpoint", str(run), "--style", "alice", "--frames", "-", "--hop-ms", "50")
    expected, _ = direct.communicate(timeout=300)
    frames = list(read_frames(io.BytesIO(got[0]), 10))
    assert len(frames) >= 29 and got[0] == expected  # the records stdout gets, byte for byte
    proc = _cli(str(wav), "--checkpoint", str(run), "--style", "alice", "--frames", os.devnull)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    os.mkfifo(tmp_path / "o.npz")
    proc = _cli(str(wav), "--checkpoint", str(run), "--style", "alice", "--out", str(tmp_path / "o.npz"),
                "--overwrite")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode != 0 and b"is a named pipe, not a file" in err, err.decode()


def test_sigterm_saves_what_was_streamed(run, tmp_path):
    proc = _cli("-", "--checkpoint", str(run), "--style", "bob", "--frames", "-", "--out", str(tmp_path / "p.npy"),
                "--lookahead-ms", "100", "--hop-ms", "50")
    pcm = _pcm(_speech(3.0))
    reader = []
    import threading

    thread = threading.Thread(target=lambda: reader.extend(read_frames(proc.stdout, 10)), daemon=True)
    thread.start()
    proc.stdin.write(pcm[: len(pcm) // 2])
    proc.stdin.flush()
    deadline = time.time() + 240
    while len(reader) < 10 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert len(reader) >= 10, proc.stderr.read().decode() if proc.poll() is not None else "no frames"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    thread.join(timeout=30)
    assert proc.returncode == 143, proc.stderr.read().decode()
    saved = np.load(tmp_path / "p.npy")
    assert saved.shape == (len(reader), 30)  # everything streamed, nothing more
    np.testing.assert_array_equal(saved.reshape(-1, 10, 3), np.stack([v for _, v in reader]))
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically: no temporary left


@pytest.mark.parametrize("args,message", [
    (["--style", "zed"], "unknown style 'zed'"),
    (["--style", "all"], "stream animates one"),
    (["--style", "alice", "--out", "x.obj"], "unknown output format '.obj'"),
    (["--style", "alice", "--subject", "nobody"], "no template for subject 'nobody'"),
])
def test_refuses_what_animate_refuses(run, tmp_path, args, message):
    from typer.testing import CliRunner

    from talkface.cli import app
    from talkface.io.audio import write_wav

    wav = write_wav(tmp_path / "a.wav", _speech(0.5))
    args = [a if a != "x.obj" else str(tmp_path / "x.obj") for a in args]
    result = CliRunner().invoke(app, ["stream", str(wav), "--checkpoint", str(run), "--frames", str(tmp_path / "f"),
                                      *args])
    assert result.exit_code == 1, result.output
    assert message in result.output
    if "--style" in args and args[1] == "zed":  # the same words as animate
        other = CliRunner().invoke(app, ["animate", str(wav), "--checkpoint", str(run), "--style", "zed", "--out",
                                         str(tmp_path / "o.npz")])
        assert message in other.output


def test_refuses_short_silent_and_missing_audio(run, tmp_path):
    from typer.testing import CliRunner

    from talkface.cli import app
    from talkface.io.audio import write_wav

    silent = write_wav(tmp_path / "s.wav", np.zeros(8000, np.float32))
    short = write_wav(tmp_path / "t.wav", _speech(0.01))
    for path, code, message in ((silent, 1, "is silent"), (short, 1, "too short"),
                                (tmp_path / "none.wav", 2, "does not exist")):  # a usage error, as animate's AUDIO
        result = CliRunner().invoke(app, ["stream", str(path), "--checkpoint", str(run), "--style", "alice",
                                          "--frames", str(tmp_path / "f")])
        assert result.exit_code == code and message in " ".join(result.output.replace("│", " ").split()), \
            result.output
    proc = _cli("-", "--checkpoint", str(run), "--style", "alice", "--frames", "-")
    out, err = proc.communicate(b"\0" * 16000, timeout=300)  # digital silence on stdin, as animate refuses a file
    assert proc.returncode == 1 and b"is silent" in err, err.decode()


# ------------------------------------------------------------------------------------ the run loop and its sinks


class ListSink:
    """A frame sink of the test's own: the loop must feed it without knowing it."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, np.ndarray]] = []
        self.closed = self.aborted = 0

    def write(self, first: int, vertices: np.ndarray) -> None:
        self.batches.append((first, vertices.copy()))

    def close(self) -> None:
        self.closed += 1

    def abort(self) -> None:
        self.aborted += 1


def _setup(run):
    from talkface.live import open_stream

    return open_stream(run, "alice", config=StreamConfig(lookahead_ms=100), hop_ms=50.0)


def test_run_live_feeds_every_sink_in_order(run, tmp_path):
    from talkface.io.feed import file_producer
    from talkface.live import AnimationSink, run_live

    setup = _setup(run)
    audio = _speech(1.5)
    mine, saved = ListSink(), AnimationSink(tmp_path / "a.npz", setup, overwrite=False, source="x", checkpoint=run)
    report = run_live(setup, file_producer(audio, realtime=False), [mine, saved], source="x")
    firsts = [first for first, _ in mine.batches]
    counts = [v.shape[0] for _, v in mine.batches]
    assert firsts == list(np.cumsum([0] + counts[:-1]))  # in order, none skipped, none repeated
    assert sum(counts) == report.frames == setup.streamer.model.num_frames_for(audio.size)
    assert (mine.closed, mine.aborted) == (1, 0)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npz")["vertices"],
                                  np.concatenate([v for _, v in mine.batches]))


def test_run_live_saves_on_interrupt_and_aborts_on_refused_input(run, tmp_path):
    from talkface.errors import AudioError, InterruptedRun
    from talkface.live import AnimationSink, run_live

    def interrupted(put):
        put(_speech(1.0))
        raise KeyboardInterrupt  # Ctrl-C (or SIGTERM, which the CLI turns into it) while audio arrives

    setup = _setup(run)
    mine, saved = ListSink(), AnimationSink(tmp_path / "a.npy", setup, overwrite=False, source="x", checkpoint=run)
    with pytest.raises(InterruptedRun, match=r"stopped after \d+ frames; wrote \d+ frames to .*a\.npy"):
        run_live(setup, interrupted, [mine, saved], source="x")
    assert mine.closed == 1 and saved.count > 0
    assert np.load(tmp_path / "a.npy").shape == (saved.count, 30)

    setup = _setup(run)
    mine, saved = ListSink(), AnimationSink(tmp_path / "s.npz", setup, overwrite=False, source="x", checkpoint=run)
    with pytest.raises(AudioError, match="silent"):
        run_live(setup, lambda put: put(np.zeros(16000, np.float32)), [mine, saved], source="x")
    assert (mine.closed, mine.aborted) == (0, 1) and not (tmp_path / "s.npz").exists()


def test_verbose_prints_the_start_up_steps(run, tmp_path):
    from typer.testing import CliRunner

    from talkface.cli import app
    from talkface.io.audio import write_wav

    wav = write_wav(tmp_path / "a.wav", _speech(0.5))
    streamed = CliRunner().invoke(app, ["stream", str(wav), "--checkpoint", str(run), "--style", "alice", "--out",
                                        str(tmp_path / "s.npz"), "--verbose"])
    animated = CliRunner().invoke(app, ["animate", str(wav), "--checkpoint", str(run), "--style", "alice", "--out",
                                        str(tmp_path / "a.npz"), "--verbose"])
    for result, steps in ((streamed, ("import torch and talkface", "load the model", "time a pass (auto hop)")),
                          (animated, ("import torch", "load the model", "animate a.wav (alice)", "write a.npz"))):
        assert result.exit_code == 0, result.output
        for step in steps:
            assert re.search(rf"start-up: {re.escape(step)}: \d+\.\d\d s \(at \d+\.\d\d s\)", result.output), \
                result.output


def test_the_first_frames_do_not_wait_for_the_whole_start_up_backlog(run):
    """The audio heard while the model loaded: a short pass for the first frames, then the rest in one."""
    from talkface.live import run_live

    setup = _setup(run)  # 100 ms look-ahead, 50 ms hop
    audio = _speech(2.0)
    mine = ListSink()
    run_live(setup, lambda put: put(audio), [mine], source="x")  # all of it waiting at the first step
    counts = [v.shape[0] for _, v in mine.batches]
    assert len(counts) == 3  # first frames, the rest of the backlog in one pass, the end
    assert 0 < counts[0] <= 3 < counts[1]  # 50 ms hop at 30 fps: the first pass commits 2 frames
    assert sum(counts) == setup.streamer.model.num_frames_for(audio.size)
