"""Lines on more than one core: snaphu's tiles chosen per pair, topo's processes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from insarflow.tasks.isce_io import ConfigFunction, write_isce_raster
from insarflow.tasks.topsstack import multicore, snaphu_tiles
from insarflow.tasks.topsstack.executor import line_fingerprint
from insarflow.tasks.topsstack.runfiles import RunLine

PAIR = (1104, 5045)  # the real-ISCE2 benchmark pair: 2 swaths x 2 bursts at 3 x 9 looks


# --------------------------------------------------------------------------- tiles


def test_a_pair_no_bigger_than_a_tile_on_one_core_is_the_line_as_written() -> None:
    small = (473, 1201)  # the real-ISCE2 test's pairs: 0.57 Mpx
    need = snaphu_tiles.one_piece_mb(*small)
    assert snaphu_tiles.choose_tiling(*small, memory_mb=need, cores=1) is None
    two = snaphu_tiles.choose_tiling(*small, memory_mb=need * 2, cores=2)
    assert two is not None and two.nproc == 2  # a second core: two tiles at once
    tight = snaphu_tiles.choose_tiling(*small, memory_mb=need - 1, cores=1)
    assert tight is not None and tight.memory_mb < need  # no room for one piece: tiles


@pytest.mark.parametrize("cores", [1, 2, 4])
@pytest.mark.parametrize("memory_mb", [1200, 1600, 2000, 3000, 8000])
def test_tiles_fit_the_reservation_use_the_cores_and_stay_small(memory_mb: int, cores: int) -> None:
    tiles = snaphu_tiles.choose_tiling(*PAIR, memory_mb=memory_mb, cores=cores)
    assert tiles is not None  # 5.6 Mpx: tiles are faster even on one core
    assert tiles.memory_mb <= memory_mb
    assert tiles.tile_pixels <= snaphu_tiles.TARGET_TILE_PX
    if memory_mb >= 2000:  # room for a tile per core
        assert tiles.nproc == cores and tiles.rows * tiles.cols >= cores
    # fewest tiles: no coarser grid of small enough tiles fits with as many at a time
    coarser = [
        t
        for rows, cols in snaphu_tiles.grids(*PAIR)
        if rows * cols < tiles.rows * tiles.cols
        and (t := snaphu_tiles.tiling(*PAIR, rows, cols, tiles.nproc)).memory_mb <= memory_mb
        and t.tile_pixels <= snaphu_tiles.TARGET_TILE_PX
    ]
    assert not coarser, (tiles, coarser)


def test_below_one_piece_tiles_need_less_the_finer_they_are() -> None:
    one_piece = snaphu_tiles.one_piece_mb(*PAIR)
    tiles = snaphu_tiles.choose_tiling(*PAIR, memory_mb=one_piece // 2, cores=1)
    assert tiles is not None and tiles.nproc == 1 and tiles.memory_mb <= one_piece // 2
    coarse = snaphu_tiles.tiling(*PAIR, 1, 2, 1).memory_mb
    fine = snaphu_tiles.tiling(*PAIR, 4, 8, 1).memory_mb
    assert fine < coarse < one_piece


def test_a_budget_below_the_finest_tiles_is_refused_with_the_numbers() -> None:
    smallest = snaphu_tiles.smallest_mb(*PAIR)
    with pytest.raises(ValueError) as info:
        snaphu_tiles.choose_tiling(*PAIR, memory_mb=smallest - 1, cores=2)
    message = str(info.value)
    assert f"{PAIR[0]} x {PAIR[1]} pixels" in message
    assert f"at least {smallest} MB" in message and f"but {smallest - 1} MB" in message
    assert snaphu_tiles.choose_tiling(*PAIR, memory_mb=smallest, cores=1) is not None


def test_tiles_keep_a_least_size_and_overlap() -> None:
    for rows, cols in snaphu_tiles.grids(*PAIR):
        t = snaphu_tiles.tiling(*PAIR, rows, cols, 1)
        assert rows == 1 or PAIR[0] / rows >= snaphu_tiles.MIN_TILE_PX
        assert cols == 1 or PAIR[1] / cols >= snaphu_tiles.MIN_TILE_PX
        assert (t.overlap[0] >= snaphu_tiles.MIN_OVERLAP_PX) == (rows > 1)
        assert (t.overlap[1] >= snaphu_tiles.MIN_OVERLAP_PX) == (cols > 1)


# --------------------------------------------------------------------------- launches


def _unwrap_line(tmp_path: Path, **params: str) -> RunLine:
    pair = tmp_path / "merged" / "interferograms" / "20210401_20210413"
    pair.mkdir(parents=True)
    ifg = pair / "filt_fine.int"
    write_isce_raster(ifg, np.ones((600, 900), np.complex64))
    values = {
        "ifg": str(ifg),
        "unw": str(pair / "filt_fine.unw"),
        "coh": str(pair / "filt_fine.cor"),
        "nomcf": "False",
        "rlks": "9",
        "alks": "3",
        "rmfilter": "False",
        "method": "snaphu",
        **params,
    }
    config = tmp_path / "configs" / "config_igram_unw_20210401_20210413"
    return RunLine(
        step_number=11,
        step="unwrap",
        key="20210401_20210413",
        key_kind="pair",
        command=("SentinelWrapper.py", "-c", str(config)),
        run_file=tmp_path / "run_files" / "run_11_unwrap",
        config_path=config,
        functions=(ConfigFunction(1, "unwrap", values),),
        outputs=(),
    )


def test_an_unwrap_line_on_two_cores_runs_the_tile_script_with_its_pair(tmp_path: Path) -> None:
    line = _unwrap_line(tmp_path)
    assert multicore.cores_wanted(line, n_bursts=4, unwrap_in_tiles=True) > 1
    how = multicore.launch(line, cores=2, memory_mb=4000, unwrap_in_tiles=True)
    assert how is not None
    params = line.functions[0].params
    assert how.command[:2] == ("python3", str(multicore.UNWRAP_SCRIPT))
    args = how.command[2:]
    for flag, value in (("--ifg", "ifg"), ("--unw", "unw"), ("--coh", "coh")):
        assert args[args.index(flag) + 1] == params[value]
    assert args[args.index("--nproc") + 1] == "2" and "--nomcf" not in args
    rows, cols = int(args[args.index("--tiles") + 1]), int(args[args.index("--tiles") + 2])
    assert rows * cols >= 2
    assert "600 x 900 pixels with 2 core(s) and 4000 MB reserved" in how.note
    # one core and room for one piece of a pair this small: ISCE2's own unwrap.py
    assert multicore.launch(line, cores=1, memory_mb=4000, unwrap_in_tiles=True) is None


@pytest.mark.parametrize(
    "params", [{"method": "icu"}, {"rmfilter": "True"}], ids=["icu", "filter removal"]
)
def test_unwrap_lines_the_script_cannot_do_run_as_written(
    tmp_path: Path, params: dict[str, str]
) -> None:
    line = _unwrap_line(tmp_path, **params)
    assert multicore.cores_wanted(line, n_bursts=4, unwrap_in_tiles=True) == 1
    assert multicore.launch(line, cores=2, memory_mb=100, unwrap_in_tiles=True) is None


def test_the_simulator_unwraps_in_one_piece(tmp_path: Path) -> None:
    line = _unwrap_line(tmp_path)
    assert multicore.cores_wanted(line, n_bursts=4, unwrap_in_tiles=False) == 1
    assert multicore.launch(line, cores=2, memory_mb=100, unwrap_in_tiles=False) is None


def _topo_line(
    config: Path, functions: tuple[ConfigFunction, ...], outputs: tuple[Path, ...]
) -> RunLine:
    """The reference's unpack-and-topo line of ``config``."""
    return RunLine(
        step_number=1,
        step="unpack_topo_reference",
        key="reference",
        key_kind="reference",
        command=("SentinelWrapper.py", "-c", str(config)),
        run_file=config.parent / "run_01_unpack_topo_reference",
        config_path=config,
        functions=functions,
        outputs=outputs,
    )


def test_topo_gets_its_cores_as_processes_and_stays_done(tmp_path: Path) -> None:
    config = tmp_path / "config_reference"
    config.write_text(
        "[Function-2]\ntopo : \nreference : /r\ndem : /d\ngeom_referenceDir : /g\n"
        "numProcess : 1\n##########################\n"
    )
    line = _topo_line(config, (ConfigFunction(2, "topo", {"numProcess": "1"}),), ())
    fingerprint = line_fingerprint(line)
    assert multicore.cores_wanted(line, n_bursts=4, unwrap_in_tiles=False) == 4
    how = multicore.launch(line, cores=2, memory_mb=2000, unwrap_in_tiles=False)
    assert how is not None and how.command == line.command
    assert "numProcess : 2\n" in config.read_text()
    assert how.env == {"OMP_NUM_THREADS": "1"}
    # the marker of a topo line that ran with other processes still matches
    assert line_fingerprint(line) == fingerprint
    multicore.launch(line, cores=1, memory_mb=2000, unwrap_in_tiles=False)
    assert "numProcess : 1\n" in config.read_text() and line_fingerprint(line) == fingerprint


def test_the_smallest_piece_of_a_snaphu_line_is_its_finest_tiles(tmp_path: Path) -> None:
    line = _unwrap_line(tmp_path)
    tiles = multicore.smallest_piece_mb(line, 5000, n_bursts=4, looks=27, unwrap_in_tiles=True)
    assert tiles == snaphu_tiles.smallest_mb(600, 900) < 5000
    whole = multicore.smallest_piece_mb(line, 5000, n_bursts=4, looks=27, unwrap_in_tiles=False)
    assert whole == 5000  # the simulator's unwrap runs whole


def test_admission_grants_free_slots_to_a_line_that_asks() -> None:
    from insarflow.engine import Admission
    from insarflow.tasks.topsstack.executor import Submission

    def sub(name: str) -> Submission:
        line = RunLine(11, "unwrap", name, "pair", ("x",), Path("r"), None, (), ())
        return Submission(line, 1, 100, "cpu", 0, False)

    admission = Admission(memory_mb=10_000, slots=3)
    wide = admission.try_admit(sub("a"), slots=5)
    assert wide is not None and wide.slots == 3 and admission.free_slots == 0
    assert admission.try_admit(sub("b")) is None  # every slot is held
    admission.release(wide)
    assert admission.free_slots == 3
    one = admission.try_admit(sub("b"))
    assert one is not None and one.slots == 1
    assert admission.try_admit(sub("c"), slots=5).slots == 2  # type: ignore[union-attr]


def test_a_topo_marker_written_before_processes_were_ignored_still_counts(
    tmp_path: Path,
) -> None:
    """Markers of earlier versions hashed the whole config, numProcess included: a finished
    stack stays finished (topo re-run would force every line after it)."""
    from insarflow.tasks.topsstack.executor import is_line_done, marker_path

    config = tmp_path / "configs" / "config_reference"
    config.parent.mkdir()
    config.write_text("[Function-2]\ntopo : \nnumProcess : 1\n")
    output = tmp_path / "geom_reference" / "IW1" / "hgt.rdr"
    output.parent.mkdir(parents=True)
    output.write_text("h")
    line = RunLine(
        1,
        "unpack_topo_reference",
        "reference",
        "reference",
        ("SentinelWrapper.py", "-c", str(config)),
        tmp_path / "run_files" / "run_01_unpack_topo_reference",
        config,
        (ConfigFunction(2, "topo", {"numProcess": "1"}),),
        (output,),
    )
    marker = marker_path(line, tmp_path)
    marker.parent.mkdir(parents=True)
    legacy = line_fingerprint(line, with_processes=True)
    assert legacy != line_fingerprint(line)
    marker.write_text(f'{{"fingerprint": "{legacy}"}}')
    assert is_line_done(line, tmp_path)
    config.write_text("[Function-2]\ntopo : \nnumProcess : 1\ndem : /other\n")
    assert not is_line_done(line, tmp_path)  # a changed config is still a changed line


def test_slots_offered_to_a_line_that_can_use_more_cores() -> None:
    from insarflow.engine import slots_to_offer
    from insarflow.tasks.topsstack.executor import Submission

    def sub(step: str, key: str, priority: int) -> Submission:
        line = RunLine(1, step, key, "date", ("x",), Path("r"), None, (), ())
        return Submission(line, 1, 100, "cpu", priority, False)

    topo = sub("unpack_topo_reference", "reference", 9)
    unpack = sub("unpack_secondary_slc", "20210413", 9)  # as long a chain, one core
    longer = sub("fullBurst_geo2rdr", "20210425", 10)
    unwrap_a, unwrap_b = sub("unwrap", "a_b", 0), sub("unwrap", "a_c", 0)
    wanted = {s.line.line_id: 1 for s in (unpack, longer)}
    wanted |= {topo.line.line_id: 4, unwrap_a.line.line_id: 2, unwrap_b.line.line_id: 2}
    # topo goes before the unpacking of a secondary date: it takes both free slots
    assert slots_to_offer(topo, [topo, unpack], wanted, 2) == 2
    # ... but leaves one to a line of a longer chain
    assert slots_to_offer(topo, [longer, topo, unpack], wanted, 2) == 1
    # two pairs that can both use more cores share; the last one alone takes them all
    assert slots_to_offer(unwrap_a, [unwrap_a, unwrap_b], wanted, 2) == 1
    assert slots_to_offer(unwrap_b, [unwrap_b], wanted, 2) == 2
    # never more than it can use, never none, and a single-core line gets one
    assert slots_to_offer(topo, [topo], wanted, 16) == 4
    assert slots_to_offer(topo, [topo, longer], wanted, 1) == 1
    assert slots_to_offer(unpack, [unpack], wanted, 8) == 1


def test_a_topo_piece_runs_its_own_config_with_its_share_of_the_cores(tmp_path: Path) -> None:
    from insarflow.tasks.topsstack.swath_pieces import piece

    config = tmp_path / "config_reference"
    original = (
        "[Function-1]\nSentinel1_TOPS : \nswaths : 1 2\noutdir : /s/reference\n"
        "[Function-2]\ntopo : \nreference : /s/reference\ndem : /d\n"
        "geom_referenceDir : /s/geom_reference\nnumProcess : 1\n"
    )
    config.write_text(original)
    line = _topo_line(
        config,
        (
            ConfigFunction(1, "Sentinel1_TOPS", {"swaths": "1 2", "outdir": "/s/reference"}),
            ConfigFunction(2, "topo", {"geom_referenceDir": "/s/geom_reference"}),
        ),
        (Path("/s/reference"), Path("/s/geom_reference")),
    )
    iw2 = piece(line, 2, 2)
    assert multicore.cores_wanted(iw2, n_bursts=6, unwrap_in_tiles=False) == 3  # its 3 bursts
    how = multicore.launch(iw2, cores=3, memory_mb=2000, unwrap_in_tiles=False)
    own = tmp_path / "config_reference_IW2"
    assert how is not None and how.command == (*iw2.command[:-1], str(own))
    assert "numProcess : 3\n" in own.read_text()
    assert config.read_text() == original  # the other piece may be reading it
