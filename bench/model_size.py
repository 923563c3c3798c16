"""Does a model of a given size fit a federated run on this machine? Peak memory and time of a short
`fedprge run` on a random model with a published model's shapes, from a local directory.

    python bench/model_size.py --preset qwen2.5-0.5b
    python bench/model_size.py --preset qwen2.5-0.5b --preset llama3.2-1b --save model-size

No weights of these models ship offline, so each preset is a random model built with
transformers' own config class at the shapes of the model's published config.json (hidden size,
MLP width, layers, heads, key/value heads, vocabulary, tied embeddings), saved with a character
tokenizer to a temporary directory and named as `model=<that directory>`: exactly the path a user's
own checkpoint takes. Accuracy is meaningless (random weights); memory and time are the real
model's, to within the tokenizer (prompts of characters are longer than of subwords).

The run: a last-layer adapter (all seven projections, rank 8), ExecuTorch, the frozen-prefix
cache filled up front, 4 clients, 2 a round, 3 rounds of K = 2 steps of q = 4, 32 test examples,
2 client processes; peak RSS sampled every 0.2 s over the whole process tree (bench/scale.py).
Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from scale import _processes  # noqa: E402  (the process-tree sampler, one copy of it)

# The shapes of each model's published config.json.
PRESETS = {
    "qwen2.5-0.5b": ("qwen2", dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                   num_attention_heads=14, num_key_value_heads=2,
                                   vocab_size=151936, tie_word_embeddings=True,
                                   rope_theta=1000000.0)),
    "qwen3-0.6b": ("qwen3", dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                                 num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                                 vocab_size=151936, tie_word_embeddings=True,
                                 rope_theta=1000000.0)),
    "llama3.2-1b": ("llama", dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                                  num_attention_heads=32, num_key_value_heads=8,
                                  vocab_size=128256, tie_word_embeddings=True,
                                  rope_theta=500000.0)),
}


def build(preset: str, out: Path) -> int:
    """The random model at the preset's shapes in `out`; returns its parameter count."""
    import torch
    import transformers as tf

    from prge.models import build_char_tokenizer

    family, shapes = PRESETS[preset]
    tokenizer = build_char_tokenizer()
    cls = {"qwen2": tf.Qwen2Config, "qwen3": tf.Qwen3Config, "llama": tf.LlamaConfig}[family]
    config = cls(**shapes, max_position_embeddings=4096, pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = tf.AutoModelForCausalLM.from_config(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def measure(model_dir: Path, run_dir: Path) -> dict:
    sets = [f"model={model_dir}", "layers=last-1", "rank=8", "prefix-cache-fill=upfront",
            "num-clients=4", "clients-per-round=2", "rounds=3", "local-steps=2", "q=4",
            "eval-size=32", "eval-every=3", "personal-steps=0", "client-eval-size=0",
            "train-size=200", "ray-cpus=2"]
    cmd = [sys.executable, "-m", "simulation.cli", "run", "--quiet", "--out", str(run_dir)]
    cmd += [a for kv in sets for a in ("--set", kv)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    peak: dict[int, int] = defaultdict(int)
    peak_total = 0
    while proc.poll() is None:
        seen = _processes(proc.pid)
        for pid, (_, rss) in seen.items():
            peak[pid] = max(peak[pid], rss)
        peak_total = max(peak_total, sum(rss for _, rss in seen.values()))
        time.sleep(0.2)
    err = proc.stderr.read()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"ok": False, "error": err.strip().splitlines()[-1][:300] if err.strip() else "?",
                "tree_peak_gib": round(peak_total / 2**20, 2), "wall_s": round(wall, 1)}
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rounds = [m for m in metrics if m["round"] > 0]
    return {"ok": True, "tree_peak_gib": round(peak_total / 2**20, 2),
            "largest_process_gib": round(max(peak.values()) / 2**20, 2),
            "round_s": [round(m["round_s"], 1) for m in rounds], "wall_s": round(wall, 1),
            "replies": [m["replies"] for m in rounds]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", action="append", choices=sorted(PRESETS), required=True)
    ap.add_argument("--save", nargs="?", const=True, metavar="PAGE",
                    help="also write docs/results/PAGE.json and its page")
    args = ap.parse_args()
    rows = []
    for preset in args.preset:
        with tempfile.TemporaryDirectory() as tmp:
            params = build(preset, Path(tmp) / "model")
            row = {"preset": preset, "family": PRESETS[preset][0], "params": params,
                   **measure(Path(tmp) / "model", Path(tmp) / "run")}
        rows.append(row)
        print(f"{preset}: {params / 1e6:,.0f} M parameters: {row}", flush=True)
    figures = {"bench": "model_size", "rows": rows}
    if args.save:
        from simulation.benchpage import save, table

        save("model-size", [table(
            "A short federated run on a random model with a published model's shapes (local "
            "directory; last-1 adapter, ExecuTorch, 4 clients, 2 a round, 3 rounds, K = 2, "
            "q = 4, 2 client processes)",
            ["shapes of", "family", "parameters", "ran", "process tree peak RSS",
             "largest process", "wall per round", "run wall (lowering included)"],
            [[r["preset"], r["family"], f"{r['params'] / 1e6:,.0f} M", "yes" if r["ok"] else
              f"no: {r['error']}", f"{r['tree_peak_gib']} GiB",
              f"{r.get('largest_process_gib', '-')} GiB",
              " / ".join(f"{s} s" for s in r.get("round_s", [])), f"{r['wall_s']} s"]
             for r in rows])], figures, notes=[
            "random weights at the published shapes: memory and time are the model's, accuracy "
            "is not; a character tokenizer makes prompts longer than a subword one would",
            "not measured: more rounds, more clients, adapters beyond the last layer"],
            page=args.save)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
