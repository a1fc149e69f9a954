"""Benchmark ``talkface view``: does the page keep up with 30 fps playback of a FLAME-sized mesh?

A 5023-vertex mesh (FLAME's template from /work/shared/fixtures/flame when it is there, read and never
copied; else talkface's synthetic head built with 84 columns, 5032 vertices) moves every vertex every
frame for SECONDS at 30 fps with a tone of the same length. ``talkface view`` serves it; headless
Chromium (Selenium, the system chromium; WebGL on SwiftShader, i.e. the CPU) plays it from 0 by the
audio clock. The page counts the frames it drew and the late ones: frames the audio clock skipped past
before the page could draw them (``state.late``).

``--screenshot PATH`` also saves the README's picture: the synthetic head (talkface's own mesh) beside a
ground truth at half its jaw amplitude, mouth open.

Writes the "## Viewer" section of docs/benchmarks.md unless --no-write. Examples::

    python benchmarks/view.py --seconds 10                      # the measurement (run alone on the machine)
    python benchmarks/view.py --seconds 2 --no-write            # a quick check that it runs
    python benchmarks/view.py --seconds 2 --no-write --screenshot docs/view.png
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from _docs import cpu_name, write_section  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from view_helpers import ViewServer, jaw_animation, start_browser, wait_for  # noqa: E402

from talkface.io.animation import Animation, save_animation  # noqa: E402
from talkface.io.audio import write_wav  # noqa: E402
from talkface.synthetic.head import build_head  # noqa: E402

FLAME = Path("/work/shared/fixtures/flame/flame_template.npz")
FPS = 30.0
WINDOW = (1280, 720)


def _mesh() -> tuple[np.ndarray, np.ndarray, str]:
    """(V, 3) float32 vertices, (F, 3) faces and a description."""
    if FLAME.is_file():
        with np.load(FLAME) as z:
            return z["vertices"].astype(np.float32), z["faces"].astype(np.int32), "FLAME template (5023 vertices)"
    head = build_head(84)
    return head.vertices, head.faces, f"synthetic head, 84 columns ({head.num_vertices} vertices)"


def write_moving_mesh(folder: Path, seconds: float) -> tuple[Path, str, int]:
    """Every vertex moves every frame: a smooth 2 mm wave across the face plus a 5 mm jaw-like drop below y=-0.02 m."""
    vertices, faces, what = _mesh()
    frames = round(seconds * FPS)
    t = np.arange(frames)[:, None] / FPS
    y = vertices[None, :, 1]
    wave = 0.002 * np.sin(2 * np.pi * (1.5 * t + 8 * vertices[None, :, 0]))
    drop = 0.005 * np.clip((-0.02 - y) / 0.05, 0, 1) * 0.5 * (1 - np.cos(2 * np.pi * 2 * t))
    moved = np.repeat(vertices[None], frames, axis=0)
    moved[..., 2] += wave
    moved[..., 1] -= drop
    s = np.arange(round(seconds * 16000)) / 16000
    wav = write_wav(folder / "tone.wav", (0.2 * np.sin(2 * np.pi * 220 * s)).astype(np.float32))
    path = save_animation(folder / "mesh.npz", Animation(moved.astype(np.float32), FPS, faces, {"audio": str(wav)}))
    return path, what, int(vertices.shape[0])


def measure(folder: Path, seconds: float = 10.0, window: tuple[int, int] = WINDOW) -> dict:
    """Play SECONDS of a FLAME-sized animation in headless Chromium; the page's counts of drawn and late frames."""
    path, what, num_vertices = write_moving_mesh(Path(folder), seconds)
    browser = start_browser(size=window)
    try:
        with ViewServer(str(path)) as server:
            browser.get(server.url)
            wait_for(browser, lambda s: s["ready"] or s["error"], 60, "loading the mesh")
            browser.execute_script("window.talkface.seek(0)")
            time.sleep(0.5)
            before = browser.execute_script("return {...window.talkface.state}")
            browser.execute_script("window.talkface.setPlaying(true)")
            wait_for(browser, lambda s: s["playing"], 10, "starting playback")
            wait_for(browser, lambda s: not s["playing"], seconds + 30, "the end of playback")
            after = browser.execute_script("const s = window.talkface.state; return {...s, timing: {...s.timing}}")
            canvas = browser.execute_script("const c = document.getElementById('canvas'); return [c.width, c.height]")
    finally:
        browser.quit()
    expected = round(seconds * FPS)
    return {"mesh": what, "num_vertices": num_vertices, "seconds": seconds, "frames_expected": expected,
            "frames_shown": after["drawn"] - before["drawn"], "late": after["late"] - before["late"],
            "canvas": canvas, "page_ms_per_tick": round(after["timing"]["busyMs"], 2),
            "browser_frame_interval_ms": round(after["timing"]["intervalMs"], 1), "error": after["error"]}


def screenshot(folder: Path, out: Path) -> None:
    """The README's picture: prediction beside ground truth, mouth open, lip error shown."""
    anim, _, head, _ = jaw_animation(Path(folder), seconds=1.0, gt_scale=0.5, name="demo")
    np.savez(Path(folder) / "regions.npz", lips=head.regions["lips"])
    browser = start_browser(size=(1100, 700))
    try:
        with ViewServer(str(anim), "--compare", str(Path(folder) / "demo_gt.npz"), "--regions",
                        str(Path(folder) / "regions.npz")) as server:
            browser.get(server.url)
            wait_for(browser, lambda s: s["ready"] or s["error"], 60, "loading")
            browser.execute_script("window.talkface.seek(0.5)")
            wait_for(browser, lambda s: s["frame"] == 15, 20, "seeking")
            time.sleep(0.5)
            out.parent.mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(str(out))
    finally:
        browser.quit()


def section(result: dict) -> str:
    load = os.getloadavg()[0]
    return (
        "## Viewer\n\n"
        "`talkface view` in headless Chromium (Debian's chromium, WebGL on SwiftShader: the CPU draws), "
        f"{result['mesh']}, every vertex moving every frame, {result['seconds']:g} s at {FPS:g} fps played by the "
        f"audio clock, canvas {result['canvas'][0]}×{result['canvas'][1]} px; {cpu_name()}, "
        f"load average {load:.1f} when measured.\n\n"
        "| frames in the clip | frames drawn | late (skipped by the clock) | page's work per tick "
        "| browser frame interval |\n"
        "|---|---|---|---|---|\n"
        f"| {result['frames_expected']} | {result['frames_shown']} | {result['late']} | "
        f"{result['page_ms_per_tick']} ms | {result['browser_frame_interval_ms']} ms |\n\n"
        "The page's own work (clock, vertex upload, normals, per-vertex shading) is the first time; the second is how "
        "often Chromium calls it (16.7 ms at 60 Hz). Frames are late when the browser's compositor, not the page, "
        "falls behind: a smaller window draws faster.\n\n"
        "Reproduce: `python benchmarks/view.py --seconds 10`.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="Playback length (default 10 s).")
    parser.add_argument("--window", type=int, nargs=2, default=WINDOW, metavar=("W", "H"),
                        help="Browser window in CSS pixels (default 1280 720; the page's panel takes 280).")
    parser.add_argument("--json", type=Path, help="Also write the result as JSON here.")
    parser.add_argument("--screenshot", type=Path, help="Also save the README's screenshot here (e.g. docs/view.png).")
    parser.add_argument("--no-write", action="store_true", help="Do not write docs/benchmarks.md.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(Path(tmp), args.seconds, tuple(args.window))
        if args.screenshot:
            screenshot(Path(tmp), args.screenshot)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if not args.no_write:
        write_section(section(result))


if __name__ == "__main__":
    main()
