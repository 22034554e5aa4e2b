"""stackSentinel.py command builder, discovery, stack-dir preparation and execution."""

from __future__ import annotations

import argparse
import stat
import sys
from datetime import date
from pathlib import Path

import pytest

from insarflow.tasks.shell import CommandError
from insarflow.tasks.topsstack.stack_sentinel import (
    build_stack_sentinel_args,
    is_update_mode,
    prepare_stack_dir,
    run_stack_sentinel,
    stack_sentinel_task,
    update_mode_required_dates,
)


def _isce_parser() -> argparse.ArgumentParser:
    """The options of ISCE2 contrib/stack/topsStack/stackSentinel.py createParser()."""
    p = argparse.ArgumentParser(exit_on_error=False)
    for flags, dest in [
        (("-s", "--slc_directory"), "slc_dirname"),
        (("-o", "--orbit_directory"), "orbit_dirname"),
        (("-a", "--aux_directory"), "aux_dirname"),
        (("-w", "--working_directory"), "work_dir"),
        (("-d", "--dem"), "dem"),
        (("-m", "--reference_date"), "reference_date"),
        (("-c", "--num_connections"), "num_connections"),
        (("-n", "--swath_num"), "swath_num"),
        (("-b", "--bbox"), "bbox"),
        (("-x", "--exclude_dates"), "exclude_dates"),
        (("-i", "--include_dates"), "include_dates"),
        (("--start_date",), "startDate"),
        (("--stop_date",), "stopDate"),
        (("-z", "--azimuth_looks"), "azimuthLooks"),
        (("-r", "--range_looks"), "rangeLooks"),
        (("-f", "--filter_strength"), "filtStrength"),
        (("-p", "--polarization"), "polarization"),
        (("-C", "--coregistration"), "coregistration"),
        (("-O", "--num_overlap_connections"), "num_overlap_connections"),
        (("-e", "--esd_coherence_threshold"), "esdCoherenceThreshold"),
        (("-W", "--workflow"), "workflow"),
        (("--param_ion",), "param_ion"),
    ]:
        p.add_argument(*flags, dest=dest, type=str, default=None)
    p.add_argument("-useGPU", "--useGPU", dest="useGPU", action="store_true")
    p.add_argument("--num_proc", "--num_process", dest="numProcess", type=int, default=1)
    return p


def _reference_study(tmp_path: Path) -> list[str]:
    """REFERENCE_WORKFLOW.md: -n 3 -b '34.00 34.60 116.50 117.95' --useGPU -C geometry
    -c 3 -z 1 -r 6 -f 0.6 (without --num_proc)."""
    return build_stack_sentinel_args(
        slc_dir=tmp_path / "SLC",
        work_dir=tmp_path / "stack",
        orbit_dir=tmp_path / "orbits",
        aux_dir=tmp_path / "aux",
        dem_path=tmp_path / "dem" / "demLat_N32_N35_Lon_E115_E119.dem.wgs84",
        swaths=[3],
        bbox=(34.00, 34.60, 116.50, 117.95),
        connections=3,
        azimuth_looks=1,
        range_looks=6,
        filter_strength=0.6,
        coregistration="geometry",
        use_gpu=True,
    )


def test_reference_study_argv(tmp_path: Path) -> None:
    assert _reference_study(tmp_path) == [
        "stackSentinel.py",
        "-s", f"{tmp_path}/SLC",
        "-w", f"{tmp_path}/stack",
        "-o", f"{tmp_path}/orbits",
        "-a", f"{tmp_path}/aux",
        "-d", f"{tmp_path}/dem/demLat_N32_N35_Lon_E115_E119.dem.wgs84",
        "-n", "3",
        "-b", "34.0 34.6 116.5 117.95",
        "-c", "3",
        "-z", "1",
        "-r", "6",
        "-f", "0.6",
        "-C", "geometry",
        "-W", "interferogram",
        "-p", "vv",
        "--useGPU",
    ]  # fmt: skip


def test_argv_is_accepted_by_isce2s_parser(tmp_path: Path) -> None:
    args = build_stack_sentinel_args(
        slc_dir=Path("SLC"),  # relative paths become absolute
        work_dir=tmp_path / "stack",
        orbit_dir=tmp_path / "orbits",
        aux_dir=tmp_path / "aux",
        dem_path=tmp_path / "dem.wgs84",
        swaths=[3, 1, 2, 1],
        bbox=(-20.5, -19, -99.5, -98.25),
        connections=2,
        azimuth_looks=3,
        range_looks=9,
        filter_strength=0.5,
        coregistration="NESD",
        reference_date=date(2025, 4, 18),
        num_overlap_connections=2,
        esd_coherence_threshold=0.7,
        ion_param_file=tmp_path / "ion_param.txt",
        start_date="2024-12-01",
        stop_date=date(2025, 4, 15),
        exclude_dates=["2025-01-01", date(2025, 1, 13)],
    )
    assert "--num_proc" not in args
    assert "--useGPU" not in args
    inps = _isce_parser().parse_args(args[1:])
    assert inps.slc_dirname == str(Path.cwd() / "SLC")
    assert inps.swath_num == "1 2 3"
    assert [float(v) for v in inps.bbox.split()] == [-20.5, -19.0, -99.5, -98.25]
    assert inps.coregistration == "NESD"
    assert inps.reference_date == "20250418"
    assert (inps.num_overlap_connections, inps.esdCoherenceThreshold) == ("2", "0.7")
    assert inps.param_ion == str(tmp_path / "ion_param.txt")
    assert (inps.startDate, inps.stopDate) == ("2024-12-01", "2025-04-15")
    assert inps.exclude_dates == "20250101,20250113"
    assert inps.workflow == "interferogram"
    assert inps.numProcess == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"bbox": (116.5, 117.95, 34.0, 34.6)}, "bbox south=116.5 is outside"),
        ({"bbox": (34.6, 34.0, 116.5, 117.95)}, "south >= north; give it as S N W E"),
        ({"swaths": [4]}, "swaths=[4] must be a non-empty subset"),
        ({"connections": 0}, "connections=0 must be"),
        ({"range_looks": 0}, "range_looks=0 must be >= 1"),
        ({"filter_strength": 1.5}, "filter_strength=1.5 must be within [0, 1]"),
        ({"coregistration": "ESD"}, "coregistration='ESD'"),
        ({"workflow": "slc"}, "workflow='slc' is not supported"),
        ({"start_date": "2025-05-01", "stop_date": "2025-04-01"}, "must be before stop_date"),
        ({"exclude_dates": ["2025-13-01"]}, "exclude_dates='2025-13-01' is not a valid"),
    ],
)
def test_bad_input_names_the_field(tmp_path: Path, change: dict[str, object], message: str) -> None:
    kwargs: dict[str, object] = {
        "slc_dir": tmp_path,
        "work_dir": tmp_path,
        "orbit_dir": tmp_path,
        "aux_dir": tmp_path,
        "dem_path": tmp_path / "dem",
        "swaths": [1],
        "bbox": (34.0, 34.6, 116.5, 117.95),
        "connections": 1,
        "azimuth_looks": 3,
        "range_looks": 9,
        "filter_strength": 0.5,
        "coregistration": "NESD",
    }
    kwargs.update(change)
    with pytest.raises(ValueError) as info:
        build_stack_sentinel_args(**kwargs)  # type: ignore[arg-type]
    assert message in str(info.value)


def _executable(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_prepare_archives_and_deletes_nothing(tmp_path: Path) -> None:
    stack = tmp_path / "stack"
    assert prepare_stack_dir(stack) is None
    (stack / "run_files").mkdir(parents=True)
    (stack / "run_files" / "run_01_unpack_topo_reference").write_text("old line\n")
    (stack / "configs").mkdir()
    (stack / "configs" / "config_reference").write_text("old config\n")
    (stack / "coreg_secondarys" / "20250418").mkdir(parents=True)
    first = prepare_stack_dir(stack)
    assert first is not None and first.parent == stack / "archive"
    assert (first / "run_files" / "run_01_unpack_topo_reference").read_text() == "old line\n"
    assert (first / "configs" / "config_reference").read_text() == "old config\n"
    assert not (stack / "run_files").exists() and not (stack / "configs").exists()
    assert (stack / "coreg_secondarys" / "20250418").is_dir()  # products untouched
    (stack / "run_files").mkdir()
    (stack / "run_files" / "run_01_unpack_topo_reference").write_text("newer line\n")
    second = prepare_stack_dir(stack)
    assert second is not None and second != first
    assert (first / "run_files" / "run_01_unpack_topo_reference").read_text() == "old line\n"
    assert (second / "run_files" / "run_01_unpack_topo_reference").read_text() == "newer line\n"
    assert not (second / "configs").exists()


def test_update_mode(tmp_path: Path) -> None:
    assert not is_update_mode(tmp_path)
    (tmp_path / "coreg_secondarys").mkdir()
    assert is_update_mode(tmp_path)
    dates = ["20250512", "20250418", "20250430", "20250524", "20250605"]
    assert update_mode_required_dates(dates, 1) == ["20250524", "20250605"]
    assert update_mode_required_dates(dates, 2) == ["20250430", "20250512", "20250524", "20250605"]
    assert update_mode_required_dates(dates[:2], 3) == ["20250418", "20250512"]
    with pytest.raises(ValueError, match="existing_dates='2025-5-1'"):
        update_mode_required_dates(["2025-5-1"], 1)


FAKE_STACK_SENTINEL = """
import pathlib, sys
args = sys.argv[1:]
work = pathlib.Path(args[args.index("-w") + 1])
print("stackSentinel args:", " ".join(args))
pathlib.Path("SAFE_files.txt").write_text("/data/SLC/a.zip\\n")
(work / "run_files").mkdir(parents=True)
(work / "run_files" / "run_01_unpack_topo_reference").write_text("x\\n")
sys.exit(int("--fail" in args))
"""


def test_runs_in_the_stack_dir(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    _executable(bin_dir / "stackSentinel.py", FAKE_STACK_SENTINEL)
    stack = tmp_path / "work" / "stack"
    log = tmp_path / "logs" / "stackSentinel.log"
    args = ["stackSentinel.py", "-w", str(stack), "-b", "34.0 34.6 116.5 117.95"]
    result = run_stack_sentinel(args, stack_dir=stack, log_path=log, extra_path=[bin_dir])
    assert result.returncode == 0
    assert (stack / "SAFE_files.txt").read_text() == "/data/SLC/a.zip\n"
    assert not (tmp_path / "SAFE_files.txt").exists()
    assert "-b 34.0 34.6 116.5 117.95" in log.read_text()
    with pytest.raises(ValueError, match="call prepare_stack_dir"):
        run_stack_sentinel(args, stack_dir=stack, log_path=log, extra_path=[bin_dir])


def test_failure_and_num_proc(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    _executable(bin_dir / "stackSentinel.py", FAKE_STACK_SENTINEL)
    stack = tmp_path / "stack"
    log = tmp_path / "x.log"
    with pytest.raises(ValueError, match="must not get --num_proc"):
        run_stack_sentinel(
            ["stackSentinel.py", "-w", str(stack), "--num_proc", "4"], stack_dir=stack, log_path=log
        )
    with pytest.raises(CommandError) as info:
        run_stack_sentinel(
            ["stackSentinel.py", "-w", str(stack), "--fail"],
            stack_dir=stack,
            log_path=log,
            extra_path=[bin_dir],
        )
    assert info.value.result.returncode == 1


def test_task_archives_old_run_files_first(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    _executable(bin_dir / "stackSentinel.py", FAKE_STACK_SENTINEL)
    stack = tmp_path / "stack"
    (stack / "run_files").mkdir(parents=True)
    (stack / "run_files" / "run_01_unpack_topo_reference").write_text("old\n")
    result = stack_sentinel_task.fn(
        ["stackSentinel.py", "-w", str(stack)], stack, tmp_path / "log.txt", [bin_dir]
    )
    assert result.returncode == 0
    (archive,) = (stack / "archive").iterdir()
    assert (archive / "run_files" / "run_01_unpack_topo_reference").read_text() == "old\n"
    assert (stack / "run_files" / "run_01_unpack_topo_reference").read_text() == "x\n"
