"""An update's zarr store: new dates appended along ``time``, atomically, as a fresh export."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import h5py
import pytest
import xarray as xr

from insarflow.tasks import export

from .conftest import MintpyFactory
from .synthetic import SyntheticMintpy

pytestmark = pytest.mark.filterwarnings(  # rioxarray 0.19 composes affine transforms with *
    "ignore:Use `@` matmul instead of `\\*` mul operator:PendingDeprecationWarning"
)

KWARGS: dict[str, Any] = {"provenance": {"config_hash": "0123abcd"}, "chunks": {"y": 16, "x": 32}}
TS = "geo_timeseries_demErr.h5"


def _keep_dates(path: Path, n: int) -> None:
    """Rewrite a MintPy time-series file with its first ``n`` dates (the stack before)."""
    with h5py.File(path, "r") as f:
        total = len(f["date"])
        data = {k: f[k][:n] if f[k].shape[:1] == (total,) else f[k][()] for k in f}
        attrs = dict(f.attrs)
    with h5py.File(path, "w") as f:
        for key, value in data.items():
            f.create_dataset(key, data=value)
        f.attrs.update(attrs)


@pytest.fixture
def grown(mintpy_factory: MintpyFactory, tmp_path: Path) -> tuple[SyntheticMintpy, Path, bytes]:
    """A store exported from the first 8 of 9 dates; the 9-date time-series file's bytes."""
    mintpy = mintpy_factory(n_dates=9)
    ts_file = mintpy.geo_dir / TS
    nine = ts_file.read_bytes()
    _keep_dates(ts_file, 8)
    store = export.export_zarr(
        mintpy.mintpy_dir, tmp_path / "products" / "timeseries.zarr", **KWARGS
    )
    assert xr.open_zarr(store).sizes["time"] == 8
    return mintpy, store, nine


def _inodes(store: Path, variable: str) -> dict[str, int]:
    return {p.name: p.stat().st_ino for p in (store / variable).iterdir() if p.name[0] != "."}


def _assert_equals_fresh(store: Path, mintpy: SyntheticMintpy, tmp_path: Path) -> None:
    fresh = export.export_zarr(mintpy.mintpy_dir, tmp_path / "fresh.zarr", **KWARGS)
    got, want = xr.open_zarr(store).load(), xr.open_zarr(fresh).load()
    for ds in (got, want):
        del ds.attrs["history"]  # the export's own time
    xr.testing.assert_identical(got, want)


def test_a_new_date_is_one_new_slice(
    grown: tuple[SyntheticMintpy, Path, bytes], tmp_path: Path
) -> None:
    mintpy, store, nine = grown
    before = {v: _inodes(store, v) for v in ("timeseries", "velocity")}
    (mintpy.geo_dir / TS).write_bytes(nine)  # one date more, nothing else changed

    export.export_zarr(mintpy.mintpy_dir, store, **KWARGS)

    _assert_equals_fresh(store, mintpy, tmp_path)
    after = {v: _inodes(store, v) for v in ("timeseries", "velocity")}
    assert after["velocity"] == before["velocity"]  # unchanged: the same files
    old = {k: v for k, v in after["timeseries"].items() if k.startswith("0.")}
    assert old == before["timeseries"]
    new = sorted(set(after["timeseries"]) - set(old))  # the second time chunk: the new date
    assert new == sorted("1" + name[1:] for name in old)
    assert [p.name for p in store.parent.iterdir()] == [store.name]


def test_a_reinverted_network_rewrites_what_changed(
    grown: tuple[SyntheticMintpy, Path, bytes], tmp_path: Path
) -> None:
    mintpy, store, nine = grown
    before = _inodes(store, "timeseries")
    ts_file = mintpy.geo_dir / TS
    ts_file.write_bytes(nine)
    with h5py.File(ts_file, "a") as f:  # the new pairs moved an earlier date
        f["timeseries"][3, 10, 10] += 0.001
    with h5py.File(mintpy.geo_dir / "geo_velocity.h5", "a") as f:
        f["velocity"][10, 10] += 0.002

    export.export_zarr(mintpy.mintpy_dir, store, **KWARGS)

    _assert_equals_fresh(store, mintpy, tmp_path)
    assert _inodes(store, "timeseries")["0.0.0"] != before["0.0.0"]


def test_a_kill_mid_append_leaves_the_previous_store(
    grown: tuple[SyntheticMintpy, Path, bytes], tmp_path: Path
) -> None:
    mintpy, store, nine = grown
    previous = xr.open_zarr(store).load()
    (mintpy.geo_dir / TS).write_bytes(nine)
    ready = tmp_path / "appending"
    # The export stops once it has appended the new date to the hard-linked copy.
    script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        import xarray as xr
        from insarflow.tasks import export

        original = xr.Dataset.to_zarr

        def to_zarr(self, *args, **kwargs):
            result = original(self, *args, **kwargs)
            if kwargs.get("append_dim"):
                Path({str(ready)!r}).touch()
                time.sleep(120)
            return result

        xr.Dataset.to_zarr = to_zarr
        export.export_zarr(Path({str(mintpy.mintpy_dir)!r}), Path({str(store)!r}), **{KWARGS!r})
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert proc.poll() is None, "the export ended before appending"
            assert time.monotonic() < deadline, "the export never appended"
            time.sleep(0.1)
        tmp = [p for p in store.parent.iterdir() if p.name.startswith(f"{store.name}.tmp-")]
        assert len(tmp) == 1 and xr.open_zarr(tmp[0], consolidated=False).sizes["time"] == 9
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    for consolidated in (True, False):  # readable, complete, the 8 dates as before
        xr.testing.assert_identical(xr.open_zarr(store, consolidated=consolidated).load(), previous)
    assert export._zarr_fingerprint(store) is not None

    export.export_zarr(mintpy.mintpy_dir, store, **KWARGS)  # the rerun finishes the job
    _assert_equals_fresh(store, mintpy, tmp_path)
    assert [p.name for p in store.parent.iterdir()] == [store.name]
