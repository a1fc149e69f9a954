"""Rigs: readers (npz, OBJ folder, glTF/GLB incl. sparse accessors and split vertices), the bad-rig classes,
the ARKit-52 rig of the synthetic head, and the retarget/animate commands with every output format."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from talkface.cli import app
from talkface.errors import RigError
from talkface.io.animation import Animation, load_animation, save_animation
from talkface.io.blendshapes import ARKIT_NAMES, read_a2f_json, read_livelink_csv
from talkface.io.gltf import morph_document, write_document
from talkface.io.rig import load_rig, make_rig, match_topology, save_rig, symmetric_pairs
from talkface.rig import SolveOptions, resolve_rig, retarget, setup

runner = CliRunner()
V = 40


def flat(text: str) -> str:
    """CLI output without Rich's box borders and line wrapping, for phrase matching."""
    return " ".join(text.replace("│", " ").split())


def small_rig(rng: np.random.Generator, k: int = 5, names: list[str] | None = None) -> tuple[list[str], np.ndarray,
                                                                                          np.ndarray]:
    """(names, neutral (V, 3), deltas (K, V, 3)): random local targets, well conditioned."""
    neutral = rng.normal(size=(V, 3)).astype(np.float32)
    deltas = np.zeros((k, V, 3), np.float32)
    for i in range(k):
        idx = rng.choice(V, size=12, replace=False)
        deltas[i, idx] = rng.normal(scale=0.05, size=(12, 3))
    return names or [f"shape{i}" for i in range(k)], neutral, deltas


def faces_for(v: int) -> np.ndarray:
    return np.array([[i, i + 1, i + 2] for i in range(v - 2)], dtype=np.int32)


# ------------------------------------------------------------------------------------------ readers


def test_npz_targets_and_deltas_read_the_same(tmp_path):
    names, neutral, deltas = small_rig(np.random.default_rng(0))
    np.savez(tmp_path / "t.npz", names=np.array(names), neutral=neutral, targets=neutral + deltas)
    np.savez(tmp_path / "d.npz", names=np.array(names), neutral=neutral, deltas=deltas)
    a, b = load_rig(tmp_path / "t.npz"), load_rig(tmp_path / "d.npz")
    assert a.names == b.names == tuple(names)
    np.testing.assert_allclose(a.deltas, deltas, atol=1e-6)
    np.testing.assert_array_equal(b.deltas, deltas)
    saved = load_rig(save_rig(tmp_path / "s.npz", b))
    np.testing.assert_array_equal(saved.deltas, b.deltas)


def test_obj_folder_reads_names_from_files(tmp_path):
    from talkface.io.mesh import obj_text

    names, neutral, deltas = small_rig(np.random.default_rng(1), k=3, names=["jawOpen", "mouthSmileLeft", "a b"])
    (tmp_path / "rig").mkdir()
    (tmp_path / "rig" / "neutral.obj").write_text(obj_text(neutral, faces_for(V)))
    for n, d in zip(names, deltas, strict=True):
        (tmp_path / "rig" / f"{n}.obj").write_text(obj_text(neutral + d, faces_for(V)))
    rig = load_rig(tmp_path / "rig")
    assert sorted(rig.names) == sorted(names)
    for n, d in zip(names, deltas, strict=True):
        np.testing.assert_allclose(rig.deltas[rig.names.index(n)], d, atol=1e-5)
    assert rig.faces is not None and rig.faces.shape == (V - 2, 3)


def test_glb_round_trip_keeps_names_deltas_and_faces(tmp_path):
    names, neutral, deltas = small_rig(np.random.default_rng(2))
    doc, data = morph_document(neutral, faces_for(V), deltas, names, np.zeros((3, len(names))), 30.0)
    for binary, suffix in ((True, ".glb"), (False, ".gltf")):
        path = write_document(tmp_path / f"r{suffix}", json.loads(json.dumps(doc)), data, binary=binary)
        rig = load_rig(path)
        assert rig.names == tuple(names)
        np.testing.assert_array_equal(rig.deltas, deltas)
        np.testing.assert_array_equal(rig.faces, faces_for(V))


def _sparse_gltf(path: Path, neutral: np.ndarray, deltas: np.ndarray, names: list[str]) -> Path:
    """A .gltf whose targets are sparse accessors without a base bufferView (as Blender exports shape keys)."""
    blob, views, accessors = b"", [], []

    def add(arr: np.ndarray) -> int:
        nonlocal blob
        raw = np.ascontiguousarray(arr).tobytes()
        views.append({"buffer": 0, "byteOffset": len(blob), "byteLength": len(raw)})
        blob += raw + b"\0" * (-len(raw) % 4)
        return len(views) - 1

    accessors.append({"bufferView": add(neutral.astype("<f4")), "componentType": 5126, "count": V, "type": "VEC3"})
    targets = []
    for d in deltas:
        idx = np.flatnonzero(np.abs(d).max(1) > 0).astype("<u2")
        accessors.append({"componentType": 5126, "count": V, "type": "VEC3", "sparse": {
            "count": int(idx.size), "indices": {"bufferView": add(idx), "componentType": 5123},
            "values": {"bufferView": add(d[idx].astype("<f4"))}}})
        targets.append({"POSITION": len(accessors) - 1})
    doc = {"asset": {"version": "2.0"}, "meshes": [{"primitives": [{"attributes": {"POSITION": 0},
                                                                     "targets": targets}],
                                                     "extras": {"targetNames": names}}],
           "accessors": accessors, "bufferViews": views,
           "buffers": [{"byteLength": len(blob), "uri": "side.bin"}]}
    (path.parent / "side.bin").write_bytes(blob)
    path.write_text(json.dumps(doc))
    return path


def test_sparse_accessors_and_external_buffer(tmp_path):
    names, neutral, deltas = small_rig(np.random.default_rng(3))
    rig = load_rig(_sparse_gltf(tmp_path / "sparse.gltf", neutral, deltas, names))
    np.testing.assert_array_equal(rig.deltas, deltas)


def test_split_vertices_of_an_export_map_back_by_position():
    """A glTF export duplicates vertices on UV seams: the rig is mapped onto the animation's vertices."""
    names, neutral, deltas = small_rig(np.random.default_rng(4))
    order = np.concatenate([np.random.default_rng(5).permutation(V), [3, 7, 7]])  # reordered + 3 seam copies
    exported = make_rig(names, neutral[order], deltas=deltas[:, order], faces=None, source="export.glb")
    assert exported.num_vertices == V + 3
    mapped = match_topology(exported, neutral)
    np.testing.assert_array_equal(mapped.deltas, deltas)
    # Copies that move differently cannot be merged.
    bad = deltas[:, order].copy()
    bad[0, -1] += 0.01
    with pytest.raises(RigError, match="copies of one vertex"):
        match_topology(make_rig(names, neutral[order], deltas=bad, source="export.glb"), neutral)


# ------------------------------------------------------------------------------------------ bad rigs


@pytest.mark.parametrize("case, pattern", [
    ("duplicate", r"'b' appears twice"),
    ("empty", r"target 1 has an empty name"),
    ("nan", r"target 'c' has non-finite"),
    ("neutral", r"target 'd' is identical to the neutral"),
    ("dependent", r"'a', 'b', 'e' are linearly dependent"),
    ("count", r"has 39 vertices, the animation 40"),
])
def test_each_bad_rig_class_names_the_file_and_the_target(tmp_path, case, pattern):
    rng = np.random.default_rng(6)
    names, neutral, deltas = small_rig(rng, names=["a", "b", "c", "d", "e"])
    if case == "duplicate":
        names[0] = "b"
    elif case == "empty":
        names[1] = " "
    elif case == "nan":
        deltas[2, 5, 1] = np.nan
    elif case == "neutral":
        deltas[3] = 0
    elif case == "dependent":
        deltas[4] = 0.5 * deltas[0] - 2 * deltas[1]
    elif case == "count":
        neutral, deltas = neutral[:-1], deltas[:, :-1]
    path = tmp_path / "bad.npz"
    np.savez(path, names=np.array(names), neutral=neutral, deltas=deltas)
    with pytest.raises(RigError, match=pattern) as info:
        load_rig(path, num_vertices=V)
    assert str(path) in str(info.value)


def test_displacements_stored_as_targets_get_a_hint(tmp_path):
    names, neutral, deltas = small_rig(np.random.default_rng(7))
    np.savez(tmp_path / "r.npz", names=np.array(names), neutral=neutral + 5.0, targets=deltas)
    with pytest.raises(RigError, match="look like displacements"):
        load_rig(tmp_path / "r.npz")


def test_unsupported_target_is_held_at_zero_with_a_warning():
    names, neutral, deltas = small_rig(np.random.default_rng(8), k=3, names=["jawOpen", "eyeBlinkLeft", "x"])
    deltas[:] = 0
    deltas[0, :10] = 0.01
    deltas[1, 30:] = 0.01  # outside the lips region
    deltas[2, 5:15, 0] = 0.01
    rig = make_rig(names, neutral, deltas=deltas, regions={"lips": np.arange(20)})
    prepared = setup(rig)
    assert prepared.region == "lips" and any("eyeBlinkLeft" in w for w in prepared.warnings)
    motion = neutral + 0.4 * deltas[0] + 0.7 * deltas[1]
    fit = retarget(motion[None], neutral, prepared, fps=30)
    np.testing.assert_allclose(fit.weights[0], [0.4, 0.0, 0.0], atol=1e-5)


def test_symmetric_pairs_by_name():
    names = ("mouthSmileLeft", "mouthSmileRight", "jawOpen", "brow_L", "brow_R", "eyeLeft", "jawLeft", "jawRight")
    assert sorted(symmetric_pairs(names)) == [(0, 1), (3, 4)]


# ------------------------------------------------------------------------------------------ the ARKit rig


@pytest.fixture(scope="module")
def arkit():
    return resolve_rig("synthetic-arkit")


def test_arkit_rig_has_the_52_names_on_the_head(arkit):
    from talkface.synthetic.head import build_head

    head = build_head()
    assert arkit.names == ARKIT_NAMES and len(arkit.names) == 52
    np.testing.assert_array_equal(arkit.neutral, head.vertices)
    assert {"lips", "jaw"} <= set(arkit.regions)
    assert len(symmetric_pairs(arkit.names)) == 18  # 20 Left/Right pairs less jaw and mouth directions


@pytest.mark.parametrize("asymmetry", [0.45, -0.45])
def test_arkit_rig_represents_every_synthetic_speakers_motion(arkit, asymmetry):
    """Speech motion of the corpus' speakers (any head shape, either smile side) is explained >= 0.99."""
    from talkface.synthetic.head import HeadShape, build_head, vary_head
    from talkface.synthetic.motion import animate_head

    head = vary_head(build_head(), HeadShape(scale=1.05, width=1.03, height=0.97, depth=1.02))
    t = np.arange(240) / 30
    jaw = 0.5 * (0.5 + 0.5 * np.sin(2 * np.pi * 2.3 * t))
    acts = {"jaw_open": 1.2 * jaw, "lip_round": 1.2 * np.clip(np.sin(2 * np.pi * 0.7 * t), 0, None),
            "lip_close": np.clip(np.sin(2 * np.pi * 1.1 * t), 0, 1), "smile_asym": asymmetry * 1.2 * jaw}
    vertices = animate_head(head, {k: v.astype(np.float32) for k, v in acts.items()})
    fit = retarget(vertices, head.vertices, setup(arkit), fps=30)
    assert fit.explained >= 0.99, fit.summary()
    assert fit.weights.min() >= 0 and fit.weights.max() <= 1
    jaw_col = fit.weights[:, arkit.names.index("jawOpen")]
    assert np.corrcoef(jaw_col, jaw)[0, 1] > 0.99  # jawOpen follows the jaw
    assert not [w for w in fit.warnings if "upper bound" in w or "cannot follow" in w]


def test_arkit_weights_rebuild_the_mesh(arkit):
    rng = np.random.default_rng(9)
    truth = np.zeros((20, 52))
    mouth = [arkit.names.index(n) for n in ("jawOpen", "mouthFunnel", "mouthSmileLeft", "mouthPressRight")]
    truth[:, mouth] = rng.uniform(0, 0.8, size=(20, 4))
    fit = retarget(arkit.mesh(truth), arkit.neutral, setup(arkit), fps=30)
    np.testing.assert_allclose(fit.weights, truth, atol=1e-4)
    assert fit.explained > 0.999999


# ------------------------------------------------------------------------------------------ commands


def _anim_file(tmp_path: Path, arkit, frames: int = 30) -> Path:
    rng = np.random.default_rng(10)
    truth = np.zeros((frames, 52))
    truth[:, arkit.names.index("jawOpen")] = rng.uniform(0, 0.7, frames)
    truth[:, arkit.names.index("mouthSmileLeft")] = rng.uniform(0, 0.5, frames)
    anim = Animation(arkit.mesh(truth), 30.0, arkit.faces, {"style": "x"}, neutral=arkit.neutral)
    return save_animation(tmp_path / "anim.npz", anim)


@pytest.mark.parametrize("suffix", [".csv", ".json", ".glb", ".npz"])
def test_retarget_writes_each_format_and_reports_the_fit(tmp_path, arkit, suffix):
    anim = _anim_file(tmp_path, arkit)
    out = tmp_path / f"w{suffix}"
    result = runner.invoke(app, ["retarget", str(anim), "--rig", "synthetic-arkit", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "explained 1.000" in result.output
    jaw = load_animation(anim)
    if suffix == ".csv":
        track = read_livelink_csv(out)
        assert track.weights.shape[0] == 30
        w = track.select(["jawOpen"])[:, 0]
    elif suffix == ".json":
        track = read_a2f_json(out)
        assert list(track.names) == list(ARKIT_NAMES)
        w = track.select(["jawOpen"])[:, 0]
    elif suffix == ".glb":
        import pygltflib

        g = pygltflib.GLTF2().load(str(out))
        assert g.meshes[0].extras["targetNames"] == list(ARKIT_NAMES)
        assert len(g.meshes[0].primitives[0].targets) == 52
        rig = load_rig(out)  # our own reader: the exported rig is a rig again
        np.testing.assert_allclose(rig.deltas, arkit.deltas, atol=1e-7)
        acc = g.accessors[g.animations[0].samplers[0].output]
        blob = g.binary_blob()
        view = g.bufferViews[acc.bufferView]
        keyed = np.frombuffer(blob, "<f4", acc.count, view.byteOffset + (acc.byteOffset or 0)).reshape(-1, 52)
        w = keyed[:30, ARKIT_NAMES.index("jawOpen")]
    else:
        z = np.load(out)
        assert tuple(z["names"]) == ARKIT_NAMES
        w = z["weights"][:, ARKIT_NAMES.index("jawOpen")]
    disp = jaw.vertices - arkit.neutral
    assert disp.shape[0] == len(w)
    assert np.corrcoef(w, np.abs(disp).max(axis=(1, 2)))[0, 1] > 0.9


@pytest.mark.parametrize("args, pattern", [
    (["--bounds", "1,0"], "LOW < HIGH"),
    (["--bounds", "0,inf"], "finite"),
    (["--bounds", "zero"], "LOW,HIGH"),
    (["--format", "fbx"], "--format 'fbx' is unknown"),
    (["--fit-region", "ears"], "unknown region ears"),
    (["--l2", "-1"], "--l2"),
])
def test_retarget_bad_flags_write_nothing(tmp_path, arkit, args, pattern):
    anim = _anim_file(tmp_path, arkit)
    out = tmp_path / "w.csv"
    result = runner.invoke(app, ["retarget", str(anim), "--rig", "synthetic-arkit", "--out", str(out), *args])
    assert result.exit_code in (1, 2) and pattern in flat(result.output), result.output
    assert not out.exists() and "Traceback" not in result.output


def test_retarget_refuses_nan_animation_and_foreign_topology(tmp_path, arkit):
    bad = tmp_path / "nan.npz"
    v = np.repeat(arkit.neutral[None], 3, 0)
    v[1, 4, 0] = np.nan
    np.savez(bad, vertices=v, fps=np.float64(30))
    result = runner.invoke(app, ["retarget", str(bad), "--rig", "synthetic-arkit", "--out", str(tmp_path / "a.csv")])
    assert result.exit_code == 1 and "NaN" in result.output
    small = save_animation(tmp_path / "small.npz", Animation(np.zeros((3, V, 3), np.float32), 30.0))
    result = runner.invoke(app, ["retarget", str(small), "--rig", "synthetic-arkit", "--out", str(tmp_path / "b.csv")])
    assert result.exit_code == 1 and "topology" in flat(result.output)
    assert not list(tmp_path.glob("*.csv"))


def test_livelink_csv_needs_arkit_names(tmp_path):
    names, neutral, deltas = small_rig(np.random.default_rng(11))
    rig_path = tmp_path / "rig.npz"
    np.savez(rig_path, names=np.array(names), neutral=neutral, deltas=deltas)
    anim = save_animation(tmp_path / "a.npz", Animation(neutral[None] + deltas[:1], 30.0, neutral=neutral))
    result = runner.invoke(app, ["retarget", str(anim), "--rig", str(rig_path), "--out", str(tmp_path / "w.csv")])
    assert result.exit_code == 1 and "not ARKit names" in flat(result.output)
    result = runner.invoke(app, ["retarget", str(anim), "--rig", str(rig_path), "--out", str(tmp_path / "w.json")])
    assert result.exit_code == 0, result.output
    track = read_a2f_json(tmp_path / "w.json")
    np.testing.assert_allclose(track.weights[0], [1, 0, 0, 0, 0], atol=1e-5)


def test_poor_fit_warns_and_names_the_region(tmp_path):
    names, neutral, deltas = small_rig(np.random.default_rng(12), k=2)
    regions = {"lips": np.arange(20), "jaw": np.arange(20, 40)}
    rig = make_rig(names, neutral, deltas=deltas, regions=regions)
    motion = neutral + np.random.default_rng(13).normal(scale=0.02, size=(5, V, 3)).astype(np.float32)
    fit = retarget(motion, neutral, setup(rig, SolveOptions(), "all"), fps=30)
    assert fit.explained < 0.9
    assert any("cannot follow" in w and ("lips" in w or "jaw" in w) for w in fit.warnings)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    import torch

    from talkface.config import ModelConfig
    from talkface.model import TalkFaceModel, tiny_encoder_config
    from talkface.model.checkpoint import save_checkpoint

    torch.manual_seed(0)
    config = ModelConfig(num_vertices=V, feature_dim=16, period=3, num_heads=4, num_layers=1, fps=30.0,
                         speakers=("alice", "bob"))
    model = TalkFaceModel(config, tiny_encoder_config()).eval()
    torch.nn.init.normal_(model.motion_head.weight, std=0.02)
    folder = tmp_path_factory.mktemp("run")
    save_checkpoint(folder / "best.safetensors", model)
    rng = np.random.default_rng(1)
    np.savez(folder / "templates.npz", **{s: rng.normal(scale=0.1, size=(V, 3)).astype(np.float32)
                                          for s in ("alice", "bob")})
    return folder


def test_animate_with_rig_writes_weights(tmp_path, tiny_run):
    from talkface.io.audio import write_wav

    names, neutral, deltas = small_rig(np.random.default_rng(14), k=6)
    rig_path = tmp_path / "rig.npz"
    np.savez(rig_path, names=np.array(names), neutral=neutral, deltas=deltas)
    t = np.arange(16000) / 16000
    wav = write_wav(tmp_path / "s.wav", (0.3 * np.sin(2 * np.pi * 150 * t) * np.sin(2 * np.pi * 3 * t)).astype(
        np.float32))
    out = tmp_path / "w.json"
    result = runner.invoke(app, ["animate", str(wav), "--checkpoint", str(tiny_run), "--style", "alice", "--out",
                                 str(out), "--rig", str(rig_path), "--device", "cpu", "--bounds", "-2,2"])
    assert result.exit_code == 0, result.output
    assert "explained" in result.output
    track = read_a2f_json(out)
    # The same motion through `animate` then `retarget` gives the same weights.
    npz = tmp_path / "a.npz"
    assert runner.invoke(app, ["animate", str(wav), "--checkpoint", str(tiny_run), "--style", "alice", "--out",
                               str(npz), "--device", "cpu"]).exit_code == 0
    anim = load_animation(npz)
    assert anim.neutral is not None
    assert track.weights.shape == (anim.num_frames, 6) and list(track.names) == names
    result = runner.invoke(app, ["retarget", str(npz), "--rig", str(rig_path), "--out", str(tmp_path / "r.json"),
                                 "--bounds", "-2,2"])
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(read_a2f_json(tmp_path / "r.json").weights, track.weights, atol=1e-5)


def test_animate_rig_flags_need_rig(tmp_path, tiny_run):
    result = runner.invoke(app, ["animate", str(tmp_path), "--checkpoint", str(tiny_run), "--style", "alice",
                                 "--out", str(tmp_path / "o.npz"), "--smooth", "1"])
    assert result.exit_code == 2 and "--rig" in result.output


def test_glb_header_is_valid(tmp_path, arkit):
    anim = _anim_file(tmp_path, arkit, frames=5)
    out = tmp_path / "w.glb"
    assert runner.invoke(app, ["retarget", str(anim), "--rig", "synthetic-arkit", "--out", str(out)]).exit_code == 0
    magic, version, total = struct.unpack("<4sII", out.read_bytes()[:12])
    assert magic == b"glTF" and version == 2 and total == out.stat().st_size


# ------------------------------------------------------------------------------------------ stream


LIVELINK_NAMES = ["jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthSmileLeft", "mouthSmileRight"]


def _decode_livelink(packet: bytes) -> dict:
    """An independent decoder of a Live Link Face packet, from the documented layout (big-endian):
    u8 version, i32 len + id, i32 len + subject, i32 frame, f32 subframe, i32 num, i32 den, u8 count, count × f32."""
    version = packet[0]
    pos = 1
    (n,) = struct.unpack_from(">i", packet, pos)
    device = packet[pos + 4:pos + 4 + n].decode()
    pos += 4 + n
    (m,) = struct.unpack_from(">i", packet, pos)
    subject = packet[pos + 4:pos + 4 + m].decode()
    pos += 4 + m
    frame, sub, num, den = struct.unpack_from(">ifii", packet, pos)
    pos += 16
    count = packet[pos]
    values = struct.unpack_from(f">{count}f", packet, pos + 1)
    assert pos + 1 + 4 * count == len(packet)
    return {"version": version, "device": device, "subject": subject, "frame": frame, "sub": sub, "rate": num / den,
            "values": np.array(values)}


@pytest.fixture()
def arkit_small_rig(tmp_path):
    names, neutral, deltas = small_rig(np.random.default_rng(15), k=6, names=list(LIVELINK_NAMES))
    path = tmp_path / "rig.npz"
    np.savez(path, names=np.array(names), neutral=neutral, deltas=deltas)
    return path


def _wav(tmp_path: Path) -> Path:
    from talkface.io.audio import write_wav

    t = np.arange(24000) / 16000
    return write_wav(tmp_path / "s.wav", (0.3 * np.sin(2 * np.pi * 150 * t) * np.sin(2 * np.pi * 3 * t)).astype(
        np.float32))


def test_stream_weights_records_equal_the_offline_solve(tmp_path, tiny_run, arkit_small_rig):
    from talkface.io.frames import read_weight_records

    wav = _wav(tmp_path)
    result = runner.invoke(app, ["stream", str(wav), "--checkpoint", str(tiny_run), "--style", "alice", "--out",
                                 str(tmp_path / "s.npz"), "--rig", str(arkit_small_rig), "--weights",
                                 str(tmp_path / "w.bin"), "--bounds", "-2,2"])
    assert result.exit_code == 0, result.output
    with open(tmp_path / "w.bin", "rb") as f:
        records = list(read_weight_records(f, 6))
    anim = load_animation(tmp_path / "s.npz")
    assert [i for i, _ in records] == list(range(anim.num_frames))
    live = np.stack([w for _, w in records])
    rig = load_rig(arkit_small_rig)
    offline = retarget(anim.vertices, anim.neutral, setup(rig, SolveOptions(lower=-2, upper=2)), fps=30).weights
    np.testing.assert_allclose(live, offline, atol=1e-5)
    # csv lines: a header with the names, then one line per frame
    result = runner.invoke(app, ["stream", str(wav), "--checkpoint", str(tiny_run), "--style", "alice", "--rig",
                                 str(arkit_small_rig), "--weights", str(tmp_path / "w.csv"), "--weights-format", "csv",
                                 "--bounds", "-2,2"])
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "w.csv").read_text().splitlines()
    assert lines[0].split(",") == ["frame", "time_s", *LIVELINK_NAMES] and len(lines) == anim.num_frames + 1
    np.testing.assert_allclose(np.array(lines[-1].split(",")[2:], float), live[-1], atol=1e-5)


def test_stream_livelink_packets_decode_to_the_weights(tmp_path, tiny_run, arkit_small_rig):
    import socket

    from talkface.io.frames import read_weight_records

    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(5)
    port = receiver.getsockname()[1]
    wav = _wav(tmp_path)
    result = runner.invoke(app, ["stream", str(wav), "--checkpoint", str(tiny_run), "--style", "alice", "--rig",
                                 str(arkit_small_rig), "--livelink", f"127.0.0.1:{port}", "--weights",
                                 str(tmp_path / "w.bin")])
    assert result.exit_code == 0, result.output
    with open(tmp_path / "w.bin", "rb") as f:
        weights = np.stack([w for _, w in read_weight_records(f, 6)])
    packets = [_decode_livelink(receiver.recv(2048)) for _ in range(len(weights))]
    receiver.close()
    assert all(p["version"] == 6 and p["rate"] == 30 and len(p["values"]) == 61 for p in packets)
    assert [p["frame"] for p in packets] == list(range(len(weights)))
    order = [ARKIT_NAMES.index(n) for n in LIVELINK_NAMES]  # packet positions of the rig's names
    got = np.stack([p["values"][order] for p in packets])
    np.testing.assert_allclose(got, weights, atol=1e-6)
    others = np.delete(np.stack([p["values"] for p in packets]), order, axis=1)
    assert not others.any()


def test_stream_goes_on_when_the_livelink_port_is_refused(tmp_path, tiny_run, arkit_small_rig):
    import socket

    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nobody listens there now: the kernel answers "connection refused"
    wav = _wav(tmp_path)
    result = runner.invoke(app, ["stream", str(wav), "--checkpoint", str(tiny_run), "--style", "alice", "--out",
                                 str(tmp_path / "s.npz"), "--rig", str(arkit_small_rig), "--livelink",
                                 f"127.0.0.1:{port}"])
    assert result.exit_code == 0, result.output
    assert result.output.count("livelink:") == 1 and "refused" in result.output.lower()
    anim = load_animation(tmp_path / "s.npz")
    assert anim.num_frames == 44  # 1.5 s at 30 fps, nothing lost


@pytest.mark.parametrize("args, pattern", [
    (["--livelink", "nohost"], "--livelink"),
    (["--livelink", "127.0.0.1:99999"], "port"),
    (["--weights", "-", "--frames", "-"], "both go to stdout"),
    (["--weights-format", "xml", "--weights", "-"], "bin or csv"),
])
def test_stream_bad_rig_flags_are_refused_before_audio(tmp_path, tiny_run, arkit_small_rig, args, pattern):
    result = runner.invoke(app, ["stream", "-", "--checkpoint", str(tiny_run), "--style", "alice", "--rig",
                                 str(arkit_small_rig), *args], input=b"")
    assert result.exit_code in (1, 2) and pattern in flat(result.output), result.output


def test_stream_weights_need_a_rig(tmp_path, tiny_run):
    result = runner.invoke(app, ["stream", "-", "--checkpoint", str(tiny_run), "--style", "alice", "--weights", "-"],
                           input=b"")
    assert result.exit_code == 2 and "--rig" in result.output
