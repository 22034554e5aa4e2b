"""Export of MintPy's geocoded outputs: zarr, NetCDF, GeoTIFF."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import rasterio
import xarray as xr
from affine import Affine

from insarflow import __version__
from insarflow.tasks import export

from .conftest import MintpyFactory
from .synthetic import X_FIRST, X_STEP, Y_FIRST, Y_STEP, SyntheticMintpy

# rioxarray 0.19 still composes affine transforms with ``*``, which affine >= 3.1 flags.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Use `@` matmul instead of `\\*` mul operator:PendingDeprecationWarning"
)

PROVENANCE = {
    "config_hash": "0123abcd",
    "scenes": json.dumps(["S1A_IW_SLC__1SDV_20241201", "S1A_IW_SLC__1SDV_20241213"]),
    "isce2_version": "2.6.5",
    "mintpy_version": "1.6.4",
}


def _h5(path: Path, name: str) -> np.ndarray[Any, Any]:
    with h5py.File(path, "r") as f:
        return np.asarray(f[name][:])


# --- locating MintPy's outputs ---------------------------------------------------------


def test_final_timeseries_follows_the_template(synthetic_mintpy: SyntheticMintpy) -> None:
    products = export.locate_products(synthetic_mintpy.mintpy_dir)
    # tropospheric correction is off in the template: the decoy _ramp file sorts last
    assert products.timeseries == synthetic_mintpy.geo_dir / "geo_timeseries_demErr.h5"
    assert products.velocity == synthetic_mintpy.geo_dir / "geo_velocity.h5"
    assert products.geometry == synthetic_mintpy.geo_dir / "geo_geometryRadar.h5"
    assert products.ifgram_stack == synthetic_mintpy.mintpy_dir / "inputs" / "ifgramStack.h5"


def test_without_template_the_last_sorted_timeseries_is_taken(
    synthetic_mintpy: SyntheticMintpy,
) -> None:
    (synthetic_mintpy.mintpy_dir / "smallbaselineApp.cfg").unlink()
    products = export.locate_products(synthetic_mintpy.mintpy_dir)
    assert products.timeseries.name == "geo_timeseries_ramp.h5"


def test_missing_geocoded_file_is_named(synthetic_mintpy: SyntheticMintpy) -> None:
    (synthetic_mintpy.geo_dir / "geo_temporalCoherence.h5").unlink()
    with pytest.raises(FileNotFoundError, match=r"geo_temporalCoherence\.h5.*geocode"):
        export.locate_products(synthetic_mintpy.mintpy_dir)


def test_radar_only_run_asks_for_the_geocode_step(synthetic_mintpy: SyntheticMintpy) -> None:
    for path in synthetic_mintpy.geo_dir.iterdir():
        path.unlink()
    with pytest.raises(FileNotFoundError, match=r"geo_velocity\.h5.*mintpy\.geocode = yes"):
        export.locate_products(synthetic_mintpy.mintpy_dir)


def test_file_on_another_grid_is_rejected(synthetic_mintpy: SyntheticMintpy) -> None:
    with h5py.File(synthetic_mintpy.geo_dir / "geo_avgSpatialCoh.h5", "a") as f:
        f.attrs["X_FIRST"] = str(X_FIRST + 0.1)
    with pytest.raises(ValueError, match=r"geo_avgSpatialCoh\.h5 is on another grid"):
        export.read_grid(export.locate_products(synthetic_mintpy.mintpy_dir))


def test_epsg_from_metadata() -> None:
    src = Path("geo_velocity.h5")
    assert export.epsg_from_metadata({"Y_UNIT": "degrees"}, src) == 4326
    assert export.epsg_from_metadata({"EPSG": "32650", "Y_UNIT": "m"}, src) == 32650
    assert export.epsg_from_metadata({"UTM_ZONE": "50N", "Y_UNIT": "m"}, src) == 32650
    assert export.epsg_from_metadata({"UTM_ZONE": "19S", "Y_UNIT": "m"}, src) == 32719
    with pytest.raises(ValueError, match=r"geo_velocity\.h5.*Y_UNIT='m'.*EPSG"):
        export.epsg_from_metadata({"Y_UNIT": "m"}, src)


# --- zarr -------------------------------------------------------------------------------


@pytest.fixture
def store(synthetic_mintpy: SyntheticMintpy) -> Path:
    target = synthetic_mintpy.mintpy_dir.parent / "products" / export.ZARR_NAME
    return export.export_zarr(
        synthetic_mintpy.mintpy_dir, target, provenance=PROVENANCE, chunks={"y": 16, "x": 32}
    )


def test_zarr_round_trip_is_exact(store: Path, synthetic_mintpy: SyntheticMintpy) -> None:
    geo = synthetic_mintpy.geo_dir
    expected = {
        "velocity": _h5(geo / "geo_velocity.h5", "velocity"),
        "velocity_std": _h5(geo / "geo_velocity.h5", "velocityStd"),
        "timeseries": _h5(geo / "geo_timeseries_demErr.h5", "timeseries"),
        "temporal_coherence": _h5(geo / "geo_temporalCoherence.h5", "temporalCoherence"),
        "avg_spatial_coherence": _h5(geo / "geo_avgSpatialCoh.h5", "coherence"),
        "mask": _h5(geo / "geo_maskTempCoh.h5", "mask"),
        "height": _h5(geo / "geo_geometryRadar.h5", "height"),
    }
    # the HDF5 files hold what the builder wrote (NaN borders included)
    np.testing.assert_array_equal(expected["timeseries"], synthetic_mintpy.timeseries)
    assert np.isnan(expected["velocity"][0]).all()

    # velocity, its std and the time series are masked; the unmasked values stay
    mask = expected["mask"].astype(bool)
    assert 0 < mask.sum() < np.isfinite(expected["velocity"]).sum()
    expected["velocity_unmasked"] = expected["velocity"]
    expected["timeseries_unmasked"] = expected["timeseries"]
    expected["velocity"] = np.where(mask, expected["velocity"], np.float32(np.nan))
    expected["velocity_std"] = np.where(mask, expected["velocity_std"], np.float32(np.nan))
    expected["timeseries"] = np.where(mask, expected["timeseries"], np.float32(np.nan))

    ds = xr.open_zarr(store)
    assert set(export.VARIABLES) <= set(ds.data_vars)
    for name, values in expected.items():
        got = ds[name].values
        assert got.dtype == values.dtype, name
        np.testing.assert_array_equal(got, values, err_msg=name)
    assert ds["timeseries"].dims == ("time", "y", "x")
    np.testing.assert_array_equal(ds["perpendicular_baseline"].values, synthetic_mintpy.bperp)


def test_zarr_time_units_and_attributes(store: Path, synthetic_mintpy: SyntheticMintpy) -> None:
    ds = xr.open_zarr(store)
    assert np.issubdtype(ds["time"].dtype, np.datetime64)
    expected_dates = np.array(
        [f"{d[:4]}-{d[4:6]}-{d[6:]}" for d in synthetic_mintpy.dates], dtype="datetime64[ns]"
    )
    np.testing.assert_array_equal(ds["time"].values, expected_dates)

    for name in ("velocity", "velocity_unmasked", "velocity_std"):
        assert ds[name].attrs["units"] == "m year-1", name
    assert ds["timeseries"].attrs["units"] == "m"
    assert ds["timeseries_unmasked"].attrs["units"] == "m"
    assert "NaN where mask is 0" in ds["velocity"].attrs["comment"]
    assert ds["height"].attrs["standard_name"] == "height_above_reference_ellipsoid"
    assert ds["y"].attrs["standard_name"] == "latitude"
    assert ds["x"].attrs["units"] == "degrees_east"
    assert all("long_name" in ds[v].attrs for v in export.VARIABLES)

    ref_y, ref_x = synthetic_mintpy.ref_yx
    assert ds.attrs["reference_date"] == "2024-12-01"
    assert (ds.attrs["reference_y"], ds.attrs["reference_x"]) == (ref_y, ref_x)
    assert ds.attrs["reference_lat"] == pytest.approx(float(ds["y"][ref_y]))
    assert ds.attrs["reference_lon"] == pytest.approx(float(ds["x"][ref_x]))
    assert ds["timeseries_unmasked"].isel(y=ref_y, x=ref_x).values == pytest.approx(0.0)
    for key, value in PROVENANCE.items():
        assert ds.attrs[key] == value
    assert ds.attrs["insarflow_version"] == __version__
    assert ds.attrs["Conventions"] == "CF-1.8"


def test_zarr_chunks_serve_maps_and_pixel_series(store: Path) -> None:
    ds = xr.open_zarr(store)
    assert ds["timeseries"].encoding["chunks"] == (8, 16, 32)
    assert ds["velocity"].encoding["chunks"] == (16, 32)
    assert (store / ".zmetadata").is_file()
    assert json.loads((store / ".zgroup").read_text())["zarr_format"] == 2


def test_default_chunks_are_all_dates_by_256_tiles(
    mintpy_factory: MintpyFactory, tmp_path: Path
) -> None:
    synthetic = mintpy_factory(n_dates=4, length=300, width=280)
    store = export.export_zarr(synthetic.mintpy_dir, tmp_path / "d.zarr", provenance={})
    ds = xr.open_zarr(store)
    assert ds["timeseries"].encoding["chunks"] == (4, 256, 256)
    assert ds["velocity"].encoding["chunks"] == (256, 256)
    np.testing.assert_array_equal(ds["timeseries_unmasked"].values, synthetic.timeseries)


def test_coordinates_are_mintpy_pixel_centres(
    store: Path, synthetic_mintpy: SyntheticMintpy
) -> None:
    from mintpy.objects.coord import coordinate

    ds = xr.open_zarr(store)
    row, col = 7, 33
    lat, lon = float(ds["y"][row]), float(ds["x"][col])
    assert lat == pytest.approx(Y_FIRST + (row + 0.5) * Y_STEP, abs=1e-12)
    assert lon == pytest.approx(X_FIRST + (col + 0.5) * X_STEP, abs=1e-12)
    # MintPy's own conversions agree in both directions
    coord = coordinate(synthetic_mintpy.geo_meta)
    assert coord.yx2lalo(row, col) == pytest.approx((lat, lon), abs=1e-12)
    assert coord.lalo2yx(lat, lon) == (row, col)
    picked = ds["velocity"].sel(y=lat, x=lon, method="nearest").values
    assert picked == synthetic_mintpy.velocity[row, col]


def test_rioxarray_reads_crs_and_transform(store: Path) -> None:
    ds = xr.open_zarr(store)
    assert "spatial_ref" in ds.coords
    assert ds.rio.crs.to_epsg() == 4326
    assert ds["velocity"].rio.crs.to_epsg() == 4326
    assert ds["timeseries"].rio.crs.to_epsg() == 4326
    expected = Affine(X_STEP, 0.0, X_FIRST, 0.0, Y_STEP, Y_FIRST)
    assert ds["velocity"].rio.transform().almost_equals(expected, precision=1e-12)


def test_export_reads_block_by_block(
    synthetic_mintpy: SyntheticMintpy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[int] = []
    original = export._H5Array.__getitem__

    def counting(self: export._H5Array, key: Any) -> np.ndarray[Any, Any]:
        block = original(self, key)
        reads.append(block.size)
        return block

    monkeypatch.setattr(export._H5Array, "__getitem__", counting)
    export.export_zarr(
        synthetic_mintpy.mintpy_dir,
        tmp_path / "s.zarr",
        provenance={},
        chunks={"y": 16, "x": 16},
    )
    n_dates = len(synthetic_mintpy.dates)
    assert len(reads) > 7 * 3  # every variable read in several blocks
    assert max(reads) <= n_dates * 16 * 16


def test_crash_mid_write_keeps_previous_store(
    store: Path, synthetic_mintpy: SyntheticMintpy, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = xr.open_zarr(store)["velocity"].values
    original = export._H5Array.__getitem__
    calls: list[int] = []
    partial: list[Path] = []

    def failing(self: export._H5Array, key: Any) -> np.ndarray[Any, Any]:
        calls.append(1)
        if len(calls) == 5:
            partial.extend(store.parent.glob(f"{store.name}.tmp-*"))
            raise OSError("disk full (simulated)")
        return original(self, key)

    monkeypatch.setattr(export._H5Array, "__getitem__", failing)
    with pytest.raises(OSError, match="simulated"):
        export.export_zarr(
            synthetic_mintpy.mintpy_dir,
            store,
            provenance={**PROVENANCE, "config_hash": "new"},
            chunks={"y": 16, "x": 32},
        )
    assert partial, "the crash should have happened while the temporary store was written"
    monkeypatch.setattr(export._H5Array, "__getitem__", original)

    ds = xr.open_zarr(store)
    assert ds.attrs["config_hash"] == PROVENANCE["config_hash"]
    np.testing.assert_array_equal(ds["velocity"].values, before)
    leftovers = [p.name for p in store.parent.iterdir() if p.name != store.name]
    assert leftovers == []


def test_killed_export_is_cleaned_and_interrupted_swap_restored(
    store: Path, synthetic_mintpy: SyntheticMintpy
) -> None:
    # a kill between "rename old aside" and "rename new into place", with a temp store left
    old = store.with_name(store.name + ".old")
    store.rename(old)
    stale = store.with_name(store.name + ".tmp-deadbeef")
    stale.mkdir()
    (stale / ".zgroup").write_text("{}")

    result = export.export_zarr(
        synthetic_mintpy.mintpy_dir, store, provenance=PROVENANCE, chunks={"y": 16, "x": 32}
    )
    assert result == store
    assert not old.exists()
    assert not stale.exists()
    assert xr.open_zarr(store).attrs["config_hash"] == PROVENANCE["config_hash"]


def test_unchanged_inputs_skip_and_changes_rewrite(
    store: Path, synthetic_mintpy: SyntheticMintpy
) -> None:
    marker = store / "marker"
    marker.write_text("kept while up to date")
    kwargs: dict[str, Any] = {"provenance": PROVENANCE, "chunks": {"y": 16, "x": 32}}
    export.export_zarr(synthetic_mintpy.mintpy_dir, store, **kwargs)
    assert marker.exists()

    export.export_zarr(synthetic_mintpy.mintpy_dir, store, **kwargs, force=True)
    assert not marker.exists()

    marker.write_text("again")
    with h5py.File(synthetic_mintpy.geo_dir / "geo_velocity.h5", "a") as f:
        f["velocity"][5, 5] = 1.0
    export.export_zarr(synthetic_mintpy.mintpy_dir, store, **kwargs)
    assert not marker.exists()
    assert float(xr.open_zarr(store)["velocity_unmasked"][5, 5]) == 1.0


def test_bad_chunks_are_named(synthetic_mintpy: SyntheticMintpy, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"chunks: unknown dimension 'lat'"):
        export.export_zarr(
            synthetic_mintpy.mintpy_dir, tmp_path / "a.zarr", provenance={}, chunks={"lat": 8}
        )
    with pytest.raises(ValueError, match=r"chunks\['y'\] = 0"):
        export.export_zarr(
            synthetic_mintpy.mintpy_dir, tmp_path / "a.zarr", provenance={}, chunks={"y": 0}
        )


def test_non_string_provenance_is_rejected(
    synthetic_mintpy: SyntheticMintpy, tmp_path: Path
) -> None:
    with pytest.raises(TypeError, match=r"provenance\['scenes'\]"):
        export.export_zarr(
            synthetic_mintpy.mintpy_dir,
            tmp_path / "a.zarr",
            provenance={"scenes": ["a", "b"]},  # type: ignore[dict-item]
        )


# --- NetCDF and GeoTIFF ---------------------------------------------------------------


def test_netcdf_holds_the_same_dataset(synthetic_mintpy: SyntheticMintpy, tmp_path: Path) -> None:
    zarr_path = export.export_zarr(
        synthetic_mintpy.mintpy_dir, tmp_path / "t.zarr", provenance=PROVENANCE
    )
    nc_path = export.export_netcdf(
        synthetic_mintpy.mintpy_dir, tmp_path / "t.nc", provenance=PROVENANCE
    )
    z = xr.open_zarr(zarr_path)
    with xr.open_dataset(nc_path, engine=export.netcdf_engine()) as n:
        assert n.rio.crs.to_epsg() == 4326
        assert n.attrs["config_hash"] == PROVENANCE["config_hash"]
        for name in export.VARIABLES:
            assert n[name].dtype == z[name].dtype, name
            np.testing.assert_array_equal(n[name].values, z[name].values, err_msg=name)
        np.testing.assert_array_equal(n["time"].values, z["time"].values)
        np.testing.assert_array_equal(n["y"].values, z["y"].values)


def test_geotiff_has_crs_transform_nodata_and_values(
    synthetic_mintpy: SyntheticMintpy, tmp_path: Path
) -> None:
    paths = export.export_geotiff(synthetic_mintpy.mintpy_dir, tmp_path)
    assert [p.name for p in paths] == [
        "velocity.tif",
        "velocity_std.tif",
        "mask.tif",
        "temporal_coherence.tif",
        "avg_spatial_coherence.tif",
    ]
    mask = synthetic_mintpy.mask
    nan = np.float32(np.nan)
    expected = {
        "velocity.tif": (np.where(mask, synthetic_mintpy.velocity, nan), "m year-1"),
        "velocity_std.tif": (np.where(mask, synthetic_mintpy.velocity_std, nan), "m year-1"),
        "mask.tif": (mask.astype(np.uint8), None),
        "temporal_coherence.tif": (synthetic_mintpy.temporal_coherence, "1"),
        "avg_spatial_coherence.tif": (synthetic_mintpy.avg_spatial_coherence, "1"),
    }
    for path in paths:
        values, units = expected[path.name]
        with rasterio.open(path) as src:
            assert src.crs.to_epsg() == 4326
            assert src.transform.almost_equals(
                Affine(X_STEP, 0.0, X_FIRST, 0.0, Y_STEP, Y_FIRST), precision=1e-12
            )
            if path.name == "mask.tif":
                assert src.nodata is None and src.dtypes[0] == "uint8"
            else:
                assert np.isnan(src.nodata)
            assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
            assert src.tags(1).get("units") == units, path.name
            np.testing.assert_array_equal(src.read(1), values, err_msg=path.name)
            # the centre of pixel (row, col) is where the zarr coordinates put it
            x, y = src.xy(7, 33)
            assert (y, x) == pytest.approx(
                (Y_FIRST + 7.5 * Y_STEP, X_FIRST + 33.5 * X_STEP), abs=1e-12
            )
    # the mask removes finite but unreliable velocities
    with rasterio.open(tmp_path / "velocity.tif") as src:
        assert np.isfinite(src.read(1)).sum() == mask.sum()


def test_export_products_returns_every_format(
    synthetic_mintpy: SyntheticMintpy, tmp_path: Path
) -> None:
    out = export.export_products(
        synthetic_mintpy.mintpy_dir, tmp_path, ["zarr", "geotiff", "netcdf"], PROVENANCE
    )
    assert out == {
        "zarr": tmp_path / "timeseries.zarr",
        "netcdf": tmp_path / "timeseries.nc",
        **{f"geotiff_{Path(n).stem}": tmp_path / n for n in export.GEOTIFF_NAMES.values()},
    }
    assert all(p.exists() for p in out.values())
    with pytest.raises(ValueError, match=r"formats: unknown \['kmz'\]"):
        export.export_products(
            synthetic_mintpy.mintpy_dir,
            tmp_path,
            ["kmz"],  # type: ignore[list-item]
            PROVENANCE,
        )


def test_export_task_wraps_export_products(
    synthetic_mintpy: SyntheticMintpy, tmp_path: Path
) -> None:
    out = export.export_products_task.fn(
        synthetic_mintpy.mintpy_dir, tmp_path, ["zarr"], PROVENANCE
    )
    assert out == {"zarr": tmp_path / "timeseries.zarr"}
    assert xr.open_zarr(out["zarr"]).attrs["config_hash"] == PROVENANCE["config_hash"]
