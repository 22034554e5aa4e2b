"""Quality figures of a MintPy run: coherence per interferogram, unwrapping errors, closure
phase, reference point."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import h5py
import numpy as np
import pytest

from insarflow.tasks import quality
from insarflow.tasks.export import locate_products

from .synthetic import SyntheticMintpy

TWO_PI = 2 * np.pi


def test_pair_quality_is_mean_coherence_and_use(synthetic_mintpy: SyntheticMintpy) -> None:
    stack = synthetic_mintpy.mintpy_dir / "inputs" / "ifgramStack.h5"
    with h5py.File(stack, "r") as f:
        coherence = f["coherence"][:]
    pairs = quality.pair_quality(stack)
    assert [p.pair for p in pairs] == [f"{a}_{b}" for a, b in synthetic_mintpy.pairs]
    for k, p in enumerate(pairs):
        assert p.mean_coherence == pytest.approx(float(np.nanmean(coherence[k])), rel=1e-6)
    # the builder drops the last pair
    assert [p.used for p in pairs] == [True] * (len(pairs) - 1) + [False]


def _plant_phases(stack: Path, pairs: list[tuple[str, str]]) -> tuple[str, int]:
    """2 pi jumps over patches of three interferograms (corrected in unwrapPhase_bridging),
    and 0.5 rad of non-closing phase over half of another; returns that pair and the
    patch size."""
    with h5py.File(stack, "a") as f:
        phase = f["unwrapPhase"][:]
        # unwrapping errors of either sign and of one or two cycles, over 300 pixels
        phase[2, 5:15, 10:20] += TWO_PI
        phase[5, 20:30, 30:40] -= TWO_PI
        phase[3, 25:35, 5:15] += 2 * TWO_PI
        fixed = f["unwrapPhase"][:]
        # a closure-phase bias over the western half, no integer ambiguity (a bias of the
        # whole scene would vanish with the reference pixel's phase)
        fixed[4, :, :25] += 0.5
        f["unwrapPhase"][:] = phase
        f.create_dataset("unwrapPhase_bridging", data=fixed)
    return "_".join(pairs[4]), 300


def test_unwrapping_errors_before_and_after_correction(
    synthetic_mintpy: SyntheticMintpy, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from mintpy.unwrap_error_phase_closure import (
        calc_num_triplet_with_nonzero_integer_ambiguity,
    )

    mintpy_dir = synthetic_mintpy.mintpy_dir
    stack = mintpy_dir / "inputs" / "ifgramStack.h5"
    _, patch = _plant_phases(stack, synthetic_mintpy.pairs)
    # what quick_overview writes for the phase as loaded (MintPy also draws it into the cwd)
    monkeypatch.chdir(tmp_path)
    with contextlib.redirect_stdout(io.StringIO()):
        calc_num_triplet_with_nonzero_integer_ambiguity(str(stack), dsName="unwrapPhase")

    before = quality.loaded_phase_errors(mintpy_dir)
    result = quality.triplet_statistics(stack)
    assert before is not None and result is not None
    after = result[1]
    assert before.dataset == "unwrapPhase" and after.dataset == "unwrapPhase_bridging"
    assert before.pixels == after.pixels == 40 * 50
    assert before.pixels_with_errors == patch
    assert before.max_per_pixel >= 1
    assert after.pixels_with_errors == 0 and after.max_per_pixel == 0
    # the count for the loaded phase follows MintPy's rule exactly
    mine = quality.triplet_statistics(stack, "unwrapPhase")
    assert mine is not None and mine[1] == before


def test_closure_phase_names_the_triplets_of_a_biased_pair(
    synthetic_mintpy: SyntheticMintpy,
) -> None:
    stack = synthetic_mintpy.mintpy_dir / "inputs" / "ifgramStack.h5"
    biased, _ = _plant_phases(stack, synthetic_mintpy.pairs)
    result = quality.triplet_statistics(stack)
    assert result is not None
    closure = result[0]
    assert closure.dataset == "unwrapPhase_bridging"
    # 8 dates, pairs to the next and next-but-one date, the last pair dropped: 5 triplets
    assert closure.triplets == 5
    # 0.5 rad over half of the pixels
    assert closure.max_triplet_mean_abs_rad == pytest.approx(0.25, abs=1e-4)
    d1, d2 = biased.split("_")
    worst_name, worst_value = closure.worst[0]
    assert d1 in worst_name and d2 in worst_name and worst_value == pytest.approx(0.25, abs=1e-4)
    # most triplets close: the median is that of the unbiased ones
    assert closure.median_abs_rad < 0.01


def test_reference_point_is_reported_with_its_coherence(synthetic_mintpy: SyntheticMintpy) -> None:
    s = synthetic_mintpy
    ref = quality.reference_check(locate_products(s.mintpy_dir))
    assert ref is not None
    r, c = s.ref_yx
    assert (ref.row, ref.col, ref.date) == (r, c, "2024-12-01")
    assert ref.temporal_coherence == pytest.approx(float(s.temporal_coherence[r, c]))
    assert ref.avg_spatial_coherence == pytest.approx(float(s.avg_spatial_coherence[r, c]))
    assert ref.reliable
    # the synthetic average coherence (~0.6) is below MintPy's default 0.85 for a reference
    assert len(ref.warnings) == 1
    assert "average spatial coherence" in ref.warnings[0]
    assert "(mintpy.reference.minCoherence)" in ref.warnings[0]


def test_masked_or_edge_reference_point_is_a_warning(synthetic_mintpy: SyntheticMintpy) -> None:
    s = synthetic_mintpy
    # a masked pixel two rows below the NaN border of the geocoded grid
    r, c = next((int(a), int(b)) for a, b in np.argwhere(~s.mask) if a == 2)
    with h5py.File(s.geo_dir / "geo_velocity.h5", "a") as f:
        f.attrs["REF_Y"], f.attrs["REF_X"] = str(r), str(c)
    ref = quality.reference_check(locate_products(s.mintpy_dir))
    assert ref is not None and not ref.reliable
    text = "\n".join(ref.warnings)
    assert "is masked as unreliable by MintPy (maskTempCoh.h5)" in text
    assert "(mintpy.networkInversion.minTempCoh)" in text
    assert f"lies within {quality.EDGE_PIXELS} pixels of the edge of the data" in text
