"""The real-ISCE2 topsStack stage with lines split by swath against whole lines (same slots).

Takes a config of a real-ISCE2 stack (``engine: isce2``, two or more swaths) and runs
``insarflow run CONFIG --until topsstack`` twice in one scratch work directory, on the same
compute settings (memory reserved by the fixed model, ``compute.learn_memory: false``):
first with ``topsstack.split_swaths: false`` (each run-file line whole, as
stackSentinel wrote it), then, the first run's work directory moved aside, with
``split_swaths: true`` (:mod:`insarflow.tasks.topsstack.swath_pieces`). Both runs write to the
same paths, so their files can be compared byte for byte.

Printed: the wall time of each run and their ratio; per step, the tasks, the summed line time
and the span from its first start to its last end (from the completion markers); and how many
files of the stack are identical between the two runs (logs and markers aside): byte for
byte, ISCE2's product shelves by the data they pickle (``isce_io.product_digests``).

    python benchmarks/bench_split.py CONFIG [--scratch DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib as bl

from insarflow.tasks.isce_io import product_digests

INSARFLOW = Path(sys.executable).with_name("insarflow")
#: What the two runs are expected to differ in: bookkeeping and logs, not ISCE2 products
#: (``isce.log``: ISCE2's own log, which every line appends to in the stack directory).
NOT_PRODUCTS = (".insarflow", "dask-scratch", "run_files", "configs", "isce.log")


def run_stage(config: dict[str, object], root: Path, split: bool) -> float:
    """Wall seconds of ``insarflow run --until topsstack`` with ``split_swaths`` = ``split``."""
    data = json.loads(json.dumps(config))
    data.setdefault("topsstack", {})["split_swaths"] = split
    # Reservations from the fixed model, so that bench_memory's replay of a run starts from
    # it (memory does not hold lines back at 2 workers and 16 GB either way).
    data.setdefault("compute", {})["learn_memory"] = False
    path = root / f"config-{'split' if split else 'whole'}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(root / f"prefect-{split}")
    log = root / f"run-{'split' if split else 'whole'}.log"
    start = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(
            [str(INSARFLOW), "run", str(path), "--until", "topsstack"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            check=False,
        )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"insarflow run failed (rc {done.returncode}); see {log}")
    return seconds


def step_figures(stack_dir: Path) -> dict[str, tuple[int, float, float]]:
    """Per step: (tasks, summed line seconds, span seconds from first start to last end)."""
    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for marker in (stack_dir / ".insarflow" / "done").glob("*.json"):
        record = json.loads(marker.read_text())
        step = record["line_id"].split(":")[0].split("_", 1)[1]
        end = datetime.fromisoformat(record["finished_at"]).timestamp()
        spans[step].append((end - record["duration_s"], end))
    return {
        step: (len(s), sum(b - a for a, b in s), max(b for _, b in s) - min(a for a, _ in s))
        for step, s in spans.items()
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="a real-ISCE2 stack config (engine: isce2)")
    parser.add_argument("--scratch", type=Path, help="where to run (default: a temporary dir)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args(argv)
    config = yaml.safe_load(args.config.read_text())
    if config.get("engine") != "isce2":
        parser.error(f"{args.config}: engine is {config.get('engine')!r}; give an isce2 config")
    root = args.scratch or Path(tempfile.mkdtemp(prefix="insarflow-bench-split-"))
    root.mkdir(parents=True, exist_ok=True)
    work = root / "work"
    config["work_dir"] = str(work)
    bl.header("topsStack stage: lines split by swath vs whole lines (real ISCE2)")
    ts = config.get("topsstack", {})
    print(
        f"   swaths {ts.get('swaths')}, looks {ts.get('azimuth_looks')} x "
        f"{ts.get('range_looks')}, compute {config.get('compute')}"
    )
    try:
        shutil.rmtree(work, ignore_errors=True)
        whole_s = run_stage(config, root, split=False)
        whole_dir = root / "work-whole"
        shutil.rmtree(whole_dir, ignore_errors=True)
        work.rename(whole_dir)
        split_s = run_stage(config, root, split=True)
        whole, split = step_figures(whole_dir / "stack"), step_figures(work / "stack")
        rows = []
        for step in sorted(set(whole) | set(split), key=lambda s: min(whole.get(s, (0, 0, 0)))):
            w, s = whole.get(step, (0, 0.0, 0.0)), split.get(step, (0, 0.0, 0.0))
            rows.append(
                [step, w[0], f"{w[1]:.1f}", f"{w[2]:.1f}", s[0], f"{s[1]:.1f}", f"{s[2]:.1f}"]
            )
        bl.table(
            rows,
            ["step", "whole tasks", "line s", "span s", "split tasks", "line s", "span s"],
        )
        a = product_digests(whole_dir / "stack", NOT_PRODUCTS)
        b = product_digests(work / "stack", NOT_PRODUCTS)
        same = sum(1 for k in a if b.get(k) == a[k])
        differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
        bl.figure("split.whole_lines_s", f"{whole_s:.1f}")
        bl.figure("split.by_swath_s", f"{split_s:.1f}")
        bl.figure("split.by_swath_over_whole", bl.ratio(split_s, whole_s))
        bl.figure("split.identical_files", f"{same} of {len(a | b)}")
        for name in differ[:20]:
            print(f"   differs: {name}")
        return 1 if differ else 0
    finally:
        if not (args.keep or args.scratch):
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
