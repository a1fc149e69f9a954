import numpy as np
import pytest
import soundfile as sf

from talkface.errors import AudioError
from talkface.io.audio import (
    SAMPLE_RATE,
    load_audio,
    normalize_waveform,
    num_motion_frames,
    resample,
    to_float32,
    write_wav,
)


def _tone(seconds: float, rate: int, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resampled_duration_and_frequency(tmp_path, rate):
    path = tmp_path / "a.wav"
    sf.write(path, _tone(1.0, rate), rate)
    audio = load_audio(path)
    assert audio.dtype == np.float32
    assert abs(len(audio) - SAMPLE_RATE) <= 2
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spectrum) * SAMPLE_RATE / len(audio) - 220.0) < 2.0


def test_stereo_downmix_and_flac(tmp_path):
    left, right = _tone(0.5, 16000), np.zeros(8000, np.float32)
    path = tmp_path / "s.flac"
    sf.write(path, np.stack([left, right], 1), 16000)
    audio = load_audio(path)
    np.testing.assert_allclose(audio, left / 2, atol=1e-3)


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda p: None, "no such audio file"),
        (lambda p: p.write_text("not audio"), "not a readable audio file"),
        (lambda p: sf.write(p, np.zeros(0, np.float32), 16000), "no samples"),
        (lambda p: sf.write(p, np.zeros(10, np.float32), 16000), "too short"),
        (lambda p: sf.write(p, np.full(16000, np.nan, np.float32), 16000, subtype="FLOAT"), "NaN"),
    ],
)
def test_bad_audio_is_a_clear_error(tmp_path, make, needle):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioError, match=needle) as e:
        load_audio(path)
    assert str(path) in str(e.value)


def test_integer_pcm_scaling():
    np.testing.assert_allclose(to_float32(np.array([-32768, 0, 16384], np.int16)), [-1, 0, 0.5])
    np.testing.assert_allclose(to_float32(np.array([0, 128, 255], np.uint8)), [-1, 0, 127 / 128])


def test_normalize_and_frames():
    x = normalize_waveform(np.arange(1000, dtype=np.float32))
    assert abs(x.mean()) < 1e-5 and abs(x.std() - 1) < 1e-3
    assert num_motion_frames(16000 * 3, 30) == 90
    assert num_motion_frames(10, 30) == 1
    assert resample(np.ones(1600, np.float32), 16000, 8000).shape == (800,)


def test_write_wav_round_trip(tmp_path):
    tone = _tone(0.3, SAMPLE_RATE)
    path = write_wav(tmp_path / "o.wav", tone)
    np.testing.assert_allclose(load_audio(path), tone, atol=1e-4)
    assert [p.name for p in tmp_path.iterdir()] == ["o.wav"]
