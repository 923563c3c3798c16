import io
import tarfile

import pytest

from prge.tasks import TaskError, load_task
from prge.vader import INNER, load_vader_examples, parse_ground_truth, vader_path


def _tar_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_ratings_are_binarized_by_sign_and_zeros_dropped():
    text = "1\t2.5\tloved it\r\n2\t-0.7\tmeh, bad\r\n3\t0\tneutral\r\n4\tx\tbroken\r\n"
    got = parse_ground_truth(text, "tweets")
    assert [(e.text, e.label, e.domain) for e in got] == [("loved it", 1, "tweets"),
                                                          ("meh, bad", 0, "tweets")]


def test_nested_sdist_tarball_is_read_without_extracting(tmp_path):
    inner = _tar_bytes({
        "hutto_ICWSM_2014/tweets_GroundTruth.txt": b"1\t1.5\tgreat day\n2\t-2\tawful\n",
        "hutto_ICWSM_2014/amazonReviewSnippets_GroundTruth.txt": b"1\t3\tworks well\n",
        "hutto_ICWSM_2014/nytEditorialSnippets_GroundTruth.txt": b"1\t-1\ta grim policy\n",
    })
    sdist = tmp_path / "vader.tar.gz"
    sdist.write_bytes(_tar_bytes({INNER: inner}))
    got = load_vader_examples(sdist)
    assert [(e.domain, e.label) for e in got] == [("tweets", 1), ("tweets", 0), ("amazon", 1),
                                                  ("nyt", 0)]
    with pytest.raises(TaskError, match="not in the cache"):
        load_vader_examples(tmp_path / "missing.tar.gz")


def test_real_mixed_task_has_four_domains():
    if not vader_path().is_file():
        pytest.fail("the vaderSentiment sdist should be in the cache after `make test`'s prepare")
    task = load_task("mixed")
    domains = {e.domain for e in task.train}
    assert domains == {"movies", "tweets", "amazon", "nyt"}
    tweets = [e for e in task.train + task.test if e.domain == "tweets"]
    assert 3500 < len(tweets) < 4200 and {e.label for e in tweets} == {0, 1}
