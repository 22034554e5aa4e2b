"""MintPy's parallel steps on the workers of an existing scheduler (compute.scheduler_address).

A ``dask scheduler`` and one ``dask worker`` process run on 127.0.0.1. MintPy's
``invert_network``, ``correct_topography`` and ``velocity`` run on the same synthetic stack
twice from the same loaded inputs: serially (``mintpy.compute.cluster = none``) and with the
scheduler's address in ``INSARFLOW_DASK_SCHEDULER``. The scheduler's task stream (which
records every task with the worker that ran it) shows where MintPy's chunks ran.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from dask.utils import key_split
from distributed import Client

from insarflow.tasks.mintpy_runner import SCHEDULER_ENV
from insarflow.tasks.sbas import (
    prepare_mintpy_metadata,
    run_mintpy_step,
    write_smallbaseline_cfg,
)
from tests.orchestration.conftest import Process, Processes, clean_env, wait_until

from .synthetic import SyntheticStack

pytestmark = pytest.mark.slow

THREADS = 2  # the worker's threads: MintPy splits each box into this many chunks
LOADED = ("load_data", "modify_network", "reference_point")
PARALLEL = ("invert_network", "correct_topography", "velocity")
# MintPy's functions for one chunk (the Dask task prefixes of its futures)
CHUNK_FUNCTIONS = {
    "invert_network": "run_ifgram_inversion_patch",
    "correct_topography": "correct_dem_error_patch",
}


@dataclass
class Scheduler:
    address: str
    worker_address: str
    worker: Process


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scheduler]:
    """A scheduler and one worker, separate processes, stopped by PID."""
    root = tmp_path_factory.mktemp("dask")
    processes = Processes(root / "logs")
    try:
        scheduler_file = root / "scheduler.json"
        env = clean_env(MPLBACKEND="Agg")
        dask = [sys.executable, "-m", "dask"]
        process = processes.start(
            "dask-scheduler",
            [
                *(*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard"),
                *("--scheduler-file", str(scheduler_file)),
            ],
            env,
        )
        wait_until(scheduler_file.is_file, timeout_s=60, what="dask scheduler", process=process)
        address = json.loads(scheduler_file.read_text())["address"]
        worker = processes.start(
            "mintpy-worker",
            [
                *(*dask, "worker", address, "--name", "mintpy-worker", "--host", "127.0.0.1"),
                *("--nthreads", str(THREADS), "--no-nanny", "--no-dashboard"),
                *("--local-directory", str(root / "mintpy-worker")),
            ],
            env,
        )
        with Client(address, timeout=60) as client:
            client.wait_for_workers(1, timeout=90)
            (worker_address,) = client.scheduler_info(n_workers=-1)["workers"]
        yield Scheduler(address, worker_address, worker)
    finally:
        processes.stop_all()


def _read(path: Path, name: str) -> Any:
    with h5py.File(path, "r") as f:
        return f[name][:]


def test_inversion_and_dem_error_run_on_the_scheduler_workers(
    stack: SyntheticStack, tmp_path: Path, no_isce_env: dict[str, str], scheduler: Scheduler
) -> None:
    logs = tmp_path / "logs"
    serial, remote = tmp_path / "serial", tmp_path / "remote"
    prepare_mintpy_metadata(stack.stack_dir, log_dir=logs, env=no_isce_env)
    common: dict[str, Any] = {
        "stack_dir": stack.stack_dir,
        "reference_yx": stack.reference_yx,
        "plot": False,
    }
    cfg = write_smallbaseline_cfg(serial / "smallbaselineApp.cfg", **common)
    for step in LOADED:
        run_mintpy_step(step, cfg, serial, logs / "serial", env=no_isce_env)
    shutil.copytree(serial, remote)
    remote_cfg = write_smallbaseline_cfg(
        remote / "smallbaselineApp.cfg", cluster="scheduler", **common
    )

    env = {**no_isce_env, SCHEDULER_ENV: scheduler.address}
    with Client(scheduler.address, timeout=60) as client:
        client.get_task_stream()  # the scheduler records tasks from now on
        started = time.time()
        for step in PARALLEL:
            run_mintpy_step(step, remote_cfg, remote, logs / "remote", env=env)
        stream = client.get_task_stream(start=started)
    for step in PARALLEL:
        run_mintpy_step(step, cfg, serial, logs / "serial", env=no_isce_env)

    # Each step's box (one: the stack is small) in as many chunks as the worker has threads,
    # every chunk a task of the worker process.
    ran = Counter((key_split(record["key"]), record["worker"]) for record in stream)
    assert ran == {(name, scheduler.worker_address): THREADS for name in CHUNK_FUNCTIONS.values()}
    for step in CHUNK_FUNCTIONS:
        log = (logs / "remote" / "mintpy" / f"{step}.log").read_text(encoding="utf-8")
        assert f"connect to the Dask scheduler at {scheduler.address}" in log
        assert "split patch into 2 sub boxes" in log
        serial_log = (logs / "serial" / "mintpy" / f"{step}.log").read_text(encoding="utf-8")
        assert "Dask" not in serial_log
    scheduler.worker.check_alive()  # MintPy closed its client only

    for name, dataset in (
        ("timeseries.h5", "timeseries"),
        ("timeseries_demErr.h5", "timeseries"),
        ("demErr.h5", "dem"),
        ("velocity.h5", "velocity"),
    ):
        expected = _read(serial / name, dataset)
        assert np.isfinite(expected).any()
        np.testing.assert_allclose(_read(remote / name, dataset), expected, rtol=1e-5, atol=1e-7)
