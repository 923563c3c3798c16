"""A federated run that several test modules read (one run of the suite's FED config)."""

import pytest

from tests.simulation.test_cli import fedprge
from tests.simulation.test_federated import FED


@pytest.fixture(scope="session")
def two_actor_run(tmp_path_factory):
    """FED with two client actors (`ray-cpus=2`), progress shown: (run directory, process)."""
    out = tmp_path_factory.mktemp("fed") / "run"
    proc = fedprge("run", *FED, "--set", "ray-cpus=2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc
