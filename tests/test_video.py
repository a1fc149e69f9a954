"""write_mp4 / probe_mp4: real files encoded and decoded back with the bundled ffmpeg (no GL needed)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from talkface.errors import AudioError, ConfigError, RenderError
from talkface.render.video import ffmpeg_exe, probe_mp4, write_mp4

pytest.importorskip("imageio_ffmpeg", reason="imageio-ffmpeg (the render extra) is not installed")

SIZE = 64


def grey_frames(num: int, height: int = SIZE, width: int = SIZE) -> list[np.ndarray]:
    """Frame i is uniformly grey at level 20 + 7 i, so frame order is readable after decoding."""
    return [np.full((height, width, 3), 20 + 7 * i, dtype=np.uint8) for i in range(num)]


def write_tone(path: Path, seconds: float, rate: int = 16000) -> Path:
    t = np.arange(int(round(seconds * rate))) / rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate)
    return path


def decode_rgb(path: Path, width: int, height: int) -> np.ndarray:
    """All frames of ``path`` as (N, H, W, 3) uint8, decoded independently of probe_mp4."""
    raw = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True, check=True,
    ).stdout
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, height, width, 3)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("audio_seconds", [0.4, 1.0, 1.7])
def test_audio_is_padded_or_cut_to_the_video(tmp_path: Path, audio_seconds: float) -> None:
    num, fps = 30, 30.0
    wav = write_tone(tmp_path / "speech.wav", audio_seconds)
    out = write_mp4(grey_frames(num), fps, tmp_path / "out.mp4", audio_path=wav, num_frames=num)
    info = probe_mp4(out)
    assert info.video_frames == num
    assert info.fps == pytest.approx(fps)
    assert (info.video_codec, info.pix_fmt, info.audio_codec) == ("h264", "yuv420p", "aac")
    assert (info.width, info.height) == (SIZE, SIZE)
    assert info.video_duration == pytest.approx(num / fps, abs=1e-6)
    assert info.audio_duration is not None
    assert abs(info.audio_duration - num / fps) <= 1 / fps
    assert leftovers(tmp_path) == ["out.mp4", "speech.wav"]  # no temp file left behind


def test_frames_arrive_in_order(tmp_path: Path) -> None:
    out = write_mp4(grey_frames(12, 48, 80), 25.0, tmp_path / "out.mp4", num_frames=12)
    decoded = decode_rgb(out, 80, 48)
    assert len(decoded) == 12
    expected = np.array([20 + 7 * i for i in range(12)])
    assert np.abs(decoded.reshape(12, -1).mean(axis=1) - expected).max() < 2.0  # x264 crf 18 noise


def test_without_audio_and_with_fractional_fps(tmp_path: Path) -> None:
    out = write_mp4(iter(grey_frames(25)), 29.97, tmp_path / "silent.mp4", num_frames=25)
    info = probe_mp4(out)
    assert info.audio_codec is None and info.audio_duration is None
    assert info.video_frames == 25
    assert info.fps == pytest.approx(29.97)
    assert info.video_duration == pytest.approx(25 / 29.97, abs=1e-3)


def test_fewer_frames_than_promised_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match="got 5 frames; expected 8"):
        write_mp4(grey_frames(5), 30.0, tmp_path / "out.mp4", num_frames=8)
    assert leftovers(tmp_path) == []


def test_more_frames_than_promised_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match="more than the 3 frames"):
        write_mp4(grey_frames(5), 30.0, tmp_path / "out.mp4", num_frames=3)
    assert leftovers(tmp_path) == []


def test_a_failing_frame_source_leaves_nothing(tmp_path: Path) -> None:
    def frames():
        yield from grey_frames(3)
        raise RenderError("frame 3 shows only background")

    with pytest.raises(RenderError, match="only background"):
        write_mp4(frames(), 30.0, tmp_path / "out.mp4", num_frames=10)
    assert leftovers(tmp_path) == []


def test_existing_file_survives_a_failed_write(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    out.write_bytes(b"old")
    with pytest.raises(RenderError):
        write_mp4(grey_frames(2), 30.0, out, num_frames=3)
    assert out.read_bytes() == b"old"


def test_bad_frames_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="odd"):
        write_mp4(grey_frames(2, 63, 64), 30.0, tmp_path / "a.mp4", num_frames=2)
    with pytest.raises(RenderError, match="uint8"):
        write_mp4([np.zeros((64, 64, 3), np.float32)], 30.0, tmp_path / "b.mp4", num_frames=1)
    with pytest.raises(RenderError, match="differs"):
        write_mp4(grey_frames(1) + grey_frames(1, 32, 32), 30.0, tmp_path / "c.mp4", num_frames=2)
    with pytest.raises(RenderError, match="no frames"):
        write_mp4([], 30.0, tmp_path / "d.mp4", num_frames=1)
    with pytest.raises(ConfigError):
        write_mp4(grey_frames(1), 0.0, tmp_path / "e.mp4", num_frames=1)
    assert leftovers(tmp_path) == []


def test_missing_or_unreadable_audio(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="no such audio file"):
        write_mp4(grey_frames(2), 30.0, tmp_path / "a.mp4", audio_path=tmp_path / "nope.wav", num_frames=2)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio")
    with pytest.raises(RenderError, match="ffmpeg failed"):
        write_mp4(grey_frames(2), 30.0, tmp_path / "b.mp4", audio_path=junk, num_frames=2)
    assert leftovers(tmp_path) == ["junk.wav"]


def test_probe_errors(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match="no such video"):
        probe_mp4(tmp_path / "missing.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(RenderError):
        probe_mp4(junk)


# --------------------------------------------------------------------------------------------- issue 15
_STUCK_RENDER = """
import sys, time
import numpy as np
from talkface.cli.common import sigterm_as_interrupt
from talkface.render.video import write_mp4

def frames():
    for _ in range(3):  # larger than the pipe's write buffer: ffmpeg has really received frames
        yield np.zeros((128, 128, 3), np.uint8)
    time.sleep(1.0)  # ffmpeg has read and encoded them
    print("encoding", flush=True)
    time.sleep(600)  # a render that is still going when it is stopped

try:
    with sigterm_as_interrupt():
        write_mp4(frames(), 30.0, sys.argv[1], num_frames=100)
except KeyboardInterrupt:
    sys.exit(143)
"""


def _ffmpeg_child(proc: subprocess.Popen) -> int:
    assert proc.stdout is not None and proc.stdout.readline().strip() == "encoding"
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def _gone(pid: int, seconds: float = 20.0) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split()[2]
        except FileNotFoundError:
            return True
        if state == "Z":  # dead, waiting for its (new) parent to reap it
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="Linux only: PR_SET_PDEATHSIG and /proc")
@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_ffmpeg_never_outlives_a_stopped_render(tmp_path, how):
    """SIGTERM unwinds like Ctrl-C (ffmpeg killed, temp mp4 deleted, exit 143); after SIGKILL, which no handler
    sees, the kernel kills ffmpeg because it asked for a death signal, so no orphan finalises the temp file."""
    import os
    import signal
    import sys

    out = tmp_path / "video.mp4"
    proc = subprocess.Popen([sys.executable, "-c", _STUCK_RENDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        ffmpeg = _ffmpeg_child(proc)
        os.kill(proc.pid, getattr(signal, how))
        code = proc.wait(timeout=60)
        assert code == (143 if how == "SIGTERM" else -signal.SIGKILL)
        assert _gone(ffmpeg), "ffmpeg outlived its parent"
        if how == "SIGTERM":
            assert list(tmp_path.iterdir()) == []  # the temp mp4 was removed, nothing was finalised
        else:
            assert not out.exists()
            # an orphan would see EOF on its stdin and finalise the temp mp4 into a playable 1-frame video
            for leftover in tmp_path.iterdir():
                with pytest.raises(RenderError):
                    probe_mp4(leftover)
    finally:
        proc.kill()
        proc.wait()
