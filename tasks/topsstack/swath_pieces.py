"""Run-file lines split by swath: one task per swath where ISCE2's own code loops over swaths.

stackSentinel writes one line per date or pair for steps whose ISCE2 function then loops over
the swaths, one after the other, on one core: ``Sentinel1_TOPS`` (the reference's and each
secondary's unpacking, over its ``swaths``), ``geo2rdr``, ``resamp_withCarrier`` and
``generateIgram`` (over the ``IW<n>`` folders ``s1a_isce_utils.getSwathList`` finds); ``topo``
(the reference's line, after its unpacking) likewise collects the bursts of every swath
``getSwathList`` finds for its process pool. Each pass of those loops reads and writes only
its own swath's files (``<dir>/IW<n>/`` and ``<dir>/IW<n>.xml``). A piece runs the line as
written through ``isce_swath.py`` in ISCE2's Python, which narrows the loop to one swath: the
pass that runs is the same code on the same paths, so the files are those the whole line
writes for that swath (the real-ISCE2 test compares them byte for byte; ISCE2's product
shelves, which pickle memory addresses, by their data: ``isce_io.product_digests``).

The dependency graph follows the swaths: a piece needs the same swath's piece of a split line
it needs (and the whole of any other line); a line that needs a split line needs all its pieces.
Every piece has its own completion marker; a line finished whole (before the split) counts as
done for each of its pieces.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from insarflow.tasks.topsstack.runfiles import RunLine
from insarflow.tasks.topsstack.steps import config_outputs

#: The launcher, run by ISCE2's Python.
SWATH_SCRIPT = Path(__file__).with_name("isce_swath.py")
#: Split steps -> their ISCE2 functions, each with whether its pass for a swath also writes
#: ``<dir>/IW<n>.xml`` beside ``<dir>/IW<n>/``.
SPLIT_STEPS: Mapping[str, Mapping[str, bool]] = {
    "unpack_topo_reference": {"Sentinel1_TOPS": True, "topo": False},
    "unpack_secondary_slc": {"Sentinel1_TOPS": True},
    "fullBurst_geo2rdr": {"geo2rdr": False},
    "fullBurst_resample": {"resamp_withCarrier": True},
    "generate_burst_igram": {"generateIgram": True},
}


def stack_swaths(lines: Sequence[RunLine]) -> tuple[int, ...]:
    """The swaths the stack's unpacking lines name (``Sentinel1_TOPS`` ``swaths``)."""
    for line in lines:
        for fn in line.functions:
            if fn.name == "Sentinel1_TOPS" and fn.params.get("swaths", "").strip():
                return tuple(sorted({int(s) for s in fn.params["swaths"].split()}))
    return ()


def _splits(line: RunLine) -> bool:
    """A ``SentinelWrapper.py`` line of a split step whose config calls only its functions."""
    functions = SPLIT_STEPS.get(line.step)
    return (
        functions is not None
        and line.config_path is not None
        and bool(line.functions)
        and all(fn.name in functions for fn in line.functions)
    )


def piece(line: RunLine, swath: int, of_swaths: int) -> RunLine:
    """The swath-``swath`` piece of ``line``."""
    writes_xml = SPLIT_STEPS[line.step]
    outputs: list[Path] = []
    for fn in line.functions:
        for out in config_outputs([fn]):
            outputs.append(out / f"IW{swath}")
            if writes_xml[fn.name]:
                outputs.append(out / f"IW{swath}.xml")
    return replace(
        line,
        key=f"{line.key}_IW{swath}",
        command=("python3", str(SWATH_SCRIPT), "--swath", str(swath), *line.command),
        outputs=tuple(dict.fromkeys(outputs)),
        swath=swath,
        whole=line,
        of_swaths=of_swaths,
    )


def split_by_swath(
    lines: Sequence[RunLine], dag: Mapping[str, frozenset[str]]
) -> tuple[list[RunLine], dict[str, frozenset[str]]]:
    """``lines`` with every line of :data:`SPLIT_STEPS` replaced by one piece per swath of the
    stack, and ``dag`` refined to the pieces (see the module doc). A stack of one swath is
    returned as it is."""
    swaths = stack_swaths(lines)
    if len(swaths) < 2:
        return list(lines), dict(dag)
    pieces = {
        line.line_id: {s: piece(line, s, len(swaths)) for s in swaths}
        for line in lines
        if _splits(line)
    }
    split: list[RunLine] = []
    refined: dict[str, frozenset[str]] = {}
    for line in lines:
        for one in pieces[line.line_id].values() if line.line_id in pieces else (line,):
            needs: set[str] = set()
            for up in dag[line.line_id]:
                if up not in pieces:
                    needs.add(up)
                elif one.swath is not None:
                    needs.add(pieces[up][one.swath].line_id)
                else:
                    needs.update(p.line_id for p in pieces[up].values())
            split.append(one)
            refined[one.line_id] = frozenset(needs)
    return split, refined
