"""Blendshape weight formats: ARKit names, Live Link Face CSV takes and UDP packets, Audio2Face-style JSON.

The packet decoder and the timecode parser here are written from the documented layouts (LLV's
``FaceFrame._deserialize``, Unreal's ``LiveLinkFaceImporterFactory``), not from the encoder's code.
"""

from __future__ import annotations

import errno
import json
import math
import socket
import struct
import time
import uuid
import warnings
from fractions import Fraction

import numpy as np
import pytest

from talkface.errors import ConfigError
from talkface.io.blendshapes import (
    ARKIT_NAMES,
    LIVELINK_CSV_COLUMNS,
    LIVELINK_CURVES,
    LiveLinkSender,
    livelink_frame_time,
    livelink_timecodes,
    parse_address,
    read_a2f_json,
    read_livelink_csv,
    to_livelink_curves,
    write_a2f_json,
    write_livelink_csv,
)

# Apple's ARFaceAnchor.BlendShapeLocation, typed from its documentation page (alphabetical there).
APPLE_52 = {
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff",
    "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight",
    "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight",
    "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen",
    "jawRight", "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight",
    "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper",
    "mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft",
    "mouthUpperUpRight", "noseSneerLeft", "noseSneerRight", "tongueOut",
}
# Positions in Unreal's EARFaceBlendShape (= the packet), spot-checked from LLV's and PyLiveLinkFace's tables.
ENUM_POSITIONS = {0: "eyeBlinkLeft", 7: "eyeBlinkRight", 14: "jawForward", 15: "jawLeft", 16: "jawRight",
                  17: "jawOpen", 18: "mouthClose", 21: "mouthLeft", 22: "mouthRight", 41: "browDownLeft",
                  46: "cheekPuff", 51: "tongueOut"}
ROTATIONS = ["HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll", "RightEyeYaw",
             "RightEyePitch", "RightEyeRoll"]


# --------------------------------------------------------------------------------------------- oracles
def decode_packet(data: bytes) -> dict:
    """Independent decoder: u8 version; i32 BE length + UTF-8 device id; the same for the subject; i32 frame,
    f32 subframe, i32 rate numerator, i32 rate denominator; u8 count; count x f32, all big-endian."""
    at = 0

    def take(fmt: str):
        nonlocal at
        values = struct.unpack_from(fmt, data, at)
        at += struct.calcsize(fmt)
        return values

    (version,) = take(">B")
    strings = []
    for _ in range(2):
        (length,) = take(">i")
        strings.append(data[at:at + length].decode("utf-8"))
        at += length
    frame, subframe, numerator, denominator, count = take(">ifiiB")
    values = take(f">{count}f")
    assert at == len(data), "bytes left after the curves"
    return {"version": version, "device_id": strings[0], "subject": strings[1], "frame": frame,
            "subframe": subframe, "rate": Fraction(numerator, denominator), "count": count, "values": values}


def unreal_seconds(cells: list[str]) -> np.ndarray:
    """Seconds of timecode cells as LiveLinkFaceImporterFactory computes them (rate 60 if a frame > 30)."""
    parts = [[float(x) for x in c.split(":")] for c in cells]
    rate = 60 if any(p[3] > 30 for p in parts) else 30
    return np.array([h * 3600 + m * 60 + s + f / rate for h, m, s, f in parts])


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------- names
def test_arkit_names_are_apples_52_in_unreal_enum_order():
    assert len(ARKIT_NAMES) == 52 and set(ARKIT_NAMES) == APPLE_52
    for position, name in ENUM_POSITIONS.items():
        assert ARKIT_NAMES[position] == name
    assert len(LIVELINK_CURVES) == 61 and list(LIVELINK_CURVES[52:]) == ROTATIONS
    assert [c[0].lower() + c[1:] for c in LIVELINK_CURVES[:52]] == list(ARKIT_NAMES)


def test_csv_columns_follow_the_app_with_right_before_left_for_jaw_and_mouth():
    assert sorted(LIVELINK_CSV_COLUMNS) == sorted(LIVELINK_CURVES)
    cols = list(LIVELINK_CSV_COLUMNS)
    assert cols[:3] == ["EyeBlinkLeft", "EyeLookDownLeft", "EyeLookInLeft"]
    assert cols[14:18] == ["JawForward", "JawRight", "JawLeft", "JawOpen"]
    assert cols[18:25] == ["MouthClose", "MouthFunnel", "MouthPucker", "MouthRight", "MouthLeft", "MouthSmileLeft",
                           "MouthSmileRight"]
    assert cols[52:] == ROTATIONS


def test_curves_place_each_name_case_insensitively_and_zero_the_rest():
    w = np.array([[0.25, 0.5, -0.75]], np.float32)
    out = to_livelink_curves(w, ["JawOpen", "mouthsmileleft", "HeadYaw"])
    assert out.shape == (1, 61) and out.dtype == np.float32
    assert out[0, 17] == 0.25 and out[0, 23] == 0.5 and out[0, 52] == -0.75
    assert np.count_nonzero(out) == 3


@pytest.mark.parametrize("names", [["jawOpen", "JawOpen"], ["jawOpen", ""], ["jawOpen", "notAShape"]])
def test_bad_names_are_refused(names):
    with pytest.raises(ConfigError):
        to_livelink_curves(np.zeros((2, 2)), names)


def test_unknown_names_can_be_left_out_with_a_warning():
    with pytest.warns(UserWarning, match="customLip"):
        out = to_livelink_curves(np.array([[0.5, 0.9]]), ["jawOpen", "customLip"], ignore_unknown=True)
    assert out[0, 17] == 0.5 and np.count_nonzero(out) == 1


# --------------------------------------------------------------------------------------------- CSV
@pytest.mark.parametrize(("fps", "index", "cell"), [
    (30, 45, "00:00:01:15.000"),
    (25, 1, "00:00:00:01.200"),  # 0.04 s = 1.2 frames at 30
    (30, 30 * 3600, "01:00:00:00.000"),
    (60, 45, "00:00:00:45.000"),  # 60 fps counted at 60: the take shows frames over 30
])
def test_timecode_cells_by_hand(fps, index, cell):
    cells, _ = livelink_timecodes(index + 1, fps)
    assert cells[index] == cell


def test_a_short_fast_take_counts_at_30_so_unreal_infers_the_right_rate():
    cells, rate = livelink_timecodes(10, 60)  # 0.15 s: at 60 no frame number would exceed 30
    assert rate == 30 and cells[3] == "00:00:00:01.500"


@pytest.mark.parametrize("fps", [24, 25, 29.97, 30, 50, 60, 100])
def test_timecodes_give_unreal_the_sample_times(fps):
    for start in (0.0, 3723.5):
        cells, _ = livelink_timecodes(200, fps, start=start)
        expected = start + np.arange(200) / fps
        np.testing.assert_allclose(unreal_seconds(cells), expected, atol=0.0005 / 30 + 1e-9)


def test_csv_layout_and_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    names = ["mouthRight", "JawOpen", "mouthSmileLeft", "jawLeft", "tongueOut", "eyeBlinkRight"]
    weights = rng.uniform(0, 1, (40, len(names))).astype(np.float32)
    path = write_livelink_csv(tmp_path / "take.csv", weights, names, 25)
    lines = path.read_text().splitlines()
    assert lines[0] == "Timecode,BlendShapeCount," + ",".join(LIVELINK_CSV_COLUMNS)
    assert len(lines) == 41 and all(len(line.split(",")) == 63 for line in lines)
    header = lines[0].split(",")
    row = lines[3].split(",")
    assert row[0] == "00:00:00:02.400" and row[1] == "61"  # frame 2: 0.08 s = 2.4 frames at 30
    assert float(row[header.index("MouthRight")]) == pytest.approx(weights[2, 0], abs=1e-8)
    assert float(row[header.index("JawLeft")]) == pytest.approx(weights[2, 3], abs=1e-8)
    assert all(float(row[header.index(r)]) == 0 for r in ROTATIONS)

    track = read_livelink_csv(path)
    assert track.weights.shape == (40, 61) and track.fps == 25
    np.testing.assert_allclose(track.select(names), weights, atol=1e-8)
    others = [n for n in ARKIT_NAMES if n.casefold() not in {x.casefold() for x in names}]
    assert not track.select(others).any()
    np.testing.assert_allclose(track.times, np.arange(40) / 25, atol=1e-9)


@pytest.mark.parametrize(("weights", "names", "fps"), [
    (np.full((3, 1), np.nan), ["jawOpen"], 30),
    (np.zeros((3, 2)), ["jawOpen"], 30),
    (np.zeros((0, 1)), ["jawOpen"], 30),
    (np.zeros((3, 1)), ["jawOpen"], 0),
    (np.zeros((3, 1)), ["jawOpen"], float("inf")),
    (np.zeros((3, 1)), ["lipCornerPuller"], 30),
])
def test_csv_bad_input_writes_nothing(tmp_path, weights, names, fps):
    with pytest.raises(ConfigError):
        write_livelink_csv(tmp_path / "take.csv", weights, names, fps)
    assert list(tmp_path.iterdir()) == []


def test_csv_reader_reads_an_app_style_take_as_unreal_does(tmp_path):
    header = "Timecode,BlendshapeCount," + ",".join(LIVELINK_CSV_COLUMNS)  # some app versions spell it so
    values = [["0"] * 61 for _ in range(4)]
    values[2][16] = "0.5"  # curve 16 of the app's order: JawForward, JawRight, JawLeft are 14, 15, 16
    frames = ("28.207", "29.207", "30.207", "31.207")
    rows = [f"14:03:52:{ff},61," + ",".join(v) for ff, v in zip(frames, values, strict=True)]
    path = tmp_path / "MySlate_7_iPhone.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    track = read_livelink_csv(path)
    assert track.names[:3] == ("eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft") and track.names[-1] == "RightEyeRoll"
    np.testing.assert_allclose(track.times, 14 * 3600 + 3 * 60 + 52 + np.array([28.207, 29.207, 30.207, 31.207]) / 60)
    assert track.fps == 60
    assert track.select(["jawLeft"])[:, 0].tolist() == [0, 0, 0.5, 0]


def test_csv_reader_refuses_foreign_files(tmp_path):
    bad = tmp_path / "bad.csv"
    for text in ("frame,jawOpen\n0,1\n", "Timecode,BlendShapeCount,JawOpen\n00:00:00:01.000,61\n",
                 "Timecode,BlendShapeCount,JawOpen\nnoon,61,0.5\n", "Timecode,BlendShapeCount,JawOpen\n"
                 "00:00:00:01.000,61,nan\n"):
        bad.write_text(text)
        with pytest.raises(ConfigError, match="bad.csv"):
            read_livelink_csv(bad)
    with pytest.raises(ConfigError, match="no such file"):
        read_livelink_csv(tmp_path / "missing.csv")


# --------------------------------------------------------------------------------------------- JSON
def test_a2f_json_layout_and_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    names = ["jawOpen", "lipCornerPuller_L", "mouthClose"]  # any rig names
    weights = rng.uniform(0, 1, (7, 3)).astype(np.float32)
    path = write_a2f_json(tmp_path / "anim.json", weights, names, 30, track_path="speech.wav")
    data = json.loads(path.read_text())
    assert list(data) == ["exportFps", "trackPath", "numPoses", "numFrames", "facsNames", "weightMat"]
    assert data["exportFps"] == 30 and data["trackPath"] == "speech.wav"
    assert data["numPoses"] == 3 and data["numFrames"] == 7 and data["facsNames"] == names
    assert np.array(data["weightMat"]).shape == (7, 3)
    track = read_a2f_json(path)
    assert track.names == tuple(names) and track.fps == 30 and track.times is None
    np.testing.assert_array_equal(track.weights, weights)  # float32 exactly


@pytest.mark.parametrize("data", [
    {"facsNames": ["a", "b"]},
    {"facsNames": ["a", "b"], "weightMat": [[0.1, 0.2], [0.3]]},
    {"facsNames": ["a", "b"], "weightMat": [[0.1, "x"]]},
    {"facsNames": ["a", "a"], "weightMat": [[0.1, 0.2]]},
    {"facsNames": ["a"], "weightMat": [[0.1]], "numFrames": 2},
    {"facsNames": ["a"], "weightMat": [[0.1]], "exportFps": -1},
])
def test_a2f_json_reader_refuses_malformed_files(tmp_path, data):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="bad.json"):
        read_a2f_json(path)


# --------------------------------------------------------------------------------------------- UDP packets
@pytest.mark.parametrize(("index", "fps", "rate", "start"), [(0, 30, None, 0), (7, 30, None, 0), (7, 25, 60, 0),
                                                         (1001, 29.97, 60, 0), (3, 25, 60, 45296.25)])
def test_frame_time_is_index_at_the_packet_rate(index, fps, rate, start):
    number, sub = livelink_frame_time(index, fps, rate, start=start)
    exact = (start + index / fps) * (rate or fps)
    assert number == math.floor(exact + 1e-9) and 0 <= sub < 1
    assert number + sub == pytest.approx(exact, abs=1e-6)


def test_packet_decodes_to_names_times_and_values():
    names = ["mouthSmileLeft", "jawOpen", "HeadYaw", "tongueOut"]
    sender = LiveLinkSender(f"127.0.0.1:{_free_udp_port()}", names, 25, rate=60, subject="Talkface")
    row = np.array([0.5, 0.75, -0.125, 1.0], np.float32)
    decoded = decode_packet(sender.packet(7, row))
    sender.close()
    with LiveLinkSender(sender.host + f":{sender.port}", names, 25, rate=60, start=10.0) as later:
        assert decode_packet(later.packet(5, row))["frame"] == 612  # (10 + 5/25) s at 60
    assert decoded["version"] == 6 and decoded["subject"] == "Talkface" and decoded["count"] == 61
    assert str(uuid.UUID(decoded["device_id"])).upper() == decoded["device_id"]
    assert decoded["rate"] == 60 and decoded["frame"] == 16  # 7 / 25 s = 16.8 frames at 60
    assert decoded["subframe"] == pytest.approx(0.8, abs=1e-6)
    values = dict(zip(LIVELINK_CURVES, decoded["values"], strict=True))
    assert values["MouthSmileLeft"] == 0.5 and values["JawOpen"] == 0.75 and values["HeadYaw"] == -0.125
    assert values["TongueOut"] == 1.0 and sum(v != 0 for v in values.values()) == 4


def test_udp_round_trip_on_loopback():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(2.0)
        names = list(ARKIT_NAMES)
        weights = np.random.default_rng(2).uniform(0, 1, (5, 52)).astype(np.float32)
        with LiveLinkSender(f"127.0.0.1:{receiver.getsockname()[1]}", names, 30) as sender:
            for i, row in enumerate(weights):
                assert sender.send(10 + i, row)
            packets = [decode_packet(receiver.recv(2048)) for _ in range(5)]
        assert sender.sent == 5 and sender.failed == 0
    for i, packet in enumerate(packets):
        assert packet["frame"] == 10 + i and packet["subframe"] == 0 and packet["rate"] == 30
        np.testing.assert_array_equal(np.array(packet["values"][:52], np.float32), weights[i])
        assert packet["values"][52:] == (0.0,) * 9


def test_ipv6_loopback_when_available():
    try:
        receiver = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        receiver.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with receiver, LiveLinkSender(f"[::1]:{receiver.getsockname()[1]}", ["jawOpen"], 30) as sender:
        receiver.settimeout(2.0)
        assert sender.send(0, np.array([0.5]))
        assert decode_packet(receiver.recv(2048))["values"][17] == 0.5


def test_refused_port_never_raises_and_is_reported_once():
    reports: list[OSError] = []
    with LiveLinkSender(f"127.0.0.1:{_free_udp_port()}", ["jawOpen"], 30, on_error=reports.append) as sender:
        for i in range(200):  # the ICMP answer comes back asynchronously; a later send reports it
            sender.send(i, np.array([0.5]))
            if sender.failed >= 3:
                break
            time.sleep(0.005)
    assert sender.failed >= 3 and len(reports) == 1
    assert isinstance(reports[0], ConnectionRefusedError) and isinstance(sender.last_error, ConnectionRefusedError)


def test_unreachable_host_never_raises_and_is_reported_once():
    class Unreachable:
        def send(self, data: bytes) -> int:
            raise OSError(errno.EHOSTUNREACH, "No route to host")

        def close(self) -> None:
            pass

    reports: list[OSError] = []
    sender = LiveLinkSender(f"127.0.0.1:{_free_udp_port()}", ["jawOpen"], 30, on_error=reports.append)
    sender.close()
    sender._socket = Unreachable()
    assert not any(sender.send(i, np.array([0.1])) for i in range(5))
    assert sender.failed == 5 and sender.sent == 0 and len(reports) == 1
    assert reports[0].errno == errno.EHOSTUNREACH


def test_a_wrong_row_is_a_caller_error():
    with LiveLinkSender(f"127.0.0.1:{_free_udp_port()}", ["jawOpen", "mouthClose"], 30) as sender:
        with pytest.raises(ConfigError):
            sender.send(0, np.array([0.5]))
        with pytest.raises(ConfigError):
            sender.send(0, np.array([0.5, np.nan]))


@pytest.mark.parametrize("text", ["nohost", "host:", ":11111", "host:99999", "host:abc", "host:0", "::1:11111",
                                  "[::1]", "", "127.0.0.1:-5"])
def test_bad_addresses_name_the_flag(text):
    with pytest.raises(ConfigError, match="--livelink"):
        parse_address(text)
    with pytest.raises(ConfigError, match="--livelink"):
        LiveLinkSender(text, ["jawOpen"], 30)


def test_good_addresses():
    assert parse_address("127.0.0.1:11111") == ("127.0.0.1", 11111)
    assert parse_address("[::1]:9000") == ("::1", 9000)
    assert parse_address(" localhost:11111 ") == ("localhost", 11111)


def test_no_warning_on_a_clean_send():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with LiveLinkSender(f"127.0.0.1:{receiver.getsockname()[1]}", ["jawOpen"], 30) as sender:
                assert sender.send(0, np.array([1.0]))
