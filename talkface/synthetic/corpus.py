"""A synthetic talking-head corpus written in VOCASET's raw format (REFERENCE §4.1).

Several synthetic speakers (each with a voice, a speaking style and a head shape) read the same
short sentences. The output folder holds exactly the four files a VOCASET user has, so the demo goes
through the same ``prepare vocaset`` path as real data:

- ``data_verts.npy``: (N_total, V, 3) float32, 60 fps, every clip's frames one after another;
- ``raw_audio_fixed.pkl``: ``dict[subject][sentence] = {'audio': int16 (S,), 'sample_rate': 22000}``;
- ``templates.pkl``: ``dict[subject] = (V, 3)`` float32 neutral shape;
- ``subj_seq_to_idx.pkl``: ``dict[subject][sentence] = dict[frame_index -> row of data_verts]``;

plus ``splits.toml`` (the train/val/test rules), ``head.npz`` (faces, regions and bases of the head),
``synthetic.json`` (every speaker's parameters) and a ``README.md``. The pickles are protocol 2 and
name numpy's array reconstructor the way numpy 1 did (``numpy.core.multiarray``), as VOCASET's
Python-2 pickles do, so they load under numpy 1 and 2 alike.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talkface.errors import AudioError, ConfigError, OutputError
from talkface.io.fileio import atomic_path, write_text_atomic
from talkface.synthetic.head import Head, HeadShape, load_head_asset, save_head_asset, vary_head
from talkface.synthetic.motion import FPS, MotionStyle, activation_curves, animate_head, clip_time_shift
from talkface.synthetic.speech import SAMPLE_RATE, VoiceSpec, espeak_available, synthesize

SENTENCES = (
    "Mama bought a big blue boat at the market.",
    "Bob and Pam ate apple pie by the barn.",
    "A happy cow walked past my father's farm.",
    "Open the window and wave to the boys.",
    "Paul saw a bright moon above the bay.",
    "Please bring my hot soup home before noon.",
    "We moved our boxes by the blue pool.",
    "Arthur found a map of old Rome in a box.",
    "My mother baked warm plum buns for us.",
    "Two brown owls woke up the sleepy baby.",
    "The puppy jumped over a huge blue bubble.",
    "Amy opened both barn doors at dawn.",
    "Maybe Bart can borrow my brown umbrella.",
    "Bobby wore a pink robe to the opera.",
    "Palm trees swayed as the warm wind blew.",
    "Oh, what a wonderful, bubbly balloon.",
    # more sentences for experiments that need more than the demo's (appended: the first 16 never change)
    "Peter put the purple map back in the box.",
    "We watched a white moth move above the lamp.",
    "Bill was hoping for a warm day by the water.",
    "My boss brought fresh bread and boiled eggs.",
    "The old man opened a bottle of maple syrup.",
    "Wendy wove a bow of pale blue ribbon.",
    "Both puppies slept in a pile by the fire.",
    "Maybe we should walk home before the storm.",
    "Pam wore a bright woolen cap to the game.",
    "A small boy pulled a wagon up the path.",
    "Mike put the wet mop by the back porch.",
    "Bring me a bowl of warm oatmeal, please.",
    "The moon rose above the pine woods at nine.",
    "Fifty brave sailors rowed away from the bay.",
    "Molly might buy a new pair of boots.",
    "We will meet by the bus stop at ten.",
    "Papa poured more apple wine for Bob.",
    "A wild bear wandered by our camp at noon.",
    "Mom mailed a postcard from the beach.",
    "The wind blew my paper boat away.",
    "Bubbles popped when Bobby blew on the soap.",
    "I owe you a bowl of plum pudding.",
    "Ben moved the piano by the window.",
    "Everybody waved when the boat came home.",
)
_VOICES = (  # (espeak-ng voice, fallback f0 in Hz, fallback formant scale)
    ("en+m3", 115.0, 1.0), ("en+f2", 205.0, 1.15), ("en-us+m1", 125.0, 1.0),
    ("en+f4", 220.0, 1.17), ("en+m5", 105.0, 0.97), ("en-us+f1", 195.0, 1.13),
)
MARKER = "synthetic.json"
RAW_FILES = ("data_verts.npy", "raw_audio_fixed.pkl", "templates.pkl", "subj_seq_to_idx.pkl")


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: a name, a voice, a motion style and a head shape."""

    name: str
    voice: VoiceSpec
    style: MotionStyle
    shape: HeadShape


@dataclass(frozen=True)
class SyntheticReport:
    """What ``write_synthetic_vocaset`` wrote.

    Attributes:
        speakers: subject names, train speakers first.
        clips: number of (speaker, sentence) clips.
        frames: total frames in ``data_verts.npy`` (60 fps).
        seconds: total audio duration.
        used_espeak: True when espeak-ng spoke, False when the formant fallback did.
        out_dir: the corpus folder.
    """

    speakers: tuple[str, ...]
    clips: int
    frames: int
    seconds: float
    used_espeak: bool
    out_dir: Path


# The default corpus (the demo's) is physically plausible: a face and its voice come from one event, so each
# speaker's motion runs at the audio's tempo, apart from a constant capture offset of at most one 60-fps frame
# either way (speakers differ by 0-2 frames). Tempo warps and wider lags are the experiment's explicit corpus
# variants (benchmarks/softdtw_vs_mse.py), not the default (issue #27).
DEFAULT_MAX_LAG_S = 1.0 / FPS  # speakers' capture offsets spread evenly over ±this, seconds
DEFAULT_TEMPO_RANGE = (1.0, 1.0)  # speakers' tempo factors are drawn uniformly from this range (1: no warp)


def make_speakers(
    num_speakers: int,
    seed: int,
    *,
    max_lag_s: float = DEFAULT_MAX_LAG_S,
    tempo_range: tuple[float, float] = DEFAULT_TEMPO_RANGE,
) -> list[Speaker]:
    """Deterministic speakers ``SynthTalk_01``...: voices cycle, styles and shapes are drawn from ``seed``.

    Args:
        num_speakers: how many.
        seed: draws voices, styles and shapes.
        max_lag_s: lead/lag of the motion against the audio, spread evenly over ``±max_lag_s`` seconds.
        tempo_range: (low, high) of the uniformly drawn tempo factors.

    The defaults give the demo's corpus (motion synchronous with the audio up to a constant per-speaker
    offset of at most one 60-fps frame, no tempo warp); other values change only the lags and tempos
    (the same random draws, so voices, styles and shapes stay).
    """
    _check_timing(max_lag_s, tempo_range)
    rng = np.random.default_rng(seed)
    lags = rng.permutation(np.linspace(-max_lag_s, max_lag_s, num_speakers))  # spread lead/lag over the speakers
    speakers = []
    for i in range(num_speakers):
        espeak_voice, f0, formants = _VOICES[i % len(_VOICES)]
        voice = VoiceSpec(espeak_voice=espeak_voice, rate_wpm=int(rng.integers(155, 186)),
                          pitch=int(rng.integers(35, 66)), pitch_range=int(rng.integers(40, 71)),
                          f0_hz=float(f0 * rng.uniform(0.95, 1.05)), formant_scale=formants)
        style = MotionStyle(amplitude=float(rng.uniform(0.8, 1.25)), asymmetry=float(rng.uniform(-0.5, 0.5)),
                            lag_s=float(np.round(lags[i], 4)), tempo=float(rng.uniform(*tempo_range)))
        u = rng.uniform(-1.0, 1.0, size=6)
        shape = HeadShape(scale=1 + 0.05 * u[0], width=1 + 0.03 * u[1], height=1 + 0.03 * u[2],
                          depth=1 + 0.03 * u[3], jaw_width=1 + 0.08 * u[4], nose=1 + 0.2 * u[5])
        speakers.append(Speaker(f"SynthTalk_{i + 1:02d}", voice, style, shape))
    return speakers


def _check_timing(max_lag_s: float, tempo_range: tuple[float, float]) -> None:
    """Reject lag and tempo settings that would not make a sensible corpus."""
    if not (np.isfinite(max_lag_s) and 0.0 <= max_lag_s <= 0.5):
        raise ConfigError(f"max_lag_s is {max_lag_s!r}; expected 0 to 0.5 seconds (the demo uses "
                          f"{DEFAULT_MAX_LAG_S:.4f})")
    low, high = (float(v) for v in tempo_range)
    if not (np.isfinite(low) and np.isfinite(high) and 0.5 <= low <= high <= 2.0):
        raise ConfigError(f"tempo_range is {tempo_range!r}; expected 0.5 <= low <= high <= 2 (the demo uses "
                          f"{DEFAULT_TEMPO_RANGE})")


def sentence_name(number: int) -> str:
    """``sentence01`` ... (1-based), VOCASET's naming."""
    return f"sentence{number:02d}"


def split_spec(speakers: list[str], num_sentences: int) -> dict[str, dict[str, list]]:
    """Train on all but the last two sentences of the first ~2/3 of the speakers; validate on the
    next sentence of those speakers; test on the last sentence of every speaker (the unseen ones too)."""
    num_train = max(1, len(speakers) - max(1, len(speakers) // 3))
    train = speakers[:num_train]
    return {
        "train": {"speakers": train, "sentences": [1, num_sentences - 2]},
        "val": {"speakers": train, "sentences": [num_sentences - 1, num_sentences - 1]},
        "test": {"speakers": list(speakers), "sentences": [num_sentences, num_sentences]},
    }


def splits_toml(spec: dict[str, dict[str, list]]) -> str:
    """The split spec as TOML (train speakers first; their order is the one-hot style order)."""
    lines = ["# train/val/test rules for talkface prepare --splits (sentence ranges are inclusive)"]
    for name in ("train", "val", "test"):
        rule = spec[name]
        lines += [f"[{name}]", "speakers = [" + ", ".join(json.dumps(s) for s in rule["speakers"]) + "]",
                  f"sentences = [{rule['sentences'][0]}, {rule['sentences'][1]}]"]
    return "\n".join(lines) + "\n"


def lip_opening(vertices: np.ndarray, head: Head) -> np.ndarray:
    """Mouth opening per frame: mean height of the upper-lip vertices minus that of the lower lip.

    Args:
        vertices: (T, V, 3) vertices in the head's topology, metres (+y up).
        head: gives the ``upper_lip`` and ``lower_lip`` regions.

    Returns:
        (T,) float64 metres; a positive constant (the lips' own height) at rest that grows as the mouth opens.
    """
    v = np.asarray(vertices, dtype=np.float64)
    return v[:, head.regions["upper_lip"], 1].mean(axis=1) - v[:, head.regions["lower_lip"], 1].mean(axis=1)


def _dump_pickle(obj: object, path: Path) -> None:
    """Protocol-2 pickle whose arrays name ``numpy.core.multiarray._reconstruct``, like VOCASET's files.

    numpy 2 writes ``numpy._core``, which numpy 1 cannot import. Protocol 2 spells a global as the
    text line pair ``c<module>\\n<name>\\n`` with no length prefix, so renaming the module is safe.
    """
    data = pickle.dumps(obj, protocol=2)
    data = data.replace(b"cnumpy._core.multiarray\n_reconstruct\n", b"cnumpy.core.multiarray\n_reconstruct\n")
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _espeak_works() -> bool:
    """espeak-ng is installed and speaks (one short probe), so a whole corpus uses one synthesiser."""
    if not espeak_available():
        return False
    try:
        synthesize("test", VoiceSpec(), use_espeak=True)
    except AudioError as e:
        warnings.warn(f"{e}; the synthetic corpus uses the formant fallback instead", RuntimeWarning, stacklevel=3)
        return False
    return True


def _check_out_dir(out: Path) -> None:
    """Refuse to write into a non-empty folder that is not an earlier synthetic corpus (e.g. real VOCASET)."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: is a file; expected a folder for the synthetic corpus")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise OutputError(f"{out}: folder is not empty and holds no {MARKER}; choose an empty or new folder")


def _readme(speakers: list[Speaker], sentences: tuple[str, ...], report: SyntheticReport, spec: dict) -> str:
    rows = "\n".join(
        f"| {s.name} | {s.voice.espeak_voice} | {s.voice.rate_wpm} | {s.voice.pitch} | {s.style.amplitude:.2f} "
        f"| {s.style.asymmetry:+.2f} | {1000 * s.style.lag_s:+.0f} | {s.style.tempo:.3f} | {s.shape.scale:.3f} |"
        for s in speakers
    )
    sents = "\n".join(f"{i + 1}. `{sentence_name(i + 1)}`: {t}" for i, t in enumerate(sentences))
    voice = "espeak-ng" if report.used_espeak else "talkface's formant synthesiser (espeak-ng was not used)"
    return f"""# Synthetic talking-head corpus (VOCASET raw format)

Generated by `talkface.synthetic.write_synthetic_vocaset`: {len(speakers)} speakers x {len(sentences)} sentences
= {report.clips} clips, {report.frames} frames at 60 fps, {report.seconds:.1f} s of speech spoken by {voice}.
The head is talkface's procedural mesh (`head.npz`: vertices, faces, regions, motion bases; metres,
+y up, face along +z). Each speaker has their own head shape (`templates.pkl`), voice, and motion
style: amplitude, a one-sided smile that follows the jaw (asymmetry), a constant lag of the motion against
the audio (a capture offset; positive = motion later) and a tempo factor around the middle of each clip
(1 = the motion runs at the audio's tempo, as a real capture does; other values are experiment variants).

| subject | voice | words/min | pitch | amplitude | asymmetry | lag (ms) | tempo | head scale |
|---|---|---|---|---|---|---|---|---|
{rows}

Sentences:
{sents}

Splits (`splits.toml`): train {spec['train']['speakers']} on sentences {spec['train']['sentences']};
val the same speakers on {spec['val']['sentences']}; test every speaker on {spec['test']['sentences']}
(the speakers not in train are unseen).

Files: `data_verts.npy` (N, V, 3) float32; `raw_audio_fixed.pkl` dict[subject][sentence] = {{'audio': int16,
'sample_rate': {SAMPLE_RATE}}}; `templates.pkl` dict[subject] = (V, 3); `subj_seq_to_idx.pkl`
dict[subject][sentence] = {{frame: row}}. Pickles are protocol 2; read them with
`pickle.load(f, encoding="latin1")`. Next step: `talkface prepare vocaset <this folder> <out> --splits splits.toml`.
"""


def write_synthetic_vocaset(
    out_dir: str | os.PathLike[str],
    *,
    num_speakers: int = 6,
    num_sentences: int = 8,
    seed: int = 0,
    use_espeak: bool | None = None,
    on_progress: Callable[[int, int, str], None] | None = None,
    max_lag_s: float = DEFAULT_MAX_LAG_S,
    tempo_range: tuple[float, float] = DEFAULT_TEMPO_RANGE,
    clip_offset_s: float = 0.0,
    clip_warp_s: float = 0.0,
) -> SyntheticReport:
    """Generate the synthetic corpus in VOCASET's raw format.

    Args:
        out_dir: folder to write (created; an earlier synthetic corpus there is replaced).
        num_speakers: speakers, at least 2 (about a third are held out of training).
        num_sentences: sentences per speaker, 3 to ``len(SENTENCES)``.
        seed: draws the speakers' voices, styles and shapes; the output depends only on it
            (and on whether espeak-ng is used).
        use_espeak: True requires espeak-ng, False uses the formant fallback, None picks espeak-ng
            when it is installed and speaks (else the fallback, with a ``RuntimeWarning``).
        on_progress: called as ``on_progress(done, total, clip_name)`` after each clip.
        max_lag_s, tempo_range: the speakers' timing spread (see ``make_speakers``); the defaults
            give the demo's corpus: motion synchronous with the audio up to a constant per-speaker
            offset within ±1 frame at 60 fps, no tempo warp.
        clip_offset_s, clip_warp_s: per-clip capture-sync jitter that neither the audio nor the speaker
            predicts: a constant motion offset drawn in ±``clip_offset_s`` and a slow time warp of
            amplitude up to ``clip_warp_s`` (``motion.clip_time_shift``), drawn per clip from ``seed``;
            0 (the default) for none.

    Returns:
        A ``SyntheticReport``.

    Raises:
        ConfigError: a count is out of range.
        OutputError: ``out_dir`` is a file or a non-empty folder that is not a synthetic corpus.
        AudioError: espeak-ng was required and is missing or failed.
    """
    if num_speakers < 2:
        raise ConfigError(f"num_speakers is {num_speakers}; expected at least 2 (one is held out for testing)")
    if not 3 <= num_sentences <= len(SENTENCES):
        raise ConfigError(f"num_sentences is {num_sentences}; expected 3 to {len(SENTENCES)} (train, val, test)")
    _check_timing(max_lag_s, tempo_range)
    for name, value in (("clip_offset_s", clip_offset_s), ("clip_warp_s", clip_warp_s)):
        if not (np.isfinite(value) and 0.0 <= value <= 0.15):
            raise ConfigError(f"{name} is {value!r}; expected 0 to 0.15 seconds (0: no per-clip jitter)")
    out = Path(out_dir)
    _check_out_dir(out)

    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / MARKER, "{}\n")  # claims the folder, so a failed run can be re-run there
    espeak = _espeak_works() if use_espeak is None else bool(use_espeak)
    speakers = make_speakers(num_speakers, seed, max_lag_s=max_lag_s, tempo_range=tempo_range)
    sentences = SENTENCES[:num_sentences]
    jobs = [(s, j) for s in range(num_speakers) for j in range(num_sentences)]
    total = len(jobs)

    def speak(job: tuple[int, int]) -> tuple[np.ndarray, list]:
        s, j = job
        return synthesize(sentences[j], speakers[s].voice, SAMPLE_RATE, use_espeak=espeak)

    # espeak-ng runs in child processes, so threads overlap them (the results keep job order); the
    # numpy fallback holds the GIL for much of its work and runs fastest alone.
    workers = max(1, min(4, os.cpu_count() or 1)) if espeak else 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        spoken = list(pool.map(speak, jobs))

    base = load_head_asset()
    heads = [vary_head(base, sp.shape) for sp in speakers]
    frames = [max(1, int(audio.size * FPS // SAMPLE_RATE)) for audio, _ in spoken]
    num_frames = int(sum(frames))

    audio_dict: dict[str, dict[str, dict]] = {sp.name: {} for sp in speakers}
    index: dict[str, dict[str, dict[int, int]]] = {sp.name: {} for sp in speakers}
    with atomic_path(out / "data_verts.npy") as tmp:
        verts = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(num_frames, base.num_vertices, 3))
        row = 0
        jitter_rng = np.random.default_rng([seed, 17])
        for done, ((s, j), (audio, phonemes), n) in enumerate(zip(jobs, spoken, frames, strict=True), start=1):
            sp, name = speakers[s], sentence_name(j + 1)
            shift = None
            if clip_offset_s or clip_warp_s:
                shift = clip_time_shift(n, FPS, jitter_rng, clip_offset_s, clip_warp_s)
            verts[row : row + n] = animate_head(heads[s], activation_curves(phonemes, n, sp.style, time_shift=shift))
            audio_dict[sp.name][name] = {"audio": audio, "sample_rate": SAMPLE_RATE}
            index[sp.name][name] = {f: row + f for f in range(n)}
            row += n
            if on_progress is not None:
                on_progress(done, total, f"{sp.name}/{name}")
        verts.flush()
        del verts
    _dump_pickle(audio_dict, out / "raw_audio_fixed.pkl")
    _dump_pickle({sp.name: h.vertices for sp, h in zip(speakers, heads, strict=True)}, out / "templates.pkl")
    _dump_pickle(index, out / "subj_seq_to_idx.pkl")

    names = [sp.name for sp in speakers]
    spec = split_spec(names, num_sentences)
    write_text_atomic(out / "splits.toml", splits_toml(spec))
    save_head_asset(out / "head.npz", base)
    report = SyntheticReport(
        speakers=tuple(names), clips=total, frames=num_frames,
        seconds=float(sum(a.size for a, _ in spoken) / SAMPLE_RATE), used_espeak=espeak, out_dir=out,
    )
    meta = {"seed": seed, "used_espeak": espeak, "fps": FPS, "sample_rate": SAMPLE_RATE,
            "max_lag_s": max_lag_s, "tempo_range": list(tempo_range), "clip_offset_s": clip_offset_s,
            "clip_warp_s": clip_warp_s, "sentences": list(sentences), "splits": spec,
            "speakers": [dataclasses.asdict(sp) for sp in speakers]}
    write_text_atomic(out / MARKER, json.dumps(meta, indent=2) + "\n")
    write_text_atomic(out / "README.md", _readme(speakers, sentences, report, spec))
    return report
