"""Human-rated sentiment snippets from the vaderSentiment 3.3.2 source distribution.

The sdist (not the wheel) carries `additional_resources/hutto_ICWSM_2014.tar.gz`: tweets, Amazon
reviews and New York Times editorial snippets, each with the mean of human ratings in [-4, 4].
We binarize by the sign of the mean (ratings of exactly 0 are dropped). `prepare_vader` fetches the
sdist once from the package index into the cache; reading it needs no network.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from prge.dataset import Example, TaskError
from prge.models import cache_root

SDIST = "vaderSentiment-3.3.2.tar.gz"
INNER = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
DOMAIN_FILES = {
    "tweets": "hutto_ICWSM_2014/tweets_GroundTruth.txt",
    "amazon": "hutto_ICWSM_2014/amazonReviewSnippets_GroundTruth.txt",
    "nyt": "hutto_ICWSM_2014/nytEditorialSnippets_GroundTruth.txt",
}


def vader_path(cache: str | os.PathLike | None = None) -> Path:
    return cache_root(cache) / "data" / SDIST


def prepare_vader(cache: str | os.PathLike | None = None) -> Path:
    """Download the sdist into the cache (once) with pip; a clear error if that is impossible."""
    target = vader_path(cache)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary",
               ":all:", "vaderSentiment==3.3.2", "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / SDIST
        if proc.returncode != 0 or not got.is_file():
            reason = (proc.stderr.strip().splitlines() or ["no file"])[-1]
            raise TaskError(f"could not download the vaderSentiment 3.3.2 sdist: {reason}")
        shutil.move(str(got), target)
    return target


def parse_ground_truth(text: str, domain: str) -> list[Example]:
    """Lines of `id <tab> mean rating <tab> text` -> binary examples (0 = negative)."""
    out = []
    for line in text.splitlines():
        parts = line.strip().split("\t")
        if len(parts) < 3:
            continue
        try:
            rating = float(parts[1])
        except ValueError:
            continue
        snippet = "\t".join(parts[2:]).strip()
        if rating != 0 and snippet:
            out.append(Example(snippet, int(rating > 0), domain))
    return out


def load_vader_examples(path: str | os.PathLike | None = None,
                        domains: tuple[str, ...] = tuple(DOMAIN_FILES)) -> list[Example]:
    path = Path(path) if path else prepare_vader()  # fetched once into the cache if missing
    if not path.is_file():
        raise TaskError(f"{SDIST} is not in the cache at {path}")
    with tarfile.open(path) as outer:
        inner_bytes = outer.extractfile(INNER).read()
    examples = []
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        for domain in domains:
            raw = inner.extractfile(DOMAIN_FILES[domain]).read().decode("utf-8", errors="replace")
            examples.extend(parse_ground_truth(raw, domain))
    return examples
