"""The viewer's web server: Starlette on uvicorn, bound to 127.0.0.1 unless told otherwise.

Routes (everything the page can reach; nothing else is served):

- ``/`` the page, ``/static/...`` its scripts and the vendored three.js (Starlette's ``StaticFiles``
  refuses paths that leave the folder);
- ``/api/items`` the list; ``/api/item/<id>`` one item's JSON; ``/api/item/<id>/{vertices,gt,faces}``
  little-endian float32/uint32 arrays; ``/api/item/<id>/audio``, ``/api/item/<id>/model`` the files
  themselves (ids come from ``catalog.Catalog``: the page never names a path);
- live mode: ``/api/live`` and ``/api/live/{template,faces}``, and the WebSocket ``/ws/live``.

Safety: requests must name this server as Host (a DNS-rebinding page cannot reach it); a WebSocket
must come from this server's own page (its Origin), messages over ``MAX_MESSAGE_BYTES`` close it;
an unexpected exception gives the page a one-line JSON error, its traceback goes to the terminal only.

Live protocol (text frames are JSON, binary frames are audio or frame records):
page → server ``{"type": "start", "style", "lookahead_ms", "format": "s16le"|"f32le"}``, then PCM at
16 kHz mono, then ``{"type": "end"}``; server → page ``{"type": "ready", ...}``, frame records
(``io.frames`` format) as frames become final, ``{"type": "done", "frames", "samples"}`` after the end,
``{"type": "error", "message"}`` for anything wrong (the socket stays open).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from talkface.errors import TalkfaceError
from talkface.view.catalog import AUDIO_TYPES, Catalog
from talkface.view.live import LiveOptions, LiveStream, open_live_stream

STATIC = Path(__file__).resolve().parent / "static"
MAX_MESSAGE_BYTES = 256 * 1024  # one WebSocket message: 4 s of f32 PCM; the page sends 0.1 s at a time
MAX_TEXT_BYTES = 4096
LOOPBACK = ("127.0.0.1", "localhost", "::1")
POLICY_VIOLATION, MESSAGE_TOO_BIG = 1008, 1009  # WebSocket close codes (RFC 6455)
log = logging.getLogger(__name__)
NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def _binary(array: np.ndarray, dtype: str) -> Response:
    return Response(np.ascontiguousarray(array, dtype=dtype).tobytes(), media_type="application/octet-stream",
                    headers=NO_STORE)


def _error(message: str, status: int = 404) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=NO_STORE)


class ViewerState:
    """What the routes share: the catalog (offline), or the live options and the first stream's mesh (live)."""

    def __init__(self, catalog: Catalog | None, live: LiveOptions | None = None, live_setup: Any = None) -> None:
        self.catalog = catalog
        self.live = live
        self.live_setup = live_setup


def _item(state: ViewerState, request: Request) -> Any:
    if state.catalog is None:
        return None
    return state.catalog.get(request.path_params["item_id"])


def make_app(state: ViewerState, hosts: list[str]) -> Starlette:
    """The Starlette app for ``state``; ``hosts``: the Host header values accepted (with any port)."""

    def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers=NO_STORE)

    def items(request: Request) -> Response:
        mode = "live" if state.live is not None else "offline"
        listed = [] if state.catalog is None else [it.summary() for it in state.catalog.items.values()]
        return JSONResponse({"mode": mode, "items": listed}, headers=NO_STORE)

    def item_meta(request: Request) -> Response:
        item = _item(state, request)
        if item is None:
            return _error("no such item")
        return JSONResponse(state.catalog.meta(item), headers=NO_STORE)

    def item_array(request: Request) -> Response:
        item = _item(state, request)
        which = request.path_params["which"]
        if item is None or item.data is None or which not in ("vertices", "gt", "faces"):
            return _error("no such array")
        data = item.data
        array = {"vertices": data.vertices, "gt": data.gt, "faces": data.faces}[which]
        if array is None:
            return _error("this item has no ground truth")
        return _binary(array, "<u4" if which == "faces" else "<f4")

    def item_audio(request: Request) -> Response:
        item = _item(state, request)
        if item is None or item.audio is None:
            return _error("this item has no audio")
        return FileResponse(item.audio, media_type=AUDIO_TYPES.get(item.audio.suffix.lower(), "audio/wav"))

    def item_model(request: Request) -> Response:
        item = _item(state, request)
        if item is None or item.kind != "gltf" or item.error is not None:
            return _error("no such model")
        media = "model/gltf-binary" if item.path.suffix.lower() == ".glb" else "model/gltf+json"
        return FileResponse(item.path, media_type=media, headers=NO_STORE)

    def live_meta(request: Request) -> Response:
        if state.live_setup is None:
            return _error("not in live mode; start talkface view --live")
        s = state.live_setup
        return JSONResponse({"fps": s.fps, "num_vertices": s.num_vertices, "style": s.style,
                             "styles": list(s.streamer.model.config.speakers),
                             "lookahead_ms": s.streamer.config.lookahead_ms, "hop_ms": s.hop_ms,
                             "max_message_bytes": MAX_MESSAGE_BYTES}, headers=NO_STORE)

    def live_array(request: Request) -> Response:
        s = state.live_setup
        which = request.path_params["which"]
        if s is None or which not in ("template", "faces"):
            return _error("no such array")
        return _binary(s.template, "<f4") if which == "template" else _binary(s.faces, "<u4")

    async def on_error(request: Request, exc: Exception) -> Response:
        log.exception("talkface view: %s %s failed", request.method, request.url.path)
        return _error("internal error in the viewer; the terminal that runs talkface view shows the details", 500)

    routes = [
        Route("/", index),
        Route("/favicon.ico", lambda request: Response(status_code=204)),
        Route("/api/items", items),
        Route("/api/item/{item_id}", item_meta),
        Route("/api/item/{item_id}/audio", item_audio),
        Route("/api/item/{item_id}/model", item_model),
        Route("/api/item/{item_id}/{which}", item_array),
        Route("/api/live", live_meta),
        Route("/api/live/{which}", live_array),
        WebSocketRoute("/ws/live", lambda ws: live_socket(ws, state)),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=hosts)]
    return Starlette(routes=routes, middleware=middleware, exception_handlers={Exception: on_error})


# ------------------------------------------------------------------------------------------ live socket
async def live_socket(ws: WebSocket, state: ViewerState) -> None:
    """One page's live connection: see the module docstring for the protocol."""
    # same origin: a page of another site (or a file:// page) may open sockets to 127.0.0.1 too
    if ws.headers.get("origin") != f"http://{ws.headers.get('host')}" or state.live is None:
        await ws.close(code=POLICY_VIOLATION)  # before accept: the handshake is refused (HTTP 403)
        return
    await ws.accept()
    stream: LiveStream | None = None
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            data, text = message.get("bytes"), message.get("text")
            size = len(data) if data is not None else len((text or "").encode())
            if size > (MAX_MESSAGE_BYTES if data is not None else MAX_TEXT_BYTES):
                await ws.close(code=MESSAGE_TOO_BIG, reason="message too big")
                return
            try:
                if data is not None:
                    if stream is None:
                        raise TalkfaceError("audio before a start message; send {\"type\": \"start\"} first")
                    records = await asyncio.to_thread(stream.push, data)
                    if records:
                        await ws.send_bytes(records)
                else:
                    stream = await _command(ws, state, stream, text or "")
            except TalkfaceError as e:
                await ws.send_text(json.dumps({"type": "error", "message": str(e)}))
    except WebSocketDisconnect:
        return


async def _command(ws: WebSocket, state: ViewerState, stream: LiveStream | None, text: str) -> LiveStream | None:
    """Handle one JSON command; returns the stream that is current afterwards."""
    try:
        command = json.loads(text)
        kind = command["type"]
    except (ValueError, KeyError, TypeError):
        raise TalkfaceError("a text message must be JSON with a 'type' (start or end)") from None
    if kind == "start":
        options = state.live
        style = str(command.get("style") or options.style)
        try:
            lookahead = float(command.get("lookahead_ms", options.lookahead_ms))
        except (TypeError, ValueError):
            raise TalkfaceError("lookahead_ms must be a number of milliseconds") from None
        setup = await asyncio.to_thread(open_live_stream, options, style, lookahead)
        stream = LiveStream(setup, str(command.get("format", "f32le")))
        await ws.send_text(json.dumps({"type": "ready", **stream.describe()}))
        return stream
    if kind == "end":
        if stream is not None:
            records = await asyncio.to_thread(stream.finish)
            if records:
                await ws.send_bytes(records)
            await ws.send_text(json.dumps({"type": "done", "frames": stream.emitted, "samples": stream.samples}))
        return None
    raise TalkfaceError(f"unknown message type {kind!r}; expected start or end")


# ------------------------------------------------------------------------------------------ serving
def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free port, chosen by the OS).

    Raises:
        OSError: the address is taken or not available.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(64)
    sock.set_inheritable(True)
    return sock


def serve(state: ViewerState, host: str, port: int, on_ready: Callable[[str], None]) -> None:
    """Bind, call ``on_ready(url)`` and serve until Ctrl-C.

    Raises:
        OSError: the address cannot be bound.
    """
    import uvicorn

    sock = bind(host, port)
    bound = sock.getsockname()[1]
    # on loopback only the loopback names are accepted as Host (DNS rebinding); another --host is the user's choice
    hosts = ["127.0.0.1", "localhost", "[::1]", "::1"] if host in LOOPBACK else ["*"]
    app = make_app(state, hosts)
    config = uvicorn.Config(app, log_level="warning", ws_max_size=MAX_MESSAGE_BYTES + 1024, lifespan="off",
                            ws_per_message_deflate=False)
    server = uvicorn.Server(config)
    shown = f"[{host}]" if ":" in host else host
    on_ready(f"http://{shown}:{bound}/")
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
