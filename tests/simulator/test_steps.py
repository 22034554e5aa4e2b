"""Running the simulator's run files: real-format products that match the known truth."""

from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import h5py
import numpy as np
import numpy.typing as npt
import pytest
import rasterio

from insarflow.simulator.scene import (
    make_truth,
    signal_phase,
    unwrapping_error_cycles,
)
from insarflow.simulator.steps import (
    OVERLAP_DOPPLER_DIFFERENCE_HZ,
    SCRIPTS,
    _range_shift,
    estimate_azimuth_misreg,
    run_script,
)
from insarflow.tasks.isce_io import is_complete, read_isce_info, read_isce_raster
from insarflow.tasks.shell import CommandError, run_command

from .helpers import (
    SimStack,
    execute_in_process,
    execute_subprocess,
    prepare,
    run_file_lines,
    small_spec,
    stack_sentinel_in_process,
    stack_sentinel_subprocess,
    tree_hashes,
)

pytestmark = [
    # the ISCE2 .vrt sidecars carry no geotransform, exactly like the real ones
    pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning"),
]

GEOMETRY = ("lat", "lon", "hgt", "los", "shadowMask", "incLocal")
IFG_FILES = ("fine.int", "fine.cor", "filt_fine.int", "filt_fine.cor", "filt_fine.unw")


@pytest.fixture(scope="module")
def geometry_stack(tmp_path_factory: pytest.TempPathFactory) -> SimStack:
    """3 dates, 2 swaths x 2 bursts, -C geometry -c 2: every line through run_command.

    One of its three pairs (seed 9) gets a planted unwrapping error."""
    # large enough for the river to cut off a corner snaphu unwraps as its own component
    spec = small_spec(3, seed=9, length=60, width=80, unwrap_error_fraction=0.5)
    sim = prepare(tmp_path_factory.mktemp("geometry"), spec)
    stack_sentinel_subprocess(sim, "-C", "geometry", "-c", "2", "-n", "1 2")
    results = execute_subprocess(sim)
    assert len(results) == len(list(run_file_lines(sim.stack))) == 31
    assert all(r.returncode == 0 for r in results)
    return sim


def _band(path: Path, band: int) -> npt.NDArray[np.float64]:
    return np.asarray(read_isce_raster(path, band), dtype=np.float64)


def _pairs(sim: SimStack) -> list[tuple[str, str]]:
    dirs = sorted((sim.stack / "merged" / "interferograms").iterdir())
    return [(d.name[:8], d.name[9:]) for d in dirs]


def test_installed_scripts(geometry_stack: SimStack) -> None:
    for name in SCRIPTS:
        script = geometry_stack.bin / name
        assert script.stat().st_mode & 0o111
        assert script.read_text().startswith("#!/")


def test_every_raster_is_complete_and_every_vrt_opens(geometry_stack: SimStack) -> None:
    stack = geometry_stack.stack
    rasters = [
        Path(str(x)[: -len(".xml")]) for x in stack.rglob("*.xml") if (Path(str(x)[:-4])).is_file()
    ]
    assert len(rasters) > 90
    incomplete = [r for r in rasters if not is_complete(r)]
    assert incomplete == []
    vrts = sorted(stack.rglob("*.vrt"))
    for vrt in vrts:
        with rasterio.open(vrt) as ds:
            assert ds.read(1).shape == (ds.height, ds.width)
    spec = geometry_stack.spec
    with rasterio.open(stack / "merged" / "geom_reference" / "hgt.rdr.full.vrt") as ds:
        assert (ds.height, ds.width) == (spec.full_length, spec.full_width)
        full = ds.read(1)
    hgt = _band(stack / "merged" / "geom_reference" / "hgt.rdr", 1)
    np.testing.assert_allclose(full[:: spec.azimuth_looks, :: spec.range_looks], hgt)


def test_expected_products(geometry_stack: SimStack) -> None:
    stack, spec = geometry_stack.stack, geometry_stack.spec
    merged = stack / "merged"
    for layer in GEOMETRY:
        assert is_complete(merged / "geom_reference" / f"{layer}.rdr")
        assert (merged / "geom_reference" / f"{layer}.rdr.full.xml").is_file()
    for day in spec.dates:
        assert is_complete(merged / "SLC" / day / f"{day}.slc.full")
    pairs = _pairs(geometry_stack)
    assert len(pairs) == 3
    for d1, d2 in pairs:
        folder = merged / "interferograms" / f"{d1}_{d2}"
        for name in (*IFG_FILES, "filt_fine.unw.conncomp"):
            info = read_isce_info(folder / name)
            assert (info.length, info.width) == (spec.length, spec.width)
            assert is_complete(folder / name)
    for swath in (1, 2):
        assert (stack / "reference" / f"IW{swath}.xml").is_file()
        assert (stack / "stack" / f"IW{swath}.xml").is_file()
    assert not (stack / "reference" / "IW3.xml").exists()


def test_formats_match_the_real_isce2_sidecars(
    geometry_stack: SimStack, fixtures_dir: Path
) -> None:
    real_dir = fixtures_dir / "isce2_products" / "merged"
    ours = geometry_stack.stack / "merged"
    pair = "_".join(_pairs(geometry_stack)[0])
    checked = 0
    for real_xml in sorted(real_dir.rglob("*.xml")):
        if real_xml.name.endswith(".aux.xml"):
            continue
        rel = real_xml.relative_to(real_dir).as_posix().replace("20210401_20210413", pair)
        mine = ours / rel
        if not mine.exists():
            assert rel.endswith("fine.cor.full.xml"), (
                f"missing {rel}"
            )  # only written at 1 x 1 looks
            continue
        want = _props(real_xml)
        got = _props(mine)
        for key in ("data_type", "scheme", "number_bands"):
            assert got[key].upper() == want[key].upper(), (rel, key)
        checked += 1
    assert checked == 19


def _props(xml_path: Path) -> dict[str, str]:
    root = ET.parse(xml_path).getroot()
    return {p.get("name") or "": (p.findtext("value") or "") for p in root.findall("property")}


def _xml_shape(path: Path) -> set[tuple[object, ...]]:
    out: set[tuple[object, ...]] = set()

    def walk(element: ET.Element, prefix: str) -> None:
        for child in element:
            if child.tag not in ("property", "component"):
                continue
            key = f"{prefix}/{re.sub(r'[0-9]+$', 'N', child.get('name') or '')}"
            has_doc = child.tag == "property" and child.find("doc") is not None
            out.add(
                (key, child.tag, child.findtext("factorymodule"), child.findtext("factoryname"),
                 child.findtext("args"), has_doc)
            )  # fmt: skip
            walk(child, key)

    root = ET.parse(path).getroot()
    walk(root, root.tag)
    return out


def test_tops_product_xml_has_the_real_structure(
    geometry_stack: SimStack, fixtures_dir: Path
) -> None:
    real = fixtures_dir / "isce2_products" / "reference" / "IW1.xml"
    ours = geometry_stack.stack / "reference" / "IW1.xml"
    assert _xml_shape(ours) == _xml_shape(real)
    spec = geometry_stack.spec
    props: dict[str | None, str | None] = {}
    for prop in ET.parse(ours).getroot().iter("property"):  # first burst first
        props.setdefault(prop.get("name"), prop.findtext("value"))
    assert float(props["radarwavelength"] or 0) == spec.wavelength_m
    assert float(props["startingrange"] or 0) == spec.starting_range_m
    assert props["passdirection"] == "DESCENDING"
    day = spec.dates[0]
    assert props["sensingstart"] == f"{day[:4]}-{day[4:6]}-{day[6:]} 22:17:46.500000"


def test_snaphu_unwraps_the_filtered_interferogram(geometry_stack: SimStack) -> None:
    """The unwrapped phase is congruent with the filtered phase and, per connected
    component, equals the true phase up to whole cycles; the river separates the island."""
    spec = geometry_stack.spec
    truth = make_truth(spec)
    planted = 0
    for d1, d2 in _pairs(geometry_stack):
        folder = geometry_stack.stack / "merged" / "interferograms" / f"{d1}_{d2}"
        unw = _band(folder / "filt_fine.unw", 2)
        labels = read_isce_raster(folder / "filt_fine.unw.conncomp", 1)
        filt = np.asarray(read_isce_raster(folder / "filt_fine.int", 1), dtype=np.complex128)
        valid = labels > 0
        np.testing.assert_allclose(
            np.angle(np.exp(1j * (unw - np.angle(filt))))[valid], 0, atol=1e-3
        )
        mainland, island = _component_on(labels, ~truth.island), _component_on(labels, truth.island)
        assert mainland != island  # snaphu separates the land the river cuts off
        cycles = {}
        for name, label in (("mainland", mainland), ("island", island)):
            residual = (unw - signal_phase(truth, d1, d2))[labels == label]
            k = np.rint(np.median(residual) / (2 * np.pi))
            assert np.sqrt(np.mean((residual - 2 * np.pi * k) ** 2)) < 0.4, (d1, d2, name)
            cycles[name] = k
        jump = cycles["island"] - cycles["mainland"]
        assert jump == unwrapping_error_cycles(spec, d1, d2), (d1, d2)
        planted += jump != 0
        coh = read_isce_raster(folder / "filt_fine.cor", 1)
        assert coh[truth.coherent_mask].mean() > 0.4 and coh.min() >= 0 and coh.max() <= 1
    assert planted >= 1


def _component_on(labels: npt.NDArray[np.generic], where: npt.NDArray[np.bool_]) -> int:
    """The connected component covering most of ``where``."""
    ids, counts = np.unique(labels[where & (labels > 0)], return_counts=True)
    return int(ids[np.argmax(counts)])


def test_misregistration_estimators_measure_the_data(tmp_path: Path) -> None:
    # range: amplitude cross-correlation finds a 3-pixel shift
    rng = np.random.default_rng(0)
    amp = np.exp(rng.standard_normal((20, 64))).astype(np.complex64)
    assert _range_shift(amp, np.roll(amp, 3, axis=1)) == pytest.approx(3.0, abs=0.05)
    assert _range_shift(amp, amp) == 0.0
    # azimuth (ESD): phase / (2 pi x Doppler difference x line interval) of coherent pixels
    spec = small_spec(2)
    misreg = 0.002
    phase = 2 * np.pi * OVERLAP_DOPPLER_DIFFERENCE_HZ * spec.azimuth_time_interval_s * misreg
    from insarflow.simulator.steps import Stack
    from insarflow.tasks.isce_io import write_isce_raster

    overlap = tmp_path / "ESD" / f"{spec.dates[0]}_{spec.dates[1]}"
    dd = np.full((6, 10), np.exp(1j * phase), dtype=np.complex64)
    dd[:, :3] = 1.0  # incoherent pixels, left out
    coh = np.full((6, 10), 0.95, dtype=np.float32)
    coh[:, :3] = 0.1
    write_isce_raster(overlap / "IW1" / "overlap_01.int", dd, scheme="BIP")
    write_isce_raster(overlap / "IW1" / "overlap_01.cor", coh, scheme="BIP")
    out = tmp_path / "az.txt"
    estimate_azimuth_misreg(
        Stack(tmp_path, spec),
        {"overlap_dir": str(overlap), "out_azimuth": str(out), "coh_threshold": "0.85"},
    )
    lines = dict(line.split(" : ") for line in out.read_text().splitlines())
    assert float(lines["median"]) == pytest.approx(misreg, rel=1e-4)
    assert int(lines["mumber of coherent points"]) == 42


def test_baselines_and_truth_file(geometry_stack: SimStack) -> None:
    spec = geometry_stack.spec
    truth = make_truth(spec)
    ref = spec.reference
    for day in spec.dates[1:]:
        text = (
            geometry_stack.stack / "baselines" / f"{ref}_{day}" / f"{ref}_{day}.txt"
        ).read_text()
        assert text.splitlines()[0] == "swath: IW1"
        values = [
            float(line.split(":")[1]) for line in text.splitlines() if line.startswith("Bperp")
        ]
        assert values == [truth.bperp(day)] * 2
    with h5py.File(geometry_stack.stack / "simulator" / "truth.h5") as f:
        np.testing.assert_allclose(f["velocity"][()], truth.velocity, rtol=1e-6)
        assert f["mask"][()].sum() == truth.coherent_mask.sum()


def test_failed_step_names_the_missing_input(geometry_stack: SimStack, tmp_path: Path) -> None:
    # a copy of the finished stack loses one pair's filtered interferogram
    copy = tmp_path / "copy"
    shutil.copytree(geometry_stack.stack, copy / "stack", symlinks=True)
    for name in ("simulator",):
        assert (copy / "stack" / name).is_dir()
    d1, d2 = _pairs(geometry_stack)[0]
    config = copy / "stack" / "configs" / f"config_igram_unw_{d1}_{d2}"
    config.write_text(config.read_text().replace(str(geometry_stack.stack), str(copy / "stack")))
    (copy / "stack" / "merged" / "interferograms" / f"{d1}_{d2}" / "filt_fine.int").unlink()
    with pytest.raises(CommandError) as err:
        run_command(
            ["SentinelWrapper.py", "-c", str(config)],
            log_path=tmp_path / "log.txt",
            cwd=copy / "stack",
            extra_path=[geometry_stack.bin],
        )
    tail = err.value.result.log_tail
    assert f"{d1}_{d2}/filt_fine.int is missing or incomplete: run filter_coherence first" in tail


def test_same_seed_gives_byte_identical_products(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = small_spec(3)
    hashes = []
    for _ in range(2):
        shutil.rmtree(tmp_path / "run", ignore_errors=True)
        sim = prepare(tmp_path / "run", spec)
        assert stack_sentinel_in_process(sim, monkeypatch, "-C", "geometry", "-c", "2") == 0
        execute_in_process(sim, monkeypatch)
        hashes.append(tree_hashes(tmp_path / "run"))
    assert len(hashes[0]) > 200
    assert hashes[0] == hashes[1]


def test_nesd_and_ionosphere_workflows_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = small_spec(4, length=40, width=30)
    sim = prepare(tmp_path, spec)
    ion_param = tmp_path / "ion_param.txt"
    ion_param.write_text("do ionosphere correction: True\n")
    options = ["-C", "NESD", "-c", "1", "-O", "2", "--param_ion", str(ion_param)]
    assert stack_sentinel_in_process(sim, monkeypatch, *options) == 0
    assert len(list((sim.stack / "run_files").iterdir())) == 24
    execute_in_process(sim, monkeypatch)
    for day in spec.dates:
        # estimated from the data, which the simulator writes without misregistration
        for kind in ("azimuth", "range"):
            value = float((sim.stack / "misreg" / kind / "dates" / f"{day}.txt").read_text())
            assert value == pytest.approx(0.0, abs=1e-6)
        assert is_complete(sim.stack / "ion_dates" / f"{day}.ion")
    for d1, d2 in _pairs(sim):
        assert is_complete(sim.stack / "merged" / "interferograms" / f"{d1}_{d2}" / "filt_fine.unw")
        assert (sim.stack / "ESD" / f"{d1}_{d2}").is_dir()
    ion = sim.stack / "ion" / f"{spec.dates[0]}_{spec.dates[1]}"
    for name in ("lower/merged/fine_look.unw", "ion_cal/raw_no_projection.ion", "ion_cal/filt.ion"):
        assert is_complete(ion / name)


def test_bbox_in_wesn_order_fails_like_isce2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sim = prepare(tmp_path, small_spec(2))
    assert stack_sentinel_in_process(sim, monkeypatch, "-b", "116.5 117.95 34.0 34.6") == 1
    assert (
        "No acquisition forfills the temporal range and bbox requirement" in capsys.readouterr().err
    )
    assert not (sim.stack / "run_files").exists()


def test_bbox_missing_the_scene_fails_at_unpacking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sim = prepare(tmp_path, small_spec(2))
    # inside the SAFE footprint, so stackSentinel keeps the dates, but away from the scene
    assert (
        stack_sentinel_in_process(sim, monkeypatch, "-C", "geometry", "-b", "34.0 34.1 116.5 116.7")
        == 0
    )
    config = sim.stack / "configs" / "config_reference"
    assert "bbox : 34.0 34.1 116.5 116.7" in config.read_text()
    with monkeypatch.context() as m:
        m.chdir(sim.stack)
        assert run_script("SentinelWrapper.py", ["-c", str(config)]) == 1
    assert "does not overlap the synthetic scene" in capsys.readouterr().err
    assert not (sim.stack / "reference" / "IW1.xml").exists()
