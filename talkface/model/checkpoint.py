"""Self-describing checkpoints: one ``.safetensors`` file whose metadata holds the configs as JSON.

Layout: the model's ``state_dict`` tensors (float32, no shared storage) plus header metadata
``{"format": "talkface", "format_version": "1", "talkface": "<JSON>"}`` where the JSON holds
``format``, ``format_version``, ``talkface_version``, ``model_config``, ``encoder_config``
(``Wav2Vec2Config.to_dict()``), ``speakers`` (one-hot order), ``fps`` and ``extra`` (training
details). Loading needs no hub and no pickle. Reading the header alone (``read_checkpoint_meta``) lives in
``talkface.io.checkpoint_meta`` and needs no torch.
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
from talkface.io.checkpoint_meta import (  # re-exported: reading a header needs no torch (``talkface info``)
    FORMAT,
    FORMAT_VERSION,
    RUN_FILES,
    read_checkpoint_meta,
    resolve_checkpoint,
    sniff_format,
)
from talkface.io.fileio import atomic_path, reading
from talkface.model.talkface import TalkFaceModel

__all__ = ["FORMAT", "FORMAT_VERSION", "RUN_FILES", "load_checkpoint", "read_checkpoint_meta", "resolve_checkpoint",
           "save_checkpoint", "sniff_format"]


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


def load_checkpoint(path: str | os.PathLike[str], device: Any = "cpu", *,
                    encoder_implementation: str = "torch") -> tuple[TalkFaceModel, dict[str, Any]]:
    """Rebuild the model of a checkpoint, in eval mode on ``device``.

    Args:
        path: a ``.safetensors`` checkpoint or a run folder (its ``best.safetensors``, else
            ``last.safetensors``).
        device: torch device.
        encoder_implementation: ``"torch"``: the plain-torch wav2vec 2.0 (``talkface.model.wav2vec2``; no
            transformers import, the same numbers), falling back to transformers' model for a config it
            does not implement; ``"transformers"``: transformers' ``Wav2Vec2Model``.

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
        model = TalkFaceModel(config, encoder_config, encoder_implementation=encoder_implementation)
    try:
        model.load_state_dict(tensors, strict=True, assign=True)
    except RuntimeError as e:
        raise CheckpointError(f"{file}: weights do not match the model its config describes: {e}") from e
    model.positional.reset_table(device)
    return model.to(device).eval(), meta
