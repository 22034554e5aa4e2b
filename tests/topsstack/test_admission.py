"""Admission in the flow process, on the real Prefect engine and test API and a real Dask
cluster: server-side limits, GPU ids and thread counts as the lines themselves saw them.

The stack and the stand-in programs are those of ``test_executor.py``; each attempt's start
and end come from the stand-in's records, its environment from its log header.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectNotFound

from insarflow.flows.topsstack import topsstack_flow
from insarflow.tasks.topsstack.executor import MEMORY_LIMIT, ExecutionReport, log_path_for
from insarflow.tasks.topsstack.resources import resource_class

from .test_executor import AZIMUTH_LOOKS, N_BURSTS, RANGE_LOOKS, Stack, make_stack

MEMORY_HEAVY_SLOTS = 3
MEMORY_GB_SLOTS = 8
# What another run served by the same API holds during the whole stage.
FOREIGN = {"tag:memory-heavy": 1, MEMORY_LIMIT: 2}
GPUS = 2
WORKERS, THREADS = 2, 3
LIMIT_NAMES = ("tag:memory-heavy", "tag:gpu", MEMORY_LIMIT)


@contextlib.contextmanager
def server_limits() -> Iterator[None]:
    """``memory-heavy`` = 3 and ``insarflow-memory-gb`` = 8 on the test API (no gpu limit:
    the GPU ids alone keep GPU lines apart)."""
    with get_client(sync_client=True) as client:
        for name in LIMIT_NAMES:  # limits other tests left in the shared test API
            with contextlib.suppress(ObjectNotFound):
                client.delete_global_concurrency_limit_by_name(name)
        client.create_concurrency_limit(tag="memory-heavy", concurrency_limit=MEMORY_HEAVY_SLOTS)
        client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name=MEMORY_LIMIT, limit=MEMORY_GB_SLOTS)
        )
    try:
        yield
    finally:
        with get_client(sync_client=True) as client:
            for name in LIMIT_NAMES:
                with contextlib.suppress(ObjectNotFound):
                    client.delete_global_concurrency_limit_by_name(name)


@contextlib.contextmanager
def foreign_holds() -> Iterator[None]:
    """Slots of :data:`FOREIGN` held, as another run would, from threads of their own."""
    release = threading.Event()
    acquired = threading.Barrier(len(FOREIGN) + 1)

    def hold(name: str, occupy: int) -> None:
        with concurrency(name, occupy=occupy, strict=True):
            acquired.wait()
            release.wait()

    threads = [threading.Thread(target=hold, args=item) for item in FOREIGN.items()]
    for thread in threads:
        thread.start()
    acquired.wait(timeout=60)
    try:
        yield
    finally:
        release.set()
        for thread in threads:
            thread.join()


def active_slots() -> dict[str, int]:
    with get_client(sync_client=True) as client:
        return {
            name: client.read_global_concurrency_limit_by_name(name).active_slots
            for name in FOREIGN
        }


@dataclass
class Run:
    stack: Stack
    report: ExecutionReport
    records: list[dict[str, Any]]
    active_after: dict[str, int]  # the API's taken slots once the stage returned

    def header(self, line_id: str, name: str) -> str:
        """The value of ``name`` in the environment line of the line's log."""
        log = log_path_for(self.stack.line(line_id), self.stack.log_dir).read_text()
        match = re.search(rf"^### env: .*\b{name}=(\S+)", log, re.MULTILINE)
        assert match, f"no {name} in the log of {line_id}"
        return match.group(1)

    def spans(self, line_ids: set[str]) -> list[tuple[float, float, str]]:
        return sorted(
            (r["start"], r["end"], r["line_id"]) for r in self.records if r["line_id"] in line_ids
        )


def peak_overlap(spans: list[tuple[float, float, str]], weight: dict[str, int]) -> int:
    """Largest sum of ``weight`` over spans running at one instant (an end before a start)."""
    events = sorted(
        [(start, 1, weight[i]) for start, _, i in spans]
        + [(end, 0, -weight[i]) for _, end, i in spans]
    )
    total = peak = 0
    for _, _, delta in events:
        total += delta
        peak = max(peak, total)
    return peak


@pytest.fixture(scope="module")
def run(prefect_harness: None, fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    stack = make_stack(tmp_path_factory.mktemp("admission"), fixtures_dir)
    # Long enough that the memory-heavy and GPU lines become ready while others run.
    stack.write_plan(
        sleeps={
            line.line_id: 0.4
            for line in stack.lines
            if resource_class(line.step, True) in ("gpu", "memory-heavy")
        }
    )
    with server_limits(), foreign_holds():
        report = topsstack_flow(
            stack_dir=stack.stack_dir,
            log_dir=stack.log_dir,
            memory_budget_mb=12000,
            n_bursts=N_BURSTS,
            range_looks=RANGE_LOOKS,
            azimuth_looks=AZIMUTH_LOOKS,
            n_workers=WORKERS,
            threads_per_worker=THREADS,
            use_gpu=True,
            gpus=GPUS,
            extra_path=[stack.bin_dir],
            env={"INSARFLOW_TEST_PLAN": str(stack.plan_file)},  # no OMP_NUM_THREADS given
            learn_memory=False,  # the GB peak below is checked against the model's estimates
        )
        active_after = active_slots()
    return Run(stack, report, stack.records(), active_after)


def test_a_tag_limit_of_k_is_never_exceeded_counting_other_runs(run: Run) -> None:
    """The stage holds its lines' slots on the API: with another run holding one of the three
    memory-heavy slots, at most two of its memory-heavy lines run at once."""
    heavy = {
        ln.line_id for ln in run.stack.lines if resource_class(ln.step, True) == "memory-heavy"
    }
    assert len(heavy) > 3 * MEMORY_HEAVY_SLOTS
    assert sorted(run.report.ran) == sorted(ln.line_id for ln in run.stack.lines)
    ones = dict.fromkeys(heavy, 1)
    assert peak_overlap(run.spans(heavy), ones) == MEMORY_HEAVY_SLOTS - FOREIGN["tag:memory-heavy"]


def test_the_server_memory_limit_holds_each_line_in_whole_gb(run: Run) -> None:
    gb = {r["line_id"]: math.ceil(r["memory_mb"] / 1024) for r in run.records}
    every = {ln.line_id for ln in run.stack.lines}
    peak = peak_overlap(run.spans(every), gb)
    free = MEMORY_GB_SLOTS - FOREIGN[MEMORY_LIMIT]
    assert free - 2 <= peak <= free  # it binds, and holds


def test_the_stage_gives_its_slots_back(run: Run) -> None:
    assert run.active_after == FOREIGN


def test_gpu_lines_get_the_gpu_they_reserved(run: Run) -> None:
    gpu = {ln.line_id for ln in run.stack.lines if resource_class(ln.step, True) == "gpu"}
    devices = {line_id: run.header(line_id, "CUDA_VISIBLE_DEVICES") for line_id in gpu}
    assert set(devices.values()) == {"0", "1"}
    spans = run.spans(gpu)
    for i, (_, end, line_id) in enumerate(spans):
        for other_start, _, other in spans[i + 1 :]:
            if other_start < end:  # ran at the same time: different GPUs
                assert devices[line_id] != devices[other], (line_id, other)
    cpu_line = next(ln.line_id for ln in run.stack.lines if resource_class(ln.step, True) == "cpu")
    assert run.header(cpu_line, "CUDA_VISIBLE_DEVICES") == "<unset>"


def test_each_line_uses_its_share_of_the_cores(run: Run) -> None:
    share = str(max(1, (os.cpu_count() or 1) // (WORKERS * THREADS)))
    assert {run.header(ln.line_id, "OMP_NUM_THREADS") for ln in run.stack.lines} == {share}


def test_topo_alone_takes_the_free_slots_as_processes(run: Run) -> None:
    """topo starts with no other line waiting: it holds every free line slot, up to one per
    burst, runs that many processes (its config's numProcess), one OpenMP thread each."""
    topo = next(ln for ln in run.stack.lines if ln.step == "unpack_topo_reference")
    processes = min(N_BURSTS, WORKERS * THREADS)
    assert processes > 1
    log = log_path_for(topo, run.stack.log_dir).read_text()
    assert f"### launched: topo in {processes} processes (1 OpenMP thread(s) each)" in log
    assert run.header(topo.line_id, "OMP_NUM_THREADS") == "1"
    assert topo.config_path is not None
    assert f"numProcess : {processes}\n" in topo.config_path.read_text()
