"""TalkFaceModel: FaceFormer (Fan et al., CVPR 2022) as a module that computes predictions only.

audio -> wav2vec 2.0 (``AudioEncoder``) -> ``audio_feature_map`` -> memory (B, w*T, D)
style one-hot -> ``style_embedding`` (no bias) -> s (B, D)
tokens: [s, motion_encoder(offset_0) + s, motion_encoder(offset_1) + s, ...] -> PPE -> decoder
decoder output -> ``motion_head`` (zero-initialised) -> offsets; vertices = template + offsets.

The autoregressive pass (FaceFormer's training and inference) decodes with a key/value cache:
position t sees exactly what FaceFormer's recompute loop shows it, so with dropout off both give
the same numbers (``decode_recompute`` keeps that loop as the reference). Teacher forcing feeds
the ground-truth offsets in the same token layout, so it is the same function of its inputs.
(FaceFormer's teacher-forcing branch, unused by its training script, starts from
``motion_encoder(0) + s`` where its autoregressive pass starts from ``s``; talkface starts both from
``s`` so that a teacher-forced model is the model ``generate`` runs.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from talkface.config import ModelConfig
from talkface.errors import AudioError, ConfigError, TemplateError
from talkface.model.audio_encoder import AudioEncoder
from talkface.model.decoder import MotionDecoder
from talkface.model.masks import alignment_mask, alignment_width, biased_causal_mask
from talkface.model.positional import PeriodicPositionalEncoding


@dataclass
class ModelOutput:
    """What ``TalkFaceModel.forward`` returns.

    Attributes:
        vertices: (B, T, V, 3) float32, template + offsets.
        offsets: (B, T, V, 3) float32.
        frame_mask: (B, T) bool, True on each clip's first T_b frames.
    """

    vertices: torch.Tensor
    offsets: torch.Tensor
    frame_mask: torch.Tensor


class TalkFaceModel(nn.Module):
    """FaceFormer with KV-cached decoding, padded batches and no length limit.

    Args:
        config: architecture numbers.
        encoder_config: ``Wav2Vec2Config.to_dict()``; the encoder starts random (CNN frozen) until
            ``load_pretrained_encoder`` or a checkpoint fills it.
        encoder_implementation: ``"transformers"`` (training) or ``"torch"`` (``load_checkpoint``: the
            plain-torch wav2vec 2.0, uninitialised, which loads without importing transformers).
    """

    def __init__(self, config: ModelConfig, encoder_config: dict[str, Any], *,
                 encoder_implementation: str = "transformers") -> None:
        super().__init__()
        self.config = config
        d = config.feature_dim
        self.audio_encoder = AudioEncoder(
            encoder_config, audio_frames_per_motion_frame=config.audio_frames_per_motion_frame, fps=config.fps,
            normalize=config.normalize_audio, implementation=encoder_implementation)
        self.audio_feature_map = nn.Linear(self.audio_encoder.hidden_size, d)
        self.style_embedding = nn.Linear(config.num_speakers, d, bias=False)
        self.motion_encoder = nn.Linear(config.vertex_dim, d)
        self.positional = PeriodicPositionalEncoding(d, config.period, config.dropout)
        self.decoder = MotionDecoder(d, config.num_heads, config.ff_dim, config.num_layers, config.period,
                                     config.dropout)
        self.motion_head = nn.Linear(d, config.vertex_dim)
        # Zero-initialised like FaceFormer's vertice_map_r: an untrained model returns the template.
        nn.init.zeros_(self.motion_head.weight)
        nn.init.zeros_(self.motion_head.bias)

    @property
    def encoder_config(self) -> dict[str, Any]:
        """The wav2vec 2.0 config as ``to_dict()`` (saved in checkpoints)."""
        return self.audio_encoder.config.to_dict()

    @property
    def device(self) -> torch.device:
        return self.motion_head.weight.device

    def load_pretrained_encoder(self, name_or_path: str) -> None:
        """Load pretrained wav2vec 2.0 weights (hub name or local folder) into the encoder; CNN frozen.

        Raises:
            EncoderError: offline and not cached, missing folder, or a different hidden size.
        """
        self.audio_encoder.load_pretrained(name_or_path)

    def num_frames_for(self, num_samples: int) -> int:
        """Motion frames ``generate`` makes for ``num_samples`` of 16 kHz audio (FaceFormer's count)."""
        return self.audio_encoder.num_frames_for(num_samples)

    # -- audio ------------------------------------------------------------------------------------
    def encode_audio(self, audio: torch.Tensor, audio_lengths: torch.Tensor,
                     num_frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Audio features for the decoder's cross-attention.

        Args:
            audio: (B, S) float32, 16 kHz, zero-padded raw samples.
            audio_lengths: (B,) long samples.
            num_frames: (B,) long motion frames.

        Returns:
            features: (B, L, D), L = max T_b (k = 0) or k * max T_b.
            mask: (B, L) bool, valid frames.
        """
        hidden, mask = self.audio_encoder(audio, audio_lengths, num_frames)
        return self.audio_feature_map(hidden), mask

    # -- decoding ---------------------------------------------------------------------------------
    def _tokens(self, style: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
        """[s, motion_encoder(previous) + s] as (B, L, D); ``previous`` (B, L-1, V*3) offsets."""
        first = style[:, None]
        if previous is None or previous.shape[1] == 0:
            return first
        return torch.cat([first, self.motion_encoder(previous) + first], 1)

    def feedback_map(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``motion_encoder ∘ motion_head`` as one (D, D) affine map: ``W_e W_h``, ``W_e b_h + b_e``.

        The next token is ``motion_encoder(motion_head(h)) + s``; both maps are linear, so the loop
        needs only this product and never the (B, 1, V*3) offsets (15k-d), which are computed for all
        frames in one GEMM after it. Same function, same gradients (autograd flows through the product).
        """
        enc, head = self.motion_encoder, self.motion_head
        return enc.weight @ head.weight, torch.addmv(enc.bias, enc.weight, head.bias)

    def decode(self, memory: torch.Tensor, style: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Autoregressive decoding with a key/value cache (gradients flow through fed-back frames).

        Args:
            memory: (B, w*T, D) audio features, T >= num_frames.
            style: (B, D) style embedding.
            num_frames: T.

        Returns:
            (B, T, V*3) offsets.
        """
        width = alignment_width(self.config.audio_frames_per_motion_frame)
        memory_kv = self.decoder.memory_keys_values(memory, width)
        caches = self.decoder.new_caches(num_frames)
        bias_table = self.decoder.bias_by_distance(num_frames, memory.device, memory.dtype)
        feed_weight, feed_bias = self.feedback_map()
        token = style[:, None]
        # Without autograd, copy each step's state into one (B, T, D) buffer: a step's output can be a
        # view whose base grows with t (attention over the cache), and keeping T such views is O(T^2).
        states = None if torch.is_grad_enabled() else memory.new_empty(memory.shape[0], num_frames,
                                                                         self.config.feature_dim)
        hiddens = []
        for t in range(num_frames):
            hidden = self.decoder(self.positional(token, offset=t), memory_kv, offset=t, caches=caches,
                                  bias_table=bias_table)  # (B, 1, D)
            if states is None:
                hiddens.append(hidden)
            else:
                states[:, t: t + 1] = hidden
            if t + 1 < num_frames:
                token = F.linear(hidden, feed_weight, feed_bias) + style[:, None]
        return self.motion_head(torch.cat(hiddens, 1) if states is None else states)

    def decode_teacher_forced(self, memory: torch.Tensor, style: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """One pass over ground-truth offsets shifted by one frame.

        Args:
            memory: (B, w*T, D).
            style: (B, D).
            teacher: (B, T, V*3) ground-truth offsets (vertices minus template).

        Returns:
            (B, T, V*3) offsets.
        """
        width = alignment_width(self.config.audio_frames_per_motion_frame)
        memory_kv = self.decoder.memory_keys_values(memory, width)
        tokens = self._tokens(style, teacher[:, :-1])
        return self.motion_head(self.decoder(self.positional(tokens), memory_kv))

    def decode_recompute(self, memory: torch.Tensor, style: torch.Tensor, num_frames: int) -> torch.Tensor:
        """FaceFormer's O(T^2) loop, kept as the reference for tests and benchmarks.

        Every step re-runs ``nn.TransformerDecoderLayer`` (with this model's parameters) on the whole
        prefix with FaceFormer's full masks, maps every position to offsets, and feeds back the last.
        All clips must have the same length.

        Returns:
            (B, T, V*3) offsets of the last pass.
        """
        cfg = self.config
        ref = nn.TransformerDecoderLayer(cfg.feature_dim, cfg.num_heads, cfg.ff_dim, cfg.dropout, batch_first=True)
        ref = ref.to(memory.device).train(self.training)
        batch, num_audio = memory.shape[0], memory.shape[1]
        full_bias = biased_causal_mask(cfg.num_heads, cfg.period, num_frames, device=memory.device, dtype=memory.dtype)
        full_align = alignment_mask(num_frames, num_audio, cfg.audio_frames_per_motion_frame, device=memory.device)
        tokens = style[:, None]
        for t in range(num_frames):
            hidden = self.positional(tokens)
            tgt_mask = full_bias[:, : t + 1, : t + 1].repeat(batch, 1, 1)  # (B*H, t+1, t+1)
            for layer in self.decoder.layers:  # torch's layer, run on this layer's own parameters
                hidden = functional_call(ref, dict(layer.named_parameters()), (hidden, memory),
                                         {"tgt_mask": tgt_mask, "memory_mask": full_align[: t + 1]})
            offsets = self.motion_head(hidden)
            tokens = torch.cat([tokens, self.motion_encoder(offsets[:, -1:]) + style[:, None]], 1)
        return offsets

    # -- public passes ----------------------------------------------------------------------------
    def forward(self, audio: torch.Tensor, audio_lengths: torch.Tensor, template: torch.Tensor, style: torch.Tensor,
                num_frames: torch.Tensor, *, teacher: torch.Tensor | None = None) -> ModelOutput:
        """Training pass over a padded batch.

        Args:
            audio: (B, S) float32, 16 kHz, zero-padded raw [-1, 1] samples.
            audio_lengths: (B,) long, valid samples.
            template: (B, V, 3) float32 neutral faces.
            style: (B, N) float32 speaker one-hots (or mixes).
            num_frames: (B,) long motion frames T_b.
            teacher: (B, T, V, 3) ground-truth vertices for teacher forcing (T = max T_b), or None for
                FaceFormer's autoregressive training.

        Returns:
            ``ModelOutput`` with T = max T_b; frames past T_b are padding (see ``frame_mask``).
        """
        num_frames = num_frames.to(torch.long)
        total = int(num_frames.max())
        batch = audio.shape[0]
        memory, _ = self.encode_audio(audio, audio_lengths, num_frames)
        style_emb = self.style_embedding(style.to(memory.dtype))
        if teacher is None:
            offsets = self.decode(memory, style_emb, total)
        else:
            if teacher.shape[1] != total:
                raise ValueError(f"teacher has {teacher.shape[1]} frames; expected max(num_frames) = {total}")
            flat = (teacher - template[:, None]).reshape(batch, total, -1)
            offsets = self.decode_teacher_forced(memory, style_emb, flat)
        offsets = offsets.view(batch, total, -1, 3)
        frame_mask = torch.arange(total, device=offsets.device)[None] < num_frames[:, None].to(offsets.device)
        return ModelOutput(template[:, None] + offsets, offsets, frame_mask)

    @torch.no_grad()
    def generate(self, audio: torch.Tensor, template: torch.Tensor, style: torch.Tensor,
                 num_frames: int | None = None) -> torch.Tensor:
        """Autoregressive inference for one clip of any length (eval mode, KV cache, no gradients).

        Args:
            audio: (S,) or (1, S) float32, 16 kHz raw samples.
            template: (V, 3) float32 neutral face.
            style: (N,) float32 one-hot or mix over the training speakers.
            num_frames: T; default ``num_frames_for(S)`` (FaceFormer: ``int(A / 50 * fps)``).

        Returns:
            (T, V, 3) float32 vertices.

        Raises:
            AudioError, TemplateError, ConfigError: inputs of the wrong size.
        """
        device = self.device
        audio = torch.as_tensor(audio, dtype=torch.float32, device=device).reshape(-1)
        template = torch.as_tensor(template, dtype=torch.float32, device=device)
        style = torch.as_tensor(style, dtype=torch.float32, device=device).reshape(-1)
        self._check_inputs(audio, template, style)
        frames = self.num_frames_for(audio.shape[0]) if num_frames is None else int(num_frames)
        if frames < 1:
            raise AudioError(f"{audio.shape[0]} samples give no motion frame at {self.config.fps} fps; "
                             "pass longer audio")
        was_training = self.training
        self.eval()
        try:
            memory, _ = self.encode_audio(audio[None], torch.tensor([audio.shape[0]], device=device),
                                          torch.tensor([frames], device=device))
            offsets = self.decode(memory, self.style_embedding(style[None]), frames)
        finally:
            self.train(was_training)
        return offsets.view(frames, -1, 3).add_(template)  # in place: the output can be GBs for long audio

    def _check_inputs(self, audio: torch.Tensor, template: torch.Tensor, style: torch.Tensor) -> None:
        cfg = self.config
        if audio.shape[0] < self.audio_encoder.receptive_field:
            raise AudioError(f"audio has {audio.shape[0]} samples; need at least "
                             f"{self.audio_encoder.receptive_field} (25 ms at 16 kHz)")
        if template.shape != (cfg.num_vertices, 3):
            raise TemplateError(f"template has shape {tuple(template.shape)}; the model expects "
                                f"({cfg.num_vertices}, 3)")
        if style.shape[0] != cfg.num_speakers:
            raise ConfigError(f"style has {style.shape[0]} weights; the model was trained on {cfg.num_speakers} "
                              f"speakers: {', '.join(cfg.speakers)}")

    def style_vector(self, speaker: str) -> torch.Tensor:
        """(N,) one-hot of a training speaker.

        Raises:
            ConfigError: unknown speaker (the message lists the valid ones).
        """
        if speaker not in self.config.speakers:
            raise ConfigError(f"unknown style {speaker!r}; valid styles are: {', '.join(self.config.speakers)}")
        out = torch.zeros(self.config.num_speakers, device=self.device)
        out[self.config.speakers.index(speaker)] = 1.0
        return out
