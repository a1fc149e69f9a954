"""The GL side of rendering, below pyrender's public API: what makes a frame cheap on a CPU rasteriser.

- ``VertexNormals``: smooth normals for one topology, precomputed once per video.
- ``install_fast_shading``: a per-vertex ("fast") GLSL program in place of pyrender's per-pixel PBR.
- ``single_sample_framebuffers``: no 4× MSAA on EGL (pyrender hard-codes it; half the speed).
- ``skip_depth_readback``: read back colour only.

Shading.

pyrender's own fragment shader evaluates its full PBR model for every pixel, with loops over point and
spot lights that the VOCA scene does not have; on Mesa's llvmpipe (CPU rasterisation) that is most of
a frame's cost (~45 of the 55–68 CPU-ms of a 512² render call). The VOCA scene is simple: one grey
metallic-roughness material, one directional light along -z (FaceFormer's five, see
``render.DIRECTIONAL_INTENSITY``) and an ambient term. ``FastProgramCache`` evaluates *the same* BRDF
(same Fresnel, Smith and GGX terms and clamps as pyrender's ``mesh.frag``) once per vertex and lets the
rasteriser interpolate the sRGB result (Gouraud shading). At FLAME's density (5,023 vertices; a
triangle covers ~10 px at 512²) the image differs from pyrender's by ~0.7 grey levels on average over
the head, below H.264's own quantisation noise (~1), at about a sixth of the render cost (9 CPU-ms at
512²).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

# pyrender passes these defines (its ``_get_primitive_program``); GLSL's own preprocessor handles them.
_VERTEX_SHADER = """#version 330 core
layout(location = 0) in vec3 position;
layout(location = NORMAL_LOC) in vec3 normal;
#ifdef COLOR_0_LOC
layout(location = COLOR_0_LOC) in vec4 color_0;
#endif
layout(location = INST_M_LOC) in mat4 inst_m;

struct DirectionalLight { vec3 color; float intensity; vec3 direction; };
struct Material { vec4 base_color_factor; float metallic_factor; float roughness_factor; vec3 emissive_factor; };

uniform mat4 M;
uniform mat4 V;
uniform mat4 P;
uniform Material material;
uniform DirectionalLight directional_lights[MAX_DIRECTIONAL_LIGHTS];
uniform int n_directional_lights;
uniform vec3 cam_pos;
uniform vec3 ambient_light;

out vec4 shaded;

const float PI = 3.141592653589793;

// pyrender's metallic-roughness BRDF (mesh.frag: compute_brdf) for directional lights, term by term.
vec3 shade(vec3 n, vec3 position_w) {
    float roughness = clamp(material.roughness_factor, 0.04, 1.0);
    float metallic = clamp(material.metallic_factor, 0.0, 1.0);
    vec3 base = material.base_color_factor.rgb;
    vec3 c_diff = base * (1.0 - 0.04) * (1.0 - metallic);
    vec3 f0 = mix(vec3(0.04), base, metallic);
    float r = roughness + 1.0;
    float k = r * r / 8.0;
    float a2 = roughness * roughness * roughness * roughness;
    vec3 v = normalize(cam_pos - position_w);
    vec3 color = base * ambient_light + material.emissive_factor * material.emissive_factor;
    for (int i = 0; i < n_directional_lights; i++) {
        vec3 l = normalize(-directional_lights[i].direction);
        vec3 h = normalize(l + v);
        float nl = clamp(dot(n, l), 0.001, 1.0);
        float nv = clamp(abs(dot(n, v)), 0.001, 1.0);
        float nh = clamp(dot(n, h), 0.0, 1.0);
        float vh = clamp(dot(v, h), 0.0, 1.0);
        vec3 F = f0 + (1.0 - f0) * pow(clamp(1.0 - vh, 0.0, 1.0), 5.0);
        float G = nv / (nv * (1.0 - k) + k) * nl / (nl * (1.0 - k) + k);
        float d = nh * nh * (a2 - 1.0) + 1.0;
        float D = a2 / (PI * d * d);
        vec3 radiance = directional_lights[i].intensity * directional_lights[i].color;
        color += nl * radiance * ((1.0 - F) * c_diff / PI + F * G * D / (4.0 * nl * nv + 0.001));
    }
    return color;
}

void main() {
    mat4 model = M * inst_m;
    vec4 position_w = model * vec4(position, 1.0);
    gl_Position = P * V * position_w;
    vec3 n = normalize(mat3(transpose(inverse(model))) * normal);
    vec3 color = shade(n, position_w.xyz);
#ifdef COLOR_0_LOC
    color *= color_0.rgb;  // linear vertex colours (error maps) tint the shading, as in mesh.frag
#endif
    // Gamma per vertex: the fragment stage then only interpolates (1.3 ms less per 512² frame).
    shaded = vec4(pow(clamp(color, 0.0, 1.0), vec3(1.0 / 2.2)), 1.0);
}
"""

_FRAGMENT_SHADER = """#version 330 core
in vec4 shaded;
out vec4 frag_color;
void main() { frag_color = shaded; }
"""


def _with_defines(source: str, defines: dict[str, Any]) -> str:
    version, body = source.split("\n", 1)
    return version + "\n" + "".join(f"#define {name} {value}\n" for name, value in defines.items()) + body


class FastProgramCache:
    """Stands in for a pyrender renderer's ``_program_cache``: the lit-mesh program is the per-vertex one.

    pyrender asks its cache for ``mesh.vert``/``mesh.frag`` with defines that give the vertex attribute
    locations; every other program (depth, flat, text...) comes from the wrapped cache unchanged. The
    uniforms pyrender sets (camera, lights, material) keep their names, so pyrender drives this program
    exactly as its own.

    Args:
        inner: the renderer's original ``ShaderProgramCache``.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._programs: dict[tuple[tuple[str, Any], ...], Any] = {}

    def get_program(
        self, vertex_shader: str, fragment_shader: str, geometry_shader: str | None = None,
        defines: dict[str, Any] | None = None,
    ) -> Any:
        defines = dict(defines or {})
        if (vertex_shader, fragment_shader, geometry_shader) != ("mesh.vert", "mesh.frag", None) or (
            "NORMAL_LOC" not in defines
        ):
            return self._inner.get_program(vertex_shader, fragment_shader, geometry_shader, defines)
        import OpenGL.contextdata

        key = (("context", OpenGL.contextdata.getContext()), *sorted(defines.items()))
        if key not in self._programs:
            self._programs[key] = _source_program(defines)
        return self._programs[key]

    def clear(self) -> None:
        for program in self._programs.values():
            program.delete()
        self._programs = {}
        self._inner.clear()


def _source_program(defines: dict[str, Any]) -> Any:
    """A pyrender ``ShaderProgram`` compiled from this module's sources instead of pyrender's files."""
    from pyrender.shader_program import ShaderProgram

    class _SourceProgram(ShaderProgram):  # type: ignore[misc]
        def _load(self, shader_filename: str) -> str:
            source = _VERTEX_SHADER if shader_filename == "vertex" else _FRAGMENT_SHADER
            return _with_defines(source, self.defines)

    return _SourceProgram("vertex", "fragment", None, defines)


def install_fast_shading(offscreen: Any) -> bool:
    """Make a pyrender ``OffscreenRenderer`` shade lit meshes per vertex (see the module docstring).

    Returns:
        True if installed; False (pyrender's shader stays) when this pyrender's internals differ.
    """
    inner = getattr(offscreen, "_renderer", None)
    cache = getattr(inner, "_program_cache", None)
    if cache is None or not hasattr(cache, "get_program"):
        return False
    if not isinstance(cache, FastProgramCache):
        inner._program_cache = FastProgramCache(cache)
    return True


# ---------------------------------------------------------------------------------------------------
# Framebuffers and readback


@contextlib.contextmanager
def single_sample_framebuffers(renderer_module: Any) -> Iterator[None]:
    """While active, pyrender allocates its offscreen framebuffers without multisampling.

    pyrender hard-codes 4× MSAA for framebuffer (EGL) rendering and offers no switch; on llvmpipe it
    halves the speed (RENDERING.md §7.4). The renderbuffers are allocated at the first ``render()``,
    so passing ``samples=0`` (a valid single-sample renderbuffer in GL ≥ 3.0) during that call is
    enough; the patch is undone right after.
    """
    original = getattr(renderer_module, "glRenderbufferStorageMultisample", None)
    if original is None:  # another pyrender version: leave its framebuffers alone
        yield
        return

    def single_sample(target: int, samples: int, internal_format: int, width: int, height: int) -> Any:
        return original(target, 0, internal_format, width, height)

    renderer_module.glRenderbufferStorageMultisample = single_sample
    try:
        yield
    finally:
        renderer_module.glRenderbufferStorageMultisample = original


def skip_depth_readback(offscreen: Any) -> None:
    """Make an EGL OffscreenRenderer read back only colour.

    pyrender always reads the depth buffer too and linearises it in numpy, 5–8 CPU-ms per frame at
    512²–800² here (~7 %), for an image talkface never uses. This replaces that one method on this
    renderer instance with a colour-only version (the same blit and ``glReadPixels`` of RGB, rows
    flipped); the frames are bit-identical (tested). Left alone when pyrender's internals differ or the
    platform renders without framebuffers (OSMesa).
    """
    inner = getattr(offscreen, "_renderer", None)
    needed = ("_read_main_framebuffer", "_main_fb", "_main_fb_ms", "_main_fb_dims")
    if inner is None or not all(hasattr(inner, name) for name in needed):
        return
    from OpenGL import GL

    def read_color(scene: Any, flags: int) -> tuple[np.ndarray, None]:
        width, height = inner._main_fb_dims
        GL.glBindFramebuffer(GL.GL_READ_FRAMEBUFFER, inner._main_fb_ms)
        GL.glBindFramebuffer(GL.GL_DRAW_FRAMEBUFFER, inner._main_fb)
        GL.glBlitFramebuffer(0, 0, width, height, 0, 0, width, height, GL.GL_COLOR_BUFFER_BIT, GL.GL_LINEAR)
        GL.glBindFramebuffer(GL.GL_READ_FRAMEBUFFER, inner._main_fb)
        pixels = GL.glReadPixels(0, 0, width, height, GL.GL_RGB, GL.GL_UNSIGNED_BYTE)
        return np.flip(np.frombuffer(pixels, dtype=np.uint8).reshape(height, width, 3), axis=0), None

    inner._read_main_framebuffer = read_color



# ---------------------------------------------------------------------------------------------------
# Vertex normals (pure)


class VertexNormals:
    """Smooth vertex normals for one topology: unit face normals weighted by the corner angle.

    This is Thürrner & Wüthrich's (1998) weighting, the one trimesh uses for
    ``Mesh.from_trimesh(smooth=True)`` in FaceFormer's renderer, so the shading matches theirs. The
    gather indices and a sparse (V, 3F) corner-to-vertex matrix are built once per topology, so a frame
    costs one gather, a few vectorised products and one sparse product (no ``np.add.at``).

    Args:
        faces: (F, 3) int vertex indices.
        num_vertices: V.
    """

    def __init__(self, faces: np.ndarray, num_vertices: int) -> None:
        import scipy.sparse

        faces = np.asarray(faces, dtype=np.int64)
        self.num_vertices = int(num_vertices)
        # flat float indices of corner k's coordinate j: 3 * faces[f, k] + j, shape (F, 3, 3)
        self._gather = (3 * faces[:, :, None] + np.arange(3)).ravel()
        corners = faces.size
        self._scatter = scipy.sparse.csr_matrix(
            (np.ones(corners, np.float32), (faces.ravel(), np.arange(corners))), shape=(self.num_vertices, corners)
        )

    def __call__(self, vertices: np.ndarray) -> np.ndarray:
        """(V, 3) float vertices, metres -> (V, 3) float32 unit normals (zero on no or only degenerate faces)."""
        points = np.ascontiguousarray(vertices, dtype=np.float32).reshape(-1)
        tri = points[self._gather].reshape(-1, 3, 3)  # (F, corner, xyz)
        edges = np.roll(tri, -1, axis=1) - tri  # edges[:, k]: from corner k to corner k + 1
        lengths = np.sqrt(np.einsum("fki,fki->fk", edges, edges))
        face_normals = np.cross(edges[:, 0], edges[:, 1])
        area2 = np.sqrt(np.einsum("fi,fi->f", face_normals, face_normals))
        pairs = lengths * np.roll(lengths, 1, axis=1)  # |edge leaving k| * |edge arriving at k|
        valid = (area2 > 0) & (pairs > 0).all(axis=1)
        face_normals /= np.where(valid, area2, 1.0)[:, None]
        # corner k lies between the edge leaving it and the reversed edge arriving at it
        cosines = -np.einsum("fki,fki->fk", edges, np.roll(edges, 1, axis=1)) / np.where(pairs > 0, pairs, 1.0)
        angles = np.arccos(np.clip(cosines, -1.0, 1.0, out=cosines), out=cosines)
        angles[~valid] = 0.0
        summed = self._scatter @ (angles[:, :, None] * face_normals[:, None, :]).reshape(-1, 3)
        length = np.sqrt(np.einsum("vi,vi->v", summed, summed))
        return (summed / np.where(length > 0, length, 1.0)[:, None]).astype(np.float32, copy=False)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Smooth, angle-weighted vertex normals (see ``VertexNormals``; build that once for many frames).

    Args:
        vertices: (V, 3) float, metres.
        faces: (F, 3) int vertex indices.

    Returns:
        (V, 3) float32 unit normals (zero for vertices on no face or only on degenerate faces).
    """
    points = np.asarray(vertices)
    return VertexNormals(faces, len(points))(points)
