"""Inference: animate speech with a trained model (style parsing, template choice, autoregressive generation)."""

from talkface.inference.generate import Style, animate, choose_template, evaluation_styles, make_animation, parse_style

__all__ = ["animate", "choose_template", "evaluation_styles", "make_animation", "parse_style", "Style"]
