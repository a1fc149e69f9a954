"""``talkface animate`` and ``talkface render``: speech to animation files, animation to mp4."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from talkface.cli import common
from talkface.cli.common import (
    DeviceOpt,
    InFile,
    OverwriteOpt,
    StepTimer,
    ThreadsOpt,
    VerboseOpt,
    console,
    err,
    handle_errors,
    positive_flag,
    progress_bar,
)
from talkface.cli.rig import BoundsOpt, FitRegionOpt, L2Opt, RigOpt, SmoothOpt, SymmetryOpt, report_fit, solve_options
from talkface.io.fileio import check_paths


@handle_errors
def animate(
    audio: Annotated[list[Path], typer.Argument(exists=True, resolve_path=True, help="Audio files or folders.")],
    checkpoint: Annotated[Path, typer.Option(exists=True, resolve_path=True, help="Run folder or .safetensors.")],
    style: Annotated[str, typer.Option(help="Training speaker, a mix A:0.7,B:0.3, or 'all'.")],
    out: Annotated[Path, typer.Option(resolve_path=True, help="Output file (one input; format by suffix) or folder.")],
    subject: Annotated[str | None, typer.Option(help="Whose neutral face to animate (default: the style's).")] = None,
    template: Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="Any mesh with the model's vertex count.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="Files written into an --out folder: npz, npy, obj, glb or gltf.")]
    = "npz",
    render: Annotated[bool, typer.Option("--render", help="Also render an mp4 with the audio.")] = False,
    rig: RigOpt = None,
    bounds: BoundsOpt = "0,1",
    l2: L2Opt = 0.0,
    smooth: SmoothOpt = 0.0,
    symmetry: SymmetryOpt = 0.0,
    fit_region: FitRegionOpt = None,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    overwrite: OverwriteOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Animate speech in a chosen speaker's style (.npz, FaceFormer .npy, an OBJ folder, or glTF/GLB).

    With --rig, --out gets the rig's blendshape weights instead: .csv (Live Link Face), .json
    (Audio2Face-style), .glb/.gltf (the rig with named targets, animated) or .npz (--format livelink, a2f,
    glb, gltf, npz for a folder).
    """
    step = StepTimer(verbose)
    options = solve_options(bounds, l2, smooth, symmetry) if rig is not None else None
    if rig is None and (bounds, l2, smooth, symmetry, fit_region) != ("0,1", 0.0, 0.0, 0.0, None):
        raise typer.BadParameter("--bounds, --l2, --smooth, --symmetry and --fit-region need --rig RIG",
                                 param_hint="--rig")
    common.use_threads(threads)
    step("import torch")
    from talkface import workflows

    step("import talkface")
    inputs = workflows.expand_audio_inputs(audio)
    results = workflows.animate_files(inputs, checkpoint=checkpoint, style=style, out=out, subject=subject,
                                      template=template, device=device, overwrite=overwrite, render=render,
                                      fmt=fmt, rig=rig, solve=options, fit_region=fit_region, on_step=step)
    failed = 0
    for r in results:
        for fit in r.fits:
            report_fit(fit, r.audio.name)
        if r.error is None:
            out_paths = ", ".join(str(p) for p in r.outputs)
            console.print(f"[green]ok[/] {r.audio.name} → {out_paths}")
        else:
            failed += 1
            message = common.name_the_flag(r.error, {"out": "--out", "template": "--template", "audio": "AUDIO"},
                                           {"out": out, "template": template, "audio": audio})
            err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)


def _render_config(size: int, background: str, msaa: bool, shading: str = "fast") -> Any:
    from talkface.render import RenderConfig, parse_background

    return RenderConfig(size=size, background=parse_background(background), msaa=msaa, shading=shading)


@handle_errors
def render(
    animation: InFile,
    out: Annotated[Path, typer.Option(resolve_path=True, help="Output .mp4.")],
    audio: Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="Audio to mux in.")] = None,
    template: Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="Mesh with the faces (for .npy input).")] = None,
    fps: Annotated[float | None, typer.Option(callback=positive_flag, help="Frame rate (required for .npy).")] = None,
    size: Annotated[int, typer.Option(help="Image size in pixels (square).")] = 800,
    background: Annotated[str, typer.Option(help="black, white or #rrggbb.")] = "black",
    compare: Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="Ground truth, shown side by side.")] = None,
    error_map: Annotated[bool, typer.Option("--error-map", help="Colour by per-vertex error vs --compare (mm).")] = False,
    msaa: Annotated[bool, typer.Option(help="Anti-aliasing (slower on software GL).")] = False,
    shading: Annotated[str, typer.Option(help="fast (pyrender's lighting per vertex, ~6x cheaper) or pbr "
                                              "(pyrender's per-pixel shader, pixel-exact with VOCA/FaceFormer).")]
    = "fast",
    overwrite: OverwriteOpt = False,
) -> None:
    """Render an animation offscreen to an H.264 mp4 with the audio muxed in."""
    from talkface import workflows
    from talkface.data.dataset import clip_reads
    from talkface.render import render_video

    if error_map and compare is None:
        raise typer.BadParameter("--error-map needs --compare GT", param_hint="--error-map")
    check_paths({"ANIMATION": animation, "--audio": audio, "--template": template,
                 "--compare": clip_reads(compare) if compare else None}, {"--out": out},
                overwrite=overwrite)
    config = _render_config(size, background, msaa, shading)
    anim = workflows.load_animation_for_render(animation, template=template, fps=fps, need_faces=compare is None)
    gt = workflows.load_ground_truth(compare, anim, template=template) if compare else None
    with progress_bar("render", total=anim.num_frames) as update:
        path = render_video(anim, out, audio=audio, config=config, compare=gt, error_map=error_map,
                            on_progress=lambda done, total: update(completed=done, total=total), overwrite=overwrite)
    console.print(f"wrote {path}")
