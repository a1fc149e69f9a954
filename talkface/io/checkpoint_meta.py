"""A talkface checkpoint's header, read without torch: what ``talkface info`` shows, in well under a second.

A ``.safetensors`` file starts with a little-endian uint64 header length and a JSON header whose
``__metadata__`` holds ``{"format": "talkface", "format_version": "1", "talkface": "<JSON>"}``
(see ``talkface.model.checkpoint``, which writes and loads the tensors). Also the run folder's
``metrics.jsonl`` record of the epoch the best checkpoint was saved at.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from talkface._version import __version__
from talkface.errors import CheckpointError
from talkface.io.fileio import path_kind, read_json_object, reading, reading_folder

FORMAT = "talkface"
FORMAT_VERSION = 1
RUN_FILES = ("best.safetensors", "last.safetensors")  # looked up in this order inside a run folder
_MAX_HEADER = 100 * 2**20  # bytes; safetensors' own limit


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """The checkpoint file for ``path``: the file itself, or a run folder's best/last checkpoint.

    Raises:
        CheckpointError: missing path, or a folder without ``best.safetensors``/``last.safetensors``.
    """
    p = Path(path)
    with reading_folder(p, "it as a checkpoint", CheckpointError, "fix the link or copy the run folder again"):
        kinds = {name: path_kind(p / name) for name in RUN_FILES} if path_kind(p) == "folder" else None
    if kinds is not None:
        for name in RUN_FILES:
            if kinds[name] == "file":
                return p / name
        raise CheckpointError(f"{p}: folder holds neither {' nor '.join(RUN_FILES)}; pass a run folder written "
                              "by `talkface train` or a .safetensors checkpoint")
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint file or run folder")
    return p


def sniff_format(head: bytes, size: int) -> str:
    """What a file is, judged by its first bytes: ``"safetensors"``, ``"zip"``, ``"pickle"`` or ``"unknown"``.

    A safetensors file starts with a little-endian uint64 header length followed by a JSON object, so it
    is recognised by a plausible length *and* a ``{`` at byte 8; only then are the other magics tried.
    (Its first byte alone says nothing: a header length of 128 mod 256 starts with 0x80, the pickle
    protocol opcode.) A pickle starts with the PROTO opcode 0x80 and a protocol version 2-5; a zip
    (PyTorch's default format) with the local-file-header magic ``PK\\x03\\x04``.

    Args:
        head: the file's first 9 bytes or more (fewer for short files).
        size: the file's size in bytes.
    """
    if len(head) >= 9:
        length = int.from_bytes(head[:8], "little")
        if 2 <= length <= _MAX_HEADER and 8 + length <= size and head[8:9] == b"{":
            return "safetensors"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    return "unknown"


def read_header(path: Path) -> dict[str, Any]:
    """Parse and validate a safetensors header without reading the tensors.

    Raises:
        CheckpointError: foreign, truncated or damaged file.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(9)
            kind = sniff_format(head, size)
            if kind in ("zip", "pickle"):
                raise CheckpointError(
                    f"{path}: is a PyTorch pickle/zip file ({kind} format), expected a talkface .safetensors "
                    "checkpoint; convert FaceFormer checkpoints with `talkface import-faceformer`"
                )
            if len(head) < 8:
                raise CheckpointError(f"{path}: {size} bytes is too short for a safetensors checkpoint (truncated?)")
            length = int.from_bytes(head[:8], "little")
            if length > _MAX_HEADER:
                raise CheckpointError(f"{path}: not a safetensors file (header length {length} bytes); expected "
                                      "a talkface .safetensors checkpoint")
            if 8 + length > size:
                raise CheckpointError(f"{path}: truncated: the header needs {8 + length} bytes, the file has "
                                      f"{size}; copy the checkpoint again")
            f.seek(8)
            raw = f.read(length)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({e.strerror or e})") from e
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not a safetensors file (unreadable header: {e}); expected a "
                              "talkface .safetensors checkpoint") from e
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file (header is not a JSON object)")
    ends = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)
                or offsets[0] > offsets[1]):
            raise CheckpointError(f"{path}: damaged header: tensor {name!r} has no valid data_offsets "
                                  f"(found {offsets!r}); copy the checkpoint again")
        ends.append(offsets[1])
    expected = 8 + length + max(ends, default=0)
    if size < expected:
        raise CheckpointError(f"{path}: truncated: expected {expected} bytes, found {size}; copy the checkpoint again")
    if size > expected:
        raise CheckpointError(f"{path}: corrupt: expected {expected} bytes, found {size} (trailing data)")
    return header


def read_checkpoint_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint's JSON metadata (reads only the header).

    Args:
        path: a ``.safetensors`` checkpoint or a run folder.

    Returns:
        ``format``, ``format_version``, ``talkface_version``, ``model_config``, ``encoder_config``,
        ``speakers``, ``fps``, ``created``, ``extra``, plus ``path``, ``num_parameters``, ``file_bytes``.

    Raises:
        CheckpointError: missing, truncated, foreign or newer-format file.
    """
    file = resolve_checkpoint(path)
    header = read_header(file)
    metadata = header.get("__metadata__") or {}
    found = metadata.get("format")
    if found != FORMAT:
        what = f"format {found!r}" if found else "no talkface metadata"
        raise CheckpointError(f"{file}: expected a talkface checkpoint (metadata format {FORMAT!r}), found {what}; "
                              "is this a checkpoint of another program?")
    hint = "expected format_version and a JSON 'talkface' entry; copy the checkpoint again"
    with reading(file, "the checkpoint's talkface metadata", CheckpointError, hint):
        version = int(metadata.get("format_version", ""))
        meta = read_json_object(metadata["talkface"], f"{file} (talkface metadata)", CheckpointError, hint)
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{file}: checkpoint format version {version} (written by talkface {meta.get('talkface_version', '?')}); "
            f"this talkface {__version__} reads format version {FORMAT_VERSION}; upgrade talkface"
        )
    if version < 1:
        raise CheckpointError(f"{file}: checkpoint format version {version} is not supported; "
                              f"expected {FORMAT_VERSION}")
    tensors = [v for k, v in header.items() if k != "__metadata__"]
    count = sum(_numel(v.get("shape", [])) for v in tensors)
    return {**meta, "path": str(file), "num_parameters": count, "file_bytes": file.stat().st_size}


def _numel(shape: list[int]) -> int:
    out = 1
    for n in shape:
        out *= int(n)
    return out




def read_best_metrics(meta: dict[str, Any]) -> dict[str, Any] | None:
    """The ``metrics.jsonl`` record of the epoch a checkpoint was saved at (its ``extra.epoch``).

    Args:
        meta: from ``read_checkpoint_meta``; the run folder is the checkpoint's folder.

    Returns:
        The epoch's record (``epoch``, ``train_loss``, ``val_*`` and whatever else training logged), or
        None when the checkpoint names no epoch, the folder has no ``metrics.jsonl`` or no record of
        that epoch (a checkpoint copied out of its run, an imported one).

    Raises:
        CheckpointError: ``metrics.jsonl`` exists but cannot be read.
    """
    extra = meta.get("extra")
    epoch = extra.get("epoch") if isinstance(extra, dict) else None
    if epoch is None or not meta.get("path"):
        return None
    path = Path(meta["path"]).parent / "metrics.jsonl"
    if not path.is_file():
        return None
    with reading(path, "the run's metrics", CheckpointError, "it is rewritten by `talkface train --resume`"):
        lines = path.read_text(encoding="utf-8").splitlines()
    found = None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if number == len(lines):
                break  # a last line cut short by an interrupted write: the records before it stand
            raise CheckpointError(f"{path}: line {number} is not JSON ({e}); expected one JSON object per "
                                  "epoch, as `talkface train` writes") from e
        if isinstance(record, dict) and record.get("epoch") == epoch:
            found = record  # the last record of that epoch (a resumed run may repeat one)
    return found
