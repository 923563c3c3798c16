import numpy as np
import pytest

from clients.partition import PartitionError, client_data, partition_indices
from prge.tasks import Example


def _examples(n: int = 400) -> list[Example]:
    return [Example(f"t{i}", i % 2, ("movies", "tweets")[i % 3 == 0]) for i in range(n)]


@pytest.mark.parametrize("how", ["iid", "dirichlet", "domain"])
def test_partitions_cover_every_example_once_and_are_seeded(how):
    ex = _examples()
    shares = partition_indices(ex, 8, how, alpha=0.3, seed=1)
    flat = sorted(i for s in shares for i in s)
    assert flat == list(range(len(ex)))
    assert shares == partition_indices(ex, 8, how, alpha=0.3, seed=1)
    assert shares != partition_indices(ex, 8, how, alpha=0.3, seed=2)


def test_dirichlet_skews_labels_and_domain_separates_domains():
    ex = _examples()
    shares = partition_indices(ex, 8, "dirichlet", alpha=0.3, seed=0)
    fractions = [np.mean([ex[i].label for i in s]) for s in shares]
    assert max(fractions) - min(fractions) > 0.4
    by_domain = partition_indices(ex, 4, "domain", alpha=1.0, seed=0)
    assert all(len({ex[i].domain for i in s}) == 1 for s in by_domain)


def test_client_split_and_errors():
    ex = _examples(50)
    data = client_data(ex, list(range(20)), partition_id=3, test_fraction=0.25, seed=0)
    assert (len(data.train), len(data.test)) == (15, 5)
    assert not {e.text for e in data.train} & {e.text for e in data.test}
    with pytest.raises(PartitionError, match="exceeds"):
        partition_indices(ex, 100, "iid", 1.0, 0)
    with pytest.raises(PartitionError, match="must be one of"):
        partition_indices(ex, 4, "zipf", 1.0, 0)
