"""Split a task's training examples among simulated clients (flwr-datasets partitioners).

Each client then splits its share into its own train and test examples, so that personalized
accuracy is measured on data from the client's own distribution.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from prge.perturb import derive_seed
from prge.tasks import Example

PARTITIONS = ("iid", "dirichlet", "domain")


class PartitionError(ValueError):
    """The data cannot be split as asked (one sentence)."""


@dataclass(frozen=True)
class ClientData:
    partition_id: int
    train: list[Example]
    test: list[Example]


def _dataset(examples: Sequence[Example]):
    from datasets import Dataset

    return Dataset.from_dict({"idx": list(range(len(examples))),
                              "label": [ex.label for ex in examples],
                              "domain": [ex.domain for ex in examples]})


def partition_indices(examples: Sequence[Example], num_clients: int, how: str, alpha: float,
                      seed: int) -> list[list[int]]:
    """Example indices of every client, from a flwr-datasets partitioner over the examples."""
    from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, NaturalIdPartitioner

    if num_clients > len(examples):
        raise PartitionError(f"num-clients={num_clients} exceeds the {len(examples)} training examples")
    # IidPartitioner does not shuffle: shuffle first, with a seed of the run.
    order = np.random.default_rng(derive_seed(seed, "partition")).permutation(len(examples))
    shuffled = [examples[i] for i in order]
    ds = _dataset(shuffled)
    if how == "iid":
        part = IidPartitioner(num_partitions=num_clients)
        part.dataset = ds
        shares = [part.load_partition(p)["idx"] for p in range(num_clients)]
    elif how == "dirichlet":
        # Each client needs a few examples of its own (to train on and to test personalization).
        min_size = max(2, min(10, len(examples) // (10 * num_clients)))
        part = DirichletPartitioner(num_partitions=num_clients, partition_by="label", alpha=alpha,
                                    min_partition_size=min_size,
                                    seed=derive_seed(seed, "dirichlet") % 2**32)
        part.dataset = ds
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # retries are reported by the error below
                shares = [part.load_partition(p)["idx"] for p in range(num_clients)]
        except ValueError:
            raise PartitionError(
                f"alpha={alpha} leaves some of {num_clients} clients under {min_size} examples; "
                "raise alpha or lower num-clients") from None
    elif how == "domain":
        # Clients take the domains in turn (client i -> domain i mod D); a domain shared by
        # several clients is split among them IID.
        natural = NaturalIdPartitioner(partition_by="domain")
        natural.dataset = ds
        n_domains = natural.num_partitions  # one flwr-datasets partition per domain
        if num_clients < n_domains:
            raise PartitionError(f"partition=domain needs num-clients >= the {n_domains} domains")
        shares = []
        for client in range(num_clients):
            d = client % n_domains
            members = list(range(d, num_clients, n_domains))
            rows = natural.load_partition(d)["idx"]
            shares.append(rows[members.index(client)::len(members)])
    else:
        raise PartitionError(f"partition={how!r} must be one of {', '.join(PARTITIONS)}")
    return [[int(order[i]) for i in share] for share in shares]


def client_data(examples: Sequence[Example], indices: Sequence[int], partition_id: int,
                test_fraction: float, seed: int) -> ClientData:
    """A client's own train/test split of its share (seeded per client)."""
    rng = np.random.default_rng(derive_seed(seed, "client-split", partition_id))
    own = [examples[i] for i in rng.permutation(np.asarray(indices, dtype=int))]
    n_test = int(round(len(own) * test_fraction))
    if len(own) - n_test < 1:
        raise PartitionError(f"client {partition_id} has no training examples left")
    return ClientData(partition_id, own[n_test:], own[:n_test])


def run_partitions(examples: Sequence[Example], cfg) -> list[ClientData]:
    """Every client's data for a run config (its partition keys and seed): what the simulator
    deals the devices, and what the server knows of them (their sizes)."""
    shares = partition_indices(examples, cfg.num_clients, cfg.partition, cfg.alpha, cfg.seed)
    return [client_data(examples, share, pid, cfg.client_test_fraction, cfg.seed)
            for pid, share in enumerate(shares)]
