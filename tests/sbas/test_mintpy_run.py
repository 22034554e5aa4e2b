"""Real MintPy (subprocesses) on a synthetic topsStack, with ISCE2 not importable."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import h5py
import numpy as np
import pytest
from prefect import flow

from insarflow.tasks.sbas import (
    MINTPY_STEP_TASKS,
    _snapshot,
    mintpy_steps,
    preflight_check,
    preflight_task,
    prepare_metadata_task,
    prepare_mintpy_metadata,
    run_mintpy_step,
    sbas_outputs,
    write_cfg_task,
    write_smallbaseline_cfg,
)
from insarflow.tasks.sbas_metadata import read_rsc
from insarflow.tasks.shell import CommandError, CommandResult

from .synthetic import SyntheticStack


def _attrs(path: Path) -> dict[str, str]:
    with h5py.File(path, "r") as f:
        return {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in f.attrs.items()}


def test_isce_is_not_importable_and_mintpy_alone_fails(
    stack: SyntheticStack, tmp_path: Path, no_isce_env: dict[str, str]
) -> None:
    """The problem: in this environment MintPy's own prep_isce cannot read IW1.xml."""
    env = {"PATH": str(Path(sys.executable).parent), **no_isce_env}
    probe = subprocess.run(
        [sys.executable, "-c", "import isce"], env=env, capture_output=True, text=True, check=False
    )
    assert probe.returncode != 0 and "ImportError" in probe.stderr

    stack_dir = stack.stack_dir
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mintpy.cli.prep_isce",
            "-m",
            str(stack_dir / "reference" / "IW1.xml"),
            "-g",
            str(stack_dir / "merged" / "geom_reference"),
            "-b",
            str(stack_dir / "baselines"),
            "-f",
            str(stack_dir / "merged" / "interferograms" / "*" / "filt_fine.unw"),
        ],
        env={**env, "MPLBACKEND": "Agg"},
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert out.returncode != 0
    assert "ISCE2) is not available" in out.stderr
    assert not (stack_dir / "reference" / "data.rsc").exists()


@flow(name="sbas-load-test")
def _load_flow(
    stack_dir: Path, work_dir: Path, log_dir: Path, env: dict[str, str]
) -> CommandResult:
    preflight_task(stack_dir, allow_missing=True)
    prepare_metadata_task(stack_dir, log_dir=log_dir, env=env)
    cfg = write_cfg_task(work_dir / "smallbaselineApp.cfg", stack_dir=stack_dir, plot=False)
    return MINTPY_STEP_TASKS["load_data"]("load_data", cfg, work_dir, log_dir, env=env)


def test_load_data_without_isce(
    stack: SyntheticStack,
    tmp_path: Path,
    no_isce_env: dict[str, str],
    prefect_harness: None,
) -> None:
    bad = stack.pairs[3]
    ifg = stack.stack_dir / "merged" / "interferograms" / bad / "filt_fine.unw"
    with ifg.open("r+b") as f:
        f.truncate(100)
    work, logs = tmp_path / "mintpy", tmp_path / "logs"

    result = _load_flow(stack.stack_dir, work, logs, no_isce_env)

    assert result.returncode == 0
    assert result.log_path == logs / "mintpy" / "load_data.log"
    log = result.log_path.read_text(encoding="utf-8")
    assert "data.rsc'] exists and is newer than" in log  # MintPy reused our metadata
    assert "prep_isce.py failed" not in log

    stack_file = work / "inputs" / "ifgramStack.h5"
    with h5py.File(stack_file, "r") as f:
        date12 = ["_".join(d.decode() for d in row) for row in f["date"][:]]
        assert f["unwrapPhase"].shape == (11, 40, 60)
        assert {"coherence", "connectComponent", "bperp"} <= set(f)
        bperp = f["bperp"][:]
    assert date12 == [p for p in stack.pairs if p != bad]
    expected_bperp = [stack.bperp[p[9:]] - stack.bperp[p[:8]] for p in date12]
    np.testing.assert_allclose(bperp, expected_bperp, rtol=1e-6)

    data_rsc = read_rsc(stack.stack_dir / "reference" / "data.rsc")
    atr = _attrs(stack_file)
    for key in (
        "STARTING_RANGE",
        "RANGE_PIXEL_SIZE",
        "AZIMUTH_PIXEL_SIZE",
        "WAVELENGTH",
        "HEADING",
        "ORBIT_DIRECTION",
        "CENTER_LINE_UTC",
        "EARTH_RADIUS",
        "HEIGHT",
        "ALOOKS",
        "RLOOKS",
        "LAT_REF1",
        "LON_REF4",
        "PRF",
        "PLATFORM",
        "PROCESSOR",
    ):
        assert atr[key] == data_rsc[key], key
    assert (atr["LENGTH"], atr["WIDTH"]) == ("40", "60")
    assert (work / "inputs" / "geometryRadar.h5").is_file()


def test_failed_step_leaves_nothing_that_looks_done(stack: SyntheticStack, tmp_path: Path) -> None:
    work, logs = tmp_path / "mintpy", tmp_path / "logs"
    cfg = write_smallbaseline_cfg(work / "smallbaselineApp.cfg", stack_dir=stack.stack_dir)
    # A previous attempt of 'velocity' was killed after writing part of velocity.h5.
    marker = work / ".insarflow" / "velocity.running.json"
    marker.parent.mkdir()
    marker.write_text(json.dumps(_snapshot(work)), encoding="utf-8")
    (work / "velocity.h5").write_bytes(b"partial")

    with pytest.raises(CommandError) as err:  # no timeseries.h5: MintPy fails
        run_mintpy_step("velocity", cfg, work, logs)
    assert str(logs / "mintpy" / "velocity.log") in str(err.value)
    assert not (work / "velocity.h5").exists()
    left = sorted(p.relative_to(work) for p in work.rglob("*") if p.is_file())
    assert [p for p in left if p.parts[0] != ".insarflow"] == [Path("smallbaselineApp.cfg")]
    assert not list((work / ".insarflow").glob("*.running.json"))


def test_unknown_step(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match="unknown MintPy step 'invert_netwrk'; did you mean 'invert_network'"
    ):
        run_mintpy_step("invert_netwrk", tmp_path / "a.cfg", tmp_path, tmp_path)


def _decimal_years(dates: list[str]) -> np.ndarray:
    d0 = date(int(dates[0][:4]), int(dates[0][4:6]), int(dates[0][6:]))
    return np.array([(date(int(d[:4]), int(d[4:6]), int(d[6:])) - d0).days / 365.25 for d in dates])


@pytest.mark.slow
def test_full_mintpy_run_recovers_the_velocity(
    stack: SyntheticStack, tmp_path: Path, no_isce_env: dict[str, str]
) -> None:
    work, logs = tmp_path / "mintpy", tmp_path / "logs"
    report = preflight_check(stack.stack_dir, allow_missing=False)
    prepare_mintpy_metadata(stack.stack_dir, log_dir=logs, env=no_isce_env)
    cfg = write_smallbaseline_cfg(
        work / "smallbaselineApp.cfg",
        stack_dir=stack.stack_dir,
        reference_yx=stack.reference_yx,
        unwrap_error_method="bridging+phase_closure",
        plot=False,
    )
    started = time.monotonic()
    durations = {}
    for step in mintpy_steps():
        durations[step] = run_mintpy_step(step, cfg, work, logs, env=no_isce_env).duration_s
    total = time.monotonic() - started
    print(f"\nfull MintPy run, {len(durations)} steps: {total:.1f} s")
    for step, seconds in durations.items():
        print(f"  {step:<22} {seconds:5.1f} s")

    # Clean data, on which MintPy 1.6 alone fails: no unwrapping error (histogram
    # plot) and one connected component per interferogram (bridging).
    assert "histogram plot skipped" in (logs / "mintpy" / "quick_overview.log").read_text()
    with h5py.File(work / "inputs" / "ifgramStack.h5", "r") as f:
        assert {"unwrapPhase_bridging", "unwrapPhase_bridging_phaseClosure"} <= set(f)

    outputs = sbas_outputs(work, cfg)
    assert outputs.timeseries == work / "timeseries_demErr.h5"
    assert outputs.geo_dir is not None and (outputs.geo_dir / "geo_velocity.h5").is_file()
    with h5py.File(outputs.timeseries, "r") as f:
        dates = [d.decode() for d in f["date"][:]]
        ts = f["timeseries"][:]
    assert dates == list(report.dates) == list(stack.dates)
    assert ts.shape == (6, *stack.shape)

    with h5py.File(outputs.velocity, "r") as f:
        velocity = f["velocity"][:]
        ref = (int(f.attrs["REF_Y"]), int(f.attrs["REF_X"]))
    assert ref == stack.reference_yx
    # White phase noise of 0.02 rad over 60 days gives ~0.6 mm/yr of velocity noise.
    error = velocity - stack.velocity
    rms, worst = np.sqrt(np.mean(error**2)), np.abs(error).max()
    print(f"velocity error: rms {rms * 1e3:.2f} mm/yr, max {worst * 1e3:.2f} mm/yr")
    assert rms < 1.0e-3  # m/yr
    assert worst < 3.0e-3
    assert velocity.min() == pytest.approx(stack.velocity.min(), abs=3.0e-3)

    # A time series killed half-written is readable and newer than its inputs, so
    # MintPy's own check takes it as done ...
    before = _snapshot(work)
    with h5py.File(work / "timeseries.h5", "r+") as f:
        f["timeseries"][3:] = 0.0
    run_mintpy_step("invert_network", cfg, work, logs, env=no_isce_env)
    with h5py.File(work / "timeseries.h5", "r") as f:
        assert not np.any(f["timeseries"][5])
    # ... but not when the marker of the interrupted attempt is still there.
    marker = work / ".insarflow" / "invert_network.running.json"
    marker.write_text(json.dumps(before), encoding="utf-8")
    run_mintpy_step("invert_network", cfg, work, logs, env=no_isce_env)
    with h5py.File(work / "timeseries.h5", "r") as f:
        recomputed = f["timeseries"][:]
    slope = np.polyfit(_decimal_years(dates), recomputed.reshape(6, -1), 1)[0]
    assert np.abs(slope - stack.velocity.ravel()).max() < 3.0e-3
    assert not marker.exists()
