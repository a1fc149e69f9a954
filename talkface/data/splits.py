"""Train/val/test splits as data: which speaker and sentence numbers belong to which split.

A split spec has three rules (train, val, test), each a speaker list and an inclusive range of
sentence numbers. The train speaker order is the one-hot style order. A clip that matches several
rules goes to the first of train, val, test; a clip that matches none gets no split (it is prepared
but unused). The same spec is written as TOML::

    [train]
    speakers = ["A", "B"]     # order = one-hot order
    sentences = [1, 6]        # inclusive range of sentence numbers
    [val]
    speakers = ["A", "B"]
    sentences = [7, 7]
    [test]
    speakers = ["A", "B", "C"]
    sentences = [8, 8]

A sentence number is the integer formed by the digits that end the sentence name
(``sentence01`` -> 1, ``e37`` -> 37).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from talkface.errors import ConfigError
from talkface.io.fileio import file_exists
from talkface.presets import VOCASET_TEST, VOCASET_TRAIN, VOCASET_VAL

SPLIT_NAMES = ("train", "val", "test")

# BIWI as split by FaceFormer and CodeTalker (REFERENCE §4.3): test holds the six training speakers
# (Test-A) and the eight unseen ones (Test-B) on e37-e40.
BIWI_TRAIN = ("F2", "F3", "F4", "M3", "M4", "M5")
BIWI_UNSEEN = ("F1", "F5", "F6", "F7", "F8", "M1", "M2", "M6")


@dataclass(frozen=True)
class SplitRule:
    """Clips of ``speakers`` whose sentence number lies in ``first..last`` (inclusive)."""

    speakers: tuple[str, ...]
    first: int
    last: int

    def matches(self, speaker: str, sentence_number: int | None) -> bool:
        return sentence_number is not None and speaker in self.speakers and self.first <= sentence_number <= self.last

    def to_dict(self) -> dict[str, Any]:
        return {"speakers": list(self.speakers), "sentences": [self.first, self.last]}


@dataclass(frozen=True)
class Splits:
    """A train/val/test split spec."""

    train: SplitRule
    val: SplitRule
    test: SplitRule

    @property
    def train_speakers(self) -> tuple[str, ...]:
        """Speakers in one-hot style order."""
        return self.train.speakers

    def rules(self) -> tuple[tuple[str, SplitRule], ...]:
        return (("train", self.train), ("val", self.val), ("test", self.test))

    def to_dict(self) -> dict[str, Any]:
        """JSON/TOML-ready form (the schema in the module docstring)."""
        return {name: rule.to_dict() for name, rule in self.rules()}


def assign_split(speaker: str, sentence_number: int | None, splits: Splits) -> str | None:
    """The split of one clip: the first of train, val, test whose rule matches, else None."""
    for name, rule in splits.rules():
        if rule.matches(speaker, sentence_number):
            return name
    return None


def sentence_number(sentence: str) -> int | None:
    """The number that ends a sentence name (``sentence07`` -> 7, ``e33`` -> 33), or None."""
    match = re.search(r"(\d+)$", sentence)
    return int(match.group(1)) if match else None


def voca_splits() -> Splits:
    """VOCA's split (VOCA, FaceFormer and CodeTalker): 8 train speakers on sentences 1-40, 2 val and
    2 test speakers on sentences 21-40."""
    return Splits(SplitRule(VOCASET_TRAIN, 1, 40), SplitRule(VOCASET_VAL, 21, 40), SplitRule(VOCASET_TEST, 21, 40))


def biwi_splits() -> Splits:
    """BIWI's split (FaceFormer, CodeTalker): train e01-e32 and val e33-e36 of F2 F3 F4 M3 M4 M5; test
    e37-e40 of those six plus the eight unseen speakers."""
    return Splits(SplitRule(BIWI_TRAIN, 1, 32), SplitRule(BIWI_TRAIN, 33, 36),
                  SplitRule(BIWI_TRAIN + BIWI_UNSEEN, 37, 40))


def _rule_from_dict(value: Any, name: str, source: str) -> SplitRule:
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: [{name}] must be a table with 'speakers' and 'sentences'")
    unknown = set(value) - {"speakers", "sentences"}
    if unknown:
        raise ConfigError(f"{source}: [{name}] has unknown keys {sorted(unknown)}; expected 'speakers', 'sentences'")
    speakers = value.get("speakers", [])
    if not isinstance(speakers, (list, tuple)) or not all(isinstance(s, str) and s for s in speakers):
        raise ConfigError(f"{source}: [{name}] speakers must be a list of non-empty names, found {speakers!r}")
    if len(set(speakers)) != len(speakers):
        raise ConfigError(f"{source}: [{name}] speakers has duplicates: {list(speakers)}")
    sentences = value.get("sentences", [1, 0] if not speakers else None)
    ok = (isinstance(sentences, (list, tuple)) and len(sentences) == 2
          and all(isinstance(n, int) and not isinstance(n, bool) for n in sentences))
    if not ok:
        raise ConfigError(f"{source}: [{name}] sentences must be an inclusive range [first, last] of "
                          f"integers, found {sentences!r}")
    return SplitRule(tuple(speakers), int(sentences[0]), int(sentences[1]))


def splits_from_dict(data: dict[str, Any], source: str = "split spec") -> Splits:
    """Build and validate a ``Splits`` from its dict form (missing val/test sections are empty).

    Raises:
        ConfigError: unknown sections or keys, wrong types, or no train speakers.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a table with [train], [val] and [test] sections")
    unknown = set(data) - set(SPLIT_NAMES)
    if unknown:
        raise ConfigError(f"{source}: unknown sections {sorted(unknown)}; expected [train], [val], [test]")
    if "train" not in data:
        raise ConfigError(f"{source}: no [train] section; it lists the training speakers in one-hot order")
    rules = {name: _rule_from_dict(data.get(name, {}), name, source) for name in SPLIT_NAMES}
    if not rules["train"].speakers:
        raise ConfigError(f"{source}: [train] lists no speakers")
    return Splits(rules["train"], rules["val"], rules["test"])


def load_splits(path: str | os.PathLike[str]) -> Splits:
    """Read a TOML split file (schema in the module docstring).

    Raises:
        ConfigError: missing, unparsable or invalid file.
    """
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such split file; expected a TOML file with [train], [val], [test]")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{p}: not a readable TOML split file ({e})") from e
    return splits_from_dict(data, str(p))


def count_by_split(splits_of_clips: list[str | None]) -> dict[str, int]:
    """Clip counts per split name, with ``"unassigned"`` for clips in no split."""
    counts = {name: 0 for name in SPLIT_NAMES} | {"unassigned": 0}
    for split in splits_of_clips:
        counts[split or "unassigned"] += 1
    return counts


def resolve_splits(path: str | os.PathLike[str] | None, raw_dir: Path, default: Splits,
                   default_name: str) -> tuple[Splits, str]:
    """The split spec a prepare run uses, and a README line saying where it came from.

    Precedence: an explicit TOML ``path``; else ``raw_dir/splits.toml`` when present; else ``default``.

    Raises:
        ConfigError: an invalid split file.
    """
    if path is not None:
        return load_splits(path), f"Splits: from {Path(path)}."
    local = raw_dir / "splits.toml"
    if file_exists(local):  # a symlink loop or a folder named so is an error, not "no split file"
        return load_splits(local), f"Splits: from {local} (found next to the raw data)."
    return default, f"Splits: {default_name}."
