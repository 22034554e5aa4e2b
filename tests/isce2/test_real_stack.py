"""Real ISCE2 2.6.5 through insarflow, started the way a user starts it.

Three dates made from the real SAFE in ``../shared/fixtures/safe_pixels/`` (see
``safe_stack.py``), their orbit files and a GeoTIFF DEM sit in a user's folders;
``insarflow run config.yaml`` takes them through ``inputs.*`` with downloads off, no
credentials and no network: stackSentinel.py and every run-file line through the executor
in ISCE2's own environment (``isce2.env_script``), then MintPy and the products. The run is
SIGKILLed in the middle of the topsStack stage; the rerun re-runs no finished line and
completes; a third run of the finished stack re-runs nothing, MintPy included.

The measurement tiffs carry a known LOS velocity field (a subsidence bowl) on coherent
speckle (``known_deformation.py``); the velocity that comes out of real ISCE2 + MintPy is held
to the simulator's end-to-end tolerances (``tests/e2e/metrics.py``). The orbits are offset by
millimetres only: enough for a finite baseline, too little for a geometric phase the data do
not carry (and a DEM error is unobservable with such baselines, so that MintPy step is off).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from tests.e2e.metrics import velocity_metrics

from .known_deformation import GaussianBowl
from .safe_stack import user_stack_config

pytestmark = [
    pytest.mark.isce2,
    pytest.mark.timeout(3600),  # real ISCE2 on 2 cores: about 15 minutes
    # rasterio/rioxarray transforms go through affine's deprecated matmul path.
    pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning"),
]

BBOX = (46.95, 47.05, 11.6, 11.9)  # S N W E: two bursts of IW1
DEM_SNWE = (46.7, 47.3, 11.2, 12.5)  # the bursts reach well beyond the bbox
INSARFLOW = Path(sys.executable).with_name("insarflow")
# Subsidence of up to 15 cm/yr (10 mm, 2.2 rad in 24 days) centred in the bbox, broad
# enough that multilooking and filtering do not flatten its peak.
BOWL = GaussianBowl(lat=47.0, lon=11.75, sigma_km=4.0, peak_m_per_year=-0.15)
ORBIT_OFFSETS_M = (0.0, 0.004, -0.003)


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


def _markers(stack_dir: Path) -> dict[str, str]:
    done = stack_dir / ".insarflow" / "done"
    return {p.stem: json.loads(p.read_text())["finished_at"] for p in sorted(done.glob("*.json"))}


def _mintpy_state(mintpy_dir: Path) -> dict[str, int]:
    return {str(p.relative_to(mintpy_dir)): p.stat().st_mtime_ns for p in mintpy_dir.rglob("*.h5")}


def _run(config: Path, log: Path, timeout_s: float) -> subprocess.CompletedProcess[str]:
    with log.open("a") as out:
        return subprocess.run(
            [str(INSARFLOW), "run", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout_s,
            env=_env(config.parent),
        )


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EARTHDATA_")}
    # No credentials anywhere: a HOME without .netrc, no Prefect server of a developer.
    env["HOME"] = str(root / "home")
    env.pop("PREFECT_API_URL", None)
    env["PREFECT_HOME"] = str(root / "prefect")
    return env


@pytest.fixture  # in tmp_path: GBs, removed when the test passes
def user_stack(tmp_path: Path, fixtures_dir: Path, isce2_env_script: Path) -> Path:
    """A user's folders (SLC/, orbits/, dem.tif) and a config pointing at them."""
    return user_stack_config(
        tmp_path,
        next((fixtures_dir / "safe_pixels").glob("*.zip")),
        isce2_env_script,
        name="real-isce2",
        dates=3,
        offsets_m=ORBIT_OFFSETS_M,
        deformation=BOWL,
        polarization="vv",
        bbox=BBOX,
        dem_snwe=DEM_SNWE,
        end="2021-05-01",
        topsstack={"swaths": [1], "connections": 2},
        mintpy={"extra": {"mintpy.topographicResidual": "no"}},
    )


def test_real_stack_runs_resumes_and_reruns_nothing(
    user_stack: Path, isce2_env_script: Path, prefect_harness: None
) -> None:
    # prefect_harness: step 4 runs a flow in this process; without it Prefect starts a
    # temporary server that it stops at interpreter exit, logging to a closed stream.
    root = user_stack.parent
    user = root / "user"
    before = {name: _digest(user / name) for name in ("SLC", "orbits")}
    before["dem"] = _digest(user)
    stack_dir = root / "work" / "stack"
    log = root / "run.log"

    # 1. Killed in the middle of the topsStack stage, once a geo2rdr line has finished.
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(INSARFLOW), "run", str(user_stack)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_env(root),
            start_new_session=True,
        )
    deadline = time.monotonic() + 1200
    while not any(m.startswith("fullBurst_geo2rdr") for m in _markers(stack_dir)):
        assert proc.poll() is None, f"run ended early (rc {proc.returncode}); see {log}"
        assert time.monotonic() < deadline, f"no geo2rdr line finished in time; see {log}"
        time.sleep(2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = _markers(stack_dir)
    assert "unpack_topo_reference-reference" in finished

    # 2. The rerun completes and re-runs none of the finished lines.
    done = _run(user_stack, log, timeout_s=2400)
    assert done.returncode == 0, log.read_text()[-3000:]
    after = _markers(stack_dir)
    assert len(after) == 31
    for label, finished_at in finished.items():
        assert after[label] == finished_at, f"{label} ran again after the resume"

    # Products from real ISCE2 + MintPy, with the real ISCE2 version in their provenance.
    zarr = next((root / "work" / "products").glob("*.zarr"))
    ds = xr.open_zarr(zarr)
    assert ds.attrs["isce2_version"] == "2.6.5"
    assert ds.timeseries.sizes["time"] == 3
    _check_known_velocity(ds)

    # The user's files: never moved, modified or deleted.
    now = {name: _digest(user / name) for name in ("SLC", "orbits")}
    now["dem"] = _digest(user)
    assert now == before

    # 3. A rerun of the unchanged, finished stack re-runs nothing, MintPy included.
    mintpy_before = _mintpy_state(root / "work" / "mintpy")
    again = _run(user_stack, log, timeout_s=900)
    assert again.returncode == 0, log.read_text()[-3000:]
    assert _markers(stack_dir) == after
    assert _mintpy_state(root / "work" / "mintpy") == mintpy_before

    # 4. A pair unwrapped again on a budget too small for one piece: it runs in tiles.
    _check_unwrap_in_tiles(stack_dir, root / "tiles", isce2_env_script)

    # 5. The benchmarks of a real run's work directory run on this one.
    _check_real_run_benchmarks(root / "work", isce2_env_script)


def _tiles_stack(stack_dir: Path, root: Path, pair: str) -> Path:
    """A stack of one run file, the finished ``stack_dir``'s unwrap line of ``pair``, with
    copies of its inputs (the reference's metadata shared)."""
    stack = root / "stack"
    source = stack_dir / "merged" / "interferograms" / pair
    target = stack / "merged" / "interferograms" / pair
    target.mkdir(parents=True)
    for path in source.glob("filt_fine.*"):
        if not path.name.startswith(("filt_fine.int", "filt_fine.cor")):
            continue
        if path.suffix in (".xml", ".vrt"):  # headers name their raster's path
            (target / path.name).write_text(path.read_text().replace(str(stack_dir), str(stack)))
        else:
            (target / path.name).write_bytes(path.read_bytes())
    (stack / "reference").symlink_to(stack_dir / "reference")
    config = stack / "configs" / f"config_igram_unw_{pair}"
    config.parent.mkdir()
    original = stack_dir / "configs" / config.name
    config.write_text(original.read_text().replace(str(stack_dir), str(stack)))
    (stack / "run_files").mkdir()
    (stack / "run_files" / "run_11_unwrap").write_text(f"SentinelWrapper.py -c {config}\n")
    return stack


def _check_unwrap_in_tiles(stack_dir: Path, root: Path, isce2_env_script: Path) -> None:
    """One pair of the finished stack unwrapped again, first by its line as written (ISCE2's
    unwrap.py, one piece), then through the topsStack flow on one worker thread with a budget
    between the finest tiles' need and one piece's: the line completes in tiles within its
    reservation, its log names the tiling, and the unwrapped phase agrees with one piece on
    coherent pixels (the same components, one multiple of 2 pi per component)."""
    from insarflow.flows.topsstack import topsstack_flow
    from insarflow.tasks.isce2_env import probe_isce2
    from insarflow.tasks.isce_io import read_isce_info, read_isce_raster
    from insarflow.tasks.shell import run_command
    from insarflow.tasks.topsstack import snaphu_tiles
    from insarflow.tasks.topsstack.runfiles import parse_run_files

    pair = "20210401_20210413"
    stack = _tiles_stack(stack_dir, root, pair)
    ifg = stack / "merged" / "interferograms" / pair / "filt_fine.int"
    unw = ifg.with_name("filt_fine.unw")
    isce2 = probe_isce2(isce2_env_script, log_path=root / "isce2-env.log")
    (line,) = parse_run_files(stack)
    run_command(line.command, log_path=root / "one-piece.log", cwd=stack, env=isce2.env)
    one_piece = read_isce_raster(unw, band=2)
    one_piece_labels = read_isce_raster(Path(f"{unw}.conncomp"), band=1)
    for output in unw.parent.glob("filt_fine.unw*"):
        output.unlink()

    info = read_isce_info(ifg)
    budget = (
        snaphu_tiles.one_piece_mb(info.length, info.width)
        + snaphu_tiles.smallest_mb(info.length, info.width)
    ) // 2
    report = topsstack_flow(
        stack_dir=stack,
        log_dir=root / "logs",
        memory_budget_mb=budget,
        n_bursts=2,
        range_looks=18,
        azimuth_looks=6,
        n_workers=1,
        threads_per_worker=1,
        env=isce2.env,
        learn_memory=False,
        real_isce2=True,
    )
    (result,) = report.results.values()
    assert result.status == "ran" and result.launched.startswith("snaphu in "), result
    log_text = (root / "logs" / "unwrap" / f"{pair}.log").read_text()
    assert "### launched: snaphu in " in log_text and f"{budget} MB reserved" in log_text
    assert f"INSARFLOW_LINE_MEMORY_MB={budget}" in log_text
    assert result.peak_rss_mb <= budget, (result.peak_rss_mb, budget)

    tiled = read_isce_raster(unw, band=2)
    labels = read_isce_raster(Path(f"{unw}.conncomp"), band=1)
    coherence = read_isce_raster(ifg.with_name("filt_fine.cor"), band=1)
    coherent = (coherence >= 0.5) & (labels > 0) & (one_piece_labels > 0)
    assert coherent.mean() > 0.5, "the speckle must be coherent"
    cycles = np.rint((tiled - one_piece) / (2 * np.pi))[coherent]
    for label in np.unique(one_piece_labels[coherent]):
        in_component = cycles[one_piece_labels[coherent] == label]
        values, counts = np.unique(in_component, return_counts=True)
        assert counts.max() >= 0.999 * in_component.size, (label, values, counts)


def _check_real_run_benchmarks(work_dir: Path, isce2_env_script: Path) -> None:
    """``run_all.py --real-work-dir``: bench_memory (estimates against peaks) and bench_unwrap
    (one piece against tiles) on this run."""
    run_all = Path(__file__).resolve().parents[2] / "benchmarks" / "run_all.py"
    out = subprocess.run(
        [
            *(sys.executable, str(run_all), "--only", "bench_memory", "bench_unwrap"),
            *("--real-work-dir", str(work_dir), "--isce2-env", str(isce2_env_script)),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "11 unwrap (pair)" in out.stdout  # bench_memory's table
    rows = [r.split("|") for r in out.stdout.splitlines() if r.startswith("| ")]
    # bench_unwrap's rows: 9 columns; its header says "wall s"
    ways = {
        cells[1].strip(): cells for cells in rows if len(cells) == 11 and "wall" not in cells[3]
    }
    assert len(ways) == 3 and "one piece (ISCE2 unwrap.py)" in ways, out.stdout
    for cells in ways.values():
        assert float(cells[7]) >= 0.999, out.stdout  # agreement with one piece
        assert float(cells[5]) <= float(cells[6]), out.stdout  # peak within the reservation


def _check_known_velocity(ds: xr.Dataset) -> None:
    """The planted bowl comes back within the end-to-end tolerances, on coherent pixels."""
    lat, lon = np.meshgrid(ds.y.values, ds.x.values, indexing="ij")
    true = BOWL.velocity(lat, lon)
    recovered = ds.velocity.values.astype(np.float64)
    with_data = np.isfinite(ds.velocity_unmasked.values).sum()
    assert np.isfinite(recovered).sum() > 0.8 * with_data, "coherent speckle must be reliable"
    ref_yx = (
        int(np.abs(ds.y.values - ds.attrs["reference_lat"]).argmin()),
        int(np.abs(ds.x.values - ds.attrs["reference_lon"]).argmin()),
    )
    metrics = velocity_metrics(recovered, true, np.isfinite(recovered), ref_yx)
    print(f"known deformation through real ISCE2: {metrics}")
    assert metrics.failures() == [], metrics
