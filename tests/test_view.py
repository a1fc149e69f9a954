"""talkface view without a browser: the catalog, the CLI's errors, and the server's safety (HTTP/WebSocket clients)."""

from __future__ import annotations

import http.client
import json

import numpy as np
import pytest
from typer.testing import CliRunner
from view_helpers import ViewServer, jaw_animation, speech, tiny_run

from talkface.cli.main import app
from talkface.view.catalog import Catalog, ViewOptions, audio_from_meta, folder_items

pytest.importorskip("starlette", reason="the view extra is not installed (pip install 'talkface[view]')")
pytest.importorskip("uvicorn", reason="the view extra is not installed (pip install 'talkface[view]')")
websockets = pytest.importorskip("websockets.sync.client", reason="websockets is not installed")


def test_catalog_reads_animation_gt_and_lip_errors(tmp_path):
    """Lip error per frame = max over lip vertices of |pred - gt| in mm, computed here independently."""
    anim, wav, head, amp = jaw_animation(tmp_path, seconds=1.0, gt_scale=0.5)
    np.savez(tmp_path / "regions.npz", lips=head.regions["lips"])
    catalog = Catalog([anim], ViewOptions(compare=tmp_path / "anim_gt.npz", regions=tmp_path / "regions.npz"))
    item = catalog.get("0")
    assert item.error is None and item.audio == wav
    jaw = head.bases["jaw_open"][head.regions["lips"]]
    expected = 0.5 * amp[:, None] * np.linalg.norm(jaw, axis=1)[None] * 1000
    np.testing.assert_allclose(item.data.lip_errors_mm, expected.max(axis=1), atol=1e-3)
    meta = catalog.meta(item)
    assert meta["num_frames"] == 30 and meta["fps"] == 30.0 and meta["num_vertices"] == head.num_vertices
    assert catalog.get("1") is None and catalog.get("../0") is None


def test_audio_from_meta_only_when_the_file_exists(tmp_path):
    anim, wav, _, _ = jaw_animation(tmp_path, seconds=0.5)
    assert audio_from_meta(anim) == wav
    wav.unlink()
    assert audio_from_meta(anim) is None


def test_folder_lists_animations_and_keeps_a_bad_one_as_an_error(tmp_path):
    jaw_animation(tmp_path, seconds=0.5, name="good")
    (tmp_path / "bad.npz").write_bytes(b"not a zip file")
    (tmp_path / "notes.txt").write_text("ignored")
    paths = folder_items(tmp_path)
    assert [p.name for p in paths] == ["bad.npz", "good.npz"]
    catalog = Catalog(paths, ViewOptions())
    assert "bad.npz" in catalog.get("0").error and catalog.get("1").error is None


def test_cli_bad_file_and_flag_errors(tmp_path):
    """A bad file is a clear one-line error at start (exit 1); wrong flag combinations are usage errors (2)."""
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"\x00" * 10)
    runner = CliRunner()
    result = runner.invoke(app, ["view", str(bad), "--no-browser"])
    assert result.exit_code == 1 and "bad.npz" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["view", "--no-browser"])
    assert result.exit_code == 2 and "ANIMATION" in result.output
    result = runner.invoke(app, ["view", "--live", "--no-browser"])
    assert result.exit_code == 2 and "--checkpoint" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["view", str(empty), "--no-browser"])
    assert result.exit_code == 1 and "no animation inside" in result.output


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("view")
    anim, _, _, _ = jaw_animation(folder, seconds=0.5)
    (folder / "secret.txt").write_text("not for the browser")
    with ViewServer(str(anim)) as srv:
        yield srv


def _get(server, path: str, host: str | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(*server.host_port.rsplit(":", 1), timeout=30)
    conn.putrequest("GET", path, skip_host=True)  # the path goes out exactly as written (no normalising)
    conn.putheader("Host", host or server.host_port)
    conn.endheaders()
    response = conn.getresponse()
    return response.status, response.read()


def test_serves_the_page_assets_and_arrays(server):
    status, body = _get(server, "/")
    assert status == 200 and b"talkface view" in body
    status, body = _get(server, "/static/vendor/three/build/three.module.min.js")
    assert status == 200 and len(body) > 100_000
    status, body = _get(server, "/api/item/0")
    meta = json.loads(body)
    status, body = _get(server, "/api/item/0/vertices")
    assert status == 200 and len(body) == meta["num_frames"] * meta["num_vertices"] * 12


@pytest.mark.parametrize("path", ["/../secret.txt", "/static/../secret.txt", "/static/%2e%2e/%2e%2e/pyproject.toml",
                                  "/static/..%2f..%2fpyproject.toml", "/api/item/..%2f..%2fsecret.txt",
                                  "/api/item/0/../../secret.txt", "/secret.txt", "/static/../../../../etc/passwd"])
def test_path_traversal_is_refused(server, path):
    status, body = _get(server, path)
    assert status in (400, 404) and b"not for the browser" not in body and b"root:" not in body
    assert b"[project]" not in body


def test_foreign_host_header_is_refused(server):
    """A DNS-rebinding page reaches 127.0.0.1 under its own name: the Host check refuses it."""
    status, _ = _get(server, "/api/items", host="evil.example:80")
    assert status == 400


@pytest.fixture(scope="module")
def live_server(tmp_path_factory):
    run = tiny_run(tmp_path_factory.mktemp("run"))
    with ViewServer("--live", "--checkpoint", str(run), "--style", "alice", "--hop-ms", "50") as srv:
        srv.run = run
        yield srv


def test_websocket_refuses_a_foreign_origin(live_server):
    url = f"ws://{live_server.host_port}/ws/live"
    with pytest.raises(websockets.InvalidStatus) as refused:
        websockets.connect(url, origin="http://evil.example", open_timeout=30)
    assert refused.value.response.status_code == 403
    with pytest.raises(websockets.InvalidStatus):
        websockets.connect(url, open_timeout=30)  # no Origin at all (not a page of this server)
    with websockets.connect(url, origin=f"http://{live_server.host_port}", open_timeout=30) as ws:
        ws.send(json.dumps({"type": "nonsense"}))
        assert json.loads(ws.recv(timeout=30))["type"] == "error"


def test_oversized_message_closes_the_socket(live_server):
    from websockets.exceptions import ConnectionClosed

    url = f"ws://{live_server.host_port}/ws/live"
    with websockets.connect(url, origin=f"http://{live_server.host_port}", open_timeout=30, max_size=None) as ws:
        ws.send(json.dumps({"type": "start", "style": "alice", "lookahead_ms": 100}))
        assert json.loads(ws.recv(timeout=60))["type"] == "ready"
        ws.send(b"\x00" * (1024 * 1024))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


def test_live_socket_streams_as_many_frames_as_animate(live_server):
    """PCM over the socket, then an end: frame records 0..N-1, N = the model's frame count for the samples."""
    from talkface.model.checkpoint import load_checkpoint

    audio = speech(1.2)
    url = f"ws://{live_server.host_port}/ws/live"
    records = []
    with websockets.connect(url, origin=f"http://{live_server.host_port}", open_timeout=30) as ws:
        ws.send(json.dumps({"type": "start", "style": "bob", "lookahead_ms": 150, "format": "s16le"}))
        ready = json.loads(ws.recv(timeout=60))
        assert ready["type"] == "ready" and ready["style"] == "bob" and ready["lookahead_ms"] == 150
        pcm = np.clip(np.round(audio * 32768), -32768, 32767).astype("<i2").tobytes()
        for start in range(0, len(pcm), 3200):
            ws.send(pcm[start: start + 3200])
        ws.send(json.dumps({"type": "end"}))
        while True:
            message = ws.recv(timeout=60)
            if isinstance(message, str):
                done = json.loads(message)
                break
            records.append(message)
    size = 4 + 12 * ready["num_vertices"]
    indices = [int.from_bytes(r[i: i + 4], "little") for r in records for i in range(0, len(r), size)]
    model, _ = load_checkpoint(live_server.run, device="cpu")
    assert done["type"] == "done" and done["samples"] == audio.size
    assert indices == list(range(done["frames"])) and done["frames"] == model.num_frames_for(audio.size)


def test_npy_needs_template_and_fps(tmp_path):
    """A FaceFormer-style (T, V*3) .npy: faces from --template, frame rate from --fps; without them a clear error."""
    from talkface.io.animation import load_animation
    from talkface.io.mesh import obj_text

    anim, _, head, _ = jaw_animation(tmp_path, seconds=0.5)
    vertices = load_animation(anim).vertices
    np.save(tmp_path / "pred.npy", vertices.reshape(len(vertices), -1))
    (tmp_path / "head.obj").write_text(obj_text(head.vertices, head.faces))
    item = Catalog([tmp_path / "pred.npy"], ViewOptions(template=tmp_path / "head.obj", fps=25.0)).get("0")
    assert item.error is None and item.data.fps == 25.0 and item.audio is None
    np.testing.assert_array_equal(item.data.faces, head.faces)
    np.testing.assert_allclose(item.data.vertices, vertices, atol=1e-6)
    missing = Catalog([tmp_path / "pred.npy"], ViewOptions(template=tmp_path / "head.obj")).get("0")
    assert "--fps" in missing.error


def test_cli_delegates_to_the_server_and_warns_for_another_host(tmp_path, monkeypatch):
    anim, _, _, _ = jaw_animation(tmp_path, seconds=0.5)
    calls = []
    monkeypatch.setattr("talkface.view.server.serve", lambda state, host, port, on_ready: calls.append((host, port)))
    result = CliRunner().invoke(app, ["view", str(anim), "--no-browser", "--host", "0.0.0.0", "--port", "8123"])
    assert result.exit_code == 0, result.output
    assert calls == [("0.0.0.0", 8123)] and "warning" in result.output and "other machines" in result.output
    calls.clear()
    result = CliRunner().invoke(app, ["view", str(anim), "--no-browser"])
    assert calls == [("127.0.0.1", 0)] and "warning" not in result.output


def test_cli_says_when_the_port_is_taken(tmp_path):
    import socket

    anim, _, _, _ = jaw_animation(tmp_path, seconds=0.5)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["view", str(anim), "--no-browser", "--port", str(port)])
    assert result.exit_code == 1 and f"cannot listen on 127.0.0.1:{port}" in result.output
