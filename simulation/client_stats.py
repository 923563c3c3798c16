"""The distribution of per-client accuracy at one evaluation: what personalized FL is judged on
(the mean hides the clients a method leaves behind; the 10th percentile and the share of clients
that personalization makes worse do not)."""

from __future__ import annotations

import numpy as np


def client_stats(rows: list[dict]) -> dict:
    """Over the clients that answered with scores: mean, median and 10th percentile (numpy's
    linear interpolation) of personalized accuracy, mean global accuracy, and the share whose
    personalized accuracy is below their global one. Empty when no client was scored."""
    scored = [r for r in rows if "personal_acc" in r and "global_acc" in r]
    if not scored:
        return {}
    personal = np.array([r["personal_acc"] for r in scored], dtype=np.float64)
    glob = np.array([r["global_acc"] for r in scored], dtype=np.float64)
    return {"client_personal_acc": float(personal.mean()),
            "client_personal_median": float(np.median(personal)),
            "client_personal_p10": float(np.percentile(personal, 10)),
            "client_global_acc": float(glob.mean()),
            "client_hurt_share": float(np.mean(personal < glob)),
            "clients_scored": len(scored)}
