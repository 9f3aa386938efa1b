"""The data types and constants every part of afrocomet shares."""

from __future__ import annotations

from dataclasses import dataclass

# AfriSenti-SemEval 2023 task A languages. The paper's five are the default set.
ALL_LANGUAGES: tuple[str, ...] = ("hau", "ibo", "kin", "swa", "yor", "pcm")
DEFAULT_LANGUAGES: tuple[str, ...] = ("hau", "ibo", "kin", "swa", "yor")
LANGUAGE_NAMES: dict[str, str] = {
    "hau": "Hausa",
    "ibo": "Igbo",
    "kin": "Kinyarwanda",
    "swa": "Swahili",
    "yor": "Yoruba",
    "pcm": "Nigerian Pidgin",
}
SPLITS: tuple[str, ...] = ("train", "dev", "test")

# Label order fixes the class ids of every model head: id2label = dict(enumerate(LABELS)).
LABELS: tuple[str, ...] = ("negative", "neutral", "positive")


@dataclass(frozen=True)
class Example:
    """One row of a TSV file. `line` is the 1-based line number in `source` (header is line 1)."""

    text: str
    label: str | None
    id: str | None
    source: str
    line: int


@dataclass
class Dataset:
    """The splits of one language (or one user-supplied task): split name -> examples."""

    name: str
    splits: dict[str, list[Example]]
    labels: tuple[str, ...] = LABELS

    def texts(self, split: str) -> list[str]:
        return [ex.text for ex in self.splits[split]]

    def label_ids(self, split: str) -> list[int]:
        index = {lab: i for i, lab in enumerate(self.labels)}
        return [index[ex.label] for ex in self.splits[split]]  # type: ignore[index]
