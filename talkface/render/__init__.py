"""Rendering: animations to frames and H.264 mp4 with sound (pyrender offscreen, fast GL shading, overlays, ffmpeg)."""

from talkface.render.gl import (
    FastProgramCache,
    VertexNormals,
    install_fast_shading,
    single_sample_framebuffers,
    skip_depth_readback,
    vertex_normals,
)
from talkface.render.offscreen import RenderConfig, choose_platform, parse_background, render_frames, render_video
from talkface.render.overlay import blend, bounding_box, colormap_lut, error_colors, make_overlay
from talkface.render.video import Mp4Info, ffmpeg_exe, probe_mp4, write_mp4

__all__ = [
    "blend",
    "bounding_box",
    "choose_platform",
    "colormap_lut",
    "error_colors",
    "FastProgramCache",
    "ffmpeg_exe",
    "install_fast_shading",
    "make_overlay",
    "Mp4Info",
    "parse_background",
    "probe_mp4",
    "render_frames",
    "render_video",
    "RenderConfig",
    "single_sample_framebuffers",
    "skip_depth_readback",
    "vertex_normals",
    "VertexNormals",
    "write_mp4",
]
