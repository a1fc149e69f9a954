"""Synthetic speech with phoneme timing: espeak-ng when it is installed, a formant synthesiser otherwise.

espeak-ng's command line reports phoneme timing only through MBROLA voices (``--pho``), which Debian
does not install by default, but its C library reports a phoneme event with the exact output sample
for every phoneme it speaks. talkface drives ``libespeak-ng`` through ctypes in a short-lived child
Python process: the library keeps random pitch "flutter" state across calls, so a fresh process per
sentence is what makes the audio depend only on the text and the voice (and a hung or crashing
library cannot take the caller down).

The fallback spells the text with a few English letter-to-sound rules into the same phoneme names
espeak-ng uses (Kirshenbaum-style: ``a``, ``A:``, ``u:``, ``oU``, ``m``, ``S`` ...) and synthesises them
with a small source-filter model: harmonics of a declining pitch shaped by three formant resonances
for voiced sounds, band-passed noise for fricatives and bursts, silence for stop closures. Its
phoneme timing is known by construction.

Over 400 lines: the espeak-ng driver and the formant fallback return the same phoneme-timed
output and ``synthesize`` chooses between them; one file keeps that shared contract in view.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import re
import shutil
import subprocess
import sys
import warnings
import zlib
from dataclasses import dataclass

import numpy as np

from talkface.errors import AudioError
from talkface.io.audio import resample

SAMPLE_RATE = 22_000  # VOCASET's raw audio rate
LEAD_SILENCE_S = 0.20  # silence before speech, so every clip starts with the mouth at rest
TAIL_SILENCE_S = 0.15
PAUSE = "_"

Phonemes = list[tuple[str, float, float]]  # (phoneme, start_s, end_s), contiguous, from 0


@dataclass(frozen=True)
class VoiceSpec:
    """One synthetic speaker's voice.

    Attributes:
        espeak_voice: espeak-ng voice and variant, e.g. ``"en+m3"`` or ``"en-us+f2"``.
        rate_wpm: speaking rate in words per minute (espeak-ng accepts 80-450).
        pitch: espeak-ng base pitch, 0-100.
        pitch_range: espeak-ng pitch range (intonation), 0-100.
        f0_hz: fallback synthesiser's base pitch in Hz.
        formant_scale: fallback vocal-tract factor on formant frequencies (about 1.0 male, 1.15 female).
    """

    espeak_voice: str = "en+m3"
    rate_wpm: int = 150
    pitch: int = 50
    pitch_range: int = 50
    f0_hz: float = 120.0
    formant_scale: float = 1.0


# ------------------------------------------------------------------------------------------ espeak-ng
_WORKER = r"""
import ctypes, json, sys
args = json.loads(sys.argv[1])
lib = ctypes.CDLL(args["lib"])
class Id(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]
class Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", Id)]
Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(Event))
lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                             ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
rate = lib.espeak_Initialize(2, 0, None, 1)  # synchronous, default buffer, phoneme events on
if rate <= 0:
    sys.exit("espeak_Initialize failed")
chunks, events = [], []
def on_audio(wav, n, ev):
    if n > 0:
        chunks.append(ctypes.string_at(wav, 2 * n))
    i = 0
    while ev[i].type != 0:
        if ev[i].type == 7:  # espeakEVENT_PHONEME
            events.append([ev[i].id.string.decode("ascii", "replace"), ev[i].sample])
        i += 1
    return 0
keep = Callback(on_audio)
lib.espeak_SetSynthCallback(keep)
if lib.espeak_SetVoiceByName(args["voice"].encode()) != 0:
    sys.exit("unknown espeak-ng voice " + repr(args["voice"]))
for key, value in ((1, args["rate"]), (3, args["pitch"]), (4, args["range"])):
    lib.espeak_SetParameter(key, value, 0)
text = args["text"].encode("utf-8")
if lib.espeak_Synth(text, len(text) + 1, 0, 1, 0, 1, None, None) != 0:  # POS_CHARACTER, espeakCHARS_UTF8
    sys.exit("espeak_Synth failed")
sys.stdout.buffer.write(json.dumps({"rate": rate, "events": events}).encode() + b"\n" + b"".join(chunks))
"""


def _espeak_library() -> str | None:
    """The libespeak-ng file name the dynamic loader can open, or None."""
    for name in (ctypes.util.find_library("espeak-ng"), "libespeak-ng.so.1"):
        if name:
            try:
                ctypes.CDLL(name)  # only maps the library; espeak-ng initialises nothing until called
            except OSError:
                continue
            return name
    return None


def espeak_available() -> bool:
    """True when the ``espeak-ng`` program and its shared library are installed."""
    return shutil.which("espeak-ng") is not None and _espeak_library() is not None


def _run_espeak(text: str, voice: VoiceSpec, timeout_s: float = 60.0) -> tuple[np.ndarray, int, list]:
    """Raw espeak-ng output: int16 samples, its sample rate and [phoneme, start_sample] events."""
    lib = _espeak_library()
    if shutil.which("espeak-ng") is None or lib is None:
        raise AudioError("espeak-ng is not installed; install it (apt-get install espeak-ng) or use the fallback")
    args = {"lib": lib, "voice": voice.espeak_voice, "rate": int(voice.rate_wpm), "pitch": int(voice.pitch),
            "range": int(voice.pitch_range), "text": text}
    try:
        done = subprocess.run([sys.executable, "-I", "-c", _WORKER, json.dumps(args)], capture_output=True,
                              timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as e:
        raise AudioError(f"espeak-ng did not finish within {timeout_s:.0f} s for {text!r}") from e
    if done.returncode != 0 or b"\n" not in done.stdout:
        detail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise AudioError(f"espeak-ng failed for voice {voice.espeak_voice!r} ({detail[0]}); "
                         "check the voice name with `espeak-ng --voices=en`")
    header, pcm = done.stdout.split(b"\n", 1)
    meta = json.loads(header)
    return np.frombuffer(pcm, dtype="<i2").astype(np.int16), int(meta["rate"]), meta["events"]


def _events_to_phonemes(events: list, num_samples: int, rate: int) -> Phonemes:
    """Contiguous (phoneme, start_s, end_s) from phoneme-start events; pauses are named ``_``."""
    events = [[PAUSE, 0]] + list(events)  # audio before the first event (if any) is silence
    starts = [min(int(s), num_samples) for _, s in events]
    ends = starts[1:] + [num_samples]
    out: Phonemes = []
    for (name, _), s, e in zip(events, starts, ends, strict=True):
        if e > s:
            out.append((PAUSE if name.startswith("_") else name, s / rate, e / rate))
    return out


def _synthesize_espeak(text: str, voice: VoiceSpec, sample_rate: int) -> tuple[np.ndarray, Phonemes]:
    pcm, rate, events = _run_espeak(text, voice)
    if pcm.size == 0:
        raise AudioError(f"espeak-ng produced no audio for {text!r}")
    phonemes = _events_to_phonemes(events, pcm.size, rate)
    audio = resample(pcm.astype(np.float32) / 32768.0, rate, sample_rate)
    return audio, phonemes


# ------------------------------------------------------------------------------------------ fallback
# Formants (Hz, an adult male's) for vowels; a second triple makes a diphthong glide.
_VOWELS: dict[str, tuple[tuple[float, float, float], ...]] = {
    "a": ((730, 1650, 2500),), "A:": ((750, 1100, 2450),), "E": ((580, 1800, 2500),),
    "I": ((400, 1950, 2600),), "i:": ((290, 2250, 2900),), "0": ((600, 900, 2450),),
    "O:": ((500, 800, 2450),), "V": ((640, 1200, 2400),), "U": ((440, 1050, 2350),),
    "u:": ((320, 850, 2300),), "@": ((500, 1450, 2450),), "3:": ((480, 1350, 1700),),
    "eI": ((580, 1800, 2500), (400, 2100, 2700)), "aI": ((730, 1400, 2500), (400, 1950, 2600)),
    "aU": ((730, 1300, 2450), (440, 1000, 2350)), "oU": ((520, 1000, 2400), (400, 850, 2300)),
    "OI": ((500, 800, 2450), (400, 1950, 2600)),
}
_VOWEL_MS = {"@": 70, "I": 85, "U": 85, "E": 100, "a": 120, "V": 100, "0": 110}  # others: long, 150
# Consonants: (kind, formants or noise band centre Hz, voiced, duration ms).
_CONSONANTS: dict[str, tuple[str, float | tuple[float, float, float], bool, int]] = {
    "p": ("stop", 1500, False, 80), "b": ("stop", 1500, True, 70), "t": ("stop", 4000, False, 75),
    "d": ("stop", 3500, True, 65), "k": ("stop", 2500, False, 80), "g": ("stop", 2200, True, 70),
    "m": ("nasal", (250, 1000, 2200), True, 75), "n": ("nasal", (250, 1500, 2500), True, 65),
    "N": ("nasal", (250, 2000, 2600), True, 70), "f": ("fric", 5000, False, 100),
    "v": ("fric", 5000, True, 70), "T": ("fric", 5500, False, 90), "D": ("fric", 4500, True, 50),
    "s": ("fric", 6500, False, 105), "z": ("fric", 6000, True, 85), "S": ("fric", 3200, False, 110),
    "Z": ("fric", 3000, True, 90), "h": ("fric", 1800, False, 60), "tS": ("affr", 3200, False, 120),
    "dZ": ("affr", 3000, True, 105), "l": ("approx", (350, 1000, 2700), True, 65),
    "r": ("approx", (350, 1100, 1500), True, 65), "w": ("approx", (300, 700, 2300), True, 60),
    "j": ("approx", (280, 2200, 2900), True, 55),
}
_WORDS = {  # irregular function words; everything else goes through the letter rules
    "a": "@", "the": "D @", "to": "t u:", "of": "@ v", "i": "aI", "you": "j u:", "is": "I z", "was": "w 0 z",
    "are": "A:", "one": "w V n", "my": "m aI", "by": "b aI", "we": "w i:", "me": "m i:", "he": "h i:",
    "she": "S i:", "be": "b i:", "two": "t u:", "do": "d u:", "our": "aU @", "your": "j O:", "there": "D E @",
}
_RULES = [  # (letters, phonemes), longest first within each starting letter
    ("ough", "O:"), ("augh", "O:"), ("tch", "tS"), ("igh", "aI"), ("gh", ""), ("ie", "aI"), ("ch", "tS"),
    ("sh", "S"), ("th", "T"), ("ph", "f"), ("ng", "N"), ("ck", "k"),
    ("qu", "k w"), ("wh", "w"), ("ee", "i:"), ("ea", "i:"), ("oo", "u:"), ("ou", "aU"), ("ow", "aU"),
    ("oa", "oU"), ("ai", "eI"), ("ay", "eI"), ("oi", "OI"), ("oy", "OI"), ("au", "O:"), ("aw", "O:"),
    ("ue", "u:"), ("ew", "u:"), ("ar", "A:"), ("or", "O:"), ("er", "3:"), ("ir", "3:"), ("ur", "3:"),
    ("a", "a"), ("e", "E"), ("i", "I"), ("o", "0"), ("u", "V"), ("y", "I"), ("b", "b"), ("c", "k"),
    ("d", "d"), ("f", "f"), ("g", "g"), ("h", "h"), ("j", "dZ"), ("k", "k"), ("l", "l"), ("m", "m"),
    ("n", "n"), ("p", "p"), ("r", "r"), ("s", "s"), ("t", "t"), ("v", "v"), ("w", "w"), ("x", "k s"),
    ("z", "z"),
]
_LONG = {"a": "eI", "e": "i:", "i": "aI", "o": "oU", "u": "u:"}


def _word_to_phonemes(word: str) -> list[str]:
    """A few English spelling rules (magic e, digraphs, soft c, final y); good enough for lip motion."""
    if word in _WORDS:
        return _WORDS[word].split()
    magic = re.fullmatch(r"(.*?[^aeiou]|)([aeiou])([bcdfgklmnprstvz])e", word)
    if magic and len(word) >= 3:  # "bake", "home": the vowel says its name and the e is silent
        head, vowel, cons = magic.groups()
        return (_word_to_phonemes(head) if head else []) + [_LONG[vowel]] + _word_to_phonemes(cons)
    if word.endswith("e") and len(word) > 2 and word[-2] not in "aeiou":
        word = word[:-1]
    out: list[str] = []
    i = 0
    while i < len(word):
        if word[i] == "c" and word[i + 1 : i + 2] in ("e", "i", "y"):
            out.append("s")
            i += 1
            continue
        if word[i] == "y" and i == len(word) - 1 and i > 0:
            out.append("aI" if len(word) <= 3 else "i:")
            break
        letters, phon = next((r for r in _RULES if word.startswith(r[0], i)), ("", ""))
        if not letters:  # a letter the rules don't know (digits are removed before)
            i += 1
            continue
        if out and phon == out[-1] and len(letters) == 1:  # doubled consonants: "apple"
            i += 1
            continue
        out.extend(phon.split())
        i += len(letters)
    return out


def text_to_phonemes(text: str) -> list[str]:
    """Phoneme names (espeak-ng style) for English text; ``_`` marks a pause at punctuation."""
    out: list[str] = []
    for token in re.findall(r"[a-z']+|[,.;:!?]", text.lower()):
        if token in ",.;:!?":
            if out and out[-1] != PAUSE:
                out.append(PAUSE)
        else:
            out.extend(_word_to_phonemes(token.replace("'", "")))
    while out and out[-1] == PAUSE:
        out.pop()
    return out


def _durations(names: list[str], rate_wpm: float) -> np.ndarray:
    """Phoneme durations in seconds, scaled from a 160 words-per-minute reference."""
    ms = []
    for p in names:
        if p == PAUSE:
            ms.append(120)
        elif p in _CONSONANTS:
            ms.append(_CONSONANTS[p][3])
        else:
            ms.append(_VOWEL_MS.get(p, 180 if len(_VOWELS.get(p, ())) > 1 else 150))
    return np.asarray(ms, dtype=np.float64) / 1000.0 * (160.0 / rate_wpm)


def _resonance(freq: np.ndarray, centre: np.ndarray, bandwidth: np.ndarray) -> np.ndarray:
    """Magnitude of a two-pole resonance with unit gain at 0 Hz."""
    return centre**2 / np.sqrt((centre**2 - freq**2) ** 2 + (bandwidth * freq) ** 2)


def _band_noise(rng: np.random.Generator, n: int, centre: float, sample_rate: int) -> np.ndarray:
    """White noise band-passed around ``centre`` Hz (octave-wide Gaussian band), unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    freq = np.fft.rfftfreq(n, 1.0 / sample_rate)
    spec *= np.exp(-0.5 * (np.log2(np.maximum(freq, 1.0) / centre) / 0.6) ** 2)
    out = np.fft.irfft(spec, n)
    return out / (np.sqrt(np.mean(out**2)) + 1e-12)


@dataclass(frozen=True)
class _Tracks:
    """Control tracks at 200 Hz: formants (N, 3), voicing and one noise gain per band centre."""

    formants: np.ndarray
    voicing: np.ndarray
    noise: dict[float, np.ndarray]


def _control_tracks(names: list[str], starts: np.ndarray, ends: np.ndarray, n: int, rate: float) -> _Tracks:
    t = np.arange(n) / rate
    formants = np.tile(np.array([500.0, 1500.0, 2500.0]), (n, 1))
    voicing = np.zeros(n)
    noise: dict[float, np.ndarray] = {}
    for p, s, e in zip(names, starts, ends, strict=True):
        idx = (t >= s) & (t < e)
        if not idx.any() or p == PAUSE:
            continue
        if p in _VOWELS:
            glide = _VOWELS[p]
            u = (t[idx] - s) / max(e - s, 1e-6)
            a, b = np.asarray(glide[0]), np.asarray(glide[-1])
            formants[idx] = a + np.clip(u, 0, 1)[:, None] * (b - a)
            voicing[idx] = 1.0
            continue
        kind, spec, voiced, _ = _CONSONANTS[p]
        if kind in ("nasal", "approx"):
            formants[idx] = spec
            voicing[idx] = 0.35 if kind == "nasal" else 0.6
            continue
        band = noise.setdefault(float(spec), np.zeros(n))
        release = idx & (t >= e - 0.02)  # stops: silent closure, then a 20 ms burst
        if kind == "stop":
            band[release] = 0.5
            voicing[idx & ~release] = 0.08 if voiced else 0.0
        elif kind == "affr":
            band[idx & (t >= s + 0.4 * (e - s))] = 0.45
        else:
            band[idx] = 0.12 if p in ("f", "v", "T", "D", "h") else 0.35
            voicing[idx] = 0.4 if voiced else 0.0
    return _Tracks(formants, voicing, noise)


def _smooth(track: np.ndarray, sigma: float) -> np.ndarray:
    radius = int(3 * sigma) + 1
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.concatenate([np.repeat(track[:1], radius, 0), track, np.repeat(track[-1:], radius, 0)])
    if track.ndim == 1:
        return np.convolve(padded, kernel, mode="valid")
    return np.stack([np.convolve(padded[:, k], kernel, mode="valid") for k in range(track.shape[1])], 1)


def _synthesize_formants(text: str, voice: VoiceSpec, sample_rate: int) -> tuple[np.ndarray, Phonemes]:
    names = text_to_phonemes(text)
    if not names:
        raise AudioError(f"no speakable letters in {text!r}; expected English words")
    dur = _durations(names, voice.rate_wpm)
    ends = np.cumsum(dur)
    starts = ends - dur
    total = float(ends[-1])
    ctrl_rate = 200.0
    n_ctrl = int(np.ceil(total * ctrl_rate)) + 2
    tracks = _control_tracks(names, starts, ends, n_ctrl, ctrl_rate)
    formants = _smooth(tracks.formants, 3.0) * voice.formant_scale  # 15 ms coarticulation
    voicing = _smooth(tracks.voicing, 1.0)

    n = int(round(total * sample_rate))
    t = np.arange(n) / sample_rate
    pos = t * ctrl_rate
    f0 = voice.f0_hz * (1.1 - 0.2 * t / max(total, 1e-6))  # declination over the sentence
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    num_harmonics = int(4500 // voice.f0_hz)
    k = np.arange(1, num_harmonics + 1)
    f0_ctrl = np.interp(np.arange(n_ctrl) / ctrl_rate, t, f0)
    freq = f0_ctrl[:, None] * k[None, :]  # (N, K) harmonic frequencies on the control grid
    env = np.ones_like(freq)
    for i, bw in enumerate((70.0, 100.0, 150.0)):
        env *= _resonance(freq, formants[:, i : i + 1], np.full_like(freq, bw))
    amp = (env / k[None, :] * voicing[:, None]).astype(np.float32)  # -6 dB/octave: source plus radiation
    i0 = np.minimum(pos.astype(np.int64), n_ctrl - 2)
    frac = (pos - i0).astype(np.float32)[:, None]
    amp_s = amp[i0] * (1.0 - frac) + amp[i0 + 1] * frac  # (S, K) linear interpolation of the control grid
    harmonics = np.sin(np.mod(phase, 2 * np.pi).astype(np.float32)[:, None] * k[None, :].astype(np.float32))
    audio = np.einsum("sk,sk->s", amp_s, harmonics).astype(np.float64)
    audio /= np.max(np.abs(audio)) + 1e-9

    rng = np.random.default_rng(zlib.crc32(f"{text}|{voice}".encode()))
    for centre, gain in sorted(tracks.noise.items()):
        audio += 0.5 * np.interp(pos, np.arange(n_ctrl), _smooth(gain, 1.0)) * _band_noise(rng, n, centre, sample_rate)
    phonemes = [(p, float(s), float(e)) for p, s, e in zip(names, starts, ends, strict=True)]
    return audio.astype(np.float32), phonemes


# ------------------------------------------------------------------------------------------ public
def _pad(audio: np.ndarray, phonemes: Phonemes, sample_rate: int) -> tuple[np.ndarray, Phonemes]:
    """Add silence before and after, merge pauses at the ends, and shift the phoneme times."""
    lead, tail = int(LEAD_SILENCE_S * sample_rate), int(TAIL_SILENCE_S * sample_rate)
    out = np.concatenate([np.zeros(lead, np.float32), audio, np.zeros(tail, np.float32)])
    shift = lead / sample_rate
    total = out.size / sample_rate
    body = [(p, s + shift, e + shift) for p, s, e in phonemes]
    body = [(PAUSE, 0.0, shift)] + body + [(PAUSE, body[-1][2] if body else shift, total)]
    merged: Phonemes = []
    for p, s, e in body:
        s, e = min(s, total), min(e, total)  # resampling can move the end by a fraction of a sample
        if merged and p == PAUSE and merged[-1][0] == PAUSE:
            merged[-1] = (PAUSE, merged[-1][1], e)
        elif e > s:
            merged.append((p, s, e))
    merged[-1] = (merged[-1][0], merged[-1][1], total)
    return out, merged


def synthesize(
    text: str, voice: VoiceSpec, sample_rate: int = SAMPLE_RATE, *, use_espeak: bool | None = None
) -> tuple[np.ndarray, Phonemes]:
    """Speak ``text`` and say when each phoneme is spoken.

    Args:
        text: English text.
        voice: the speaker's voice.
        sample_rate: output rate in Hz.
        use_espeak: True requires espeak-ng, False forces the formant fallback, None uses espeak-ng
            when ``espeak_available()`` and falls back (with a ``RuntimeWarning``) if it fails.

    Returns:
        ``(audio, phonemes)``: audio (S,) int16 at ``sample_rate`` with 0.2 s of silence before the
        speech and 0.15 s after; phonemes a contiguous list of ``(name, start_s, end_s)`` covering
        [0, S / sample_rate], pauses named ``_``.

    Raises:
        AudioError: espeak-ng was required but is missing or failed, or the text has no letters.
    """
    if use_espeak is None and espeak_available():
        try:
            audio, phonemes = _synthesize_espeak(text, voice, sample_rate)
        except AudioError as e:  # installed but broken: speak anyway, and say so
            warnings.warn(f"{e}; using the formant fallback instead", RuntimeWarning, stacklevel=2)
            audio, phonemes = _synthesize_formants(text, voice, sample_rate)
    elif use_espeak:
        audio, phonemes = _synthesize_espeak(text, voice, sample_rate)
    else:
        audio, phonemes = _synthesize_formants(text, voice, sample_rate)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak > 0:
        audio = audio * (0.7 / peak)  # a fixed level, like VOCASET's normalised recordings
    audio, phonemes = _pad(audio, phonemes, sample_rate)
    pcm = np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)
    return pcm, phonemes
