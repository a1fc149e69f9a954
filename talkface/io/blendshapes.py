"""Per-frame blendshape weights out of talkface: ARKit-52 names, Live Link Face takes (CSV) and packets (UDP),
and Audio2Face-style JSON. numpy and the standard library only.

Over 400 lines: three wire formats that share one name table, one validation of (T, K) weights and the
sources that pin every field; apart they would repeat both.

Names. ``ARKIT_NAMES`` are Apple's ``ARFaceAnchor.BlendShapeLocation`` raw values (lowerCamelCase) in the
order of Unreal's ``EARFaceBlendShape``, which is the order of the 52 floats in a Live Link Face packet; 9
head/eye rotation curves follow them (``LIVELINK_ROTATIONS``), 61 in all (``LIVELINK_CURVES``, PascalCase as
Unreal names the properties). Names match case-insensitively, so a rig's ``JawOpen`` is ARKit's ``jawOpen``.
Sources, which agree on the order and on the 9 rotations:

- think-biq/LLV, ``src/llv/gesicht.py`` (``FaceFrame.FACE_BLENDSHAPE_NAMES``), which cites
  https://docs.unrealengine.com/en-US/API/Runtime/AugmentedReality/EARFaceBlendShape/index.html
- JimWest/PyLiveLinkFace, ``pylivelinkface/pylivelinkface.py`` (``FaceBlendShape``, the base of NeuroSync's
  Live Link code);
- markandre13/makehuman.js-backend, ``src/livelink/livelinkframe.cc`` (``LiveLinkFrame::blendshapeNames``);
- https://developer.apple.com/documentation/arkit/arfaceanchor/blendshapelocation (the 52 names).

CSV take (``write_livelink_csv``): what Unreal's LiveLinkFaceImporter reads (Engine/Plugins/.../
LiveLinkFaceImporter/.../LiveLinkFaceImporterFactory.cpp): column 0 must be ``Timecode``, column 1
``BlendShapeCount``, every other header cell becomes a Live Link property, every row has the header's column
count. The timecode is ``hh:mm:ss:frame.zzz`` where ``frame.zzz`` is a *fractional frame number* (parsed with
``Atof``), and the importer infers the rate as 60 fps when some frame number exceeds 30, else 30 fps; so this
writer counts frames at 30 fps, or at 60 fps when the motion is faster than 30 fps and the take shows a frame
number over 30 (both give the exact sample times at any motion fps). The app's CSV lists the columns in the
packet order except that ``JawRight`` precedes ``JawLeft`` and ``MouthRight`` precedes ``MouthLeft``
(``LIVELINK_CSV_COLUMNS``; header rows of real captures quoted by several public importers, e.g. the
polyvox_filament ``DynamicAnimation`` loader and Blender's LiveLinkFace add-ons); the writer follows the app
byte for byte. The 9 rotation columns are written as 0.

UDP packet (``encode_livelink_packet``, ``LiveLinkSender``), what the iPhone app sends to port 11111 and
Unreal's AppleARKitLiveLinkSource reads, all multi-byte fields big-endian (network order)::

    uint8   packet version (6)
    int32   device id length n, then n bytes UTF-8 (the app sends a UUID)
    int32   subject name length m, then m bytes UTF-8
    int32   frame number        | FQualifiedFrameTime:
    float32 subframe, [0, 1)    |   FFrameTime (frame number + subframe)
    int32   rate numerator      |   FFrameRate (numerator / denominator frames per second)
    int32   rate denominator    |
    uint8   curve count (61)
    61 x float32 curve values in LIVELINK_CURVES order

Verified against LLV (``FaceFrame._deserialize``/``_read_string``/``_read_frametime``: ``>B``, ``>l`` + bytes,
``>l >f >l >l``, ``>B``, ``>f``), PyLiveLinkFace (``decode``: ``!i`` name length, ``!if2ib`` frame time and
count, ``!61f``; its ``'$'``-prefixed id packed after ``<I`` 6 is the same bytes: 06 00 00 00 24 = version 6,
length 36) and makehuman.js-backend (``getByte``, big-endian ``getDWord`` strings and frame time, byte-swapped
floats). Unreal bounds a packet to 264..774 bytes, so the id and the subject stay within 250 bytes each.

Audio2Face-style JSON (``write_a2f_json``): the keys of Audio2Face's blendshape-weight export (NVIDIA Omniverse
Audio2Face, Data Conversion > Blendshape Conversion, "export ... as .json"), as public readers of that file use
them (a Babylon.js reader's ``Audio2FaceExportData``; Didimo's Unity sample ``A2FtoDidimoAnimation.BSData``):
``exportFps``, ``trackPath``, ``numPoses``, ``numFrames``, ``facsNames`` (K names), ``weightMat`` (numFrames
rows of numPoses weights). The names there are the rig's own, ARKit or not.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import socket
import struct
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from talkface.config import check_number
from talkface.errors import ConfigError
from talkface.io.fileio import read_json_object, reading, write_text_atomic

ARKIT_NAMES: tuple[str, ...] = (
    "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft", "eyeSquintLeft",
    "eyeWideLeft", "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight", "eyeLookOutRight", "eyeLookUpRight",
    "eyeSquintRight", "eyeWideRight", "jawForward", "jawLeft", "jawRight", "jawOpen", "mouthClose", "mouthFunnel",
    "mouthPucker", "mouthLeft", "mouthRight", "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft",
    "mouthFrownRight", "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthPressLeft", "mouthPressRight",
    "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft", "mouthUpperUpRight", "browDownLeft",
    "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff", "cheekSquintLeft",
    "cheekSquintRight", "noseSneerLeft", "noseSneerRight", "tongueOut",
)
LIVELINK_ROTATIONS: tuple[str, ...] = (
    "HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll", "RightEyeYaw",
    "RightEyePitch", "RightEyeRoll",
)
LIVELINK_CURVES: tuple[str, ...] = tuple(n[0].upper() + n[1:] for n in ARKIT_NAMES) + LIVELINK_ROTATIONS


def _app_csv_order(curves: tuple[str, ...]) -> tuple[str, ...]:
    order = list(curves)
    for left, right in (("JawLeft", "JawRight"), ("MouthLeft", "MouthRight")):
        i, j = order.index(left), order.index(right)
        order[i], order[j] = order[j], order[i]
    return tuple(order)


LIVELINK_CSV_COLUMNS: tuple[str, ...] = _app_csv_order(LIVELINK_CURVES)
NUM_CURVES = 61  # the BlendShapeCount of a packet and of a CSV row
LIVELINK_PORT = 11111  # where Unreal's Live Link Face source listens by default
PACKET_VERSION = 6
_MAX_PACKET_STRING = 250  # bytes of the device id or of the subject: two of them fit Unreal's 774-byte bound
_CANONICAL = {name.casefold(): name for name in ARKIT_NAMES + LIVELINK_ROTATIONS}
_CURVE_INDEX = {name.casefold(): i for i, name in enumerate(ARKIT_NAMES + LIVELINK_ROTATIONS)}


@dataclass(frozen=True)
class BlendshapeTrack:
    """Weights read back from a CSV take or a JSON export.

    Attributes:
        names: K names; ARKit's lowerCamelCase for the 52, PascalCase for the rotations, else as written.
        weights: (T, K) float32.
        fps: frames per second (from ``exportFps``; estimated from the timecodes for a CSV), None if unknown.
        times: (T,) float64 seconds from the CSV timecodes, or None for JSON.
    """

    names: tuple[str, ...]
    weights: np.ndarray
    fps: float | None
    times: np.ndarray | None = None

    def select(self, names: Sequence[str]) -> np.ndarray:
        """(T, len(names)) float32 weights of ``names`` (case-insensitive), in that order.

        Raises:
            ConfigError: a name is not in the track.
        """
        where = {n.casefold(): i for i, n in enumerate(self.names)}
        missing = [n for n in names if n.casefold() not in where]
        if missing:
            raise ConfigError(f"blendshape names {missing} are not in the track; it holds {list(self.names)}")
        return self.weights[:, [where[n.casefold()] for n in names]]


# --------------------------------------------------------------------------------------------- names, weights
def curve_indices(names: Sequence[str], *, ignore_unknown: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Where each of ``names`` goes among the 61 Live Link curves (``LIVELINK_CURVES`` order).

    Args:
        names: K blendshape names, ARKit's (any case) or the 9 rotation curves.
        ignore_unknown: drop names that are not Live Link curves with a warning instead of failing.

    Returns:
        (kept, curve): kept (J,) int indices into ``names``, curve (J,) int indices into the 61 curves.

    Raises:
        ConfigError: a name is empty, repeated (ignoring case) or, without ``ignore_unknown``, unknown.
    """
    _check_names(names)
    unknown = [n for n in names if n.casefold() not in _CURVE_INDEX]
    if unknown and not ignore_unknown:
        raise ConfigError(f"blendshape names {unknown} are not ARKit names nor Live Link rotation curves; Live "
                          f"Link Face carries only those 61 (e.g. jawOpen, mouthSmileLeft, HeadYaw): rename the "
                          f"rig's targets to ARKit names, or write JSON/.npz, which keep any name")
    if unknown:
        warnings.warn(f"blendshape names {unknown} are not ARKit names; Live Link Face output leaves them out",
                      stacklevel=2)
    kept = [i for i, n in enumerate(names) if n.casefold() in _CURVE_INDEX]
    return np.array(kept, dtype=np.intp), np.array([_CURVE_INDEX[names[i].casefold()] for i in kept], dtype=np.intp)


def _check_names(names: Sequence[str]) -> None:
    if isinstance(names, str) or not all(isinstance(n, str) and n.strip() for n in names):
        raise ConfigError(f"blendshape names must be a list of non-empty strings, got {names!r}")
    seen: dict[str, str] = {}
    for n in names:
        if n.casefold() in seen:
            raise ConfigError(f"blendshape name {n!r} repeats {seen[n.casefold()]!r} (names match ignoring case); "
                              "give each target one distinct name")
        seen[n.casefold()] = n


def check_weights(weights: np.ndarray, names: Sequence[str], *, min_frames: int = 1) -> np.ndarray:
    """``weights`` as (T, K) float32 after checking its shape against ``names`` and that it is finite.

    Raises:
        ConfigError: not 2-D, K != len(names), fewer than ``min_frames`` rows, NaN or infinite values.
    """
    w = np.asarray(weights)
    if w.ndim != 2 or w.shape[1] != len(names) or not np.issubdtype(w.dtype, np.number):
        raise ConfigError(f"blendshape weights have shape {w.shape} ({w.dtype}); expected numbers of shape "
                          f"(frames, {len(names)}), one column per name")
    if w.shape[0] < min_frames:
        raise ConfigError(f"blendshape weights have {w.shape[0]} frames; expected at least {min_frames}")
    w = w.astype(np.float32)
    if not np.isfinite(w).all():
        bad = np.argwhere(~np.isfinite(w))[0]
        raise ConfigError(f"blendshape weights hold NaN or infinite values (first at frame {bad[0]}, "
                          f"{names[bad[1]]!r}); check the solve that produced them")
    return w


def to_livelink_curves(weights: np.ndarray, names: Sequence[str], *, ignore_unknown: bool = False) -> np.ndarray:
    """(T, 61) float32 Live Link curves (``LIVELINK_CURVES`` order) from (T, K) weights; absent curves are 0."""
    kept, curve = curve_indices(names, ignore_unknown=ignore_unknown)
    w = check_weights(weights, names, min_frames=0)
    out = np.zeros((w.shape[0], NUM_CURVES), np.float32)
    out[:, curve] = w[:, kept]
    return out


def _as_fraction(value: float | Fraction, name: str) -> Fraction:
    """A positive rate as an exact fraction (29.97 -> 2997/100; a float fps is read to 1/1001 precision)."""
    if isinstance(value, Fraction):
        number = value
    else:
        check_number(value, name, low=0, low_open=True)
        number = Fraction(value).limit_denominator(1001)
    if number <= 0 or number.numerator >= 2**31:
        raise ConfigError(f"{name} must be a positive frame rate, got {value!r}")
    return number


# --------------------------------------------------------------------------------------------- CSV take
def livelink_timecodes(num_frames: int, fps: float | Fraction, *, start: float = 0.0) -> tuple[list[str], int]:
    """The ``Timecode`` cells of frames 0..T-1 at ``fps`` starting ``start`` seconds after midnight.

    Returns:
        (T strings ``HH:MM:SS:FF.fff``, the frame rate (30 or 60) that FF.fff counts in): see the module
        docstring for why only 30 or 60.
    """
    rate_fps = _as_fraction(fps, "fps")
    start_q = Fraction(check_number(start, "start", low=0)).limit_denominator(1_000_000)
    p, q, sn, sd = rate_fps.numerator, rate_fps.denominator, start_q.numerator, start_q.denominator

    def thousandths(rate: int) -> list[tuple[int, int]]:
        # (whole seconds, thousandths of a frame at `rate` into that second) of t = start + i / fps, in exact
        # integers: t * rate * 1000 = (sn * p + i * q * sd) * rate * 1000 / (sd * p), rounded half up
        den = sd * p
        return [divmod((2 * (sn * p + i * q * sd) * rate * 1000 + den) // (2 * den), rate * 1000)
                for i in range(num_frames)]

    rate, seconds = 30, thousandths(30)
    if rate_fps > 30:  # 60 only where the importer will infer 60 back (some frame number over 30)
        sixty = thousandths(60)
        if any(rem > 30_000 for _, rem in sixty):
            rate, seconds = 60, sixty
    cells = [f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}:{rem // 1000:02d}.{rem % 1000:03d}"
             for s, rem in seconds]
    return cells, rate


def write_livelink_csv(path: str | os.PathLike[str], weights: np.ndarray, names: Sequence[str], fps: float, *,
                       start: float = 0.0, ignore_unknown: bool = False) -> Path:
    """Write a Live Link Face take: ``Timecode,BlendShapeCount,`` + the 61 curves in the app's column order.

    Args:
        path: destination ``.csv`` (written atomically; overwrite policy is the caller's).
        weights: (T, K) weights, T >= 1, usually in [0, 1].
        names: K names: ARKit's 52 (any case, any subset, any order) or rotation curves; the other ARKit
            columns are written as 0.
        fps: frames per second of the weights.
        start: seconds after midnight of frame 0 (the timecode of the take's first row).
        ignore_unknown: leave out names that are not Live Link curves (with a warning) instead of failing.

    Raises:
        ConfigError: bad names, weights or fps (nothing is written).
        OutputError: the file cannot be written.
    """
    curves = to_livelink_curves(check_weights(weights, names), names, ignore_unknown=ignore_unknown)
    cells, _ = livelink_timecodes(curves.shape[0], fps, start=start)
    order = [LIVELINK_CURVES.index(c) for c in LIVELINK_CSV_COLUMNS]
    lines = [",".join(("Timecode", "BlendShapeCount") + LIVELINK_CSV_COLUMNS)]
    for cell, row in zip(cells, curves[:, order], strict=True):
        lines.append(f"{cell},{NUM_CURVES}," + ",".join(f"{v:.8f}" for v in row.tolist()))
    return write_text_atomic(path, "\n".join(lines) + "\n")


_TIMECODE = re.compile(r"^(\d+):(\d+):(\d+):(\d+(?:\.\d*)?)$")


def read_livelink_csv(path: str | os.PathLike[str]) -> BlendshapeTrack:
    """Read a Live Link Face CSV take (the app's or ``write_livelink_csv``'s) the way Unreal's importer does.

    Returns:
        A ``BlendshapeTrack`` with every curve column (ARKit names in lowerCamelCase), ``times`` from the
        timecodes (30 or 60 fps inferred as Unreal does) and ``fps`` estimated from them (about 1e-3 relative
        for short takes; the CSV holds no rate).

    Raises:
        ConfigError: missing file, wrong first columns, a row of the wrong length, a bad timecode or value.
    """
    p = Path(path)
    hint = "expected a Live Link Face take (Timecode,BlendShapeCount,<curves>...)"
    with reading(p, "a Live Link Face CSV", ConfigError, hint):
        text = p.read_text(encoding="utf-8-sig")
    try:
        rows = [r for r in csv.reader(io.StringIO(text)) if r]
    except csv.Error as e:
        raise ConfigError(f"{p}: not a readable CSV ({e}); {hint}") from e
    if not rows or len(rows[0]) < 3 or [c.casefold() for c in rows[0][:2]] != ["timecode", "blendshapecount"]:
        raise ConfigError(f"{p}: header {rows[0][:3] if rows else []}...; {hint}")
    names = tuple(_CANONICAL.get(c.strip().casefold(), c.strip()) for c in rows[0][2:])
    frames, times = [], []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(rows[0]):
            raise ConfigError(f"{p}: line {line} has {len(row)} columns; the header has {len(rows[0])}")
        match = _TIMECODE.match(row[0].strip())
        try:
            values = [float(v) for v in row[2:]]
        except ValueError:
            match = None
        if match is None or not all(math.isfinite(v) for v in values):
            raise ConfigError(f"{p}: line {line}: timecode {row[0]!r} or a value is malformed; expected "
                              "hh:mm:ss:ff.fff then finite numbers")
        times.append([float(g) for g in match.groups()])
        frames.append(values)
    tc = np.array(times, np.float64).reshape(-1, 4)
    rate = 60.0 if (tc[:, 3] > 30).any() else 30.0  # LiveLinkFaceImporterFactory::InferFrameRate
    seconds = tc[:, 0] * 3600 + tc[:, 1] * 60 + tc[:, 2] + tc[:, 3] / rate
    fps = None
    if len(seconds) > 1 and seconds[-1] > seconds[0]:
        fps = round((len(seconds) - 1) / (seconds[-1] - seconds[0]), 3)
    weights = np.array(frames, np.float32).reshape(-1, len(names))
    return BlendshapeTrack(names=names, weights=weights, fps=fps, times=seconds)


# --------------------------------------------------------------------------------------------- Audio2Face JSON
def write_a2f_json(path: str | os.PathLike[str], weights: np.ndarray, names: Sequence[str], fps: float, *,
                   track_path: str = "") -> Path:
    """Write weights laid out like Audio2Face's blendshape export (keys in the module docstring).

    Args:
        path: destination ``.json`` (written atomically).
        weights: (T, K) weights, T >= 1.
        names: K target names, any (the rig's own).
        fps: frames per second, written as ``exportFps``.
        track_path: the audio the animation was made from (``trackPath``), "" if none.

    Raises:
        ConfigError: bad names, weights or fps (nothing is written).
        OutputError: the file cannot be written.
    """
    _check_names(names)
    w = check_weights(weights, names)
    rate = check_number(fps, "fps", low=0, low_open=True)
    head = {"exportFps": int(rate) if rate == int(rate) else rate, "trackPath": str(track_path),
            "numPoses": w.shape[1], "numFrames": w.shape[0], "facsNames": list(names)}
    # 9 significant digits give every float32 back exactly
    rows = ",\n".join("    [" + ", ".join(f"{v:.9g}" for v in row) + "]" for row in w.tolist())
    fields = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in head.items()]
    return write_text_atomic(path, "{\n" + ",\n".join(fields) + ',\n  "weightMat": [\n' + rows + "\n  ]\n}\n")


def read_a2f_json(path: str | os.PathLike[str]) -> BlendshapeTrack:
    """Read an Audio2Face-style blendshape JSON (``facsNames`` + ``weightMat``; ``exportFps`` if present).

    Raises:
        ConfigError: missing file, not JSON, missing keys, ragged or non-numeric ``weightMat``, counts that
            disagree with ``numPoses``/``numFrames``, a bad ``exportFps``.
    """
    p = Path(path)
    hint = "expected Audio2Face's blendshape export (facsNames, weightMat, exportFps)"
    with reading(p, "an Audio2Face JSON", ConfigError, hint):
        data = read_json_object(p.read_text(encoding="utf-8"), str(p), ConfigError, hint)
    names, mat = data.get("facsNames"), data.get("weightMat")
    if not isinstance(names, list) or not isinstance(mat, list):
        raise ConfigError(f"{p}: keys {sorted(data)}; {hint}")
    try:
        _check_names(names)
        if any(not isinstance(r, list) or len(r) != len(names) for r in mat):
            raise ConfigError(f"weightMat rows must each hold {len(names)} numbers, one per facsName")
        if any(isinstance(v, bool) or not isinstance(v, int | float) for r in mat for v in r):
            raise ConfigError("weightMat holds a value that is not a number")
        weights = check_weights(np.array(mat, np.float64).reshape(len(mat), len(names)), names, min_frames=0)
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}; {hint}") from e
    for key, count in (("numPoses", len(names)), ("numFrames", len(mat))):
        if key in data and data[key] != count:
            raise ConfigError(f"{p}: {key} is {data[key]!r} but the file holds {count}; {hint}")
    fps = None
    if data.get("exportFps") is not None:
        fps = check_number(data["exportFps"], f"{p}: exportFps", low=0, low_open=True)
    return BlendshapeTrack(names=tuple(names), weights=weights, fps=fps)


# --------------------------------------------------------------------------------------------- UDP packets
def livelink_frame_time(index: int, fps: float | Fraction, rate: float | Fraction | None = None, *,
                        start: float = 0.0) -> tuple[int, float]:
    """Frame ``index`` of motion at ``fps`` as a Live Link frame time at ``rate`` (default ``fps``).

    Args:
        start: seconds of frame 0 (e.g. seconds since midnight, for Unreal's timecode mode); default 0.

    Returns:
        (frame number, subframe in [0, 1)) with frame number + subframe = (start + index / fps) * rate; the
        frame number wraps at 2**31 (the int32 of the packet, after 414 days at 60 fps).
    """
    seconds = Fraction(check_number(start, "start", low=0)).limit_denominator(1_000_000) + \
        Fraction(index) / _as_fraction(fps, "fps")
    exact = seconds * _as_fraction(rate if rate is not None else fps, "rate")
    whole = math.floor(exact)
    return whole % 2**31, float(exact - whole)


def encode_livelink_packet(curves: np.ndarray, frame_number: int, subframe: float, rate: float | Fraction, *,
                           subject: str = "talkface", device_id: str = "") -> bytes:
    """One Live Link Face UDP packet (layout in the module docstring).

    Args:
        curves: (61,) curve values in ``LIVELINK_CURVES`` order.
        frame_number / subframe: the frame time at ``rate`` (``livelink_frame_time``).
        rate: frames per second of the frame time, sent as numerator/denominator.
        subject: the Live Link subject name Unreal shows.
        device_id: the sender's id (the app sends a UUID string).
    """
    values = np.asarray(curves, dtype=">f4").reshape(-1)
    if values.shape != (NUM_CURVES,):
        raise ConfigError(f"a Live Link packet carries {NUM_CURVES} curves, got {values.shape[0]}")
    q = _as_fraction(rate, "rate")
    head = [struct.pack(">B", PACKET_VERSION)]
    for text in (device_id, subject):
        raw = text.encode("utf-8")
        head.append(struct.pack(">i", len(raw)) + raw)
    head.append(struct.pack(">ifiiB", frame_number, subframe, q.numerator, q.denominator, NUM_CURVES))
    return b"".join(head) + values.tobytes()


def parse_address(text: str, *, flag: str = "--livelink") -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPV6]:PORT`` as (host, port).

    Raises:
        ConfigError: naming ``flag``, for a missing host or port, a port outside 1..65535, an IPv6 address
            without brackets.
    """
    how = (f"expected HOST:PORT, e.g. 127.0.0.1:{LIVELINK_PORT} (Unreal's Live Link Face port), or "
           f"[::1]:{LIVELINK_PORT} for IPv6")
    match = re.fullmatch(r"\[([0-9A-Fa-f:.%\w]+)\]:(\w+)|([^:\[\]\s]+):(\w+)", text.strip()) if text else None
    if match is None:
        raise ConfigError(f"{flag} {text!r}: cannot read the address; {how}")
    host, port_text = (match[1], match[2]) if match[1] else (match[3], match[4])
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigError(f"{flag} {text!r}: port {port_text!r} is not a number in 1..65535; {how}")
    return host, int(port_text)


class LiveLinkSender:
    """Sends per-frame weights to Unreal as Live Link Face packets over UDP, and never raises mid-stream.

    A port nobody listens on answers with ICMP, which the next ``send`` on the connected socket reports as
    ``ConnectionRefusedError``; a missing route gives ``EHOSTUNREACH``/``ENETUNREACH``; a full buffer gives
    ``BlockingIOError`` (the socket never blocks the stream). Each such error is counted in ``failed`` and kept
    in ``last_error``; the first one is also passed to ``on_error`` (once per sender), and sending goes on.

    Args:
        address: ``HOST:PORT`` (``parse_address``); 127.0.0.1 is the local Unreal.
        names: K blendshape names of the weight rows (as ``curve_indices``).
        fps: frames per second of the motion.
        rate: frame rate of the packets' frame times (default ``fps``).
        start: seconds of frame 0 in the packets' frame times (``livelink_frame_time``).
        subject: Live Link subject name (at most 256 bytes of UTF-8).
        device_id: sender id (default: a UUID derived from ``subject``, stable across runs).
        on_error: called with the first send error.
        flag: the option named in address errors.
        ignore_unknown: drop non-ARKit names with a warning instead of failing.

    Raises:
        ConfigError: bad address (naming ``flag``), host that cannot be resolved, bad names, fps or subject.
    """

    def __init__(self, address: str, names: Sequence[str], fps: float, *, rate: float | None = None,
                 start: float = 0.0, subject: str = "talkface", device_id: str | None = None,
                 on_error: Callable[[OSError], None] | None = None, flag: str = "--livelink",
                 ignore_unknown: bool = False) -> None:
        self.host, self.port = parse_address(address, flag=flag)
        self.names = tuple(names)
        self._kept, self._curve = curve_indices(self.names, ignore_unknown=ignore_unknown)
        self.fps, self.rate = _as_fraction(fps, "fps"), _as_fraction(rate if rate is not None else fps, "rate")
        self.start = check_number(start, "start", low=0)
        self.device_id = device_id if device_id is not None else \
            str(uuid.uuid5(uuid.NAMESPACE_URL, f"talkface:{subject}")).upper()
        for what, text in (("subject", subject), ("device id", self.device_id)):
            if not text or len(text.encode("utf-8")) > _MAX_PACKET_STRING:
                raise ConfigError(f"Live Link {what} {text!r} must hold 1..{_MAX_PACKET_STRING} bytes")
        self.subject = subject
        self.on_error = on_error
        self.sent = 0
        self.failed = 0
        self.last_error: OSError | None = None
        self._reported = False
        try:
            info = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)[0]
        except (socket.gaierror, UnicodeError) as e:
            raise ConfigError(f"{flag} {address!r}: cannot resolve host {self.host!r} ({e}); give an IP address "
                              f"such as 127.0.0.1:{LIVELINK_PORT}") from e
        self._target = info[4]
        self._socket = socket.socket(info[0], socket.SOCK_DGRAM)
        self._socket.setblocking(False)
        self._connected = False
        self._connect()

    def _connect(self) -> None:
        # connect() makes the kernel report ICMP errors (refused port) on this socket's later sends
        try:
            self._socket.connect(self._target)
            self._connected = True
        except OSError as e:
            self._record(e)

    def _record(self, error: OSError) -> None:
        self.failed += 1
        self.last_error = error
        if not self._reported:
            self._reported = True
            if self.on_error is not None:
                self.on_error(error)

    def packet(self, frame_index: int, weights_row: np.ndarray) -> bytes:
        """The packet ``send`` would send for frame ``frame_index`` with (K,) weights."""
        row = np.asarray(weights_row)
        if row.shape != (len(self.names),):
            raise ConfigError(f"weights row has shape {row.shape}; expected ({len(self.names)},), one per name")
        curves = np.zeros(NUM_CURVES, np.float32)
        curves[self._curve] = row[self._kept]
        if not np.isfinite(curves).all():
            raise ConfigError(f"weights of frame {frame_index} hold NaN or infinite values")
        number, sub = livelink_frame_time(frame_index, self.fps, self.rate, start=self.start)
        return encode_livelink_packet(curves, number, sub, self.rate, subject=self.subject, device_id=self.device_id)

    def send(self, frame_index: int, weights_row: np.ndarray) -> bool:
        """Send frame ``frame_index``; True if the socket took it, False on a network error (recorded).

        Raises:
            ConfigError: the row's shape or values are wrong (a caller bug, not a network failure).
        """
        data = self.packet(frame_index, weights_row)
        if not self._connected:
            self._connect()
            if not self._connected:
                return False
        try:
            self._socket.send(data)
        except OSError as e:  # refused, unreachable, buffer full or anything else: recorded, never raised
            self._record(e)
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        """Close the socket (idempotent)."""
        self._socket.close()

    def __enter__(self) -> LiveLinkSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
