"""MP4 writing and probing with the ffmpeg binary bundled in imageio-ffmpeg (no system ffmpeg/ffprobe).

``write_mp4`` streams raw RGB frames into one ffmpeg process that encodes H.264 (yuv420p) and muxes the
audio (AAC) in the same pass. ``probe_mp4`` reads the streams back and decodes them to count frames and
measure durations exactly; tests and the benchmark use it as the oracle.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO, cast

import numpy as np

from talkface.errors import AudioError, ConfigError, RenderError
from talkface.io.fileio import atomic_path, output_error, tool_output_errno

# Seconds to wait for ffmpeg to finish after the last frame (flushing the encoder and muxing).
_FFMPEG_FINISH_TIMEOUT_S = 600.0


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with imageio-ffmpeg.

    Raises:
        RenderError: imageio-ffmpeg is not installed or has no binary for this platform.
    """
    try:
        import imageio_ffmpeg
    except ImportError as e:
        raise RenderError(
            "imageio-ffmpeg is not installed; it provides the ffmpeg used to write videos. "
            "Install it with: pip install 'talkface[render]' (or pip install imageio-ffmpeg)"
        ) from e
    try:
        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except RuntimeError as e:
        raise RenderError(f"imageio-ffmpeg found no ffmpeg binary ({e}); reinstall imageio-ffmpeg") from e


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that asks Linux to SIGKILL the child when its parent dies (prctl PR_SET_PDEATHSIG),
    so that a killed talkface never leaves an orphaned ffmpeg finalising a temporary mp4; None elsewhere.

    libc's ``prctl`` is looked up here, in the parent: the child runs between fork and exec while other
    threads (the progress bar's) may hold the import lock, so it must not import anything.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig, sigkill = 1, int(signal.SIGKILL)
    return lambda: prctl(pr_set_pdeathsig, sigkill, 0, 0, 0)


def _fps_arg(fps: float) -> str:
    """``fps`` as an exact rational string, so 29.97 stays 2997/100 instead of being rounded."""
    return str(Fraction(fps).limit_denominator(100000))


def _tail(text: str, lines: int = 8) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _encode_command(
    out: Path, width: int, height: int, fps: float, num_frames: int, audio_path: Path | None, crf: int, preset: str
) -> list[str]:
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error", "-y"]
    cmd += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", _fps_arg(fps), "-i", "-"]
    if audio_path is not None:
        cmd += ["-i", str(audio_path)]
    cmd += ["-map", "0:v:0"]
    cmd += ["-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p"]
    if audio_path is not None:
        # The video is the clock. The issue asks for ``-shortest``, but with ``-af apad`` it overshoots
        # nondeterministically (audio 6.208 s for 6.0 s of video in 4/24 runs, RENDERING.md §4/§7.7,
        # ffmpeg's interleaving buffer), and without apad a short wav would cut the video. So the audio
        # is padded with silence (apad) and both streams are cut at exactly frames/fps with ``-t``.
        cmd += ["-map", "1:a:0", "-c:a", "aac", "-b:a", "128k", "-af", "apad"]
        cmd += ["-t", f"{num_frames / fps:.6f}"]
    cmd += ["-movflags", "+faststart", str(out)]
    return cmd


def _check_frame(frame: object, index: int, shape: tuple[int, ...] | None) -> np.ndarray:
    arr = np.asarray(frame)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise RenderError(f"frame {index}: got dtype {arr.dtype} shape {arr.shape}; expected (H, W, 3) uint8 RGB")
    if shape is not None and arr.shape != shape:
        raise RenderError(f"frame {index}: shape {arr.shape} differs from frame 0's {shape}; all frames must match")
    if shape is None and (arr.shape[0] % 2 or arr.shape[1] % 2):
        raise ConfigError(
            f"frame size {arr.shape[1]}x{arr.shape[0]} is odd; H.264 yuv420p needs even width and height"
        )
    return np.ascontiguousarray(arr)


def write_mp4(
    frames: Iterable[np.ndarray],
    fps: float,
    out: str | os.PathLike[str],
    *,
    audio_path: str | os.PathLike[str] | None = None,
    num_frames: int,
    crf: int = 18,
    preset: str = "medium",
) -> Path:
    """Encode frames (and optionally audio) into an MP4 in one ffmpeg process, atomically.

    The file is H.264 (libx264, yuv420p) with ``+faststart``; the audio, when given, is AAC, padded
    with silence or cut so that it lasts exactly ``num_frames / fps`` seconds.

    Args:
        frames: iterable of (H, W, 3) uint8 RGB frames, H and W even; consumed lazily (streamed).
        fps: frames per second (> 0).
        out: destination ``.mp4``; replaced atomically (callers check overwrite permission).
        audio_path: any audio file ffmpeg reads (wav, flac, mp3, ...), or None for a silent video.
        num_frames: how many frames ``frames`` yields; checked.
        crf: x264 constant rate factor (0 lossless .. 51 worst); 18 is visually lossless.
        preset: x264 preset (``ultrafast`` .. ``veryslow``).

    Returns:
        ``out`` as a Path.

    Raises:
        ConfigError: bad fps/num_frames/crf or odd frame size.
        AudioError: ``audio_path`` does not exist.
        RenderError: malformed frames, a frame count different from ``num_frames``, or ffmpeg failed
            (its last error lines are in the message).
        OutputError: the destination cannot be written.
    """
    if not (np.isfinite(fps) and fps > 0):
        raise ConfigError(f"fps is {fps}; expected a positive frame rate such as 30")
    if num_frames < 1:
        raise ConfigError(f"num_frames is {num_frames}; a video needs at least one frame")
    if not 0 <= crf <= 51:
        raise ConfigError(f"crf is {crf}; expected 0..51 (18 is visually lossless)")
    audio = Path(audio_path) if audio_path is not None else None
    if audio is not None and not audio.is_file():
        raise AudioError(f"{audio}: no such audio file; pass an existing wav/flac/mp3 or omit the audio")
    dest = Path(out)
    iterator = iter(frames)
    with atomic_path(dest) as tmp:
        try:
            first = next(iterator)
        except StopIteration:
            raise RenderError(f"{dest}: no frames to write; expected {num_frames}") from None
        frame = _check_frame(first, 0, None)
        shape = frame.shape
        cmd = _encode_command(tmp, shape[1], shape[0], fps, num_frames, audio, crf, preset)
        # Our own Popen rather than imageio_ffmpeg.write_frames: that helper ignores ffmpeg's exit
        # status and lets ffmpeg write to our stderr; we need the status and the message.
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err,
                                    preexec_fn=die_with_parent())
            pipe = cast(IO[bytes], proc.stdin)  # stdin=PIPE always gives a pipe
            written = 0
            try:
                while True:
                    try:
                        pipe.write(memoryview(frame).cast("B"))
                    except BrokenPipeError:
                        break  # ffmpeg died; its message is read below
                    written += 1
                    try:
                        frame = _check_frame(next(iterator), written, shape)
                    except StopIteration:
                        break
                    if written >= num_frames:
                        raise RenderError(f"{dest}: more than the {num_frames} frames promised; nothing was written")
                with contextlib.suppress(BrokenPipeError):  # ffmpeg died; its message is read below
                    pipe.close()
                code = proc.wait(timeout=_FFMPEG_FINISH_TIMEOUT_S)
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            finally:
                close = getattr(iterator, "close", None)
                if close is not None:
                    close()  # a generator source (the renderer) is released now, not at collection
            err.seek(0)
            message = err.read().decode("utf-8", "replace")
        if code != 0 and (number := tool_output_errno(message)) is not None:
            raise output_error(dest, number)  # ffmpeg could not write the file: the disk, not the video
        if code != 0:
            raise RenderError(f"{dest}: ffmpeg failed (exit {code}):\n{_tail(message)}\ncommand: {' '.join(cmd)}")
        if written != num_frames:
            raise RenderError(f"{dest}: got {written} frames; expected {num_frames}; nothing was written")
    return dest


@dataclass(frozen=True)
class Mp4Info:
    """What an MP4 holds, read with the bundled ffmpeg.

    Attributes:
        video_frames: number of decoded video frames.
        fps: the video stream's frame rate.
        width: pixels.
        height: pixels.
        video_duration: seconds of decoded video (sum of frame durations).
        audio_duration: seconds of decoded audio, or None without an audio stream.
        audio_codec: e.g. ``aac``, or None.
        video_codec: e.g. ``h264``.
        pix_fmt: e.g. ``yuv420p``.
        container_duration: the ``Duration`` the container reports, seconds (None if absent).
        audio_sample_rate: Hz, or None.
    """

    video_frames: int
    fps: float
    width: int
    height: int
    video_duration: float
    audio_duration: float | None
    audio_codec: str | None
    video_codec: str
    pix_fmt: str
    container_duration: float | None = None
    audio_sample_rate: int | None = None


_VIDEO_RE = re.compile(r"Stream #0:(\d+)[^:]*: Video: (\w+)[^,]*, (\w+)[^,]*?(?:\([^)]*\))?, (\d+)x(\d+)")
_AUDIO_RE = re.compile(r"Stream #0:(\d+)[^:]*: Audio: (\w+)[^,]*, (\d+) Hz")
_FPS_RE = re.compile(r"([\d.]+)(k?) (?:fps|tbr)")
_DURATION_RE = re.compile(r"Duration: (\d+):(\d+):([\d.]+)")
_TB_RE = re.compile(r"^#tb (\d+): (\d+)/(\d+)", re.MULTILINE)


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL)


def _stream_info(path: Path) -> tuple[re.Match[str], re.Match[str] | None, float, float | None]:
    # ``ffmpeg -i`` with no output prints the stream table on stderr and exits 1 by design.
    text = _run([ffmpeg_exe(), "-hide_banner", "-i", str(path)]).stderr
    video = next((m for m in _VIDEO_RE.finditer(text)), None)
    if video is None:
        raise RenderError(f"{path}: no video stream found by ffmpeg:\n{_tail(text)}")
    line = text[video.start() : text.find("\n", video.start())]
    fps_match = _FPS_RE.search(line)
    if fps_match is None:
        raise RenderError(f"{path}: cannot read the video frame rate from: {line.strip()}")
    fps = float(fps_match.group(1)) * (1000 if fps_match.group(2) else 1)
    duration = _DURATION_RE.search(text)
    seconds = None
    if duration is not None:
        h, m, s = duration.groups()
        seconds = int(h) * 3600 + int(m) * 60 + float(s)
    return video, _AUDIO_RE.search(text), fps, seconds


def probe_mp4(path: str | os.PathLike[str]) -> Mp4Info:
    """Describe an MP4: codecs and sizes from ``ffmpeg -i``, frame count and durations from a full decode.

    The decode goes to the ``framecrc`` muxer (like ``-f null``, but it lists every decoded frame with
    its duration), so the counts are exact rather than container estimates.

    Raises:
        RenderError: missing file, no video stream, or ffmpeg cannot decode it.
    """
    p = Path(path)
    if not p.is_file():
        raise RenderError(f"{p}: no such video file")
    video, audio, fps, container = _stream_info(p)
    v_index = int(video.group(1))
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(p), "-map", f"0:{v_index}"]
    if audio is not None:
        cmd += ["-map", f"0:{audio.group(1)}"]
    cmd += ["-fps_mode", "passthrough", "-f", "framecrc", "-"]
    result = _run(cmd)
    if result.returncode != 0:
        raise RenderError(f"{p}: ffmpeg cannot decode it:\n{_tail(result.stderr)}")
    time_bases = {int(i): Fraction(int(n), int(d)) for i, n, d in _TB_RE.findall(result.stdout)}
    counts = {0: 0, 1: 0}
    durations = {0: Fraction(0), 1: Fraction(0)}
    for row in result.stdout.splitlines():
        if not row or row.startswith("#"):
            continue
        # framecrc rows: stream_index, dts, pts, duration, size, crc
        fields = [f.strip() for f in row.split(",")]
        stream = int(fields[0])
        counts[stream] = counts.get(stream, 0) + 1
        durations[stream] = durations.get(stream, Fraction(0)) + int(fields[3]) * time_bases.get(stream, Fraction(0))
    return Mp4Info(
        video_frames=counts[0],
        fps=fps,
        width=int(video.group(4)),
        height=int(video.group(5)),
        video_duration=float(durations[0]),
        audio_duration=float(durations[1]) if audio is not None else None,
        audio_codec=audio.group(2) if audio is not None else None,
        video_codec=video.group(2),
        pix_fmt=video.group(3),
        container_duration=container,
        audio_sample_rate=int(audio.group(3)) if audio is not None else None,
    )
