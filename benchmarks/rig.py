"""Benchmark the rig solve (``talkface.rig``) against ``scipy.optimize.lsq_linear`` called frame by frame.

The case the issue names: one minute of a 5023-vertex animation (1800 frames at 30 fps) solved onto a
52-target rig, whole mesh fitted. The rig is built on the FLAME template (read from
``../shared/fixtures/flame/``; a procedural 5023-vertex sphere when that is absent, said in the output):
52 smooth local targets (Gaussian bumps of 1.5-3 cm around vertices of the lips, jaw and face, random
directions, a few mm). The motion is a smooth random walk of the 52 weights, about 30 % of them at 0 at
any time and some beyond 1 (so the bounds are active), plus 0.1 mm of per-vertex noise (a model's motion
is never exactly in the rig's span).

Measured, side by side in one process:
- talkface: ``rig.retargeting.setup`` (once) and ``retarget`` on all 1800 frames (the G = D·A product,
  the solve and the fit report), the best of ``--repeats``;
- lsq_linear (BVLS, and TRF, scipy's default) on the same stacked system per frame, timed on
  ``--oracle-frames`` frames and scaled to 1800; the objective of both is compared on those frames;
- live: ``LiveRetargeter.push`` one frame at a time (what ``stream --rig`` adds per final frame), median
  and p95 over 300 frames, with and without ``--smooth``.

    python benchmarks/rig.py [--frames 1800] [--oracle-frames 20] [--repeats 3] [--no-doc]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

FLAME = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "flame"


def flame_mesh() -> tuple[np.ndarray, dict[str, np.ndarray], str]:
    """(V, 3) neutral, regions, and where it came from."""
    template, masks = FLAME / "flame_template.npz", FLAME / "flame_masks.npz"
    if template.is_file() and masks.is_file():
        m = np.load(masks)
        return np.load(template)["vertices"].astype(np.float32), {k: m[k] for k in m.files}, "FLAME template"
    rng = np.random.default_rng(0)
    v = rng.normal(size=(5023, 3))
    v = 0.09 * v / np.linalg.norm(v, axis=1, keepdims=True)
    lips = np.flatnonzero((v[:, 2] > 0.06) & (np.abs(v[:, 1] + 0.03) < 0.015))
    return v.astype(np.float32), {"lips": lips}, "procedural sphere (FLAME fixture absent)"


def build_case(frames: int, seed: int = 0):
    from talkface.io.blendshapes import ARKIT_NAMES
    from talkface.io.rig import make_rig

    neutral, regions, source = flame_mesh()
    rng = np.random.default_rng(seed)
    face = regions.get("face", np.arange(len(neutral)))
    centres = np.concatenate([rng.choice(regions["lips"], 30), rng.choice(face, 22)])
    deltas = np.zeros((52, len(neutral), 3), np.float32)
    for k, c in enumerate(centres):
        radius = rng.uniform(0.015, 0.03)
        d2 = ((neutral - neutral[c]) ** 2).sum(1)
        direction = rng.normal(size=3)
        deltas[k] = (np.exp(-0.5 * d2 / radius**2)[:, None] * direction / np.linalg.norm(direction)
                     * rng.uniform(0.002, 0.006))
    rig = make_rig(ARKIT_NAMES, neutral, deltas=deltas, regions=regions, source=f"random 52-target rig on {source}")
    steps = rng.normal(scale=0.08, size=(frames, 52))
    walk = np.cumsum(steps, axis=0)
    walk -= walk.mean(0)
    weights = np.clip(0.35 + 0.5 * walk / (walk.std(0) + 1e-9) * 0.6, -0.2, 1.2)
    vertices = rig.mesh(weights) + rng.normal(scale=1e-4, size=(frames, len(neutral), 3)).astype(np.float32)
    return rig, vertices, source


def oracle_rate(rig, prepared, vertices, frames_idx, method: str) -> tuple[float, np.ndarray]:
    """Seconds per frame of lsq_linear on the stacked system, and its weights on ``frames_idx``."""
    from scipy.optimize import lsq_linear

    a = prepared.problem.basis
    k = a.shape[1]
    reg = np.linalg.cholesky(prepared.problem.q - a.T @ a)
    m = np.vstack([a, reg.T])
    d = (vertices[frames_idx] - rig.neutral[None])[:, prepared.indices].reshape(len(frames_idx), -1)
    out = []
    t0 = time.perf_counter()
    for row in d:
        out.append(lsq_linear(m, np.concatenate([row.astype(np.float64), np.zeros(k)]), bounds=(0.0, 1.0),
                              method=method).x)
    return (time.perf_counter() - t0) / len(frames_idx), np.array(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=1800)
    parser.add_argument("--oracle-frames", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-doc", action="store_true", help="print only; do not write docs/benchmarks.md")
    args = parser.parse_args()

    from talkface.rig import SolveOptions, objective, solve_weights
    from talkface.rig.retargeting import LiveRetargeter, retarget, setup

    rig, vertices, source = build_case(args.frames)
    times, solve_times = [], []
    flat = (vertices - rig.neutral[None]).reshape(args.frames, -1)  # the displacements, as retarget forms them
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        prepared = setup(rig, SolveOptions(), "all")
        fit = retarget(vertices, rig.neutral, prepared, fps=30.0)
        times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        solve_weights(prepared.problem, flat)
        solve_times.append(time.perf_counter() - t0)
    ours, solve_only = min(times), min(solve_times)
    idx = np.linspace(0, args.frames - 1, min(args.oracle_frames, args.frames)).astype(int)
    d = (vertices[idx] - rig.neutral[None]).reshape(len(idx), -1)
    rows = {}
    for method in ("bvls", "trf"):
        per_frame, w = oracle_rate(rig, prepared, vertices, idx, method)
        ref = objective(prepared.problem, d, w)
        mine = objective(prepared.problem, d, fit.weights[idx].astype(np.float64))
        rows[method] = (per_frame * args.frames, (mine - ref) / ref)
    lips = setup(rig, SolveOptions(), None)
    t0 = time.perf_counter()
    retarget(vertices, rig.neutral, lips, fps=30.0)
    lips_time = time.perf_counter() - t0
    live_rows = {}
    for smooth in (0.0, 0.5):
        live = LiveRetargeter(setup(rig, SolveOptions(smooth=smooth), None), rig.neutral)
        per = []
        for i in range(min(300, args.frames)):
            t0 = time.perf_counter()
            live.push(vertices[i:i + 1])
            per.append(time.perf_counter() - t0)
        live_rows[smooth] = (statistics.median(per) * 1e3, float(np.percentile(per, 95)) * 1e3)

    from _docs import cpu_name, write_section

    lines = [
        "## Rig solve",
        "",
        f"`python benchmarks/rig.py` ({date.today().isoformat()}, {cpu_name()}, run alone): "
        f"{args.frames} frames of a {rig.num_vertices}-vertex animation onto a {rig.num_targets}-target rig "
        f"({rig.source}), bounds [0, 1], whole mesh fitted ({len(prepared.indices)} vertices); "
        f"explained {fit.explained:.4f}, residual {fit.residual_mm:.3f} mm RMS.",
        "",
        "| solver | time for the clip | vs talkface | objective vs talkface's |",
        "|---|---:|---:|---:|",
        f"| talkface, the solve (`solve_weights`: G = D·A, PDAS + primal active set; best of {args.repeats}) | "
        f"{solve_only:.3f} s | {solve_only / ours:.2f}× | — |",
        f"| talkface, `retarget` (the solve, then the fit report over the whole mesh; best of {args.repeats}) | "
        f"{ours:.3f} s | 1× | — |",
    ]
    for method, (seconds, rel) in rows.items():
        lines.append(f"| `lsq_linear(method=\"{method}\")` per frame (timed on {len(idx)} frames, × "
                     f"{args.frames / len(idx):.0f}) | {seconds:.1f} s | {seconds / ours:.0f}× slower | "
                     f"talkface {'higher' if rel > 0 else 'lower'} by {abs(rel):.1e} (relative) |")
    lines += [
        "",
        f"With the default fit region (FLAME's `lips`, {len(lips.indices)} vertices) the same clip takes "
        f"{lips_time:.3f} s.",
        "",
        "Live (`stream --rig`): time added per final frame by `LiveRetargeter.push`, one frame at a time, "
        "lips region:",
        "",
        "| smoothing | median | p95 |",
        "|---|---:|---:|",
        *[f"| `--smooth {s:g}` | {m:.2f} ms | {p:.2f} ms |" for s, (m, p) in live_rows.items()],
        "",
        "Goals (issue #25): ≤ 0.5 s for the clip, ≥ 20× faster than `lsq_linear` frame by frame, ≤ 2 ms per "
        "live frame.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    print(f"solve only {solve_only:.3f} s, retarget {ours:.3f} s")
    if not args.no_doc:
        write_section(text)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
