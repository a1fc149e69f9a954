"""A synthetic talking-head corpus: procedural head, synthetic speech, phoneme-driven mouth motion.

talkface cannot ship VOCASET, so its demo and tests make their own data in VOCASET's raw format
(``write_synthetic_vocaset``) and go through the same ``prepare vocaset`` path a real user takes.
Modules: ``head`` (the mesh, regions and motion bases), ``speech`` (espeak-ng or a formant fallback,
with phoneme timing), ``motion`` (phonemes -> 60 fps activations -> vertices) and ``corpus`` (the files).
Nothing here imports torch.
"""

from talkface.synthetic.corpus import (
    SENTENCES,
    Speaker,
    SyntheticReport,
    lip_opening,
    make_speakers,
    write_synthetic_vocaset,
)
from talkface.synthetic.head import (
    BASIS_NAMES,
    REGION_NAMES,
    Head,
    HeadShape,
    build_head,
    load_head_asset,
    save_head_asset,
    vary_head,
)
from talkface.synthetic.motion import MotionStyle, activation_curves, animate_head, articulation
from talkface.synthetic.speech import VoiceSpec, espeak_available, synthesize, text_to_phonemes

__all__ = [
    "BASIS_NAMES",
    "REGION_NAMES",
    "SENTENCES",
    "Head",
    "HeadShape",
    "MotionStyle",
    "Speaker",
    "SyntheticReport",
    "VoiceSpec",
    "activation_curves",
    "animate_head",
    "articulation",
    "build_head",
    "espeak_available",
    "lip_opening",
    "load_head_asset",
    "make_speakers",
    "save_head_asset",
    "synthesize",
    "text_to_phonemes",
    "vary_head",
    "write_synthetic_vocaset",
]
