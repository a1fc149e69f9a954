"""Safe file writing: every file talkface writes appears complete or not at all.

Writers get a temporary path in the destination folder (same file system, same suffix so that
format-sniffing writers such as numpy or ffmpeg behave), and the file is fsynced and renamed over
the destination only when the writer returned without an exception.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from talkface.errors import OutputError

# Failures of the destination itself (not of the data being written): reported as OutputError.
_OUTPUT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EISDIR}


def check_output_path(path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Validate that ``path`` can be written as a file.

    Args:
        path: destination file.
        overwrite: allow replacing an existing file.

    Returns:
        The path as a ``Path``.

    Raises:
        OutputError: the path is a folder, exists without ``overwrite``, or its folder is not writable.
    """
    out = Path(path)
    if out.is_dir():
        raise OutputError(f"{out}: is a folder; expected a file path (e.g. {out / 'out' }{out.suffix or '.npz'})")
    if out.exists() and not overwrite:
        raise OutputError(f"{out}: already exists; pass --overwrite to replace it or choose another path")
    parent = out.parent if str(out.parent) else Path(".")
    if parent.is_dir():
        check_writable_folder(parent, what=str(out))
    return out


def check_writable_folder(folder: Path, *, what: str | None = None) -> None:
    """Create and delete a probe file in ``folder``: os.access says yes to root even on read-only mounts.

    Raises:
        OutputError: the folder cannot be written.
    """
    probe = folder / f".talkface-probe.tmp-{os.getpid()}"
    try:
        with open(probe, "xb"):
            pass
    except FileExistsError:
        pass
    except OSError as e:
        raise OutputError(f"{what or folder}: folder {folder} is not writable ({e.strerror}); choose another "
                          "output folder") from e
    with contextlib.suppress(OSError):
        probe.unlink()


def temp_path_for(path: Path) -> Path:
    """A hidden temporary sibling of ``path`` that keeps its suffix, e.g. ``.clip.npz.tmp-123.npz``."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")


def _fsync(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; on success rename it to ``path``, else delete it.

    Raises:
        OutputError: the folder cannot be created or written.
    """
    dest = Path(path)
    if dest.is_dir():
        raise OutputError(f"{dest}: is a folder; expected a file path; choose another output path")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{dest}: cannot create folder {dest.parent} ({e.strerror}); choose another path") from e
    tmp = temp_path_for(dest)
    try:
        yield tmp
        if not tmp.exists():
            raise OutputError(f"{dest}: the writer produced no file")
        _fsync(tmp)
        os.replace(tmp, dest)
        _fsync(dest.parent)
    except OSError as e:
        if e.errno not in _OUTPUT_ERRNOS:
            raise
        raise OutputError(f"{dest}: cannot write ({e.strerror}); choose a writable output folder with free "
                          "space") from e
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically and return the path."""
    return write_bytes_atomic(path, text.encode("utf-8"))
