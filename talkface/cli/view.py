"""``talkface view``: see an animation (or your own voice, live) in the browser, served from this machine."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from talkface.cli.common import console, device_flag, err, finite_flag, handle_errors, positive_flag

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
INSTALL_HINT = "the viewer's web server is an optional extra: pip install 'talkface[view]'"


@handle_errors
def view(
    animation: Annotated[Path | None, typer.Argument(exists=True, resolve_path=True,
                                                     help="A .npz/.npy/.glb/.gltf animation, or a folder of them.")] = None,
    audio: Annotated[Path | None, typer.Option(exists=True, dir_okay=False, resolve_path=True, help="Audio to play (default: the one recorded in the animation).")] = None,
    compare: Annotated[Path | None, typer.Option(exists=True, dir_okay=False, resolve_path=True, help="Ground truth: shown beside, or as an error map in mm.")] = None,
    template: Annotated[Path | None, typer.Option(exists=True, dir_okay=False, resolve_path=True, help="Mesh with the faces (for .npy input, or live).")] = None,
    fps: Annotated[float | None, typer.Option(callback=positive_flag, help="Frame rate (required for .npy).")] = None,
    regions: Annotated[Path | None, typer.Option(exists=True, resolve_path=True, help="Region file with the lip vertices, for the lip error (default: the run's or the dataset's).")] = None,
    live: Annotated[bool, typer.Option("--live", help="Live mode: the page sends the microphone, the face follows.")] = False,
    checkpoint: Annotated[Path | None, typer.Option(exists=True, resolve_path=True, help="Live: run folder or .safetensors.")] = None,
    style: Annotated[str | None, typer.Option(help="Live: the starting style (a training speaker or a mix A:0.7,B:0.3).")] = None,
    lookahead_ms: Annotated[float, typer.Option(callback=finite_flag, help="Live: the starting look-ahead in ms.")] = 200.0,
    hop_ms: Annotated[float | None, typer.Option(callback=positive_flag, help="Live: least new audio per pass, ms (default: measured).")] = None,
    subject: Annotated[str | None, typer.Option(help="Live: whose neutral face (default: the style's).")] = None,
    device: Annotated[str, typer.Option("--device", callback=device_flag, help="Live: cpu (default), auto, cuda or cuda:N.")] = "cpu",
    host: Annotated[str, typer.Option(help="Address to listen on; anything but 127.0.0.1 exposes the server to others.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port; 0 picks a free one.")] = 0,
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Print the URL instead of opening a browser.")] = False,
) -> None:
    """Serve a page that plays an animation with its audio (or your microphone, --live) and open it.

    The audio clock drives the frames (frame = floor(time x fps)). Controls: play/pause, scrub, speed,
    loop, orbit, wireframe; with --compare, ground truth beside or an error map. Ctrl-C stops the server.
    """
    from talkface.errors import ConfigError, TemplateError

    if live:
        if animation is not None or compare is not None or audio is not None:
            raise typer.BadParameter("--live takes no ANIMATION, --audio or --compare", param_hint="--live")
        if checkpoint is None or style is None:
            raise typer.BadParameter("--live needs --checkpoint RUN and --style S", param_hint="--live")
    elif animation is None:
        raise typer.BadParameter("give an ANIMATION (file or folder), or --live --checkpoint RUN --style S",
                                 param_hint="ANIMATION")
    elif animation.is_dir() and (audio is not None or compare is not None):
        raise typer.BadParameter("--audio and --compare go with one file, not a folder", param_hint="--audio/--compare")
    elif compare is not None and animation.suffix.lower() in (".glb", ".gltf"):
        raise typer.BadParameter("--compare needs a .npz or .npy animation (a GLB is drawn as it is)",
                                 param_hint="--compare")
    try:
        from talkface.view import server
    except ImportError as e:
        raise ConfigError(f"{INSTALL_HINT} ({e})") from None
    from talkface.view.catalog import Catalog, ViewOptions, folder_items
    from talkface.view.live import LiveOptions, open_live_stream

    if host not in LOOPBACK_HOSTS:
        err.print(f"[yellow]warning:[/] --host {host}: the viewer (and the files it serves) can be reached from "
                  "other machines; it has no login", highlight=False)
    if live:
        from talkface.cli import common

        common.use_threads(None)
        options = LiveOptions(checkpoint, style, lookahead_ms=lookahead_ms, hop_ms=hop_ms, subject=subject,
                              template=template, device=device)
        setup = open_live_stream(options, style, lookahead_ms)
        if setup.faces is None:
            raise TemplateError(f"--checkpoint {checkpoint}: the run has no mesh faces to draw; pass --template MESH")
        state = server.ViewerState(None, options, setup)
        what = f"live: {setup.style} at {setup.fps:g} fps, look-ahead {lookahead_ms:g} ms"
    else:
        paths = folder_items(animation) if animation.is_dir() else [animation]
        catalog = Catalog(paths, ViewOptions(audio=audio, compare=compare, template=template, fps=fps, regions=regions))
        if len(paths) == 1 and not animation.is_dir():
            item = catalog.get("0")
            if item.error is not None:
                raise TemplateError(item.error)
        state = server.ViewerState(catalog)
        what = f"{len(paths)} animation{'s' if len(paths) > 1 else ''}" if animation.is_dir() else animation.name

    def on_ready(url: str) -> None:
        console.print(f"talkface view ({what}): {url}", highlight=False, soft_wrap=True)
        err.print("press Ctrl-C to stop", highlight=False)
        sys.stdout.flush()
        if not no_browser:
            import webbrowser

            webbrowser.open(url)

    try:
        server.serve(state, host, port, on_ready)
    except OSError as e:
        raise ConfigError(f"cannot listen on {host}:{port} ({e.strerror}); pass another --port, or 0 for a free one"
                          ) from None
