"""Safe file reading and writing: every file talkface writes appears complete or not at all, never over
an input of the same command, and every file it reads fails with a typed error that names it.

Writers get a temporary path in the destination folder (same file system, same suffix so that
format-sniffing writers such as numpy or ffmpeg behave), and the file is fsynced, given the mode the
umask asks for, and renamed over the destination only when the writer returned without an exception.
Multi-file outputs (``atomic_folder``) are built in a temporary sibling folder and renamed as a whole.
``writing`` is the one place that turns a failure of the destination (disk full, read-only, quota,
denied; also when a writer such as safetensors or ffmpeg reports it in its own words) into an
``OutputError`` that says what happened and what to do. ``check_paths`` resolves a command's inputs and
outputs and refuses any overlap; ``reading`` is the one place that turns a reader's failure into a
``TalkfaceError`` naming the file, and ``reading_folder`` with ``path_kind`` the same for a whole
folder tree (a dataset: symlink loops, denied files, folders where files belong).

Over 400 lines: this is the one contract of how talkface touches files (write, read, never over an
input); the write mapping, the read mapping and the overlap check share their errno tables and path
resolution, and splitting them would put the two halves of one promise in two places.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import re
import shutil
import stat
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from talkface.errors import OutputError, TalkfaceError

# Failures of the destination itself (not of the data being written): reported as OutputError.
_OUTPUT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EISDIR}


_SPECIAL_KINDS = ((stat.S_ISFIFO, "named pipe"), (stat.S_ISCHR, "character device"),
                  (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"))


def special_file_kind(path: str | os.PathLike[str]) -> str | None:
    """``"named pipe"``, ``"character device"``, ``"block device"`` or ``"socket"`` for such a path (after
    symlinks); None for a regular file, a folder, or nothing there."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return next((name for test, name in _SPECIAL_KINDS if test(mode)), None)


def _not_a_file(path: Path, kind: str) -> OutputError:
    return OutputError(f"{path}: is a {kind}, not a file; this output is written to a new file that is renamed "
                       f"into place, which would replace the {kind}; choose a file path")


def check_output_path(path: str | os.PathLike[str], *, overwrite: bool = False, stream: bool = False) -> Path:
    """Validate that ``path`` can be written as a file.

    Args:
        path: destination file.
        overwrite: allow replacing an existing file.
        stream: the output is written as it goes, never renamed into place (``stream --frames``/``--weights``):
            an existing named pipe or character device (``/dev/null``, a FIFO a reader listens on) is
            accepted as it is, without ``overwrite``.

    Returns:
        The path as a ``Path``.

    Raises:
        OutputError: the path is a folder, a device, pipe or socket (unless ``stream`` allows it), exists
            without ``overwrite``, or its folder is not writable.
    """
    out = Path(path)
    kind = special_file_kind(out)
    if kind is not None:
        if stream and kind in ("named pipe", "character device"):
            return out
        raise _not_a_file(out, kind)
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


def _umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask can only swap it)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def output_mode(folder: bool = False) -> int:
    """The mode a new file (0o666) or folder (0o777) gets under the umask, as ``open``/``mkdir`` give it."""
    return (0o777 if folder else 0o666) & ~_umask()


def _fsync(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# What each failure of the destination means, and what to do about it.
_OUTPUT_ADVICE = {
    errno.ENOSPC: ("the disk is full", "free some space there or choose another output path on a disk with room"),
    errno.EDQUOT: ("the disk quota is used up", "free some of your space there or choose another output path"),
    errno.EROFS: ("the file system is read-only", "choose another output path on a writable disk"),
    errno.EACCES: ("permission denied", "choose an output folder you can write to"),
    errno.EPERM: ("operation not permitted", "choose an output folder you can write to"),
    errno.EISDIR: ("a folder is in the way", "remove it or choose another output path"),
}
_OS_ERROR_NUMBER = re.compile(r"\(os error (\d+)\)")  # how Rust (safetensors) quotes an errno


def output_errno(error: BaseException) -> int | None:
    """The errno of a failure to write a destination (full, read-only, quota, denied), or None.

    Recognises an ``OSError``, and the errors of writers that wrap one in their own type: safetensors'
    ``SafetensorError`` quotes it as ``(os error 28)`` in its message.
    """
    if isinstance(error, OSError):
        return error.errno if error.errno in _OUTPUT_ERRNOS else None
    if isinstance(error, TalkfaceError):
        return None
    found = _OS_ERROR_NUMBER.search(str(error))
    number = int(found.group(1)) if found else None
    return number if number in _OUTPUT_ERRNOS else None


def tool_output_errno(message: str) -> int | None:
    """The errno an external tool (ffmpeg) reports in words for its output, or None.

    A full disk, a read-only file system or a used-up quota can only come from the output; "Permission
    denied" only counts on a line about the output (it could be the tool's input otherwise).
    """
    for number in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        if os.strerror(number) in message:
            return number
    for line in message.splitlines():
        if "output" in line.lower() and os.strerror(errno.EACCES) in line:
            return errno.EACCES
    return None


def output_error(dest: str | os.PathLike[str], number: int) -> OutputError:
    """The OutputError for failing to write ``dest`` with ``number`` (an errno of ``_OUTPUT_ERRNOS``)."""
    what, todo = _OUTPUT_ADVICE.get(number, (os.strerror(number), "choose another output path"))
    said = os.strerror(number)
    what = what if what.lower() == said.lower() else f"{what} ({said})"
    kept = " (what was there is unchanged)" if Path(dest).exists() else ""
    return OutputError(f"{dest}: cannot write it: {what}{kept}; {todo}")


@contextlib.contextmanager
def writing(dest: str | os.PathLike[str]) -> Iterator[None]:
    """The one mapping of write failures: out of space, read-only, quota or denied becomes an OutputError.

    Every writer of talkface runs inside it (``atomic_path`` and ``atomic_folder`` do it for theirs; an
    appending or renaming writer wraps itself), so a full disk reads the same whatever was being
    written: which file, what happened, what to do. Other failures pass through unchanged.

    Raises:
        OutputError: naming ``dest``, from an ``OSError`` or a writer's own error type (``output_errno``).
    """
    try:
        yield
    except TalkfaceError:
        raise
    except Exception as e:
        number = output_errno(e)
        if number is None:
            raise
        raise output_error(dest, number) from e


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; on success rename it to ``path``, else delete it.

    Raises:
        OutputError: the folder cannot be created or written.
    """
    dest = Path(path)
    if dest.is_dir():
        raise OutputError(f"{dest}: is a folder; expected a file path; choose another output path")
    kind = special_file_kind(dest)
    if kind is not None:  # os.replace would put a regular file where /dev/null or a pipe was
        raise _not_a_file(dest, kind)
    try:
        with writing(dest):
            dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{dest}: cannot create folder {dest.parent} ({e.strerror}); choose another path") from e
    tmp = temp_path_for(dest)
    try:
        with writing(dest):
            yield tmp
            if not tmp.exists():
                raise OutputError(f"{dest}: the writer produced no file")
            _fsync(tmp)
            # writers that use mkstemp-like calls (safetensors, some encoders) create 0600 files; an output
            # follows the umask like any file the user makes
            os.chmod(tmp, output_mode())
            os.replace(tmp, dest)
            _fsync(dest.parent)
    finally:
        # exists() first: on a read-only file system unlinking a missing file fails with EROFS, not
        # FileNotFoundError, and would hide the OutputError above
        if tmp.exists():
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


class _RecordingFile:
    """A binary file whose failed writes are remembered, for writers that swallow them (see ``write_with``)."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.file.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.file.flush()


def write_with(path: str | os.PathLike[str], save: Callable[[Any], Any]) -> None:
    """Call ``save(file)`` on ``path`` opened for binary writing; a failed write raises its own OSError.

    torch.save reports a full disk as ``RuntimeError: ... unexpected pos`` with no errno, so
    ``writing`` could not tell it from a bug; the OSError that the file raised underneath is raised
    instead, and ``writing`` maps it like any other.
    """
    with open(path, "wb") as f:
        recorder = _RecordingFile(f)
        try:
            save(recorder)
        except Exception:
            if recorder.error is not None:
                raise recorder.error from None
            raise


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically and return the path."""
    return write_bytes_atomic(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; on success it replaces ``path`` as a whole, else it is deleted.

    A folder of many files (OBJ frames) so appears complete or not at all, also on a full disk or Ctrl-C.

    Raises:
        OutputError: ``path`` is a file, a non-empty folder without ``overwrite``, or cannot be written.
    """
    dest = Path(path)
    if dest.exists() and not dest.is_dir():
        raise OutputError(f"{dest}: is a file; expected a folder path; choose another output path")
    if dest.is_dir() and any(dest.iterdir()) and not overwrite:
        raise OutputError(f"{dest}: folder is not empty (already exists); pass --overwrite to replace it or "
                          "choose another output path")
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    old = dest.with_name(f".{dest.name}.old-tmp-{os.getpid()}")
    try:
        with writing(dest):
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
    except OSError as e:
        raise OutputError(f"{dest}: cannot create folder ({e.strerror}); choose a writable output folder") from e
    try:
        with writing(dest):
            yield tmp
            if dest.is_dir():
                os.replace(dest, old)
            os.replace(tmp, dest)
            _fsync(dest.parent)
    except OutputError as e:  # a file inside failed: name the folder the user asked for, not its temporary twin
        number = output_errno(e.__cause__) if e.__cause__ is not None else None
        if number is None:
            raise
        raise output_error(dest, number) from e.__cause__
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and dest.exists():
            shutil.rmtree(old, ignore_errors=True)
        elif old.exists():  # the rename failed: put the old folder back
            os.replace(old, dest)


# --------------------------------------------------------------------------------------------- overlaps
def _resolved(path: str | os.PathLike[str]) -> Path:
    """``path`` with every symlink followed (also of a parent of a path that does not exist yet)."""
    return Path(os.path.realpath(os.path.abspath(os.fspath(path))))


def _inside(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


PathSpec = str | os.PathLike[str] | None


@dataclass(frozen=True)
class Reads:
    """An input of which a command reads named files of a folder, not every file in it.

    A run folder is read for its checkpoint and assets, not for the reports a user keeps beside them; a
    checkpoint file brings its run folder's assets along. The module that reads the files declares them
    (``train.runs.run_reads``, ``data.dataset.dataset_reads``), so ``check_paths`` knows what it must
    never write over and what ``--overwrite`` may replace.

    Attributes:
        path: the path the user gave (named in messages): a folder or a file.
        folder: the folder ``patterns`` are relative to.
        patterns: glob patterns of the files read there, e.g. ``best.safetensors`` or ``clips/*.npz``.
    """

    path: str | os.PathLike[str]
    folder: str | os.PathLike[str]
    patterns: tuple[str, ...]

    def files(self) -> set[Path]:
        """Every file read, symlinks followed: the existing matches of ``patterns`` and ``path`` itself."""
        folder = Path(self.folder)
        found = {_resolved(match) for pattern in self.patterns for match in folder.glob(pattern)}
        return found | {_resolved(self.path)}


InputSpec = PathSpec | Reads


def check_paths(inputs: Mapping[str, InputSpec | list[InputSpec]], outputs: Mapping[str, PathSpec | list[PathSpec]],
                *, output_folders: tuple[str, ...] = (), overwrite: bool = False) -> None:
    """Refuse a command whose outputs would write over one of the files it reads, or over each other.

    Every path is resolved (symlinks followed). A plain input folder (a folder of audio or predictions,
    a raw dataset) stands for every file it holds; an input given as ``Reads`` stands for the files it
    names (a run folder's checkpoints and assets, a prepared dataset's files). An output folder (named in
    ``output_folders``: a run folder, a prepared dataset, an OBJ folder) stands for every file it will
    hold. So an output overlaps an input when it is an input file (or the input folder itself), when an
    output folder holds an input, or when it would replace an existing file of a plain input folder.
    ``--overwrite`` never lifts these. An existing file inside a ``Reads`` folder that the command does
    not read (a report kept beside a run) may be replaced, and only with ``overwrite``. Two outputs
    collide when they resolve to the same path, or one output folder holds the other output.

    Args:
        inputs: ``{label: path, Reads, a list of them, or None}``; the label names the flag or argument
            (``--template``, ``AUDIO``).
        outputs: the same for the outputs (plain paths).
        output_folders: labels of ``outputs`` whose paths are folders.
        overwrite: the command's ``--overwrite``.

    Raises:
        OutputError: naming both paths and their labels.
    """
    def flat(items: Mapping[str, Any]) -> list[tuple[str, Any, Path]]:
        return [(label, p, _resolved(p.path if isinstance(p, Reads) else p)) for label, value in items.items()
                for p in (value if isinstance(value, list) else [value]) if p is not None]

    outs = flat(outputs)
    ins = [(label, spec, real, spec.files() if isinstance(spec, Reads) else None) for label, spec, real in flat(inputs)]
    for i, (olabel, opath, oreal) in enumerate(outs):
        is_folder = olabel in output_folders
        for ilabel, ispec, ireal, read in ins:
            ipath = ispec.path if isinstance(ispec, Reads) else ispec
            if read is None:  # a plain path: a file, or a folder all of whose files are inputs
                where = ("is" if ireal == oreal else "holds" if is_folder and _inside(ireal, oreal) else
                         "would replace a file inside" if ireal.is_dir() and _inside(oreal, ireal) and oreal.exists()
                         else None)
            else:
                where = ("is" if ireal == oreal else "is a file read from" if oreal in read else
                         "holds" if is_folder and any(_inside(r, oreal) for r in read) else None)
                if where is None and not (overwrite or is_folder) and oreal.exists() and \
                        _inside(oreal, _resolved(ispec.folder)):
                    raise OutputError(f"{olabel} {opath}: already exists (inside the input {ilabel} {ipath}, which "
                                      "this command does not read); pass --overwrite to replace it or choose "
                                      "another output path")
            if where is not None:
                raise OutputError(f"{olabel} {opath} {where} the input {ilabel} {ipath}; writing it would destroy "
                                  "the input (--overwrite never replaces inputs); choose another output path")
        for olabel2, opath2, oreal2 in outs[:i]:
            if oreal == oreal2 or (is_folder and _inside(oreal2, oreal)) or \
                    (olabel2 in output_folders and _inside(oreal, oreal2)):
                raise OutputError(f"{olabel} {opath} and {olabel2} {opath2} are the same path; the second would "
                                  "replace the first; choose distinct output paths")


# --------------------------------------------------------------------------------------------- reading
# What readers raise for a damaged or foreign file (numpy, zipfile, json, pickle, safetensors, torch).
READ_ERRORS = (OSError, EOFError, ValueError, KeyError, IndexError, TypeError, zipfile.BadZipFile,
               pickle.UnpicklingError, UnicodeDecodeError, RuntimeError, AttributeError)


_OS_REASONS = {
    errno.ELOOP: "a symlink loop: the link leads back to itself",
    errno.EISDIR: "it is a folder; expected a file",
    errno.ENOTDIR: "a file stands where a folder is expected",
    errno.EACCES: "permission denied",
    errno.EIO: "input/output error: the disk or network share failed",
}


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError) and e.errno in _OS_REASONS:
        return _OS_REASONS[e.errno]
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    if isinstance(e, EOFError):
        return "the file ends early (empty or truncated)"
    if isinstance(e, KeyError):
        return f"missing entry {e}"
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


@contextlib.contextmanager
def reading(path: str | os.PathLike[str], what: str, error: type[TalkfaceError], hint: str, *,
            catch: tuple[type[BaseException], ...] = READ_ERRORS, output: PathSpec = None) -> Iterator[None]:
    """Map any failure of the reader in the block to ``error`` naming the file (TalkfaceErrors pass through).

    The file named is the one the OSError names (a member of a folder being walked: a symlink loop in a
    dataset, a folder where a file should be), else ``path``.

    Args:
        path: the file (or folder) being read.
        what: what it should be (``an animation``, ``a prepared clip``).
        error: the TalkfaceError subclass to raise.
        hint: what to do (``re-export it``).
        catch: the exception types to map (``reading_folder``: OSError only).
        output: the command's output folder, if the block also writes there: an OSError naming a file
            inside it is an OutputError, not a bad input.
    """
    try:
        yield
    except TalkfaceError:
        raise
    except catch as e:
        named = os.fsdecode(e.filename) if isinstance(e, OSError) and e.filename else None
        culprit = named if named is not None else path
        if output is not None and named is not None and _inside(_resolved(named), _resolved(output)):
            number = output_errno(e)
            raise (output_error(named, number) if number is not None else
                   OutputError(f"{named}: cannot write it ({_reason(e)}); choose another output folder")) from e
        if isinstance(e, FileNotFoundError) and (named is None or _resolved(named) == _resolved(path)):
            raise error(f"{path}: no such file; expected {what}") from e
        if isinstance(e, FileNotFoundError):
            raise error(f"{culprit}: vanished while reading {what} (moved or deleted meanwhile?); {hint}") from e
        raise error(f"{culprit}: cannot read {what} ({_reason(e)}); {hint}") from e


def reading_folder(folder: str | os.PathLike[str], what: str, error: type[TalkfaceError], hint: str, *,
                   output: PathSpec = None) -> contextlib.AbstractContextManager[None]:
    """``reading`` for a whole reader of a folder tree (a dataset): every OSError of listing, probing or
    reading becomes ``error`` naming the file it came from; other errors pass through (readers map the
    contents of each file themselves)."""
    return reading(folder, what, error, hint, catch=(OSError,), output=output)


def path_kind(path: str | os.PathLike[str]) -> str | None:
    """``"file"``, ``"folder"``, ``"other"`` (a device, a pipe) or None when nothing is there.

    Unlike ``Path.exists``/``is_file``/``is_dir``, a symlink loop or a path that cannot be examined
    (denied, I/O error) raises its OSError instead of looking like a missing file, so a reader inside
    ``reading_folder`` names it rather than saying "missing" or silently skipping it.
    """
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    return "folder" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"


def file_exists(path: str | os.PathLike[str]) -> bool:
    """``path_kind`` for a path that must be a file: True, False when absent; a folder raises IsADirectoryError."""
    kind = path_kind(path)
    if kind == "folder":
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), os.fspath(path))
    return kind is not None


def folder_exists(path: str | os.PathLike[str]) -> bool:
    """``path_kind`` for a path that must be a folder: True, False when absent; a file raises NotADirectoryError."""
    kind = path_kind(path)
    if kind not in (None, "folder"):
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), os.fspath(path))
    return kind == "folder"


def read_npz(path: str | os.PathLike[str], what: str, error: type[TalkfaceError], hint: str) -> dict[str, Any]:
    """Every array of an ``.npz`` (no pickles), read eagerly so that a damaged member fails here."""
    with reading(path, what, error, hint), open(path, "rb") as f:
        import numpy as np

        with np.load(f, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}


def read_npy(path: str | os.PathLike[str], what: str, error: type[TalkfaceError], hint: str) -> Any:
    """The array of an ``.npy`` (no pickles)."""
    with reading(path, what, error, hint), open(path, "rb") as f:
        import numpy as np

        return np.load(f, allow_pickle=False)


def read_json_object(text: str, source: str, error: type[TalkfaceError], hint: str) -> dict[str, Any]:
    """Parse ``text`` as a JSON object (a list or a number is refused too)."""
    with reading(source, "JSON", error, hint):
        value = json.loads(text)
    if not isinstance(value, dict):
        raise error(f"{source}: expected a JSON object, found {type(value).__name__}; {hint}")
    return value
