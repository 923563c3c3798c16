"""The adapter the suffix benches build: arguments and construction shared by
`learn_search.py` and `length_batches.py` (SmolLM2 + MR, LoRA-FA on the last N layers)."""

from __future__ import annotations

import argparse

from prge.models import load_model
from prge.perturb import derive_seed
from prge.scorer import LabelScorer
from prge.tasks import PromptEncoder, load_task


def add_adapter_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--layers", default="last-1")
    ap.add_argument("--targets", default="q,k,v,o,gate,up,down")
    ap.add_argument("--rank", type=int, default=8)


def build_adapter(args: argparse.Namespace):
    """(task, encoder, scorer) for MR; A from the same seed as a run with seed 0."""
    model, tok = load_model(args.model)
    task = load_task("mr")
    enc = PromptEncoder(tok, task.template, task.label_words)
    scorer = LabelScorer(model, enc.label_ids, targets=args.targets.split(","), rank=args.rank,
                         layers=args.layers, adapter_seed=derive_seed(0, "lora-A"))
    return task, enc, scorer


def describe(args: argparse.Namespace, dim: int) -> str:
    """The adapter as a `--save` page's table titles name it."""
    return f"{args.model} {args.layers} ({args.targets}, rank {args.rank}, D = {dim:,})"
