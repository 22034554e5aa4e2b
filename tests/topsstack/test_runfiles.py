"""Run-file parser on the real run files ISCE2 2.6.5 stackSentinel.py wrote."""

from __future__ import annotations

import pickle
import shutil
from collections import Counter
from pathlib import Path

import pytest

from insarflow.tasks.isce_io import IsceConfigError, read_isce_config
from insarflow.tasks.topsstack import steps as registry
from insarflow.tasks.topsstack.runfiles import (
    RunFileError,
    RunLine,
    parse_run_files,
)

SETS = {
    "geometry_2dates": (11, 18),
    "nesd_4dates": (16, 59),
    "nesd_ion_3swaths_4dates": (24, 100),
}


def _stack(fixtures_dir: Path, name: str) -> Path:
    return fixtures_dir / "topsstack_runfiles" / name


def _copy(fixtures_dir: Path, name: str, tmp_path: Path) -> Path:
    dest = tmp_path / "stack"
    src = _stack(fixtures_dir, name)
    shutil.copytree(src / "run_files", dest / "run_files")
    shutil.copytree(src / "configs", dest / "configs")
    return dest


def _by_id(lines: list[RunLine]) -> dict[str, RunLine]:
    return {line.line_id: line for line in lines}


def _signature(lines: list[RunLine]) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(ln.line_id, ln.key_kind, ln.command) for ln in lines]


@pytest.mark.parametrize(("name", "counts"), SETS.items())
def test_every_real_set_parses_completely(
    fixtures_dir: Path, name: str, counts: tuple[int, int]
) -> None:
    stack = _stack(fixtures_dir, name)
    lines = parse_run_files(stack)
    n_files, n_lines = counts
    assert len({ln.run_file for ln in lines}) == n_files
    assert len(lines) == n_lines
    on_disk = [
        raw
        for f in sorted((stack / "run_files").iterdir())
        for raw in f.read_text().splitlines()
        if raw.strip()
    ]
    assert len(on_disk) == n_lines
    assert len({ln.line_id for ln in lines}) == n_lines
    assert {ln.step for ln in lines} <= set(registry.names())
    for line in lines:
        assert line.run_file.name == f"run_{line.step_number:02d}_{line.step}"
        if line.command[0] == "SentinelWrapper.py":
            # /data/stack does not exist here: configs resolve into the stack's configs/
            assert line.config_path == stack / "configs" / Path(line.command[2]).name
            assert line.functions, line.line_id
        else:
            assert line.config_path is None and line.functions == ()


def test_geometry_workflow_keeps_its_own_numbers(fixtures_dir: Path) -> None:
    lines = _by_id(parse_run_files(_stack(fixtures_dir, "geometry_2dates")))
    assert "04_fullBurst_geo2rdr:20250418" in lines
    assert "06_extract_stack_valid_region:all" in lines
    assert "11_unwrap:20250406_20250418" in lines
    unwrap = lines["11_unwrap:20250406_20250418"]
    assert unwrap.label == "unwrap-20250406_20250418"
    assert unwrap.key_kind == "pair"
    assert unwrap.outputs == (
        Path("/data/stack/merged/interferograms/20250406_20250418/filt_fine.unw"),
        Path("/data/stack/merged/interferograms/20250406_20250418/filt_fine.unw.conncomp"),
    )


def test_reference_line_and_its_config(fixtures_dir: Path) -> None:
    stack = _stack(fixtures_dir, "nesd_4dates")
    ref = _by_id(parse_run_files(stack))["01_unpack_topo_reference:reference"]
    assert ref.key_kind == "reference"
    assert ref.command == ("SentinelWrapper.py", "-c", "/data/stack/configs/config_reference")
    assert [(f.index, f.name) for f in ref.functions] == [(1, "Sentinel1_TOPS"), (2, "topo")]
    assert ref.functions[0].params["swaths"] == "1 2 3"
    assert ref.functions[0].params["pol"] == "vv"
    assert "Sentinel1_TOPS" not in ref.functions[0].params
    assert ref.functions[1].params["dem"] == "/data/dem/dem.wgs84"
    assert ref.outputs == (Path("/data/stack/reference"), Path("/data/stack/geom_reference"))


def test_merge_keys_are_dates_including_reference_and_geometry_layers(fixtures_dir: Path) -> None:
    lines = parse_run_files(_stack(fixtures_dir, "nesd_4dates"))
    merges = [ln for ln in lines if ln.step == "merge_reference_secondary_slc"]
    assert sorted(ln.key for ln in merges if ln.key_kind == "date") == [
        "20250406",
        "20250418",
        "20250430",
        "20250512",
    ]
    assert sorted(ln.key for ln in merges if ln.key_kind == "layer") == sorted(
        registry.GEOMETRY_LAYERS
    )
    hgt = next(ln for ln in merges if ln.key == "hgt")
    assert hgt.outputs == (Path("/data/stack/merged/geom_reference/hgt.rdr"),)


def test_direct_script_lines_are_keyed_from_their_arguments(fixtures_dir: Path) -> None:
    lines = _by_id(parse_run_files(_stack(fixtures_dir, "nesd_ion_3swaths_4dates")))
    overlaps = lines["04_extract_burst_overlaps:all"]
    assert overlaps.command[0] == "subsetReference.py"
    assert lines["08_timeseries_misreg:azimuth"].outputs == (
        Path("/data/stack/misreg/azimuth/dates"),
    )
    assert lines["08_timeseries_misreg:range"].key_kind == "all"
    assert lines["11_extract_stack_valid_region:all"].outputs == (Path("/data/stack/stack"),)
    ion = lines["22_computeIon:20250418_20250512"]
    assert ion.key_kind == "pair"
    assert ion.outputs[0] == Path("/data/stack/ion/20250418_20250512/ion_cal/raw_no_projection.ion")
    invert = lines["24_invertIon:all"]
    assert invert.command[-2:] == ("--interp", "--msk_overlap")
    assert invert.outputs == (Path("/data/stack/ion_dates"),)


def test_ion_keys_written_with_dash_are_normalised(fixtures_dir: Path) -> None:
    lines = parse_run_files(_stack(fixtures_dir, "nesd_ion_3swaths_4dates"))
    by_step: dict[str, set[str]] = {}
    for line in lines:
        by_step.setdefault(line.step, set()).add(line.key)
    ion_pairs = {
        "20250406_20250418",
        "20250406_20250430",
        "20250406_20250512",
        "20250418_20250430",
        "20250418_20250512",
        "20250430_20250512",
    }
    for step in (
        "generateIgram_ion",
        "mergeBurstsIon",
        "unwrap_ion",
        "look_ion",
        "computeIon",
        "filtIon",
    ):
        assert by_step[step] == ion_pairs, step
    assert by_step["subband_and_resamp"] == {"20250406", "20250418", "20250430", "20250512"}
    merge_ion = _by_id(lines)["19_mergeBurstsIon:20250406_20250418"]
    assert merge_ion.command[-1].endswith("config_mergeBurstsIon_20250406-20250418")
    assert [f.name for f in merge_ion.functions] == [
        "mergeBurstsIon",
        "mergeBurstsIon",
        "coherenceIon",
    ]


def _num_proc_shape(run_file: Path, n: int) -> None:
    """Rewrite a run file the way stackSentinel --num_proc n writes it."""
    out: list[str] = []
    commands = [raw for raw in run_file.read_text().splitlines() if raw.strip()]
    for count, raw in enumerate(commands, start=1):
        out.append(raw + " &")
        if count % n == 0:
            out += ["wait", ""]
    run_file.write_text("\n".join(out) + "\n")


def test_num_proc_run_files_parse_to_the_same_lines(fixtures_dir: Path, tmp_path: Path) -> None:
    original = parse_run_files(_stack(fixtures_dir, "nesd_4dates"))
    stack = _copy(fixtures_dir, "nesd_4dates", tmp_path)
    for run_file in (stack / "run_files").iterdir():
        _num_proc_shape(run_file, 2)
    text = (stack / "run_files" / "run_02_unpack_secondary_slc").read_text()
    assert text.count(" &\n") == 3 and text.count("wait") == 1
    rewritten = parse_run_files(stack)
    assert _signature(rewritten) == _signature(original)
    assert all(ln.command[-1] != "&" for ln in rewritten)
    assert rewritten[0].config_path == stack / "configs" / "config_reference"


@pytest.mark.parametrize(
    "prefix",
    ["time ", "source ~/.bash_profile;", "source ~/.bash_profile; ", "module load isce2 && "],
)
def test_text_cmd_prefix_is_dropped(fixtures_dir: Path, tmp_path: Path, prefix: str) -> None:
    original = parse_run_files(_stack(fixtures_dir, "nesd_ion_3swaths_4dates"))
    stack = _copy(fixtures_dir, "nesd_ion_3swaths_4dates", tmp_path)
    for run_file in (stack / "run_files").iterdir():
        lines = run_file.read_text().splitlines()
        run_file.write_text("".join(prefix + ln + "\n" for ln in lines))
    assert _signature(parse_run_files(stack)) == _signature(original)


def test_existing_absolute_config_path_wins(fixtures_dir: Path, tmp_path: Path) -> None:
    stack = _copy(fixtures_dir, "geometry_2dates", tmp_path)
    elsewhere = tmp_path / "elsewhere" / "config_reference"
    elsewhere.parent.mkdir()
    elsewhere.write_text("[Common]\n[Function-1]\ntopo : \nreference : /x/reference\n")
    run01 = stack / "run_files" / "run_01_unpack_topo_reference"
    run01.write_text(f"SentinelWrapper.py -c {elsewhere}\n")
    ref = parse_run_files(stack)[0]
    assert ref.config_path == elsewhere
    assert [f.name for f in ref.functions] == ["topo"]


def test_missing_config_gives_a_line_without_functions(tmp_path: Path) -> None:
    run_dir = tmp_path / "run_files"
    run_dir.mkdir()
    (run_dir / "run_02_unpack_secondary_slc").write_text(
        "SentinelWrapper.py -c /nowhere/configs/config_secondary_20250418\n"
    )
    (line,) = parse_run_files(tmp_path)
    assert line.line_id == "02_unpack_secondary_slc:20250418"
    assert line.config_path == tmp_path / "configs" / "config_secondary_20250418"
    assert line.functions == () and line.outputs == ()


def test_master_slave_era_names_map_to_todays_steps(tmp_path: Path) -> None:
    run_dir = tmp_path / "run_files"
    run_dir.mkdir()
    (run_dir / "run_01_unpack_topo_master").write_text(
        "SentinelWrapper.py -c /s/configs/config_master\n"
    )
    (run_dir / "run_02_unpack_slave_slc").write_text(
        "SentinelWrapper.py -c /s/configs/config_slave_20250418\n"
    )
    (run_dir / "run_04_extract_burst_overlaps").write_text(
        "subsetMaster.py -m /s/master -g /s/geom_master\n"
    )
    (run_dir / "run_03_average_baseline.job").write_text("#!/bin/bash\n")  # not a run file
    ids = [ln.line_id for ln in parse_run_files(tmp_path)]
    assert ids == [
        "01_unpack_topo_reference:reference",
        "02_unpack_secondary_slc:20250418",
        "04_extract_burst_overlaps:all",
    ]


def test_per_swath_compute_ion_lines_get_distinct_keys(tmp_path: Path) -> None:
    run_dir = tmp_path / "run_files"
    run_dir.mkdir()
    ion = "/s/ion/20250406_20250418"
    swath_lines = [
        f"computeIon.py --lower {ion}/lower/merged_IW{s}/fine_look.unw "
        f"--upper {ion}/upper/merged_IW{s}/fine_look.unw "
        f"--coherence {ion}/lower/merged_IW{s}/fine_look.cor "
        f"--ionosphere {ion}/ion_cal_IW{s}/raw_no_projection.ion "
        f"--coherence_output {ion}/ion_cal_IW{s}/raw_no_projection.cor"
        for s in (1, 2, 3)
    ]
    merge = (
        f"mergeSwathIon.py --reference /s/reference --stack /s/stack --input {ion} "
        f"--output {ion}/ion_cal --nrlks 200 --nalks 50 --remove_ramp 0"
    )
    (run_dir / "run_22_computeIon").write_text("\n".join([*swath_lines, merge]) + "\n")
    lines = parse_run_files(tmp_path)
    assert [ln.key for ln in lines] == [
        "20250406_20250418_IW1",
        "20250406_20250418_IW2",
        "20250406_20250418_IW3",
        "20250406_20250418",
    ]
    assert lines[-1].outputs == (
        Path(f"{ion}/ion_cal/raw_no_projection.ion"),
        Path(f"{ion}/ion_cal/raw_no_projection.cor"),
    )


def _single_run_file(tmp_path: Path, name: str, text: str) -> Path:
    run_dir = tmp_path / "run_files"
    run_dir.mkdir(exist_ok=True)
    path = run_dir / name
    path.write_text(text)
    return path


def test_unknown_step_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = _single_run_file(tmp_path, "run_17_frobnicate", "SentinelWrapper.py -c c/config_x\n")
    with pytest.raises(RunFileError) as info:
        parse_run_files(tmp_path)
    assert str(path) in str(info.value)
    assert "unknown topsStack step 'frobnicate'" in str(info.value)


def test_burst_property_ion_steps_say_what_to_change(tmp_path: Path) -> None:
    _single_run_file(tmp_path, "run_25_filtIonShift", "SentinelWrapper.py -c c/config_a\n")
    with pytest.raises(RunFileError, match="consider burst properties in ionosphere computation"):
        parse_run_files(tmp_path)


def test_config_of_another_step_is_rejected(tmp_path: Path) -> None:
    path = _single_run_file(
        tmp_path, "run_16_unwrap", "SentinelWrapper.py -c /s/configs/config_merge_20250406\n"
    )
    with pytest.raises(RunFileError) as info:
        parse_run_files(tmp_path)
    assert f"{path}:1" in str(info.value)
    assert "does not belong to step 'unwrap'" in str(info.value)


def test_line_without_isce_command_is_rejected(tmp_path: Path) -> None:
    _single_run_file(tmp_path, "run_16_unwrap", "\necho hello\n")
    with pytest.raises(RunFileError, match=r"run_16_unwrap:2: no ISCE2 topsStack command"):
        parse_run_files(tmp_path)


def test_duplicate_lines_are_rejected(tmp_path: Path) -> None:
    line = "SentinelWrapper.py -c /s/configs/config_igram_unw_20250406_20250418\n"
    _single_run_file(tmp_path, "run_16_unwrap", line * 2)
    with pytest.raises(RunFileError, match="appears twice"):
        parse_run_files(tmp_path)


def test_missing_or_empty_run_files_dir(tmp_path: Path) -> None:
    with pytest.raises(RunFileError, match=r"run stackSentinel\.py"):
        parse_run_files(tmp_path)
    (tmp_path / "run_files").mkdir()
    with pytest.raises(RunFileError, match="no run_NN_<step> files"):
        parse_run_files(tmp_path)


def test_parse_config_sections(tmp_path: Path) -> None:
    cfg = tmp_path / "config_x"
    cfg.write_text(
        "[Common]\n##########\n[Function-1]\ngeo2rdr :\nsecondary : /s/sec\n"
        "useGPU : True \n###\n[Function-2]\nunwrap : \nunw : /a/b.unw\n"
    )
    first, second = read_isce_config(cfg)
    assert (first.index, first.name, dict(first.params)) == (
        1,
        "geo2rdr",
        {"secondary": "/s/sec", "useGPU": "True"},
    )
    assert (second.index, second.name, dict(second.params)) == (2, "unwrap", {"unw": "/a/b.unw"})


def test_every_step_of_the_real_sets_is_known(fixtures_dir: Path) -> None:
    steps: Counter[str] = Counter()
    for name in SETS:
        steps.update(ln.step for ln in parse_run_files(_stack(fixtures_dir, name)))
    assert set(steps) == set(registry.names())


def test_lines_pickle_and_hash_for_dask_workers(fixtures_dir: Path) -> None:
    lines = parse_run_files(_stack(fixtures_dir, "nesd_ion_3swaths_4dates"))
    assert pickle.loads(pickle.dumps(lines)) == lines
    assert len({hash(line) for line in lines}) == len(lines)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("[Function-1]\ngeo2rdr :\nsecondary /s/sec\n", "secondary /s/sec"),
        ("[Function-1]\ngeo2rdr :\nunw : /a\nunw : /b\n", "'unw'"),
        ("[Function-1]\n", "no function name line"),
    ],
)
def test_read_isce_config_names_the_file_and_the_fix(
    tmp_path: Path, body: str, problem: str
) -> None:
    cfg = tmp_path / "config_x"
    cfg.write_text("[Common]\n" + body)
    with pytest.raises(IsceConfigError, match="regenerate the configs") as err:
        read_isce_config(cfg)
    assert str(cfg) in str(err.value) and problem in str(err.value)
