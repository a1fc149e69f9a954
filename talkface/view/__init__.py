"""``talkface view``: a browser viewer for animations (offline) and for the live stream (microphone in).

- ``catalog``: what the viewer may show, each file under an opaque id: animations (with ground truth,
  lip errors and audio) read by talkface's own readers, and GLB/glTF files passed through.
- ``server``: the Starlette app (HTTP for the page, its assets and the binary frame data; a WebSocket
  for live mode), with the origin check and the message caps.
- ``live``: the glue between the page's PCM and talkface's streamer.
- ``static/``: the page (``index.html``, ``view.js``, ``capture.js``) and three.js, vendored.

The server stack (starlette, uvicorn) is the optional ``view`` extra; only ``server`` imports it, and
only ``talkface view`` imports ``server``. No stage of talkface imports this package.
"""
