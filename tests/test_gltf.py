"""glTF/GLB export, re-read with pygltflib: target count, duration T/fps, positions at frame k, POSITION min/max.

The writer keys frame k at k/fps and repeats the last frame at T/fps (it is shown for one frame
period, like a video frame), so the animation lasts T/fps, the audio's duration (issue #8).
"""

from __future__ import annotations

import numpy as np
import pytest

from talkface.errors import OutputError
from talkface.io.animation import Animation
from talkface.io.gltf import morph_basis, write_gltf

pygltflib = pytest.importorskip("pygltflib")

DTYPES = {5126: np.float32, 5125: np.uint32, 5123: np.uint16, 5121: np.uint8}
WIDTH = {"SCALAR": 1, "VEC3": 3}


def _low_rank_animation(frames: int = 40, num_vertices: int = 60, rank: int = 5, seed: int = 0) -> Animation:
    rng = np.random.default_rng(seed)
    base = rng.normal(scale=0.1, size=(num_vertices, 3))
    motion = np.sin(np.outer(np.arange(frames), rng.uniform(0.1, 0.9, rank)))  # (T, rank), smooth
    shapes = rng.normal(scale=0.004, size=(rank, num_vertices * 3))
    vertices = (base.reshape(1, -1) + motion @ shapes).reshape(frames, num_vertices, 3).astype(np.float32)
    faces = np.stack([np.arange(num_vertices - 2), np.arange(1, num_vertices - 1), np.arange(2, num_vertices)], 1)
    return Animation(vertices, 30.0, faces.astype(np.int32), {"style": "A"})


def _load(path):
    g = pygltflib.GLTF2().load(str(path))
    if path.suffix == ".glb":
        blob = g.binary_blob()
    elif g.buffers[0].uri.startswith("data:"):
        blob = g.get_data_from_buffer_uri(g.buffers[0].uri)
    else:
        blob = (path.parent / g.buffers[0].uri).read_bytes()
    return g, blob


def _read(g, blob, index):
    acc = g.accessors[index]
    view = g.bufferViews[acc.bufferView]
    start = (view.byteOffset or 0) + (acc.byteOffset or 0)
    width = WIDTH[acc.type]
    arr = np.frombuffer(blob, dtype=DTYPES[acc.componentType], count=acc.count * width, offset=start)
    return arr.reshape(acc.count, width) if width > 1 else arr


def _weights_at(g, blob, time):
    sampler = g.animations[0].samplers[0]
    times = _read(g, blob, sampler.input).astype(np.float64)
    keys = _read(g, blob, sampler.output).reshape(times.size, -1).astype(np.float64)
    i = int(np.clip(np.searchsorted(times, time, side="right") - 1, 0, times.size - 1))
    if i == times.size - 1 or sampler.interpolation == "STEP":
        return keys[i]
    a = (time - times[i]) / (times[i + 1] - times[i])
    return (1 - a) * keys[i] + a * keys[i + 1]


def _positions(g, blob, weights):
    prim = g.meshes[0].primitives[0]
    base = _read(g, blob, prim.attributes.POSITION).astype(np.float64)
    targets = np.stack([_read(g, blob, t["POSITION"] if isinstance(t, dict) else t.POSITION)
                        for t in prim.targets]).astype(np.float64)
    return base + np.tensordot(weights, targets, axes=1)


@pytest.mark.parametrize("suffix", [".glb", ".gltf"])
def test_round_trip_positions_duration_and_bounds(tmp_path, suffix):
    anim = _low_rank_animation()
    path = write_gltf(tmp_path / f"a{suffix}", anim)
    g, blob = _load(path)
    prim = g.meshes[0].primitives[0]
    assert g.asset.version == "2.0"
    assert 1 <= len(prim.targets) <= anim.num_frames
    assert len(prim.targets) <= 6  # a rank-5 motion about a base needs at most 6 targets
    assert len(g.meshes[0].extras["targetNames"]) == len(prim.targets)  # Blender's shape-key names
    times = _read(g, blob, g.animations[0].samplers[0].input)
    assert times[-1] == pytest.approx(anim.num_frames / anim.fps, rel=1e-6)  # duration T/fps
    assert g.animations[0].channels[0].target.path == "weights"
    for k in (0, 1, 17, anim.num_frames - 1):
        got = _positions(g, blob, _weights_at(g, blob, k / anim.fps))
        assert np.abs(got - anim.vertices[k]).max() <= 1e-5
    # the last frame is held until T/fps
    got = _positions(g, blob, _weights_at(g, blob, (anim.num_frames - 0.5) / anim.fps))
    assert np.abs(got - anim.vertices[-1]).max() <= 1e-5
    for index in [prim.attributes.POSITION] + [t["POSITION"] if isinstance(t, dict) else t.POSITION
                                                for t in prim.targets]:
        acc, data = g.accessors[index], _read(g, blob, index)
        assert acc.min is not None and acc.max is not None  # required for POSITION by the spec
        np.testing.assert_allclose(acc.min, data.min(0), rtol=0, atol=0)
        np.testing.assert_allclose(acc.max, data.max(0), rtol=0, atol=0)
    faces = _read(g, blob, prim.indices).reshape(-1, 3)
    np.testing.assert_array_equal(faces, anim.faces)


def test_side_buffer_gltf(tmp_path):
    anim = _low_rank_animation(frames=12)
    path = write_gltf(tmp_path / "b.gltf", anim, separate_buffer=True, interpolation="STEP")
    assert (tmp_path / "b.bin").is_file()
    g, blob = _load(path)
    assert g.animations[0].samplers[0].interpolation == "STEP"
    got = _positions(g, blob, _weights_at(g, blob, 5.5 / anim.fps))  # STEP holds frame 5
    assert np.abs(got - anim.vertices[5]).max() <= 1e-5


def test_full_rank_falls_back_to_exact_targets(tmp_path):
    rng = np.random.default_rng(1)
    vertices = rng.normal(scale=0.05, size=(9, 20, 3)).astype(np.float32)  # rank 9 about any base
    basis = morph_basis(vertices, vertices[0])  # base = frame 0: rank 8 displacements, K < T
    assert basis.targets.shape[0] == 8 and basis.max_error <= 1e-6 and not basis.one_hot
    basis = morph_basis(vertices, np.zeros((20, 3), np.float32))  # needs K = T: one target per frame
    assert basis.one_hot and basis.targets.shape[0] == 9 and basis.max_error <= 1e-6
    path = write_gltf(tmp_path / "c.glb", Animation(vertices, 25.0), base=np.zeros((20, 3), np.float32))
    g, blob = _load(path)
    assert g.meshes[0].primitives[0].mode == 0  # no faces: points
    for k in (0, 4, 8):
        assert np.abs(_positions(g, blob, _weights_at(g, blob, k / 25.0)) - vertices[k]).max() <= 1e-5


def test_static_and_single_frame_animations(tmp_path):
    still = np.repeat(_low_rank_animation().vertices[:1], 4, axis=0)
    for frames in (still, still[:1]):
        path = write_gltf(tmp_path / f"s{len(frames)}.glb", Animation(frames, 30.0))
        g, blob = _load(path)
        assert len(g.meshes[0].primitives[0].targets) == 1
        assert np.abs(_positions(g, blob, _weights_at(g, blob, 0.0)) - frames[0]).max() <= 1e-6


def test_bad_suffix_is_refused(tmp_path):
    with pytest.raises(OutputError, match=r"\.glb"):
        write_gltf(tmp_path / "a.fbx", _low_rank_animation(frames=3))
