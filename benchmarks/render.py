"""Benchmark ``render_video`` against a FaceFormer-style render loop, full pipeline, side by side.

Both pipelines turn the same clip -- the FLAME template with a 2 Hz jaw motion and a slow head nod, 6 s at
30 fps -- plus a 6 s wav into a playable H.264 mp4 with sound:

- **talkface**: ``render_video`` (one OffscreenRenderer for the clip, frames streamed into one ffmpeg
  process that encodes H.264 and muxes the AAC audio), once per ``--shadings`` (``fast``: the per-vertex
  shader of ``talkface.render.gl``, the default; ``pbr``: pyrender's own shader) and ``--presets`` (x264).
- **FaceFormer-style** (written from the facts in REFERENCE.md §6, not copied): per frame a new
  ``trimesh.Trimesh`` -> ``Mesh.from_trimesh(smooth=True)``, a new Scene with the camera and five
  directional lights, and a **new OffscreenRenderer**; frames go to an MPEG-4 part 2 file (cv2's ``mp4v``
  equivalent), then a **separate ffmpeg pass** re-encodes to H.264 yuv420p and adds the audio (the
  CodeTalker/VOCA line, ``-ac 2``).

Every run happens in a fresh interpreter (PyOpenGL fixes its platform at import) with
``PYOPENGL_PLATFORM`` set, so no platform probe is timed; the clock covers rendering, encoding and
muxing, not the interpreter start or imports. Each output is checked with ``probe_mp4`` (frame count,
audio length). Runs alternate between pipelines so that both see the same load on a shared machine.

    python benchmarks/render.py [--sizes 512 800] [--seconds 6] [--repeats 2]
        [--talkface-platforms egl osmesa] [--faceformer-platforms osmesa egl]
        [--shadings fast pbr] [--presets veryfast]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FLAME = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "flame"
FPS = 30.0


def make_clip(folder: Path, seconds: float, flame_dir: Path) -> tuple[Path, Path]:
    """Write clip.npz (the moving FLAME template) and speech.wav (a 6 s chirp) into ``folder``."""
    import soundfile as sf

    from talkface.io.animation import Animation, save_animation

    with np.load(flame_dir / "flame_template.npz") as z:
        vertices, faces = z["vertices"].astype(np.float32), z["faces"]
    with np.load(flame_dir / "flame_masks.npz") as z:
        lips = z["lips"]
    lower = lips[vertices[lips, 1] < vertices[lips, 1].mean()]
    num = int(round(seconds * FPS))
    t = np.arange(num) / FPS
    frames = np.repeat(vertices[None], num, axis=0)
    frames[:, lower, 1] -= (0.004 * (1 - np.cos(2 * np.pi * 2.0 * t)))[:, None].astype(np.float32)  # jaw, 0..8 mm
    angle = np.deg2rad(3.0) * np.sin(2 * np.pi * 0.5 * t)  # nod about x, +-3 degrees
    cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
    y, z = frames[..., 1].copy(), frames[..., 2].copy()
    frames[..., 1], frames[..., 2] = cos * y - sin * z, sin * y + cos * z
    clip = save_animation(folder / "clip.npz", Animation(frames, FPS, faces))
    rate = 16000
    s = np.arange(int(seconds * rate)) / rate
    wav = folder / "speech.wav"
    sf.write(wav, (0.2 * np.sin(2 * np.pi * (150 + 100 * s) * s)).astype(np.float32), rate)
    return clip, wav


# ---------------------------------------------------------------------------------------------------
# Workers (run in a fresh interpreter with PYOPENGL_PLATFORM set)


def run_talkface(clip: Path, wav: Path, out: Path, size: int, variant: str) -> None:
    from talkface.io.animation import load_animation
    from talkface.render import RenderConfig, render_video

    shading, preset = variant.split("/")
    animation = load_animation(clip)
    config = RenderConfig(size=size, shading=shading, preset=preset)
    render_video(animation, out, audio=wav, config=config, overwrite=True)


def run_faceformer_style(clip: Path, wav: Path, out: Path, size: int) -> None:
    import pyrender
    import trimesh

    from talkface.io.animation import load_animation
    from talkface.render.video import ffmpeg_exe

    animation = load_animation(clip)
    focal = 4754.97941935 / 2 * size / 800
    camera_pose = np.eye(4)
    camera_pose[2, 3] = 1.0
    light_poses = []
    for axis, degrees in ((None, 0), ("x", 30), ("x", -30), ("y", 30), ("y", -30)):
        pose = np.eye(4)
        a = np.deg2rad(degrees)
        c, s = np.cos(a), np.sin(a)
        about_x = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
        about_y = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
        rot = np.eye(3) if axis is None else about_x if axis == "x" else about_y
        pose[:3, 3] = rot @ camera_pose[:3, 3]  # lights move around the camera; rotation stays identity
        light_poses.append(pose)

    def frames():
        for vertices in animation.vertices:
            mesh = trimesh.Trimesh(vertices, animation.faces)
            material = pyrender.MetallicRoughnessMaterial(
                alphaMode="BLEND", baseColorFactor=[0.3, 0.3, 0.3, 1.0], metallicFactor=0.8, roughnessFactor=0.8)
            scene = pyrender.Scene(ambient_light=[0.2, 0.2, 0.2], bg_color=[0, 0, 0])
            scene.add(pyrender.Mesh.from_trimesh(mesh, material=material, smooth=True), pose=np.eye(4))
            scene.add(pyrender.IntrinsicsCamera(fx=focal, fy=focal, cx=size / 2, cy=size / 2, znear=0.01, zfar=3.0),
                      pose=camera_pose)
            for pose in light_poses:
                scene.add(pyrender.DirectionalLight(color=np.ones(3), intensity=2.0), pose=pose)
            renderer = pyrender.OffscreenRenderer(size, size)
            color, _ = renderer.render(scene, flags=pyrender.RenderFlags.SKIP_CULL_FACES)
            renderer.delete()
            yield color

    silent = out.with_name(out.stem + "-silent.mp4")
    _write_mpeg4(frames(), animation.fps, silent, size, ffmpeg_exe())
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-y", "-i", str(wav), "-i", str(silent), "-vcodec", "h264", "-ac", "2",
         "-channel_layout", "stereo", "-pix_fmt", "yuv420p", str(out)], check=True, stdin=subprocess.DEVNULL)
    silent.unlink()


def _write_mpeg4(frames, fps: float, out: Path, size: int, exe: str) -> None:
    """Pass 1 of the FaceFormer style: raw frames -> MPEG-4 part 2 (what cv2's mp4v VideoWriter makes)."""
    proc = subprocess.Popen(
        [exe, "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{size}x{size}", "-framerate",
         str(fps), "-i", "-", "-c:v", "mpeg4", "-q:v", "2", str(out)], stdin=subprocess.PIPE)
    assert proc.stdin is not None
    for frame in frames:
        proc.stdin.write(np.ascontiguousarray(frame).tobytes())
    proc.stdin.close()
    if proc.wait() != 0:
        raise RuntimeError("ffmpeg pass 1 failed")


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def worker(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    cpu_start, children_start = time.process_time(), _children_cpu_s()
    if args.worker == "talkface":
        run_talkface(args.clip, args.wav, args.out, args.size, args.variant)
    else:
        run_faceformer_style(args.clip, args.wav, args.out, args.size)
    wall = time.perf_counter() - start
    # CPU seconds of this process (llvmpipe's threads included) plus its ffmpeg children: a cost that
    # contention on a shared machine inflates far less than wall time.
    cpu = time.process_time() - cpu_start + _children_cpu_s() - children_start
    print(json.dumps({"wall_s": wall, "cpu_s": cpu}))


# ---------------------------------------------------------------------------------------------------
# Driver


def one_run(pipeline: str, platform: str, size: int, clip: Path, wav: Path, folder: Path) -> dict[str, object]:
    """One fresh-interpreter run; ``pipeline`` is ``faceformer`` or ``talkface:SHADING/PRESET``."""
    from talkface.render.video import probe_mp4

    worker, _, variant = pipeline.partition(":")
    out = folder / f"{worker}-{variant.replace('/', '-')}-{platform}-{size}.mp4"
    env = {**os.environ, "PYOPENGL_PLATFORM": platform}
    load = os.getloadavg()[0]
    result = subprocess.run(
        [sys.executable, __file__, "--worker", worker, "--variant", variant or "-", "--size", str(size),
         "--clip", str(clip), "--wav", str(wav), "--out", str(out)], env=env, capture_output=True, text=True,
        check=False)
    if result.returncode != 0:
        return {"pipeline": pipeline, "platform": platform, "size": size, "error": result.stderr.strip()[-400:]}
    timing = json.loads(result.stdout.strip().splitlines()[-1])
    info = probe_mp4(out)
    size_kib = out.stat().st_size / 1024
    out.unlink()
    return {"pipeline": pipeline, "platform": platform, "size": size, "frames": info.video_frames,
            "fps": info.video_frames / timing["wall_s"], "wall_s": timing["wall_s"], "load1": load,
            "cpu_ms_per_frame": 1000 * timing["cpu_s"] / info.video_frames,
            "audio_s": info.audio_duration, "video_s": info.video_duration, "kib": size_kib}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 800])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--talkface-platforms", nargs="*", default=["egl", "osmesa"])
    parser.add_argument("--faceformer-platforms", nargs="*", default=["osmesa", "egl"])
    parser.add_argument("--shadings", nargs="+", default=["fast", "pbr"], help="talkface RenderConfig.shading")
    parser.add_argument("--presets", nargs="+", default=["veryfast"], help="talkface x264 presets")
    parser.add_argument("--flame", type=Path, default=FLAME)
    parser.add_argument("--json", type=Path, help="also write all runs to this file")
    parser.add_argument("--worker", choices=["talkface", "faceformer"], help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--clip", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--wav", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    pipelines = [(f"talkface:{shading}/{preset}", p) for p in args.talkface_platforms for shading in args.shadings
                 for preset in args.presets]
    pipelines += [("faceformer", p) for p in args.faceformer_platforms]
    runs: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="talkface-bench-") as tmp:
        folder = Path(tmp)
        clip, wav = make_clip(folder, args.seconds, args.flame)
        print(f"clip: {args.seconds:g} s at {FPS:g} fps, FLAME template; {os.cpu_count()} CPUs", flush=True)
        for size in args.sizes:
            for repeat in range(args.repeats):
                for pipeline, platform in pipelines:
                    run = one_run(pipeline, platform, size, clip, wav, folder)
                    runs.append(run)
                    if "error" in run:
                        print(f"{size} #{repeat} {pipeline}[{platform}] FAILED: {run['error']}", flush=True)
                    else:
                        print(f"{size} #{repeat} {pipeline:26s}[{platform:6s}] {run['fps']:6.1f} fps  "
                              f"{run['wall_s']:6.1f} s  {run['cpu_ms_per_frame']:6.1f} CPU-ms/frame  "
                              f"frames {run['frames']}  audio {run['audio_s']:.3f} s  {run['kib']:6.0f} KiB  "
                              f"load1 {run['load1']:.2f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))
    summarize(runs, args.sizes, pipelines)


def summarize(runs: list[dict[str, object]], sizes: list[int], pipelines: list[tuple[str, str]]) -> None:
    targets = {512: 30.0, 800: 15.0}
    print("\n| pipeline [platform] | " + " | ".join(
        f"{s}²: best / median fps (n) | {s}²: median CPU-ms/frame" for s in sizes) + " |")
    print("|---|" + "---|---|" * len(sizes))
    best: dict[tuple[str, str, int], float] = {}
    for pipeline, platform in pipelines:
        cells = []
        for size in sizes:
            fps = [float(r["fps"]) for r in runs  # type: ignore[arg-type]
                   if (r["pipeline"], r["platform"], r["size"]) == (pipeline, platform, size) and "fps" in r]
            cpu = [float(r["cpu_ms_per_frame"]) for r in runs  # type: ignore[arg-type]
                   if (r["pipeline"], r["platform"], r["size"]) == (pipeline, platform, size) and "fps" in r]
            if fps:
                best[(pipeline, platform, size)] = max(fps)
                fps_cell = f"{max(fps):.1f} / {statistics.median(fps):.1f} ({len(fps)})"
                cells.append(f"{fps_cell} | {statistics.median(cpu):.0f}")
            else:
                cells.append("failed | –")
        print(f"| {pipeline} [{platform}] | " + " | ".join(cells) + " |")
    print()
    for size in sizes:
        theirs = best.get(("faceformer", "osmesa", size)) or max(
            (v for (p, _, s), v in best.items() if p == "faceformer" and s == size), default=None)
        target = targets.get(size)
        for pipeline, platform in pipelines:
            ours = best.get((pipeline, platform, size))
            if not pipeline.startswith("talkface") or ours is None:
                continue
            verdict = f"target {target:g} fps: {'met' if ours >= target else 'NOT met'}" if target else ""
            ratio = (f" = {ours / theirs:.1f}x FaceFormer-style ({theirs:.1f} fps; target 3x: "
                     f"{'met' if ours / theirs >= 3 else 'NOT met'})") if theirs else ""
            print(f"{size}²: {pipeline} [{platform}] best {ours:.1f} fps{ratio}; {verdict}")


if __name__ == "__main__":
    main()
