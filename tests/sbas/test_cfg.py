"""smallbaselineApp.cfg written for a topsStack work dir, read back with MintPy's own parser."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from insarflow.tasks.sbas import (
    MEMORY_HEAVY_STEPS,
    MINTPY_STEP_TASKS,
    MINTPY_STEPS,
    mintpy_steps,
    valid_cfg_keys,
    write_smallbaseline_cfg,
)


def _read(path: Path) -> dict[str, str]:
    from mintpy.utils import readfile

    return dict(readfile.read_template(str(path)))


def _default_keys() -> set[str]:
    import mintpy
    from mintpy.utils import readfile

    default = Path(mintpy.__file__).parent / "defaults" / "smallbaselineApp.cfg"
    return set(readfile.read_template(str(default)))


@pytest.fixture
def stack_dir(tmp_path: Path) -> Path:
    path = tmp_path / "stack"
    path.mkdir()
    return path


def test_paths_and_settings(tmp_path: Path, stack_dir: Path) -> None:
    cfg = write_smallbaseline_cfg(
        tmp_path / "mintpy" / "smallbaselineApp.cfg",
        stack_dir=stack_dir,
        max_memory_gb=24,
        num_workers=4,
        reference_lat_lon=(34.2, 117.1),
        reference_date="20250101",
        unwrap_error_method="bridging+phase_closure",
        update_mode=False,
        extra={"mintpy.networkInversion.minTempCoh": 0.6, "mintpy.deramp": "linear"},
    )
    assert cfg == (tmp_path / "mintpy" / "smallbaselineApp.cfg").resolve()
    values = _read(cfg)
    ifg = f"{stack_dir}/merged/interferograms/*"
    geom = f"{stack_dir}/merged/geom_reference"
    assert values["mintpy.load.processor"] == "isce"
    assert values["mintpy.load.metaFile"] == f"{stack_dir}/reference/IW*.xml"
    assert values["mintpy.load.baselineDir"] == f"{stack_dir}/baselines"
    assert values["mintpy.load.unwFile"] == f"{ifg}/filt_fine.unw"
    assert values["mintpy.load.corFile"] == f"{ifg}/filt_fine.cor"
    assert values["mintpy.load.connCompFile"] == f"{ifg}/filt_fine.unw.conncomp"
    assert values["mintpy.load.demFile"] == f"{geom}/hgt.rdr"
    assert values["mintpy.load.lookupYFile"] == f"{geom}/lat.rdr"
    assert values["mintpy.load.lookupXFile"] == f"{geom}/lon.rdr"
    assert values["mintpy.load.incAngleFile"] == f"{geom}/los.rdr"
    assert values["mintpy.load.azAngleFile"] == f"{geom}/los.rdr"
    assert values["mintpy.load.shadowMaskFile"] == f"{geom}/shadowMask.rdr"
    assert values["mintpy.load.updateMode"] == "no"
    assert values["mintpy.compute.maxMemory"] == "24"
    assert values["mintpy.compute.cluster"] == "local"
    assert values["mintpy.compute.numWorker"] == "4"
    assert values["mintpy.reference.lalo"] == "34.2,117.1"
    assert values["mintpy.reference.yx"] == "auto"
    assert values["mintpy.reference.date"] == "20250101"
    assert values["mintpy.unwrapError.method"] == "bridging+phase_closure"
    assert values["mintpy.troposphericDelay.method"] == "no"
    assert values["mintpy.networkInversion.minTempCoh"] == "0.6"
    assert values["mintpy.deramp"] == "linear"
    assert values["mintpy.save.kmz"] == "no" and values["mintpy.save.hdfEos5"] == "no"
    # every key of MintPy's default template is there: MintPy never replaces the file
    assert set(values) == _default_keys()


def test_defaults(tmp_path: Path, stack_dir: Path) -> None:
    values = _read(write_smallbaseline_cfg(tmp_path / "a.cfg", stack_dir=stack_dir))
    assert values["mintpy.troposphericDelay.method"] == "no"
    assert values["mintpy.unwrapError.method"] == "no"
    assert values["mintpy.compute.cluster"] == "none"  # one worker: no Dask cluster
    assert values["mintpy.reference.yx"] == values["mintpy.reference.lalo"] == "auto"
    assert values["mintpy.reference.date"] == "auto"
    assert values["mintpy.load.updateMode"] == "yes"
    assert values["mintpy.plot"] == "yes"


@pytest.mark.parametrize("num_workers", [1, 8])
def test_scheduler_cluster(tmp_path: Path, stack_dir: Path, num_workers: int) -> None:
    """An existing scheduler: MintPy's 'local' type, which the runner turns into the scheduler
    given in the step's environment, with numWorker 'all' (its threads); even with one local
    worker configured the parallel steps stay on."""
    cfg = write_smallbaseline_cfg(
        tmp_path / "a.cfg", stack_dir=stack_dir, num_workers=num_workers, cluster="scheduler"
    )
    values = _read(cfg)
    assert values["mintpy.compute.cluster"] == "local"
    assert values["mintpy.compute.numWorker"] == "all"


def test_reference_yx(tmp_path: Path, stack_dir: Path) -> None:
    values = _read(
        write_smallbaseline_cfg(tmp_path / "a.cfg", stack_dir=stack_dir, reference_yx=(12, 7))
    )
    assert values["mintpy.reference.yx"] == "12,7"


def test_unknown_key_names_the_closest_valid_one(tmp_path: Path, stack_dir: Path) -> None:
    with pytest.raises(ValueError) as err:
        write_smallbaseline_cfg(
            tmp_path / "a.cfg",
            stack_dir=stack_dir,
            extra={"mintpy.networkInversion.minTempcoh": 0.5},
        )
    assert str(err.value) == (
        "unknown MintPy option 'mintpy.networkInversion.minTempcoh' (not in MintPy's default "
        "smallbaselineApp.cfg); did you mean 'mintpy.networkInversion.minTempCoh'?"
    )
    assert not (tmp_path / "a.cfg").exists()


def test_key_set_by_an_argument_is_refused_in_extra(tmp_path: Path, stack_dir: Path) -> None:
    with pytest.raises(
        ValueError, match=r"'mintpy.troposphericDelay.method' is set by an argument"
    ):
        write_smallbaseline_cfg(
            tmp_path / "a.cfg",
            stack_dir=stack_dir,
            extra={"mintpy.troposphericDelay.method": "pyaps"},
        )


def test_pyaps_needs_era5_credentials(tmp_path: Path, stack_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"~/\.cdsapirc.*era5_credentials=True"):
        write_smallbaseline_cfg(tmp_path / "a.cfg", stack_dir=stack_dir, troposphere_method="pyaps")
    cfg = write_smallbaseline_cfg(
        tmp_path / "a.cfg", stack_dir=stack_dir, troposphere_method="pyaps", era5_credentials=True
    )
    assert _read(cfg)["mintpy.troposphericDelay.method"] == "pyaps"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"reference_lat_lon": (1.0, 2.0), "reference_yx": (1, 2)}, "both given"),
        ({"reference_lat_lon": (117.1, 34.2)}, r"lat must be in \[-90, 90\]"),
        ({"reference_date": "2025-01-01"}, "use YYYYMMDD"),
        ({"unwrap_error_method": "bridge"}, "unwrap_error_method='bridge'"),
        ({"troposphere_method": "ERA5"}, "troposphere_method='ERA5'"),
        ({"max_memory_gb": 0}, "max_memory_gb=0 must be > 0"),
        ({"num_workers": 0}, "num_workers=0 must be >= 1"),
        ({"cluster": "lsf"}, r"cluster='lsf'; use one of \('local', 'slurm', 'pbs', 'scheduler'\)"),
        ({"extra": {"mintpy.deramp": "linear # x"}}, "contain no '#'"),
    ],
)
def test_bad_arguments(
    tmp_path: Path, stack_dir: Path, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        write_smallbaseline_cfg(tmp_path / "a.cfg", stack_dir=stack_dir, **kwargs)  # type: ignore[arg-type]


def test_path_must_be_a_file_and_stack_must_exist(tmp_path: Path, stack_dir: Path) -> None:
    with pytest.raises(ValueError, match="is a directory; give the config file's path"):
        write_smallbaseline_cfg(tmp_path, stack_dir=stack_dir)
    with pytest.raises(ValueError, match="is not a directory; give the topsStack work dir"):
        write_smallbaseline_cfg(tmp_path / "a.cfg", stack_dir=tmp_path / "nope")


def test_unchanged_config_is_not_rewritten(tmp_path: Path, stack_dir: Path) -> None:
    cfg = write_smallbaseline_cfg(tmp_path / "a.cfg", stack_dir=stack_dir, num_workers=2)
    os.utime(cfg, ns=(10**18, 10**18))  # MintPy compares outputs against this time
    write_smallbaseline_cfg(tmp_path / "a.cfg", stack_dir=stack_dir, num_workers=2)
    assert cfg.stat().st_mtime_ns == 10**18
    write_smallbaseline_cfg(tmp_path / "a.cfg", stack_dir=stack_dir, num_workers=3)
    assert cfg.stat().st_mtime_ns != 10**18
    assert _read(cfg)["mintpy.compute.numWorker"] == "3"


def test_step_list_matches_mintpy() -> None:
    from mintpy.defaults.template import STEP_LIST

    assert list(MINTPY_STEPS) == STEP_LIST
    steps = mintpy_steps()
    assert steps == STEP_LIST[:-2] and "google_earth" not in steps
    assert mintpy_steps(google_earth=True, hdfeos5=True) == STEP_LIST
    assert set(valid_cfg_keys()) == _default_keys()


def test_each_step_is_a_tagged_task() -> None:
    assert set(MINTPY_STEP_TASKS) == set(MINTPY_STEPS)
    heavy = {s for s, t in MINTPY_STEP_TASKS.items() if "memory-heavy" in t.tags}
    assert (
        heavy
        == MEMORY_HEAVY_STEPS
        == {
            "load_data",
            "invert_network",
            "correct_topography",
            "geocode",
        }
    )
    assert MINTPY_STEP_TASKS["velocity"].name == "mintpy-velocity"
    assert {"mintpy", "mintpy-velocity"} <= MINTPY_STEP_TASKS["velocity"].tags
