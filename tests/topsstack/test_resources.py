"""Resource classes and the memory model of run-file lines."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from insarflow.tasks.topsstack import steps
from insarflow.tasks.topsstack.resources import estimate_memory_mb, resource_class


@pytest.mark.parametrize("step", ["unpack_topo_reference", "overlap_geo2rdr", "fullBurst_geo2rdr"])
def test_topo_and_geo2rdr_go_to_the_gpu_only_with_use_gpu(step: str) -> None:
    assert resource_class(step, use_gpu=True) == "gpu"
    assert resource_class(step, use_gpu=False) == "cpu"


@pytest.mark.parametrize(
    "step",
    [
        "overlap_resample",
        "fullBurst_resample",
        "subband_and_resamp",
        "merge_reference_secondary_slc",
        "merge_burst_igram",
        "filter_coherence",
        "unwrap",
        "mergeBurstsIon",
        "unwrap_ion",
    ],
)
def test_memory_heavy_steps(step: str) -> None:
    assert resource_class(step, use_gpu=True) == "memory-heavy"
    assert resource_class(step, use_gpu=False) == "memory-heavy"


@pytest.mark.parametrize(
    "step", ["unpack_secondary_slc", "average_baseline", "pairs_misreg", "invertIon", "filtIon"]
)
def test_other_steps_are_cpu(step: str) -> None:
    assert resource_class(step, use_gpu=True) == "cpu"


def test_unknown_step_is_rejected() -> None:
    with pytest.raises(ValueError, match="step='unwarp' is not a topsStack step"):
        resource_class("unwarp", use_gpu=False)
    with pytest.raises(ValueError, match="step='unwarp'"):
        estimate_memory_mb("unwarp", "pair", 10, 9, 3)
    with pytest.raises(ValueError, match="n_bursts=0 must be >= 1"):
        estimate_memory_mb("unwrap", "pair", 0, 9, 3)
    with pytest.raises(ValueError, match="looks must be >= 1"):
        estimate_memory_mb("unwrap", "pair", 3, 0, 3)


def test_unwrap_matches_the_minsar_budget_at_default_looks() -> None:
    for n in (1, 9, 27):
        assert estimate_memory_mb("unwrap", "pair", n, 9, 3) == 2000 + 300 * n
    # the reference study's 6 x 1 looks: 4.5 times the pixels of 9 x 3
    assert estimate_memory_mb("unwrap", "pair", 10, 6, 1) == 2000 + 300 * 10 * 27 // 6


def test_geometry_layer_merges_are_small() -> None:
    layer = estimate_memory_mb("merge_reference_secondary_slc", "layer", 27, 9, 3)
    slc = estimate_memory_mb("merge_reference_secondary_slc", "date", 27, 9, 3)
    assert layer < slc
    assert layer < estimate_memory_mb("unwrap", "pair", 27, 9, 3) / 4


@pytest.mark.parametrize("step", steps.names())
def test_every_step_has_a_class_and_a_positive_estimate(step: str) -> None:
    assert resource_class(step, use_gpu=False) in ("cpu", "memory-heavy")
    assert estimate_memory_mb(step, "date", 1, 9, 3) > 0


@given(
    step=st.sampled_from(steps.names()),
    kind=st.sampled_from(["reference", "date", "pair", "layer", "all"]),
    n=st.integers(1, 200),
    rl=st.integers(1, 40),
    al=st.integers(1, 20),
)
def test_more_bursts_never_need_less_and_more_looks_never_more(
    step: str, kind: str, n: int, rl: int, al: int
) -> None:
    base = estimate_memory_mb(step, kind, n, rl, al)
    assert estimate_memory_mb(step, kind, n + 1, rl, al) >= base
    assert estimate_memory_mb(step, kind, n, rl + 1, al) <= base
    assert estimate_memory_mb(step, kind, n, rl, al + 1) <= base


@given(n=st.integers(1, 200), rl=st.integers(1, 40), al=st.integers(1, 20))
def test_unwrap_grows_with_bursts_and_shrinks_with_looks(n: int, rl: int, al: int) -> None:
    base = estimate_memory_mb("unwrap", "pair", n, rl, al)
    assert estimate_memory_mb("unwrap", "pair", n + 1, rl, al) > base
    assert estimate_memory_mb("unwrap", "pair", n, rl * 2, al) < base
