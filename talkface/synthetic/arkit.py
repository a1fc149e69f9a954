"""An ARKit-52 rig for talkface's procedural head: the 52 names, each target built from the head's own geometry.

The head (``synthetic.head``) moves through four displacement bases (jaw, rounding, closure, a one-sided
smile). The rig's mouth and jaw targets are built from the same design-frame coordinates: ``jawOpen``
is the head's jaw rotation, ``mouthPressLeft + mouthPressRight`` its closure, ``mouthFunnel`` and
``mouthPucker`` split its rounding, ``mouthSmileLeft`` is its smile and the other mouth targets are
smooth bumps around the lips and corners (frown, dimple, stretch, roll, shrug, lower-down, upper-up,
left/right), so speech motion on this head is represented almost exactly with weights in [0, 1].

Eyes, brows, cheeks and nose are simple local bumps (a blink lowers the upper eyelid region, a brow
raise lifts the forehead above one eye, ...). They are real targets (no target equals the neutral), but
talkface's motion never moves those regions, so a solve fitted to the lips and jaw leaves them at 0.
``tongueOut`` pushes the lower lip forward: the head has no tongue.

Every target is a different shape, so no weight is ambiguous (``io.rig.check_rig`` verifies it).
"""

from __future__ import annotations

import numpy as np

from talkface.io.blendshapes import ARKIT_NAMES
from talkface.io.rig import Rig, make_rig
from talkface.synthetic.head import (
    EYE_Y,
    MOUTH_HALF_WIDTH,
    MOUTH_Y,
    _build_geometry,
    _gauss,
    _jaw_basis,
    _labels,
    _lip_bases,
    _regions,
)

RIG_NAME = "synthetic-arkit"
JAW_SCALE = 1.25  # jawOpen = 1 opens the lower lip 1.25 × the head's jaw basis (about 19 mm)
PRESS_SCALE = 1.25  # mouthPressLeft + mouthPressRight = 0.8 is the head's full closure
ROUND_SCALE = 1.3  # mouthFunnel/Pucker = 1 rounds 1.3 × the head's basis (speakers reach up to ~1.25)


def _bump(lab, cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
    """(V,) Gaussian bump on the face around design-frame (cx, cy), metres."""
    return _gauss(((lab.x - cx) / sx) ** 2 + ((lab.y - cy) / sy) ** 2) * lab.frontness


def _vec(weight: np.ndarray, dx: float, dy: float, dz: float) -> np.ndarray:
    return np.stack([dx * weight, dy * weight, dz * weight], axis=1)


def _mirror(delta: np.ndarray, lab, mirror_index: np.ndarray) -> np.ndarray:
    """The left-right mirror image of a displacement field (x negated, read at the mirrored vertex)."""
    out = delta[mirror_index].copy()
    out[:, 0] *= -1
    return out


def _mirror_index(vertices: np.ndarray) -> np.ndarray:
    """For each vertex, the vertex nearest its mirror image through x = 0."""
    from scipy.spatial import cKDTree

    mirrored = vertices * np.array([-1.0, 1.0, 1.0])
    return cKDTree(vertices).query(mirrored, k=1)[1]


def _left_targets(lab, jaw_weight: np.ndarray) -> dict[str, np.ndarray]:
    """The subject's-left (+x) targets of every left/right pair; their right twins are mirrors."""
    dy = lab.y - MOUTH_Y
    corner = _bump(lab, MOUTH_HALF_WIDTH, MOUTH_Y, 0.012, 0.012)
    upper = (lab.side > 0) & (dy <= 0.012)
    lower = (lab.side < 0) & (dy >= -0.014)
    half_left = 1.0 / (1.0 + np.exp(-lab.x / 0.004))  # smooth 0 → 1 across the midline
    close = _lip_bases(lab)["lip_close"]
    eye = _bump(lab, 0.035, EYE_Y, 0.014, 0.010)
    return {
        "mouthSmileLeft": _lip_bases(lab)["smile_asym"],
        "mouthFrownLeft": _vec(_bump(lab, MOUTH_HALF_WIDTH + 0.002, MOUTH_Y, 0.013, 0.013), -0.003, -0.004, 0.002),
        "mouthDimpleLeft": _vec(corner, 0.002, 0.0, -0.003),
        "mouthStretchLeft": _vec(_bump(lab, MOUTH_HALF_WIDTH - 0.004, MOUTH_Y, 0.016, 0.010), 0.004, -0.0015, 0.0),
        "mouthPressLeft": PRESS_SCALE * close * half_left[:, None],
        "mouthLowerDownLeft": _vec(lower * _bump(lab, 0.010, MOUTH_Y, 0.014, 0.012), 0.0, -0.004, 0.0005),
        "mouthUpperUpLeft": _vec(upper * _bump(lab, 0.010, MOUTH_Y, 0.014, 0.012), 0.0, 0.004, 0.0005),
        "eyeBlinkLeft": _vec(eye * (lab.y > EYE_Y), 0.0, -0.004, 0.0),
        "eyeSquintLeft": _vec(eye * (lab.y <= EYE_Y), 0.0, 0.002, 0.0),
        "eyeWideLeft": _vec(_bump(lab, 0.035, EYE_Y + 0.006, 0.016, 0.012), 0.0, 0.002, 0.0),
        "eyeLookUpLeft": _vec(_bump(lab, 0.035, EYE_Y, 0.008, 0.006), 0.0, 0.001, 0.0),
        "eyeLookDownLeft": _vec(_bump(lab, 0.035, EYE_Y - 0.002, 0.011, 0.008), 0.0, -0.001, 0.0003),
        "eyeLookInLeft": _vec(_bump(lab, 0.030, EYE_Y, 0.008, 0.008), -0.001, 0.0, 0.0),
        "eyeLookOutLeft": _vec(_bump(lab, 0.040, EYE_Y, 0.009, 0.007), 0.001, 0.0, 0.0),
        "browDownLeft": _vec(_bump(lab, 0.032, 0.045, 0.016, 0.008), -0.0005, -0.003, 0.0),
        "browOuterUpLeft": _vec(_bump(lab, 0.045, 0.047, 0.012, 0.009), 0.0, 0.003, 0.0),
        "cheekSquintLeft": _vec(_bump(lab, 0.040, 0.0, 0.014, 0.010), 0.0, 0.003, 0.0005),
        "noseSneerLeft": _vec(_bump(lab, 0.012, MOUTH_Y + 0.032, 0.006, 0.008), 0.0, 0.003, 0.001),
        "jawLeft": _vec(jaw_weight * (1.0 + 6.0 * lab.x), 0.004, 0.0, 0.0),
        "mouthLeft": _vec(_bump(lab, 0.006, MOUTH_Y, 0.02, 0.012), 0.004, 0.0, 0.0),
    }


def _centre_targets(lab, jaw: np.ndarray, jaw_weight: np.ndarray) -> dict[str, np.ndarray]:
    dy = lab.y - MOUTH_Y
    upper = (lab.side > 0) & (dy <= 0.012)
    lower = (lab.side < 0) & (dy >= -0.014)
    mouth = _bump(lab, 0.0, MOUTH_Y, 0.022, 0.012)
    rnd = _lip_bases(lab)["lip_round"]
    g_pucker = _bump(lab, 0.0, MOUTH_Y, 0.018, 0.011)
    pucker = np.stack([-0.35 * lab.x * g_pucker, np.zeros_like(dy), 0.006 * g_pucker], 1)
    cheeks = _bump(lab, 0.045, MOUTH_Y + 0.008, 0.014, 0.016) + _bump(lab, -0.045, MOUTH_Y + 0.008, 0.014, 0.016)
    return {
        "jawOpen": JAW_SCALE * jaw,
        "jawForward": _vec(jaw_weight, 0.0, 0.0, 0.004),
        "mouthClose": np.stack([np.zeros_like(dy), -0.004 * lab.side * mouth, np.zeros_like(dy)], 1),
        "mouthFunnel": ROUND_SCALE * rnd,
        "mouthPucker": ROUND_SCALE * pucker,
        "mouthRollLower": _vec(lower * mouth, 0.0, 0.002, -0.003),
        "mouthRollUpper": _vec(upper * mouth, 0.0, -0.002, -0.003),
        "mouthShrugLower": _vec(_bump(lab, 0.0, MOUTH_Y - 0.012, 0.024, 0.016) * (lab.side <= 0), 0.0, 0.003, 0.002),
        "mouthShrugUpper": _vec(upper * _bump(lab, 0.0, MOUTH_Y + 0.004, 0.026, 0.014), 0.0, 0.0025, 0.0015),
        "browInnerUp": _vec(_bump(lab, 0.0, 0.048, 0.014, 0.010), 0.0, 0.003, 0.0),
        "cheekPuff": np.stack([0.004 * np.sign(lab.x) * cheeks, np.zeros_like(dy), 0.0012 * cheeks], 1),
        "tongueOut": _vec(lower * _bump(lab, 0.0, MOUTH_Y, 0.010, 0.008), 0.0, -0.003, 0.004),
    }


def build_arkit_rig() -> Rig:
    """The ARKit-52 rig of ``synthetic.head.build_head()`` (same vertices, order and centring). Deterministic.

    Returns:
        A checked ``Rig`` with the 52 ARKit names in Live Link Face's order, regions ``lips``, ``jaw`` (the
        vertices the jaw moves) and the head's other regions.
    """
    vertices, faces, lay = _build_geometry(52)
    lab = _labels(vertices, lay)
    jaw = _jaw_basis(vertices, lab, lay)
    jaw_norm = np.linalg.norm(jaw, axis=1)
    jaw_weight = jaw_norm / jaw_norm.max()
    targets = {**_centre_targets(lab, jaw, jaw_weight)}
    left = _left_targets(lab, jaw_weight)
    mirror = _mirror_index(vertices)
    for name, delta in left.items():
        targets[name] = delta
        targets[name[: -len("Left")] + "Right"] = _mirror(delta, lab, mirror)
    # The inner-lip flaps ride on their lip edge, as the head's own bases do.
    upper_edge = lay.grid[lay.mouth_row, lay.slit_cols]
    pairs = [(flap, upper_edge) for flap in lay.upper_flap] + [(flap, lay.lower_edge) for flap in lay.lower_flap]
    for delta in targets.values():
        for flap, edge in pairs:
            delta[flap] = delta[edge]
    missing = set(ARKIT_NAMES) - set(targets)
    if missing:  # pragma: no cover - a programming error in this module, not a user's
        raise RuntimeError(f"synthetic ARKit rig lacks {sorted(missing)}")
    regions = _regions(lab, lay)
    regions["jaw"] = np.flatnonzero(jaw_weight > 0.1).astype(np.int32)
    neutral = vertices - vertices.mean(axis=0)
    return make_rig(ARKIT_NAMES, neutral, deltas=np.stack([targets[n] for n in ARKIT_NAMES]), faces=faces,
                    regions=regions, source=RIG_NAME,
                    notes=("eye, brow, cheek and nose targets of the synthetic rig are simple local bumps; "
                           "speech never moves them",))
