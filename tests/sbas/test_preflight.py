"""Pre-flight checks of a topsStack work dir before MintPy's load_data."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from insarflow.tasks.sbas import PreflightError, preflight_check

from .synthetic import SyntheticStack


def _ifg(stack: SyntheticStack, pair: str) -> Path:
    return stack.stack_dir / "merged" / "interferograms" / pair


def _truncate(path: Path, keep: int) -> None:
    with path.open("r+b") as f:
        f.truncate(keep)


def test_complete_stack(stack: SyntheticStack) -> None:
    report = preflight_check(stack.stack_dir, allow_missing=False)
    assert report.pairs == stack.pairs
    assert report.dates == stack.dates
    assert (report.length, report.width) == stack.shape
    assert report.reference_date == stack.dates[0]
    assert report.meta_file == stack.stack_dir / "reference" / "IW1.xml"
    assert not report.excluded and not report.dropped_dates and report.excluded_dir is None
    assert "12 interferograms over 6 dates (40 x 60 pixels)" in report.summary()


def test_incomplete_pairs_fail_with_a_list(stack: SyntheticStack) -> None:
    truncated, no_cor = stack.pairs[1], stack.pairs[4]
    _truncate(_ifg(stack, truncated) / "filt_fine.unw", 1000)
    (_ifg(stack, no_cor) / "filt_fine.cor").unlink()
    with pytest.raises(PreflightError) as err:
        preflight_check(stack.stack_dir, allow_missing=False)
    msg = str(err.value)
    assert "2 of 12 interferograms" in msg
    assert f"{truncated}: filt_fine.unw incomplete (1000 bytes, its XML declares 19200)" in msg
    assert f"{no_cor}: filt_fine.cor missing" in msg
    assert "allow missing interferograms" in msg
    # nothing moved
    assert _ifg(stack, truncated).is_dir() and _ifg(stack, no_cor).is_dir()


def test_allow_missing_moves_incomplete_pairs_aside(stack: SyntheticStack) -> None:
    bad = stack.pairs[2]
    _truncate(_ifg(stack, bad) / "filt_fine.unw.conncomp", 10)
    report = preflight_check(stack.stack_dir, allow_missing=True)
    assert bad not in report.pairs and len(report.pairs) == 11
    assert report.excluded == {
        bad: ("filt_fine.unw.conncomp incomplete (10 bytes, its XML declares 2400)",)
    }
    excluded_dir = stack.stack_dir / "merged" / "interferograms.excluded"
    assert report.excluded_dir == excluded_dir
    assert (excluded_dir / bad / "filt_fine.unw").is_file()
    assert not _ifg(stack, bad).exists()  # out of MintPy's merged/interferograms/* glob

    again = preflight_check(stack.stack_dir, allow_missing=True)
    assert again.pairs == report.pairs
    assert again.excluded == {bad: ("excluded by an earlier check",)}

    # topsStack writes the pair again: it is back in
    shutil.copytree(excluded_dir / bad, _ifg(stack, bad))
    shutil.copy(_ifg(stack, stack.pairs[0]) / "filt_fine.unw.conncomp", _ifg(stack, bad))
    assert preflight_check(stack.stack_dir, allow_missing=True).pairs == stack.pairs


def test_size_mismatch_and_missing_baseline(stack: SyntheticStack) -> None:
    odd = stack.pairs[0]
    xml = _ifg(stack, odd) / "filt_fine.cor.xml"
    xml.write_text(
        xml.read_text(encoding="utf-8").replace("<value>60</value>", "<value>59</value>"),
        encoding="utf-8",
    )
    _truncate(_ifg(stack, odd) / "filt_fine.cor", 40 * 59 * 4)
    last = stack.dates[-1]
    shutil.rmtree(stack.stack_dir / "baselines" / f"{stack.dates[0]}_{last}")
    report = preflight_check(stack.stack_dir, allow_missing=True)
    assert report.excluded[odd] == ("filt_fine.cor is 40 x 59 pixels but the geometry is 40 x 60",)
    last_pairs = [p for p in stack.pairs if p.endswith(last)]
    assert len(last_pairs) == 3
    name = f"{stack.dates[0]}_{last}"
    for pair in last_pairs:
        assert report.excluded[pair] == (f"no baseline for {last} (baselines/{name}/{name}.txt)",)
    assert report.dropped_dates == (last,)
    assert last not in report.dates


def test_expected_pair_that_was_never_written(stack: SyntheticStack) -> None:
    never = f"{stack.dates[0]}_{stack.dates[5]}"
    with pytest.raises(PreflightError, match=f"{never}: directory missing"):
        preflight_check(stack.stack_dir, allow_missing=False, expected_pairs=[never])
    report = preflight_check(stack.stack_dir, allow_missing=True, expected_pairs=[never])
    assert report.excluded == {never: ("directory missing",)}
    assert report.pairs == stack.pairs


@pytest.mark.parametrize("allow_missing", [False, True])
def test_incomplete_geometry_is_fatal(stack: SyntheticStack, allow_missing: bool) -> None:
    geom = stack.stack_dir / "merged" / "geom_reference"
    _truncate(geom / "lat.rdr", 8)
    (geom / "incLocal.rdr").unlink()
    with pytest.raises(PreflightError) as err:
        preflight_check(stack.stack_dir, allow_missing=allow_missing)
    msg = str(err.value)
    assert "merged/geom_reference/lat.rdr incomplete (8 bytes, its XML declares 19200)" in msg
    assert "merged/geom_reference/incLocal.rdr missing" in msg
    assert "merge_reference_secondary_slc" in msg


def test_missing_reference_xml_is_fatal(stack: SyntheticStack) -> None:
    (stack.stack_dir / "reference" / "IW1.xml").unlink()
    with pytest.raises(PreflightError, match=r"no reference/IW\*\.xml"):
        preflight_check(stack.stack_dir, allow_missing=True)


def test_no_baselines_is_fatal(stack: SyntheticStack) -> None:
    shutil.rmtree(stack.stack_dir / "baselines")
    with pytest.raises(PreflightError, match=r"no baseline files"):
        preflight_check(stack.stack_dir, allow_missing=True)


def test_no_complete_interferogram_is_fatal(stack: SyntheticStack) -> None:
    for pair in stack.pairs:
        (_ifg(stack, pair) / "filt_fine.unw").unlink()
    with pytest.raises(PreflightError, match="0 complete interferogram"):
        preflight_check(stack.stack_dir, allow_missing=True)


def test_one_interferogram_is_too_small_a_network(stack: SyntheticStack) -> None:
    """MintPy's modify_network fails on a single interferogram: refused before MintPy."""
    for pair in stack.pairs[1:]:
        (_ifg(stack, pair) / "filt_fine.unw").unlink()
    with pytest.raises(PreflightError) as err:
        preflight_check(stack.stack_dir, allow_missing=True)
    assert "1 complete interferogram(s) over 2 date(s)" in str(err.value)
    assert "at least 3 dates and 2 interferograms" in str(err.value)


def test_non_finite_baseline_is_fatal_naming_the_file(stack: SyntheticStack) -> None:
    files = sorted((stack.stack_dir / "baselines").glob("*/*.txt"))
    bad = files[-1]
    bad.write_text(bad.read_text().replace("Bperp (average): ", "Bperp (average): nan #"))
    with pytest.raises(PreflightError) as err:
        preflight_check(stack.stack_dir, allow_missing=True)
    assert f"{bad} gives a non-finite perpendicular baseline (nan" in str(err.value)


def test_excluded_dates_take_their_pairs_out_and_back(stack: SyntheticStack) -> None:
    gone = stack.dates[2]
    with_gone = [p for p in stack.pairs if gone in p.split("_")]
    excluded_dir = stack.stack_dir / "merged" / "interferograms.excluded"

    report = preflight_check(stack.stack_dir, allow_missing=False, exclude_dates=[gone])

    assert report.pairs == tuple(p for p in stack.pairs if p not in with_gone)
    assert report.excluded == dict.fromkeys(with_gone, (f"{gone} in acquisition.exclude_dates",))
    assert gone not in report.dates
    assert sorted(p.name for p in excluded_dir.iterdir()) == with_gone
    assert not any(_ifg(stack, p).exists() for p in with_gone)
    # idempotent: a second look lists them from where they wait
    again = preflight_check(stack.stack_dir, allow_missing=False, exclude_dates=[gone])
    assert again.pairs == report.pairs and again.excluded == report.excluded

    back = preflight_check(stack.stack_dir, allow_missing=False)  # the exclusion is lifted

    assert back.pairs == stack.pairs and back.excluded == {}
    assert all((_ifg(stack, p) / "filt_fine.unw").is_file() for p in with_gone)
    assert not list(stack.stack_dir.glob("merged/interferograms/*/.excluded-dates"))
