"""Pretrain talkface's shipped ``synthetic-phonetic`` audio encoder (issue #17).

The offline stand-in for wav2vec2-base-960h: a small wav2vec 2.0 (transformers' ``Wav2Vec2Model`` from a
small ``Wav2Vec2Config``, run through ``talkface.model.audio_encoder.AudioEncoder`` exactly as the
animation model runs it) trained by frame-wise phoneme classification on synthetic speech. espeak-ng
reports every phoneme's start sample (``talkface.synthetic.speech``), so each 20 ms encoder frame gets
the phoneme spoken at its centre; a linear head on the last hidden state predicts it (cross-entropy).
Real FaceFormer's encoder learnt phonetics with CTC on LibriSpeech; frame labels are the cheaper
supervision this data allows, and what the decoder needs is the same thing: features that say which
sound is being spoken *when*.

Data: random sentences drawn from a word list (the 3D corpus' sentences are excluded, so the demo and
the experiment test on speech the encoder never heard), spoken by many espeak-ng voices (accent x
variant x rate x pitch). Held out for the accuracy: other sentences, spoken by training voices and by
voices whose accent and variant never occur in training.

    python scripts/train_phonetic_encoder.py                     # writes talkface/assets/encoders/
    python scripts/train_phonetic_encoder.py --no-train-cnn --epochs 30         # the old frozen-random-CNN recipe

Everything is seeded: the same command on the same library versions writes the same weights (up to
float summation order across thread counts). The synthesised audio is cached under ``--cache`` (ignored
by git) so reruns skip synthesis.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # runnable as a plain script from a checkout
    sys.path.insert(0, str(REPO))

from talkface.synthetic.corpus import SENTENCES  # noqa: E402
from talkface.synthetic.speech import PAUSE, VoiceSpec, synthesize  # noqa: E402

SAMPLE_RATE = 16_000
WORDS = """
a about above across after again air all almost along also always am an and animal another answer any
apple are arm around art as ask at away baby back bad bag ball balloon band bank barn base basket be bear
beautiful because bed been before began begin behind being bell below best better between big bird black
blue boat body bone book both bottom box boy bread break bright bring brother brown build burn bus busy
but buy by cake call came can car care carry cat catch chair change cheap check child children chin
choose city class clean clear climb clock close cloud coat cold come cook cool corn could country cover
cow cup cut dance dark day deep did dinner do doctor dog door down draw dream dress drink drive drop dry
duck during each ear early earth east easy eat egg eight end enough even evening ever every eye face
fall family far farm fast father feel feet few field fill find fine fire first fish five floor flower
fly follow food foot for forest four free fresh friend from front fruit full fun game garden gave girl
give glass go gold good grass gray great green ground group grow had hair half hand happy hard has hat
have he head hear heart heavy help her here high hill him his hold hole home hope horse hot house how
huge hundred hungry I ice idea if in inside is island it jump just keep kept kind king kitchen knew know
lake land large last late laugh lazy lead learn leave left leg letter light like line lion listen little
live long look lost loud love low lunch made make man many map mark market may me meat meet milk mind
minute miss money month moon more morning most mother mountain mouth move much music must my name near
neck need never new next nice night nine no noise north nose not nothing now number ocean of off often
oil old on once one only open orange other our out over own page paint paper park part party pass past
pay pencil people pick picture piece pink place plan plant play please pocket point pool poor push put
queen question quick quiet rain ran read ready red remember rest rich ride right ring river road rock
roof room rope round rule run sad safe said salt same sand sat save saw say school sea season seat see
seed seven shape share she sheep ship shoe shop short should show shut sick side sing sister sit six
sky sleep slow small smile snow so soft some song soon sound south speak spring square stand star start
station stay step still stone stop store storm story street strong such sugar summer sun supper sure
sweet swim table tail take talk tall tea teach teeth tell ten than that the their them then there these
they thick thin thing think third this those three through throw tiger time tired to today together told
tomorrow tonight too took top touch town toy train tree trip truck true try turn twelve two under until
up us use valley very village visit voice wait walk wall want warm was wash watch water wave way we wear
weather week well went were west wet what wheel when where which while white who why wide wild will
win wind window winter wish with without woke woman wonder wood word work world would write year yellow
yes yesterday you young your zoo
""".split()
TRAIN_ACCENTS = ("en", "en-us", "en-gb-x-rp", "en-029", "en-gb-x-gbclan")
TRAIN_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "f1", "f2", "f3", "f4")
HELDOUT_VOICES = ("en-gb-scotland+m7", "en-us-nyc+f5", "en-gb-scotland+f5", "en-us-nyc+m7")
HEAD_PREFIX = "phoneme_head."  # keys of the frame classifier in the .safetensors (talkface ignores them)
CORPUS_SENTENCES = {re.sub(r"[^a-z ]", "", s.lower()) for s in SENTENCES}


# ------------------------------------------------------------------------------------- data


def random_sentence(rng: np.random.Generator) -> str:
    """4 to 10 random words, sometimes with a comma pause, ending with a full stop."""
    words = list(rng.choice(WORDS, size=int(rng.integers(4, 11))))
    if len(words) > 5 and rng.random() < 0.4:
        words[int(rng.integers(2, len(words) - 2))] += ","
    text = " ".join(words)
    return text[0].upper() + text[1:] + "."


def make_sentences(count: int, rng: np.random.Generator, exclude: set[str]) -> list[str]:
    """``count`` distinct sentences, none in ``exclude`` (compared without case and punctuation)."""
    out: list[str] = []
    seen = set(exclude)
    while len(out) < count:
        text = random_sentence(rng)
        key = re.sub(r"[^a-z ]", "", text.lower())
        if key not in seen:
            seen.add(key)
            out.append(text)
    return out


def random_voice(rng: np.random.Generator, name: str) -> VoiceSpec:
    return VoiceSpec(espeak_voice=name, rate_wpm=int(rng.integers(130, 201)), pitch=int(rng.integers(25, 76)),
                     pitch_range=int(rng.integers(30, 81)))


def utterance_plan(num_train: int, num_heldout: int, seed: int) -> dict[str, list[tuple[str, VoiceSpec]]]:
    """(sentence, voice) pairs: train; held-out sentences by training voices; held-out sentences by new voices."""
    rng = np.random.default_rng(seed)
    train_voices = [f"{a}+{v}" for a in TRAIN_ACCENTS for v in TRAIN_VARIANTS]
    sentences = make_sentences(num_train + 2 * num_heldout, rng, CORPUS_SENTENCES)
    train = [(s, random_voice(rng, train_voices[i % len(train_voices)])) for i, s in enumerate(sentences[:num_train])]
    held = sentences[num_train:]
    seen = [(s, random_voice(rng, str(rng.choice(train_voices)))) for s in held[:num_heldout]]
    unseen = [(s, random_voice(rng, HELDOUT_VOICES[i % len(HELDOUT_VOICES)])) for i, s in enumerate(held[num_heldout:])]
    return {"train": train, "heldout_seen_voice": seen, "heldout_new_voice": unseen}


def _key(text: str, voice: VoiceSpec) -> str:
    import hashlib

    return hashlib.sha1(f"{text}|{voice}".encode()).hexdigest()[:16]


def synthesize_cached(text: str, voice: VoiceSpec, cache: Path) -> tuple[np.ndarray, list]:
    """16 kHz float32 audio and phoneme timings, from ``cache`` when there."""
    path = cache / f"{_key(text, voice)}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            names = [str(n) for n in z["names"]]
            return z["audio"], [(n, float(s), float(e)) for n, s, e in zip(names, z["starts"], z["ends"], strict=True)]
    pcm, phonemes = synthesize(text, voice, SAMPLE_RATE, use_espeak=True)
    audio = pcm.astype(np.float32) / 32768.0
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, audio=audio, names=np.array([p for p, _, _ in phonemes]),
             starts=np.array([s for _, s, _ in phonemes]), ends=np.array([e for _, _, e in phonemes]))
    tmp.replace(path)
    return audio, phonemes


def normalize_phoneme(name: str) -> str:
    """espeak-ng phoneme name without stress/variant marks (``I2`` -> ``I``, ``@5`` -> ``@``, ``r-`` -> ``r``)."""
    if name.startswith("_"):
        return PAUSE
    stripped = re.sub(r"[#0-9;\-]+$", "", name)
    return stripped or name


def frame_labels(phonemes: list, num_frames: int, hop: int, field: int) -> list[str]:
    """The phoneme spoken at each encoder frame's centre (frame i covers samples [i*hop, i*hop + field))."""
    centres = (np.arange(num_frames) * hop + field / 2) / SAMPLE_RATE
    ends = np.array([e for _, _, e in phonemes])
    idx = np.minimum(np.searchsorted(ends, centres, side="right"), len(phonemes) - 1)
    return [normalize_phoneme(phonemes[i][0]) for i in idx]


def evaluate_only(args, encoder, head, vocab, sets, accuracy) -> int:
    """Load ``--out/<name>`` into ``encoder`` and ``head``, measure the held-out accuracy, record it in the json."""
    from safetensors.torch import load_file

    from talkface.io.fileio import write_text_atomic

    state = load_file(str(args.out / f"{args.name}.safetensors"))
    encoder.wav2vec2.load_state_dict({k: v for k, v in state.items() if not k.startswith(HEAD_PREFIX)})
    head.load_state_dict({k[len(HEAD_PREFIX):]: v for k, v in state.items() if k.startswith(HEAD_PREFIX)})
    t0 = time.perf_counter()
    result = {split: accuracy(split) for split in ("heldout_seen_voice", "heldout_new_voice")}
    meta_path = args.out / f"{args.name}.json"
    meta = json.loads(meta_path.read_text())
    meta["heldout_accuracy"] = result
    meta["heldout_evaluation"] = {"device": args.device, "seconds": round(time.perf_counter() - t0, 1),
                                  "utterances_per_group": args.heldout_utterances}
    write_text_atomic(meta_path, json.dumps(meta, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


def write_pack(path: Path, data: dict[str, list]) -> None:
    """All utterances in one .npz: int16 audio and phoneme tables, concatenated, with offsets."""
    out: dict[str, np.ndarray] = {}
    for split, items in data.items():
        if not items:
            continue
        audio = [np.clip(np.round(a * 32768.0), -32768, 32767).astype(np.int16) for a, _ in items]
        out[f"{split}.audio"] = np.concatenate(audio)
        out[f"{split}.audio_len"] = np.array([a.size for a in audio])
        out[f"{split}.names"] = np.array([p for _, ph in items for p, _, _ in ph])
        out[f"{split}.bounds"] = np.array([[s, e] for _, ph in items for _, s, e in ph])
        out[f"{split}.phon_len"] = np.array([len(ph) for _, ph in items])
    np.savez(path, **out)


def read_pack(path: Path) -> dict[str, list]:
    with np.load(path, allow_pickle=False) as z:
        splits = sorted({k.split(".")[0] for k in z.files}, key=lambda s: (s != "train", s))
        data = {}
        for split in splits:
            a_end, p_end = np.cumsum(z[f"{split}.audio_len"]), np.cumsum(z[f"{split}.phon_len"])
            audio, names, bounds = z[f"{split}.audio"], z[f"{split}.names"], z[f"{split}.bounds"]
            items = []
            for i in range(len(a_end)):
                a0, p0 = (a_end[i - 1], p_end[i - 1]) if i else (0, 0)
                ph = [(str(n), float(b[0]), float(b[1])) for n, b in zip(names[p0:p_end[i]], bounds[p0:p_end[i]],
                                                                          strict=True)]
                items.append((audio[a0:a_end[i]].astype(np.float32) / 32768.0, ph))
            data[split] = items
    return data


# ------------------------------------------------------------------------------------- model


def encoder_config(conv_dim: int, hidden: int, layers: int, heads: int) -> dict:
    from talkface.model import tiny_encoder_config

    return tiny_encoder_config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                               intermediate_size=2 * hidden, conv_dim=conv_dim, mask_time_prob=0.05,
                               mask_time_length=2, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "talkface" / "assets" / "encoders")
    p.add_argument("--name", default="synthetic-phonetic")
    p.add_argument("--cache", type=Path, default=REPO / ".cache" / "phonetic-encoder")
    p.add_argument("--train-utterances", type=int, default=1200)
    p.add_argument("--heldout-utterances", type=int, default=100, help="per held-out group")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--conv-dim", type=int, default=64)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--synth-workers", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu or cuda (the shipped weights were trained on cuda, see "
                                                   "the json's training.device)")
    p.add_argument("--pack", type=Path, default=None,
                   help="write the synthesised utterances (int16) to this .npz and stop (to train elsewhere)")
    p.add_argument("--from-pack", type=Path, default=None, help="read the utterances from a --pack file")
    p.add_argument("--train-cnn", action=argparse.BooleanOptionalAction, default=True,
                   help="learn the CNN with the transformer (default; held-out frame accuracy 0.58 after one epoch "
                        "against 0.44 after 30 with --no-train-cnn, which keeps the seeded random CNN frozen and "
                        "computes its features once per utterance). Users' training keeps it frozen either way, "
                        "as FaceFormer keeps wav2vec 2.0's")
    p.add_argument("--evaluate-only", action="store_true",
                   help="measure the held-out accuracy of the encoder in --out and record it in its json")
    args = p.parse_args(argv)

    import torch
    from torch import nn

    from talkface.model.audio_encoder import AudioEncoder

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t_start = time.perf_counter()
    if args.from_pack is not None:
        data = read_pack(args.from_pack)
    else:
        args.cache.mkdir(parents=True, exist_ok=True)
        plan = utterance_plan(args.train_utterances, args.heldout_utterances, args.seed)
        if args.evaluate_only:  # the held-out sentences only (they do not depend on the training voices)
            plan = {split: items for split, items in plan.items() if split != "train"}
        data = {}
        with ThreadPoolExecutor(args.synth_workers) as pool:
            for split, items in plan.items():
                data[split] = list(pool.map(lambda tv: synthesize_cached(tv[0], tv[1], args.cache), items))
    for split, items in data.items():
        print(f"{split}: {len(items)} utterances, {sum(a.size for a, _ in items) / SAMPLE_RATE / 60:.1f} "
              f"min ({time.perf_counter() - t_start:.0f} s)", flush=True)
    if args.pack is not None:
        write_pack(args.pack, data)
        return 0
    t_synth = time.perf_counter() - t_start

    config = encoder_config(args.conv_dim, args.hidden, args.layers, args.heads)
    encoder = AudioEncoder(config, audio_frames_per_motion_frame=1, fps=50.0)
    if args.train_cnn:
        for param in encoder.wav2vec2.feature_extractor.parameters():
            param.requires_grad = True
        encoder.wav2vec2.feature_extractor._requires_grad = True
    device = torch.device(args.device)

    def labelled(split: str) -> list[tuple[torch.Tensor, list[str]]]:
        return [(torch.from_numpy(a), frame_labels(ph, encoder.num_cnn_frames(a.size), encoder.hop,
                                                    encoder.receptive_field)) for a, ph in data[split]]

    sets = {split: labelled(split) for split in data}
    counts: dict[str, int] = {}
    for _, labels in sets.get("train", []):
        for name in labels:
            counts[name] = counts.get(name, 0) + 1
    vocab = sorted(n for n, c in counts.items() if c >= 30) + ["<other>"]
    if args.evaluate_only:
        vocab = json.loads((args.out / f"{args.name}.json").read_text())["phonemes"]
    index = {n: i for i, n in enumerate(vocab)}

    def targets(labels: list[str]) -> torch.Tensor:
        return torch.tensor([index.get(n, len(vocab) - 1) for n in labels])

    head = nn.Linear(encoder.hidden_size, len(vocab))
    encoder.to(device)
    head.to(device)
    params = [q for q in [*encoder.parameters(), *head.parameters()] if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    train_set = sets.get("train", [])
    steps = max(1, args.epochs * ((len(train_set) + args.batch - 1) // args.batch))
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, 0.5 * (1 + np.cos(np.pi * min(s, steps) / steps))))
    order = np.arange(len(train_set))
    rng = np.random.default_rng(args.seed)

    cnn_cache: dict[int, torch.Tensor] = {}

    def cnn(a: torch.Tensor, frames: int) -> torch.Tensor:
        """(frames, C) CNN features of one utterance, as ``AudioEncoder.forward`` computes them; cached when frozen."""
        if args.train_cnn:
            return encoder._aligned_cnn(a.to(device), frames)
        key = id(a)
        if key not in cnn_cache:
            with torch.no_grad():
                cnn_cache[key] = encoder._aligned_cnn(a.to(device), frames)
        return cnn_cache[key]

    def forward(batch: list[tuple[torch.Tensor, list[str]]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``AudioEncoder.forward`` step by step (so the frozen CNN's output can be reused) plus the head."""
        lengths = [len(lab) for _, lab in batch]
        feats = [cnn(a, n) for (a, _), n in zip(batch, lengths, strict=True)]
        total = max(lengths)
        padded = torch.stack([torch.nn.functional.pad(f, (0, 0, 0, total - f.shape[0])) for f in feats])
        mask = torch.arange(total, device=device)[None] < torch.tensor(lengths, device=device)[:, None]
        projected = encoder.wav2vec2.feature_projection(padded)
        hidden = projected[0] if isinstance(projected, tuple) else projected
        hidden = encoder._transformer(encoder._spec_augment(hidden, lengths), lengths)
        logits = head(hidden)[mask]
        return logits, torch.cat([targets(lab) for _, lab in batch]).to(device)

    def forward_reference(batch: list[tuple[torch.Tensor, list[str]]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(a.shape[0] for a, _ in batch)
        audio = torch.stack([torch.nn.functional.pad(a, (0, width - a.shape[0])) for a, _ in batch])
        lengths = torch.tensor([a.shape[0] for a, _ in batch])
        frames = torch.tensor([len(lab) for _, lab in batch])
        hidden, mask = encoder(audio.to(device), lengths.to(device), frames.to(device))
        logits = head(hidden)[mask]
        return logits, torch.cat([targets(lab) for _, lab in batch]).to(device)

    encoder.eval()  # the cached path is AudioEncoder.forward, step by step: check it on two utterances
    probe = (train_set or next(iter(sets.values())))[:2]
    with torch.no_grad():
        same = torch.allclose(forward(probe)[0], forward_reference(probe)[0], atol=1e-4)
    encoder.train()
    if not same:
        raise RuntimeError("the cached forward pass differs from AudioEncoder.forward; fix forward()")

    def accuracy(split: str) -> dict[str, float]:
        encoder.eval()
        right = total = right_speech = total_speech = 0
        with torch.no_grad():
            for i in range(0, len(sets[split]), 16):
                logits, y = forward(sets[split][i:i + 16])
                hit = logits.argmax(-1) == y
                speech = y != index.get(PAUSE, -1)
                right, total = right + int(hit.sum()), total + int(y.numel())
                right_speech, total_speech = right_speech + int(hit[speech].sum()), total_speech + int(speech.sum())
        encoder.train()
        return {"frame_accuracy": right / total, "speech_frame_accuracy": right_speech / total_speech}

    if args.evaluate_only:
        return evaluate_only(args, encoder, head, vocab, sets, accuracy)
    t_train = time.perf_counter()
    history = []
    for epoch in range(1, args.epochs + 1):
        rng.shuffle(order)
        total_loss = 0.0
        for i in range(0, len(order), args.batch):
            logits, y = forward([train_set[j] for j in order[i:i + args.batch]])
            loss = nn.functional.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            sched.step()
            total_loss += float(loss.detach()) * len(order[i:i + args.batch])
            if (i // args.batch + 1) % 25 == 0:
                print(f"  epoch {epoch} step {i // args.batch + 1}: loss {float(loss.detach()):.3f} "
                      f"({time.perf_counter() - t_start:.0f} s)", flush=True)
        acc = accuracy("heldout_new_voice") if sets.get("heldout_new_voice") else {}
        history.append({"epoch": epoch, "train_loss": total_loss / len(order), **acc,
                        "elapsed_s": round(time.perf_counter() - t_start, 1)})
        print(f"epoch {epoch}: loss {total_loss / len(order):.3f}, held-out (new voices) frame accuracy "
              f"{acc.get('frame_accuracy', float('nan')):.3f} ({time.perf_counter() - t_start:.0f} s)", flush=True)
        if epoch < args.epochs:  # a usable encoder after every epoch, should the run be stopped
            save(encoder, head, vocab, config, history, {"heldout_new_voice": acc}, args, argv, t_synth,
                 time.perf_counter() - t_train, len(train_set), sum(a.shape[0] for a, _ in train_set))
    t_train = time.perf_counter() - t_train
    result = {split: accuracy(split) for split in ("heldout_seen_voice", "heldout_new_voice") if sets.get(split)}
    save(encoder, head, vocab, config, history, result, args, argv, t_synth, t_train, len(train_set),
         sum(a.shape[0] for a, _ in train_set))
    print(json.dumps({"heldout_accuracy": result, "synthesis_s": t_synth, "training_s": t_train,
                      "classes": len(vocab)}, indent=1))
    return 0


def save(encoder, head, vocab, config, history, result, args, argv, t_synth, t_train, num_train, train_samples):
    """Write ``<name>.safetensors`` (encoder + phoneme head) and ``<name>.json`` (config, vocabulary, provenance)."""
    from safetensors.torch import save_file

    from talkface.io.fileio import atomic_path, write_text_atomic

    args.out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.wav2vec2.state_dict().items()}
    # the classifier travels too (a few kB), so a test can check the shipped encoder still knows phonemes
    state.update({f"{HEAD_PREFIX}{k}": v.detach().cpu().contiguous() for k, v in head.state_dict().items()})
    with atomic_path(args.out / f"{args.name}.safetensors") as tmp:
        save_file(state, str(tmp))
        tmp.chmod(0o644)  # package data: readable by everyone, like the json
    meta = {
        "name": args.name, "wav2vec2_config": config, "phonemes": vocab,
        "training": {
            "command": " ".join(["python scripts/train_phonetic_encoder.py", *(argv or sys.argv[1:])]),
            "seed": args.seed, "epochs_done": len(history), "epochs": args.epochs, "batch": args.batch,
            "lr": args.lr, "train_utterances": num_train, "train_minutes": train_samples / SAMPLE_RATE / 60,
            "train_voices": [f"{a}+{v}" for a in TRAIN_ACCENTS for v in TRAIN_VARIANTS],
            "heldout_voices": list(HELDOUT_VOICES), "heldout_utterances_per_group": args.heldout_utterances,
            "synthesis_s": round(t_synth, 1), "training_s": round(t_train, 1), "threads": args.threads,
            "device": args.device,
            "history": history,
        },
        "heldout_accuracy": result,
    }
    write_text_atomic(args.out / f"{args.name}.json", json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
