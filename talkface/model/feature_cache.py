"""A per-run cache of the frozen wav2vec 2.0 CNN's features, so training stops recomputing them every epoch.

The CNN feature extractor is frozen (FaceFormer freezes it too) and has no dropout, so its output
for a clip is the same at every step of every epoch. ``AudioEncoder`` asks this cache first, per clip
at the clip's own length (exactly what it would compute: each clip's CNN runs unpadded), and only
computes on a miss. What follows the CNN (interpolation or cropping to the motion rate, feature
projection, SpecAugment, transformer) runs every step as before, so a step with the cache gives the
same loss and gradients as one without.

Key (``feature_key``): a BLAKE2b hash of the clip's raw samples, their count and dtype, and of the
CNN's *fingerprint* (``cnn_fingerprint``: its weights and buffers byte for byte, its geometry and
normalisation settings, waveform normalisation, the CNN chunk length, torch's and transformers'
versions), plus where it runs (device type, autocast dtype). A changed encoder or different audio
therefore never reuses stale features.

Tiers: memory (least recently used first out, bounded in bytes), then a folder (normally
``RUN/feature_cache/``), one ``<key>.safetensors`` per clip, written atomically. A damaged or
foreign file counts as a miss and is rewritten. A failed write (disk full, read-only, quota: the
``OutputError`` of ``fileio.writing``) warns once and turns the folder's writes off for the rest of the
run; it does not stop training. The cache only saves time (the features are recomputed, identically),
so losing it must not lose hours of training, and retrying every clip on a full disk would only slow
the run; the checkpoint writer, which does matter, still stops with the same typed error if the disk
stays full.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from talkface.errors import OutputError
from talkface.io.fileio import atomic_path

FORMAT = "talkface-cnn-features"
FORMAT_VERSION = "1"
CACHE_DIR = "feature_cache"  # inside a run folder


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    """The raw bytes of ``t`` (any dtype, any device), C order."""
    return memoryview(t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy())


def weights_digest(description: dict[str, Any], tensors: list[tuple[str, torch.Tensor]]) -> str:
    """BLAKE2b (hex) of a JSON description and named tensors (name, dtype, shape, bytes)."""
    h = hashlib.blake2b(digest_size=20)
    h.update(json.dumps(description, sort_keys=True).encode())
    for name, t in tensors:
        h.update(f"\0{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(_tensor_bytes(t))
    return h.hexdigest()


def feature_key(fingerprint: str, wav: torch.Tensor, context: str) -> str:
    """BLAKE2b (hex) of the CNN fingerprint, the run context and one clip's raw samples.

    Args:
        fingerprint: ``cnn_fingerprint`` of the encoder.
        wav: (S,) the clip's raw samples (before waveform normalisation), unpadded.
        context: where the CNN runs (``feature_context``).
    """
    h = hashlib.blake2b(digest_size=20)
    h.update(f"{fingerprint}\0{context}\0{wav.dtype}\0{wav.shape[0]}\0".encode())
    h.update(_tensor_bytes(wav))
    return h.hexdigest()


def feature_context(device: torch.device) -> str:
    """Device type and autocast dtype: the CNN's rounding differs between them, so they key the cache."""
    kind = device.type
    try:
        autocast = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None
    except (AttributeError, TypeError):  # torch < 2.4: per-device functions
        if kind == "cpu":
            autocast = torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None
        else:
            autocast = torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else None
    return f"{kind}:{autocast}"


def cnn_blocker(extractor: nn.Module) -> str | None:
    """Why ``extractor``'s output may not be cached, or None when it may.

    Caching needs a pure function of the waveform: no trainable parameter (its gradients would be
    lost), no active dropout, no batch statistics that training updates. SpecAugment is not a reason:
    talkface (like transformers' ``Wav2Vec2Model``) masks after the feature projection, i.e. after the
    cached CNN output, so masks are drawn and applied every step as before.
    """
    trainable = [n for n, p in extractor.named_parameters() if p.requires_grad]
    if trainable:
        return f"the CNN is trainable ({len(trainable)} parameters require grad, e.g. {trainable[0]})"
    for name, module in extractor.named_modules():
        if module.training and isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0:
            return f"the CNN has active dropout ({name})"
        if module.training and isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            return f"the CNN updates batch-norm statistics in training ({name})"
    return None


@dataclass
class CacheStats:
    """Counters of one ``FeatureCache`` (this process).

    Attributes:
        hits: lookups answered from memory.
        disk_hits: lookups answered from the folder (then kept in memory).
        misses: lookups that computed the features.
        bypassed: lookups skipped because caching did not apply (see ``reason``).
        write_errors: folder writes that failed (the first one turns the folder's writes off).
        memory_bytes / memory_items: what the memory tier holds now.
        reason: the last reason the cache was bypassed, or None.
    """

    hits: int = 0
    disk_hits: int = 0
    misses: int = 0
    bypassed: int = 0
    write_errors: int = 0
    memory_bytes: int = 0
    memory_items: int = 0
    reason: str | None = None
    last_write_error: str | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "last_write_error"}


class FeatureCache:
    """Memory (LRU, ``max_bytes``) + folder cache of CNN features, keyed by ``feature_key``.

    Args:
        max_bytes: bound of the memory tier (0: no memory tier). Tensors stay on the device they were
            computed on, so on a GPU this is GPU memory.
        folder: the disk tier (created on first write), or None for none.
    """

    def __init__(self, max_bytes: int, folder: str | Path | None = None) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.folder = None if folder is None else Path(folder)
        self._memory: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.stats = CacheStats()

    def __len__(self) -> int:
        return len(self._memory)

    def path_for(self, key: str) -> Path | None:
        return None if self.folder is None else self.folder / f"{key}.safetensors"

    def get(self, key: str, device: torch.device) -> torch.Tensor | None:
        """The cached (A, C) features of ``key`` on ``device``, or None (a miss is counted by ``put``)."""
        hit = self._memory.get(key)
        if hit is not None:
            self._memory.move_to_end(key)
            self.stats.hits += 1
            return hit if hit.device == device else hit.to(device)
        loaded = self._read(key, device)
        if loaded is not None:
            self.stats.disk_hits += 1
            self._remember(key, loaded)
        return loaded

    def put(self, key: str, features: torch.Tensor) -> None:
        """Store freshly computed features (a miss) in memory and in the folder."""
        self.stats.misses += 1
        features = features.detach()
        self._remember(key, features)
        self._write(key, features)

    def bypass(self, reason: str) -> None:
        self.stats.bypassed += 1
        self.stats.reason = reason

    def clear_memory(self) -> None:
        self._memory.clear()
        self.stats.memory_bytes = self.stats.memory_items = 0

    # -- tiers ------------------------------------------------------------------------------------
    def _remember(self, key: str, features: torch.Tensor) -> None:
        size = features.numel() * features.element_size()
        if size > self.max_bytes:
            return
        old = self._memory.pop(key, None)
        if old is not None:
            self.stats.memory_bytes -= old.numel() * old.element_size()
        while self._memory and self.stats.memory_bytes + size > self.max_bytes:
            _, evicted = self._memory.popitem(last=False)
            self.stats.memory_bytes -= evicted.numel() * evicted.element_size()
        self._memory[key] = features
        self.stats.memory_bytes += size
        self.stats.memory_items = len(self._memory)

    def _read(self, key: str, device: torch.device) -> torch.Tensor | None:
        path = self.path_for(key)
        if path is None or not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("format") != FORMAT or meta.get("key") != key:
                    return None
                features = f.get_tensor("features")
        except Exception:  # damaged file: safetensors raises its own error types; recompute
            return None
        if features.dim() != 2:
            return None
        return features.to(device)

    def _write(self, key: str, features: torch.Tensor) -> None:
        path = self.path_for(key)
        if path is None or self.stats.write_errors or path.is_file():
            return
        try:
            with atomic_path(path) as tmp:
                save_file({"features": features.to("cpu").contiguous()}, str(tmp),
                          metadata={"format": FORMAT, "version": FORMAT_VERSION, "key": key})
        except (OutputError, OSError) as e:  # the cache only saves time: training goes on without the folder
            self.stats.write_errors += 1
            self.stats.last_write_error = str(e)
            warnings.warn(f"{e}; the CNN feature cache stops writing to {self.folder} for the rest of this run "
                          "(training goes on; the features are recomputed when needed)", RuntimeWarning,
                          stacklevel=2)


def remove_stale_temp_files(folder: Path) -> None:
    """Temp files of atomic writes that a killed session never renamed."""
    if folder.is_dir():
        for stale in folder.glob(".*.tmp-*"):
            stale.unlink(missing_ok=True)
