"""The simulator's stackSentinel.py writes what ISCE2 2.6.5 writes."""

from __future__ import annotations

import difflib
import itertools
import shutil
from pathlib import Path

import pytest

from insarflow.simulator.acquisition import SCENE_FILE, orbit_name
from insarflow.simulator.scene import SceneSpec
from insarflow.simulator.stack_sentinel import main

from .helpers import (
    prepare,
    run_file_lines,
    small_spec,
    stack_sentinel_in_process,
    stack_sentinel_subprocess,
)

CASES = {
    "geometry_2dates": ["-C", "geometry"],
    "nesd_4dates": ["-C", "NESD", "-c", "2"],
    "nesd_ion_3swaths_4dates": ["-C", "NESD", "-c", "2", "--param_ion", "ION_PARAM"],
}
STOCK_ION_PARAM = """###ionospheric correction module parameters
#maximum window size for filtering ionosphere phase:         200
#minimum window size for filtering ionosphere phase:         100
#total number of azimuth looks in the ionosphere processing:             50
#total number of range looks in the ionosphere processing:               200
#number of azimuth looks at first stage for ionosphere phase unwrapping: 10
#number of range looks at first stage for ionosphere phase unwrapping:   40
"""


def _fixture_inputs(fixtures_dir: Path, case: str, root: Path) -> dict[str, Path]:
    """SLC dir named like the fixture's SAFE_files.txt (copies of the real SAFE zips)."""
    expected = fixtures_dir / "topsstack_runfiles" / case
    names = [Path(p).name for p in (expected / "SAFE_files.txt").read_text().split()]
    real = sorted((fixtures_dir / "safe").glob("*.zip"))
    dirs = {k: root / k for k in ("SLC", "orbits", "dem", "aux", "stack")}
    for d in dirs.values():
        d.mkdir(parents=True)
    for name in names:  # like the fixture, later dates are renamed copies of a real SAFE
        source = fixtures_dir / "safe" / name
        shutil.copy(source if source.exists() else real[-1], dirs["SLC"] / name)
    spec = SceneSpec(dates=tuple(n.split("_")[5][:8] for n in names), length=16, width=16)
    (dirs["SLC"] / SCENE_FILE).write_text(spec.to_json())
    for day in spec.dates:
        (dirs["orbits"] / orbit_name(spec, day)).write_text("")
    return dirs


@pytest.mark.parametrize("case", sorted(CASES))
def test_run_files_and_configs_match_isce2(
    fixtures_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    expected = fixtures_dir / "topsstack_runfiles" / case
    dirs = _fixture_inputs(fixtures_dir, case, tmp_path)
    ion_param = tmp_path / "ion_param.txt"
    ion_param.write_text(STOCK_ION_PARAM)
    options = [str(ion_param) if a == "ION_PARAM" else a for a in CASES[case]]
    monkeypatch.chdir(dirs["stack"])
    rc = main(
        [
            "-s", str(dirs["SLC"]), "-w", str(dirs["stack"]), "-o", str(dirs["orbits"]),
            "-a", str(dirs["aux"]), "-d", str(dirs["dem"] / "dem.wgs84"), *options,
        ]
    )  # fmt: skip
    assert rc == 0

    def as_fixture(text: str) -> str:
        for key in ("stack", "SLC", "orbits", "dem", "aux"):
            text = text.replace(str(dirs[key]), f"/data/{key}")
        return text

    compared = 0
    for sub in ("run_files", "configs"):
        mine = sorted(p.name for p in (dirs["stack"] / sub).iterdir())
        assert mine == sorted(p.name for p in (expected / sub).iterdir()), sub
        for name in mine:
            got = as_fixture((dirs["stack"] / sub / name).read_text())
            want = (expected / sub / name).read_text()
            assert got == want, f"{sub}/{name}:\n" + "".join(
                difflib.unified_diff(want.splitlines(True), got.splitlines(True))
            )
            compared += 1
    assert compared > 20
    for extra in ("SAFE_files.txt", "pairs_diff_starting_ranges.txt"):
        if (expected / extra).exists():
            assert as_fixture((dirs["stack"] / extra).read_text()) == (expected / extra).read_text()
    assert (dirs["stack"] / "simulator" / "truth.h5").is_file()


def test_refuses_existing_run_files(tmp_path: Path) -> None:
    sim = prepare(tmp_path, small_spec(3))
    (sim.stack / "run_files").mkdir()
    result = stack_sentinel_subprocess(sim, "-C", "geometry", check=False)
    assert result.returncode == 1
    assert "run_files folder exists." in result.log_tail
    assert "Please remove or rename this folder and try again." in result.log_tail
    assert not (sim.stack / "configs").exists()


def test_num_proc_only_adds_background_and_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = prepare(tmp_path, small_spec(4))
    assert stack_sentinel_in_process(sim, monkeypatch, "-C", "geometry", "--num_proc", "2") == 0
    run02 = (sim.stack / "run_files" / "run_02_unpack_secondary_slc").read_text()
    lines = run02.splitlines()
    assert lines[0].endswith(" &") and lines[2] == "wait" and lines[-1].endswith(" &")
    assert run02.count("wait") == 1  # the last, incomplete group gets no wait
    run01 = (sim.stack / "run_files" / "run_01_unpack_topo_reference").read_text()
    assert "&" not in run01
    config = (sim.stack / "configs" / "config_reference").read_text()
    assert "numProcess : 2" in config


def test_missing_scene_file_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sim = prepare(tmp_path, small_spec(3))
    (tmp_path / "SLC" / SCENE_FILE).unlink()
    with monkeypatch.context() as m:
        m.chdir(sim.stack)
        assert main(sim.stack_sentinel_args("-C", "geometry")) == 1


@pytest.mark.parametrize(
    ("options", "reprocessed"),
    [(["-C", "geometry", "-c", "1"], 1), (["-C", "NESD", "-c", "1", "-O", "1"], 2)],
)
def test_update_mode_writes_lines_for_new_dates_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, options: list[str], reprocessed: int
) -> None:
    first = small_spec(5)
    sim = prepare(tmp_path, first)
    assert stack_sentinel_in_process(sim, monkeypatch, *options) == 0
    for day in first.dates[1:]:  # a processed stack: every secondary coregistered
        (sim.stack / "coreg_secondarys" / day).mkdir(parents=True)
    shutil.move(sim.stack / "run_files", tmp_path / "run_files_first")

    more = small_spec(7)
    prepare(tmp_path, more)
    assert stack_sentinel_in_process(sim, monkeypatch, *options) == 0

    new = list(more.dates[5:])
    redo = list(first.dates[5 - reprocessed : 5])
    names = sorted(p.name for p in (sim.stack / "run_files").iterdir())
    assert names[0] == "run_01_unpack_secondary_slc"
    assert not any("unpack_topo_reference" in n or "extract_burst_overlaps" in n for n in names)
    lines = list(run_file_lines(sim.stack))
    unpacked = [a[-1].rsplit("_", 1)[-1] for n, a in lines if "unpack_secondary" in n]
    assert unpacked == sorted(redo + new)
    igrams = [a[-1].split("config_generate_igram_")[-1] for n, a in lines if "generate_burst" in n]
    # as ISCE2: each processed date paired with the next one; the reference (first) is skipped
    dates = sorted(redo + new)
    assert igrams == [f"{a}_{b}" for a, b in itertools.pairwise(dates)]
    merged = [a[-1].rsplit("config_merge_", 1)[-1] for n, a in lines if "merge_reference" in n]
    assert merged == [first.dates[0], "lat", "lon", "los", "hgt", "shadowMask", "incLocal", *dates]


def test_date_selection_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = small_spec(5)
    sim = prepare(tmp_path, spec)
    d = spec.dates
    start = f"{d[1][:4]}-{d[1][4:6]}-{d[1][6:]}"
    options = ["-C", "geometry", "-x", d[3], "--start_date", start, "-m", d[2]]
    assert stack_sentinel_in_process(sim, monkeypatch, *options) == 0
    configs = sorted(p.name for p in (sim.stack / "configs").glob("config_secondary_*"))
    assert configs == [f"config_secondary_{d[1]}", f"config_secondary_{d[4]}"]
    reference = (sim.stack / "configs" / "config_reference").read_text()
    assert f"_{d[2]}T" in reference
    stored = SceneSpec.load(sim.stack / "simulator" / "scene.json")
    assert stored.reference == d[2]
    used = (sim.stack / "SAFE_files.txt").read_text().split()
    assert len(used) == 4 and not any(f"_{d[0]}T" in u for u in used)
