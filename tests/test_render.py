"""Rendering: config parsing, normals and colours (pure), platform choice, and real offscreen renders.

GL tests are marked ``render`` and skip, with the reason, only when no offscreen platform works here.
"""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from talkface.errors import AudioError, ConfigError, OutputError, RenderError, TemplateError
from talkface.io.animation import Animation
from talkface.render import (
    RenderConfig,
    choose_platform,
    parse_background,
    render_frames,
    render_video,
)
from talkface.render import gl as render_gl
from talkface.render import offscreen as render
from talkface.render.gl import VertexNormals, vertex_normals
from talkface.render.overlay import colormap_lut, error_colors

FLAME = Path("/work/shared/fixtures/flame")
SIZE = 192


# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gl() -> str:
    try:
        return choose_platform()
    except RenderError as e:
        pytest.skip(f"no offscreen OpenGL platform works on this machine: {e}")


@pytest.fixture(scope="module")
def flame() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FLAME template (V, 3), faces (F, 3) and the lower-lip vertex indices."""
    if not (FLAME / "flame_template.npz").is_file() or not (FLAME / "flame_masks.npz").is_file():
        pytest.skip(f"FLAME fixtures not found under {FLAME}")
    with np.load(FLAME / "flame_template.npz") as z:
        vertices, faces = z["vertices"].astype(np.float32), z["faces"].astype(np.int64)
    with np.load(FLAME / "flame_masks.npz") as z:
        lips = z["lips"]
    lower = lips[vertices[lips, 1] < vertices[lips, 1].mean()]
    return vertices, faces, lower


def open_mouth(vertices: np.ndarray, lower_lip: np.ndarray, metres: float = 0.01) -> np.ndarray:
    moved = vertices.copy()
    moved[lower_lip, 1] -= metres
    return moved


def project(points: np.ndarray, config: RenderConfig) -> np.ndarray:
    """Pixel (column, row) of (N, 3) points for the VOCA pinhole camera at z = camera_distance."""
    depth = config.camera_distance - points[:, 2]
    half = config.size / 2
    return np.stack([half + config.focal * points[:, 0] / depth, half - config.focal * points[:, 1] / depth], 1)


def write_tone(path: Path, seconds: float, rate: int = 16000) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate)
    return path


# --- pure parts -------------------------------------------------------------------------------------


def test_parse_background() -> None:
    assert parse_background("black") == (0, 0, 0)
    assert parse_background(" White ") == (255, 255, 255)
    assert parse_background("#3366Ff") == (0x33, 0x66, 0xFF)
    for bad in ("grey", "#12345", "123456", "#gg0000"):
        with pytest.raises(ConfigError, match="black, white or #rrggbb"):
            parse_background(bad)


def test_render_config_validation_and_focal_scaling() -> None:
    config = RenderConfig()
    assert config.size == 800 and config.background == (0, 0, 0) and not config.msaa
    assert config.shading == "fast"
    assert config.focal == pytest.approx(2377.49, abs=0.01)
    assert RenderConfig(size=400).focal == pytest.approx(config.focal / 2)
    assert RenderConfig(background="#102030").background == (16, 32, 48)
    bad = [{"size": 8}, {"size": 5000}, {"size": 255}, {"size": 12.5}, {"background": (0, 0, 300)},
           {"background": "pink"}, {"focal_px": 0.0}, {"camera_distance": -1.0}, {"crf": 60},
           {"preset": "fastest"}, {"shading": "phong"}]
    for kwargs in bad:
        with pytest.raises(ConfigError):
            RenderConfig(**kwargs)


def brute_force_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Angle-weighted vertex normals, one corner at a time with math.acos."""
    summed = np.zeros((len(vertices), 3))
    for face in faces:
        p = vertices[face].astype(np.float64)
        normal = np.cross(p[1] - p[0], p[2] - p[0])
        normal /= np.linalg.norm(normal)
        for k in range(3):
            a, b = p[(k + 1) % 3] - p[k], p[(k + 2) % 3] - p[k]
            angle = math.acos(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
            summed[face[k]] += angle * normal
    return summed / np.linalg.norm(summed, axis=1, keepdims=True)


def test_vertex_normals_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    # an irregular closed octahedron: every vertex has faces of different angles around it
    vertices = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], np.float32)
    vertices = vertices * rng.uniform(0.5, 1.5, (6, 1)).astype(np.float32)
    faces = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])
    ours = vertex_normals(vertices, faces)
    np.testing.assert_allclose(ours, brute_force_normals(vertices, faces), atol=1e-5)
    assert np.all(np.sum(ours * vertices, axis=1) > 0)  # outward on a convex shape


def test_vertex_normals_ignore_degenerate_faces_and_unused_vertices() -> None:
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [5, 5, 5]], np.float32)
    faces = np.array([[0, 1, 2], [0, 0, 1]])
    normals = vertex_normals(vertices, faces)
    np.testing.assert_allclose(normals[:3], [[0, 0, 1]] * 3, atol=1e-6)
    np.testing.assert_array_equal(normals[3], 0.0)


def test_precomputed_normals_follow_each_frame() -> None:
    rng = np.random.default_rng(1)
    vertices = rng.normal(size=(2, 40, 3)).astype(np.float32)
    faces = rng.integers(0, 40, size=(60, 3))
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    normals = VertexNormals(faces, 40)
    for frame in vertices:  # one instance, frames in turn: nothing of the previous frame is kept
        used = np.unique(faces)
        np.testing.assert_allclose(normals(frame)[used], brute_force_normals(frame, faces)[used], atol=1e-5)


def test_error_colors_clip_to_the_lut_ends() -> None:
    lut = colormap_lut(num=11)
    colors = error_colors(np.array([-1.0, 0.0, 1.5, 3.0, 10.0]), (0.0, 3.0), lut)
    np.testing.assert_array_equal(colors[[0, 1, 2, 3, 4]], lut[[0, 0, 5, 10, 10]])
    assert colors.shape == (5, 3)


def test_importing_loads_no_gl_and_sets_nothing() -> None:
    code = (
        "import os, sys, talkface.render, talkface.render.video\n"
        "heavy = [m for m in ('pyrender', 'OpenGL', 'imageio_ffmpeg', 'matplotlib', 'PIL') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert 'PYOPENGL_PLATFORM' not in os.environ\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYOPENGL_PLATFORM"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# --- platform choice --------------------------------------------------------------------------------


def test_forced_unknown_platform_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYOPENGL_PLATFORM", "foo")
    with pytest.raises(RenderError, match="'foo'.*egl or osmesa"):
        choose_platform()
    with pytest.raises(RenderError, match="foo"):
        render_frames(np.zeros((1, 3, 3), np.float32), np.array([[0, 1, 2]]), RenderConfig(size=16))


def test_forced_platform_is_trusted_without_probing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYOPENGL_PLATFORM", "osmesa")
    monkeypatch.setattr(render, "_probe_platform", lambda name: pytest.fail("probed a forced platform"))
    assert choose_platform() == "osmesa"


@pytest.mark.render
def test_context_failure_in_process_is_a_render_error(gl: str, flame, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyrender

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("Invalid device ID (0)")  # what EGL says when Mesa's vendor file is missing

    monkeypatch.setattr(pyrender, "OffscreenRenderer", broken)
    vertices, faces, _ = flame
    frames = render_frames(vertices[None], faces, RenderConfig(size=64))
    with pytest.raises(RenderError, match=r"Invalid device ID \(0\).*libegl-mesa0"):
        next(frames)


def test_no_working_platform_lists_every_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)
    errors = {"egl": "ValueError: Invalid device ID (0)", "osmesa": "ImportError: OSMesaCreateContextAttribs"}
    monkeypatch.setattr(render, "_probe_platform", lambda name: errors[name])
    render._first_working_platform.cache_clear()
    try:
        with pytest.raises(RenderError) as info:
            choose_platform()
    finally:
        render._first_working_platform.cache_clear()
    message = str(info.value)
    for text in ("egl", "osmesa", errors["egl"], errors["osmesa"], "apt-get install", "libegl1 libegl-mesa0",
                 "PyOpenGL>=3.1.4"):
        assert text in message


def test_platform_probe_order_and_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)
    calls: list[str] = []

    def probe(name: str) -> str | None:
        calls.append(name)
        return None if name == "osmesa" else "no EGL"

    monkeypatch.setattr(render, "_probe_platform", probe)
    render._first_working_platform.cache_clear()
    try:
        assert choose_platform() == "osmesa"
        assert choose_platform() == "osmesa"
    finally:
        render._first_working_platform.cache_clear()
    assert calls == ["egl", "osmesa"]  # EGL first, then OSMesa, and probed once per process


# --- offscreen renders ------------------------------------------------------------------------------


@pytest.mark.render
def test_frames_show_the_head(gl: str, flame) -> None:
    vertices, faces, _ = flame
    frames = list(render_frames(np.stack([vertices] * 3), faces, RenderConfig(size=SIZE)))
    assert len(frames) == 3
    for frame in frames:
        assert frame.shape == (SIZE, SIZE, 3) and frame.dtype == np.uint8
        covered = (frame != 0).any(axis=2).mean()
        assert 0.10 < covered < 0.70, covered
        assert (frame[0, 0] == 0).all() and (frame[-1, 0] == 0).all()  # background corners (the neck
        # reaches the bottom edge in the middle, as in VOCA)
    assert all(np.array_equal(frames[0], f) for f in frames[1:])  # deterministic


def head_mask(frame: np.ndarray) -> np.ndarray:
    return (frame != 0).any(axis=2)


def turned(vertices: np.ndarray, degrees: float) -> np.ndarray:
    """The head turned about the vertical axis through its centre (positive: its left cheek forward)."""
    a = np.deg2rad(degrees)
    rotation = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]], np.float32)
    centre = vertices.mean(axis=0)
    return (vertices - centre) @ rotation.T + centre


@pytest.mark.render
def test_fast_shading_looks_like_pbr(gl: str, flame) -> None:
    vertices, faces, _ = flame
    sequence = np.stack([vertices, turned(vertices, 35.0)])
    fast, pbr = (list(render_frames(sequence, faces, RenderConfig(size=SIZE, shading=s))) for s in ("fast", "pbr"))
    for f, p in zip(fast, pbr, strict=True):
        fast_mask, pbr_mask = head_mask(f), head_mask(p)
        assert (fast_mask & pbr_mask).sum() / (fast_mask | pbr_mask).sum() >= 0.95  # same silhouette
        grey_f, grey_p = f.mean(axis=2)[pbr_mask], p.mean(axis=2)[pbr_mask]
        assert 60 < grey_f.mean() < 200 and abs(grey_f.mean() - grey_p.mean()) < 3  # lit like pbr, not black
        assert grey_f.std() > 8  # shaded, not flat
        assert np.abs(grey_f - grey_p).mean() < 3  # pixel by pixel close to pyrender's own shader
        assert np.corrcoef(grey_f, grey_p)[0, 1] > 0.9
    # Turned, one half of the face meets the light (along -z) more obliquely: the halves differ, and in
    # the same direction for both shaders.
    halves = []
    for frame in (fast[1], pbr[1]):
        grey, mask = frame.mean(axis=2), head_mask(frame)
        columns = np.flatnonzero(mask.any(axis=0))
        middle = (columns[0] + columns[-1]) // 2
        halves.append(grey[:, :middle][mask[:, :middle]].mean() - grey[:, middle:][mask[:, middle:]].mean())
    assert abs(halves[0]) > 3 and np.sign(halves[0]) == np.sign(halves[1]), halves


@pytest.mark.render
def test_fast_shading_multiplies_vertex_colours(gl: str, flame) -> None:
    vertices, faces, _ = flame
    config = RenderConfig(size=96, shading="fast")
    plain = next(render_frames(vertices[None], faces, config))
    white = next(render_frames(vertices[None], faces, config, colors=np.ones((1, *vertices.shape))))
    red = next(render_frames(vertices[None], faces, config, colors=np.tile([1.0, 0.0, 0.0], (1, len(vertices), 1))))
    assert np.abs(white.astype(int) - plain.astype(int)).max() <= 1  # a white tint changes nothing
    mask = head_mask(plain)
    np.testing.assert_array_equal(red[..., 1:], 0)  # red keeps only the red channel...
    assert np.abs(red[..., 0].astype(int) - plain[..., 0].astype(int))[mask].max() <= 1  # ...with its shading


@pytest.mark.render
@pytest.mark.parametrize("background", ["white", "#336699"])
def test_background_colour(gl: str, flame, background: str) -> None:
    vertices, faces, _ = flame
    config = RenderConfig(size=64, background=background)
    frame = next(render_frames(vertices[None], faces, config))
    assert tuple(frame[0, 0]) == config.background
    assert 0.10 < (frame != np.array(config.background, np.uint8)).any(axis=2).mean() < 0.70


@pytest.mark.render
def test_open_mouth_differs_inside_the_mouth_only(gl: str, flame) -> None:
    vertices, faces, lower = flame
    config = RenderConfig(size=SIZE)
    opened = open_mouth(vertices, lower)
    closed_frame, open_frame, closed_again = render_frames(np.stack([vertices, opened, vertices]), faces, config)
    np.testing.assert_array_equal(closed_frame, closed_again)  # per-frame updates leave nothing stale
    columns, rows = project(np.concatenate([vertices[lower], opened[lower]]), config).T
    pad = 3
    top, bottom = int(rows.min()) - pad, int(np.ceil(rows.max())) + pad
    left, right = int(columns.min()) - pad, int(np.ceil(columns.max())) + pad
    diff = np.abs(open_frame.astype(int) - closed_frame.astype(int)).any(axis=2)
    inside = diff[top:bottom, left:right].mean()
    assert inside > 0.2, inside
    diff[top:bottom, left:right] = False
    assert diff.mean() < 0.01  # outside the lips' box at most a few shading pixels change
    eyes_and_above = int(project(vertices[lower], config)[:, 1].min()) - SIZE // 8
    assert not diff[:eyes_and_above].any()


@pytest.mark.render
def test_mesh_behind_the_camera_is_an_error(gl: str, flame) -> None:
    vertices, faces, _ = flame
    behind = vertices + np.array([0.0, 0.0, 2.0], np.float32)  # camera at z = 1 looks down -z
    frames = render_frames(np.stack([vertices, behind]), faces, RenderConfig(size=64))
    next(frames)
    with pytest.raises(RenderError, match="frame 1 shows only background"):
        next(frames)


@pytest.mark.render
def test_bad_inputs(gl: str, flame) -> None:
    vertices, faces, _ = flame
    with pytest.raises(TemplateError, match="faces index"):
        render_frames(vertices[None], faces + 10, RenderConfig(size=64))
    with pytest.raises(TemplateError, match="NaN"):
        render_frames(np.full((1, 3, 3), np.nan, np.float32), np.array([[0, 1, 2]]), RenderConfig(size=64))
    with pytest.raises(TemplateError, match="colors"):
        render_frames(vertices[None], faces, RenderConfig(size=64), colors=np.zeros((1, 3, 3)))


@pytest.mark.render
def test_msaa_switch(gl: str, flame) -> None:
    if gl != "egl":
        pytest.skip(f"multisampling exists only with EGL framebuffers; platform is {gl}")
    import pyrender
    import pyrender.renderer
    from OpenGL import GL

    vertices, faces, _ = flame
    scene = pyrender.Scene()
    scene.add(pyrender.Mesh.from_points(vertices))
    scene.add(pyrender.PerspectiveCamera(yfov=0.5), pose=np.array(
        [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 1]], float))
    samples = {}
    for msaa in (False, True):
        offscreen = pyrender.OffscreenRenderer(32, 32)
        try:
            if msaa:
                offscreen.render(scene)
            else:
                with render_gl.single_sample_framebuffers(pyrender.renderer):
                    offscreen.render(scene)
            offscreen._platform.make_current()
            GL.glBindRenderbuffer(GL.GL_RENDERBUFFER, offscreen._renderer._main_cb_ms)
            samples[msaa] = int(GL.glGetRenderbufferParameteriv(GL.GL_RENDERBUFFER, GL.GL_RENDERBUFFER_SAMPLES))
        finally:
            offscreen.delete()
    assert samples == {False: 0, True: 4}
    assert pyrender.renderer.glRenderbufferStorageMultisample is GL.glRenderbufferStorageMultisample  # restored
    plain, smooth = (next(render_frames(vertices[None], faces, RenderConfig(size=64, msaa=m))) for m in (0, 1))
    assert not np.array_equal(plain, smooth)


@pytest.mark.render
@pytest.mark.parametrize("msaa", [False, True])
def test_colour_only_readback_is_bit_identical(gl: str, flame, msaa: bool) -> None:
    vertices, faces, lower = flame
    sequence = np.stack([vertices, open_mouth(vertices, lower)])
    fast, plain = (list(render_frames(sequence, faces, RenderConfig(size=96, msaa=msaa, fast_readback=f)))
                   for f in (True, False))
    for a, b in zip(fast, plain, strict=True):
        np.testing.assert_array_equal(a, b)
    if gl == "egl":  # the colour-only path really replaced pyrender's read: no depth image comes back
        import pyrender

        offscreen = pyrender.OffscreenRenderer(16, 16)
        try:
            render_gl.skip_depth_readback(offscreen)
            scene = pyrender.Scene()
            scene.add(pyrender.PerspectiveCamera(yfov=1.0))
            color, depth = offscreen.render(scene)
        finally:
            offscreen.delete()
        assert color.shape == (16, 16, 3) and depth is None


@pytest.mark.render
def test_render_video_has_every_frame_and_the_sound(gl: str, flame, tmp_path: Path) -> None:
    from talkface.render.video import probe_mp4

    vertices, faces, lower = flame
    num, fps = 24, 25.0
    opening = np.linspace(0.0, 0.01, num, dtype=np.float32)
    sequence = np.stack([open_mouth(vertices, lower, float(m)) for m in opening])
    wav = write_tone(tmp_path / "speech.wav", 1.3)  # longer than the video: cut to it
    progress: list[tuple[int, int]] = []
    out = render_video(Animation(sequence, fps, faces), tmp_path / "out.mp4", audio=wav,
                       config=RenderConfig(size=128), on_progress=lambda d, t: progress.append((d, t)))
    info = probe_mp4(out)
    assert info.video_frames == num
    assert info.fps == pytest.approx(fps)
    assert (info.width, info.height, info.video_codec, info.pix_fmt) == (128, 128, "h264", "yuv420p")
    assert info.audio_codec == "aac" and info.audio_duration is not None
    assert abs(info.audio_duration - num / fps) <= 1 / fps
    assert progress == [(k, num) for k in range(1, num + 1)]
    with pytest.raises(OutputError, match="already exists"):
        render_video(Animation(sequence, fps, faces), out, audio=None, config=RenderConfig(size=64))
    assert probe_mp4(out).width == 128  # untouched
    render_video(Animation(sequence[:2], fps, faces), out, audio=None, config=RenderConfig(size=64), overwrite=True)
    assert probe_mp4(out).video_frames == 2


@pytest.mark.render
def test_side_by_side_with_error_map(gl: str, flame, tmp_path: Path) -> None:
    from talkface.render.video import probe_mp4

    vertices, faces, lower = flame
    truth = np.stack([vertices] * 5)  # one frame longer: the common 4 frames are rendered
    predicted = np.stack([open_mouth(vertices, lower)] * 4)
    config = RenderConfig(size=SIZE)
    out = render_video(Animation(predicted, 30.0, faces), tmp_path / "cmp.mp4", audio=None, config=config,
                       compare=Animation(truth, 30.0, faces), error_map=True)
    info = probe_mp4(out)
    assert (info.width, info.height, info.video_frames) == (2 * SIZE, SIZE, 4)

    # The frames themselves, before encoding: the right panel is red in the mouth, the left is grey.
    truth = truth[:4]
    frames = list(itertools.islice(render._render_panels(
        [render._Panel(truth, None), render._Panel(predicted, error_colors(
            np.linalg.norm(predicted - truth, axis=2) * 1000, (0, 3), colormap_lut()))], faces, config), 1))
    gt_panel, error_panel = frames[0]
    columns, rows = project(predicted[0, lower], config).T  # where the displaced lower lip is drawn
    mouth = (slice(int(rows.min()), int(rows.max()) + 1), slice(int(columns.min()), int(columns.max()) + 1))
    mouth_rgb = error_panel[mouth].astype(int)
    forehead_rgb = error_panel[SIZE // 4 : SIZE // 3, SIZE // 2 - 5 : SIZE // 2 + 5].astype(int)
    # 10 mm error is the colormap's dark red end (R >> G); no error is its pale yellow end (R ≈ G)
    assert (mouth_rgb[..., 0] - mouth_rgb[..., 1]).mean() > 30
    assert abs((forehead_rgb[..., 0] - forehead_rgb[..., 1]).mean()) < 8
    grey = gt_panel[mouth].astype(int)
    assert np.abs(grey[..., 0] - grey[..., 2]).max() <= 2


@pytest.mark.render
def test_render_video_argument_errors(gl: str, flame, tmp_path: Path) -> None:
    vertices, faces, _ = flame
    animation = Animation(vertices[None], 30.0, faces)
    config = RenderConfig(size=64)
    with pytest.raises(ConfigError, match="--compare"):
        render_video(animation, tmp_path / "a.mp4", audio=None, config=config, error_map=True)
    with pytest.raises(TemplateError, match="faces"):
        render_video(Animation(vertices[None], 30.0), tmp_path / "b.mp4", audio=None, config=config)
    with pytest.raises(AudioError):
        render_video(animation, tmp_path / "c.mp4", audio=tmp_path / "none.wav", config=config)
    with pytest.raises(ConfigError, match="fps"):
        render_video(animation, tmp_path / "d.mp4", audio=None, config=config,
                     compare=Animation(vertices[None], 25.0, faces))
    with pytest.raises(TemplateError, match="vertices"):
        render_video(animation, tmp_path / "e.mp4", audio=None, config=config,
                     compare=Animation(vertices[None, :100], 30.0, faces))
    assert list(tmp_path.iterdir()) == []
