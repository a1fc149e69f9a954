"""Convert FaceFormer's released ``vocaset.pth`` / ``biwi.pth`` (a plain ``state_dict``) to a talkface checkpoint.

FaceFormer names (REFERENCE.md, appendix) -> talkface names:
``audio_encoder.*`` -> ``audio_encoder.wav2vec2.*`` (old ``weight_g``/``weight_v`` weight-norm names become
``parametrizations.weight.original0/1``), ``vertice_map`` -> ``motion_encoder``, ``vertice_map_r`` ->
``motion_head``, ``obj_vector`` -> ``style_embedding``, ``transformer_decoder.layers`` -> ``decoder.layers``,
``audio_feature_map`` unchanged; ``PPE.pe`` is checked against the preset's period and dropped (the
encoding is recomputed for any length). The file is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

from talkface.config import ModelConfig
from talkface.errors import CheckpointError, OutputError
from talkface.io.fileio import check_output_path, reading
from talkface.model.audio_encoder import wav2vec2_base_config
from talkface.model.checkpoint import save_checkpoint, sniff_format
from talkface.model.positional import sinusoid_table
from talkface.model.talkface import TalkFaceModel
from talkface.presets import get_preset

RENAMES = (  # checked in order: vertice_map_r before vertice_map
    ("audio_encoder.", "audio_encoder.wav2vec2."),
    ("audio_feature_map.", "audio_feature_map."),
    ("vertice_map_r.", "motion_head."),
    ("vertice_map.", "motion_encoder."),
    ("obj_vector.", "style_embedding."),
    ("transformer_decoder.layers.", "decoder.layers."),
)
WEIGHT_NORM = {".weight_g": ".parametrizations.weight.original0", ".weight_v": ".parametrizations.weight.original1"}
FACEFORMER_HEADS = 4  # hard-coded in FaceFormer's faceformer.py; not recoverable from the weights
REQUIRED = ("audio_feature_map.weight", "vertice_map.weight", "vertice_map_r.weight", "obj_vector.weight")


def load_faceformer_state(pth_path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a FaceFormer ``.pth`` without executing pickled code.

    Returns:
        The flat ``state_dict`` (``module.`` prefixes removed).

    Raises:
        CheckpointError: missing file, not a torch checkpoint, non-tensor content.
    """
    import torch

    path = Path(pth_path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such FaceFormer checkpoint")
    with reading(path, "a FaceFormer checkpoint", CheckpointError, "expected vocaset.pth or biwi.pth"), \
            open(path, "rb") as f:
        kind = sniff_format(f.read(16), path.stat().st_size)
    if kind == "safetensors":
        raise CheckpointError(f"{path}: is a safetensors file, not FaceFormer's PyTorch .pth; if it is a talkface "
                              f"checkpoint, use it directly: talkface animate ... --checkpoint {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))
        if found is None:
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (unpickling failed); expected "
                                  "FaceFormer's vocaset.pth or biwi.pth") from e
        raise CheckpointError(f"{path}: holds Python objects besides tensors ({found.group(1)}), refused by "
                              "torch.load(weights_only=True); expected FaceFormer's plain state_dict") from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({e}); expected FaceFormer's "
                              "vocaset.pth or biwi.pth") from e
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a state_dict of tensors, found {type(state).__name__}")
    return {k.removeprefix("module."): v for k, v in state.items()}


def rename_faceformer_key(key: str) -> str | None:
    """talkface name of a FaceFormer key, or None for keys talkface drops (``PPE.pe``)."""
    if key == "PPE.pe":
        return None
    for old, new in RENAMES:
        if key.startswith(old):
            key = new + key[len(old):]
            break
    else:
        raise KeyError(key)
    for old, new in WEIGHT_NORM.items():
        if key.endswith(old):
            key = key[: -len(old)] + new
    return key


def _check_period(pe: Any, period: int, dim: int, path: Path) -> None:
    """FaceFormer's ``PPE.pe`` (1, R, D) must be the preset's sinusoid table tiled."""
    import torch

    rows = pe.reshape(-1, pe.shape[-1]).float()
    if rows.shape[1] != dim:
        raise CheckpointError(f"{path}: PPE.pe has width {rows.shape[1]}, expected feature_dim {dim}")
    expected = sinusoid_table(period, dim)[torch.arange(rows.shape[0]) % period]
    if not torch.allclose(rows, expected, atol=1e-5):
        found = next((p for p in range(1, rows.shape[0])
                      if torch.allclose(rows, sinusoid_table(p, dim)[torch.arange(rows.shape[0]) % p], atol=1e-5)),
                     None)
        raise CheckpointError(f"{path}: positional encoding has period {found or 'unknown'}, but the preset expects "
                              f"period {period}; choose the matching --preset")


def _model_config(state: dict[str, Any], preset_name: str, speakers: list[str], path: Path) -> Any:
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a FaceFormer state_dict: missing {missing}; found keys like "
                              f"{sorted(state)[:5]}")
    preset = get_preset(preset_name)
    dim, vertex_dim = state["vertice_map.weight"].shape
    num_speakers = state["obj_vector.weight"].shape[1]
    if vertex_dim != preset.num_vertices * 3:
        raise CheckpointError(f"{path}: motion dimension V*3 = {vertex_dim}, but preset {preset_name!r} expects "
                              f"{preset.num_vertices * 3} ({preset.num_vertices} vertices); choose the matching "
                              "--preset")
    if dim != preset.feature_dim:
        raise CheckpointError(f"{path}: feature_dim {dim}, but preset {preset_name!r} expects {preset.feature_dim}")
    if num_speakers != len(speakers):
        raise CheckpointError(f"{path}: trained on {num_speakers} speakers, but --speakers names {len(speakers)}; "
                              "list the training subjects in FaceFormer's --train_subjects order")
    layers = {int(m.group(1)) for k in state if (m := re.match(r"transformer_decoder\.layers\.(\d+)\.", k))}
    if not layers:
        raise CheckpointError(f"{path}: no transformer_decoder.layers.* weights; not a FaceFormer checkpoint")
    ff_dim = state["transformer_decoder.layers.0.linear1.weight"].shape[0]
    if ff_dim % dim:
        raise CheckpointError(f"{path}: feed-forward width {ff_dim} is not a multiple of feature_dim {dim}")
    return ModelConfig(**preset.model_kwargs(), speakers=tuple(speakers), num_heads=FACEFORMER_HEADS,
                       num_layers=max(layers) + 1, ff_multiplier=ff_dim // dim)


def convert_faceformer_state(state: dict[str, Any], *, preset: str, speakers: list[str],
                             encoder_config: dict[str, Any] | None = None, source: str = "state_dict") -> Any:
    """Build a ``TalkFaceModel`` holding FaceFormer weights.

    Args:
        state: FaceFormer's ``state_dict``.
        preset: ``vocaset`` or ``biwi``.
        speakers: training subjects in one-hot order.
        encoder_config: wav2vec 2.0 config dict (default: wav2vec2-base-960h's).
        source: name used in error messages.

    Returns:
        The model (eval mode, CPU).

    Raises:
        CheckpointError: shapes or keys that do not match the preset, speakers or encoder config.
    """
    import torch

    path = Path(source)
    config = _model_config(state, preset, speakers, path)
    encoder_config = encoder_config or wav2vec2_base_config()
    hidden = state["audio_feature_map.weight"].shape[1]
    if hidden != encoder_config["hidden_size"]:
        raise CheckpointError(f"{path}: audio_feature_map expects {hidden}-d encoder states, the encoder config "
                              f"has hidden_size {encoder_config['hidden_size']}")
    if "PPE.pe" in state:
        _check_period(state["PPE.pe"], config.period, config.feature_dim, path)
    renamed: dict[str, Any] = {}
    for key, value in state.items():
        try:
            new = rename_faceformer_key(key)
        except KeyError:
            raise CheckpointError(f"{path}: unexpected key {key!r} for a FaceFormer checkpoint") from None
        if new is not None:
            renamed[new] = value.float() if value.is_floating_point() else value
    with torch.device("meta"):
        model = TalkFaceModel(config, encoder_config)
    embed = "audio_encoder.wav2vec2.masked_spec_embed"
    expected = model.state_dict()
    if embed in expected and embed not in renamed:  # only used by SpecAugment in training
        renamed[embed] = torch.rand(expected[embed].shape)
    missing = sorted(set(expected) - set(renamed))
    unexpected = sorted(set(renamed) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path}: keys do not match FaceFormer with this encoder config: missing "
                              f"{missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected "
                              f"{unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    try:
        model.load_state_dict(renamed, strict=True, assign=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weight shapes do not match: {e}") from e
    model.positional.reset_table()
    return model.eval()


def import_faceformer(pth_path: str | os.PathLike[str], *, preset: str, speakers: list[str], out: Path,
                      encoder_config: dict[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Convert a FaceFormer ``.pth`` into a talkface checkpoint.

    Args:
        pth_path: FaceFormer's ``vocaset.pth`` or ``biwi.pth``.
        preset: ``vocaset`` or ``biwi``.
        speakers: the training subjects in FaceFormer's ``--train_subjects`` order.
        out: a ``.safetensors`` file, or a folder (the checkpoint becomes ``out/best.safetensors``, so
            ``--checkpoint out`` works).
        encoder_config: wav2vec 2.0 config dict (default: wav2vec2-base-960h's, built without the hub).
        overwrite: replace an existing checkpoint.

    Returns:
        The checkpoint path.

    Raises:
        CheckpointError: unreadable or mismatching FaceFormer file. OutputError: destination exists.
    """
    get_preset(preset)  # an unknown --preset fails before the file is read
    target = Path(out) if Path(out).suffix == ".safetensors" else Path(out) / "best.safetensors"
    if target.exists() and not overwrite:
        raise OutputError(f"{target}: already exists; pass --overwrite to replace it or choose another --out")
    check_output_path(target, overwrite=overwrite)
    # a state_dict without a layer the conversion reads raises KeyError/IndexError deep inside: map it here
    with reading(pth_path, "FaceFormer's state_dict", CheckpointError,
                 "expected FaceFormer's released vocaset.pth or biwi.pth"):
        state = load_faceformer_state(pth_path)
        model = convert_faceformer_state(state, preset=preset, speakers=list(speakers),
                                         encoder_config=encoder_config, source=str(pth_path))
    extra = {"source": "faceformer", "imported_from": str(Path(pth_path).resolve()), "preset": preset}
    return save_checkpoint(target, model, extra=extra)
