"""Streaming inference: audio arrives in pieces, final mesh frames leave with bounded latency.

The offline path (``TalkFaceModel.generate``) sees the whole utterance. Here each stage only looks
as far ahead as ``lookahead_ms`` and as far back as ``context_ms``:

- CNN: each wav2vec 2.0 CNN frame is computed once, from its 400 samples (an 80-sample overlap
  between pieces), when a pass first needs it. The clip-level statistics offline uses (input
  zero-mean/unit-variance, and the first layer's per-channel group norm over time) become running
  statistics of all audio heard so far: the first layer's conv is linear, so its statistics for the
  normalised input follow from sums over the raw input (``first_layer_stats``).
- Transformer: encoder frame e (motion frames for k = 0, CNN frames for k >= 1) is *committed* once the
  audio up to its time + ``lookahead_ms`` has arrived (``frames_waited``: the look-ahead is the wait for
  audio, CNN window included, so latency never exceeds it by more than hop + compute). A pass runs the
  transformer with queries = uncommitted frames and keys = those plus the cached per-layer keys/values
  of the last ``context`` committed frames; the committed frames' keys/values join the cache, the
  look-ahead frames are recomputed next pass. Compute per second of audio ~ (hop + lookahead) / hop
  times the offline cost; latency ~ hop + lookahead + compute.
- Crossfade: a pass commits ``hop`` frames at once, so within a pass each frame sees one frame less of
  the future than the one before, and the next pass's first frame sees ``hop`` frames more than the
  last one: a jump in the features, a seam in the motion. The last pass also computed the frames the
  next one commits (as look-ahead); the next pass blends its first frames from that estimate to its
  own (``crossfade_weights``), so consecutive frames come from nearly the same computation.
- Decoder: the same KV-cached steps as ``TalkFaceModel.decode``, continued across passes, with the
  self-attention cache bounded to ``memory_s`` seconds (the periodic bias depends on distances only and
  the periodic encoding on position mod period, so a sliding window keeps their meaning).
- k = 0 (features interpolated to the motion rate): before the end of input, encoder frame e reads
  the CNN features at e·50/fps; offline stretches that to the clip's end (``align_corners``), so at
  the end the frames not yet committed are stretched from the last committed one to the last CNN
  frame (``feature_positions``). With look-ahead and context covering the whole clip there is one
  pass at the end with full statistics: the same numbers as ``generate``.

Over 400 lines: one ``Streamer`` carries the CNN, transformer and decoder state that must advance
together pass by pass; split across modules, that shared state would have to be passed back and forth.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from talkface.errors import AudioError, ConfigError
from talkface.inference.packed import packed_copy
from talkface.io.audio import SAMPLE_RATE
from talkface.model.audio_encoder import NORM_EPS
from talkface.model.decoder import KVCache
from talkface.model.masks import alignment_width
from talkface.model.talkface import TalkFaceModel


@dataclass(frozen=True)
class StreamConfig:
    """Latency and memory knobs.

    Attributes:
        lookahead_ms: future audio each frame waits for: frame i (time t = i/fps) is final once the audio up to
            t + lookahead_ms has arrived, and it then sees every encoder frame that audio computes (the
            CNN's 25 ms window and the 50 Hz feature grid take ~45 ms of it, so the transformer sees about
            ``lookahead_ms - 45`` ms past the frame; with ``crossfade`` a pass's first frames are partly the
            previous pass's estimate, which saw up to one hop less). This is the wait a user feels, hop and
            compute aside.
        hop_ms: least new audio that triggers a pass (smaller: lower latency, more compute).
        context_ms: past encoder frames whose keys/values later passes attend to.
        memory_s: decoder self-attention window in seconds; None = unbounded (grows with the stream).
        crossfade: blend each pass's first frames from the previous pass's estimate of them (computed
            with less future audio) to this pass's (``crossfade_weights``). A pass commits ``hop``
            frames at once, so the future each frame sees drops by one frame per frame within a pass and
            jumps back up by ``hop`` at the next pass; without the blend that jump shows as a seam.
            Passes of one motion frame are not blended (every frame sees the same future).
    """

    lookahead_ms: float = 200.0
    hop_ms: float = 100.0
    context_ms: float = 3000.0
    memory_s: float | None = 20.0
    crossfade: bool = True

    def __post_init__(self) -> None:
        for name in ("lookahead_ms", "hop_ms", "context_ms"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be a finite number >= 0, got {value}")
        if self.memory_s is not None and not (math.isfinite(self.memory_s) and self.memory_s > 0):
            raise ConfigError(f"memory_s must be > 0 seconds (or None for unbounded), got {self.memory_s}")


# ------------------------------------------------------------------------------------ pure arithmetic


def frames_for_ms(ms: float, rate: float) -> int:
    """Frames at ``rate`` Hz covering ``ms`` milliseconds (rounded up, so the wait is never shorter)."""
    return math.ceil(ms * rate / 1000.0 - 1e-9)


def frames_waited(total_samples: int, lookahead_ms: float, rate: float) -> int:
    """Encoder frames e (time e/rate) whose audio up to e/rate + lookahead_ms has arrived."""
    span = total_samples / SAMPLE_RATE - lookahead_ms / 1000.0
    return math.floor(span * rate + 1e-9) + 1 if span >= -1e-12 else 0


def frames_with_inputs(num_cnn: int, feature_rate: float, fps: float, k: int) -> int:
    """Encoder frames whose CNN inputs exist among the first ``num_cnn`` CNN frames (before the end).

    k = 0: frame e interpolates CNN frames floor/ceil of e·feature_rate/fps; k >= 1: one CNN frame each.
    """
    if num_cnn <= 0:
        return 0
    if k:
        return num_cnn
    return math.floor((num_cnn - 1) * fps / feature_rate + 1e-9) + 1


def feature_positions(start: int, stop: int, *, feature_rate: float, fps: float, anchor: int | None = None,
                      num_cnn: int = 0, num_frames: int = 0) -> torch.Tensor:
    """CNN-time positions of encoder frames ``start .. stop - 1`` (k = 0), as float64.

    Before the end (``anchor`` None) frame e sits at e·feature_rate/fps, its time. At the end, frames
    from ``anchor`` (the first not yet committed) on are stretched linearly so that frame
    ``num_frames - 1`` reads CNN frame ``num_cnn - 1``, offline's ``align_corners`` mapping; with
    anchor 0 this is exactly offline's ``e·(A-1)/(T-1)``.
    """
    e = torch.arange(start, stop, dtype=torch.float64)
    nominal = e * feature_rate / fps
    if anchor is None:
        return nominal
    base = anchor * feature_rate / fps
    span = num_frames - 1 - anchor
    slope = (num_cnn - 1 - base) / span if span > 0 else 0.0
    return torch.where(e < anchor, nominal, base + (e - anchor) * slope)


def first_layer_stats(raw_sum: float, raw_sumsq: float, raw_n: int, u_sum: torch.Tensor, u_sumsq: torch.Tensor,
                      u_n: int, kernel_sum: torch.Tensor, bias: torch.Tensor | None,
                      normalize: bool, eps: float) -> tuple[float, float, torch.Tensor, torch.Tensor]:
    """Input normalisation and first-layer group-norm statistics from running sums.

    With x̂ = (x - m)/s and u = W * x (the conv without bias): conv(x̂) = (u - m·ΣW)/s + b, so its
    per-channel mean is (mean_u - m·ΣW)/s + b and its variance var_u/s².

    Returns:
        (m, s, mean (C, 1), var (C, 1)) float32 tensors for the channel statistics.
    """
    m, s = 0.0, 1.0
    if normalize:
        m = raw_sum / raw_n
        s = math.sqrt(max(raw_sumsq / raw_n - m * m, 0.0) + eps)
    mean_u = u_sum / u_n
    var_u = (u_sumsq / u_n - mean_u * mean_u).clamp(min=0)
    mean = (mean_u - m * kernel_sum) / s + (0 if bias is None else bias.double())
    return m, s, mean.float()[:, None], (var_u / (s * s)).float()[:, None]


def crossfade_weights(count: int) -> torch.Tensor:
    """(count,) float32 weights of the new estimate for a pass's first ``count`` frames: j/count.

    The first frame is the previous pass's estimate of it, the same computation its predecessor came
    from; the new estimate's weight then grows by equal steps across the pass. (Measured on the demo
    model at a 100 ms hop and 200 ms look-ahead: motion into a pass's first frame 1.07x that elsewhere,
    against 1.33x unblended and 1.13x with weights (j+1)/(count+1); lip error unchanged.)
    """
    return torch.arange(count, dtype=torch.float32) / count


def auto_hop_ms(pass_seconds: float, frame_ms: float, margin: float = 1.5) -> float:
    """The hop for ``--hop-ms auto``: the fewest whole frames lasting ``margin`` x one pass's compute time.

    Latency ~ hop + look-ahead + compute, and a pass every hop must take at most 1/margin of it so
    that the stream keeps up with some room for other load.

    Args:
        pass_seconds: measured time of one pass committing one frame.
        frame_ms: duration of one encoder frame.
    """
    return max(1, math.ceil(margin * pass_seconds * 1000.0 / frame_ms - 1e-9)) * frame_ms


def measure_pass_seconds(model: TalkFaceModel, template: np.ndarray, style: np.ndarray, config: StreamConfig,
                         seconds: float = 0.3, repeats: int = 5) -> float:
    """The fastest of ``repeats`` one-frame passes, after one pass over ``seconds`` of noise (which warms the
    ops up; a stream's start-up waits for this probe, so it is kept short).

    Each timed pass is a frame of new audio, the look-ahead frames recomputed, as in the stream: a start-up
    cost of a few passes, not one pass per frame of a long probe. The fastest, not the median: at start-up
    the machine is busy with whatever started the stream (the audio source, the shell's pipeline), and a
    median of a few passes taken then picked a hop one or two frames too long; ``auto_hop_ms``'s margin
    covers the passes that run slower later.
    """
    probe = Streamer(model, template, style, replace(config, hop_ms=0.0))
    piece = round(SAMPLE_RATE / probe.rate)
    audio = np.random.default_rng(0).normal(scale=0.1, size=round(seconds * SAMPLE_RATE) + repeats * piece)
    audio = audio.astype(np.float32)
    start = round(seconds * SAMPLE_RATE)
    probe.push(audio[:start])
    times = []
    for first in range(start, audio.size - piece + 1, piece):
        began = time.perf_counter()
        if probe.push(audio[first: first + piece]).shape[0]:
            times.append(time.perf_counter() - began)
    return float(min(times)) if times else 0.0


class WindowCache(KVCache):
    """A ``KVCache`` that keeps the last ``window`` positions (a ring compacted every ``window`` steps)."""

    def __init__(self, window: int) -> None:
        super().__init__(2 * window)
        self.window = window

    def extend(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        step = keys.shape[2]
        if self.keys is not None and self.length + step > self.keys.shape[2]:
            keep = max(self.window - step, 0)
            self.keys[:, :, :keep] = self.keys[:, :, self.length - keep: self.length].clone()
            self.values[:, :, :keep] = self.values[:, :, self.length - keep: self.length].clone()
            self.length = keep
        keys, values = super().extend(keys, values)
        first = max(0, self.length - self.window)
        return keys[:, :, first:], values[:, :, first:]


# ------------------------------------------------------------------------------------ the streamer


class Streamer:
    """Turns 16 kHz audio pieces into final mesh frames, in order, with the model in eval mode.

    Args:
        model: a ``TalkFaceModel``.
        template: (V, 3) float32 neutral face.
        style: (N,) float32 weights over the training speakers.
        config: latency/memory knobs.

    ``push(samples)`` and ``finish()`` return the frames that became final, (n, V, 3) float32, frame
    indices ``emitted - n .. emitted - 1``; ``finish`` leaves ``model.num_frames_for(samples)`` frames
    in all, as ``generate`` makes.
    """

    def __init__(self, model: TalkFaceModel, template: np.ndarray, style: np.ndarray,
                 config: StreamConfig | None = None) -> None:
        self.model = model.eval()
        self.config = config = config or StreamConfig()
        enc = model.audio_encoder
        self.enc, self.w2v = enc, enc.wav2vec2
        cnn = self.w2v.feature_extractor.conv_layers
        norm = getattr(cnn[0], "layer_norm", None)
        self.group_norm = isinstance(norm, torch.nn.GroupNorm)
        if self.group_norm and norm.num_groups != norm.num_channels:
            raise ConfigError("streaming needs a wav2vec 2.0 CNN whose first group norm has one group per channel "
                              f"(found {norm.num_groups} groups for {norm.num_channels} channels)")
        dev = model.device
        self.template = torch.as_tensor(template, dtype=torch.float32, device=dev)
        style_t = torch.as_tensor(style, dtype=torch.float32, device=dev).reshape(-1)
        model._check_inputs(torch.zeros(enc.receptive_field), self.template, style_t)
        self.k = model.config.audio_frames_per_motion_frame
        self.width = alignment_width(self.k)
        self.rate = enc.feature_rate if self.k else model.config.fps  # encoder frames per second
        self.hop = max(1, frames_for_ms(config.hop_ms, self.rate))
        self.context = frames_for_ms(config.context_ms, self.rate)
        self.pos_pad = self.w2v.config.num_conv_pos_embeddings // 2
        pos = self.w2v.encoder.pos_conv_embed
        with torch.no_grad():  # weight norm g·v/||v|| once, not once per pass
            weight = pos.conv.weight.detach()
            self.pos_groups, self.pos_kernel = pos.conv.groups, weight.shape[-1]
            self.pos_weight = weight.reshape(self.pos_groups, weight.shape[0] // self.pos_groups, -1).transpose(1, 2)
            self.pos_weight = self.pos_weight.contiguous()  # (G, in/G·K, out/G)
        self.pos_bias, self.pos_activation = pos.conv.bias, pos.activation
        self.stable = bool(self.w2v.config.do_stable_layer_norm)
        # audio and CNN state: samples[0] is absolute sample `sample0`; cnn[0] is CNN frame `cnn0`
        self.samples = np.zeros(0, np.float32)
        self.sample0 = self.total = 0
        self.raw = [0.0, 0.0]  # sum, sum of squares (float64)
        conv0 = cnn[0].conv
        self.conv0 = conv0
        self.u = [torch.zeros(conv0.out_channels, dtype=torch.float64, device=dev) for _ in range(2)]
        self.u_n = 0
        self.kernel_sum = conv0.weight.detach().double().sum((1, 2))
        self.cnn = torch.zeros(0, enc.config.conv_dim[-1], device=dev)
        self.cnn0 = 0
        # encoder state: committed encoder frames, cached projected inputs and per-layer keys/values
        self.committed = 0
        self.inputs = None
        self.layer_kv: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(self.w2v.encoder.layers)
        # the same layers, their linear weights prepacked for oneDNN (a pass has few rows: 2-4x faster on CPU)
        self.layers = [packed_copy(layer) for layer in self.w2v.encoder.layers]
        self.projection = packed_copy(self.w2v.feature_projection)
        self.motion_head = packed_copy(model.motion_head)
        # decoder state
        dec_cfg = model.config
        window = None if config.memory_s is None else max(1, round(config.memory_s * dec_cfg.fps))
        self.caches = [KVCache(1024) if window is None else WindowCache(window) for _ in model.decoder.layers]
        self.bias_table = model.decoder.bias_by_distance(window or 1024, dev)
        with torch.no_grad():
            self.feed = model.feedback_map()
            self.style = model.style_embedding(style_t[None])  # (1, D)
        self.token = self.style[:, None]
        self.emitted = 0
        self.boundaries: deque[int] = deque(maxlen=4096)  # first frames of the last passes (where seams would be)
        self.ended = False
        self.anchor: int | None = None  # first uncommitted frame at the end of input (k = 0 stretch)
        self.estimate: torch.Tensor | None = None  # (1, n, H) last pass's encoder output for frames committed + i

    # -- public -----------------------------------------------------------------------------------
    @torch.no_grad()
    def push(self, samples: np.ndarray) -> np.ndarray:
        """Add (S,) float32 samples in [-1, 1]; return the frames that became final (n, V, 3).

        Audio that piled up (at start, after a stall) is encoded in one pass, up to the encoder's
        ``cnn_chunk_seconds`` (10 s) per pass: a pass costs about its audio times offline's real-time
        factor plus a fixed overhead, so one long pass catches up faster than many short ones, and its
        frames see more of the future than the look-ahead promises (never less).
        """
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        most = round(min(self.enc.window_seconds, self.enc.cnn_chunk_seconds) * SAMPLE_RATE)
        if samples.size > most:  # a long backlog: passes as long as offline's CNN chunks (memory stays flat)
            return np.concatenate([self.push(samples[i: i + most]) for i in range(0, samples.size, most)])
        if samples.size:
            self.samples = np.concatenate([self.samples, samples])
            self.total += samples.size
            self.raw[0] += float(samples.sum(dtype=np.float64))
            self.raw[1] += float(np.square(samples, dtype=np.float64).sum())
            self._update_conv_stats()
        ready = min(frames_with_inputs(self.enc.num_cnn_frames(self.total), self.enc.feature_rate,
                                       self.model.config.fps, self.k),
                    self.model.num_frames_for(self.total) * self.width)
        waited = frames_waited(self.total, self.config.lookahead_ms, self.rate)
        commit = (min(ready, waited) - self.committed) // self.width * self.width
        if commit < max(self.hop, self.width):
            return self._empty()
        return self._pass(ready, commit)

    def first_frames_samples(self) -> int:
        """Samples after which a pass can commit the first ``hop`` frames (look-ahead and CNN window included).

        A live loop that starts with a backlog (the audio that arrived while the model loaded) pushes
        this much first, so that the first frames leave after a short pass, then the rest in one pass.
        """
        frame_s = 1.0 / self.rate
        seconds = (max(self.hop, self.width) - 1) * frame_s + self.config.lookahead_ms / 1000.0
        return math.ceil(seconds * SAMPLE_RATE) + self.enc.receptive_field

    @torch.no_grad()
    def finish(self) -> np.ndarray:
        """End of input: commit every remaining frame; return them (n, V, 3)."""
        if self.ended:
            return self._empty()
        self.ended = True
        self.anchor = self.committed
        frames = self.model.num_frames_for(self.total)
        if frames < 1:
            raise AudioError(f"{self.total} samples give no motion frame at {self.model.config.fps:g} fps; "
                             "pass longer audio")
        ready = frames * self.width
        if ready <= self.committed:
            return self._empty()
        return self._pass(ready, ready - self.committed)

    # -- stages -----------------------------------------------------------------------------------
    def _empty(self) -> np.ndarray:
        return np.zeros((0, *self.template.shape), np.float32)

    def _update_conv_stats(self) -> None:
        kernel, stride = self.conv0.kernel_size[0], self.conv0.stride[0]
        stop = (self.total - kernel) // stride + 1
        if stop <= self.u_n:
            return
        a = self.u_n * stride - self.sample0
        piece = torch.from_numpy(self.samples[a: (stop - 1) * stride + kernel - self.sample0])
        piece = piece.to(self.template.device)
        u = F.conv1d(piece[None, None], self.conv0.weight, stride=stride)[0].double()  # (C, n)
        self.u[0] += u.sum(1)
        self.u[1] += (u * u).sum(1)
        self.u_n = stop

    def _cnn_upto(self, stop: int) -> None:
        """Compute CNN frames up to ``stop`` (exclusive) with the current statistics."""
        have = self.cnn0 + self.cnn.shape[0]
        if stop <= have:
            return
        enc = self.enc
        first = self.w2v.feature_extractor.conv_layers[0]
        norm = getattr(first, "layer_norm", None)
        m, s, mean, var = first_layer_stats(*self.raw, self.total, self.u[0], self.u[1], self.u_n, self.kernel_sum,
                                            self.conv0.bias, enc.normalize, NORM_EPS)
        a = have * enc.hop - self.sample0
        wav = torch.from_numpy(self.samples[a: a + (stop - have - 1) * enc.hop + enc.receptive_field])
        wav = (wav.to(self.template.device) - m) / s
        if self.group_norm:
            hidden = (self.conv0(wav[None, None]) - mean) / torch.sqrt(var + norm.eps)
            hidden = first.activation(hidden * norm.weight[:, None] + norm.bias[:, None])
        else:
            hidden = first(wav[None, None])
        for layer in self.w2v.feature_extractor.conv_layers[1:]:
            hidden = layer(hidden)
        self.cnn = torch.cat([self.cnn, hidden[0].T])
        drop = stop * enc.hop - self.sample0
        self.samples, self.sample0 = self.samples[drop:], self.sample0 + drop

    def _encoder_inputs(self, start: int, stop: int) -> torch.Tensor:
        """(n, C) CNN features of encoder frames ``start .. stop - 1``."""
        if self.k:
            self._cnn_upto(stop)
            return self.cnn[start - self.cnn0: stop - self.cnn0]
        fps, rate = self.model.config.fps, self.enc.feature_rate
        anchor = self.anchor
        num_cnn = self.enc.num_cnn_frames(self.total)
        pos = feature_positions(start, stop, feature_rate=rate, fps=fps, anchor=anchor, num_cnn=num_cnn,
                                num_frames=self.model.num_frames_for(self.total))
        lo = pos.floor().long()
        hi = torch.clamp(lo + 1, max=num_cnn - 1)
        self._cnn_upto(int(hi.max()) + 1)
        weight = (pos - lo).float()[:, None].to(self.cnn.device)
        low, high = self.cnn[lo - self.cnn0], self.cnn[hi - self.cnn0]
        return low + (high - low) * weight

    def _pass(self, ready: int, commit: int) -> np.ndarray:
        start = self.committed
        x = self.projection(self._encoder_inputs(start, ready)[None])
        x = x[0] if isinstance(x, tuple) else x  # (1, n, H)
        context = x if self.inputs is None else torch.cat([self.inputs, x], 1)
        pe = self._positions(context, x.shape[1])
        hidden = x + pe
        if not self.stable:
            hidden = self.w2v.encoder.layer_norm(hidden)
        for i, layer in enumerate(self.layers):
            hidden = self._layer(i, layer, hidden, commit)
        if self.stable:
            hidden = self.w2v.encoder.layer_norm(hidden)
        hidden = self._crossfade(hidden, commit)
        kept = torch.cat([context[:, : context.shape[1] - x.shape[1]], x[:, :commit]], 1)
        self.inputs = kept[:, kept.shape[1] - self.pos_pad:]  # what the positional conv reads left of new frames
        self.committed += commit
        self.boundaries.append(self.emitted)
        self._trim_cnn()
        return self._decode(self.model.audio_feature_map(hidden[:, :commit]))

    def _positions(self, context: torch.Tensor, n: int) -> torch.Tensor:
        """The positional conv embedding of the last ``n`` of ``context``'s (1, L, H) frames, (1, n, H).

        Offline computes it for every frame with K//2 zeros padded on each side (an even kernel's extra last
        output dropped): output p reads inputs p - K//2 .. p + K - 1 - K//2. Only the last n are needed, so
        only they are computed, from the inputs they read (zeros where those lie outside ``context``).
        """
        kernel, length, groups = self.pos_kernel, context.shape[1], self.pos_groups
        first = length - n - kernel // 2
        window = context[0, max(first, 0):].T  # (H, ...)
        window = F.pad(window, (max(-first, 0), kernel - 1 - kernel // 2))  # (H, n + K - 1)
        # a grouped conv with n outputs as one batched product (the conv op re-lays out its 4.7M-weight
        # kernel on every call, which took longer than the arithmetic of a few outputs)
        patches = window.reshape(groups, -1, window.shape[-1]).unfold(2, kernel, 1)  # (G, H/G, n, K)
        patches = patches.transpose(1, 2).reshape(groups, n, -1)  # (G, n, H/G·K)
        out = torch.bmm(patches, self.pos_weight).transpose(0, 1).reshape(n, -1) + self.pos_bias  # (n, H)
        return self.pos_activation(out)[None]

    def _crossfade(self, hidden: torch.Tensor, commit: int) -> torch.Tensor:
        """Blend the committed frames' (1, n, H) encoder output with the last pass's estimate of them."""
        previous, self.estimate = self.estimate, hidden[:, commit:]
        if previous is None or not self.config.crossfade or commit <= self.width:
            return hidden  # a one-frame pass: every frame sees the same future, nothing to blend
        count = min(commit, previous.shape[1])
        if count == 0:
            return hidden
        w = crossfade_weights(count).to(hidden.device)[None, :, None]
        blended = w * hidden[:, :count] + (1 - w) * previous[:, :count]
        return torch.cat([blended, hidden[:, count:]], 1)

    def _layer(self, i: int, layer: torch.nn.Module, hidden: torch.Tensor, commit: int) -> torch.Tensor:
        """One wav2vec 2.0 encoder layer on the query frames, attending to cached + query keys."""
        attn = layer.attention
        source = layer.layer_norm(hidden) if self.stable else hidden
        heads, dh = attn.num_heads, attn.head_dim

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(1, -1, heads, dh).transpose(1, 2)

        q, k, v = split(attn.q_proj(source)), split(attn.k_proj(source)), split(attn.v_proj(source))
        cached = self.layer_kv[i]
        keys = k if cached is None else torch.cat([cached[0], k], 2)
        values = v if cached is None else torch.cat([cached[1], v], 2)
        out = F.scaled_dot_product_attention(q, keys, values, scale=attn.scaling)
        out = attn.out_proj(out.transpose(1, 2).reshape(1, -1, heads * dh))
        if self.context:
            self.layer_kv[i] = (keys[:, :, : keys.shape[2] - k.shape[2] + commit][:, :, -self.context:],
                                values[:, :, : keys.shape[2] - k.shape[2] + commit][:, :, -self.context:])
        if self.stable:
            hidden = hidden + out
            return hidden + layer.feed_forward(layer.final_layer_norm(hidden))
        hidden = layer.layer_norm(hidden + out)
        return layer.final_layer_norm(hidden + layer.feed_forward(hidden))

    def _trim_cnn(self) -> None:
        """Drop CNN frames no uncommitted encoder frame can read."""
        if self.k:
            keep = self.committed
        else:
            keep = math.floor(self.committed * self.enc.feature_rate / self.model.config.fps + 1e-9)
        keep = min(keep, self.cnn0 + self.cnn.shape[0])
        self.cnn, self.cnn0 = self.cnn[keep - self.cnn0:], keep

    def _decode(self, memory: torch.Tensor) -> np.ndarray:
        """Continue the KV-cached decoder over (1, w*n, D) features; return (n, V, 3) vertices."""
        decoder, positional = self.model.decoder, self.model.positional
        memory_kv = decoder.memory_keys_values(memory, self.width)
        count = memory.shape[1] // self.width
        states = memory.new_empty(1, count, self.model.config.feature_dim)
        for j in range(count):
            t = self.emitted + j
            x = positional(self.token, offset=t)
            cache = self.caches[0]
            n = min(cache.length + 1, getattr(cache, "window", cache.length + 1))  # keys after this step
            if n > self.bias_table.shape[1]:
                self.bias_table = decoder.bias_by_distance(2 * n, memory.device)
            bias = self.bias_table[:, :n].flip(-1)[None, :, None]
            for layer, kv, cache in zip(decoder.layers, memory_kv, self.caches, strict=True):
                x = layer(x, kv, bias, j, cache)
            states[:, j: j + 1] = x
            self.token = F.linear(x, *self.feed) + self.style[:, None]
        self.emitted += count
        offsets = self.motion_head(states).view(count, -1, 3)
        return (offsets + self.template).cpu().numpy().astype(np.float32)
