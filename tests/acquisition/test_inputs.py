"""Inputs a user already has: SAFE zips, orbits and a DEM used in place, and the pre-flight."""

from __future__ import annotations

import hashlib
import os
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from insarflow.config import StackConfig, parse_config
from insarflow.preflight import preflight
from insarflow.tasks.dem import read_dem_info, write_isce_dem
from insarflow.tasks.inputs import InputsError, link_into, local_scenes, relative_orbit, user_dem
from tests.isce2.safe_stack import make_safe_stack, write_geotiff_dem
from tests.support.fake_isce2 import fake_isce2

pytestmark = [
    # rasterio's transforms go through affine's deprecated matmul path.
    pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning"),
]

S1B_168 = "S1B_IW_SLC__1SDV_{d}T052622_{d}T052650_{o:06d}_032297_EFA4.zip"
BBOX = [46.95, 47.05, 11.6, 11.9]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_relative_orbit_from_absolute() -> None:
    assert relative_orbit("S1B", 26269) == 168  # the safe_pixels fixture's track
    assert relative_orbit("S1A", 58630) == 108  # the safe fixture's manifest says 108
    assert relative_orbit("S1Z", 1) is None


def test_local_scenes_keep_the_stack_and_nothing_else(tmp_path: Path) -> None:
    slc = tmp_path / "SLC"
    slc.mkdir()
    names = {
        "in1": S1B_168.format(d="20210401", o=26269),
        "in2": S1B_168.format(d="20210413", o=26444),
        "excluded": S1B_168.format(d="20210425", o=26619),
        "late": S1B_168.format(d="20210507", o=26794),
        "other_track": S1B_168.format(d="20210402", o=26270),
        "s1a": "S1A_IW_SLC__1SDV_20210405T022008_20210405T022035_037328_046515_93A7.zip",
    }
    for name in names.values():
        (slc / name).write_bytes(b"")
    (slc / "notes.txt").write_text("not a SAFE")
    found = local_scenes(
        slc,
        track=168,
        start=date(2021, 3, 1),
        end=date(2021, 5, 1),
        platforms=["S1B"],
        exclude_dates=[date(2021, 4, 25)],
    )
    assert found == {
        "20210401": [slc / names["in1"]],
        "20210413": [slc / names["in2"]],
    }
    with pytest.raises(InputsError, match=r"inputs.slc_dir: .*missing is not a folder"):
        local_scenes(tmp_path / "missing", track=1, start=date(2021, 1, 1), end=None, platforms=[])


def test_links_never_touch_the_users_files(tmp_path: Path) -> None:
    user = tmp_path / "user"
    user.mkdir()
    files = [user / "a.zip", user / "b.zip"]
    for f in files:
        f.write_bytes(os.urandom(64))
    digests = [_sha(f) for f in files]
    work = tmp_path / "work" / "SLC"
    work.mkdir(parents=True)
    (work / "b.zip").write_bytes(b"downloaded earlier")  # a real file there is kept
    links = link_into(files, work)
    assert (work / "a.zip").is_symlink() and (work / "a.zip").resolve() == files[0]
    assert not (work / "b.zip").is_symlink()
    assert links == [work / "a.zip", work / "b.zip"]
    assert link_into(files, work) == links  # idempotent
    assert [_sha(f) for f in files] == digests


def test_geotiff_dem_is_converted_and_checked(tmp_path: Path) -> None:
    tif = write_geotiff_dem(tmp_path / "dem.tif", (46.9, 47.1, 11.5, 12.0))
    digest = _sha(tif)
    dem = user_dem(tif, tmp_path / "work", tuple(BBOX))  # type: ignore[arg-type]
    info = read_dem_info(dem)
    assert dem.parent == tmp_path / "work"
    assert info.covers(tuple(BBOX))  # type: ignore[arg-type]
    assert abs(info.lon0 - (11.5 + 0.5 / 3600)) < 1e-9  # first pixel's centre
    assert _sha(tif) == digest
    with pytest.raises(InputsError, match=r"inputs.dem: .*does not exist|inputs.dem: .*not inside"):
        user_dem(tif, tmp_path / "work2", (47.5, 47.6, 11.6, 11.9))


def test_isce2_dem_is_linked_with_private_sidecars(tmp_path: Path) -> None:
    user = tmp_path / "user"
    heights = np.full((36, 72), 500.0)
    src = write_isce_dem(
        user / "demLat_N46_N48_Lon_E011_E013.dem.wgs84",
        heights,
        lon0=11.5,
        dlon=0.01,
        lat0=47.2,
        dlat=-0.01,
    )
    xml = src.path.with_name(src.path.name + ".xml")
    digest = _sha(xml)
    dem = user_dem(src.path, tmp_path / "work", (46.95, 47.05, 11.6, 11.9))
    assert dem.is_symlink() and dem.resolve() == src.path
    assert str(src.path) in dem.with_name(dem.name + ".xml").read_text()  # ISCE2 reads this
    assert _sha(xml) == digest  # the user's sidecar is untouched


# ---------------------------------------------------------------------- pre-flight


def _config(tmp_path: Path, **inputs: object) -> StackConfig:
    env_sh = tmp_path / "isce2" / "env.sh"
    if not env_sh.is_file():
        fake_isce2(tmp_path / "isce2")
    return parse_config(
        {
            "name": "s",
            "work_dir": str(tmp_path / "work"),
            "area": {"bbox": BBOX},
            "acquisition": {"track": 168, "start": "2021-03-25", "end": "2021-05-01"},
            "inputs": inputs,
            "isce2": {"env_script": str(env_sh)},
            "topsstack": {"swaths": [1], "coregistration": "geometry", "connections": 2},
        }
    )


@pytest.fixture(scope="module")
def user_folders(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("user")
    source = next((fixtures_dir / "safe_pixels").glob("*.zip"))
    make_safe_stack(source, root / "SLC", root / "orbits", dates=3)
    write_geotiff_dem(root / "dem.tif", (46.8, 47.2, 11.4, 12.1))
    return root


def test_preflight_accepts_a_complete_offline_stack(tmp_path: Path, user_folders: Path) -> None:
    config = _config(
        tmp_path,
        slc_dir=str(user_folders / "SLC"),
        orbit_dir=str(user_folders / "orbits"),
        dem=str(user_folders / "dem.tif"),
        download_missing=False,
    )
    report = preflight(config)
    assert report.issues == []
    assert report.dates == ["20210401", "20210413", "20210425"]
    assert report.isce2_version == "2.6.5"


def test_preflight_names_every_problem_before_work(tmp_path: Path, user_folders: Path) -> None:
    """Two dates, one without an orbit, a DEM that misses the area, a folder that is not."""
    slc = tmp_path / "two"
    slc.mkdir()
    for safe in sorted((user_folders / "SLC").glob("*.zip"))[:2]:
        (slc / safe.name).symlink_to(safe)
    orbits = tmp_path / "orbits"
    orbits.mkdir()
    first_orbit = sorted((user_folders / "orbits").glob("*.EOF"))[0]
    (orbits / first_orbit.name).symlink_to(first_orbit)
    far_dem = write_geotiff_dem(tmp_path / "far.tif", (40.0, 40.5, 10.0, 10.5))
    config = _config(
        tmp_path, slc_dir=str(slc), orbit_dir=str(orbits), dem=str(far_dem), download_missing=False
    )
    before = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")}
    issues = {i.field: i.message for i in preflight(config).issues}
    assert set(issues) == {"inputs.dem", "acquisition", "inputs.orbit_dir"}
    assert "does not cover the area" in issues["inputs.dem"]
    assert "2 acquisition date(s)" in issues["acquisition"]
    assert "at least 3 dates and 2 interferograms" in issues["acquisition"]
    assert "20210413" in issues["inputs.orbit_dir"]
    assert "20210401" not in issues["inputs.orbit_dir"]
    # Nothing was written.
    assert {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")} == before

    missing = _config(tmp_path / "m", slc_dir=str(tmp_path / "nowhere"), download_missing=False)
    fields = {i.field for i in preflight(missing).issues}
    assert fields == {"inputs.slc_dir"}


def test_preflight_refuses_a_two_date_simulator_network(tmp_path: Path) -> None:
    config = parse_config(
        {
            "name": "s",
            "work_dir": str(tmp_path),
            "engine": "simulator",
            "area": {"bbox": BBOX},
            "acquisition": {"track": 168, "start": "2021-03-25", "end": "2021-05-01"},
            "topsstack": {"connections": 1},
            "simulator": {"dates": 3},
        }
    )
    assert preflight(config).issues == []  # 3 dates, 2 interferograms: enough
    assert preflight(config, ["acquire", "topsstack"]).issues == []


def test_credentials_are_asked_for_only_when_a_download_can_be_needed(
    tmp_path: Path, user_folders: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("EARTHDATA_USERNAME", raising=False)
    monkeypatch.delenv("EARTHDATA_PASSWORD", raising=False)
    stages = ["acquire"]  # the ISCE2 probe is not what this test is about

    def fields(**inputs: object) -> set[str]:
        return {i.field for i in preflight(_config(tmp_path, **inputs), stages).issues}

    # Everything may already be on disk: credentials are asked for only if a date is missing.
    assert fields(slc_dir=str(user_folders / "SLC")) == set()
    assert fields(slc_dir=str(user_folders / "SLC"), download_missing=False) == set()
    # Nothing on disk: the downloads need them now, before any work.
    assert fields() == {"Earthdata credentials"}
    # A broken source is a trap whenever downloads are on.
    netrc = home / ".netrc"
    netrc.write_text("machine urs.earthdata.nasa.gov login u password p\n")
    netrc.chmod(0o644)
    [issue] = preflight(_config(tmp_path, slc_dir=str(user_folders / "SLC")), stages).issues
    assert issue.field == "Earthdata credentials"
    assert "chmod 600" in issue.message


def test_a_window_too_short_for_three_dates_is_refused_before_the_search(tmp_path: Path) -> None:
    def issues(end: str) -> dict[str, str]:
        config = _config(tmp_path)
        config.acquisition.end = date.fromisoformat(end)
        return {i.field: i.message for i in preflight(config, ["acquire", "sbas"]).issues}

    short = issues("2021-04-05")  # start 2021-03-25: 11 days
    assert set(short) >= {"acquisition.end"}
    assert "spans 11 day(s)" in short["acquisition.end"]
    assert "at least 12 days" in short["acquisition.end"]
    assert "acquisition.end" not in issues("2021-04-06")  # 12 days: 3 dates possible


def test_pyaps_without_cds_key_is_refused_before_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sbas stage could not write its cfg without ~/.cdsapirc: say so before any work."""
    monkeypatch.setenv("HOME", str(tmp_path))
    config = StackConfig.model_validate(
        {
            "name": "t",
            "work_dir": str(tmp_path / "work"),
            "engine": "simulator",
            "area": {"bbox": BBOX},
            "acquisition": {"track": 168, "start": "2021-04-01", "end": "2021-06-01"},
            "mintpy": {"troposphere": "pyaps"},
        }
    )
    issues = preflight(config).issues
    assert [(i.field, i.value) for i in issues] == [("mintpy.troposphere", "pyaps")]
    assert f"{tmp_path / '.cdsapirc'} (its key) does not exist" in issues[0].message
    (tmp_path / ".cdsapirc").write_text("url: https://cds.climate.copernicus.eu/api\nkey: k\n")
    assert preflight(config).issues == []
    assert preflight(config, ["acquire", "topsstack"]).issues == []
