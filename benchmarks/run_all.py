"""Run every benchmark in turn (``--smoke``: tiny sizes, about a minute in all).

The scripts run in this process, one after another, and the ones that use Prefect share one
throwaway Prefect API started here (``--prefect-api current`` uses the configured one). A
failing script is reported and the others still run; the exit status is 1 if any failed.
``--real-work-dir`` adds the scripts that read a finished real-ISCE2 run (``bench_memory``;
``bench_unwrap``, with ``--isce2-env``); ``--real-config`` the one that runs a real-ISCE2
stack's topsStack stage twice, lines split by swath and whole (``bench_split``), first: without
``--real-work-dir``, the other two then read its split run. So one run prints the real engine's
figures: split vs whole stage time, estimate / peak memory per step, the unwrap peak against
its reservation and (``bench_mintpy_dask``) the MintPy inversion speedup::

    python benchmarks/run_all.py --only bench_mintpy_dask bench_split bench_memory bench_unwrap \
        --real-config CONFIG --isce2-env ENV_SH
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import benchlib as bl  # noqa: E402

#: (script, whether it runs Prefect flows)
SCRIPTS: tuple[tuple[str, bool], ...] = (
    ("bench_scheduling.py", True),
    ("bench_limits.py", False),  # starts its own Prefect server
    ("bench_overhead.py", True),
    ("bench_export.py", False),
    ("bench_download.py", False),
    ("bench_update.py", True),
    ("bench_mintpy_dask.py", False),
    ("bench_slurm.py", True),  # starts its own single-node SLURM (root, slurm-wlm, munge)
)


def load_main(script: str) -> Callable[[Sequence[str] | None], int]:
    """The ``main`` function of ``benchmarks/<script>``."""
    path = HERE / script
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return cast(Callable[[Sequence[str] | None], int], module.main)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes")
    parser.add_argument(
        "--only", nargs="+", metavar="SCRIPT", help="run only these scripts (e.g. bench_export)"
    )
    parser.add_argument(
        "--real-work-dir", type=Path, help="work directory of a finished real-ISCE2 run"
    )
    parser.add_argument("--isce2-env", type=Path, help="ISCE2's env.sh, for bench_unwrap")
    parser.add_argument(
        "--real-config",
        type=Path,
        help="config of a real-ISCE2 stack of 2+ swaths, for bench_split",
    )
    bl.add_prefect_api_argument(parser)
    args = parser.parse_args(argv)
    real_work_dir = args.real_work_dir
    real = [("bench_split.py", False)] if args.real_config else []
    split_scratch = Path(tempfile.mkdtemp(prefix="insarflow-bench-split-")) if real else None
    if split_scratch is not None and real_work_dir is None:
        real_work_dir = split_scratch / "work"  # bench_split's split run
    if real_work_dir is not None:
        real += [("bench_memory.py", False), ("bench_unwrap.py", False)]
    wanted = [
        (s, p)
        for s, p in (*SCRIPTS, *real)
        if not args.only or Path(s).stem in args.only or s in args.only
    ]
    if not wanted:
        parser.error(f"--only: no such script; choose from {[Path(s).stem for s, _ in SCRIPTS]}")
    common = ["--smoke"] if args.smoke else []
    failed: list[str] = []
    timings: list[tuple[str, float]] = []
    start = time.perf_counter()
    with bl.prefect_api(args.prefect_api if any(p for _, p in wanted) else "current"):
        for script, uses_prefect in wanted:
            t0 = time.perf_counter()
            script_args = common + (["--prefect-api", "current"] if uses_prefect else [])
            if script == "bench_split.py":
                script_args = [str(args.real_config), "--scratch", str(split_scratch)]
            elif (script, False) in real:  # these take the run, not a size
                script_args = [str(real_work_dir)]
                if script == "bench_unwrap.py" and args.isce2_env:
                    script_args += ["--isce2-env", str(args.isce2_env)]
            try:
                status = load_main(script)(script_args)
            except Exception:
                traceback.print_exc()
                status = 1
            if status != 0:
                failed.append(script)
            timings.append((script, time.perf_counter() - t0))
            print(flush=True)
    print("== run_all")
    bl.table(
        [[s, f"{t:.1f}", "FAILED" if s in failed else "ok"] for s, t in timings],
        ["script", "seconds", "status"],
    )
    print(f"   total {time.perf_counter() - start:.1f} s")
    if split_scratch is not None:
        shutil.rmtree(split_scratch, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
