"""MintPy's network inversion serial vs on Dask: throughput in pixels x interferograms per second.

One synthetic topsStack stack (``tests/sbas/synthetic.py``: real ISCE2 file formats, a linear
velocity, small noise; the real reference XML comes from the fixtures, ``../shared/fixtures`` or
``INSARFLOW_FIXTURES``) of ``--dates`` dates, ``--connections`` connections and ``--length`` x
``--width`` pixels is loaded once (MintPy's ``load_data``, ``modify_network``,
``reference_point``). Its ``invert_network`` step (ifgram_inversion, MintPy's default weighted
pixel-wise inversion) then runs, each time on a copy of the loaded work directory, through
:func:`insarflow.tasks.sbas.run_mintpy_step`:

- serial: ``mintpy.compute.cluster = none`` (the baseline);
- local: MintPy's own local Dask cluster of ``--workers`` workers (``cluster = local``);
- scheduler: a ``dask scheduler`` and ``--workers`` one-thread ``dask worker`` processes
  started beforehand on 127.0.0.1, reached through ``compute.scheduler_address``'s path
  (``cluster = scheduler``, ``INSARFLOW_DASK_SCHEDULER``).

The time is ifgram_inversion's own ("time used" in its log: from reading the stack to writing
the outputs, the cluster's start and stop included, Python's start-up not), and the step's wall
time beside it. Figures: pixels x interferograms per second of each, the speedup over serial,
and the largest difference of ``timeseries.h5`` from the serial one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib as bl

REPO = Path(__file__).resolve().parent.parent
LOADED = ("load_data", "modify_network", "reference_point")
# ifgram_inversion's own timing: its last one before the step's mask (generate_mask prints one
# too) is the whole inversion's
_TIME_USED = re.compile(r"^time used: (\d+) mins ([\d.]+) secs\.$", re.MULTILINE)


def inversion_seconds(log: Path) -> float:
    """ifgram_inversion's own time from its log."""
    inversion = log.read_text(encoding="utf-8").split("\ngenerate_mask.py", 1)[0]
    found = _TIME_USED.findall(inversion)
    if not found:
        raise RuntimeError(f"no 'time used' line in {log}")
    minutes, seconds = found[-1]
    # MintPy prints tenths of a second: a tiny stack's "0.0" is taken as half of one
    return max(int(minutes) * 60 + float(seconds), 0.05)


@contextmanager
def scheduler_processes(root: Path, workers: int) -> Iterator[str]:
    """A ``dask scheduler`` and ``workers`` one-thread workers on 127.0.0.1; their address."""
    from distributed import Client

    # one BLAS thread per worker thread, as MintPy sets for its own cluster's workers
    one_thread = dict.fromkeys(("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"), "1")
    env = {**os.environ, "MPLBACKEND": "Agg", **one_thread}
    started: list[subprocess.Popen[bytes]] = []

    def spawn(name: str, *args: str) -> subprocess.Popen[bytes]:
        with (root / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "dask", *args, "--host", "127.0.0.1", "--no-dashboard"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        started.append(process)
        return process

    scheduler_file = root / "scheduler.json"
    try:
        scheduler = spawn(
            "dask-scheduler", "scheduler", "--port", "0", "--scheduler-file", str(scheduler_file)
        )
        deadline = time.monotonic() + 60
        while not scheduler_file.is_file():
            if time.monotonic() > deadline or scheduler.poll() is not None:
                raise RuntimeError(f"dask scheduler did not start; see {root}/dask-scheduler.log")
            time.sleep(0.2)
        address = str(json.loads(scheduler_file.read_text())["address"])
        for n in range(workers):
            spawn(
                f"dask-worker-{n}",
                *("worker", address, "--nthreads", "1", "--no-nanny"),
                *("--local-directory", str(root / f"worker-{n}")),
            )
        with Client(address, timeout=60) as client:
            client.wait_for_workers(workers, timeout=120)
        yield address
    finally:
        for process in reversed(started):
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(30)


def invert(
    loaded: Path,
    work: Path,
    cfg_kwargs: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
) -> dict[str, float]:
    """``invert_network`` on a copy of the loaded work directory: its times."""
    from insarflow.tasks.sbas import run_mintpy_step, write_smallbaseline_cfg

    shutil.copytree(loaded, work)
    cfg = write_smallbaseline_cfg(work / "smallbaselineApp.cfg", **cfg_kwargs)
    result = run_mintpy_step("invert_network", cfg, work, work / "logs", env=env)
    return {"step_s": result.duration_s, "inversion_s": inversion_seconds(result.log_path)}


def run(root: Path, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    import h5py
    import numpy as np

    from insarflow.tasks.mintpy_runner import SCHEDULER_ENV
    from insarflow.tasks.sbas import (
        prepare_mintpy_metadata,
        run_mintpy_step,
        write_smallbaseline_cfg,
    )

    sys.path.insert(0, str(REPO))
    from tests.sbas.synthetic import make_topsstack

    fixtures = Path(os.environ.get("INSARFLOW_FIXTURES", REPO.parent / "shared" / "fixtures"))
    stack = make_topsstack(
        root,
        fixtures,
        n_dates=args.dates,
        connections=args.connections,
        length=args.length,
        width=args.width,
    )
    common = {
        "stack_dir": stack.stack_dir,
        "reference_yx": stack.reference_yx,
        "plot": False,
        "max_memory_gb": args.max_memory_gb,
    }
    loaded = root / "loaded"
    prepare_mintpy_metadata(stack.stack_dir, log_dir=root / "logs")
    cfg = write_smallbaseline_cfg(loaded / "smallbaselineApp.cfg", **common)
    for step in LOADED:
        run_mintpy_step(step, cfg, loaded, root / "logs")
    with h5py.File(loaded / "inputs" / "ifgramStack.h5", "r") as f:
        pairs = int(np.count_nonzero(f["dropIfgram"][:]))

    results = {"serial": invert(loaded, root / "serial", common)}
    local = {**common, "num_workers": args.workers, "cluster": "local"}
    results["local"] = invert(loaded, root / "local", local)
    if not args.no_scheduler:
        with scheduler_processes(root, args.workers) as address:
            remote = {**common, "cluster": "scheduler"}
            env = {SCHEDULER_ENV: address}
            results["scheduler"] = invert(loaded, root / "scheduler", remote, env)

    with h5py.File(root / "serial" / "timeseries.h5", "r") as f:
        serial_ts = f["timeseries"][:]
    for name, r in results.items():
        with h5py.File(root / name / "timeseries.h5", "r") as f:
            r["max_diff_m"] = float(np.nanmax(np.abs(f["timeseries"][:] - serial_ts)))
        r["rate"] = args.length * args.width * pairs / r["inversion_s"]
    results["serial"]["pairs"] = pairs
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="6 dates, 40 x 60 pixels")
    parser.add_argument("--dates", type=int, default=None, help="dates (default 30; smoke 6)")
    parser.add_argument("--connections", type=int, default=3, help="connections (default 3)")
    parser.add_argument("--length", type=int, default=None, help="lines (default 200; smoke 40)")
    parser.add_argument("--width", type=int, default=None, help="columns (default 300; smoke 60)")
    parser.add_argument("--workers", type=int, default=2, help="Dask workers (default 2)")
    parser.add_argument(
        "--max-memory-gb", type=float, default=4.0, help="mintpy.compute.maxMemory (default 4)"
    )
    parser.add_argument(
        "--no-scheduler", action="store_true", help="skip the separate-process scheduler"
    )
    args = parser.parse_args(argv)
    args.dates = args.dates or (6 if args.smoke else 30)
    args.length = args.length or (40 if args.smoke else 200)
    args.width = args.width or (60 if args.smoke else 300)
    if args.workers < 2:
        parser.error("--workers must be at least 2 (MintPy runs one chunk without Dask)")

    bl.header("bench_mintpy_dask: MintPy invert_network, serial vs Dask")
    with bl.scratch_dir("mintpy-dask") as root:
        results = run(root, args)
    pairs = int(results["serial"]["pairs"])
    print(
        f"   {args.dates} dates, {pairs} interferograms, {args.length} x {args.width} pixels, "
        f"{args.workers} Dask workers"
    )
    serial = results["serial"]["inversion_s"]
    rows = [
        [
            name,
            bl.fmt_s(r["inversion_s"]),
            bl.fmt_s(r["step_s"]),
            f"{r['rate']:,.0f}",
            bl.ratio(serial, r["inversion_s"]),
            f"{r['max_diff_m']:.1e}",
        ]
        for name, r in results.items()
    ]
    print()
    bl.table(
        rows,
        ["run", "inversion", "step wall", "px x ifg / s", "speedup", "max |ts - serial| m"],
    )
    print()
    for name, r in results.items():
        bl.figure(f"mintpy_dask.{name}_px_ifg_per_s", f"{r['rate']:.0f}")
        bl.figure(f"mintpy_dask.{name}_inversion_s", f"{r['inversion_s']:.2f}")
        if name != "serial":
            bl.figure(f"mintpy_dask.{name}_speedup", f"{serial / r['inversion_s']:.2f}")
            bl.figure(f"mintpy_dask.{name}_max_diff_m", f"{r['max_diff_m']:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
