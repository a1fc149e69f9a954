"""Retargeting: an animation's vertex motion → blendshape weights of a rig, with a report of how well it fits.

The motion is each frame's displacement from the animation's neutral face (its template), so a rig
built on another face of the same topology (FLAME's template, a user's scan) receives the speaker's
motion. The solve (``rig.solve``) fits a region: by default the lips and jaw where the rig or the
dataset names such regions, the whole mesh otherwise. Targets that move no vertex of that region cannot
be told by the motion, nor those that move it by under a tenth of their own largest move (the tail of
a cheek or nose target): they are held at 0, with a warning naming them.

The report: the fraction of the motion explained (1 - residual energy / motion energy, on the fit
region), the RMS and maximum per-vertex residual in mm, and the RMS residual per named region, so a
poor fit says where it fails (lips, jaw, ...).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from talkface.errors import ConfigError, RigError
from talkface.io.blendshapes import ARKIT_NAMES, write_a2f_json, write_livelink_csv
from talkface.io.fileio import atomic_path, check_output_path
from talkface.io.gltf import morph_document, write_document
from talkface.io.rig import Rig, fit_rig, load_rig, symmetric_pairs
from talkface.rig.qp import Problem, SolveOptions, prepare, project
from talkface.rig.solve import LiveSolver, solve_products
from talkface.synthetic.arkit import RIG_NAME, build_arkit_rig

BUILTIN_RIGS = {RIG_NAME: build_arkit_rig}
DEFAULT_FIT_REGIONS = ("lips", "jaw", "mouth", "chin", "lower_face")
EXPLAINED_WARNING = 0.9
SUPPORT_RTOL = 0.1  # a target that moves the fit region by less than this × its largest move is not about it
WEIGHT_FORMATS = {"csv": ".csv", "json": ".json", "glb": ".glb", "gltf": ".gltf", "npz": ".npz"}  # format -> suffix
FORMAT_ALIASES = {"livelink": "csv", "a2f": "json"}
WEIGHTS_FORMAT_VERSION = 1
REPORT_BLOCK = 128  # frames per block when forming G and the residuals


@dataclass(frozen=True)
class Fit:
    """Solved weights and how well they reproduce the motion.

    Attributes:
        names: K target names.
        weights: (T, K) float32 within the bounds.
        fps: frames per second.
        region: what was fitted ("lips, jaw" or "whole mesh").
        explained: fraction of the motion energy on the fit region that the weights reproduce (1 = all).
        residual_mm: RMS per-vertex residual on the fit region over all frames, mm.
        max_residual_mm: the largest per-vertex residual on the fit region, mm.
        region_residual_mm: named region -> RMS per-vertex residual, mm (whole mesh reconstruction).
        warnings: what the user should know (unsupported targets, a poor fit and where, saturated bounds).
    """

    names: tuple[str, ...]
    weights: np.ndarray
    fps: float
    region: str
    explained: float
    residual_mm: float
    max_residual_mm: float
    region_residual_mm: dict[str, float] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def summary(self) -> str:
        return (f"explained {self.explained:.3f} of the motion on the {self.region} (residual "
                f"{self.residual_mm:.2f} mm RMS, {self.max_residual_mm:.2f} mm max)")


def rig_file(spec: str | os.PathLike[str]) -> Path | None:
    """The file or folder ``--rig`` names, for the commands' input/output path checks; None for a built-in rig
    (or a path that does not exist, which ``resolve_rig`` then refuses with its own message)."""
    path = Path(spec)
    return path.absolute() if path.exists() else None


def resolve_rig(spec: str | os.PathLike[str], *, num_vertices: int | None = None,
                reference: np.ndarray | None = None) -> Rig:
    """A rig by built-in name (``synthetic-arkit``) or from a file/folder (``io.rig.load_rig``)."""
    text = os.fspath(spec)
    if text in BUILTIN_RIGS and rig_file(text) is None:
        return fit_rig(BUILTIN_RIGS[text](), num_vertices=num_vertices, reference=reference)
    return load_rig(text, num_vertices=num_vertices, reference=reference)


def fit_indices(rig: Rig, region: str | None = None, extra_regions: dict[str, np.ndarray] | None = None
                ) -> tuple[np.ndarray, str]:
    """Vertex indices of the fit region and its label.

    Args:
        rig: the rig (its ``regions``).
        region: None for the default (lips and jaw where named, else the whole mesh), ``all`` for the whole
            mesh, or comma-separated region names.
        extra_regions: regions of the dataset or run (e.g. FLAME's masks), used beside the rig's.
    """
    regions = {**(extra_regions or {}), **rig.regions}
    if region is None:
        names = [n for n in DEFAULT_FIT_REGIONS if n in regions and len(regions[n])]
        if not names:
            return np.arange(rig.num_vertices), "whole mesh"
    elif region.strip().lower() in ("all", "whole", "mesh"):
        return np.arange(rig.num_vertices), "whole mesh"
    else:
        names = [n.strip() for n in region.split(",") if n.strip()]
        unknown = [n for n in names if n not in regions]
        if unknown or not names:
            known = ", ".join(sorted(regions)) or "none"
            raise ConfigError(f"--fit-region {region!r}: unknown region {', '.join(unknown) or '(empty)'}; the rig "
                              f"and dataset name: {known} (or 'all' for the whole mesh)")
    idx = np.unique(np.concatenate([np.asarray(regions[n], dtype=np.int64) for n in names]))
    if idx.size == 0 or idx.max() >= rig.num_vertices:
        raise RigError(f"rig {rig.source}: region {', '.join(names)} is empty or indexes past vertex "
                       f"{rig.num_vertices - 1}")
    return idx, ", ".join(names)


@dataclass(frozen=True)
class Setup:
    """A rig prepared for one fit region and one set of options (reused across clips and stream frames)."""

    rig: Rig
    problem: Problem
    indices: np.ndarray  # (N,) fit-region vertices
    supported: np.ndarray  # (K,) bool: targets that move the fit region
    region: str
    warnings: tuple[str, ...]


def setup(rig: Rig, options: SolveOptions | None = None, region: str | None = None,
          extra_regions: dict[str, np.ndarray] | None = None) -> Setup:
    """Restrict the rig to the fit region, hold unsupported targets at 0, and build the solve's Hessian."""
    options = SolveOptions() if options is None else options
    idx, label = fit_indices(rig, region, extra_regions)
    sub = rig.deltas[:, idx].reshape(rig.num_targets, -1)
    inside = np.abs(sub).max(axis=1)
    overall = np.abs(rig.deltas.reshape(rig.num_targets, -1)).max(axis=1)
    supported = inside > SUPPORT_RTOL * overall
    warnings = []
    if not supported.any():
        raise RigError(f"rig {rig.source}: no target moves the fit region ({label}); fit another region with "
                       "--fit-region (e.g. all)")
    if not supported.all():
        held = [n for n, s in zip(rig.names, supported, strict=True) if not s]
        listed = ", ".join(held[:12]) + (f", … ({len(held)} in all)" if len(held) > 12 else "")
        warnings.append(f"{len(held)} targets barely move the fit region ({label}: under {SUPPORT_RTOL:.0%} of their "
                        f"largest move) and stay at 0: {listed}")
    names = [n for n, s in zip(rig.names, supported, strict=True) if s]
    pairs = symmetric_pairs(names)
    problem = prepare(sub[supported].T, options, pairs)
    return Setup(rig, problem, idx, supported, label, tuple(warnings))


def _check_motion(vertices: np.ndarray, neutral: np.ndarray, rig: Rig, source: str) -> None:
    if vertices.ndim != 3 or vertices.shape[2] != 3 or vertices.shape[0] == 0:
        raise RigError(f"{source}: vertices have shape {vertices.shape}; expected (T, V, 3) with T >= 1")
    if vertices.shape[1] != rig.num_vertices:
        raise RigError(f"{source} has {vertices.shape[1]} vertices, rig {rig.source} {rig.num_vertices}: a rig must "
                       "be on the animation's topology (same vertex count and order)")
    if neutral.shape != (rig.num_vertices, 3):
        raise RigError(f"{source}: its neutral face has shape {neutral.shape}; expected ({rig.num_vertices}, 3) "
                       "(pass --neutral MESH with the animation's topology)")
    bad = ~np.isfinite(vertices).all(axis=(1, 2))
    if bad.any():
        raise RigError(f"{source}: frame {int(np.flatnonzero(bad)[0])} has non-finite vertices (NaN or inf); "
                       "nothing to retarget there — re-export the animation")
    if not np.isfinite(neutral).all():
        raise RigError(f"{source}: its neutral face has non-finite vertices (NaN or inf)")


def retarget(vertices: np.ndarray, neutral: np.ndarray, prepared: Setup, *, fps: float,
             source: str = "animation", extra_regions: dict[str, np.ndarray] | None = None) -> Fit:
    """Solve the weights of every frame and report the fit.

    Args:
        vertices: (T, V, 3) float32 animation, metres (the rig's unit).
        neutral: (V, 3) the animation's neutral face (its template); displacements are taken from it.
        prepared: from ``setup``.
        fps: frames per second.
        source: the animation's name for messages.
        extra_regions: regions for the per-region residual report beside the rig's.

    Returns:
        The ``Fit`` (weights of unsupported targets are 0).
    """
    rig = prepared.rig
    vertices = np.asarray(vertices)
    neutral = np.asarray(neutral, dtype=np.float32)
    _check_motion(vertices, neutral, rig, source)
    num, k = vertices.shape[0], rig.num_targets
    # Pass 1, in blocks of frames (memory stays at a block): the products G = D·A over the fit region.
    whole = prepared.indices.size == rig.num_vertices  # the whole mesh in order: no gather needed
    sub_neutral = (neutral if whole else neutral[prepared.indices]).reshape(-1)
    g = np.empty((num, prepared.problem.num_targets))
    energy = 0.0
    for s in range(0, num, REPORT_BLOCK):
        block = vertices[s:s + REPORT_BLOCK]
        d = (block if whole else block[:, prepared.indices]).reshape(block.shape[0], -1) - sub_neutral
        g[s:s + REPORT_BLOCK], sumsq = project(d, prepared.problem, sum_of_squares=True)
        energy += sumsq
    weights = np.zeros((num, k), dtype=np.float64)
    weights[:, prepared.supported] = solve_products(prepared.problem, g)
    # Pass 2: the report (float32 reconstruction; mm-level figures), whole mesh for the per-region residuals.
    flat = rig.deltas.reshape(k, -1)
    sq = np.empty((num, rig.num_vertices), dtype=np.float32)  # squared per-vertex residual, m²
    for s in range(0, num, REPORT_BLOCK):
        recon = (weights[s:s + REPORT_BLOCK].astype(np.float32) @ flat).reshape(-1, rig.num_vertices, 3)
        recon -= vertices[s:s + REPORT_BLOCK]
        recon += neutral
        np.square(recon, out=recon)
        sq[s:s + REPORT_BLOCK] = recon.sum(axis=2)
    fit_sq = sq if whole else sq[:, prepared.indices]
    explained = 1.0 - float(fit_sq.sum(dtype=np.float64)) / energy if energy > 0 else 1.0
    regions = {**(extra_regions or {}), **rig.regions}
    per_region = {name: float(np.sqrt(sq[:, idx].mean(dtype=np.float64)) * 1000)
                  for name, idx in regions.items() if len(idx)}
    warnings = list(prepared.warnings)
    if energy == 0:
        warnings.append(f"{source} does not move on the fit region ({prepared.region}): every weight is 0")
    elif explained < EXPLAINED_WARNING:
        worst = max(per_region, key=per_region.get) if per_region else prepared.region
        warnings.append(f"rig {rig.source} cannot follow this motion: it explains {explained:.2f} of it (< "
                        f"{EXPLAINED_WARNING}); the residual is largest on the {worst} "
                        f"({per_region.get(worst, float('nan')):.2f} mm RMS). Add targets that move there, or fit "
                        "another region with --fit-region")
    hi = prepared.problem.options.upper
    at_hi = (weights[:, prepared.supported] >= hi - 1e-9).mean(axis=0)
    names = [n for n, s in zip(rig.names, prepared.supported, strict=True) if s]
    saturated = [f"{n} ({100 * f:.0f}% of frames)" for n, f in zip(names, at_hi, strict=True) if f > 0.05 and energy]
    if saturated:
        warnings.append(f"weights held at the upper bound {hi:g}: {', '.join(saturated[:6])}; the motion goes "
                        "further than these targets — widen --bounds or scale the targets")
    return Fit(names=rig.names, weights=weights.astype(np.float32), fps=float(fps), region=prepared.region,
               explained=explained, residual_mm=float(np.sqrt(fit_sq.mean(dtype=np.float64)) * 1000),
               max_residual_mm=float(np.sqrt(fit_sq.max()) * 1000), region_residual_mm=per_region,
               warnings=tuple(warnings))


class LiveRetargeter:
    """Frame-by-frame weights for a stream (``LiveSolver``: causal smoothness), on a prepared rig."""

    def __init__(self, prepared: Setup, neutral: np.ndarray) -> None:
        self.prepared = prepared
        self.neutral = np.asarray(neutral, dtype=np.float32)[prepared.indices].reshape(-1)
        self.solver = LiveSolver(prepared.problem)

    def push(self, vertices: np.ndarray) -> np.ndarray:
        """(n, V, 3) final frames → (n, K) float32 weights (0 for unsupported targets)."""
        d = np.asarray(vertices, dtype=np.float32)[:, self.prepared.indices].reshape(len(vertices), -1) - self.neutral
        out = np.zeros((len(vertices), self.prepared.rig.num_targets), dtype=np.float32)
        out[:, self.prepared.supported] = self.solver.push(d)
        return out


# ------------------------------------------------------------------------------------------ outputs
def weights_format(path: Path, fmt: str | None = None) -> str:
    """The output format key (``csv``, ``json``, ``glb``, ``gltf``, ``npz``) from ``--format`` or the suffix."""
    if fmt is not None:
        key = FORMAT_ALIASES.get(fmt.strip().lower(), fmt.strip().lower())
        if key not in WEIGHT_FORMATS:
            raise ConfigError(f"--format {fmt!r} is unknown for rig weights; use one of "
                              "livelink (Live Link Face CSV), a2f (Audio2Face-style JSON), glb, gltf or npz")
        return key
    suffix = path.suffix.lower()
    for key, ext in WEIGHT_FORMATS.items():
        if ext == suffix:
            return key
    raise ConfigError(f"--out {path}: unknown rig output format {suffix or '(no suffix)'!r}; use .csv (Live Link "
                      "Face), .json (Audio2Face-style), .glb/.gltf (rig with named targets) or .npz, or --format")


def check_livelink_names(rig: Rig, flag: str = "--out") -> None:
    """Live Link Face carries ARKit's 52 curves: refuse a rig whose names are not ARKit names."""
    arkit = {n.lower() for n in ARKIT_NAMES}
    foreign = [n for n in rig.names if n.lower() not in arkit]
    if foreign:
        raise ConfigError(f"{flag}: Live Link Face carries the 52 ARKit curves, but rig {rig.source} has targets "
                          f"that are not ARKit names ({', '.join(foreign[:5])}{', …' if len(foreign) > 5 else ''}); "
                          "rename them (jawOpen, mouthSmileLeft, …) or write .json, .glb or .npz")


def write_fit(path: str | os.PathLike[str], fit: Fit, rig: Rig, *, fmt: str | None = None,
              overwrite: bool = False, meta: dict[str, Any] | None = None) -> Path:
    """Write the weights: Live Link Face CSV, Audio2Face-style JSON, a GLB/glTF of the rig animated, or .npz."""
    p = Path(path)
    key = weights_format(p, fmt)
    check_output_path(p, overwrite=overwrite)
    if key == "csv":
        check_livelink_names(rig)
        return write_livelink_csv(p, fit.weights, fit.names, fit.fps)
    if key == "json":
        return write_a2f_json(p, fit.weights, fit.names, fit.fps)
    if key in ("glb", "gltf"):
        extras = {"rig": rig.source, "explained": fit.explained, "residual_mm": fit.residual_mm,
                  **{k: v for k, v in (meta or {}).items() if isinstance(v, (str, int, float))}}
        doc, data = morph_document(rig.neutral, rig.faces, rig.deltas, list(rig.names), fit.weights, fit.fps,
                                   name=p.stem or "talkface", extras=extras)
        return write_document(p, doc, data, binary=key == "glb")
    import json

    info = {"format": "talkface-weights", "version": WEIGHTS_FORMAT_VERSION, "rig": rig.source, "region": fit.region,
            "explained": fit.explained, "residual_mm": fit.residual_mm, **(meta or {})}
    with atomic_path(p) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, names=np.array(fit.names), weights=fit.weights, fps=np.float64(fit.fps),
                     meta=np.array(json.dumps(info)))
    return p
