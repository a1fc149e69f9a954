"""Self-describing checkpoints: one ``.safetensors`` file whose metadata holds the configs as JSON.

Layout: the model's ``state_dict`` tensors (float32, no shared storage) plus header metadata
``{"format": "talkface", "format_version": "1", "talkface": "<JSON>"}`` where the JSON holds
``format``, ``format_version``, ``talkface_version``, ``model_config``, ``encoder_config``
(``Wav2Vec2Config.to_dict()``), ``speakers`` (one-hot order), ``fps`` and ``extra`` (training
details). Loading needs no hub and no pickle.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from talkface._version import __version__
from talkface.config import ModelConfig, from_dict, to_dict
from talkface.errors import CheckpointError, ConfigError
from talkface.io.fileio import atomic_path, path_kind, read_json_object, reading, reading_folder
from talkface.model.talkface import TalkFaceModel

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


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if isinstance(value, (Path, tuple, set)):
        return str(value) if isinstance(value, Path) else list(value)
    raise TypeError(f"checkpoint extra value {value!r} of type {type(value).__name__} is not JSON-serialisable")


def save_checkpoint(path: str | os.PathLike[str], model: TalkFaceModel, *, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` to one ``.safetensors`` file atomically.

    Args:
        path: destination file.
        model: the model.
        extra: JSON-serialisable details stored under ``extra`` (epoch, losses, train config).

    Returns:
        The path written.
    """
    from safetensors.torch import save_file

    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "talkface_version": __version__,
        "model_config": to_dict(model.config), "encoder_config": model.encoder_config,
        "speakers": list(model.config.speakers), "fps": model.config.fps,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "extra": extra or {},
    }
    # clone: safetensors refuses tensors that share storage (views, tied weights)
    tensors = {name: t.detach().to("cpu").clone().contiguous() for name, t in model.state_dict().items()}
    metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION),
                "talkface": json.dumps(meta, default=_json_default)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


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


def _read_header(path: Path) -> dict[str, Any]:
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
    header = _read_header(file)
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


def load_checkpoint(path: str | os.PathLike[str], device: Any = "cpu") -> tuple[TalkFaceModel, dict[str, Any]]:
    """Rebuild the model of a checkpoint, in eval mode on ``device``.

    Args:
        path: a ``.safetensors`` checkpoint or a run folder (its ``best.safetensors``, else
            ``last.safetensors``).
        device: torch device.

    Returns:
        (model, metadata as ``read_checkpoint_meta`` returns it).

    Raises:
        CheckpointError: missing, truncated, foreign, newer-format or inconsistent checkpoint.
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    meta = read_checkpoint_meta(path)
    file = Path(meta["path"])
    try:
        config = from_dict(ModelConfig, meta["model_config"])
        encoder_config = dict(meta["encoder_config"])
    except (ConfigError, KeyError, TypeError) as e:
        raise CheckpointError(f"{file}: model config in the checkpoint is invalid ({e})") from e
    with reading(file, "the checkpoint's tensors", CheckpointError, "the file may be damaged; copy it again"):
        try:
            tensors = load_file(str(file), device=str(torch.device(device)))
        except SafetensorError as e:
            raise ValueError(str(e)) from e
    # float16/bfloat16 checkpoints (halved to save space) run in float32 like the model is built; clone:
    # fresh, 64-byte-aligned storage (tensors at the file's 8-byte offsets can take other SIMD paths and
    # differ in the last bit)
    tensors = {k: v.float() if v.is_floating_point() and v.dtype != torch.float32 else v.clone()
               for k, v in tensors.items()}
    # Build on the meta device (no random init of ~95M parameters), then adopt the loaded tensors.
    with torch.device("meta"):
        model = TalkFaceModel(config, encoder_config)
    try:
        model.load_state_dict(tensors, strict=True, assign=True)
    except RuntimeError as e:
        raise CheckpointError(f"{file}: weights do not match the model its config describes: {e}") from e
    model.positional.reset_table(device)
    return model.to(device).eval(), meta
