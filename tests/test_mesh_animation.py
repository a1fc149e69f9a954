import numpy as np
import pytest
import trimesh

from talkface.errors import TemplateError
from talkface.io.animation import Animation, load_animation, save_animation
from talkface.io.mesh import load_mesh, obj_text, save_obj_sequence


def _tetra():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32) * 0.1
    f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], np.int32)
    return v, f


@pytest.mark.parametrize("suffix", [".obj", ".ply", ".npz", ".npy"])
def test_mesh_formats_round_trip(tmp_path, suffix):
    v, f = _tetra()
    path = tmp_path / f"t{suffix}"
    if suffix == ".npz":
        np.savez(path, vertices=v, faces=f)
    elif suffix == ".npy":
        np.save(path, v)
    else:
        trimesh.Trimesh(v, f, process=False).export(path)
    mesh = load_mesh(path, num_vertices=4)
    np.testing.assert_allclose(mesh.vertices, v, atol=1e-6)
    if suffix != ".npy":
        np.testing.assert_array_equal(mesh.faces, f)


def test_mesh_errors(tmp_path):
    with pytest.raises(TemplateError, match="no such mesh"):
        load_mesh(tmp_path / "none.obj")
    np.save(tmp_path / "bad.npy", np.full((4, 3), np.nan))
    with pytest.raises(TemplateError, match="NaN"):
        load_mesh(tmp_path / "bad.npy")
    np.save(tmp_path / "rank.npy", np.zeros((2, 2, 2)))
    with pytest.raises(TemplateError, match="expected"):
        load_mesh(tmp_path / "rank.npy")


def test_animation_round_trip_and_faceformer_npy(tmp_path):
    v, f = _tetra()
    seq = np.stack([v + 0.01 * t for t in range(5)])
    path = save_animation(tmp_path / "a.npz", Animation(seq, 30.0, f, {"style": "A"}))
    again = load_animation(path)
    np.testing.assert_array_equal(again.vertices, seq)
    assert again.fps == 30.0 and again.meta == {"style": "A"} and again.duration == pytest.approx(5 / 30)
    np.save(tmp_path / "ff.npy", seq.reshape(5, -1))
    with pytest.raises(TemplateError, match="--fps"):
        load_animation(tmp_path / "ff.npy")
    np.testing.assert_array_equal(load_animation(tmp_path / "ff.npy", fps=30).vertices, seq)


def test_obj_sequence(tmp_path):
    v, f = _tetra()
    paths = save_obj_sequence(tmp_path / "objs", np.stack([v, v]), f)
    assert len(paths) == 2
    mesh = trimesh.load(paths[1], process=False)
    np.testing.assert_allclose(mesh.vertices, v, atol=1e-6)
    assert obj_text(v, None).count("\nf ") == 0
