"""Helpers shared by the viewer tests and benchmarks/view.py: a test animation, the server, headless Chromium."""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from talkface.io.animation import Animation, save_animation
from talkface.io.audio import write_wav
from talkface.synthetic.head import load_head_asset

ROOT = Path(__file__).resolve().parents[1]
FOCAL_800 = 4754.97941935 / 2  # the renderer's focal length at 800 px (talkface.render.offscreen)


def jaw_animation(folder: Path, *, seconds: float = 2.0, fps: float = 30.0, head=None, name: str = "anim",
                  gt_scale: float | None = None) -> tuple[Path, Path, object, np.ndarray]:
    """The synthetic head with its jaw_open basis driven by 0.5 (1 - cos 2 pi t): shut at t = 0, 1, ...,
    open at t = 0.5, 1.5, ...; a 220 Hz tone of the same length recorded as its audio.

    Returns:
        (animation .npz, audio .wav, head, amplitude (T,)).
    """
    head = head or load_head_asset()
    frames = round(seconds * fps)
    amp = 0.5 * (1 - np.cos(2 * np.pi * np.arange(frames) / fps))
    vertices = head.vertices[None] + amp[:, None, None] * head.bases["jaw_open"][None]
    t = np.arange(round(seconds * 16000)) / 16000
    wav = write_wav(folder / f"{name}.wav", (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))
    path = save_animation(folder / f"{name}.npz",
                          Animation(vertices.astype(np.float32), fps, head.faces, {"audio": str(wav)}))
    if gt_scale is not None:
        gt = head.vertices[None] + gt_scale * amp[:, None, None] * head.bases["jaw_open"][None]
        save_animation(folder / f"{name}_gt.npz", Animation(gt.astype(np.float32), fps, head.faces))
    return path, wav, head, amp


class ViewServer:
    """``python -m talkface view ARGS --no-browser --port 0`` in a subprocess; ``url`` once it listens."""

    def __init__(self, *args: str, timeout: float = 120.0) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen([sys.executable, "-m", "talkface", "view", *args, "--no-browser", "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            for line in self.proc.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        self.url = ""
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            found = re.search(r"http://\S+/", line)
            if found:
                self.url = found.group(0)
                return
        self.stop()
        raise RuntimeError(f"talkface view did not start: {self.proc.stderr.read()[-2000:]}")

    @property
    def host_port(self) -> str:
        return self.url.split("//", 1)[1].rstrip("/")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> ViewServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def find_browser() -> tuple[str, str] | str:
    """(chromium, chromedriver) paths, or the reason there is no usable browser."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install 'talkface[dev]')"
    chromium = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        return "no Chromium with chromedriver here (Debian: apt-get install chromium chromium-driver)"
    return chromium, driver


def start_browser(extra_args: tuple[str, ...] = (), size: tuple[int, int] = (900, 600)):
    """Headless Chromium driven by Selenium through the system chromedriver (no download)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    found = find_browser()
    if isinstance(found, str):
        raise RuntimeError(found)
    chromium, driver = found
    options = Options()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--mute-audio",
                "--autoplay-policy=no-user-gesture-required", f"--window-size={size[0]},{size[1]}",
                "--enable-unsafe-swiftshader", "--use-angle=swiftshader", *extra_args):
        options.add_argument(arg)
    browser = webdriver.Chrome(service=Service(driver), options=options)
    browser.set_page_load_timeout(60)
    browser.set_script_timeout(60)
    return browser


def page_state(browser) -> dict:
    return browser.execute_script("return window.talkface ? window.talkface.state : null") or {}


def wait_for(browser, condition, timeout: float = 30.0, what: str = "the page") -> dict:
    """Poll ``condition(state)`` until true; raise with the last state (and the page's error) on timeout."""
    deadline = time.monotonic() + timeout
    state: dict = {}
    while time.monotonic() < deadline:
        state = page_state(browser)
        if state and condition(state):
            return state
        time.sleep(0.1)
    raise TimeoutError(f"{what}: condition not met in {timeout} s; last state {state}")


def speech(seconds: float, seed: int = 0) -> np.ndarray:
    """A voiced-sounding test signal (170 Hz pulses at a 3.3 Hz syllable rate plus noise), float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    voiced = np.sin(2 * np.pi * 170 * t) * np.clip(np.sin(2 * np.pi * 3.3 * t), 0, None)
    return (0.3 * voiced + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def tiny_run(folder: Path) -> Path:
    """A run folder with a random-init tiny model (the synthetic head's 3114 vertices would be slow: 10 vertices
    on a small fan of faces), its templates and faces: enough for ``talkface stream`` and ``view --live``."""
    import torch

    from talkface.config import ModelConfig
    from talkface.model import TalkFaceModel, tiny_encoder_config
    from talkface.model.checkpoint import save_checkpoint

    torch.manual_seed(0)
    config = ModelConfig(num_vertices=10, feature_dim=16, period=3, num_heads=4, num_layers=1, fps=30.0,
                         speakers=("alice", "bob"))
    model = TalkFaceModel(config, tiny_encoder_config()).eval()
    torch.nn.init.normal_(model.motion_head.weight, std=0.05)
    save_checkpoint(folder / "best.safetensors", model)
    angles = np.linspace(0, 2 * np.pi, 9, endpoint=False)
    ring = np.stack([0.05 * np.cos(angles), 0.05 * np.sin(angles), np.zeros(9)], axis=1)
    template = np.concatenate([[[0.0, 0.0, 0.02]], ring]).astype(np.float32)  # a flat cone facing the camera
    np.savez(folder / "templates.npz", alice=template, bob=template * 1.1)
    np.save(folder / "faces.npy", np.array([[0, 1 + i, 1 + (i + 1) % 9] for i in range(9)], np.int32))
    return folder
