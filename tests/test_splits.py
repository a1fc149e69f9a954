"""Split specs: VOCA's and BIWI's published lists, TOML split files, and the assignment rule."""

from __future__ import annotations

import pytest

from talkface.data.splits import (
    assign_split,
    biwi_splits,
    count_by_split,
    load_splits,
    resolve_splits,
    sentence_number,
    splits_from_dict,
    voca_splits,
)
from talkface.errors import ConfigError
from talkface.presets import VOCASET_KNOWN_MISSING, VOCASET_TEST, VOCASET_TRAIN, VOCASET_VAL

ALL_VOCA_SPEAKERS = VOCASET_TRAIN + VOCASET_VAL + VOCASET_TEST


def test_voca_split_counts_over_the_full_grid_match_the_published_319_40_39() -> None:
    splits = voca_splits()
    assigned = [assign_split(s, n, splits) for s in ALL_VOCA_SPEAKERS for n in range(1, 41)
                if (s, f"sentence{n:02d}") not in VOCASET_KNOWN_MISSING]
    assert count_by_split(assigned) == {"train": 319, "val": 40, "test": 39, "unassigned": 80}


def test_voca_split_rules() -> None:
    splits = voca_splits()
    assert splits.train_speakers == VOCASET_TRAIN  # one-hot order
    assert assign_split("FaceTalk_170728_03272_TA", 1, splits) == "train"
    assert assign_split("FaceTalk_170728_03272_TA", 40, splits) == "train"
    assert assign_split("FaceTalk_170811_03275_TA", 20, splits) is None
    assert assign_split("FaceTalk_170811_03275_TA", 21, splits) == "val"
    assert assign_split("FaceTalk_170731_00024_TA", 40, splits) == "test"
    assert assign_split("FaceTalk_170731_00024_TA", 41, splits) is None
    assert assign_split("Someone", 5, splits) is None
    assert assign_split("FaceTalk_170728_03272_TA", None, splits) is None


def test_biwi_split_rules() -> None:
    splits = biwi_splits()
    assert splits.train_speakers == ("F2", "F3", "F4", "M3", "M4", "M5")
    grid = {(s, n): assign_split(s, n, splits) for s in ["F1", "F2", "M6", "M5"] for n in range(1, 41)}
    assert [grid[("F2", n)] for n in (1, 32, 33, 36, 37, 40)] == ["train", "train", "val", "val", "test", "test"]
    assert {grid[("F1", n)] for n in range(1, 37)} == {None}
    assert {grid[("M6", n)] for n in range(37, 41)} == {"test"}
    assigned = [assign_split(s, n, splits) for s in ["F1", "F2", "F3", "F4", "F5", "F6", "F7", "F8",
                                                     "M1", "M2", "M3", "M4", "M5", "M6"] for n in range(1, 41)]
    assert count_by_split(assigned) == {"train": 192, "val": 24, "test": 56, "unassigned": 288}


def test_first_matching_split_wins() -> None:
    splits = splits_from_dict({"train": {"speakers": ["A"], "sentences": [1, 10]},
                               "val": {"speakers": ["A"], "sentences": [5, 12]},
                               "test": {"speakers": ["A"], "sentences": [1, 20]}})
    assert [assign_split("A", n, splits) for n in (5, 11, 13, 21)] == ["train", "val", "test", None]


@pytest.mark.parametrize("name, number", [("sentence01", 1), ("sentence40", 40), ("e37", 37), ("007", 7),
                                          ("intro", None), ("take3b", None)])
def test_sentence_number(name: str, number: int | None) -> None:
    assert sentence_number(name) == number


def test_toml_round_trip_and_schema(tmp_path) -> None:
    path = tmp_path / "splits.toml"
    path.write_text('[train]\nspeakers = ["B", "A"]\nsentences = [1, 6]\n'
                    '[val]\nspeakers = ["A", "B"]\nsentences = [7, 7]\n'
                    '[test]\nspeakers = ["A", "B", "C"]\nsentences = [8, 8]\n')
    splits = load_splits(path)
    assert splits.train_speakers == ("B", "A")
    assert splits.to_dict() == {"train": {"speakers": ["B", "A"], "sentences": [1, 6]},
                                "val": {"speakers": ["A", "B"], "sentences": [7, 7]},
                                "test": {"speakers": ["A", "B", "C"], "sentences": [8, 8]}}
    assert splits_from_dict(splits.to_dict()) == splits
    assert assign_split("C", 8, splits) == "test" and assign_split("C", 1, splits) is None


def test_missing_val_and_test_sections_are_empty(tmp_path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[train]\nspeakers = ["A"]\nsentences = [1, 3]\n')
    splits = load_splits(path)
    assert splits.val.speakers == () and assign_split("A", 4, splits) is None


@pytest.mark.parametrize("text, match", [
    ('[train]\nspeakers = []\nsentences = [1, 2]\n', "no speakers"),
    ('[val]\nspeakers = ["A"]\nsentences = [1, 2]\n', r"no \[train\]"),
    ('[train]\nspeakers = ["A"]\nsentences = [1]\n', "inclusive range"),
    ('[train]\nspeakers = ["A"]\nsentences = [1, 2]\nfolds = 3\n', "unknown keys"),
    ('[training]\nspeakers = ["A"]\n', "unknown sections"),
    ('[train]\nspeakers = ["A", "A"]\nsentences = [1, 2]\n', "duplicates"),
    ('[train\n', "not a readable TOML"),
])
def test_bad_split_files_raise_config_error(tmp_path, text: str, match: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_splits(path)


def test_resolve_splits_precedence(tmp_path) -> None:
    default = voca_splits()
    assert resolve_splits(None, tmp_path, default, "VOCA")[0] == default
    (tmp_path / "splits.toml").write_text('[train]\nspeakers = ["A"]\nsentences = [1, 3]\n')
    assert resolve_splits(None, tmp_path, default, "VOCA")[0].train_speakers == ("A",)
    other = tmp_path / "other.toml"
    other.write_text('[train]\nspeakers = ["Z"]\nsentences = [1, 3]\n')
    assert resolve_splits(other, tmp_path, default, "VOCA")[0].train_speakers == ("Z",)
    with pytest.raises(ConfigError, match="no such split file"):
        resolve_splits(tmp_path / "nope.toml", tmp_path, default, "VOCA")
