"""talkface view in a real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium).

Skipped, with the reason, where no browser is installed (``.ci/run`` installs one on Debian).
"""

from __future__ import annotations

import io
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


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """One server for the offline tests: a 2 s jaw animation, a ground truth at half its amplitude, lip regions."""
    folder = tmp_path_factory.mktemp("offline")
    anim, _, head, amp = jaw_animation(folder, seconds=2.0, gt_scale=0.5)
    np.savez(folder / "regions.npz", lips=head.regions["lips"])
    with ViewServer(str(anim), "--compare", str(folder / "anim_gt.npz"), "--regions", str(folder / "regions.npz")
                    ) as server:
        yield server, head, amp


def _open(browser, server, compare: str) -> dict:
    browser.get(server.url)
    state = wait_for(browser, lambda s: s["ready"] or s["error"], 30, "loading the animation")
    browser.execute_script(f"const c = document.getElementById('compare'); c.value = '{compare}';"
                           "c.dispatchEvent(new Event('change'));")
    return state


def test_offline_page_plays_by_the_audio_clock(browser, compared):
    """Screenshots at two audio times differ around the mouth only; the frame index is floor(time x fps)."""
    server, head, amp = compared
    fps = 30.0
    state = _open(browser, server, "off")
    assert state["ready"] and not state["error"] and state["numFrames"] == 60 and state["fps"] == fps
    _seek_and_wait(browser, 1.0, fps)  # amplitude 0: mouth shut
    shut = _canvas_image(browser)
    _seek_and_wait(browser, 0.5, fps)  # amplitude 1: mouth open
    opened = _canvas_image(browser)
    assert amp[15] > 0.99 and amp[30] < 1e-9
    # what may change: the triangles whose vertices' normals change, i.e. two rings of faces around the
    # vertices the jaw moves (colours are interpolated across each triangle); projected to pixels
    moved = np.linalg.norm(head.bases["jaw_open"], axis=1) > 0
    for _ in range(2):
        moved = moved | np.isin(np.arange(moved.size), head.faces[moved[head.faces].any(axis=1)])
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
        state, audio_time, now = browser.execute_script(
            "return [window.talkface.state, document.getElementById('audio').currentTime, performance.now()]")
        if state["playing"]:
            checks += 1
            assert state["frame"] == min(59, int(np.floor(state["time"] * fps)))
            # the audio clock read now, against the frame drawn at the page's last tick: within one frame,
            # plus the frames that passed since that tick (a loaded machine delays ticks)
            since = int(np.ceil((now - state["tickAt"]) / 1000 * fps))
            assert -1 <= int(np.floor(audio_time * fps)) - state["frame"] <= 1 + since
    assert checks >= 3, "the audio did not play"


def test_compare_shows_lip_error_and_error_map(browser, compared):
    server, head, amp = compared
    _open(browser, server, "beside")
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
    """A folder: the bad file's message on the page, the good ones still open (a GLB through GLTFLoader)."""
    from talkface.io.animation import load_animation
    from talkface.io.gltf import write_gltf

    good, _, _, _ = jaw_animation(tmp_path, seconds=2.0, name="b_good")
    write_gltf(tmp_path / "c_morph.glb", load_animation(good))
    (tmp_path / "a_bad.npz").write_bytes(b"this is not an npz")
    with ViewServer(str(tmp_path)) as server:
        browser.get(server.url)
        state = wait_for(browser, lambda s: bool(s["error"]), 30, "the bad file's message")
        assert "a_bad.npz" in state["error"] and "Traceback" not in state["error"]
        shown = browser.execute_script("return document.getElementById('error').textContent")
        assert "a_bad.npz" in shown
        names = browser.execute_script("return [...document.getElementById('pick').options].map(o => o.text)")
        assert names == ["a_bad.npz", "b_good.npz", "c_morph.glb"]
        browser.execute_script("const p = document.getElementById('pick'); p.value = '1';"
                               "p.dispatchEvent(new Event('change'));")
        state = wait_for(browser, lambda s: s["ready"], 30, "opening the good file")
        assert not state["error"]
        _seek_and_wait(browser, 1.0, 30.0)
        npz_shut = _canvas_image(browser)
        browser.execute_script("const p = document.getElementById('pick'); p.value = '2';"
                               "p.dispatchEvent(new Event('change'));")
        state = wait_for(browser, lambda s: s["ready"] or bool(s["error"]), 30, "opening the GLB")
        assert not state["error"] and state["numFrames"] == 60 and state["fps"] == 30.0
        _seek_and_wait(browser, 1.0, 30.0)
        shut = _canvas_image(browser)
        _seek_and_wait(browser, 0.5, 30.0)
        assert np.abs(_canvas_image(browser) - shut).max() > 40  # the morph targets open the mouth
        assert np.abs(shut - npz_shut).mean() < 5  # the same face as the .npz (per-pixel shading vs per vertex)


@pytest.fixture(scope="module")
def live_page(tmp_path_factory):
    """A live server on a tiny run, and Chromium whose fake microphone loops mic.wav (3 s of test speech)."""
    from talkface.io.audio import write_wav

    folder = tmp_path_factory.mktemp("live")
    run = tiny_run(folder)
    wav = write_wav(folder / "mic.wav", speech(3.0))
    browser = start_browser(("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                             f"--use-file-for-fake-audio-capture={wav}"))
    try:
        with ViewServer("--live", "--checkpoint", str(run), "--style", "alice", "--hop-ms", "50") as server:
            yield server, browser, run, folder
    finally:
        browser.quit()


def test_live_microphone_frames_match_talkface_stream(live_page):
    """The page sends `seconds` of the fake microphone, then an end: the frames that come back are as many as
    ``talkface stream`` makes for that much audio, and a latency is shown."""
    from talkface import live
    from talkface.inference.stream import StreamConfig
    from talkface.io.audio import load_audio, write_wav
    from talkface.io.feed import AudioFeed, file_producer
    from talkface.io.frames import encode_frames, read_frames

    server, browser, run, folder = live_page
    seconds = 1.5
    fed = write_wav(folder / "fed.wav", speech(3.0)[: round(seconds * 16000)])
    # what `talkface stream FED --frames -` runs, in this process (a subprocess would load torch again)
    setup = live.open_stream(run, "alice", config=StreamConfig(hop_ms=50.0), hop_ms=50.0)
    records = io.BytesIO()
    feed = AudioFeed(file_producer(load_audio(fed), realtime=False))
    live.run_stream(setup.streamer, feed, lambda first, v: records.write(encode_frames(first, v)), source=str(fed))
    expected = len(list(read_frames(io.BytesIO(records.getvalue()), 10)))
    assert 40 <= expected <= 45  # about 1.5 s at 30 fps
    browser.get(f"{server.url}?seconds={seconds}&autostart=1")
    state = wait_for(browser, lambda s: s["done"] is not None or bool(s["error"]), 60, "the live stream")
    assert not state["error"], state["error"]
    state = wait_for(browser, lambda s: s["framesReceived"] == s["done"]["frames"], 10, "the last frames")
    assert state["samplesSent"] == round(seconds * 16000) == state["done"]["samples"]
    assert state["done"]["frames"] == expected and state["lastIndex"] == expected - 1
    assert state["latencyMs"] is not None and state["latencyMs"] > 0
    assert "ms" in browser.execute_script("return document.getElementById('latency').textContent")


_DROP_WAV = """
const n = 16000, bytes = new DataView(new ArrayBuffer(44 + 2 * n));
const text = (o, t) => [...t].forEach((c, i) => bytes.setUint8(o + i, c.charCodeAt(0)));
text(0, 'RIFF'); bytes.setUint32(4, 36 + 2 * n, true); text(8, 'WAVEfmt '); bytes.setUint32(16, 16, true);
bytes.setUint16(20, 1, true); bytes.setUint16(22, 1, true); bytes.setUint32(24, 16000, true);
bytes.setUint32(28, 32000, true); bytes.setUint16(32, 2, true); bytes.setUint16(34, 16, true);
text(36, 'data'); bytes.setUint32(40, 2 * n, true);
for (let i = 0; i < n; i++) bytes.setInt16(44 + 2 * i, Math.round(8000 * Math.sin(i / 16000 * 2 * Math.PI * 170)
  * Math.max(0, Math.sin(i / 16000 * 2 * Math.PI * 3.3))), true);
window.talkface.playFile(new File([bytes.buffer], 'dropped.wav', {type: 'audio/wav'}));
"""


def test_live_page_switches_reconnects_and_plays_a_dropped_file(live_page):
    server, browser, _, _ = live_page
    browser.get(server.url)  # no autostart: the microphone stays off
    wait_for(browser, lambda s: s["ready"] and s["socket"] == "open", 30, "the live page")
    browser.execute_script("window.talkface.dropSocket()")
    wait_for(browser, lambda s: s["reconnects"] >= 1 and s["socket"] == "open", 30, "reconnecting")
    browser.execute_script("document.getElementById('style').value = 'bob';"
                           "const l = document.getElementById('lookahead'); l.value = '120';")
    browser.execute_script(_DROP_WAV)  # 1 s of test speech, generated in the page, played as if live
    state = wait_for(browser, lambda s: s["done"] is not None or bool(s["error"]), 60, "the dropped file")
    assert not state["error"], state["error"]
    assert state["style"] == "bob" and state["lookaheadMs"] == 120 and state["samplesSent"] == 16000
    state = wait_for(browser, lambda s: s["framesReceived"] == s["done"]["frames"] > 0, 10, "the last frames")
    # a file the browser cannot decode: the page says so
    browser.execute_script("window.talkface.playFile(new File([new Uint8Array([1, 2, 3])], 'broken.wav'))")
    state = wait_for(browser, lambda s: bool(s["error"]), 20, "the error for a broken file")
    assert "broken.wav" in state["error"]


@pytest.mark.slow
def test_keeps_up_with_30_fps_for_a_flame_sized_mesh(tmp_path):
    """benchmarks/view.py's measurement, short: a 5023-vertex-class mesh plays 4 s at 30 fps."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import view as bench
    finally:
        sys.path.pop(0)
    result = bench.measure(tmp_path, seconds=4.0, window=(900, 600))
    assert result["frames_shown"] >= 0.9 * result["frames_expected"], result
    assert result["late"] <= 0.1 * result["frames_expected"], result
