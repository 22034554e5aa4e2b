"""Lines that can use more cores than one line slot gives: topo's bursts and snaphu's tiles.

Admission (:mod:`insarflow.engine`) may grant such a line several line slots, the free ones
no more urgent waiting line has a claim to (``engine.slots_to_offer``); the line then runs
with a command of its own for those cores and its memory reservation (:func:`launch`), while
it stays the run-file line for everything else (completion marker and its fingerprint, log,
retries):

* ``unpack_topo_reference``: topo runs the reference's bursts in ``numProcess`` processes
  (``topo.py``'s pool); the line's config gets ``numProcess`` = its cores (at most one per
  burst), which its completion marker ignores (:func:`without_processes`), and each process
  ``OMP_NUM_THREADS`` = its share of them. A swath piece of the line (its bursts of one swath)
  runs a copy of the config of its own, ``<config>_IW<n>``, since the pieces run at once.
* ``unwrap`` with snaphu: the pair is unwrapped in the tiles
  :func:`~insarflow.tasks.topsstack.snaphu_tiles.choose_tiling` picks for its size, the
  reservation and the cores, by ``isce_unwrap_tiles.py`` in ISCE2's Python. A pair no
  bigger than a tile, on one core with room for one piece, runs as written (ISCE2's own
  ``unwrap.py``).

Every other line runs as written on one slot, ``OMP_NUM_THREADS`` = the cores of that slot.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from insarflow import atomic
from insarflow.tasks.isce_io import ConfigFunction, read_isce_info
from insarflow.tasks.topsstack import snaphu_tiles
from insarflow.tasks.topsstack.runfiles import RunLine

TOPO_STEP = "unpack_topo_reference"
UNWRAP_STEP = "unwrap"
UNWRAP_SCRIPT = Path(__file__).with_name("isce_unwrap_tiles.py")
_PROCESSES = re.compile(rb"^numProcess\s*:.*$", re.MULTILINE)  # topo's processes, in its config
# Multilooked pixels of one burst at 1 x 1 looks after merging: an IW burst is about
# 1,500 lines x 21,000 samples (see tasks/topsstack/resources.py); used before the stage,
# when no interferogram exists yet to give the real size.
BURST_PIXELS = 1_500 * 21_000


@dataclass(frozen=True)
class Launch:
    """How a line runs on the cores and memory it was granted."""

    command: tuple[str, ...]
    note: str  # what was chosen, written into the line's log
    env: Mapping[str, str] = field(default_factory=dict)


def _function(line: RunLine, name: str) -> ConfigFunction | None:
    return next((fn for fn in line.functions if fn.name == name), None)


def _snaphu_unwrap(line: RunLine) -> Mapping[str, str] | None:
    """The ``unwrap`` parameters of a snaphu unwrapping line this module can tile, or None."""
    fn = _function(line, "unwrap") if line.step == UNWRAP_STEP else None
    if fn is None or fn.params.get("method", "snaphu") != "snaphu":
        return None
    if fn.params.get("rmfilter", "False") != "False":
        return None  # unwrap.py's filter removal is its own; such lines run as written
    return fn.params


def _pair_size(params: Mapping[str, str]) -> tuple[int, int] | None:
    """(length, width) of the pair's interferogram, or None before it exists."""
    try:
        info = read_isce_info(Path(params["ifg"]))
    except (KeyError, FileNotFoundError, ValueError):
        return None
    return info.length, info.width


def cores_wanted(line: RunLine, *, n_bursts: int, unwrap_in_tiles: bool) -> int:
    """The most cores ``line`` can use (1 for a line that runs on one core)."""
    if line.step == TOPO_STEP and _function(line, "topo") is not None:
        return max(1, math.ceil(n_bursts / line.of_swaths))  # a swath piece: its share
    params = _snaphu_unwrap(line) if unwrap_in_tiles else None
    if params is None:
        return 1
    size = _pair_size(params)
    if size is None:
        return 1
    length, width = size
    return max((rows * cols for rows, cols in snaphu_tiles.grids(length, width)), default=1)


def launch(line: RunLine, *, cores: int, memory_mb: int, unwrap_in_tiles: bool) -> Launch | None:
    """The command ``line`` runs with ``cores`` cores and ``memory_mb`` reserved; None: the
    line as written. ``unwrap_in_tiles``: snaphu lines may run in tiles (real ISCE2; the
    simulator unwraps in one piece). Raises ValueError when no way of running it fits
    ``memory_mb``."""
    if line.step == TOPO_STEP:
        return _topo_launch(line, cores=cores)
    params = _snaphu_unwrap(line) if unwrap_in_tiles else None
    if params is None:
        return None
    size = _pair_size(params)
    if size is None:
        return None  # ISCE2 then says what is missing
    length, width = size
    tiles = snaphu_tiles.choose_tiling(length, width, memory_mb=memory_mb, cores=cores)
    if tiles is None:
        return None
    one_piece = snaphu_tiles.one_piece_mb(length, width)
    return Launch(
        unwrap_command(params, tiles),
        f"snaphu in {tiles.describe()} for {length} x {width} pixels with {cores} core(s) and "
        f"{memory_mb} MB reserved (one piece: about {one_piece} MB on one core)",
    )


def unwrap_command(params: Mapping[str, str], tiles: snaphu_tiles.Tiling) -> tuple[str, ...]:
    """``isce_unwrap_tiles.py`` on the pair of an ``unwrap`` config's ``params`` in ``tiles``."""
    return (
        "python3",
        str(UNWRAP_SCRIPT),
        "--ifg",
        params["ifg"],
        "--coh",
        params["coh"],
        "--unw",
        params["unw"],
        "--rlks",
        params.get("rlks", "1"),
        "--alks",
        params.get("alks", "1"),
        "--tiles",
        str(tiles.rows),
        str(tiles.cols),
        "--overlap",
        str(tiles.overlap[0]),
        str(tiles.overlap[1]),
        "--nproc",
        str(tiles.nproc),
        *(["--nomcf"] if params.get("nomcf", "False") == "True" else []),
    )


def without_processes(config: bytes) -> bytes:
    """A config's bytes without its ``numProcess`` line, which changes how topo runs, not what
    it writes: the completion marker's fingerprint leaves it out, so a line re-launched with
    other cores stays done."""
    return _PROCESSES.sub(b"", config)


def _topo_launch(line: RunLine, *, cores: int) -> Launch | None:
    if line.config_path is None:
        return None
    config = Path(line.config_path)
    text = config.read_bytes()
    processes = cores  # topo.py's pool: one burst per process at a time
    changed, count = _PROCESSES.subn(f"numProcess : {processes}".encode(), text)
    if count != 1:
        return None
    command = line.command
    if line.swath is not None:
        config = config.with_name(f"{config.name}_IW{line.swath}")
        atomic.write_bytes(config, changed)
        at = next(i for i, arg in enumerate(command) if arg in ("-c", "--config")) + 1
        command = (*command[:at], str(config), *command[at + 1 :])
    elif changed != text:
        atomic.write_bytes(config, changed)
    threads = max(1, cores // processes)
    return Launch(
        command,
        f"topo in {processes} processes ({threads} OpenMP thread(s) each) on {cores} cores "
        f"(numProcess in {config.name})",
        env={"OMP_NUM_THREADS": str(threads)},
    )


def smallest_piece_mb(
    line: RunLine, estimate_mb: int, *, n_bursts: int, looks: int, unwrap_in_tiles: bool
) -> int:
    """The least memory ``line`` can run in: its estimate, or for a snaphu line that may run in
    tiles the finest tiles of its pair (its size from the interferogram when it exists, else
    from the bursts and looks)."""
    params = _snaphu_unwrap(line) if unwrap_in_tiles else None
    if params is None:
        return estimate_mb
    size = _pair_size(params)
    if size is None:
        side = math.isqrt(max(1, n_bursts * BURST_PIXELS // max(1, looks)))
        size = (side, side)
    return min(estimate_mb, snaphu_tiles.smallest_mb(*size))
