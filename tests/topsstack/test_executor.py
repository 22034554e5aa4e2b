"""The topsStack executor on the real Prefect engine and a real Dask cluster.

The stack is built from the real run files and configs of the 4-date NESD fixture; the
ISCE2 scripts they call are replaced by ``instrumented_line.py`` (on PATH under the real
script names), which sleeps, writes the line's outputs, can fail on demand, and records
start/end time and memory reservation of every attempt.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import shutil
import stat
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    TaskRunFilter,
    TaskRunFilterName,
    TaskRunFilterStartTime,
)
from prefect.client.schemas.objects import TaskRun, TaskRunResult
from prefect.client.schemas.sorting import ArtifactSort
from prefect.exceptions import ObjectNotFound

from insarflow.flows.topsstack import REPORT_KEY, topsstack_flow
from insarflow.tasks.shell import CommandResult
from insarflow.tasks.topsstack.dag import build_dag, descendants
from insarflow.tasks.topsstack.executor import (
    ExecutionReport,
    FailureKind,
    LineFailed,
    StackFailed,
    StackScheduler,
    class_limits_in_force,
    classify_failure,
    is_line_done,
    line_fingerprint,
    line_memory_mb,
    line_task_options,
    marker_path,
    oom_retry_memory_mb,
    plan_scheduler,
    run_line,
    skipped_result,
)
from insarflow.tasks.topsstack.runfiles import RunLine, parse_run_files

from .instrumented_line import command_key

SCRIPT = Path(__file__).with_name("instrumented_line.py")

TOOLS = (
    "SentinelWrapper.py",
    "subsetReference.py",
    "invertMisreg.py",
    "extractCommonValidRegion.py",
)
N_BURSTS, RANGE_LOOKS, AZIMUTH_LOOKS = 2, 9, 3
BUDGET_MB = 6000  # 2 workers x 3000 MB: one full-burst geo2rdr/resample line per worker
N_WORKERS, THREADS = 2, 3


@dataclass
class Stack:
    """A topsStack work directory whose scripts are the instrumented stand-in."""

    root: Path
    lines: list[RunLine] = field(default_factory=list)

    @property
    def stack_dir(self) -> Path:
        return self.root / "stack"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    @property
    def plan_file(self) -> Path:
        return self.root / "plan.json"

    @property
    def record_file(self) -> Path:
        return self.root / "records.jsonl"

    @property
    def dag(self) -> dict[str, frozenset[str]]:
        return build_dag(self.lines)

    def line(self, line_id: str) -> RunLine:
        return next(line for line in self.lines if line.line_id == line_id)

    def write_plan(
        self,
        sleeps: Mapping[str, float] | None = None,
        failures: Mapping[str, Mapping[str, Any]] | None = None,
        heartbeats: Mapping[str, Path] | None = None,
        allocate_mb: Mapping[str, int] | None = None,
    ) -> None:
        plan = {
            "record_file": str(self.record_file),
            "lines": {
                command_key(list(line.command)): {
                    "line_id": line.line_id,
                    "sleep": (sleeps or {}).get(line.line_id, 0.05),
                    "outputs": [str(p) for p in line.outputs],
                    **(failures or {}).get(line.line_id, {}),
                    "allocate_mb": (allocate_mb or {}).get(line.line_id, 0),
                    **(
                        {"heartbeat": str(heartbeats[line.line_id])}
                        if heartbeats and line.line_id in heartbeats
                        else {}
                    ),
                }
                for line in self.lines
            },
        }
        self.plan_file.write_text(json.dumps(plan))

    def records(self) -> list[dict[str, Any]]:
        if not self.record_file.exists():
            return []
        return [json.loads(x) for x in self.record_file.read_text().splitlines()]

    def run(
        self,
        *,
        budget_mb: int = BUDGET_MB,
        threads: int = THREADS,
        workers: int = N_WORKERS,
        learn_memory: bool = False,  # these tests check the model's own estimates
    ) -> ExecutionReport:
        self.record_file.unlink(missing_ok=True)
        return topsstack_flow(
            stack_dir=self.stack_dir,
            log_dir=self.log_dir,
            memory_budget_mb=budget_mb,
            n_bursts=N_BURSTS,
            range_looks=RANGE_LOOKS,
            azimuth_looks=AZIMUTH_LOOKS,
            n_workers=workers,
            threads_per_worker=threads,
            extra_path=[self.bin_dir],
            env={"INSARFLOW_TEST_PLAN": str(self.plan_file), "OMP_NUM_THREADS": "2"},
            learn_memory=learn_memory,
        )


def make_stack(root: Path, fixtures_dir: Path) -> Stack:
    """Copy the 4-date NESD run files/configs under ``root/stack`` and install the stand-ins."""
    source = fixtures_dir / "topsstack_runfiles" / "nesd_4dates"
    stack = Stack(root)
    for sub in ("run_files", "configs"):
        shutil.copytree(source / sub, stack.stack_dir / sub)
        for path in (stack.stack_dir / sub).iterdir():
            path.write_text(path.read_text().replace("/data/stack", str(stack.stack_dir)))
    stack.bin_dir.mkdir()
    for tool in TOOLS:
        launcher = stack.bin_dir / tool
        launcher.write_text(
            f"#!{sys.executable}\n"
            "import sys\n"
            f"sys.path.insert(0, {str(SCRIPT.parent)!r})\n"
            "import instrumented_line\n"
            "sys.exit(instrumented_line.main())\n"
        )
        launcher.chmod(launcher.stat().st_mode | stat.S_IXUSR)
    stack.lines = parse_run_files(stack.stack_dir)
    return stack


def latest_report_markdown() -> str:
    """The newest ``topsstack-report`` artifact (with a client that is closed again)."""
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            limit=1,
            sort=ArtifactSort.UPDATED_DESC,
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[REPORT_KEY])),
        )
    assert artifacts, "no topsstack-report artifact"
    return str(artifacts[0].data)


@contextlib.contextmanager
def tag_limit(tag: str, slots: int) -> Iterator[None]:
    """A tag concurrency limit, as deployments/setup.py creates it, while the block runs."""
    with get_client(sync_client=True) as client:
        client.create_concurrency_limit(tag=tag, concurrency_limit=slots)
    try:
        yield
    finally:
        with get_client(sync_client=True) as client:
            client.delete_global_concurrency_limit_by_name(f"tag:{tag}")


def scenario_task_runs(scenario: Scenario, names: list[str]) -> list[TaskRun]:
    """The task runs with these names that the scenario's executions started, as the Prefect
    API recorded them (lines of other tests' stacks may share the names)."""
    runs: list[TaskRun] = []
    with get_client(sync_client=True) as client:
        while page := client.read_task_runs(
            task_run_filter=TaskRunFilter(
                name=TaskRunFilterName(any_=names),
                start_time=TaskRunFilterStartTime(
                    after_=scenario.window[0], before_=scenario.window[1]
                ),
            ),
            limit=200,
            offset=len(runs),
        ):
            runs += page
    return runs


def task_run_tags(scenario: Scenario, names: list[str]) -> dict[str, set[str]]:
    """Tags of the scenario's task runs with these names."""
    return {run.name: set(run.tags) for run in scenario_task_runs(scenario, names)}


def ok_runs(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The successful attempt of each line."""
    return {r["line_id"]: r for r in records if r["outcome"] == "ok"}


def peak_reserved_mb(records: list[dict[str, Any]]) -> tuple[int, int]:
    """Largest sum of reservations, and largest count, of attempts running at one instant."""
    events = sorted(
        [(r["start"], 1, r["memory_mb"]) for r in records]
        + [(r["end"], 0, -r["memory_mb"]) for r in records]
    )  # at equal times an end (0) sorts before a start (1)
    total = running = peak = peak_count = 0
    for _, is_start, delta in events:
        total += delta
        running += 1 if is_start else -1
        peak, peak_count = max(peak, total), max(peak_count, running)
    return peak, peak_count


# --------------------------------------------------------------------------- one stack, three runs
#
# 1. "broken": an early line fails deterministically while the reference line still runs.
# 2. "fixed": the cause is gone; the rerun resumes, with one OOM kill and one bus error
#    (each on the first attempt only) and one slow resampling date.
# 3. "touched": two markers deleted, a config edited, an output deleted; rerun.

FAILING = "02_unpack_secondary_slc:20250512"
REFERENCE = "01_unpack_topo_reference:reference"
OOM_LINE = "15_filter_coherence:20250418_20250430"
BUS_LINE = "14_merge_burst_igram:20250406_20250430"
SLOW_RESAMPLE = "10_fullBurst_resample:20250512"
STALE_MARKER = "16_unwrap:20250430_20250512"
UPSTREAM_MARKER = "13_generate_burst_igram:20250418_20250512"
EDITED_CONFIG = "16_unwrap:20250406_20250418"
LOST_OUTPUT = "12_merge_reference_secondary_slc:hgt"
TAIL = "ERROR: cannot open measurement/s1a-iw1-slc.tiff"


@dataclass
class Scenario:
    stack: Stack
    broken: StackFailed
    broken_records: list[dict[str, Any]]
    broken_markdown: str
    broken_markers: set[str]
    fixed: ExecutionReport
    fixed_records: list[dict[str, Any]]
    fixed_markdown: str
    touched: ExecutionReport
    touched_records: list[dict[str, Any]]
    fingerprint_before_edit: str
    window: tuple[datetime, datetime]  # when the three executions ran


@pytest.fixture(scope="module")
def scenario(
    prefect_harness: None, fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Scenario:
    stack = make_stack(tmp_path_factory.mktemp("executor"), fixtures_dir)
    started = datetime.now(UTC)
    # An operator's limit on memory-heavy lines (deployments/setup.py), roomy enough not to bind.
    with tag_limit("memory-heavy", 50):
        flag = stack.root / "broken"
        flag.touch()
        stack.write_plan(
            # The reference line still runs when the failure is seen: it must finish, and
            # nothing that becomes ready after it (average_baseline, overlaps) may start.
            sleeps={REFERENCE: 2.0, FAILING: 0.0},
            failures={FAILING: {"fail_if_exists": str(flag), "fail_rc": 1, "fail_message": TAIL}},
        )
        with pytest.raises(StackFailed) as caught:
            # Room for the four first lines on one worker (4 threads, 2200 + 3 x 540 MB).
            stack.run(budget_mb=8000, threads=4)
        broken_records, broken_markdown = stack.records(), latest_report_markdown()
        broken_markers = {
            ln.line_id for ln in stack.lines if marker_path(ln, stack.stack_dir).exists()
        }

        flag.unlink()
        stack.write_plan(
            sleeps={SLOW_RESAMPLE: 0.8},
            failures={
                OOM_LINE: {
                    "fail_once": str(stack.root / "oom.state"),
                    "fail_rc": 137,
                    "fail_message": "Out of memory: snaphu could not allocate",
                },
                BUS_LINE: {
                    "fail_once": str(stack.root / "bus.state"),
                    "fail_rc": 135,
                    "fail_message": "Bus error (core dumped)",
                },
            },
        )
        fixed = stack.run()
        fixed_records, fixed_markdown = stack.records(), latest_report_markdown()

        marker_path(stack.line(STALE_MARKER), stack.stack_dir).unlink()
        marker_path(stack.line(UPSTREAM_MARKER), stack.stack_dir).unlink()
        edited = stack.line(EDITED_CONFIG)
        assert edited.config_path is not None
        before = line_fingerprint(edited)
        text = edited.config_path.read_text()
        edited.config_path.write_text(text.replace("defomax : 2", "defomax : 3"))
        stack.line(LOST_OUTPUT).outputs[0].unlink()
        touched = stack.run()
    return Scenario(
        stack,
        caught.value,
        broken_records,
        broken_markdown,
        broken_markers,
        fixed,
        fixed_records,
        fixed_markdown,
        touched,
        stack.records(),
        before,
        (started, datetime.now(UTC)),
    )


def test_fatal_failure_names_the_line_its_log_and_the_tail(scenario: Scenario) -> None:
    message = str(scenario.broken)
    log_path = scenario.stack.log_dir / "unpack_secondary_slc" / "20250512.log"
    assert FAILING in message
    assert f"full log: {log_path}" in message
    assert TAIL in message
    assert TAIL in log_path.read_text()
    assert "## Failures" in scenario.broken_markdown and TAIL in scenario.broken_markdown


def test_fatal_failure_stops_scheduling_and_lets_running_lines_finish(
    scenario: Scenario,
) -> None:
    records = scenario.broken_records
    assert {r["line_id"] for r in records} == {
        REFERENCE,
        "02_unpack_secondary_slc:20250418",
        "02_unpack_secondary_slc:20250430",
        FAILING,
    }
    assert [r["outcome"] for r in records if r["line_id"] == FAILING] == ["failed"]  # no retry
    finished = set(ok_runs(records))
    assert finished == {r["line_id"] for r in records} - {FAILING}
    report = scenario.broken.report
    assert set(report.results) == finished
    assert len(report.not_started) == 59 - 4
    assert scenario.broken_markers == finished


def test_rerun_after_the_fix_runs_only_unfinished_lines(scenario: Scenario) -> None:
    finished_before = set(ok_runs(scenario.broken_records))
    report = scenario.fixed
    assert sorted(report.skipped) == sorted(finished_before)
    assert set(ok_runs(scenario.fixed_records)) == set(report.ran)
    assert set(report.ran) == {ln.line_id for ln in scenario.stack.lines} - finished_before
    assert not report.failures and not report.not_started
    for line in scenario.stack.lines:
        assert is_line_done(line, scenario.stack.stack_dir), line.line_id


def test_changed_config_lost_output_or_marker_reruns_exactly_those_and_downstream(
    scenario: Scenario,
) -> None:
    stack = scenario.stack
    assert line_fingerprint(stack.line(EDITED_CONFIG)) != scenario.fingerprint_before_edit
    expected = {STALE_MARKER, UPSTREAM_MARKER, EDITED_CONFIG, LOST_OUTPUT}
    expected |= descendants(stack.dag, UPSTREAM_MARKER)
    assert len(expected) == 7
    assert {r["line_id"] for r in scenario.touched_records} == expected
    assert set(scenario.touched.ran) == expected
    assert len(scenario.touched.skipped) == 59 - 7


def test_dependency_order_is_respected_for_every_edge(scenario: Scenario) -> None:
    records = scenario.broken_records + scenario.fixed_records
    runs = ok_runs(records)
    first_start: dict[str, float] = {}
    for record in records:
        first_start[record["line_id"]] = min(
            first_start.get(record["line_id"], math.inf), record["start"]
        )
    edges = [(up, child) for child, ups in scenario.stack.dag.items() for up in ups]
    assert len(edges) > 59
    for up, child in edges:
        assert first_start[child] >= runs[up]["end"], f"{child} started before {up} ended"


def test_interferograms_start_while_resampling_still_runs(scenario: Scenario) -> None:
    runs = ok_runs(scenario.fixed_records)
    first_igram = min(r["start"] for k, r in runs.items() if k.startswith("13_generate_burst"))
    last_resample = max(r["end"] for k, r in runs.items() if k.startswith("10_fullBurst_resample"))
    assert first_igram < last_resample


def test_memory_budget_is_never_exceeded(scenario: Scenario) -> None:
    records = scenario.fixed_records
    expected = {
        line.line_id: line_memory_mb(
            line, n_bursts=N_BURSTS, range_looks=RANGE_LOOKS, azimuth_looks=AZIMUTH_LOOKS
        )
        for line in scenario.stack.lines
    }
    first = {r["line_id"]: r for r in reversed(records)}
    assert len(first) == 59 - 3
    for line_id, record in first.items():
        assert record["memory_mb"] == min(expected[line_id], BUDGET_MB // N_WORKERS)
    # The three fullBurst_geo2rdr lines become ready together and would overrun the budget
    # (3 x 2540 MB > 6000 MB) on the 6 worker threads if Dask did not hold them back.
    assert sum(expected[k] for k in expected if k.startswith("09_")) > BUDGET_MB
    peak, peak_count = peak_reserved_mb(records)
    assert peak <= BUDGET_MB
    assert peak_count >= 2


def test_oom_is_retried_once_with_a_bigger_reservation(scenario: Scenario) -> None:
    attempts = [r for r in scenario.fixed_records if r["line_id"] == OOM_LINE]
    assert [a["outcome"] for a in attempts] == ["failed", "ok"]
    assert attempts[1]["memory_mb"] == math.ceil(attempts[0]["memory_mb"] * 1.5)
    outcomes = [(a.attempt, a.outcome) for a in scenario.fixed.attempts if a.line_id == OOM_LINE]
    assert outcomes == [(1, "oom"), (2, "ran")]
    log = (scenario.stack.log_dir / "filter_coherence" / "20250418_20250430.log").read_text()
    assert "Out of memory" in log and "### rc=137" in log and "### rc=0" in log


def test_transient_crash_is_retried_once_as_is(scenario: Scenario) -> None:
    attempts = [r for r in scenario.fixed_records if r["line_id"] == BUS_LINE]
    assert [a["outcome"] for a in attempts] == ["failed", "ok"]
    assert attempts[0]["memory_mb"] == attempts[1]["memory_mb"]
    outcomes = [(a.attempt, a.outcome) for a in scenario.fixed.attempts if a.line_id == BUS_LINE]
    assert outcomes == [(1, "transient"), (2, "ran")]
    assert scenario.fixed.retries == 2


def test_line_log_records_command_environment_and_result(scenario: Scenario) -> None:
    stack = scenario.stack
    log = (stack.log_dir / "fullBurst_resample" / "20250418.log").read_text()
    assert "### line 10_fullBurst_resample:20250418" in log
    assert f"SentinelWrapper.py -c {stack.stack_dir}/configs/config_fullBurst_resample" in log
    assert "OMP_NUM_THREADS=2" in log and "CUDA_VISIBLE_DEVICES=<unset>" in log
    assert f"PATH additions: {stack.bin_dir}" in log
    assert "INSARFLOW_LINE_MEMORY_MB=2060" in log
    assert "### rc=0 duration=" in log and "peak_rss=" in log


def test_report_artifact_summarises_steps_retries_and_critical_path(scenario: Scenario) -> None:
    markdown, report = scenario.fixed_markdown, scenario.fixed
    assert "56 ran, 3 skipped, 0 failed, 0 not started, 2 retries" in markdown
    assert "| 01 unpack_topo_reference | 1 | 0 | 1 | 0 | 0 |" in markdown
    assert "| 16 unwrap | 5 | 5 | 0 | 0 | 0 |" in markdown
    assert "| 15 filter_coherence | 5 | 5 | 0 | 0 | 1 |" in markdown
    assert SLOW_RESAMPLE in report.critical_path
    assert f"`{SLOW_RESAMPLE}`" in markdown


# --------------------------------------------------------------------------- plain functions


def _result(returncode: int, tail: str) -> CommandResult:
    return CommandResult(["x"], returncode, 1.0, 10.0, Path("x.log"), tail)


@pytest.mark.parametrize(
    ("returncode", "tail", "kind"),
    [
        (137, "", "oom"),
        (-9, "", "oom"),
        (1, "Traceback ...\nMemoryError", "oom"),
        (134, "terminate called after throwing an instance of 'std::bad_alloc'", "oom"),
        (1, "snaphu: Out of memory", "oom"),
        (-11, "", "transient"),
        (139, "", "transient"),
        (-7, "", "transient"),
        (135, "", "transient"),
        (1, "GDAL: Input/output error", "transient"),
        (1, "OSError: [Errno 11] Resource temporarily unavailable", "transient"),
        (1, "ValueError: bbox S N W E", "fatal"),
        (2, "", "fatal"),
    ],
)
def test_classify_failure(returncode: int, tail: str, kind: str) -> None:
    assert classify_failure(_result(returncode, tail)) == kind


def _plain_line(tmp_path: Path, code: str, outputs: tuple[Path, ...]) -> RunLine:
    config = tmp_path / "configs" / "config_unw_20250406_20250418"
    config.parent.mkdir(parents=True, exist_ok=True)
    if not config.exists():
        config.write_text("[Function-1]\nunwrap :\nrlks : 9\n")
    return RunLine(
        step_number=16,
        step="unwrap",
        key="20250406_20250418",
        key_kind="pair",
        command=(sys.executable, "-c", code),
        run_file=tmp_path / "run_files" / "run_16_unwrap",
        config_path=config,
        functions=(),
        outputs=outputs,
    )


def test_run_line_skips_done_lines_and_reruns_on_change(tmp_path: Path) -> None:
    out = tmp_path / "merged" / "filt.unw"
    code = (
        "import pathlib as pl; p = pl.Path('merged/filt.unw'); p.parent.mkdir(); p.write_text('1')"
    )
    line = _plain_line(tmp_path, code, (out,))
    kwargs: dict[str, Any] = {"stack_dir": tmp_path, "log_dir": tmp_path / "logs"}
    assert run_line(line, **kwargs).status == "ran"
    marker = json.loads(marker_path(line, tmp_path).read_text())
    assert marker["fingerprint"] == line_fingerprint(line) and marker["returncode"] == 0
    assert run_line(line, **kwargs).status == "skipped"
    out.write_text("")  # an empty output is not a valid output
    assert not is_line_done(line, tmp_path)
    out.write_text("x")
    assert line.config_path is not None
    line.config_path.write_text("[Function-1]\nunwrap :\nrlks : 3\n")
    assert not is_line_done(line, tmp_path)
    changed = replace(line, command=(*line.command[:-1], code + " # v2"))
    assert not is_line_done(changed, tmp_path)


def test_run_line_without_its_outputs_fails_and_leaves_no_marker(tmp_path: Path) -> None:
    line = _plain_line(tmp_path, "print('done')", (tmp_path / "never.unw",))
    with pytest.raises(LineFailed) as caught:
        run_line(line, stack_dir=tmp_path, log_dir=tmp_path / "logs")
    assert caught.value.kind == "fatal"
    assert "outputs are missing or empty" in str(caught.value)
    assert str(tmp_path / "never.unw") in str(caught.value)
    assert not marker_path(line, tmp_path).exists()


@pytest.mark.parametrize(("bperp", "ok"), [("-23.41", True), ("nan", False), ("inf", False)])
def test_non_finite_baseline_stops_the_line_naming_the_file(
    tmp_path: Path, bperp: str, ok: bool
) -> None:
    """ISCE2 writes ``Bperp (average): nan`` for identical orbits; MintPy fails on it later."""
    baseline = tmp_path / "baselines" / "20210401_20210413" / "20210401_20210413.txt"
    code = (
        "import pathlib as pl; p = pl.Path('baselines/20210401_20210413/20210401_20210413.txt');"
        f"p.parent.mkdir(parents=True); p.write_text('swath: IW1\\nBperp (average): {bperp}\\n')"
    )
    line = replace(
        _plain_line(tmp_path, code, (baseline,)),
        step="average_baseline",
        key="20210413",
        key_kind="date",
    )
    if ok:
        assert run_line(line, stack_dir=tmp_path, log_dir=tmp_path / "logs").status == "ran"
        return
    with pytest.raises(LineFailed) as caught:
        run_line(line, stack_dir=tmp_path, log_dir=tmp_path / "logs")
    assert caught.value.kind == "fatal"
    assert f"{baseline} gives a perpendicular baseline of {bperp}" in str(caught.value)
    assert "inputs.orbit_dir" in str(caught.value)
    assert not marker_path(line, tmp_path).exists()


def test_oom_error_says_what_to_change_and_survives_pickling(tmp_path: Path) -> None:
    line = _plain_line(tmp_path, "import sys; print('MemoryError'); sys.exit(1)", ())
    with pytest.raises(LineFailed) as caught:
        run_line(line, stack_dir=tmp_path, log_dir=tmp_path / "logs")
    error = caught.value
    assert error.kind == "oom" and error.returncode == 1
    assert "reduce parallelism or raise the memory budget" in str(error)
    assert str(tmp_path / "logs" / "unwrap" / "20250406_20250418.log") in str(error)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.line_id, copy.kind, copy.returncode, str(copy)) == (
        error.line_id,
        error.kind,
        error.returncode,
        str(error),
    )


def test_missing_program_is_a_fatal_failure_naming_path(tmp_path: Path) -> None:
    line = replace(_plain_line(tmp_path, "", ()), command=("SentinelWrapper.py", "-c", "x"))
    with pytest.raises(LineFailed) as caught:
        run_line(
            line, stack_dir=tmp_path, log_dir=tmp_path / "logs", env={"PATH": os.fspath(tmp_path)}
        )
    assert caught.value.kind == "fatal"
    assert "SentinelWrapper.py" in str(caught.value) and "extra_path" in str(caught.value)


def test_oom_retry_reservation_is_capped_to_a_worker() -> None:
    assert oom_retry_memory_mb(2000, 4000) == 3000
    assert oom_retry_memory_mb(2600, 3000) == 3000
    assert oom_retry_memory_mb(2600, None) == 3900


def test_task_runs_are_named_by_line_and_carry_no_tags(scenario: Scenario) -> None:
    """The stage holds the memory-heavy limit's slots itself: a tagged task run would ask the
    API for a slot per line."""
    names = [
        "fullBurst_resample-20250418",
        "unpack_secondary_slc-20250418",
        "filter_coherence-20250418_20250430",
        "filter_coherence-20250418_20250430-retry1",
    ]
    assert task_run_tags(scenario, names) == {name: set() for name in names}


def test_only_classes_with_an_active_limit_are_limited(prefect_harness: None) -> None:
    names = ("tag:gpu", "tag:memory-heavy", "tag:cpu")
    with get_client(sync_client=True) as client:
        for name in names:  # limits other tests left in the shared test API
            with contextlib.suppress(ObjectNotFound):
                client.delete_global_concurrency_limit_by_name(name)
        assert class_limits_in_force() == {}
        client.create_concurrency_limit(tag="gpu", concurrency_limit=1)
        client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name="tag:memory-heavy", limit=4, active=False)
        )
        client.create_concurrency_limit(tag="cpu", concurrency_limit=2)  # not a limited class
        try:
            assert class_limits_in_force() == {"gpu": 1}
        finally:
            for name in names:
                client.delete_global_concurrency_limit_by_name(name)


def test_task_runs_record_the_lines_they_waited_for(scenario: Scenario) -> None:
    """The UI draws the stack's graph from each task run's ``wait_for`` inputs."""
    by_label = {line.label: line for line in scenario.stack.lines}
    names = list(by_label) + [f"{label}-retry1" for label in by_label]
    runs = scenario_task_runs(scenario, names)
    name_of = {run.id: run.name for run in runs}

    def line_of(name: str) -> RunLine:
        return by_label[name.removesuffix("-retry1")]

    def waited_for(run: TaskRun) -> set[str]:
        inputs = run.task_inputs.get("wait_for", [])
        return {line_of(name_of[i.id]).line_id for i in inputs if isinstance(i, TaskRunResult)}

    edges = 0
    for run in runs:
        upstream = waited_for(run)
        assert upstream <= scenario.stack.dag[line_of(run.name).line_id], run.name
        edges += len(upstream)
    assert edges > len(scenario.stack.lines)
    # The retry after the OOM kill in the "fixed" run waited for what that run executed above it.
    retry = next(run for run in runs if run.name == f"{scenario.stack.line(OOM_LINE).label}-retry1")
    ran_above = {
        up for up in scenario.stack.dag[OOM_LINE] if scenario.fixed.results[up].status == "ran"
    }
    assert ran_above
    assert waited_for(retry) == ran_above


def _scheduler_for(fixtures_dir: Path, tmp_path: Path) -> StackScheduler:
    stack = make_stack(tmp_path, fixtures_dir)
    return plan_scheduler(
        stack.lines,
        stack.dag,
        n_bursts=N_BURSTS,
        range_looks=RANGE_LOOKS,
        azimuth_looks=AZIMUTH_LOOKS,
        use_gpu=True,
        worker_memory_mb=3000,
    )


def test_scheduler_submits_roots_first_and_gpu_lines_hold_a_gpu(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    scheduler = _scheduler_for(fixtures_dir, tmp_path)
    first = scheduler.next_submissions()
    assert [s.line.line_id for s in first] == [
        "01_unpack_topo_reference:reference",
        "02_unpack_secondary_slc:20250418",
        "02_unpack_secondary_slc:20250430",
        "02_unpack_secondary_slc:20250512",
    ]
    reference, secondary = first[0], first[1]
    assert reference.resource_class == "gpu" and reference.memory_mb == 2200
    assert reference.dask_resources(gpu=True) == {"MEMORY_MB": 2200.0, "GPU": 1.0}
    assert reference.dask_resources(gpu=False) == {"MEMORY_MB": 2200.0}
    assert secondary.dask_resources(gpu=True) == {"MEMORY_MB": 540.0}
    assert line_task_options(reference.line) == {"task_run_name": "unpack_topo_reference-reference"}
    assert line_task_options(reference.line, 2)["task_run_name"].endswith("-retry1")
    assert scheduler.next_submissions() == []  # nothing new until something finishes


def test_scheduler_retries_oom_and_transient_once_each_then_stops(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    scheduler = _scheduler_for(fixtures_dir, tmp_path)
    reference = scheduler.next_submissions()[0]
    line_id = reference.line.line_id

    def failure(kind: FailureKind) -> LineFailed:
        return LineFailed(line_id, kind, tmp_path / "x.log", "tail")

    oom_retry = scheduler.failed(line_id, failure("oom"))
    assert oom_retry is not None and oom_retry.memory_mb == 3000  # 1.5 x 2200, capped
    transient_retry = scheduler.failed(line_id, failure("transient"))
    assert transient_retry is not None and transient_retry.memory_mb == 3000
    assert transient_retry.attempt == 3
    assert scheduler.failed(line_id, failure("oom")) is None
    assert scheduler.stopped and scheduler.next_submissions() == []
    for sub in scheduler.running():  # the lines already running still finish
        scheduler.succeeded(sub.line.line_id, skipped_result(sub.line))
    assert scheduler.finished
    report = scheduler.report()
    assert [f.line_id for f in report.failures] == [line_id]
    assert len(report.not_started) == 59 - 4
    with pytest.raises(StackFailed, match="reduce parallelism or raise the memory budget"):
        raise StackFailed(report)


def test_scheduler_skips_done_lines_without_submitting_them(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    scheduler = _scheduler_for(fixtures_dir, tmp_path)
    done = {"01_unpack_topo_reference:reference", "02_unpack_secondary_slc:20250418"}
    first = scheduler.next_submissions(is_done=lambda line: line.line_id in done)
    # Lines made ready by skipped lines are submitted in the same call, not forced.
    assert [s.line.line_id for s in first] == [
        "02_unpack_secondary_slc:20250430",
        "02_unpack_secondary_slc:20250512",
        "03_average_baseline:20250418",
        "04_extract_burst_overlaps:all",
    ]
    assert not any(s.force for s in first)
    result = scheduler.result("01_unpack_topo_reference:reference")
    assert result is not None and result.status == "skipped"
    # A line whose upstream line re-ran is forced, marker or not.
    ran = first[0].line
    scheduler.succeeded(ran.line_id, replace(skipped_result(ran), status="ran"))
    (forced,) = scheduler.next_submissions(is_done=lambda line: True)
    assert forced.line.line_id == "03_average_baseline:20250430" and forced.force
