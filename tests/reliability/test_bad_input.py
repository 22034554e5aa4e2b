"""Garbage in: refused at the boundary, naming the field or file and the fix, touching nothing.

- Configurations: a hypothesis sweep (derandomized, so every run tries the same inputs)
  over a valid tiny configuration broken one way or several ways at once: W E S N bbox,
  south above north, values out of range, wrong types, unknown keys, reversed dates, a
  reference date outside the range, missing fields. ``parse_config`` names every broken
  field; ``insarflow run`` exits 2 and leaves a populated work directory as it was.
- A bbox covering a single burst of a swath (``check_bbox_bursts``; the counts read from real
  SAFE annotation are in tests/acquisition/test_bursts.py).
- An empty search fails at once, naming the criteria to widen, before anything is fetched.
- Corrupt inputs: a truncated SAFE zip, an orbit file that does not cover the scene, a
  malformed run file, a DEM that does not cover the area: each a clear error naming the file.
"""

from __future__ import annotations

import copy
import os
import sys
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prefect import flow
from typer.testing import CliRunner

from insarflow.cli import app
from insarflow.config import ConfigError, parse_config
from insarflow.flows.topsstack import topsstack_flow
from insarflow.tasks.bursts import check_bbox_bursts
from insarflow.tasks.dem import DemError, prepare_dem
from insarflow.tasks.download import DownloadItem, download_files
from insarflow.tasks.orbits import OrbitError, select_orbits
from insarflow.tasks.search import EmptySearchError, search_scenes, search_scenes_task
from insarflow.tasks.topsstack.runfiles import RunFileError
from insarflow.tasks.topsstack.stack_sentinel import SafeFileError, check_safe_files
from tests.acquisition.cmr_server import FakeCMR
from tests.acquisition.fault_server import FaultServer
from tests.reliability.helpers import FIGURES, FULL_ENV, tiny_config, tree_state
from tests.simulator.helpers import prepare, small_spec, stack_sentinel_subprocess

pytestmark = [
    # asf_search's WKT repair calls shapely.ops.transform, deprecated in shapely 2.1.
    pytest.mark.filterwarnings(
        "ignore:The 'shapely.ops.transform\\(\\)' function is deprecated:DeprecationWarning"
    ),
]

FULL = os.environ.get(FULL_ENV) == "1"
EXAMPLES = 1500 if FULL else 120


@dataclass(frozen=True)
class Breakage:
    """One way to break a configuration: what changed, where it is reported, which words."""

    what: str
    field: str  # the ConfigIssue.field that must report it
    words: tuple[str, ...]  # each must appear in that issue's message (the fix)
    path: tuple[str, ...] = ()  # where it breaks the mapping (for the distinct-fields sweep)


def _set(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        data = data[key]
    data[path[-1]] = value


def _delete(data: dict[str, Any], path: tuple[str, ...]) -> None:
    for key in path[:-1]:
        data = data[key]
    del data[path[-1]]


RANGES: list[tuple[tuple[str, ...], st.SearchStrategy[Any], tuple[str, ...]]] = [
    (("topsstack", "azimuth_looks"), st.integers(-50, 0), ("greater than or equal to 1",)),
    (("topsstack", "range_looks"), st.integers(-50, 0), ("greater than or equal to 1",)),
    (("topsstack", "connections"), st.integers(-5, 0), ("greater than or equal to 1",)),
    (
        ("topsstack", "filter_strength"),
        st.floats(1.001, 1e6) | st.floats(-1e6, -0.001),
        ("than or equal to",),
    ),
    (
        ("topsstack", "swaths"),
        st.lists(st.integers(-3, 9), min_size=1, max_size=4).filter(
            lambda v: not set(v) <= {1, 2, 3}
        ),
        ("subset of 1, 2, 3",),
    ),
    (("acquisition", "track"), st.integers(176, 10_000) | st.integers(-100, 0), ("than or equal",)),
    (
        ("acquisition", "max_parallel_downloads"),
        st.integers(17, 99) | st.integers(-9, 0),
        ("equal",),
    ),
    (("export", "chunk_size"), st.integers(4097, 10**6) | st.integers(-10, 15), ("equal to",)),
    (("simulator", "dates"), st.integers(-10, 2) | st.integers(201, 5000), ("equal to",)),
    (("mintpy", "max_memory_gb"), st.floats(-1e3, 0.0), ("greater than 0",)),
    (("compute", "workers"), st.integers(-4, 0), ("greater than or equal to 1",)),
    (("topsstack", "coregistration"), st.sampled_from(["nesd", "Geometry", "esd", ""]), ("NESD",)),
    (("mintpy", "troposphere"), st.sampled_from(["era5", "yes", "GACOS"]), ("'pyaps'",)),
    (("name",), st.sampled_from(["my stack", "-x", "a/b", "", "stack!"]), ("pattern",)),
]

WRONG_TYPES: list[tuple[tuple[str, ...], Any, str]] = [
    (("topsstack", "azimuth_looks"), "three", "valid integer"),
    (("topsstack", "filter_strength"), "strong", "valid number"),
    (("acquisition", "track"), [142], "valid integer"),
    (("acquisition", "start"), "yesterday", "valid date"),
    (("topsstack", "use_gpu"), "maybe", "valid boolean"),
    (("topsstack", "swaths"), "1 2 3", "must be a list of swath numbers"),
    (("area", "bbox"), "34 35 116 117", "valid tuple"),
    (("mintpy", "extra"), ["mintpy.a=b"], "valid dictionary"),
    (("compute", "memory_gb"), {"value": 4}, "valid number"),
    (("work_dir",), 42, "valid path"),
]

SECTIONS = ("", "area", "acquisition", "topsstack", "mintpy", "export", "compute", "simulator")


@st.composite
def breakages(draw: st.DrawFn, base: dict[str, Any]) -> tuple[dict[str, Any], Breakage]:
    """A copy of ``base`` broken one way."""
    data = copy.deepcopy(base)
    kind = draw(
        st.sampled_from(
            ["wens", "south_north", "range", "type", "unknown", "dates", "reference", "missing"]
        )
    )
    if kind == "wens":
        s = draw(st.floats(-60, 59, allow_nan=False))
        n = draw(st.floats(s + 0.01, 60, allow_nan=False))
        w = draw(st.floats(91, 178, allow_nan=False) | st.floats(-179, -91, allow_nan=False))
        e = draw(st.floats(w + 0.01, w + 1, allow_nan=False))
        data["area"]["bbox"] = [w, e, s, n]
        return data, Breakage("W E S N bbox", "area.bbox", ("S N W E", "Did you mean"))
    if kind == "south_north":
        s = draw(st.floats(-89, 89, allow_nan=False))
        n = draw(st.floats(-90, s, allow_nan=False))
        data["area"]["bbox"] = [s, n, 116.5, 117.9]
        return data, Breakage("south >= north", "area.bbox", ("smaller latitude first",))
    if kind == "range":
        path, values, words = draw(st.sampled_from(RANGES))
        _set(data, path, draw(values))
        return data, Breakage(f"{'.'.join(path)} out of range", ".".join(path), words, path)
    if kind == "type":
        path, value, words = draw(st.sampled_from(WRONG_TYPES))
        _set(data, path, value)
        field = ".".join(path)
        return data, Breakage(f"{field} wrong type", field, (words,), path)
    if kind == "unknown":
        section = draw(st.sampled_from(SECTIONS))
        key = draw(st.from_regex(r"[a-z][a-z_]{2,12}", fullmatch=True))
        target = data[section] if section else data
        if key in target:
            key += "_x"
        target[key] = draw(st.integers() | st.text(max_size=5))
        field = f"{section}.{key}" if section else key
        return data, Breakage("unknown key", field, ("unknown key", "spelling"), (section, key))
    if kind == "dates":
        start = draw(st.dates(date(2015, 1, 1), date(2030, 1, 1)))
        end = start - timedelta(days=draw(st.integers(0, 400)))
        data["acquisition"]["start"], data["acquisition"]["end"] = str(start), str(end)
        return data, Breakage("reversed dates", "acquisition.end", ("swap them",))
    if kind == "reference":
        days = draw(st.integers(1, 3000))
        ref = date.fromisoformat(data["acquisition"]["end"]) + timedelta(days=days)
        data["topsstack"]["reference_date"] = str(ref)
        return data, Breakage(
            "reference date outside", "topsstack", ("topsstack.reference_date", "inside")
        )
    path = draw(
        st.sampled_from([("acquisition", "track"), ("acquisition", "start"), ("name",), ("area",)])
    )
    _delete(data, path)
    return data, Breakage("missing field", ".".join(path), ("required field is missing",), path)


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A work directory holding finished-looking data, and a valid config pointing at it."""
    root = tmp_path_factory.mktemp("bad-input")
    work = root / "work"
    for rel, text in {
        "SLC/S1A_IW_SLC__1SDV_20241201T221744_20241201T221811_056739_070623_BE2B.zip": "zip",
        "stack/run_files/run_01_unpack_topo_reference": "SentinelWrapper.py -c x\n",
        "stack/.insarflow/done/unpack_topo_reference-reference.json": "{}",
        "products/timeseries.zarr/.zmetadata": "{}",
    }.items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_text(text)
    data = tiny_config(work).model_dump(mode="json")
    return root, data


def _issues(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "sweep")
    return [(i.field, i.message) for i in info.value.issues]


@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_broken_config_is_refused_naming_field_and_fix(
    data: st.DataObject, populated: tuple[Path, dict[str, Any]]
) -> None:
    root, base = populated
    broken, why = data.draw(breakages(base))
    issues = _issues(broken)
    matching = [msg for field, msg in issues if field == why.field]
    assert matching, f"{why.what}: no issue for {why.field!r} in {issues}"
    assert any(all(w in msg for w in why.words) for msg in matching), (why, matching)
    # the CLI refuses it too, before touching the work directory
    before = tree_state(root)
    config = root / "broken.yaml"
    config.write_text(yaml.safe_dump(broken))
    result = CliRunner().invoke(app, ["run", str(config)], env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert why.field in result.output
    config.unlink()
    assert tree_state(root) == before
    FIGURES[f"bad configs tried: {why.what}"] += 1


@settings(
    max_examples=EXAMPLES // 3,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_every_broken_field_is_reported_at_once(
    data: st.DataObject, populated: tuple[Path, dict[str, Any]]
) -> None:
    _, base = populated
    chosen = data.draw(
        st.lists(st.sampled_from(RANGES), min_size=2, max_size=4, unique_by=lambda r: r[0][0])
    )
    broken = copy.deepcopy(base)
    for path, values, _ in chosen:
        _set(broken, path, data.draw(values))
    fields = {field for field, _ in _issues(broken)}
    assert {".".join(path) for path, _, _ in chosen} <= fields
    FIGURES["bad configs tried: several fields broken at once"] += 1


@given(st.dictionaries(st.sampled_from([1, 2, 3]), st.integers(1, 12), min_size=1))
@settings(derandomize=True, max_examples=EXAMPLES // 2)
def test_a_bbox_covering_one_burst_of_a_swath_is_refused(bursts: dict[int, int]) -> None:
    single = sorted(s for s, n in bursts.items() if n == 1)
    if not single:
        check_bbox_bursts(bursts)
        return
    with pytest.raises(ValueError) as info:
        check_bbox_bursts(bursts)
    message = str(info.value)
    assert all(f"IW{s}" in message for s in single)
    assert f"remove {', '.join(map(str, single))} from topsstack.swaths" in message
    assert "enlarge area.bbox" in message
    FIGURES["burst maps with a single-burst swath refused"] += 1


# ------------------------------------------------------------------------- empty search


def test_empty_search_names_the_criteria_and_is_not_retried(
    tmp_path: Path, prefect_harness: None
) -> None:
    slc = tmp_path / "SLC"
    slc.mkdir()
    criteria: dict[str, Any] = {
        "track": 142,
        "start": date(2024, 12, 1),
        "end": date(2025, 4, 15),
    }
    with FaultServer() as server:
        cmr = FakeCMR(server, [])
        where = {"session": cmr.session(), "cmr_host": cmr.host}
        with pytest.raises(EmptySearchError):
            search_scenes((34.0, 34.6, 116.5, 117.95), **criteria, **where)
        once = len(cmr.queries)

        @flow(name="empty-search")
        def search() -> None:
            search_scenes_task((34.0, 34.6, 116.5, 117.95), **criteria, **where)

        with pytest.raises(EmptySearchError) as info:
            search()
        assert len(cmr.queries) == 2 * once  # the task ran it once: a permanent error
    message = str(info.value)
    assert "no Sentinel-1 IW SLC scenes for area S34.000 N34.600 W116.500 E117.950" in message
    assert "track 142, dates 2024-12-01..2025-04-15" in message
    for criterion in ("date range", "track", "area", "polarization"):
        assert f"without the {criterion} filter: 0 scene(s)" in message
    assert "widen several (dates and area first)" in message
    assert list(slc.iterdir()) == []
    FIGURES["empty searches refused"] += 1


# --------------------------------------------------------------------------- corrupt input


def test_truncated_safe_zip_is_named_and_downloaded_again(tmp_path: Path) -> None:
    sim = prepare(tmp_path / "sim", small_spec(3))
    safes = sorted((sim.root / "SLC").glob("*.zip"))
    good = safes[1].read_bytes()
    safes[1].write_bytes(good[: len(good) // 2])  # a copy that died half way
    with pytest.raises(SafeFileError) as info:
        check_safe_files(safes)
    message = str(info.value)
    assert f"{safes[1]} ({len(good) // 2} bytes)" in message
    assert str(safes[0]) not in message and "delete them and run again" in message
    # a download that knows the size replaces it, verified
    with FaultServer() as server:
        item = DownloadItem(server.add_file("s.zip", good), safes[1], size=len(good))
        download_files([item])
        assert len(server.requests("s.zip")) == 1
    check_safe_files(safes)
    FIGURES["corrupt inputs detected"] += 1


def test_orbit_not_covering_the_scene_is_named(tmp_path: Path) -> None:
    sim = prepare(tmp_path / "sim", small_spec(3))
    orbits = sorted((sim.root / "orbits").glob("*.EOF"))
    safes = sorted((sim.root / "SLC").glob("*.zip"))
    for orbit in orbits[1:]:
        orbit.unlink()  # only the first date's orbit is left

    def offline(*_: object) -> list[Path]:
        raise OSError("no network")

    with pytest.raises(OrbitError) as info:
        select_orbits(safes, sim.root / "orbits", downloader=offline)
    message = str(info.value)
    assert "2 scene(s) without orbit" in message
    assert safes[1].name.removesuffix(".zip") in message
    assert f"found {orbits[0].name} (valid " in message
    assert "Put a matching EOF into the orbit directory" in message
    FIGURES["corrupt inputs detected"] += 1


def test_malformed_run_file_is_named_before_any_line_runs(
    tmp_path: Path, prefect_harness: None
) -> None:
    sim = prepare(tmp_path / "sim", small_spec(3))
    stack_sentinel_subprocess(sim, "-C", "geometry", "-c", "1", "-n", "1")
    run_file = sim.stack / "run_files" / "run_04_fullBurst_geo2rdr"
    lines = run_file.read_text().splitlines()
    lines[1] = "SentinelWrapper.py -c"  # cut off mid-write
    run_file.write_text("\n".join(lines) + "\n")
    with pytest.raises(RunFileError) as info:
        topsstack_flow(
            stack_dir=sim.stack,
            log_dir=tmp_path / "logs",
            memory_budget_mb=4000,
            n_bursts=2,
            range_looks=9,
            azimuth_looks=3,
            extra_path=[sim.bin],
        )
    message = str(info.value)
    assert f"{run_file}:2:" in message and "regenerate the run files" in message
    assert not (tmp_path / "logs").exists()  # no line ran
    FIGURES["corrupt inputs detected"] += 1


FAKE_DEM = """\
import sys
from pathlib import Path
import numpy as np
from insarflow.tasks.dem import dem_filename, write_isce_dem
s, n, w, e = (int(v) for v in sys.argv[sys.argv.index("-b") + 1 :][:4])
# stitched from the wrong tiles: one degree further east, at 0.1 degree spacing
write_isce_dem(Path(dem_filename((s, n, w, e))), np.zeros(((n - s) * 10, (e - w) * 10)),
               lon0=w + 1.0, dlon=0.1, lat0=float(n), dlat=-0.1)
"""


def test_dem_not_covering_the_area_is_named(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "dem.py"
    script.write_text(f"#!{sys.executable}\n{FAKE_DEM}")
    script.chmod(0o755)
    with pytest.raises(DemError) as info:
        prepare_dem(
            (34.0, 34.6, 116.5, 117.95),
            tmp_path / "dem",
            source="isce2",
            extra_path=[bin_dir],
            log_path=tmp_path / "dem.log",
        )
    message = str(info.value)
    assert "the new DEM" in message and "demLat_N33_N35_Lon_E116_E119.dem.wgs84" in message
    assert "W117.0000" in message and "is needed" in message
    FIGURES["corrupt inputs detected"] += 1
