"""The wav2vec 2.0 audio encoder, composed from transformers' public sub-modules the way FaceFormer runs it.

FaceFormer (Fan et al., CVPR 2022) brings the 50 Hz CNN features to the motion rate *before* the
transformer: CNN -> (interpolate to T frames | crop to k*T frames) -> feature projection ->
SpecAugment (training) -> transformer encoder. Baevski et al., "wav2vec 2.0", NeurIPS 2020.

Differences from FaceFormer's wrapper, all invisible for the clips FaceFormer can process:
- each clip's CNN runs at its own length (the first conv layer of wav2vec2-base group-normalises over
  time, so padding would change the features) and the transformer masks the padding, so a padded
  batch gives the same features as one clip at a time;
- long audio runs the CNN in exact chunks (the group-norm statistics are taken over the whole clip
  first) and the transformer in overlapping windows of ``window_seconds`` (30 s, above FaceFormer's
  20 s limit) blended linearly across ``overlap_seconds``, so memory stays flat on a 5-minute wav;
- SpecAugment draws from torch's generator (seeded by ``torch.manual_seed``) instead of numpy's;
- training attaches a ``FeatureCache`` (``talkface.model.feature_cache``): the frozen CNN's output of a
  clip is computed once per run, not once per epoch. SpecAugment masks the *projected* features, after
  the cached CNN output, so it is unaffected.

Over 400 lines: the encoder's configs, its loading (hub or local folder, with offline hints) and
the pieces of its forward pass all concern one transformers model and share its config.
"""

from __future__ import annotations

import math
import socket
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from talkface.errors import AudioError, EncoderError
from talkface.io.audio import SAMPLE_RATE
from talkface.model.feature_cache import FeatureCache, cnn_blocker, feature_context, feature_key, weights_digest
from talkface.model.wav2vec2 import WAV2VEC2_BASE_960H, Wav2Vec2, unsupported

if TYPE_CHECKING:
    from transformers import Wav2Vec2Model

# transformers' modeling code is imported only where it is used (training, hub loading, FaceFormer import):
# importing it costs seconds, and inference runs talkface.model.wav2vec2 instead.
ENCODER_IMPLEMENTATIONS = ("transformers", "torch")

# Encoders that ship inside talkface (``talkface/assets/encoders/<name>.safetensors`` + ``<name>.json``), loaded
# by name like a hub encoder but never from the hub. ``synthetic-phonetic``: a small wav2vec 2.0 pretrained by
# frame-wise phoneme classification on espeak-ng speech (scripts/train_phonetic_encoder.py, issue #17).
BUILTIN_ENCODERS = ("synthetic-phonetic",)
PHONEME_HEAD_PREFIX = "phoneme_head."  # the pretraining classifier, shipped beside the encoder for tests
BUILTIN_DIR = Path(__file__).resolve().parents[1] / "assets" / "encoders"
HUB_PROBE_TIMEOUT = 3.0  # seconds; huggingface_hub's own retry loop takes ~25 s to give up offline
NORM_EPS = 1e-7  # Wav2Vec2FeatureExtractor's zero-mean/unit-variance epsilon


def wav2vec2_base_config() -> dict[str, Any]:
    """facebook/wav2vec2-base-960h's architecture as a ``Wav2Vec2Config.to_dict()`` (no hub)."""
    from transformers import Wav2Vec2Config

    return Wav2Vec2Config(**WAV2VEC2_BASE_960H).to_dict()


def tiny_encoder_config(
    hidden_size: int = 32,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 2,
    intermediate_size: int = 64,
    conv_dim: int = 16,
    **overrides: Any,
) -> dict[str, Any]:
    """A small random-init wav2vec 2.0 for tests and the offline demo.

    Keeps wav2vec2-base's CNN kernels and strides (320-sample hop = 50 Hz at 16 kHz, 400-sample
    receptive field) and its group norm, with narrow layers.

    Returns:
        ``Wav2Vec2Config.to_dict()``.
    """
    from transformers import Wav2Vec2Config

    values = {
        **WAV2VEC2_BASE_960H, "hidden_size": hidden_size, "num_hidden_layers": num_hidden_layers,
        "num_attention_heads": num_attention_heads, "intermediate_size": intermediate_size,
        "conv_dim": [conv_dim] * 7, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2,
        "mask_time_length": 2, "layerdrop": 0.0, **overrides,
    }
    return Wav2Vec2Config(**values).to_dict()


def build_wav2vec2(encoder_config: dict[str, Any], implementation: str = "transformers") -> Any:
    """A wav2vec 2.0 with a frozen CNN: transformers' random-init ``Wav2Vec2Model``, or with ``"torch"``
    the uninitialised plain-torch ``talkface.model.wav2vec2.Wav2Vec2`` (for loading a checkpoint into;
    transformers' model when that one does not implement the config)."""
    if implementation not in ENCODER_IMPLEMENTATIONS:
        raise ValueError(f"encoder implementation {implementation!r}; expected one of {ENCODER_IMPLEMENTATIONS}")
    if implementation == "torch" and unsupported(encoder_config) is None:
        model = Wav2Vec2(encoder_config)
    else:
        from transformers import Wav2Vec2Config, Wav2Vec2Model

        model = Wav2Vec2Model(Wav2Vec2Config(**encoder_config))
    model.freeze_feature_encoder()
    return model


# ------------------------------------------------------------------------------------ pretrained


def _looks_local(name_or_path: str) -> bool:
    return (
        Path(name_or_path).expanduser().exists()
        or name_or_path.startswith(("/", ".", "~"))
        or "\\" in name_or_path
        or name_or_path.count("/") > 1
    )


def _hub_reachable(timeout: float = HUB_PROBE_TIMEOUT) -> bool:
    """One TCP connect to the hub (or the HTTPS proxy) with a short timeout; False when offline."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    endpoint = urllib.parse.urlparse(constants.ENDPOINT)
    proxy = urllib.request.getproxies().get(endpoint.scheme)
    target = urllib.parse.urlparse(proxy) if proxy else endpoint
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        socket.create_connection((target.hostname or "", port), timeout=timeout).close()
    except OSError:
        return False
    return True


def _hint(name: str) -> str:
    return (
        f"download it once on a connected machine (`hf download {name} --local-dir wav2vec2`) and pass "
        "the folder with --encoder ./wav2vec2 (it must hold config.json and the weights)"
    )


def _from_pretrained(cls: Any, name_or_path: str) -> Any:
    """``cls.from_pretrained`` from the local cache/folder first, then the hub if it answers quickly.

    Raises:
        EncoderError: missing folder, unreadable folder, or not cached and the hub is unreachable.
    """
    if _looks_local(name_or_path):
        folder = Path(name_or_path).expanduser()
        if not folder.is_dir():
            raise EncoderError(f"wav2vec 2.0 encoder folder {folder} does not exist; "
                               f"{_hint('facebook/wav2vec2-base-960h')}")
        try:
            return cls.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError) as e:
            raise EncoderError(
                f"{folder}: not a loadable wav2vec 2.0 folder ({e}); expected config.json and "
                "model.safetensors or pytorch_model.bin, as written by save_pretrained"
            ) from e
    try:
        return cls.from_pretrained(name_or_path, local_files_only=True)
    except (OSError, ValueError):
        pass  # not cached: try the hub below
    if not _hub_reachable():
        raise EncoderError(
            f"wav2vec 2.0 encoder {name_or_path!r} is not in the local Hugging Face cache and the hub is "
            f"unreachable (offline?); {_hint(name_or_path)}"
        )
    try:
        return cls.from_pretrained(name_or_path)
    except (OSError, ValueError) as e:
        raise EncoderError(f"could not load wav2vec 2.0 encoder {name_or_path!r} ({e}); {_hint(name_or_path)}") from e


def builtin_encoder_info(name: str) -> dict[str, Any]:
    """The metadata of a shipped encoder: ``wav2vec2_config``, ``phonemes``, ``training``, ``heldout_accuracy``.

    Raises:
        EncoderError: ``name`` is not a shipped encoder, or its files are missing or unreadable.
    """
    import json

    from transformers import Wav2Vec2Config

    if name not in BUILTIN_ENCODERS:
        raise EncoderError(f"{name!r} is not an encoder shipped with talkface; expected one of "
                           f"{list(BUILTIN_ENCODERS)}")
    meta_path, weights = BUILTIN_DIR / f"{name}.json", BUILTIN_DIR / f"{name}.safetensors"
    if not (meta_path.is_file() and weights.is_file()):
        raise EncoderError(f"the shipped encoder {name!r} is missing ({meta_path} and {weights.name} expected); "
                           "reinstall talkface or rebuild it with scripts/train_phonetic_encoder.py")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        Wav2Vec2Config(**meta["wav2vec2_config"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise EncoderError(f"{meta_path}: not a readable encoder description ({e}); rebuild it with "
                           "scripts/train_phonetic_encoder.py") from e
    return meta


def _load_builtin(name: str) -> Wav2Vec2Model:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    meta = builtin_encoder_info(name)
    model = Wav2Vec2Model(Wav2Vec2Config(**meta["wav2vec2_config"]))
    path = BUILTIN_DIR / f"{name}.safetensors"
    try:
        state = {k: v for k, v in load_file(str(path)).items() if not k.startswith(PHONEME_HEAD_PREFIX)}
        model.load_state_dict(state, strict=True)
    except (OSError, RuntimeError, SafetensorError) as e:
        raise EncoderError(f"{path}: its weights do not load into the encoder its .json describes ({e}); "
                           "reinstall talkface or rebuild it with scripts/train_phonetic_encoder.py") from e
    return model


def load_pretrained_encoder_config(name_or_path: str) -> dict[str, Any]:
    """The ``Wav2Vec2Config.to_dict()`` of a shipped encoder name, hub name or local folder (no weights).

    Raises:
        EncoderError: see ``builtin_encoder_info`` and ``_from_pretrained``.
    """
    from transformers import Wav2Vec2Config

    if name_or_path in BUILTIN_ENCODERS:
        return Wav2Vec2Config(**builtin_encoder_info(name_or_path)["wav2vec2_config"]).to_dict()
    return _from_pretrained(Wav2Vec2Config, name_or_path).to_dict()


def load_pretrained_wav2vec2(name_or_path: str) -> Wav2Vec2Model:
    """A pretrained ``Wav2Vec2Model`` (a CTC checkpoint's head is dropped) with a frozen CNN.

    ``name_or_path`` is a shipped encoder (``BUILTIN_ENCODERS``, loaded from the package, never the
    hub), a hub name or a local folder.

    Raises:
        EncoderError: see ``builtin_encoder_info`` and ``_from_pretrained``.
    """
    from transformers import Wav2Vec2Model

    if name_or_path in BUILTIN_ENCODERS:
        model = _load_builtin(name_or_path)
    else:
        model = _from_pretrained(Wav2Vec2Model, name_or_path)
    model.freeze_feature_encoder()
    return model


# ------------------------------------------------------------------------------------ pure helpers


def normalize_audio(wav: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance over the samples given (Wav2Vec2FeatureExtractor's do_normalize)."""
    return (wav - wav.mean()) / torch.sqrt(wav.var(unbiased=False) + NORM_EPS)


def interpolate_features(features: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Linear interpolation with ``align_corners=True`` along time (FaceFormer's VOCASET path).

    Args:
        features: (A, C).
        num_frames: T.

    Returns:
        (T, C).
    """
    return F.interpolate(features.T[None], size=num_frames, mode="linear", align_corners=True)[0].T


def crop_or_pad_features(features: torch.Tensor, length: int) -> torch.Tensor:
    """Cut to ``length`` frames (FaceFormer's BIWI path) or repeat the last frame up to it.

    FaceFormer instead drops ground-truth frames that lack audio; repeating the last audio frame
    (at most a frame or two from CNN edge rounding) keeps every motion frame.

    Args:
        features: (A, C).
        length: L.

    Returns:
        (L, C).
    """
    if features.shape[0] >= length:
        return features[:length]
    return torch.cat([features, features[-1:].expand(length - features.shape[0], -1)])


def spec_augment_mask(lengths: Sequence[int], total: int, prob: float, span: int, min_spans: int,
                      device: torch.device | str | None = None) -> torch.Tensor:
    """SpecAugment spans as wav2vec 2.0 draws them: about ``prob * n / span`` spans of ``span`` frames.

    Args:
        lengths: valid length n of each row.
        total: padded length.
        prob, span, min_spans: transformers' ``mask_*_prob``, ``mask_*_length``, ``mask_*_min_masks``.

    Returns:
        (B, total) bool, True = masked; never beyond a row's length.
    """
    mask = torch.zeros(len(lengths), total, dtype=torch.bool)
    epsilon = float(torch.rand(()))  # probabilistic rounding of the span count
    for row, n in enumerate(lengths):
        if prob <= 0 or n < span:
            continue
        count = min(max(int(prob * n / span + epsilon), min_spans), n // span, n - span + 1)
        for start in torch.randperm(n - span + 1)[:count].tolist():
            mask[row, start:start + span] = True
    return mask.to(device)


def window_starts(length: int, window: int, overlap: int) -> list[int]:
    """Starts of windows of ``window`` frames covering ``length``, consecutive ones sharing >= ``overlap``."""
    if length <= window:
        return [0]
    stride = window - overlap
    return list(range(0, length - window, stride)) + [length - window]


def blend_weights(window: int, overlap: int) -> torch.Tensor:
    """(window,) positive ramp weights rising/falling over ``overlap`` frames at each end."""
    t = torch.arange(window, dtype=torch.float32)
    return torch.minimum(torch.minimum(t + 1, window - t), torch.tensor(float(overlap + 1))) / (overlap + 1)


# ------------------------------------------------------------------------------------ the module


class AudioEncoder(nn.Module):
    """wav2vec 2.0 run as FaceFormer runs it, per clip at its own length, any length.

    Args:
        encoder_config: ``Wav2Vec2Config.to_dict()``; the weights start random (see
            ``load_pretrained``).
        audio_frames_per_motion_frame: 0 = interpolate CNN features to T frames, k >= 1 = k*T frames.
        fps: motion frames per second.
        normalize: zero-mean/unit-variance each clip over its valid samples.
        window_seconds, overlap_seconds: transformer windows for long audio.
        cnn_chunk_seconds: CNN chunk for long audio (exact).
        implementation: ``"transformers"`` (training, hub weights) or ``"torch"``: the plain-torch
            forward pass of ``talkface.model.wav2vec2`` (inference: loads in a fraction of the time).

    Attributes:
        feature_cache: a ``FeatureCache`` that training attaches (None: compute the CNN every call).
    """

    def __init__(self, encoder_config: dict[str, Any], *, audio_frames_per_motion_frame: int = 0,
                 fps: float = 30.0, normalize: bool = True, window_seconds: float = 30.0,
                 overlap_seconds: float = 5.0, cnn_chunk_seconds: float = 10.0,
                 implementation: str = "transformers") -> None:
        super().__init__()
        self.wav2vec2 = build_wav2vec2(encoder_config, implementation)
        self.frames_per_motion_frame = audio_frames_per_motion_frame
        self.fps = fps
        self.normalize = normalize
        self.window_seconds = window_seconds
        self.overlap_seconds = overlap_seconds
        self.cnn_chunk_seconds = cnn_chunk_seconds
        self.feature_cache: FeatureCache | None = None  # set by training; see talkface.model.feature_cache
        self._fingerprint: tuple[Any, str, Any] | None = None

    # -- geometry ---------------------------------------------------------------------------------
    @property
    def config(self) -> Any:
        """The ``Wav2Vec2Config`` (or the plain-torch model's ``EncoderSettings``, the same attributes)."""
        return self.wav2vec2.config

    @property
    def hidden_size(self) -> int:
        return int(self.config.hidden_size)

    @property
    def hop(self) -> int:
        """Samples per CNN frame (320 for wav2vec 2.0)."""
        return math.prod(self.config.conv_stride)

    @property
    def receptive_field(self) -> int:
        """Samples seen by one CNN frame (400 for wav2vec 2.0)."""
        field, jump = 1, 1
        for kernel, stride in zip(self.config.conv_kernel, self.config.conv_stride, strict=True):
            field, jump = field + (kernel - 1) * jump, jump * stride
        return field

    @property
    def feature_rate(self) -> float:
        """CNN frames per second at 16 kHz (50 Hz)."""
        return SAMPLE_RATE / self.hop

    def num_cnn_frames(self, num_samples: int) -> int:
        """A, CNN frames for ``num_samples`` (0 when shorter than the receptive field)."""
        length = num_samples
        for kernel, stride in zip(self.config.conv_kernel, self.config.conv_stride, strict=True):
            length = (length - kernel) // stride + 1
            if length <= 0:
                return 0
        return length

    def num_frames_for(self, num_samples: int) -> int:
        """FaceFormer's inference frame count: ``int(A / 50 * fps)`` (k = 0) or ``A // k``."""
        frames = self.num_cnn_frames(num_samples)
        if self.frames_per_motion_frame:
            return frames // self.frames_per_motion_frame
        return int(frames / self.feature_rate * self.fps)

    def sequence_length(self, num_frames: int) -> int:
        """Encoder frames for T motion frames: T (k = 0) or k*T."""
        return num_frames * max(self.frames_per_motion_frame, 1)

    # -- forward ----------------------------------------------------------------------------------
    def forward(self, audio: torch.Tensor, audio_lengths: torch.Tensor,
                num_frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a zero-padded batch.

        Args:
            audio: (B, S) float32, 16 kHz, raw [-1, 1] samples.
            audio_lengths: (B,) long, valid samples per clip.
            num_frames: (B,) long, motion frames T_b per clip.

        Returns:
            hidden: (B, L, H) float32, L = max_b L_b with L_b = T_b (k = 0) or k*T_b; zero past L_b.
            mask: (B, L) bool, True on the valid frames.

        Raises:
            AudioError: a clip shorter than the CNN's receptive field (400 samples).
        """
        too_short = [int(n) for n in audio_lengths.tolist() if n < self.receptive_field]
        if too_short:
            raise AudioError(f"clips of {too_short} samples are shorter than one wav2vec 2.0 frame; need at least "
                             f"{self.receptive_field} samples (25 ms at 16 kHz)")
        lengths = [self.sequence_length(int(t)) for t in num_frames.tolist()]
        feats = [self._aligned_cnn(audio[b, : int(n)], lengths[b])
                 for b, n in enumerate(audio_lengths.tolist())]
        total = max(lengths)
        padded = torch.stack([F.pad(f, (0, 0, 0, total - f.shape[0])) for f in feats])  # (B, L, C)
        mask = torch.arange(total, device=audio.device)[None] < torch.tensor(lengths, device=audio.device)[:, None]
        projected = self.wav2vec2.feature_projection(padded)
        hidden = projected[0] if isinstance(projected, tuple) else projected  # tuple since transformers 4.7
        hidden = self._spec_augment(hidden, lengths)
        hidden = self._transformer(hidden, lengths)
        return hidden * mask[..., None], mask

    def _aligned_cnn(self, wav: torch.Tensor, length: int) -> torch.Tensor:
        """(L, C) CNN features of one clip, brought to ``length`` encoder frames."""
        features = self.clip_cnn_features(wav)
        if self.frames_per_motion_frame == 0:
            return interpolate_features(features, length)
        return crop_or_pad_features(features, length)

    def clip_cnn_features(self, wav: torch.Tensor) -> torch.Tensor:
        """(A, C) CNN features of one raw, unpadded clip: from ``feature_cache`` when it applies.

        The waveform is normalised here (when ``normalize``), so the cache is keyed by the raw samples.
        """
        cache = self.feature_cache
        if cache is None:
            return self._compute_clip_cnn(wav)
        blocker = cnn_blocker(self.wav2vec2.feature_extractor)
        if blocker is not None:
            cache.bypass(blocker)
            return self._compute_clip_cnn(wav)
        key = feature_key(self.cnn_fingerprint(), wav, feature_context(wav.device))
        features = cache.get(key, wav.device)
        if features is None:
            features = self._compute_clip_cnn(wav)
            cache.put(key, features)
        return features

    def _compute_clip_cnn(self, wav: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            wav = normalize_audio(wav)
        trainable = any(p.requires_grad for p in self.wav2vec2.feature_extractor.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and trainable):
            return self.cnn_features(wav)

    def cnn_fingerprint(self) -> str:
        """A hash of everything the CNN features depend on besides the audio (see ``feature_cache``).

        Re-hashed only when a CNN tensor was replaced, moved or written in place (its ``_version``);
        writes through ``.data`` bypass autograd's version counter and are not seen.
        """
        extractor = self.wav2vec2.feature_extractor
        tensors = list(extractor.state_dict(keep_vars=True).items())
        token = tuple((name, id(t), t.data_ptr(), t._version, t.dtype, t.device) for name, t in tensors)
        token = (self.normalize, self.cnn_chunk_seconds, token)
        if self._fingerprint is None or self._fingerprint[0] != token:
            import transformers

            c = self.config
            description = {
                "extractor": type(extractor).__qualname__, "torch": torch.__version__,
                "transformers": transformers.__version__, "normalize": self.normalize,
                "cnn_chunk_seconds": self.cnn_chunk_seconds, "norm_eps": NORM_EPS,
                **{k: getattr(c, k) for k in ("conv_dim", "conv_kernel", "conv_stride", "conv_bias",
                                              "feat_extract_norm", "feat_extract_activation",
                                              "num_feat_extract_layers")},
            }
            # the tensors are kept with the token, so their ids and addresses cannot be reused by others
            self._fingerprint = (token, weights_digest(description, tensors), tensors)
        return self._fingerprint[1]

    def cnn_features(self, wav: torch.Tensor, chunk_frames: int | None = None) -> torch.Tensor:
        """CNN features of one waveform; long ones in exact chunks.

        Args:
            wav: (S,) float32, S >= the receptive field (400 samples).
            chunk_frames: CNN frames per chunk (default ``cnn_chunk_seconds``).

        Returns:
            (A, C) float32.
        """
        extractor = self.wav2vec2.feature_extractor
        chunk = chunk_frames or max(1, round(self.cnn_chunk_seconds * self.feature_rate))
        num = self.num_cnn_frames(wav.shape[0])
        first = extractor.conv_layers[0]
        norm = getattr(first, "layer_norm", None)
        per_clip_norm = isinstance(norm, nn.GroupNorm)
        if num <= chunk or (per_clip_norm and norm.num_groups != norm.num_channels):
            return extractor(wav[None])[0].T
        stats = self._first_layer_stats(wav, chunk) if per_clip_norm else None
        pieces = []
        for a0 in range(0, num, chunk):
            a1 = min(a0 + chunk, num)
            piece = wav[a0 * self.hop: (a1 - 1) * self.hop + self.receptive_field][None, None]
            if stats is None:
                hidden = first(piece)
            else:
                mean, var = stats
                hidden = (first.conv(piece) - mean) / torch.sqrt(var + norm.eps)
                hidden = first.activation(hidden * norm.weight[:, None] + norm.bias[:, None])
            for layer in extractor.conv_layers[1:]:
                hidden = layer(hidden)
            pieces.append(hidden[0].T)
        return torch.cat(pieces)

    def _first_layer_stats(self, wav: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and (biased) variance over time of the first conv's output, chunk by chunk."""
        conv = self.wav2vec2.feature_extractor.conv_layers[0].conv
        kernel, stride = conv.kernel_size[0], conv.stride[0]
        num = (wav.shape[0] - kernel) // stride + 1
        step = chunk * self.hop // stride
        total = torch.zeros(conv.out_channels, dtype=torch.float64, device=wav.device)
        squares = torch.zeros_like(total)
        for f0 in range(0, num, step):
            f1 = min(f0 + step, num)
            out = conv(wav[f0 * stride: (f1 - 1) * stride + kernel][None, None])[0].double()
            total += out.sum(1)
            squares += (out * out).sum(1)
        mean = total / num
        var = (squares / num - mean * mean).clamp(min=0)
        return mean.float()[:, None], var.float()[:, None]

    def _spec_augment(self, hidden: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        config = self.config
        if not (self.training and getattr(config, "apply_spec_augment", True)):
            return hidden
        if config.mask_time_prob > 0:
            mask = spec_augment_mask(lengths, hidden.shape[1], config.mask_time_prob, config.mask_time_length,
                                     config.mask_time_min_masks, hidden.device)
            hidden = torch.where(mask[..., None], self.wav2vec2.masked_spec_embed.to(hidden.dtype), hidden)
        if config.mask_feature_prob > 0:
            mask = spec_augment_mask([hidden.shape[2]] * hidden.shape[0], hidden.shape[2], config.mask_feature_prob,
                                     config.mask_feature_length, config.mask_feature_min_masks, hidden.device)
            hidden = hidden.masked_fill(mask[:, None, :], 0.0)
        return hidden

    def _transformer(self, hidden: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        """The transformer encoder, batched with a padding mask, or windowed per clip when long."""
        rate = self.fps if self.frames_per_motion_frame == 0 else self.feature_rate
        window = max(2, round(self.window_seconds * rate))
        if hidden.shape[1] <= window:
            if all(n == hidden.shape[1] for n in lengths):
                return self.wav2vec2.encoder(hidden).last_hidden_state
            mask = torch.arange(hidden.shape[1], device=hidden.device)[None] < torch.tensor(
                lengths, device=hidden.device)[:, None]
            return self.wav2vec2.encoder(hidden, attention_mask=mask).last_hidden_state
        overlap = min(round(self.overlap_seconds * rate), (window - 1) // 2)
        rows = [F.pad(self.encode_windowed(hidden[b: b + 1, :n], window, overlap),
                      (0, 0, 0, hidden.shape[1] - n)) for b, n in enumerate(lengths)]
        return torch.cat(rows)

    def encode_windowed(self, hidden: torch.Tensor, window: int, overlap: int) -> torch.Tensor:
        """Transformer over overlapping windows, blended with ramp weights.

        Args:
            hidden: (1, L, H) projected features of one clip.
            window, overlap: frames.

        Returns:
            (1, L, H).
        """
        length = hidden.shape[1]
        weights = blend_weights(min(window, length), overlap).to(hidden)
        total = torch.zeros_like(hidden)
        norm = torch.zeros(length, 1, dtype=hidden.dtype, device=hidden.device)
        for start in window_starts(length, window, overlap):
            stop = min(start + window, length)
            out = self.wav2vec2.encoder(hidden[:, start:stop]).last_hidden_state
            total = total + F.pad(out * weights[:, None], (0, 0, start, length - stop))
            norm = norm + F.pad(weights[:, None], (0, 0, start, length - stop))
        return total / norm

    def load_pretrained(self, name_or_path: str) -> None:
        """Replace the weights with a pretrained encoder of the same width.

        Raises:
            EncoderError: unavailable, or its hidden size differs from this encoder's.
        """
        model = load_pretrained_wav2vec2(name_or_path)
        if model.config.hidden_size != self.hidden_size:
            raise EncoderError(
                f"encoder {name_or_path!r} has hidden size {model.config.hidden_size}, but this model was built "
                f"for {self.hidden_size}; build the model from load_pretrained_encoder_config({name_or_path!r})"
            )
        device = next(self.wav2vec2.parameters()).device
        self.wav2vec2 = model.to(device).train(self.training)
