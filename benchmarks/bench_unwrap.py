"""snaphu unwrapping of a real pair: ISCE2's one piece against tiles, time, memory, agreement.

Reads one pair of a finished real-ISCE2 run (``WORK_DIR/stack``: its ``unwrap`` config and
``merged/interferograms/<pair>/filt_fine.{int,cor}``), copies the inputs to a scratch
directory and unwraps them there, each way through the project's own ``run_command`` (peak
RSS of the whole process tree):

* ``one piece``: the line as written (ISCE2's ``unwrap.py``, snaphu 1.4.2, one core);
* ``cores``: what the engine launches for the line with ``--cores`` cores and ``--memory-mb``
  reserved (``tasks/topsstack/multicore.py``);
* ``small budget``: one core and half of what one piece needs (at least what the finest tiles
  need), so only tiles fit.

Printed per way: tiling, wall time, peak MB against the reservation, and agreement with one
piece on coherent pixels (coherence >= ``--coherence`` and a connected component in both):
the share of them whose unwrapped phase differs from one piece's by the constant multiple of
2 pi of their one-piece component, how many tile-way components map onto one one-piece
component for 99 % of their pixels, and 2 pi jumps at tile seams (adjacent coherent pixels
on either side of a seam whose cycle offset from one piece differs).

    python benchmarks/bench_unwrap.py WORK_DIR --isce2-env ENV_SH [--pair D1_D2]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib as bl

from insarflow.tasks.isce2_env import probe_isce2
from insarflow.tasks.isce_io import read_isce_info
from insarflow.tasks.shell import run_command
from insarflow.tasks.topsstack import multicore, snaphu_tiles
from insarflow.tasks.topsstack.runfiles import RunLine, parse_run_files

INPUTS = ("filt_fine.int", "filt_fine.cor")


@dataclass(frozen=True)
class Way:
    name: str
    command: tuple[str, ...]
    reserved_mb: int
    tiles: snaphu_tiles.Tiling | None


@dataclass(frozen=True)
class Outcome:
    way: Way
    seconds: float
    peak_mb: float
    phase: npt.NDArray[np.float32]
    labels: npt.NDArray[np.uint8]


def _unwrap_line(work_dir: Path, pair: str | None) -> RunLine:
    lines = [ln for ln in parse_run_files(work_dir / "stack") if ln.step == multicore.UNWRAP_STEP]
    if not lines:
        raise SystemExit(f"{work_dir}/stack has no unwrap lines")
    chosen = [ln for ln in lines if pair in (None, ln.key)]
    if not chosen:
        raise SystemExit(f"no unwrap line for pair {pair}; there are {[ln.key for ln in lines]}")
    return chosen[0]


def _copy_inputs(params: Mapping[str, str], scratch: Path) -> dict[str, str]:
    """The pair's inputs copied into ``scratch`` (headers pointing there); params for them."""
    source = Path(params["ifg"]).parent
    for name in INPUTS:
        shutil.copyfile(source / name, scratch / name)
        for ext in (".xml", ".vrt"):
            text = (source / f"{name}{ext}").read_text().replace(str(source), str(scratch))
            (scratch / f"{name}{ext}").write_text(text)
    return {
        **params,
        "ifg": str(scratch / "filt_fine.int"),
        "coh": str(scratch / "filt_fine.cor"),
        "unw": str(scratch / "filt_fine.unw"),
    }


def _one_piece_command(params: Mapping[str, str]) -> tuple[str, ...]:
    """What SentinelWrapper.py runs for the config's ``unwrap`` function."""
    return (
        "unwrap.py",
        "--ifg",
        params["ifg"],
        "--unw",
        params["unw"],
        "--coh",
        params["coh"],
        "--reference",
        params["reference"],
        "--defomax",
        params.get("defomax", "2"),
        "--rlks",
        params.get("rlks", "1"),
        "--alks",
        params.get("alks", "1"),
        "--method",
        "snaphu",
        *(["--nomcf"] if params.get("nomcf", "False") == "True" else []),
    )


def _run(way: Way, params: Mapping[str, str], env: dict[str, str], log: Path) -> Outcome:
    unw = Path(params["unw"])
    for stale in unw.parent.glob("filt_fine.unw*"):
        stale.unlink()
    result = run_command(way.command, log_path=log, cwd=unw.parent, env=env)
    info = read_isce_info(Path(params["ifg"]))
    shape = (info.length, info.width)
    phase = np.fromfile(unw, np.float32).reshape(info.length, 2, info.width)[:, 1, :].copy()
    labels = np.fromfile(f"{unw}.conncomp", np.uint8).reshape(shape)
    return Outcome(way, result.duration_s, result.peak_rss_mb, phase, labels)


def _agreement(
    base: Outcome, other: Outcome, coherent: npt.NDArray[np.bool_]
) -> tuple[float, str, int]:
    """(share of coherent pixels at their component's cycle offset, component mapping, seam
    jumps) of ``other`` against one piece ``base``."""
    both = coherent & (base.labels > 0) & (other.labels > 0)
    cycles = np.rint((other.phase - base.phase) / (2 * math.pi)).astype(np.int64)
    agree = np.zeros_like(both)
    for label in np.unique(base.labels[both]):
        members = both & (base.labels == label)
        values, counts = np.unique(cycles[members], return_counts=True)
        agree |= members & (cycles == values[counts.argmax()])
    share = agree.sum() / max(1, both.sum())
    mapped = total = 0
    for label in np.unique(other.labels[both]):
        members = both & (other.labels == label)
        _, counts = np.unique(base.labels[members], return_counts=True)
        total += 1
        mapped += int(counts.max() >= 0.99 * members.sum())
    seams = 0
    tiles = other.way.tiles
    if tiles is not None:
        length, width = base.phase.shape
        for row in (round(i * length / tiles.rows) for i in range(1, tiles.rows)):
            pair = both[row - 1] & both[row]
            seams += int((pair & (cycles[row - 1] != cycles[row])).sum())
        for col in (round(i * width / tiles.cols) for i in range(1, tiles.cols)):
            pair = both[:, col - 1] & both[:, col]
            seams += int((pair & (cycles[:, col - 1] != cycles[:, col])).sum())
    return float(share), f"{mapped} of {total}", seams


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work_dir", type=Path)
    parser.add_argument("--isce2-env", type=Path, default=os.environ.get("INSARFLOW_ISCE2_ENV"))
    parser.add_argument("--pair", default=None, help="D1_D2 (default: the first pair)")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--memory-mb", type=int, default=8000, help="reservation with --cores")
    parser.add_argument("--coherence", type=float, default=0.5)
    args = parser.parse_args(argv)
    if args.isce2_env is None:
        raise SystemExit("give --isce2-env (the env.sh of `make isce2`) or INSARFLOW_ISCE2_ENV")
    line = _unwrap_line(args.work_dir, args.pair)
    params = next(fn.params for fn in line.functions if fn.name == "unwrap")
    with tempfile.TemporaryDirectory(prefix="bench-unwrap-") as tmp:
        scratch = Path(tmp)
        env = probe_isce2(args.isce2_env, log_path=scratch / "isce2-env.log").env
        copied = _copy_inputs(params, scratch)
        info = read_isce_info(Path(copied["ifg"]))
        length, width = info.length, info.width
        one_piece_mb = snaphu_tiles.one_piece_mb(length, width)
        small_mb = max(one_piece_mb // 2, snaphu_tiles.smallest_mb(length, width))
        ways = [Way("one piece (ISCE2 unwrap.py)", _one_piece_command(copied), one_piece_mb, None)]
        for name, cores, memory_mb in (
            (f"{args.cores} cores, {args.memory_mb} MB", args.cores, args.memory_mb),
            (f"small budget: 1 core, {small_mb} MB", 1, small_mb),
        ):
            tiles = snaphu_tiles.choose_tiling(length, width, memory_mb=memory_mb, cores=cores)
            if tiles is None:
                print(f"{name}: one piece on one core (the line as written)")
                continue
            ways.append(Way(name, multicore.unwrap_command(copied, tiles), memory_mb, tiles))
        print(
            f"pair {line.key}: {length} x {width} pixels ({length * width / 1e6:.2f} Mpx); "
            f"model: one piece {one_piece_mb} MB; {bl.machine()}"
        )
        outcomes = [_run(way, copied, env, scratch / "log.txt") for way in ways]
        coherent = np.fromfile(copied["coh"], np.float32).reshape(length, width) >= args.coherence
        base = outcomes[0]
        print(
            "| way | tiling | wall s | vs one piece | peak MB | reserved MB | agree | "
            "components mapped | seam jumps |"
        )
        print("|---|---|---:|---:|---:|---:|---:|---|---:|")
        for out in outcomes:
            share, mapped, seams = _agreement(base, out, coherent)
            tiling = out.way.tiles.describe() if out.way.tiles else "one piece, one core"
            print(
                f"| {out.way.name} | {tiling} | {out.seconds:.1f} | "
                f"{out.seconds / base.seconds:.2f}x | {out.peak_mb:.0f} | {out.way.reserved_mb} | "
                f"{share:.4f} | {mapped} | {seams} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
