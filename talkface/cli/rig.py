"""``talkface retarget``: an animation's vertex motion → a rig's blendshape weights (ARKit-52 or any named rig).

Also the rig options that ``animate`` and ``stream`` share (``--rig``, ``--bounds``, ``--l2``, ``--smooth``,
``--symmetry``, ``--fit-region``) and the report of a fit.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer

from talkface.cli.common import InFile, OverwriteOpt, console, err, handle_errors, number_flag, positive_flag
from talkface.io.fileio import check_paths

RigOpt = Annotated[str | None, typer.Option(
    "--rig", help="Blendshape rig: a .glb/.gltf with named morph targets, a folder (neutral.obj + <name>.obj), an "
                  ".npz (names, neutral, targets), or 'synthetic-arkit' (the demo head's ARKit-52 rig).")]
BoundsOpt = Annotated[str, typer.Option("--bounds", help="Weight bounds LOW,HIGH.")]
L2Opt = Annotated[float, typer.Option("--l2", callback=number_flag(low=0), help="Pull of the weights towards 0 "
                                      "(relative to the targets' mean energy).")]
SmoothOpt = Annotated[float, typer.Option("--smooth", callback=number_flag(low=0), help="Temporal smoothness of the "
                                          "weights (relative; live: a pull towards the previous frame).")]
SymmetryOpt = Annotated[float, typer.Option("--symmetry", callback=number_flag(low=0), help="Tie between …Left and "
                                            "…Right targets (relative).")]
FitRegionOpt = Annotated[str | None, typer.Option("--fit-region", help="Regions to fit, e.g. lips,jaw, or 'all' "
                                                  "(default: lips and jaw where named, else the whole mesh).")]


def parse_bounds(text: str) -> tuple[float, float]:
    """``"LOW,HIGH"`` → (low, high), finite with low < high; a usage error otherwise."""
    parts = [p.strip() for p in text.split(",")]
    try:
        low, high = (float(p) for p in parts)
    except ValueError:
        raise typer.BadParameter(f"expected LOW,HIGH (e.g. 0,1), got {text!r}", param_hint="--bounds") from None
    if not (math.isfinite(low) and math.isfinite(high)) or not low < high:
        raise typer.BadParameter(f"bounds must be finite with LOW < HIGH, got {text!r} (e.g. 0,1)",
                                 param_hint="--bounds")
    return low, high


def solve_options(bounds: str, l2: float, smooth: float, symmetry: float) -> Any:
    """The ``SolveOptions`` of the rig flags."""
    from talkface.rig import SolveOptions

    low, high = parse_bounds(bounds)
    return SolveOptions(lower=low, upper=high, l2=l2, smooth=smooth, symmetry=symmetry)


def report_fit(fit: Any, label: str) -> None:
    """One line of fit quality per clip on stderr, then its warnings in yellow."""
    colour = "green" if fit.explained >= 0.9 else "yellow"
    err.print(f"[{colour}]rig[/] {label}: {fit.summary()}", highlight=False, soft_wrap=True)
    for warning in fit.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)


@handle_errors
def retarget(
    animation: InFile,
    rig: Annotated[str, typer.Option("--rig", help="Blendshape rig: .glb/.gltf with named morph targets, a folder "
                                                   "(neutral.obj + <name>.obj), .npz, or 'synthetic-arkit'.")],
    out: Annotated[Path, typer.Option(resolve_path=True, help="Weights: .csv (Live Link Face take), .json "
                                                              "(Audio2Face-style), .glb/.gltf (the rig, animated), "
                                                              ".npz.")],
    fmt: Annotated[str | None, typer.Option("--format", help="livelink, a2f, glb, gltf or npz (default: by --out's "
                                                             "suffix).")] = None,
    neutral: Annotated[Path | None, typer.Option(exists=True, dir_okay=False, resolve_path=True,
                                                 help="The animation's neutral face (default: the one stored in "
                                                      "the .npz, else the rig's).")] = None,
    fps: Annotated[float | None, typer.Option(callback=positive_flag, help="Frame rate (required for .npy).")] = None,
    bounds: BoundsOpt = "0,1",
    l2: L2Opt = 0.0,
    smooth: SmoothOpt = 0.0,
    symmetry: SymmetryOpt = 0.0,
    fit_region: FitRegionOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Solve per-frame blendshape weights of RIG that reproduce ANIMATION's motion, and say how well they do."""
    from talkface.io.animation import load_animation
    from talkface.io.mesh import load_mesh
    from talkface.rig import retargeting as stage

    options = solve_options(bounds, l2, smooth, symmetry)
    key = stage.weights_format(out, fmt)
    check_paths({"ANIMATION": animation, "--rig": stage.rig_file(rig), "--neutral": neutral}, {"--out": out}, overwrite=overwrite)
    anim = load_animation(animation, fps=fps)
    num_vertices = anim.vertices.shape[1]
    base = (load_mesh(neutral, num_vertices=num_vertices).vertices if neutral is not None else anim.neutral)
    rig_obj = stage.resolve_rig(rig, num_vertices=num_vertices, reference=base)
    if base is None:
        base = rig_obj.neutral
        err.print(f"[yellow]note:[/] {animation.name} stores no neutral face; displacements are taken from the rig's "
                  "neutral (pass --neutral MESH if the animation was made on another face)", highlight=False)
    if key == "csv":
        stage.check_livelink_names(rig_obj)
    prepared = stage.setup(rig_obj, options, fit_region)
    fit = stage.retarget(anim.vertices, base, prepared, fps=anim.fps, source=str(animation))
    report_fit(fit, animation.name)
    path = stage.write_fit(out, fit, rig_obj, fmt=key, overwrite=overwrite, meta=anim.meta)
    console.print(f"wrote {path} ({fit.weights.shape[0]} frames × {len(fit.names)} weights at {fit.fps:g} fps)")
