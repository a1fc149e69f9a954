"""Audio loading and the audio/motion length arithmetic.

Everything downstream sees mono float32 waveforms at ``SAMPLE_RATE`` (16 kHz), the rate wav2vec 2.0
was trained on. Its CNN hops 320 samples, so features come at ``FEATURE_RATE`` = 50 Hz.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from talkface.errors import AudioError
from talkface.io.fileio import atomic_path, file_exists, reading

SAMPLE_RATE = 16_000  # Hz, wav2vec 2.0's input rate
FEATURE_HOP = 320  # samples per wav2vec 2.0 CNN frame (5*2*2*2*2*2*2)
FEATURE_RATE = SAMPLE_RATE // FEATURE_HOP  # 50 Hz
assert FEATURE_RATE * FEATURE_HOP == SAMPLE_RATE  # checking division, as whisper does
MIN_SAMPLES = 400  # one wav2vec 2.0 receptive field (25 ms); shorter audio has no features


def resample(audio: np.ndarray, source_rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Resample with soxr (band-limited, high quality).

    Args:
        audio: (S,) or (S, C) float waveform.
        source_rate: its rate in Hz.
        target_rate: wanted rate in Hz.

    Returns:
        (S', ...) float32 waveform at ``target_rate``.
    """
    if source_rate <= 0:
        raise AudioError(f"sample rate {source_rate} Hz is not positive")
    audio = np.asarray(audio, dtype=np.float32)
    if source_rate == target_rate or audio.shape[0] == 0:
        return audio.copy()
    import soxr

    return soxr.resample(audio, source_rate, target_rate, quality="HQ").astype(np.float32)


def to_float32(audio: np.ndarray) -> np.ndarray:
    """Convert integer PCM (int16/int32/uint8) to float32 in [-1, 1]; floats are cast."""
    audio = np.asarray(audio)
    if audio.dtype == np.uint8:
        return (audio.astype(np.float32) - 128.0) / 128.0
    if np.issubdtype(audio.dtype, np.integer):
        return (audio.astype(np.float64) / float(-np.iinfo(audio.dtype).min)).astype(np.float32)
    if np.issubdtype(audio.dtype, np.floating):
        return audio.astype(np.float32)
    raise AudioError(f"audio array has dtype {audio.dtype}; expected integer PCM or float samples")


def check_waveform(audio: np.ndarray, source: str) -> np.ndarray:
    """Check a mono waveform is long enough and finite; return it.

    Raises:
        AudioError: fewer than ``MIN_SAMPLES`` samples or NaN/inf samples.
    """
    if audio.ndim != 1:
        raise AudioError(f"{source}: expected a mono waveform (S,), found shape {audio.shape}")
    if audio.shape[0] < MIN_SAMPLES:
        raise AudioError(
            f"{source}: {audio.shape[0]} samples at {SAMPLE_RATE} Hz is too short; "
            f"need at least {MIN_SAMPLES} samples (25 ms) of speech"
        )
    if not np.isfinite(audio).all():
        raise AudioError(f"{source}: contains NaN or infinite samples; re-export the audio")
    return audio


def _wav_data_bytes(path: Path) -> tuple[int, int] | None:
    """(declared, present) bytes of a RIFF/WAVE file's ``data`` chunk; None when not a WAV or size unknown.

    libsndfile silently reads what is there, so a cut-off download would pass as a shorter recording.
    Streaming writers put 0 or 0xFFFFFFFF as the size; those are not checked.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk = f.read(8)
            declared = int.from_bytes(chunk[4:8], "little")
            if chunk[:4] == b"data":
                return None if declared in (0, 0xFFFFFFFF) else (declared, size - pos - 8)
            pos += 8 + declared + (declared & 1)
    return None


def check_audio_file(path: str | os.PathLike[str]) -> tuple[int, int, int]:
    """Check that ``path`` is a complete audio file libsndfile can read, without decoding it.

    Returns:
        (frames, sample rate in Hz, channels) from the header.

    Raises:
        AudioError: missing, unreadable (not audio, e.g. a text file named .wav) or truncated file.
    """
    import soundfile as sf

    p = Path(path)
    with reading(p, "an audio file", AudioError, "fix the link or pass another audio file"):
        present = file_exists(p)  # a symlink loop or a folder is named as such, not "no such file"
    if not present:
        raise AudioError(f"{p}: no such audio file")
    try:
        info = sf.info(str(p))
    except Exception as e:  # soundfile raises LibsndfileError/RuntimeError/TypeError for bad files
        reason = str(e).replace(f"'{p}'", "").replace("  ", " ").strip()
        raise AudioError(f"{p}: not a readable audio file ({reason}); expected wav, flac, ogg or mp3: "
                         "re-export the audio") from e
    try:
        sizes = _wav_data_bytes(p)
    except OSError as e:
        raise AudioError(f"{p}: cannot read ({e.strerror})") from e
    if sizes is not None and sizes[1] < sizes[0]:
        raise AudioError(f"{p}: truncated: the WAV header declares {sizes[0]} bytes of samples but the file holds "
                         f"{sizes[1]}; copy or export the file again")
    return int(info.frames), int(info.samplerate), int(info.channels)


def check_audio_samples(path: str | os.PathLike[str]) -> None:
    """Decode ``path`` and refuse NaN/infinite samples (``check_audio_file`` reads only the header).

    Raises:
        AudioError: unreadable file or non-finite samples, naming ``path``.
    """
    import soundfile as sf

    p = Path(path)
    check_audio_file(p)
    try:
        data, _ = sf.read(str(p), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError/RuntimeError/TypeError for bad files
        raise AudioError(f"{p}: not a readable audio file ({e}); re-export the audio") from e
    if not np.isfinite(data).all():
        raise AudioError(f"{p}: contains NaN or infinite samples; re-export the audio")


def check_not_silent(audio: np.ndarray, source: str) -> np.ndarray:
    """Refuse digital silence (every sample exactly 0): an export mistake, not speech.

    Raises:
        AudioError: all samples are zero.
    """
    if audio.size and not np.any(audio):
        raise AudioError(f"{source}: is silent (every sample is 0); expected speech: check the recording or "
                         "re-export the audio")
    return audio


def load_audio(path: str | os.PathLike[str], sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read any file libsndfile reads (wav, flac, ogg, mp3), down-mix to mono and resample.

    Args:
        path: audio file.
        sample_rate: output rate in Hz.

    Returns:
        (S,) float32 waveform at ``sample_rate``, samples in [-1, 1].

    Raises:
        AudioError: missing, unreadable, truncated, empty, silent, too short or non-finite audio.
    """
    import soundfile as sf

    p = Path(path)
    check_audio_file(p)
    try:
        data, rate = sf.read(str(p), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError/RuntimeError/TypeError for bad files
        raise AudioError(f"{p}: not a readable audio file ({e}); expected wav, flac, ogg or mp3: "
                         "re-export the audio") from e
    if data.shape[0] == 0:
        raise AudioError(f"{p}: contains no samples; expected speech audio")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return check_not_silent(check_waveform(resample(mono, int(rate), sample_rate), str(p)), str(p))


def normalize_waveform(audio: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance, as Wav2Vec2FeatureExtractor(do_normalize=True) does.

    Args:
        audio: (S,) float32.

    Returns:
        (S,) float32.
    """
    audio = np.asarray(audio, dtype=np.float32)
    return ((audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)).astype(np.float32)


def num_motion_frames(num_samples: int, fps: float, sample_rate: int = SAMPLE_RATE) -> int:
    """Number of motion frames that cover ``num_samples`` of audio at ``fps`` (at least 1)."""
    return max(1, int(num_samples * fps / sample_rate))


def write_wav(path: str | os.PathLike[str], audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write a mono 16-bit PCM wav atomically.

    Args:
        path: destination ``.wav``.
        audio: (S,) float waveform in [-1, 1].
        sample_rate: Hz.
    """
    import soundfile as sf

    with atomic_path(path) as tmp:
        sf.write(str(tmp), np.clip(np.asarray(audio, dtype=np.float32), -1, 1), sample_rate, subtype="PCM_16",
                 format="WAV")
    return Path(path)
