"""Inference: animate speech with a trained model (style parsing, template choice, autoregressive generation),
offline or streamed live with bounded latency (``Streamer``)."""

from talkface.inference.generate import (
    Style,
    animate,
    check_finite_output,
    choose_template,
    evaluation_styles,
    make_animation,
    parse_style,
)
from talkface.inference.stream import StreamConfig, Streamer, auto_hop_ms, measure_pass_seconds

__all__ = [
    "animate",
    "auto_hop_ms",
    "check_finite_output",
    "choose_template",
    "evaluation_styles",
    "make_animation",
    "measure_pass_seconds",
    "parse_style",
    "StreamConfig",
    "Streamer",
    "Style",
]
