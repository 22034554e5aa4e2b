"""True dependencies between the lines of the real run-file sets."""

from __future__ import annotations

import shutil
from itertools import pairwise
from pathlib import Path

import pytest

from insarflow.tasks.topsstack.dag import (
    DagError,
    ancestors,
    build_dag,
    critical_path,
    descendants,
    topological_order,
    validate_dag,
)
from insarflow.tasks.topsstack.runfiles import RunLine, parse_run_files

SETS = ("geometry_2dates", "nesd_4dates", "nesd_ion_3swaths_4dates")


def _lines(fixtures_dir: Path, name: str) -> list[RunLine]:
    return parse_run_files(fixtures_dir / "topsstack_runfiles" / name)


@pytest.fixture(scope="module")
def nesd(fixtures_dir: Path) -> dict[str, frozenset[str]]:
    return build_dag(_lines(fixtures_dir, "nesd_4dates"))


@pytest.fixture(scope="module")
def ion(fixtures_dir: Path) -> dict[str, frozenset[str]]:
    return build_dag(_lines(fixtures_dir, "nesd_ion_3swaths_4dates"))


@pytest.mark.parametrize("name", SETS)
def test_graph_is_acyclic_complete_and_follows_run_file_order(
    fixtures_dir: Path, name: str
) -> None:
    lines = _lines(fixtures_dir, name)
    dag = build_dag(lines)
    assert set(dag) == {ln.line_id for ln in lines}
    order = topological_order(dag)
    assert sorted(order) == sorted(dag)
    position = {node: i for i, node in enumerate(order)}
    number = {ln.line_id: ln.step_number for ln in lines}
    for node, upstream in dag.items():
        for up in upstream:
            assert position[up] < position[node]
            # a true dependency never points to a later run file
            assert number[up] < number[node], (up, node)
    roots = {node for node, upstream in dag.items() if not upstream}
    assert roots == {ln.line_id for ln in lines if ln.step_number in (1, 2)}
    assert all(roots & (ancestors(dag, node) | {node}) for node in dag)


def test_only_end_products_feed_nothing(nesd: dict[str, frozenset[str]]) -> None:
    needed = set().union(*nesd.values())
    sinks = {node for node in nesd if node not in needed}
    assert sinks == {
        *(f"03_average_baseline:{d}" for d in ("20250418", "20250430", "20250512")),
        *(
            f"12_merge_reference_secondary_slc:{layer}"
            for layer in ("lat", "lon", "los", "hgt", "shadowMask", "incLocal")
        ),
        *(
            f"16_unwrap:{p}"
            for p in (
                "20250406_20250418",
                "20250406_20250430",
                "20250418_20250430",
                "20250418_20250512",
                "20250430_20250512",
            )
        ),
    }


def test_burst_interferogram_needs_only_its_two_dates(nesd: dict[str, frozenset[str]]) -> None:
    igram = nesd["13_generate_burst_igram:20250418_20250430"]
    assert igram == {"10_fullBurst_resample:20250418", "10_fullBurst_resample:20250430"}
    ref_pair = nesd["13_generate_burst_igram:20250406_20250418"]
    assert "10_fullBurst_resample:20250418" in ref_pair
    assert "10_fullBurst_resample:20250512" not in ref_pair
    # no run-file barrier: it may start before other dates finish or the valid region exists
    upstream = ancestors(nesd, "13_generate_burst_igram:20250406_20250418")
    assert "11_extract_stack_valid_region:all" not in upstream
    assert "10_fullBurst_resample:20250512" not in upstream


def test_unwrap_does_not_wait_for_other_pairs_or_dates(nesd: dict[str, frozenset[str]]) -> None:
    upstream = ancestors(nesd, "16_unwrap:20250406_20250418")
    assert nesd["16_unwrap:20250406_20250418"] == {"15_filter_coherence:20250406_20250418"}
    for other in (
        "15_filter_coherence:20250418_20250430",
        "14_merge_burst_igram:20250430_20250512",
        "13_generate_burst_igram:20250418_20250512",
        "12_merge_reference_secondary_slc:20250430",
        "12_merge_reference_secondary_slc:lat",
        "03_average_baseline:20250418",
    ):
        assert other not in upstream, other
    assert nesd["15_filter_coherence:20250406_20250418"] == {
        "14_merge_burst_igram:20250406_20250418",
        "12_merge_reference_secondary_slc:20250406",
        "12_merge_reference_secondary_slc:20250418",
    }


def test_nesd_coregistration_edges(nesd: dict[str, frozenset[str]]) -> None:
    assert nesd["05_overlap_geo2rdr:20250430"] == {
        "04_extract_burst_overlaps:all",
        "02_unpack_secondary_slc:20250430",
    }
    assert nesd["06_overlap_resample:20250430"] == {"05_overlap_geo2rdr:20250430"}
    assert nesd["07_pairs_misreg:20250418_20250512"] == {
        "06_overlap_resample:20250418",
        "06_overlap_resample:20250512",
    }
    assert nesd["07_pairs_misreg:20250406_20250430"] == {
        "04_extract_burst_overlaps:all",
        "06_overlap_resample:20250430",
    }
    misreg = {node for node in nesd if node.startswith("07_pairs_misreg:")}
    assert nesd["08_timeseries_misreg:azimuth"] == misreg == nesd["08_timeseries_misreg:range"]
    assert nesd["09_fullBurst_geo2rdr:20250512"] == {
        "01_unpack_topo_reference:reference",
        "02_unpack_secondary_slc:20250512",
        "08_timeseries_misreg:azimuth",
        "08_timeseries_misreg:range",
    }
    assert nesd["11_extract_stack_valid_region:all"] >= {
        "10_fullBurst_resample:20250418",
        "10_fullBurst_resample:20250430",
        "10_fullBurst_resample:20250512",
    }


def test_merges_need_the_common_valid_region(nesd: dict[str, frozenset[str]]) -> None:
    valid = "11_extract_stack_valid_region:all"
    assert valid in nesd["12_merge_reference_secondary_slc:20250406"]  # reference date too
    assert valid in nesd["12_merge_reference_secondary_slc:20250512"]
    assert nesd["12_merge_reference_secondary_slc:hgt"] == {
        "01_unpack_topo_reference:reference",
        valid,
    }
    assert nesd["14_merge_burst_igram:20250430_20250512"] == {
        "13_generate_burst_igram:20250430_20250512",
        valid,
    }


def test_average_baseline_feeds_nothing(nesd: dict[str, frozenset[str]]) -> None:
    assert nesd["03_average_baseline:20250430"] == {
        "01_unpack_topo_reference:reference",
        "02_unpack_secondary_slc:20250430",
    }
    assert descendants(nesd, "03_average_baseline:20250430") == set()


def test_geometry_workflow_is_identified_by_step_name(fixtures_dir: Path) -> None:
    dag = build_dag(_lines(fixtures_dir, "geometry_2dates"))
    assert dag["04_fullBurst_geo2rdr:20250418"] == {
        "01_unpack_topo_reference:reference",
        "02_unpack_secondary_slc:20250418",
    }
    assert dag["05_fullBurst_resample:20250418"] == {"04_fullBurst_geo2rdr:20250418"}
    assert "05_fullBurst_resample:20250418" in dag["06_extract_stack_valid_region:all"]
    assert dag["08_generate_burst_igram:20250406_20250418"] == {
        "01_unpack_topo_reference:reference",
        "05_fullBurst_resample:20250418",
    }
    assert dag["11_unwrap:20250406_20250418"] == {"10_filter_coherence:20250406_20250418"}


def test_ionosphere_edges(ion: dict[str, frozenset[str]]) -> None:
    assert ion["17_subband_and_resamp:20250406"] == {"01_unpack_topo_reference:reference"}
    assert ion["17_subband_and_resamp:20250430"] == {"10_fullBurst_resample:20250430"}
    # an ionosphere pair that is not an interferogram pair
    assert ion["18_generateIgram_ion:20250406_20250512"] == {
        "17_subband_and_resamp:20250406",
        "17_subband_and_resamp:20250512",
    }
    assert ion["19_mergeBurstsIon:20250406_20250512"] == {
        "18_generateIgram_ion:20250406_20250512",
        "11_extract_stack_valid_region:all",
    }
    chain = [
        ("20_unwrap_ion", "19_mergeBurstsIon"),
        ("21_look_ion", "20_unwrap_ion"),
        ("22_computeIon", "21_look_ion"),
        ("23_filtIon", "22_computeIon"),
    ]
    for node, up in chain:
        assert ion[f"{node}:20250418_20250430"] == {f"{up}:20250418_20250430"}
    filt = {node for node in ion if node.startswith("23_filtIon:")}
    assert len(filt) == 6
    assert ion["24_invertIon:all"] == filt | {"12_merge_reference_secondary_slc:hgt"}
    assert "16_unwrap:20250406_20250418" not in ancestors(ion, "24_invertIon:all")


def test_update_mode_without_reference_steps(fixtures_dir: Path, tmp_path: Path) -> None:
    src = fixtures_dir / "topsstack_runfiles" / "nesd_4dates"
    stack = tmp_path / "stack"
    shutil.copytree(src / "run_files", stack / "run_files")
    shutil.copytree(src / "configs", stack / "configs")
    (stack / "run_files" / "run_01_unpack_topo_reference").unlink()
    (stack / "run_files" / "run_04_extract_burst_overlaps").unlink()
    dag = build_dag(parse_run_files(stack))
    assert dag["05_overlap_geo2rdr:20250430"] == {"02_unpack_secondary_slc:20250430"}
    assert dag["07_pairs_misreg:20250406_20250418"] == {"06_overlap_resample:20250418"}
    assert dag["12_merge_reference_secondary_slc:lat"] == {"11_extract_stack_valid_region:all"}
    validate_dag(dag)


def test_per_swath_compute_ion_feeds_the_swath_merge(tmp_path: Path) -> None:
    run_dir = tmp_path / "run_files"
    run_dir.mkdir()
    ion_dir = "/s/ion/20250406_20250418"
    (run_dir / "run_21_look_ion").write_text(
        "SentinelWrapper.py -c /s/configs/config_look_ion_20250406-20250418\n"
    )
    (run_dir / "run_22_computeIon").write_text(
        "".join(
            f"computeIon.py --ionosphere {ion_dir}/ion_cal_IW{s}/raw_no_projection.ion\n"
            for s in (1, 2)
        )
        + f"mergeSwathIon.py --input {ion_dir} --output {ion_dir}/ion_cal\n"
    )
    (run_dir / "run_23_filtIon").write_text(
        "SentinelWrapper.py -c /s/configs/config_filtIon_20250406_20250418\n"
    )
    dag = build_dag(parse_run_files(tmp_path))
    assert dag["22_computeIon:20250406_20250418_IW1"] == {"21_look_ion:20250406_20250418"}
    assert dag["22_computeIon:20250406_20250418"] == {
        "22_computeIon:20250406_20250418_IW1",
        "22_computeIon:20250406_20250418_IW2",
    }
    assert dag["23_filtIon:20250406_20250418"] == {"22_computeIon:20250406_20250418"}


def test_critical_path_on_a_known_graph() -> None:
    dag = {
        "a": frozenset(),
        "b": frozenset({"a"}),
        "c": frozenset({"a"}),
        "d": frozenset({"b", "c"}),
        "e": frozenset(),
    }
    path, total = critical_path(dag, {"a": 1.0, "b": 5.0, "c": 2.0, "d": 1.0, "e": 6.5})
    assert (path, total) == (["a", "b", "d"], 7.0)
    path, total = critical_path(dag, {"a": 1.0, "b": 5.0, "c": 2.0, "d": 1.0, "e": 7.5})
    assert (path, total) == (["e"], 7.5)
    assert critical_path({}, {}) == ([], 0.0)


def test_critical_path_of_the_nesd_stack(nesd: dict[str, frozenset[str]]) -> None:
    durations = dict.fromkeys(nesd, 1.0)
    durations["16_unwrap:20250418_20250512"] = 100.0
    path, total = critical_path(nesd, durations)
    assert path[0] == "01_unpack_topo_reference:reference"
    assert path[-1] == "16_unwrap:20250418_20250512"
    assert total == sum(durations[node] for node in path)
    for up, node in pairwise(path):
        assert up in nesd[node]
    with pytest.raises(DagError, match="no duration for 1 line"):
        critical_path(nesd, {k: v for k, v in durations.items() if not k.startswith("01_")})


def test_cycles_and_unknown_ids_raise() -> None:
    with pytest.raises(DagError, match="cycle among 2 line"):
        topological_order({"a": frozenset({"b"}), "b": frozenset({"a"}), "c": frozenset()})
    with pytest.raises(DagError, match="unknown line 'zz'"):
        topological_order({"a": frozenset({"zz"})})
    with pytest.raises(DagError, match="unknown line"):
        validate_dag({"a": frozenset({"zz"})})
    with pytest.raises(DagError, match="cycle"):
        critical_path({"a": frozenset({"a"})}, {"a": 1.0})


def test_topological_order_is_deterministic(ion: dict[str, frozenset[str]]) -> None:
    order = topological_order(ion)
    assert order == topological_order(dict(reversed(list(ion.items()))))
    assert order[0] == "01_unpack_topo_reference:reference"
    assert order[-1] == "24_invertIon:all"
