"""A procedural head mesh of talkface's own, shaped and oriented like FLAME, with a mouth that opens.

The head is a stack of horizontal rings (rows, top to neck) sampled at fixed angles (columns) around
the vertical axis, closed at the top by a pole vertex and open at the neck, as FLAME is. Rows are
denser over the face and columns denser at the front. Features (nose, eye sockets, brows, cheeks,
lips, chin, ears) are smooth bumps added to the ring surface.

The mouth is a slit: along the mouth row the vertices between the two mouth corners exist twice,
an upper-lip copy and a lower-lip copy that coincide at rest but belong to different faces, so a
jaw displacement pulls them apart. Behind each lip edge a short inner-lip flap curls into the head.
Through the open slit one sees the inside of the back of the head, whose faces point away from
the camera and stay unlit, so an open mouth shows a dark gap as FLAME's does.

Conventions (FLAME's, see the fixture notes): metres, vertex centroid 0, +y up, +z the face's
looking direction, +x the subject's left, counter-clockwise faces with outward normals.

Over 400 lines: geometry, topology, region labels and the jaw/lip bases are all built from one ring
layout (``_Layout``); split apart, each part would need that layout's internals.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talkface.errors import TemplateError
from talkface.io.fileio import atomic_path

ASSET_NAME = "synthetic_head.npz"
ASSET_FORMAT_VERSION = 1
REGION_NAMES = ("lips", "upper_lip", "lower_lip", "forehead", "eye_region", "nose", "face")
BASIS_NAMES = ("jaw_open", "lip_round", "lip_close", "smile_asym")
JAW_OPENING_M = 0.015  # lower-lip travel at jaw_open = 1.0

# Design-frame landmarks (metres, before centring): the head axis is at z = Z_AXIS.
Z_AXIS = -0.04
TOP_Y = 0.138
NECK_Y = -0.178
EYE_Y = 0.02
MOUTH_Y = -0.045
MOUTH_HALF_WIDTH = 0.025
JAW_PIVOT = (-0.012, -0.055)  # (y, z), near the temporomandibular joint


@dataclass(frozen=True)
class Head:
    """A head mesh with named vertex regions and linear motion bases.

    Attributes:
        vertices: (V, 3) float32 neutral shape, metres.
        faces: (F, 3) int32 counter-clockwise triangles (outward normals).
        regions: name -> sorted unique int32 vertex indices (see ``REGION_NAMES``).
        bases: name -> (V, 3) float32 displacement at unit activation, metres (see ``BASIS_NAMES``).
    """

    vertices: np.ndarray
    faces: np.ndarray
    regions: dict[str, np.ndarray]
    bases: dict[str, np.ndarray]

    @property
    def num_vertices(self) -> int:
        return int(self.vertices.shape[0])


@dataclass(frozen=True)
class HeadShape:
    """A speaker's variation of the head: same topology, different proportions.

    Attributes:
        scale: overall size factor.
        width, height, depth: extra factors on x, y and z.
        jaw_width: lower-face width relative to the upper face (1 = unchanged).
        nose: nose protrusion factor (1 = unchanged).
    """

    scale: float = 1.0
    width: float = 1.0
    height: float = 1.0
    depth: float = 1.0
    jaw_width: float = 1.0
    nose: float = 1.0


# ------------------------------------------------------------------------------------------ profile
def _smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _gauss(d2: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * d2)


def _lower_profile(y: np.ndarray) -> np.ndarray:
    """Ring half-width, front depth and back depth (metres) for y <= 0: face, jaw and neck. (N,) -> (N, 3)."""
    keys_y = np.array([NECK_Y, -0.13, -0.112, -0.10, -0.085, -0.06, -0.03, -0.01, 0.0])
    half_width = np.array([0.056, 0.057, 0.060, 0.064, 0.068, 0.073, 0.077, 0.079, 0.079])
    front = np.array([0.068, 0.070, 0.079, 0.095, 0.105, 0.108, 0.110, 0.110, 0.110])
    back = np.array([0.055, 0.057, 0.063, 0.069, 0.075, 0.083, 0.092, 0.097, 0.098])
    cols = [np.interp(y, keys_y, k) for k in (half_width, front, back)]
    return np.stack(cols, axis=-1)


def _cap_profile(phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cranium ellipsoid above y = 0 by polar angle phi (0 = top). Returns y (N,) and profile (N, 3)."""
    y = TOP_Y * np.cos(phi)
    s = np.sin(phi)[:, None]
    return y, s * np.array([0.079, 0.110, 0.098])


def _dense_profile() -> tuple[np.ndarray, np.ndarray]:
    """The head profile on a dense grid from the top pole to the neck: y (N,) and (N, 3) profile."""
    y_cap, p_cap = _cap_profile(np.linspace(0.0, np.pi / 2, 400, endpoint=False))
    y_low = np.linspace(0.0, NECK_Y, 800)
    p_low = _lower_profile(y_low)
    # Smooth the piecewise-linear keyframes so rings change gently from row to row.
    kernel = _gauss(((np.arange(-40, 41) * abs(NECK_Y) / 800) / 0.006) ** 2)
    kernel /= kernel.sum()
    padded = np.concatenate([np.repeat(p_low[:1], 40, 0), p_low, np.repeat(p_low[-1:], 40, 0)])
    p_low = np.stack([np.convolve(padded[:, k], kernel, mode="valid") for k in range(3)], axis=-1)
    return np.concatenate([y_cap, y_low]), np.concatenate([p_cap, p_low])


def _row_spacing(y: np.ndarray) -> np.ndarray:
    """Wanted distance between rows (metres): fine over the face, coarse on the scalp and neck."""
    face = _smoothstep(y, -0.125, -0.105) * (1.0 - _smoothstep(y, 0.065, 0.095))
    return 0.0125 - (0.0125 - 0.0045) * face


def _row_heights() -> tuple[np.ndarray, np.ndarray]:
    """Row heights y (R,) and profiles (R, 3), placed at equal steps of spacing-weighted arc length."""
    y, prof = _dense_profile()
    ds = np.hypot(np.diff(y), np.diff(prof[:, 1]))
    weight = ds / _row_spacing(0.5 * (y[1:] + y[:-1]))
    arc = np.concatenate([[0.0], np.cumsum(weight)])
    num_rows = int(round(arc[-1]))
    targets = np.linspace(0.0, arc[-1], num_rows + 1)[1:]  # the pole is its own vertex
    rows_y = np.interp(targets, arc, y)
    # Snap the nearest row onto the mouth line, so the slit is one straight row.
    i = int(np.argmin(np.abs(rows_y - MOUTH_Y)))
    rows_y[i] = MOUTH_Y
    rows_prof = np.stack([np.interp(-rows_y, -y, prof[:, k]) for k in range(3)], axis=-1)
    return rows_y, rows_prof


def _column_angles(num_cols: int, density: float = 0.6) -> np.ndarray:
    """Angles (radians, 0 = front, +pi/2 = +x) denser at the front by (1+density)/(1-density)."""
    t = -1.0 + 2.0 * np.arange(num_cols) / num_cols
    return np.pi * (t - density * np.sin(np.pi * t) / np.pi)


def _ring_radius(theta: np.ndarray, prof: np.ndarray) -> np.ndarray:
    """Radius of a ring in direction theta: a flattened superellipse in front, an ellipse behind."""
    a, front, back = prof[..., 0], prof[..., 1], prof[..., 2]
    s, c = np.abs(np.sin(theta)), np.cos(theta)
    p = np.where(c > 0, 2.5, 2.0)
    depth = np.where(c > 0, front, back)
    return ((s / a) ** p + (np.abs(c) / depth) ** p) ** (-1.0 / p)


# ------------------------------------------------------------------------------------------ features
def _face_relief(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Forward (+z) relief of the face (metres) at design-frame (x, y): nose, eyes, brows, lips, chin."""
    ax = np.abs(x)
    # Nose: a ridge growing from the brows to the tip, then falling fast to the upper lip.
    tip_y = -0.010
    ridge = np.interp(y, [MOUTH_Y + 0.016, -0.022, tip_y, 0.012, 0.036], [0.0, 0.011, 0.024, 0.010, 0.0])
    ridge_w = np.interp(y, [MOUTH_Y + 0.016, tip_y, 0.012, 0.036], [0.013, 0.012, 0.007, 0.008])
    nose = ridge * _gauss((x / ridge_w) ** 2)
    alae = 0.007 * _gauss(((ax - 0.015) / 0.006) ** 2 + ((y + 0.017) / 0.006) ** 2)
    socket = -0.014 * _gauss(((ax - 0.033) / 0.014) ** 2 + ((y - EYE_Y) / 0.010) ** 2)
    eyeball = 0.006 * _gauss(((ax - 0.033) / 0.008) ** 2 + ((y - EYE_Y) / 0.006) ** 2)
    brow = 0.005 * _gauss(((y - 0.043) / 0.006) ** 2 + (x / 0.045) ** 2)
    cheek = 0.006 * _gauss(((ax - 0.042) / 0.016) ** 2 + ((y + 0.012) / 0.016) ** 2)
    muzzle = 0.007 * _gauss((x / 0.030) ** 2 + ((y - MOUTH_Y) / 0.022) ** 2)
    upper_lip = 0.006 * _gauss((x / 0.019) ** 2 + ((y - MOUTH_Y - 0.006) / 0.0045) ** 2)
    lower_lip = 0.006 * _gauss((x / 0.017) ** 2 + ((y - MOUTH_Y + 0.008) / 0.0055) ** 2)
    groove = -0.003 * _gauss((x / 0.015) ** 2 + ((y - MOUTH_Y + 0.020) / 0.004) ** 2)
    corners = -0.003 * _gauss(((ax - MOUTH_HALF_WIDTH) / 0.005) ** 2 + ((y - MOUTH_Y) / 0.005) ** 2)
    chin = 0.006 * _gauss((x / 0.016) ** 2 + ((y + 0.088) / 0.009) ** 2)
    return nose + alae + socket + eyeball + brow + cheek + muzzle + upper_lip + lower_lip + groove + corners + chin


def _ear_relief(theta: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Outward relief (metres) of two simple ears on the sides of the head."""
    side = np.abs(theta) - np.pi / 2 - 0.15  # ears sit a little behind the side
    return 0.021 * _gauss((side / 0.16) ** 2 + ((y - 0.0) / 0.024) ** 2)


# ------------------------------------------------------------------------------------------ topology
def _strip_faces(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """Two triangles per quad between two equally long index rows; drops degenerate triangles."""
    a, d = top[:-1], top[1:]
    b, c = bottom[:-1], bottom[1:]
    tris = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    keep = (tris[:, 0] != tris[:, 1]) & (tris[:, 1] != tris[:, 2]) & (tris[:, 0] != tris[:, 2])
    return tris[keep]


def _orient(faces: np.ndarray, vertices: np.ndarray, outward: np.ndarray) -> np.ndarray:
    """Flip faces whose normal points against ``outward`` (F, 3) so every face agrees with it."""
    v = vertices[faces]
    normal = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    flip = np.einsum("fi,fi->f", normal, outward) < 0
    faces = faces.copy()
    faces[flip] = faces[flip][:, ::-1]
    return faces


@dataclass(frozen=True)
class _Layout:
    """Where things are in the vertex array (all indices into the final vertices)."""

    grid: np.ndarray  # (R, C) index of each ring vertex; at the mouth row: the upper-lip copies
    rows_y: np.ndarray  # (R,) design-frame heights
    theta: np.ndarray  # (C,) column angles
    mouth_row: int
    slit_cols: np.ndarray  # columns duplicated along the mouth row (between the corners)
    lower_edge: np.ndarray  # lower-lip copies, same order as slit_cols
    upper_flap: np.ndarray  # (2, len(slit_cols)) inner-lip flap rows behind the upper lip
    lower_flap: np.ndarray
    pole: int


def _build_geometry(num_cols: int) -> tuple[np.ndarray, np.ndarray, _Layout]:
    """Vertices (V, 3) float64 in the design frame, faces (F, 3) int64 and the index layout."""
    rows_y, prof = _row_heights()
    theta = _column_angles(num_cols)
    num_rows = rows_y.shape[0]
    radius = _ring_radius(theta[None, :], prof[:, None, :]) + _ear_relief(theta[None, :], rows_y[:, None])
    x = radius * np.sin(theta)[None, :]
    z = Z_AXIS + radius * np.cos(theta)[None, :]
    yy = np.broadcast_to(rows_y[:, None], x.shape)
    front = _smoothstep(np.cos(theta), 0.0, 0.5)[None, :]
    z = z + front * _face_relief(x, yy)
    ring = np.stack([x, yy, z], axis=-1).reshape(-1, 3)
    grid = np.arange(num_rows * num_cols).reshape(num_rows, num_cols)

    mouth_row = int(np.argmin(np.abs(rows_y - MOUTH_Y)))
    slit_cols = np.flatnonzero((np.abs(x[mouth_row]) < MOUTH_HALF_WIDTH) & (np.cos(theta) > 0))
    edge = ring[grid[mouth_row, slit_cols]]
    n = slit_cols.size
    next_index = ring.shape[0]
    lower_edge = np.arange(next_index, next_index + n)
    # Inner-lip flaps: the upper one curls up and back, the lower one down and back.
    taper = np.sin(np.pi * (np.arange(n) + 1) / (n + 1))[:, None]  # flaps shrink toward the corners
    flap_offsets = [(0.0025, -0.005), (0.004, -0.011)]
    upper_flap = np.arange(next_index + n, next_index + 3 * n).reshape(2, n)
    lower_flap = np.arange(next_index + 3 * n, next_index + 5 * n).reshape(2, n)
    flaps_up = [edge + taper * np.array([0.0, dy, dz]) for dy, dz in flap_offsets]
    flaps_low = [edge + taper * np.array([0.0, -dy, dz]) for dy, dz in flap_offsets]
    pole = next_index + 5 * n
    top = np.array([[0.0, TOP_Y, Z_AXIS]])
    vertices = np.concatenate([ring, edge, *flaps_up, *flaps_low, top])

    layout = _Layout(grid, rows_y, theta, mouth_row, slit_cols, lower_edge, upper_flap, lower_flap, pole)
    return vertices, _build_faces(vertices, layout), layout


def _build_faces(vertices: np.ndarray, lay: _Layout) -> np.ndarray:
    """Triangles of the rings, the pole fan and the inner-lip flaps, all counter-clockwise outward."""
    num_rows, num_cols = lay.grid.shape
    wrap = np.concatenate([np.arange(num_cols), [0]])
    below_mouth = lay.grid[lay.mouth_row].copy()
    below_mouth[lay.slit_cols] = lay.lower_edge  # faces under the slit hang on the lower-lip copies
    ring_faces = []
    for r in range(num_rows - 1):
        top = below_mouth if r == lay.mouth_row else lay.grid[r]
        ring_faces.append(_strip_faces(top[wrap], lay.grid[r + 1][wrap]))
    pole_fan = np.stack([np.full(num_cols, lay.pole), lay.grid[0][wrap[:-1]], lay.grid[0][wrap[1:]]], 1)
    ring_faces.append(pole_fan)
    # Rows run downwards and columns towards +x at the front, so (row r, r+1, r+1 next column) is
    # counter-clockwise seen from outside by construction.
    faces = np.concatenate(ring_faces)

    c0, c1 = lay.slit_cols[0] - 1, lay.slit_cols[-1] + 1  # the shared mouth corners
    corner = lay.grid[lay.mouth_row, [c0, c1]]
    flap_faces = []
    for edge, flap, direction in (
        (lay.grid[lay.mouth_row, lay.slit_cols], lay.upper_flap, -1.0),
        (lay.lower_edge, lay.lower_flap, 1.0),
    ):
        rows = [edge, flap[0], flap[1]]
        rows = [np.concatenate([[corner[0]], row, [corner[1]]]) for row in rows]
        tris = np.concatenate([_strip_faces(rows[0], rows[1]), _strip_faces(rows[1], rows[2])])
        # The upper flap's skin faces down into the mouth gap, the lower flap's faces up.
        flap_faces.append(_orient(tris, vertices, np.tile([0.0, direction, 0.0], (len(tris), 1))))
    return np.concatenate([faces, *flap_faces])


# ------------------------------------------------------------------------------------------ regions
@dataclass(frozen=True)
class _Labels:
    """Per-vertex design-frame facts used to define regions and bases."""

    x: np.ndarray  # (V,) metres
    y: np.ndarray  # (V,) nominal height: the row height for ring vertices, the lip edge's for lip copies
    z: np.ndarray
    frontness: np.ndarray  # (V,) 0 at the sides and back, 1 on the face
    side: np.ndarray  # (V,) +1 upper-lip side of the slit, -1 lower-lip side, 0 elsewhere on the mouth row


def _labels(vertices: np.ndarray, lay: _Layout) -> _Labels:
    num_rows, num_cols = lay.grid.shape
    n_v = vertices.shape[0]
    y = np.full(n_v, TOP_Y)
    y[lay.grid.ravel()] = np.repeat(lay.rows_y, num_cols)
    lip_parts = [lay.lower_edge, *lay.upper_flap, *lay.lower_flap]
    for part in lip_parts:
        y[part] = MOUTH_Y
    cos_t = np.ones(n_v)
    cos_t[lay.grid.ravel()] = np.tile(np.cos(lay.theta), num_rows)
    cos_t[lay.pole] = 0.0
    side = np.sign(y - MOUTH_Y)
    side[lay.grid[lay.mouth_row]] = 0.0
    side[np.concatenate([lay.grid[lay.mouth_row, lay.slit_cols], *lay.upper_flap])] = 1.0
    side[np.concatenate([lay.lower_edge, *lay.lower_flap])] = -1.0
    x, z = vertices[:, 0].copy(), vertices[:, 2].copy()
    for flap in (*lay.upper_flap, *lay.lower_flap):  # flaps take the coordinates of their lip edge
        x[flap] = vertices[lay.lower_edge, 0]
        z[flap] = vertices[lay.lower_edge, 2]
    return _Labels(x, y, z, _smoothstep(cos_t, 0.3, 0.7), side)


def _regions(lab: _Labels, lay: _Layout) -> dict[str, np.ndarray]:
    """Index sets by name; upper/lower lip are disjoint, eye_region and forehead are disjoint."""
    ax, dy, front = np.abs(lab.x), lab.y - MOUTH_Y, lab.frontness > 0.5
    upper = front & (lab.side > 0) & (dy <= 0.011) & (ax < MOUTH_HALF_WIDTH + 0.001 - 0.6 * dy)
    lower = front & (lab.side < 0) & (dy >= -0.013) & (ax < MOUTH_HALF_WIDTH + 0.001 + 0.5 * dy)
    corners = np.zeros_like(upper)
    corners[lay.grid[lay.mouth_row, [lay.slit_cols[0] - 1, lay.slit_cols[-1] + 1]]] = True
    masks = {
        "upper_lip": upper,
        "lower_lip": lower,
        "lips": upper | lower | corners,
        "forehead": front & (lab.y >= 0.047) & (lab.y <= 0.10) & (ax <= 0.05),
        "eye_region": front & (lab.y >= 0.0) & (lab.y <= 0.041) & (ax >= 0.012) & (ax <= 0.058),
        "nose": front & (lab.y > MOUTH_Y + 0.014) & (lab.y < 0.03) & (ax < 0.02),
        "face": (lab.frontness > 0.3) & (lab.y >= -0.10) & (lab.y <= 0.10),
    }
    return {name: np.flatnonzero(masks[name]).astype(np.int32) for name in REGION_NAMES}


# ------------------------------------------------------------------------------------------ bases
def _jaw_rotation(vertices: np.ndarray, angle: float) -> np.ndarray:
    """Displacement (V, 3) of rotating every vertex by ``angle`` about the x axis through the jaw pivot."""
    py, pz = JAW_PIVOT
    ry, rz = vertices[:, 1] - py, vertices[:, 2] - pz
    c, s = np.cos(angle), np.sin(angle)
    out = np.zeros_like(vertices)
    out[:, 1] = ry * c - rz * s - ry
    out[:, 2] = ry * s + rz * c - rz
    return out


def _jaw_basis(vertices: np.ndarray, lab: _Labels, lay: _Layout) -> np.ndarray:
    """The jaw opens by a rotation about the pivot, weighted from 1 below the slit to 0 above it."""
    beyond_corner = np.maximum(np.abs(lab.x) - MOUTH_HALF_WIDTH, 0.0)
    sigma = 0.0012 + 0.35 * beyond_corner
    vertical = 1.0 / (1.0 + np.exp(np.clip((lab.y - MOUTH_Y) / sigma, -60, 60)))
    vertical[lab.side > 0] = np.where(lab.y[lab.side > 0] > MOUTH_Y, vertical[lab.side > 0], 0.0)
    vertical[lab.side < 0] = np.where(lab.y[lab.side < 0] < MOUTH_Y, vertical[lab.side < 0], 1.0)
    # Near the lip edge the opening narrows towards the corners (a lens, not a rectangle); a
    # centimetre below the lip the whole jaw moves.
    lens = np.sqrt(np.clip(1.0 - (lab.x / (MOUTH_HALF_WIDTH + 0.003)) ** 2, 0.0, 1.0))
    lensed = lens + (1.0 - lens) * (1.0 - _gauss(((lab.y - MOUTH_Y) / 0.010) ** 2))
    weight = vertical * lensed * _smoothstep(lab.y, -0.135, -0.10)
    weight *= _smoothstep(lab.z, JAW_PIVOT[1], JAW_PIVOT[1] + 0.045)
    # Scale the angle so the middle of the lower lip travels JAW_OPENING_M.
    probe = lay.lower_edge[len(lay.lower_edge) // 2]
    step = np.linalg.norm(_jaw_rotation(vertices[probe : probe + 1], 0.1)[0])
    return weight[:, None] * _jaw_rotation(vertices, 0.1 * JAW_OPENING_M / step)


def _lip_bases(lab: _Labels) -> dict[str, np.ndarray]:
    """Pucker (o/u), press (m/b/p) and a one-sided smile; displacements (V, 3) in metres at 1.0."""
    dy = lab.y - MOUTH_Y
    g_round = _gauss((lab.x / 0.022) ** 2 + (dy / 0.012) ** 2) * lab.frontness
    g_close = _gauss((lab.x / 0.022) ** 2 + (dy / 0.009) ** 2) * lab.frontness
    g_smile = _gauss(((lab.x - 0.024) / 0.012) ** 2 + (dy / 0.012) ** 2) * lab.frontness
    # Rounding pushes the lips forward, draws the corners in and parts the lips a little.
    lip_round = np.stack([-0.28 * lab.x * g_round, 0.0025 * lab.side * g_round, 0.007 * g_round], 1)
    # Pressing draws the lips towards the mouth line and inwards; edges stay put, so lips never cross.
    lip_close = np.stack([np.zeros_like(dy), -0.2 * dy * g_close, -0.0025 * g_close], 1)
    smile = np.stack([0.003 * g_smile, 0.004 * g_smile, -0.002 * g_smile], 1)
    return {"lip_round": lip_round, "lip_close": lip_close, "smile_asym": smile}


# ------------------------------------------------------------------------------------------ public
def build_head(num_cols: int = 52) -> Head:
    """Build the procedural head. Deterministic: the same call gives the same arrays.

    Args:
        num_cols: vertices per ring (the default gives the shipped asset, about 3,100 vertices).

    Returns:
        The ``Head``, centred at its vertex centroid.
    """
    vertices, faces, lay = _build_geometry(num_cols)
    lab = _labels(vertices, lay)
    bases = {"jaw_open": _jaw_basis(vertices, lab, lay), **_lip_bases(lab)}
    upper_edge = lay.grid[lay.mouth_row, lay.slit_cols]
    pairs = [(flap, upper_edge) for flap in lay.upper_flap] + [(flap, lay.lower_edge) for flap in lay.lower_flap]
    for flap, edge in pairs:  # flaps ride on their lip edge
        for basis in bases.values():
            basis[flap] = basis[edge]
    vertices = vertices - vertices.mean(axis=0)
    return Head(
        vertices=vertices.astype(np.float32),
        faces=faces.astype(np.int32),
        regions=_regions(lab, lay),
        bases={name: bases[name].astype(np.float32) for name in BASIS_NAMES},
    )


def vary_head(head: Head, shape: HeadShape) -> Head:
    """A speaker's variant of ``head``: same faces and regions, reshaped vertices and matching bases.

    Args:
        head: the base head.
        shape: the proportions to apply.

    Returns:
        A new ``Head``, re-centred at its vertex centroid; bases are scaled by the same axis factors.
    """
    v = head.vertices.astype(np.float64)
    tip = v[int(np.argmax(v[:, 2]))]
    near_nose = _gauss(((v[:, 0] - tip[0]) / 0.016) ** 2 + ((v[:, 1] - tip[1]) / 0.02) ** 2)
    near_nose *= _smoothstep(v[:, 2], tip[2] - 0.04, tip[2] - 0.02)
    v[:, 2] += (shape.nose - 1.0) * 0.015 * near_nose
    # Widen or narrow the lower face progressively below the eyes.
    x_factor = 1.0 + (shape.jaw_width - 1.0) * _smoothstep(-v[:, 1], -0.04, 0.10)
    axes = shape.scale * np.array([shape.width, shape.height, shape.depth])
    factors = axes[None, :] * np.stack([x_factor, np.ones_like(x_factor), np.ones_like(x_factor)], 1)
    v = v * factors
    v -= v.mean(axis=0)
    bases = {name: (b * factors).astype(np.float32) for name, b in head.bases.items()}
    return Head(vertices=v.astype(np.float32), faces=head.faces, regions=head.regions, bases=bases)


def default_asset_path() -> Path:
    """``assets/synthetic_head.npz`` of a source checkout (it is not installed with the package)."""
    return Path(__file__).resolve().parents[2] / "assets" / ASSET_NAME


def save_head_asset(path: str | os.PathLike[str], head: Head | None = None) -> Path:
    """Write a head (default: ``build_head()``) as a pickle-free compressed ``.npz``.

    Keys: ``format_version``, ``vertices`` (V, 3) float32, ``faces`` (F, 3) int32, ``region_<name>``
    int32 index arrays and ``basis_<name>`` (V, 3) float32 displacements.
    """
    head = build_head() if head is None else head
    arrays: dict[str, np.ndarray] = {
        "format_version": np.array(ASSET_FORMAT_VERSION, dtype=np.int32),
        "vertices": head.vertices,
        "faces": head.faces,
    }
    arrays.update({f"region_{k}": v for k, v in head.regions.items()})
    arrays.update({f"basis_{k}": v for k, v in head.bases.items()})
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, **arrays)
    return Path(path)


def load_head_asset(path: str | os.PathLike[str] | None = None) -> Head:
    """Read a head written by ``save_head_asset``.

    Args:
        path: the ``.npz``; None reads the shipped ``assets/synthetic_head.npz`` and, where it is not
            there (an installed package), builds the same head with ``build_head()``.

    Raises:
        TemplateError: ``path`` is missing, unreadable or lacks a key.
    """
    if path is None:
        if not default_asset_path().is_file():
            return build_head()
        path = default_asset_path()
    p = Path(path)
    if not p.is_file():
        raise TemplateError(f"{p}: no such head asset; regenerate it with talkface.synthetic.save_head_asset")
    try:
        with np.load(p, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as e:
        raise TemplateError(f"{p}: cannot read the head asset ({e}); regenerate it") from e
    missing = [k for k in ("vertices", "faces", *(f"region_{r}" for r in REGION_NAMES),
                           *(f"basis_{b}" for b in BASIS_NAMES)) if k not in data]
    if missing:
        raise TemplateError(f"{p}: head asset lacks {missing}; regenerate it with save_head_asset")
    return Head(
        vertices=data["vertices"].astype(np.float32),
        faces=data["faces"].astype(np.int32),
        regions={k[len("region_"):]: v.astype(np.int32) for k, v in data.items() if k.startswith("region_")},
        bases={k[len("basis_"):]: v.astype(np.float32) for k, v in data.items() if k.startswith("basis_")},
    )
