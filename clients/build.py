"""Config -> the objects a run needs: task data, prompt encoder, scorer and engine."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from clients.runconfig import Config, ConfigError
from prge.engines.base import Engine
from prge.engines.eager import EagerEngine
from prge.lora_fa import AdapterError
from prge.models import cache_root, load_model
from prge.perturb import derive_seed
from prge.prefix_cache import with_prefix_cache
from prge.scorer import LabelScorer
from prge.tasks import PromptEncoder, Task, load_task


@dataclass
class Setup:
    task: Task
    encoder: PromptEncoder
    scorer: LabelScorer
    engine: Engine


def build_task(cfg: Config) -> Task:
    task = load_task(cfg.task, template=cfg.template or None,
                     label_words=cfg.label_words or None, test_fraction=cfg.test_fraction,
                     split_seed=cfg.split_seed)
    if cfg.train_size:
        # the first N: a seeded shuffle, unless the file's own `split` column made the split,
        # which keeps the file's order
        task.train = task.train[: cfg.train_size]
    return task


def quiet_libraries() -> None:
    """Hide the libraries' per-load progress bars (in every process, Ray actors included)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def build(cfg: Config, task: Task | None = None) -> Setup:
    quiet_libraries()
    task = task or build_task(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model, tokenizer = load_model(cfg.model, cache=cfg.cache or None,
                                  seed=derive_seed(cfg.seed, "tiny-model"))
    encoder = PromptEncoder(tokenizer, task.template, task.label_words, max_length=cfg.max_length)
    try:
        # A is shared by every client: it derives from the run seed only.
        scorer = LabelScorer(model, encoder.label_ids, targets=cfg.targets, rank=cfg.rank,
                             layers=cfg.layers, adapter_seed=derive_seed(cfg.seed, "lora-A"))
    except AdapterError as err:
        raise ConfigError(str(err)) from None
    if cfg.engine == "executorch":
        from prge.engines.executorch import ExecuTorchEngine

        engine = ExecuTorchEngine(scorer, cache_root(cfg.cache or None) / "programs",
                                  batch_rows=cfg.batch_size, max_length=cfg.max_length,
                                  threads=cfg.threads, quantize=cfg.quantize,
                                  cache_budget=int(cfg.program_cache_gib * 2**30))
    else:
        engine = EagerEngine(scorer, threads=cfg.threads)
    if cfg.prefix_cache == "auto" and scorer.cache_layer > 0:
        # the frozen layers run once per example, ever; steps run only the suffix per copy
        engine = with_prefix_cache(engine, int(cfg.prefix_cache_mib * 2**20), encoder.pad_id,
                                   packed=cfg.suffix_layout == "packed")
    return Setup(task, encoder, scorer, engine)
