"""The runtime `fedprge run` used before Flower's SuperLink: Flower's deprecated in-process
`run_simulation`, kept only as the reference the supported runtime must equal (tests) and be
timed against (bench/runtime.py). Run it as a script, in a process of its own (it starts Ray):

    python -m tests.simulation.in_process CONFIG.json RUN_DIR
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from pathlib import Path


def run_in_process(config_json: Path, run_dir: Path) -> None:
    from flwr.simulation import run_simulation

    from clients.app import build_client_app
    from clients.runconfig import config_from_mapping
    from simulation.rundir import write_json
    from simulation.runner import _lower_programs
    from simulation.server_app import build_server_app

    cfg = config_from_mapping(json.loads(Path(config_json).read_text()), saved=True)
    if cfg.engine == "executorch":
        _lower_programs(cfg)
    run_dir.mkdir(parents=True)
    write_json(run_dir / "config.json", cfg.to_dict())
    cores = cfg.ray_cpus or os.cpu_count() or 1
    logging.getLogger("flwr").propagate = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_simulation(server_app=build_server_app(cfg, run_dir, progress=False),
                       client_app=build_client_app(cfg, device_dir=run_dir / "devices"),
                       num_supernodes=cfg.num_clients,
                       backend_config={"client_resources": {"num_cpus": cfg.client_cpus},
                                       "init_args": {"num_cpus": cores, "include_dashboard": False,
                                                     "logging_level": logging.ERROR,
                                                     "log_to_driver": False}})


if __name__ == "__main__":
    run_in_process(Path(sys.argv[1]), Path(sys.argv[2]))
