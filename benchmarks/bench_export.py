"""Zarr export throughput and peak memory vs the size of the stack.

Input: a geocoded MintPy work directory (``geo/geo_*.h5``, MintPy's own ``layout_hdf5``
structure and root attributes) with a float32 time series of 100 dates x 2,000 x 2,000
(1.6 GB; smoke: 10 x 200 x 200), written block by block so that generating it needs
~100 MB of memory. Each export is ``insarflow.tasks.export.export_zarr`` (default chunks: all
dates x 256 x 256) in a child process that reports its own peak RSS (``resource.getrusage``) and the
RSS it had after its imports.

Figures: zarr write throughput in MB/s of time-series data (export of every variable, timed
with a final ``os.sync()``), against ``numpy.tofile`` of the same number of bytes followed by
``fsync`` (what the disk takes), and the peak RSS of the export for two stack sizes with the
same chunk shape (100 x 1,000 x 1,000 and 100 x 2,000 x 2,000): it follows the chunk size,
not the stack size.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib as bl

FULL = ((100, 1000, 1000), (100, 2000, 2000))
SMOKE = ((10, 100, 100), (10, 200, 200))
ROWS_PER_BLOCK_BYTES = 100 * 2**20  # generate ~100 MB of time series at a time


def write_mintpy_dir(mintpy_dir: Path, n_dates: int, length: int, width: int) -> Path:
    """geo/geo_*.h5 as MintPy's geocode step leaves them, the time series block by block."""
    import h5py
    import numpy as np
    from mintpy.utils import writefile

    geo = mintpy_dir / "geo"
    geo.mkdir(parents=True)
    days = [date(2020, 1, 1) + timedelta(days=12 * i) for i in range(n_dates)]
    dates = [d.strftime("%Y%m%d") for d in days]
    years = np.array([(d - days[0]).days / 365.25 for d in days], dtype=np.float32)
    meta = {
        "LENGTH": str(length),
        "WIDTH": str(width),
        "PLATFORM": "Sen",
        "PROCESSOR": "isce",
        "ORBIT_DIRECTION": "DESCENDING",
        "WAVELENGTH": "0.05546576",
        "Y_FIRST": "34.6",
        "X_FIRST": "116.5",
        "Y_STEP": "-0.0002",
        "X_STEP": "0.0002",
        "Y_UNIT": "degrees",
        "X_UNIT": "degrees",
        "REF_DATE": dates[0],
        "REF_Y": "5",
        "REF_X": "5",
        "START_DATE": dates[0],
        "END_DATE": dates[-1],
    }
    rng = np.random.default_rng(0)
    f32 = np.float32

    def layout(name: str, datasets: dict[str, list[object]], file_type: str) -> Path:
        path = geo / name
        writefile.layout_hdf5(
            str(path), datasets, {**meta, "FILE_TYPE": file_type}, print_msg=False
        )
        return path

    ts = layout(
        "geo_timeseries_demErr.h5",
        {
            "date": [np.dtype("S8"), (n_dates,), np.array(dates, dtype=np.bytes_)],
            "bperp": [f32, (n_dates,), rng.uniform(-100, 100, n_dates).astype(f32)],
            "timeseries": [f32, (n_dates, length, width), None],
        },
        "timeseries",
    )
    rows = max(1, ROWS_PER_BLOCK_BYTES // (n_dates * width * 4))
    velocity = np.empty((length, width), f32)
    with h5py.File(ts, "r+") as f:
        for y0 in range(0, length, rows):
            y1 = min(length, y0 + rows)
            vel = np.linspace(-0.03, 0.01, width, dtype=f32)[None, :].repeat(y1 - y0, 0)
            velocity[y0:y1] = vel
            block = years[:, None, None] * vel[None]
            block += rng.standard_normal(block.shape, dtype=f32) * f32(0.003)
            f["timeseries"][:, y0:y1, :] = block
    maps: dict[str, tuple[dict[str, Any], str]] = {
        "geo_velocity.h5": (
            {"velocity": velocity, "velocityStd": np.full_like(velocity, 1e-3)},
            "velocity",
        ),
        "geo_temporalCoherence.h5": (
            {"temporalCoherence": np.full_like(velocity, 0.9)},
            "temporalCoherence",
        ),
        "geo_avgSpatialCoh.h5": ({"coherence": np.full_like(velocity, 0.7)}, "coherence"),
        "geo_maskTempCoh.h5": ({"mask": np.ones((length, width), bool)}, "mask"),
        "geo_geometryRadar.h5": ({"height": np.full_like(velocity, 120.0)}, "geometry"),
    }
    for name, (data, file_type) in maps.items():
        path = layout(name, {k: [v.dtype, v.shape, None] for k, v in data.items()}, file_type)
        with h5py.File(path, "r+") as f:
            for key, value in data.items():
                f[key][:] = value
    return mintpy_dir


def child_export(mintpy_dir: Path, store: Path) -> int:
    """Run in the child process: export, sync, print seconds and RSS figures as JSON."""
    from insarflow.tasks.export import export_zarr

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    export_zarr(mintpy_dir, store, provenance={"benchmark": "bench_export"})
    os.sync()
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "baseline_rss_mb": base, "peak_rss_mb": peak}))
    return 0


def run_child(mintpy_dir: Path, store: Path, log: Path) -> dict[str, float]:
    from insarflow.tasks.shell import run_command

    result = run_command(
        [sys.executable, __file__, "--child-export", str(mintpy_dir), str(store)],
        log_path=log,
    )
    line = [x for x in result.log_tail.splitlines() if x.startswith("{")][-1]
    return dict(json.loads(line))


def tofile_seconds(path: Path, nbytes: int) -> float:
    """numpy.tofile of ``nbytes`` bytes (a 64 MB buffer written repeatedly) + fsync."""
    import numpy as np

    buf = np.random.default_rng(1).standard_normal(16 * 2**20, dtype=np.float32)
    t0 = time.perf_counter()
    with path.open("wb") as fh:
        left = nbytes
        while left > 0:
            part = buf[: min(buf.size, left // 4)]
            part.tofile(fh)
            left -= part.nbytes
        fh.flush()
        os.fsync(fh.fileno())
    seconds = time.perf_counter() - t0
    path.unlink()
    return seconds


def du_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


@dataclass(frozen=True)
class Row:
    """Figures of one stack size."""

    shape: str
    ts_mb: float
    chunk_mb: float
    export_s: float
    raw_s: float
    store_mb: float
    base_rss_mb: float
    peak_rss_mb: float

    @property
    def zarr_mbs(self) -> float:
        return self.ts_mb / self.export_s

    @property
    def raw_mbs(self) -> float:
        return self.ts_mb / self.raw_s

    @property
    def rss_growth_mb(self) -> float:
        return self.peak_rss_mb - self.base_rss_mb


def measure(root: Path, n_dates: int, length: int, width: int) -> Row:
    t0 = time.perf_counter()
    mintpy_dir = write_mintpy_dir(root / "mintpy", n_dates, length, width)
    print(
        f"   {n_dates} x {length} x {width}: input written in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    store = root / "products" / "timeseries.zarr"
    stats = run_child(mintpy_dir, store, root / "child.log")
    nbytes = n_dates * length * width * 4
    return Row(
        shape=f"{n_dates} x {length} x {width}",
        ts_mb=nbytes / 1e6,
        chunk_mb=n_dates * min(256, length) * min(256, width) * 4 / 1e6,
        export_s=stats["seconds"],
        raw_s=tofile_seconds(root / "raw.bin", nbytes),
        store_mb=du_mb(store),
        base_rss_mb=stats["baseline_rss_mb"],
        peak_rss_mb=stats["peak_rss_mb"],
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="10 x 100 x 100 and 10 x 200 x 200")
    parser.add_argument(
        "--child-export", nargs=2, metavar=("MINTPY_DIR", "STORE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.child_export:
        return child_export(Path(args.child_export[0]), Path(args.child_export[1]))
    sizes = SMOKE if args.smoke else FULL

    bl.header("bench_export: zarr export throughput and peak RSS")
    rows = []
    for n_dates, length, width in sizes:
        with bl.scratch_dir("export") as root:
            rows.append(measure(root, n_dates, length, width))
    print()
    bl.table(
        [
            [
                r.shape,
                f"{r.ts_mb:.0f}",
                f"{r.chunk_mb:.1f}",
                f"{r.export_s:.1f}",
                f"{r.zarr_mbs:.0f}",
                f"{r.raw_mbs:.0f}",
                f"{r.zarr_mbs / r.raw_mbs:.2f}",
                f"{r.store_mb:.0f}",
                f"{r.base_rss_mb:.0f}",
                f"{r.peak_rss_mb:.0f}",
            ]
            for r in rows
        ],
        [
            "time series",
            "MB",
            "chunk MB",
            "export s",
            "zarr MB/s",
            "tofile MB/s",
            "zarr/raw",
            "store MB",
            "RSS after imports MB",
            "peak RSS MB",
        ],
    )
    print()
    small, large = rows[0], rows[-1]
    bl.figure("export.zarr_mb_per_s", f"{large.zarr_mbs:.0f}")
    bl.figure("export.tofile_mb_per_s", f"{large.raw_mbs:.0f}")
    bl.figure("export.zarr_over_tofile", f"{large.zarr_mbs / large.raw_mbs:.2f}")
    bl.figure("export.peak_rss_mb_small", f"{small.peak_rss_mb:.0f}")
    bl.figure("export.peak_rss_mb_large", f"{large.peak_rss_mb:.0f}")
    growth = large.rss_growth_mb / max(1.0, small.rss_growth_mb)
    bl.figure(
        "export.rss_growth_vs_stack_growth",
        f"{growth:.2f} vs {large.ts_mb / small.ts_mb:.2f}",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
