"""talkface view in a real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium).

Skipped, with the reason, where no browser is installed (``.ci/run`` installs one on Debian).
"""

from __future__ import annotations

import io
import subprocess
import sys
import time

import numpy as np
import pytest
from view_helpers import (
    FOCAL_800,
    ROOT,
    ViewServer,
    find_browser,
    jaw_animation,
    page_state,
    speech,
    start_browser,
    tiny_run,
    wait_for,
)

pytest.importorskip("uvicorn", reason="the view extra is not installed (pip install 'talkface[view]')")
_found = find_browser()
pytestmark = pytest.mark.skipif(isinstance(_found, str), reason=f"no browser for the viewer tests: {_found}")


@pytest.fixture(scope="module")
def browser():
    driver = start_browser()
    yield driver
    driver.quit()


def _canvas_image(browser) -> np.ndarray:
    from PIL import Image
    from selenium.webdriver.common.by import By

    png = browser.find_element(By.ID, "canvas").screenshot_as_png
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.int16)


def _seek_and_wait(browser, t: float, fps: float) -> dict:
    browser.execute_script(f"window.talkface.setPlaying(false); window.talkface.seek({t});")
    expected = int(np.floor(t * fps))
    state = wait_for(browser, lambda s: s["frame"] == expected and abs(s["time"] - t) < 1e-3, 20, f"seek to {t}")
    time.sleep(0.3)  # a few more animation frames: the canvas shows this frame
    return state


def _project(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pixel (column, row) of points seen by the page's camera: 1 m away on +z, vertical focal 2377.49 px at 800."""
    focal = height * FOCAL_800 / 800
    depth = 1.0 - points[:, 2]
    return np.stack([width / 2 + focal * points[:, 0] / depth, height / 2 - focal * points[:, 1] / depth], axis=1)


def test_offline_page_plays_by_the_audio_clock(browser, tmp_path):
    """Screenshots at two audio times differ around the mouth only; the frame index is floor(time x fps)."""
    anim, _, head, amp = jaw_animation(tmp_path, seconds=2.0)
    fps = 30.0
    with ViewServer(str(anim)) as server:
        browser.get(server.url)
        state = wait_for(browser, lambda s: s["ready"] or s["error"], 30, "loading the animation")
        assert state["ready"] and not state["error"] and state["numFrames"] == 60 and state["fps"] == fps
        _seek_and_wait(browser, 1.0, fps)  # amplitude 0: mouth shut
        shut = _canvas_image(browser)
        _seek_and_wait(browser, 0.5, fps)  # amplitude 1: mouth open
        opened = _canvas_image(browser)
        # where the jaw moved (over 0.3 mm), in pixels, with a margin for the shading of the neighbours
        moved = np.linalg.norm(head.bases["jaw_open"], axis=1) > 3e-4
        height, width = shut.shape
        cols, rows = _project(head.vertices[moved], width, height).T
        box = (slice(max(0, int(rows.min()) - 8), int(rows.max()) + 9),
               slice(max(0, int(cols.min()) - 8), int(cols.max()) + 9))
        diff = np.abs(opened - shut)
        inside = np.zeros_like(diff, dtype=bool)
        inside[box] = True
        assert (diff[inside] > 40).sum() > 100, "the mouth did not change between the two times"
        assert (diff[~inside] > 8).sum() <= 5, f"pixels outside the mouth region changed: {(diff[~inside] > 8).sum()}"
        # playback: the frame shown is the audio clock's, within one frame
        browser.execute_script("window.talkface.seek(0); window.talkface.setPlaying(true);")
        checks = 0
        for _ in range(12):
            time.sleep(0.1)
            state, audio_time = browser.execute_script(
                "return [window.talkface.state, document.getElementById('audio').currentTime]")
            if state["playing"]:
                checks += 1
                assert state["frame"] == min(59, int(np.floor(state["time"] * fps)))
                assert abs(state["frame"] - int(np.floor(audio_time * fps))) <= 1
        assert checks >= 3, "the audio did not play"
        assert amp[15] > 0.99 and amp[30] < 1e-9  # the two times chosen above


def test_compare_shows_lip_error_and_error_map(browser, tmp_path):
    anim, _, head, amp = jaw_animation(tmp_path, seconds=1.0, gt_scale=0.5)
    np.savez(tmp_path / "regions.npz", lips=head.regions["lips"])
    with ViewServer(str(anim), "--compare", str(tmp_path / "anim_gt.npz"), "--regions",
                    str(tmp_path / "regions.npz")) as server:
        browser.get(server.url)
        wait_for(browser, lambda s: s["ready"] or s["error"], 30, "loading the comparison")
        state = _seek_and_wait(browser, 0.5, 30.0)
        lips = head.bases["jaw_open"][head.regions["lips"]]
        expected = 0.5 * amp[15] * np.linalg.norm(lips, axis=1).max() * 1000
        assert state["lipErrorMm"] == pytest.approx(expected, abs=1e-3)
        assert "mm" in browser.execute_script("return document.getElementById('lip').textContent")
        beside = _canvas_image(browser)
        browser.execute_script("const c = document.getElementById('compare'); c.value = 'error';"
                               "c.dispatchEvent(new Event('change'));")
        time.sleep(0.5)
        assert browser.execute_script("return !document.getElementById('colorbar').hidden")
        assert np.abs(_canvas_image(browser) - beside).mean() > 1  # one coloured head instead of two grey ones


def test_bad_file_in_a_folder_shows_its_error_on_the_page(browser, tmp_path):
    jaw_animation(tmp_path, seconds=0.5, name="b_good")
    (tmp_path / "a_bad.npz").write_bytes(b"this is not an npz")
    with ViewServer(str(tmp_path)) as server:
        browser.get(server.url)
        state = wait_for(browser, lambda s: bool(s["error"]), 30, "the bad file's message")
        assert "a_bad.npz" in state["error"] and "Traceback" not in state["error"]
        shown = browser.execute_script("return document.getElementById('error').textContent")
        assert "a_bad.npz" in shown
        names = browser.execute_script("return [...document.getElementById('pick').options].map(o => o.text)")
        assert names == ["a_bad.npz", "b_good.npz"]
        browser.execute_script("const p = document.getElementById('pick'); p.value = '1';"
                               "p.dispatchEvent(new Event('change'));")
        state = wait_for(browser, lambda s: s["ready"], 30, "opening the good file")
        assert not state["error"]


def test_live_microphone_frames_match_talkface_stream(tmp_path):
    """Chromium's fake microphone plays a wav; the page sends `seconds` of it, then an end: the frames that
    come back are as many as ``talkface stream`` makes for that much audio, and a latency is shown."""
    from talkface.io.audio import write_wav
    from talkface.io.frames import read_frames

    run = tiny_run(tmp_path)
    seconds = 1.5
    voice = speech(3.0)
    wav = write_wav(tmp_path / "mic.wav", voice)
    fed = write_wav(tmp_path / "fed.wav", voice[: round(seconds * 16000)])
    stream = subprocess.run([sys.executable, "-m", "talkface", "stream", str(fed), "--checkpoint", str(run),
                             "--style", "alice", "--frames", "-", "--hop-ms", "50"],
                            capture_output=True, timeout=300, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert stream.returncode == 0, stream.stderr.decode()
    expected = len(list(read_frames(io.BytesIO(stream.stdout), 10)))
    browser = start_browser(("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                             f"--use-file-for-fake-audio-capture={wav}"))
    try:
        with ViewServer("--live", "--checkpoint", str(run), "--style", "alice", "--hop-ms", "50") as server:
            browser.get(f"{server.url}?seconds={seconds}&autostart=1")
            state = wait_for(browser, lambda s: s["done"] is not None or bool(s["error"]), 60, "the live stream")
            assert not state["error"], state["error"]
            state = wait_for(browser, lambda s: s["framesReceived"] == s["done"]["frames"], 10, "the last frames")
            assert state["samplesSent"] == round(seconds * 16000) == state["done"]["samples"]
            assert state["done"]["frames"] == expected and state["lastIndex"] == expected - 1
            assert state["latencyMs"] is not None and state["latencyMs"] > 0
            assert "ms" in browser.execute_script("return document.getElementById('latency').textContent")
    finally:
        browser.quit()


@pytest.mark.slow
def test_keeps_up_with_30_fps_for_a_flame_sized_mesh(tmp_path):
    """benchmarks/view.py's measurement, short: a 5023-vertex-class mesh plays 4 s at 30 fps."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import view as bench
    finally:
        sys.path.pop(0)
    result = bench.measure(tmp_path, seconds=4.0)
    assert result["frames_shown"] >= 0.9 * result["frames_expected"]
    assert result["late"] <= 0.1 * result["frames_expected"]
