"""Every benchmark script runs at its smoke size and prints its figures (never timed here)."""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

# Each script starts flows, servers or child processes: seconds, not milliseconds.
pytestmark = pytest.mark.slow

BENCH_DIR = Path(__file__).resolve().parents[2] / "benchmarks"
# Settings benchlib would otherwise put into os.environ for the rest of the session.
BENCH_ENV = {
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_LOGGING_TO_API_ENABLED": "false",
    "DASK_LOGGING__DISTRIBUTED": "error",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}


def load_main(script: str) -> Callable[[Sequence[str] | None], int]:
    path = BENCH_DIR / script
    spec = importlib.util.spec_from_file_location(f"insarflow_bench_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    main: Callable[[Sequence[str] | None], int] = module.main
    return main


def figures(text: str) -> dict[str, str]:
    return dict(re.findall(r"^FIGURE ([\w.]+): (.+)$", text, flags=re.MULTILINE))


def run_in_own_process(script: str, tmp_path: Path) -> dict[str, str]:
    """The figures of ``script --smoke`` run in a process of its own (scratch under
    ``tmp_path``, which it must leave empty)."""
    done = subprocess.run(
        [sys.executable, str(BENCH_DIR / script), "--smoke"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **BENCH_ENV, "TMPDIR": str(tmp_path)},
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert not list(tmp_path.glob("insarflow-bench-*")), "scratch directory left behind"
    return figures(done.stdout)


@pytest.fixture
def run_script(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> Callable[..., dict[str, str]]:
    # The scripts' scratch directories go here, so leftovers can be seen.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    for key, value in BENCH_ENV.items():
        monkeypatch.setenv(key, value)
    # Prefect and Dask configured their loggers at import; quiet them as the scripts do.
    for name, level in (("prefect", logging.WARNING), ("distributed", logging.ERROR)):
        monkeypatch.setattr(logging.getLogger(name), "level", level)

    def run(script: str, *args: str) -> dict[str, str]:
        status = load_main(script)(["--smoke", *args])
        out = capsys.readouterr().out
        assert status == 0, out
        assert not list(tmp_path.glob("insarflow-bench-*")), "scratch directory left behind"
        return figures(out)

    return run


def test_scheduling(prefect_harness: Any, run_script: Callable[..., dict[str, str]]) -> None:
    got = run_script("bench_scheduling.py", "--prefect-api", "current")
    for name in (
        "sequential_s", "barriers_s", "dag_s", "dag_plain_threads_s", "a_over_c",
        "b_over_c", "c_over_lower_bound", "dag_utilisation", "barriers_peak_estimate",
    ):  # fmt: skip
        assert f"scheduling.{name}" in got
    assert "never above the budget" in got["scheduling.dag_peak_reservation"]


def test_limits(tmp_path: Path) -> None:
    # starts its own `prefect server start`; both runs against it. In a process of its own:
    # Prefect's concurrency services live for the process and keep the API they first used,
    # so later tests in this process would talk to the stopped benchmark server.
    got = run_in_own_process("bench_limits.py", tmp_path)
    assert float(got["limits.without_s"]) > 0
    assert float(got["limits.with_s"]) > 0
    assert "limits.ratio" in got
    assert "never above the limit" in got["limits.peak_memory_heavy"]


def test_overhead(prefect_harness: Any, run_script: Callable[..., dict[str, str]]) -> None:
    got = run_script("bench_overhead.py", "--prefect-api", "current")
    for n in (20, 50):
        for name in ("ms_per_line", "median_ms", "p95_ms"):
            assert float(got[f"overhead.{name}_{n}"]) > 0
    assert "overhead.growth_50_vs_20" in got
    for path in ("dask_plain", "threads_task"):
        assert float(got[f"overhead.{path}.ms_per_line_20"]) > 0


def test_export(run_script: Callable[..., dict[str, str]]) -> None:
    got = run_script("bench_export.py")
    for name in (
        "zarr_mb_per_s",
        "tofile_mb_per_s",
        "zarr_over_tofile",
        "rss_growth_vs_stack_growth",
    ):
        assert f"export.{name}" in got
    assert float(got["export.peak_rss_mb_large"]) > 0


def test_download(run_script: Callable[..., dict[str, str]]) -> None:
    got = run_script("bench_download.py")
    assert float(got["download.parallel4_mb_per_s"]) > 0
    assert float(got["download.single_stream_mb_per_s"]) > 0
    # the second process continued exactly where the first one's data ended on disk
    assert int(got["download.resume_offset"]) == int(got["download.part_bytes_after_kill"]) > 0
    assert int(got["download.retransferred_bytes"]) >= 0


def test_update(prefect_harness: Any, run_script: Callable[..., dict[str, str]]) -> None:
    got = run_script("bench_update.py", "--prefect-api", "current")
    assert 0 < int(got["update.lines_executed"]) < int(got["update.lines_full_run"])
    assert "update.wall_ratio" in got
    assert {"update.mintpy_ratio_4", "update.products_ratio_4", "update.stages_ratio_4"} <= set(got)


def test_mintpy_dask(run_script: Callable[..., dict[str, str]]) -> None:
    got = run_script("bench_mintpy_dask.py")
    for run in ("serial", "local", "scheduler"):
        assert float(got[f"mintpy_dask.{run}_px_ifg_per_s"]) > 0
    for run in ("local", "scheduler"):
        assert float(got[f"mintpy_dask.{run}_speedup"]) > 0
        # the chunks' inversions are the serial one's, pixel for pixel
        assert float(got[f"mintpy_dask.{run}_max_diff_m"]) < 1e-6


@pytest.mark.xdist_group("cluster")  # one single-node SLURM at a time (tests/conftest.py)
def test_slurm(tmp_path: Path) -> None:
    # starts its own single-node SLURM; in a process of its own like test_limits, and so that
    # SLURM_CONF never enters this process's environment
    from tests.support.slurm import unavailable

    reason = unavailable()
    if reason:
        if os.environ.get("INSARFLOW_REQUIRE_SLURM") == "1":
            pytest.fail(f"INSARFLOW_REQUIRE_SLURM=1 but {reason}")
        pytest.skip(reason)
    got = run_in_own_process("bench_slurm.py", tmp_path)
    for where in ("local", "slurm"):
        for jobs in (1, 2):
            assert float(got[f"slurm.{where}_{jobs}_lines_per_min"]) > 0
    assert "slurm.slurm_over_local_2" in got
