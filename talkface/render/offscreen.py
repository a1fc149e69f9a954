"""Offscreen rendering of vertex animations to frames and MP4 videos (pyrender, headless EGL/OSMesa).

The default camera, material and lighting reproduce the VOCA/FaceFormer renders (REFERENCE.md §6) so
videos are comparable with the papers. Unlike FaceFormer, one ``OffscreenRenderer`` serves a whole
video, the GL platform is chosen by probing, and a frame that shows only background is an error, never
a silent black video. pyrender and OpenGL are imported only inside functions, after
``PYOPENGL_PLATFORM`` has been set, because PyOpenGL fixes its platform at first import.

Over 400 lines: choosing the GL platform and the frame loop stay together, because pyrender may be
imported only after the platform is chosen here.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from talkface.errors import AudioError, ConfigError, RenderError, TemplateError
from talkface.io.audio import check_audio_samples
from talkface.io.fileio import check_output_path
from talkface.render import gl as render_gl
from talkface.render.overlay import blend, bounding_box, colormap_lut, error_colors, make_overlay
from talkface.render.video import write_mp4

if TYPE_CHECKING:
    from talkface.io.animation import Animation

VOCA_FOCAL_PX = 4754.97941935 / 2  # ≈ 2377.49 px at 800 × 800 (VOCA/FaceFormer IntrinsicsCamera)
REFERENCE_SIZE = 800  # px, the image size VOCA's focal length belongs to
ZNEAR, ZFAR = 0.01, 3.0  # metres, VOCA's clipping planes
AMBIENT = 0.2  # VOCA/FaceFormer ambient light
# FaceFormer adds five DirectionalLight(intensity=2) whose poses differ only in translation, so all
# shine along -z. pyrender keeps at most 4 lights of a type (constants.MAX_N_LIGHTS) and drops the
# fifth silently; what FaceFormer's videos show is therefore 4 × 2. One light of intensity 8 renders
# a bit-identical image (RENDERING.md §7.3) and is cheaper in the shader.
DIRECTIONAL_INTENSITY = 8.0
GREY = (0.3, 0.3, 0.3, 1.0)  # baseColorFactor, metallic 0.8, roughness 0.8, alphaMode BLEND (FaceFormer)
PLATFORMS = ("egl", "osmesa")  # tried in this order when PYOPENGL_PLATFORM is unset
GL_PACKAGES = "libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0 libosmesa6"
_PROBE_TIMEOUT_S = 60.0
_PROBE_CODE = (
    "import pyrender\nr = pyrender.OffscreenRenderer(16, 16)\ns = pyrender.Scene()\n"
    "s.add(pyrender.PerspectiveCamera(yfov=1.0))\nr.render(s)\nr.delete()\n"
)
_NAMED_COLOURS = {"black": (0, 0, 0), "white": (255, 255, 255)}
SHADINGS = ("fast", "pbr")
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")


def parse_background(text: str) -> tuple[int, int, int]:
    """Parse ``black``, ``white`` or ``#rrggbb`` into an (r, g, b) tuple of 0..255 ints.

    Raises:
        ConfigError: any other text.
    """
    value = text.strip().lower()
    if value in _NAMED_COLOURS:
        return _NAMED_COLOURS[value]
    if re.fullmatch(r"#[0-9a-f]{6}", value):
        return (int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16))
    raise ConfigError(f"background {text!r} not understood; expected black, white or #rrggbb (e.g. #336699)")


@dataclass(frozen=True)
class RenderConfig:
    """How frames are rendered and encoded.

    Attributes:
        size: image width and height in pixels, even, 16..4096.
        background: (r, g, b) 0..255; a string (``black``/``white``/``#rrggbb``) is parsed.
        focal_px: focal length in pixels *at 800 × 800*; scaled by ``size / 800`` (see ``focal``), so
            the framing is the same at every size. VOCA/FaceFormer's value by default.
        camera_distance: metres from the origin along +z; the camera looks down -z.
        msaa: 4× multisampling. Only EGL offers it, at half the speed on llvmpipe; OSMesa ignores it.
        crf: x264 quality (0 lossless .. 51 worst).
        preset: x264 preset. ``veryfast``: ~5 / 10 CPU-ms per 512² / 800² frame in ffmpeg (overlapping the
            render); ``superfast``/``ultrafast`` save 1–5 ms for 2.8–4.7× larger files (docs/benchmarks.md).
        fast_readback: on EGL, read back colour only (skips pyrender's unused depth image, ~7 % faster).
        shading: ``fast``: pyrender's BRDF, light and material evaluated per vertex (``render_gl``), ~6× cheaper
            on llvmpipe, ~0.7 grey levels from ``pbr`` over the head (H.264 changes ~1). ``pbr``: pyrender's
            own per-pixel shader, the exact look of VOCA/FaceFormer videos.
    """

    size: int = 800
    background: tuple[int, int, int] | str = (0, 0, 0)
    focal_px: float = VOCA_FOCAL_PX
    camera_distance: float = 1.0
    msaa: bool = False
    crf: int = 18
    preset: str = "veryfast"
    fast_readback: bool = True
    shading: str = "fast"

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, (int, np.integer)):
            raise ConfigError(f"size is {self.size!r}; expected an integer number of pixels such as 800")
        if not 16 <= self.size <= 4096 or self.size % 2:
            raise ConfigError(f"size is {self.size}; expected an even number of pixels in 16..4096 (e.g. 512)")
        object.__setattr__(self, "size", int(self.size))
        bg = self.background
        bg = parse_background(bg) if isinstance(bg, str) else tuple(int(c) for c in bg)
        if len(bg) != 3 or not all(0 <= c <= 255 for c in bg):
            raise ConfigError(f"background is {self.background!r}; expected three 0..255 values")
        object.__setattr__(self, "background", bg)
        if not (np.isfinite(self.focal_px) and self.focal_px > 0):
            raise ConfigError(f"focal_px is {self.focal_px}; expected a positive focal length in pixels")
        if not (np.isfinite(self.camera_distance) and ZNEAR < self.camera_distance < ZFAR):
            raise ConfigError(f"camera_distance is {self.camera_distance}; expected metres in ({ZNEAR}, {ZFAR})")
        if not 0 <= self.crf <= 51:
            raise ConfigError(f"crf is {self.crf}; expected 0..51 (18 is visually lossless)")
        if self.shading not in SHADINGS:
            raise ConfigError(f"shading is {self.shading!r}; expected one of {', '.join(SHADINGS)}")
        if self.preset not in X264_PRESETS:
            raise ConfigError(f"preset is {self.preset!r}; expected one of {', '.join(X264_PRESETS)}")

    @property
    def focal(self) -> float:
        """Focal length in pixels at ``size``."""
        return self.focal_px * self.size / REFERENCE_SIZE


# ---------------------------------------------------------------------------------------------------
# GL platform


def _probe_platform(platform: str) -> str | None:
    """Make a tiny OffscreenRenderer in a fresh interpreter; None on success, else the error's last line."""
    env = {**os.environ, "PYOPENGL_PLATFORM": platform}
    try:
        result = subprocess.run(
            [sys.executable, "-c", _PROBE_CODE], env=env, capture_output=True, text=True,
            errors="replace", timeout=_PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return f"timed out after {_PROBE_TIMEOUT_S:.0f} s"
    if result.returncode == 0:
        return None
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else f"exit code {result.returncode}"


def _no_platform_message(tried: dict[str, str]) -> str:
    details = "; ".join(f"{name}: {error}" for name, error in tried.items())
    return (
        f"no offscreen OpenGL context could be made (tried {', '.join(tried)}). Errors: {details}. "
        f"Install Mesa's offscreen drivers (Debian/Ubuntu: apt-get install {GL_PACKAGES}). "
        "OSMesa also needs PyOpenGL>=3.1.4, newer than the 3.1.0 that pyrender 0.1.45 pins: "
        "pip install 'PyOpenGL>=3.1.4' after installing pyrender. "
        "Set PYOPENGL_PLATFORM=egl or osmesa to choose a platform."
    )


@functools.cache
def _first_working_platform(candidates: tuple[str, ...]) -> str:
    # Cached per process: probing costs a subprocess (~2 s), and the answer cannot change while
    # this interpreter runs. Failures are not cached (functools.cache does not store exceptions).
    tried: dict[str, str] = {}
    for name in candidates:
        error = _probe_platform(name)
        if error is None:
            return name
        tried[name] = error
    raise RenderError(_no_platform_message(tried))


def choose_platform() -> str:
    """The PyOpenGL platform to render with: ``PYOPENGL_PLATFORM`` if set, else the first of EGL, OSMesa
    that can make a context.

    Unset, each candidate is probed in a short subprocess (~2 s, once per process: the result is
    cached), because PyOpenGL fixes its platform at its first import and a failed attempt cannot be
    undone in this process. Set, the value is trusted and checked when the renderer is made.

    Raises:
        RenderError: pyrender is missing, ``PYOPENGL_PLATFORM`` names a platform pyrender cannot use
            offscreen, or no candidate works; the message lists the platforms tried, their errors and
            the packages to install.
    """
    import importlib.util

    if importlib.util.find_spec("pyrender") is None:
        raise RenderError(
            "pyrender is not installed; install the render extra: pip install 'talkface[render]' "
            "and then pip install 'PyOpenGL>=3.1.4' (see the README)"
        )
    forced = os.environ.get("PYOPENGL_PLATFORM", "").strip()
    if not forced:
        return _first_working_platform(PLATFORMS)
    if forced not in PLATFORMS:
        raise RenderError(
            f"PYOPENGL_PLATFORM is set to {forced!r}, but pyrender renders offscreen only with "
            f"{' or '.join(PLATFORMS)}; set it to one of them, or unset it to let talkface try egl, then osmesa"
        )
    return forced


def _check_mesh(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None) -> None:
    if vertices.ndim != 3 or vertices.shape[2] != 3 or vertices.shape[0] == 0:
        raise TemplateError(f"vertices have shape {vertices.shape}; expected (T, V, 3) with T >= 1")
    if not np.isfinite(vertices).all():
        raise TemplateError("vertices contain NaN or infinite values; cannot render them")
    if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0 or not np.issubdtype(faces.dtype, np.integer):
        raise TemplateError(f"faces have shape {faces.shape} dtype {faces.dtype}; expected (F, 3) integers")
    if faces.min() < 0 or faces.max() >= vertices.shape[1]:
        raise TemplateError(
            f"faces index vertices {faces.min()}..{faces.max()} but the mesh has {vertices.shape[1]}; "
            "pass --template with the topology of this animation's mesh"
        )
    if colors is not None and colors.shape != vertices.shape:
        raise TemplateError(f"colors have shape {colors.shape}; expected {vertices.shape} like the vertices")


# ---------------------------------------------------------------------------------------------------
# Frames


@dataclass(frozen=True)
class _Panel:
    vertices: np.ndarray  # (T, V, 3) float32
    colors: np.ndarray | None  # (T, V, 3) float32 sRGB in [0, 1], or None for the grey material


def _build_scene(pyrender: Any, config: RenderConfig) -> Any:
    scene = pyrender.Scene(ambient_light=[AMBIENT] * 3, bg_color=[c / 255.0 for c in config.background] + [1.0])
    half = config.size / 2.0
    camera = pyrender.IntrinsicsCamera(fx=config.focal, fy=config.focal, cx=half, cy=half, znear=ZNEAR, zfar=ZFAR)
    pose = np.eye(4)
    pose[2, 3] = config.camera_distance
    scene.add(camera, pose=pose)
    scene.add(pyrender.DirectionalLight(color=np.ones(3), intensity=DIRECTIONAL_INTENSITY), pose=pose)
    return scene


def _material(pyrender: Any) -> Any:
    # Vertex colours (error maps) multiply this lit grey, so both panels keep the same shading.
    return pyrender.MetallicRoughnessMaterial(
        alphaMode="BLEND", baseColorFactor=GREY, metallicFactor=0.8, roughnessFactor=0.8
    )


def _render_panels(panels: Sequence[_Panel], faces: np.ndarray, config: RenderConfig) -> Iterator[list[np.ndarray]]:
    """Yield, per frame, one (H, W, 3) uint8 image per panel, all from one OffscreenRenderer."""
    platform = choose_platform()
    os.environ.setdefault("PYOPENGL_PLATFORM", platform)  # must precede the first OpenGL import
    import pyrender
    import pyrender.renderer

    scene = _build_scene(pyrender, config)
    material = _material(pyrender)
    indices = np.ascontiguousarray(faces, dtype=np.uint32)
    empty = np.empty((config.size, config.size, 3), dtype=np.uint8)
    empty[:] = config.background  # what a frame with nothing drawn looks like
    try:
        renderer = pyrender.OffscreenRenderer(config.size, config.size)
    except Exception as e:  # ImportError, ValueError, GLError...: each means "no context here"
        raise RenderError(
            f"{_no_platform_message({platform: f'{type(e).__name__}: {e}'})} If PYOPENGL_PLATFORM was "
            "unset, something imported pyrender/OpenGL before talkface could set it; set it yourself."
        ) from e
    if config.fast_readback:
        render_gl.skip_depth_readback(renderer)
    if config.shading == "fast":
        render_gl.install_fast_shading(renderer)
    normals = render_gl.VertexNormals(indices, panels[0].vertices.shape[1])  # built once per video
    node = None
    first = True
    try:
        for t in range(panels[0].vertices.shape[0]):
            images = []
            for index, panel in enumerate(panels):
                positions = panel.vertices[t]
                colors = None if panel.colors is None else panel.colors[t] ** 2.2  # sRGB -> linear: the
                # shader multiplies before its 1/2.2 gamma, so the output shows the sRGB colour × shading
                primitive = pyrender.Primitive(
                    positions=positions, normals=normals(positions), indices=indices,
                    color_0=colors, material=material,
                )
                if node is not None:
                    scene.remove_node(node)
                # A new Mesh per frame (public API): updating the VBO in place saved only ~0.5 of ~14
                # CPU-ms per 512² frame (docs/benchmarks.md). The renderer is reused.
                node = scene.add(pyrender.Mesh([primitive]))
                msaa_off = first and not config.msaa
                with render_gl.single_sample_framebuffers(pyrender.renderer) if msaa_off else contextlib.nullcontext():
                    try:
                        color, _ = renderer.render(scene, flags=pyrender.RenderFlags.SKIP_CULL_FACES)
                    except Exception as e:
                        raise RenderError(f"frame {t}: OpenGL rendering failed on {platform} ({e})") from e
                first = False
                image = np.ascontiguousarray(color[..., :3])
                if np.array_equal(image, empty):  # a whole-frame compare: ~0.1 ms, not (image != rgb)'s 5
                    raise RenderError(
                        f"frame {t}{f' (panel {index})' if len(panels) > 1 else ''} shows only background: "
                        "the mesh is outside the camera's view (camera at z = "
                        f"{config.camera_distance} m looking down -z; vertices span z "
                        f"{positions[:, 2].min():.3f}..{positions[:, 2].max():.3f} m) or the GL context "
                        "draws nothing; check the vertex units (metres) and the platform"
                    )
                images.append(image)
            yield images
    finally:
        renderer.delete()


def render_frames(
    vertices: np.ndarray, faces: np.ndarray, config: RenderConfig, *, colors: np.ndarray | None = None
) -> Iterator[np.ndarray]:
    """Render a vertex sequence frame by frame with one offscreen renderer.

    The inputs are validated and the GL platform is chosen when this is called; the renderer is made
    on the first ``next()`` and released when the iterator is exhausted or closed.

    Args:
        vertices: (T, V, 3) float32, metres, in the camera frame of VOCA (FLAME's own coordinates).
        faces: (F, 3) int vertex indices.
        config: camera, background and size.
        colors: optional (T, V, 3) float sRGB vertex colours in [0, 1]; they tint the grey shading.

    Returns:
        An iterator of T (size, size, 3) uint8 RGB frames.

    Raises:
        TemplateError: malformed vertices, faces or colours.
        RenderError: no GL platform works, the context fails, or a frame shows only background.
    """
    vertices = np.asarray(vertices, dtype=np.float32)
    faces = np.asarray(faces)
    if colors is not None:
        colors = np.clip(np.asarray(colors, dtype=np.float32), 0.0, 1.0)
    _check_mesh(vertices, faces, colors)
    choose_platform()  # fail before the caller starts an encoder
    return _only_panel(_render_panels([_Panel(vertices, colors)], faces, config))


def _only_panel(frames: Iterator[list[np.ndarray]]) -> Iterator[np.ndarray]:
    try:
        for images in frames:
            yield images[0]
    finally:
        frames.close()  # releases the renderer now, not at garbage collection


# ---------------------------------------------------------------------------------------------------
# Video


def render_video(
    animation: Animation,
    out: str | os.PathLike[str],
    *,
    audio: str | os.PathLike[str] | None,
    config: RenderConfig,
    compare: Animation | None = None,
    error_map: bool = False,
    error_range_mm: tuple[float, float] = (0.0, 3.0),
    labels: tuple[str, str] = ("ground truth", "prediction"),
    on_progress: Callable[[int, int], None] | None = None,
    overwrite: bool = False,
) -> Path:
    """Render an animation to an MP4 with its audio, optionally beside a ground truth and with an error map.

    Args:
        animation: the (predicted) animation; ``faces`` must be set. Vertices in metres.
        out: destination ``.mp4``; written atomically.
        audio: audio to mux (padded with silence or cut to the video's length), or None.
        config: size, background, camera, encoder quality.
        compare: ground truth rendered on the left (``labels[0]``); the prediction goes on the right
            (``labels[1]``) and the frame is twice as wide. Same vertex count and fps required; the
            shorter of the two lengths is rendered.
        error_map: colour the prediction by its per-vertex distance to ``compare`` in millimetres, with a
            colour bar. Needs ``compare``.
        error_range_mm: (low, high) millimetres mapped to the colormap's ends.
        labels: panel captions, used with ``compare``.
        on_progress: called as ``on_progress(frames_done, total_frames)`` after each frame.
        overwrite: replace an existing ``out``.

    Returns:
        ``out`` as a Path.

    Raises:
        OutputError: ``out`` exists without ``overwrite`` or cannot be written.
        AudioError: ``audio`` does not exist.
        TemplateError: no faces, or the two animations differ in vertex count.
        ConfigError: bad error range, error map without ``compare``, or different frame rates.
        RenderError: no GL platform, an empty frame, or ffmpeg failed.
    """
    dest = check_output_path(out, overwrite=overwrite)
    audio_path = Path(audio) if audio is not None else None
    if audio_path is not None and not audio_path.is_file():
        raise AudioError(f"{audio_path}: no such audio file; pass the speech the animation was made from")
    if audio_path is not None:
        # before rendering: ffmpeg would fail only after the last frame, and blame the output
        check_audio_samples(audio_path)
    faces = animation.faces if animation.faces is not None else (compare.faces if compare is not None else None)
    if faces is None:
        raise TemplateError("the animation has no faces; pass the mesh's faces (--template MESH)")
    low, high = error_range_mm
    if not (np.isfinite(low) and np.isfinite(high) and 0 <= low < high):
        raise ConfigError(f"error range is {error_range_mm} mm; expected 0 <= low < high, e.g. (0, 3)")
    if error_map and compare is None:
        raise ConfigError("--error-map needs a ground truth to measure against; pass --compare GT")
    predicted = np.asarray(animation.vertices, dtype=np.float32)
    panels = [_Panel(predicted, None)]
    colorbar = None
    if compare is not None:
        truth = np.asarray(compare.vertices, dtype=np.float32)
        if truth.shape[1:] != predicted.shape[1:]:
            raise TemplateError(
                f"ground truth has {truth.shape[1]} vertices, prediction {predicted.shape[1]}; they must share a mesh"
            )
        if abs(compare.fps - animation.fps) > 1e-6:
            raise ConfigError(f"ground truth is {compare.fps} fps, prediction {animation.fps} fps; they must match")
        length = min(len(truth), len(predicted))
        truth, predicted = truth[:length], predicted[:length]
        colors = None
        if error_map:
            lut = colormap_lut()
            errors_mm = np.linalg.norm(predicted - truth, axis=2) * 1000.0  # (T, V)
            colors = error_colors(errors_mm, (low, high), lut)
            colorbar = (lut, (low, high))
        panels = [_Panel(truth, None), _Panel(predicted, colors)]
    for panel in panels:
        _check_mesh(panel.vertices, np.asarray(faces), panel.colors)
    choose_platform()  # a missing GL platform fails before ffmpeg starts
    total = len(panels[0].vertices)
    shown = labels if compare is not None else ()
    overlay = make_overlay(config.size, len(panels), config.background, shown, colorbar) if shown or colorbar else None
    box = bounding_box(overlay[1]) if overlay is not None else None

    def frames() -> Iterator[np.ndarray]:
        source = _render_panels(panels, np.asarray(faces), config)
        try:
            for done, images in enumerate(source, start=1):
                frame = images[0] if len(images) == 1 else np.concatenate(images, axis=1)
                if overlay is not None and box is not None:
                    frame = blend(frame, overlay, box)
                yield frame
                if on_progress is not None:
                    on_progress(done, total)
        finally:
            source.close()

    return write_mp4(
        frames(), animation.fps, dest, audio_path=audio_path, num_frames=total, crf=config.crf, preset=config.preset
    )
