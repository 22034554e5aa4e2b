"""The step registry: one entry per topsStack step, read by the parser, DAG, resources and plan."""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

from insarflow.plan import run_file_steps, sequential_pairs
from insarflow.simulator.stack_sentinel import WRITERS
from insarflow.tasks.topsstack import steps as registry
from insarflow.tasks.topsstack.dag import build_dag, descendants
from insarflow.tasks.topsstack.resources import estimate_memory_mb, resource_class
from insarflow.tasks.topsstack.runfiles import RunFileError, parse_run_files

# How each real set was generated (fixtures README): coregistration, -c, --param_ion;
# stackSentinel's default --num_overlap_connections (3) gives the NESD and ionosphere pairs.
GENERATED = {
    "geometry_2dates": ("geometry", 1, False),
    "nesd_4dates": ("NESD", 2, False),
    "nesd_ion_3swaths_4dates": ("NESD", 2, True),
}


@pytest.mark.parametrize("name", GENERATED)
def test_plan_writes_the_run_files_of_the_real_sets(fixtures_dir: Path, name: str) -> None:
    stack = fixtures_dir / "topsstack_runfiles" / name
    coregistration, connections, ion = GENERATED[name]
    dates = sorted(set(re.findall(r"_SLC__1SDV_(\d{8})T", (stack / "SAFE_files.txt").read_text())))
    planned = run_file_steps(
        len(dates),
        len(sequential_pairs(dates, connections)),
        len(sequential_pairs(dates, 3)),
        coregistration,
        ion,
    )
    written = Counter(line.run_file.name for line in parse_run_files(stack))
    assert planned == sorted(written.items())


def test_the_simulator_writes_every_registered_step() -> None:
    assert list(WRITERS) == list(registry.names())


# A step a future stackSentinel might write after unwrap: one line per pair, reading the
# unwrapped interferogram of its pair.
FAKE = registry.Step(
    "denoise_unwrapped",
    needs=lambda line, ix: ix.one("unwrap", line.key),
    memory=registry.Memory(700, 10, 50),
    lines=lambda counts: counts.pairs,
    config_prefixes=("denoise_unw",),
    key_kinds=("pair",),
    resource_class="memory-heavy",
)


def _with_fake_run_file(fixtures_dir: Path, tmp_path: Path) -> Path:
    """nesd_4dates plus run_17_denoise_unwrapped (one config per pair)."""
    src = fixtures_dir / "topsstack_runfiles" / "nesd_4dates"
    stack = tmp_path / "stack"
    shutil.copytree(src / "run_files", stack / "run_files")
    shutil.copytree(src / "configs", stack / "configs")
    pairs = [
        p.name[len("config_igram_unw_") :] for p in (stack / "configs").glob("config_igram_unw_*")
    ]
    lines = []
    for pair in sorted(pairs):
        config = stack / "configs" / f"config_denoise_unw_{pair}"
        config.write_text(
            "[Common]\n[Function-1]\nFilterAndCoherence : \n"
            f"filt : {stack}/merged/interferograms/{pair}/denoised.unw\n"
            f"coh : {stack}/merged/interferograms/{pair}/denoised.cor\n"
        )
        lines.append(f"SentinelWrapper.py -c {config}\n")
    (stack / "run_files" / "run_17_denoise_unwrapped").write_text("".join(lines))
    return stack


def test_a_new_step_is_one_registry_entry(
    fixtures_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = _with_fake_run_file(fixtures_dir, tmp_path)
    with pytest.raises(RunFileError, match="unknown topsStack step 'denoise_unwrapped'"):
        parse_run_files(stack)

    monkeypatch.setattr(registry, "STEPS", dict(registry.STEPS))
    registry.register(FAKE, after="unwrap")

    # parser: keys, kinds and outputs of the new run file
    lines = parse_run_files(stack)
    new = [ln for ln in lines if ln.step == "denoise_unwrapped"]
    pairs = sorted(ln.key for ln in lines if ln.step == "unwrap")
    assert sorted(ln.key for ln in new) == pairs and len(pairs) == 5
    assert {ln.key_kind for ln in new} == {"pair"}
    first = min(new, key=lambda ln: ln.key)
    assert first.outputs == (
        stack / "merged" / "interferograms" / first.key / "denoised.unw",
        stack / "merged" / "interferograms" / first.key / "denoised.cor",
    )

    # DAG: each new line needs exactly the unwrapping of its pair
    dag = build_dag(lines)
    for line in new:
        assert dag[line.line_id] == {f"16_unwrap:{line.key}"}
        assert line.line_id in descendants(dag, f"15_filter_coherence:{line.key}")

    # plan: the run file right after unwrap, one line per pair, in both workflows
    planned = run_file_steps(4, 5, 6, "NESD", ion=False)
    assert planned[15:] == [("run_16_unwrap", 5), ("run_17_denoise_unwrapped", 5)]
    assert sorted(Counter(ln.run_file.name for ln in lines).items()) == planned
    geometry = run_file_steps(4, 5, 6, "geometry", ion=True)
    assert ("run_12_denoise_unwrapped", 5) in geometry
    assert geometry[12] == ("run_13_subband_and_resamp", 4)

    # resources: class and memory model of the entry
    assert resource_class("denoise_unwrapped", use_gpu=True) == "memory-heavy"
    assert estimate_memory_mb("denoise_unwrapped", "pair", 9, 9, 3) == 700 + 9 * (10 + 50)
    assert estimate_memory_mb("denoise_unwrapped", "pair", 9, 3, 1) == 700 + 9 * (10 + 50 * 9)


def test_register_rejects_a_duplicate_or_unknown_anchor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "STEPS", dict(registry.STEPS))
    with pytest.raises(ValueError, match="step 'unwrap' is already registered"):
        registry.register(registry.get("unwrap"))
    with pytest.raises(ValueError, match="after='unwarp' is not a registered step"):
        registry.register(FAKE, after="unwarp")
    assert "denoise_unwrapped" not in registry.names()
