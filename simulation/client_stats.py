"""The distribution of per-client accuracy at one evaluation: what personalized FL is judged on
(the mean hides the clients a method leaves behind; the 10th percentile and the share of clients
that personalization makes worse do not)."""

from __future__ import annotations

import numpy as np


def client_stats(rows: list[dict]) -> dict:
    """Over the clients that took part and answered with scores: mean, median and 10th
    percentile (numpy's linear interpolation) of personalized accuracy, mean global accuracy,
    and the share whose personalized accuracy is below their global one; the same for the
    newcomers (`holdout-clients`), prefixed newcomer_, with the mean bytes down their
    evaluation needed (its catch-up). Empty when no client was scored."""
    out = _stats([r for r in rows if not r.get("newcomer")], "client")
    newcomers = [r for r in rows if r.get("newcomer")]
    out.update(_stats(newcomers, "newcomer"))
    if newcomers:
        out["newcomer_bytes_down"] = float(np.mean([r["bytes_down"] for r in newcomers
                                                    if "bytes_down" in r] or [0]))
    return out


def _stats(rows: list[dict], prefix: str) -> dict:
    scored = [r for r in rows if "personal_acc" in r and "global_acc" in r]
    if not scored:
        return {}
    personal = np.array([r["personal_acc"] for r in scored], dtype=np.float64)
    glob = np.array([r["global_acc"] for r in scored], dtype=np.float64)
    return {f"{prefix}_personal_acc": float(personal.mean()),
            f"{prefix}_personal_median": float(np.median(personal)),
            f"{prefix}_personal_p10": float(np.percentile(personal, 10)),
            f"{prefix}_global_acc": float(glob.mean()),
            f"{prefix}_hurt_share": float(np.mean(personal < glob)),
            f"{prefix}s_scored": len(scored)}
