"""A precise orbit that replaces a restituted one re-runs the lines that read it, and only those
(with what needs them); markers of earlier versions, without orbits, stay done."""

from __future__ import annotations

import json
from pathlib import Path

from insarflow.tasks.topsstack.dag import build_dag, descendants
from insarflow.tasks.topsstack.executor import marker_path
from insarflow.tasks.topsstack.runfiles import parse_run_files
from tests.simulator.helpers import run_stack, small_stack


def test_precise_orbit_replacing_a_restituted_one_reruns_what_reads_it(
    tmp_path: Path, prefect_harness: None
) -> None:
    sim = small_stack(tmp_path / "sim")
    precise = sorted((sim.root / "orbits").glob("*_POEORB_*.EOF"))
    assert len(precise) == 3
    # The last date was processed while only a restituted orbit existed.
    restituted = precise[2].with_name(precise[2].name.replace("POEORB", "RESORB"))
    precise[2].rename(restituted)
    lines = parse_run_files(sim.stack)
    date = sorted(ln.key for ln in lines if ln.step == "unpack_secondary_slc")[-1]
    unpack = next(ln for ln in lines if ln.step == "unpack_secondary_slc" and ln.key == date)
    first = run_stack(sim, tmp_path / "logs", [])
    assert len(first.ran) == len(lines)
    marker = json.loads(marker_path(unpack, sim.stack).read_text())
    assert marker["orbits"] == [restituted.name]

    # Nothing changed: nothing runs.
    assert run_stack(sim, tmp_path / "logs", []).ran == []

    # The precise orbit arrives beside the restituted one.
    restituted.with_name(precise[2].name).write_bytes(restituted.read_bytes())
    second = run_stack(sim, tmp_path / "logs", [])
    dag = build_dag(lines)
    expected = {unpack.line_id} | descendants(dag, unpack.line_id)
    assert set(second.ran) == expected
    other = sorted(ln.key for ln in lines if ln.step == "unpack_secondary_slc")[0]
    for step in ("unpack_secondary_slc", "average_baseline", "fullBurst_geo2rdr"):
        assert not any(f"_{step}:{other}" in line_id for line_id in second.ran), second.ran
    assert not any(f"_fullBurst_resample:{other}" in line_id for line_id in second.ran)
    assert "01_unpack_topo_reference:reference" not in second.ran
    marker = json.loads(marker_path(unpack, sim.stack).read_text())
    assert marker["orbits"] == [precise[2].name]

    # A marker of an earlier version (no orbits recorded) stays done whatever the orbits.
    marker.pop("orbits")
    marker_path(unpack, sim.stack).write_text(json.dumps(marker))
    restituted.unlink()
    assert run_stack(sim, tmp_path / "logs", []).ran == []
