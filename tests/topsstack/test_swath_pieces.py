"""Lines split by swath: the pieces, their dependencies, markers, memory and the launcher.

The run files are real stackSentinel output (3 swaths, NESD, ionosphere); the launcher runs
ISCE2's own ``SentinelWrapper.py`` (from the ISCE2 source in ``../shared/isce2``) with
stand-in function modules that record the swaths their loops see. Byte-identical outputs on
real ISCE2 are checked by ``tests/isce2/test_swath_pieces_real.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from insarflow.tasks.shell import CommandResult
from insarflow.tasks.topsstack.dag import build_dag, validate_dag
from insarflow.tasks.topsstack.executor import (
    is_line_done,
    line_fingerprint,
    line_memory_mb,
    marker_path,
    run_line,
    write_marker,
)
from insarflow.tasks.topsstack.runfiles import RunLine, parse_run_files
from insarflow.tasks.topsstack.swath_pieces import (
    SPLIT_STEPS,
    SWATH_SCRIPT,
    split_by_swath,
    stack_swaths,
)

THREE_SWATHS = "nesd_ion_3swaths_4dates"


def _lines(fixtures_dir: Path, name: str) -> list[RunLine]:
    return parse_run_files(fixtures_dir / "topsstack_runfiles" / name)


@pytest.fixture
def split(fixtures_dir: Path) -> tuple[list[RunLine], dict[str, frozenset[str]]]:
    lines = _lines(fixtures_dir, THREE_SWATHS)
    return split_by_swath(lines, build_dag(lines))


def test_lines_that_loop_over_swaths_become_one_piece_per_swath(
    fixtures_dir: Path, split: tuple[list[RunLine], dict[str, frozenset[str]]]
) -> None:
    lines = _lines(fixtures_dir, THREE_SWATHS)
    assert stack_swaths(lines) == (1, 2, 3)
    pieces, dag = split
    validate_dag(dag)
    assert set(dag) == {p.line_id for p in pieces}
    whole = [ln for ln in lines if ln.step in SPLIT_STEPS]
    pairs = sum(ln.step == "generate_burst_igram" for ln in lines)
    assert len(whole) == 1 + 3 * 3 + pairs > 10  # the reference, 3 secondaries x 3, the pairs
    assert len(pieces) == len(lines) + 2 * len(whole)
    by_id = {p.line_id: p for p in pieces}
    geo2rdr = by_id["09_fullBurst_geo2rdr:20250430_IW2"]
    assert geo2rdr.swath == 2 and geo2rdr.of_swaths == 3
    assert geo2rdr.whole is not None and geo2rdr.whole.key == "20250430"
    assert geo2rdr.command[:4] == ("python3", str(SWATH_SCRIPT), "--swath", "2")
    assert geo2rdr.command[4:] == geo2rdr.whole.command
    assert geo2rdr.outputs == (Path("/data/stack/coreg_secondarys/20250430/IW2"),)
    resample = by_id["10_fullBurst_resample:20250430_IW3"]
    assert resample.outputs == (
        Path("/data/stack/coreg_secondarys/20250430/IW3"),
        Path("/data/stack/coreg_secondarys/20250430/IW3.xml"),
    )
    assert by_id["02_unpack_secondary_slc:20250418_IW1"].outputs[1] == Path(
        "/data/stack/secondarys/20250418/IW1.xml"
    )
    # the reference's line unpacks (IW<n>/ and IW<n>.xml) and runs topo (geom_reference/IW<n>/)
    assert by_id["01_unpack_topo_reference:reference_IW2"].outputs == (
        Path("/data/stack/reference/IW2"),
        Path("/data/stack/reference/IW2.xml"),
        Path("/data/stack/geom_reference/IW2"),
    )
    # every piece has its own marker and log name
    assert len({p.label for p in pieces}) == len(pieces)
    # a stack of one swath, or lines that are not split, stay as they are
    one = _lines(fixtures_dir, "geometry_2dates")
    if len(stack_swaths(one)) < 2:
        assert split_by_swath(one, build_dag(one))[0] == one
    assert by_id["16_unwrap:20250406_20250418"] in lines


def test_pieces_need_their_own_swath_and_whole_lines_need_every_piece(
    split: tuple[list[RunLine], dict[str, frozenset[str]]],
) -> None:
    _, dag = split
    assert dag["09_fullBurst_geo2rdr:20250430_IW2"] == {
        "01_unpack_topo_reference:reference_IW2",
        "02_unpack_secondary_slc:20250430_IW2",
        "08_timeseries_misreg:azimuth",
        "08_timeseries_misreg:range",
    }
    assert dag["10_fullBurst_resample:20250430_IW2"] == {"09_fullBurst_geo2rdr:20250430_IW2"}
    assert dag["13_generate_burst_igram:20250418_20250430_IW3"] == {
        "10_fullBurst_resample:20250418_IW3",
        "10_fullBurst_resample:20250430_IW3",
    }
    # the reference's pairs need the reference's piece of their swath
    assert dag["13_generate_burst_igram:20250406_20250418_IW1"] == {
        "01_unpack_topo_reference:reference_IW1",
        "10_fullBurst_resample:20250418_IW1",
    }
    assert dag["03_average_baseline:20250418"] == {
        *(f"01_unpack_topo_reference:reference_IW{s}" for s in (1, 2, 3)),
        *(f"02_unpack_secondary_slc:20250418_IW{s}" for s in (1, 2, 3)),
    }
    assert {f"10_fullBurst_resample:20250512_IW{s}" for s in (1, 2, 3)} <= dag[
        "11_extract_stack_valid_region:all"
    ]
    assert dag["14_merge_burst_igram:20250418_20250430"] == {
        "11_extract_stack_valid_region:all",
        *(f"13_generate_burst_igram:20250418_20250430_IW{s}" for s in (1, 2, 3)),
    }


def test_a_piece_reserves_its_share_of_the_bursts(
    split: tuple[list[RunLine], dict[str, frozenset[str]]],
) -> None:
    pieces, _ = split
    by_id = {p.line_id: p for p in pieces}
    piece = by_id["09_fullBurst_geo2rdr:20250430_IW2"]
    assert piece.whole is not None
    looks = {"range_looks": 9, "azimuth_looks": 3}
    assert line_memory_mb(piece, n_bursts=27, **looks) == line_memory_mb(
        piece.whole, n_bursts=9, **looks
    )
    assert line_memory_mb(piece, n_bursts=27, **looks) < line_memory_mb(
        piece.whole, n_bursts=27, **looks
    )


def _writer_piece(tmp_path: Path, swath: int) -> RunLine:
    """A piece whose command writes its swath's folder (a stand-in for ISCE2)."""
    config = tmp_path / "configs" / "config_fullBurst_geo2rdr_20250418"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("[Function-1]\ngeo2rdr :\ncoregSLCdir : coreg_secondarys/20250418\n")
    whole = RunLine(
        step_number=9,
        step="fullBurst_geo2rdr",
        key="20250418",
        key_kind="date",
        command=("SentinelWrapper.py", "-c", str(config)),
        run_file=tmp_path / "run_files" / "run_09_fullBurst_geo2rdr",
        config_path=config,
        functions=(),
        outputs=(Path("coreg_secondarys/20250418"),),
    )
    code = f"import pathlib as p; d = p.Path('coreg_secondarys/20250418/IW{swath}'); "
    code += "d.mkdir(parents=True, exist_ok=True); (d / 'range_01.off').write_text('x')"
    return replace(
        whole,
        key=f"20250418_IW{swath}",
        command=(sys.executable, "-c", code),
        outputs=(Path(f"coreg_secondarys/20250418/IW{swath}"),),
        swath=swath,
        whole=whole,
        of_swaths=2,
    )


def test_a_line_finished_whole_counts_done_for_its_pieces_until_one_runs(tmp_path: Path) -> None:
    one, two = _writer_piece(tmp_path, 1), _writer_piece(tmp_path, 2)
    assert one.whole is not None
    log_dir = tmp_path / "logs"
    assert not is_line_done(one, tmp_path)
    # finished before the split: the whole line's marker and outputs
    for swath in (1, 2):
        (tmp_path / f"coreg_secondarys/20250418/IW{swath}").mkdir(parents=True)
        (tmp_path / f"coreg_secondarys/20250418/IW{swath}/range_01.off").write_text("x")
    write_marker(one.whole, tmp_path, CommandResult(["x"], 0, 1.0, 10.0, tmp_path / "x.log", ""))
    assert is_line_done(one, tmp_path) and is_line_done(two, tmp_path)
    assert run_line(one, stack_dir=tmp_path, log_dir=log_dir).status == "skipped"
    # a piece that runs (forced: its input changed) drops the whole line's marker, so the
    # other piece is no longer taken as done and runs too
    ran = run_line(one, stack_dir=tmp_path, log_dir=log_dir, force=True)
    assert ran.status == "ran"
    assert not marker_path(one.whole, tmp_path).exists()
    assert is_line_done(one, tmp_path) and not is_line_done(two, tmp_path)
    assert json.loads(marker_path(one, tmp_path).read_text())["line_id"] == one.line_id
    assert marker_path(one, tmp_path) != marker_path(two, tmp_path)
    assert run_line(two, stack_dir=tmp_path, log_dir=log_dir).status == "ran"
    assert (log_dir / "fullBurst_geo2rdr" / "20250418_IW2.log").is_file()
    # the launcher elsewhere (the environment moved or upgraded): the pieces stay done
    moved = replace(two, command=("python3", "/elsewhere/isce_swath.py", *two.command[2:]))
    assert is_line_done(moved, tmp_path)
    # a marker of an earlier version, which took the launcher's path in
    marker = json.loads(marker_path(two, tmp_path).read_text())
    marker["fingerprint"] = line_fingerprint(two, with_processes=True, as_launched=True)
    marker_path(two, tmp_path).write_text(json.dumps(marker))
    assert is_line_done(two, tmp_path)


# ----------------------------------------------------------------------------- the launcher

_STAND_INS = {
    # s1a_isce_utils.getSwathList as ISCE2 has it: the IW<n> folders that exist
    "s1a_isce_utils.py": (
        "import os\n"
        "def getSwathList(indir):\n"
        "    return [x for x in [1, 2, 3] if os.path.exists(os.path.join(indir, f'IW{x}'))]\n"
    ),
    # geo2rdr.py's loop, recording the swaths it visits
    "geo2rdr.py": (
        "import argparse, json, s1a_isce_utils as ut\n"
        "def main(iargs=None):\n"
        "    p = argparse.ArgumentParser(); p.add_argument('--reference')\n"
        "    p.add_argument('--secondary'); p.add_argument('--record')\n"
        "    inps = p.parse_args(iargs)\n"
        "    swaths = sorted(set(ut.getSwathList(inps.reference) "
        "+ ut.getSwathList(inps.secondary)))\n"
        "    open(inps.record, 'w').write(json.dumps(swaths))\n"
    ),
    "Sentinel1_TOPS.py": (
        "import argparse, json\n"
        "def main(iargs=None):\n"
        "    p = argparse.ArgumentParser()\n"
        "    p.add_argument('--swaths'); p.add_argument('--record')\n"
        "    inps = p.parse_args(iargs)\n"
        "    open(inps.record, 'w').write(json.dumps([int(s) for s in inps.swaths.split()]))\n"
    ),
}


@pytest.fixture
def topsstack_bin(tmp_path: Path, fixtures_dir: Path) -> Path:
    """ISCE2 2.6.5's own SentinelWrapper.py beside stand-ins of the modules it calls."""
    source = fixtures_dir.parent / "isce2" / "isce2-2.6.5-src.tar.gz"
    if not source.is_file():
        pytest.skip(f"no ISCE2 source at {source}")
    folder = tmp_path / "topsStack"
    folder.mkdir()
    with tarfile.open(source) as tar:
        member = next(m for m in tar if m.name.endswith("topsStack/SentinelWrapper.py"))
        data = tar.extractfile(member)
        assert data is not None
        (folder / "SentinelWrapper.py").write_bytes(data.read())
    (folder / "SentinelWrapper.py").chmod(0o755)
    for name, text in _STAND_INS.items():
        (folder / name).write_text(text)
    return folder


def _launch(topsstack_bin: Path, swath: int, config: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": f"{topsstack_bin}:/usr/bin:/bin"}
    line = ("SentinelWrapper.py", "-c", str(config))
    return subprocess.run(
        [sys.executable, str(SWATH_SCRIPT), "--swath", str(swath), *line],
        capture_output=True,
        text=True,
        env=env,
        cwd=config.parent,
        timeout=60,
    )


def test_launcher_narrows_the_swath_loop_of_the_line_as_written(
    tmp_path: Path, topsstack_bin: Path
) -> None:
    for side in ("reference", "secondary"):
        for swath in (1, 2):
            (tmp_path / side / f"IW{swath}").mkdir(parents=True)
    record = tmp_path / "swaths.json"
    config = tmp_path / "config_fullBurst_geo2rdr_20250418"
    config.write_text(
        f"[Common]\n[Function-1]\ngeo2rdr :\nreference : {tmp_path / 'reference'}\n"
        f"secondary : {tmp_path / 'secondary'}\nrecord : {record}\n"
    )
    # as written, ISCE2's loop visits both swaths; the piece only its own
    written = subprocess.run(
        [str(topsstack_bin / "SentinelWrapper.py"), "-c", str(config)],
        capture_output=True,
        text=True,
        env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"},
        timeout=60,
    )
    assert written.returncode == 0, written.stderr
    assert json.loads(record.read_text()) == [1, 2]
    done = _launch(topsstack_bin, 2, config)
    assert done.returncode == 0, done.stderr
    assert json.loads(record.read_text()) == [2]
    assert "swath 2 of: SentinelWrapper.py -c" in done.stdout

    unpack = tmp_path / "config_secondary_20250418"
    unpack.write_text(
        f"[Common]\n[Function-1]\nSentinel1_TOPS :\nswaths : 1 2 3\nrecord : {record}\n"
    )
    assert _launch(topsstack_bin, 3, unpack).returncode == 0
    assert json.loads(record.read_text()) == [3]


def test_launcher_without_the_wrapper_on_path_says_so(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SWATH_SCRIPT), "--swath", "1", "SentinelWrapper.py", "-c", "x"],
        capture_output=True,
        text=True,
        env={"PATH": str(tmp_path)},
        timeout=60,
    )
    assert done.returncode != 0
    assert "SentinelWrapper.py is not on PATH; source ISCE2's env.sh" in done.stderr


def test_plan_counts_a_task_per_swath_for_split_lines() -> None:
    from insarflow.config import StackConfig
    from insarflow.plan import plan_stack

    config = StackConfig.model_validate(
        {
            "name": "s",
            "work_dir": "/tmp/s",
            "engine": "isce2",
            "area": {"bbox": [34.0, 34.6, 116.5, 117.95]},
            "acquisition": {"track": 142, "start": "2025-04-06", "end": "2025-05-12"},
            "topsstack": {"coregistration": "geometry", "connections": 2},
        }
    )
    dates = ["20250406", "20250418", "20250430", "20250512"]
    plan = plan_stack(config, dates)
    tasks = {name: plan.tasks(name, n) for name, n in plan.steps}
    assert tasks["run_04_fullBurst_geo2rdr"] == 3 * 3  # 3 secondaries x 3 swaths
    assert tasks["run_08_generate_burst_igram"] == 5 * 3
    assert tasks["run_11_unwrap"] == 5
    config.topsstack.split_swaths = False
    plan = plan_stack(config, dates)
    assert sum(plan.tasks(name, n) for name, n in plan.steps) == plan.total_lines == 44


# ----------------------------------------------------------------------------- product shelves


class _Product:
    """Stands in for an ISCE2 product: it keeps the ``id()`` of its parts, as ISCE2's do."""

    def __init__(self, names: list[str], value: float) -> None:
        self.names = names
        self.value = value
        self.part_ids = [id(name) for name in names]


def _shelve(path: Path, product: _Product) -> Path:
    """A shelve as ISCE2's Python writes one (dbm's dumb format: .dat, .dir, .bak)."""
    import dbm.dumb
    import shelve

    path.parent.mkdir(parents=True)
    with shelve.Shelf(dbm.dumb.open(str(path), "c")) as db:
        db["data"] = product
    return path


def test_shelves_compare_by_their_data_not_addresses_or_memo(tmp_path: Path) -> None:
    from insarflow.tasks.isce_io import product_digests, shelve_fingerprint

    shared = "isceobj.Sensor.TOPS.BurstSLC"
    one = _shelve(tmp_path / "a" / "IW1.xml.data", _Product([shared, shared], 1.5))
    # the same data built another way: equal strings that are two objects, other addresses
    other = _Product(["isceobj.Sensor.TOPS." + "BurstSLC", "".join(["isceobj.", shared[8:]])], 1.5)
    two = _shelve(tmp_path / "b" / "IW1.xml.data", other)
    assert one.with_suffix(".data.dat").read_bytes() != two.with_suffix(".data.dat").read_bytes()
    assert shelve_fingerprint(one) == shelve_fingerprint(two)
    assert product_digests(tmp_path / "a") == product_digests(tmp_path / "b")
    assert list(product_digests(tmp_path / "a")) == ["IW1.xml.data.dat"]
    # other data is another fingerprint
    three = _shelve(tmp_path / "c" / "IW1.xml.data", _Product([shared, shared], 2.5))
    assert shelve_fingerprint(three) != shelve_fingerprint(one)
