"""True dependencies between topsStack run-file lines.

``stackSentinel.py``'s run files are barriers: every line of ``run_10`` waits for
every line of ``run_09``. The real data flow is finer: a pair can be unwrapped while
other dates still resample. :func:`build_dag` derives, for each line, the lines
whose outputs it reads, by step *name* (``-C geometry`` renumbers the steps):

================================  =======  ============================================
step                              per      needs
================================  =======  ============================================
unpack_topo_reference             ref      —
unpack_secondary_slc              date D   —
average_baseline                  date D   unpack_topo_reference, unpack_secondary_slc[D]
extract_burst_overlaps            all      unpack_topo_reference
overlap_geo2rdr                   date D   extract_burst_overlaps, unpack_secondary_slc[D]
overlap_resample                  date D   overlap_geo2rdr[D]
pairs_misreg                      pair     overlap_resample of both dates (reference date:
                                           extract_burst_overlaps)
timeseries_misreg                 all (2)  every pairs_misreg
fullBurst_geo2rdr                 date D   unpack_topo_reference, unpack_secondary_slc[D],
                                           both timeseries_misreg lines (NESD)
fullBurst_resample                date D   fullBurst_geo2rdr[D]
extract_stack_valid_region        all      unpack_topo_reference, every fullBurst_resample
merge_reference_secondary_slc     date     extract_stack_valid_region
merge_reference_secondary_slc     layer    unpack_topo_reference, extract_stack_valid_region
generate_burst_igram              pair     fullBurst_resample of both dates (reference
                                           date: unpack_topo_reference)
merge_burst_igram                 pair     generate_burst_igram[P], extract_stack_valid_region
filter_coherence                  pair     merge_burst_igram[P], merge of both dates
unwrap                            pair     filter_coherence[P]
subband_and_resamp                date D   fullBurst_resample[D] (reference date:
                                           unpack_topo_reference)
generateIgram_ion                 pair     subband_and_resamp of both dates
mergeBurstsIon                    pair     generateIgram_ion[P], extract_stack_valid_region
unwrap_ion                        pair     mergeBurstsIon[P]
look_ion                          pair     unwrap_ion[P]
computeIon                        pair     look_ion[P]; per-swath lines (``P_IWn``) the same,
                                           and the swath merge (``P``) needs them all
filtIon                           pair     computeIon[P]
invertIon                         all      every filtIon, merge of the hgt layer
================================  =======  ============================================

A needed line that is absent from the run files is taken as already done: in update
mode stackSentinel leaves out ``unpack_topo_reference`` and ``extract_burst_overlaps``
and only re-processes the newest dates.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from heapq import heapify, heappop, heappush

from insarflow.tasks.topsstack.runfiles import RunLine

Dag = Mapping[str, frozenset[str]]


class DagError(ValueError):
    """A dependency graph with a cycle or an edge to an unknown line."""


class _Index:
    """Look up line ids by (step, key)."""

    def __init__(self, lines: Sequence[RunLine]) -> None:
        self._by_step: dict[str, dict[str, str]] = defaultdict(dict)
        for line in lines:
            self._by_step[line.step][line.key] = line.line_id
        self.reference_date = _reference_date(lines)

    def one(self, step: str, key: str) -> set[str]:
        """The id of (step, key) as a set, empty when that line is not in this stack."""
        found = self._by_step.get(step, {}).get(key)
        return {found} if found else set()

    def every(self, step: str) -> set[str]:
        return set(self._by_step.get(step, {}).values())

    def keys(self, step: str) -> Iterable[str]:
        return self._by_step.get(step, {}).keys()

    def reference_bursts(self) -> set[str]:
        return self.one("unpack_topo_reference", "reference")

    def coregistered(self, date: str) -> set[str]:
        """The line that leaves ``date``'s bursts coregistered on the reference grid."""
        resampled = self.one("fullBurst_resample", date)
        if resampled:
            return resampled
        if date == self.reference_date:
            return self.reference_bursts()
        return set()  # coregistered in an earlier run (update mode)

    def overlaps(self, date: str) -> set[str]:
        """The line that leaves ``date``'s burst overlaps on the reference grid."""
        resampled = self.one("overlap_resample", date)
        if resampled:
            return resampled
        if date == self.reference_date:
            return self.one("extract_burst_overlaps", "all") or self.reference_bursts()
        return set()


def _reference_date(lines: Sequence[RunLine]) -> str | None:
    """The stack's reference date: merged, subbanded or paired but never a secondary."""
    secondaries = {ln.key for ln in lines if ln.step == "unpack_secondary_slc"}
    candidates = {
        ln.key
        for ln in lines
        if ln.key_kind == "date"
        and ln.step in ("merge_reference_secondary_slc", "subband_and_resamp")
        and ln.key not in secondaries
    }
    if len(candidates) == 1:
        return candidates.pop()
    # Fall back on baselines/<reference>_<secondary>/ written by average_baseline.
    for ln in lines:
        if ln.step == "average_baseline":
            for fn in ln.functions:
                name = fn.params.get("baseline_file", "")
                stem = name.rsplit("/", 1)[-1].split(".")[0]
                parts = stem.split("_")
                if len(parts) == 2 and parts[1] == ln.key:
                    return parts[0]
    return None


def _pair_dates(key: str) -> tuple[str, str]:
    first, second = key.split("_")[:2]
    return first, second


def _needs(line: RunLine, ix: _Index) -> set[str]:
    """Upstream line ids of ``line``."""
    step, key = line.step, line.key
    match step:
        case "unpack_topo_reference" | "unpack_secondary_slc":
            return set()
        case "average_baseline":
            return ix.reference_bursts() | ix.one("unpack_secondary_slc", key)
        case "extract_burst_overlaps":
            return ix.reference_bursts()
        case "overlap_geo2rdr":
            return ix.one("extract_burst_overlaps", "all") | ix.one("unpack_secondary_slc", key)
        case "overlap_resample":
            return ix.one("overlap_geo2rdr", key)
        case "pairs_misreg":
            d1, d2 = _pair_dates(key)
            return ix.overlaps(d1) | ix.overlaps(d2)
        case "timeseries_misreg":
            return ix.every("pairs_misreg")
        case "fullBurst_geo2rdr":
            return (
                ix.reference_bursts()
                | ix.one("unpack_secondary_slc", key)
                | ix.every("timeseries_misreg")
            )
        case "fullBurst_resample":
            return ix.one("fullBurst_geo2rdr", key)
        case "extract_stack_valid_region":
            return ix.reference_bursts() | ix.every("fullBurst_resample")
        case "merge_reference_secondary_slc":
            valid = ix.one("extract_stack_valid_region", "all")
            if line.key_kind == "layer":
                return ix.reference_bursts() | valid
            return valid | ix.coregistered(key)
        case "generate_burst_igram":
            d1, d2 = _pair_dates(key)
            return ix.coregistered(d1) | ix.coregistered(d2)
        case "merge_burst_igram":
            return ix.one("generate_burst_igram", key) | ix.one("extract_stack_valid_region", "all")
        case "filter_coherence":
            d1, d2 = _pair_dates(key)
            merged = ix.one("merge_reference_secondary_slc", d1)
            merged |= ix.one("merge_reference_secondary_slc", d2)
            return ix.one("merge_burst_igram", key) | merged
        case "unwrap":
            return ix.one("filter_coherence", key)
        case "subband_and_resamp":
            return ix.coregistered(key)
        case "generateIgram_ion":
            d1, d2 = _pair_dates(key)
            return ix.one("subband_and_resamp", d1) | ix.one("subband_and_resamp", d2)
        case "mergeBurstsIon":
            return ix.one("generateIgram_ion", key) | ix.one("extract_stack_valid_region", "all")
        case "unwrap_ion":
            return ix.one("mergeBurstsIon", key)
        case "look_ion":
            return ix.one("unwrap_ion", key)
        case "computeIon":
            pair = "_".join(_pair_dates(key))
            if key != pair:  # one swath of a pair whose swaths differ in starting range
                return ix.one("look_ion", pair)
            swaths = {
                ix.one("computeIon", k).pop()
                for k in ix.keys("computeIon")
                if k.startswith(pair + "_IW")
            }
            return swaths or ix.one("look_ion", pair)
        case "filtIon":
            return ix.one("computeIon", key)
        case "invertIon":
            return ix.every("filtIon") | ix.one("merge_reference_secondary_slc", "hgt")
    raise DagError(f"no dependency rule for step {step!r} ({line.line_id}); this is a bug")


def build_dag(lines: Sequence[RunLine]) -> dict[str, frozenset[str]]:
    """Map each line id to the ids of the lines it needs (see the module table)."""
    ix = _Index(lines)
    dag: dict[str, frozenset[str]] = {}
    for line in lines:
        if line.line_id in dag:
            raise DagError(f"line id {line.line_id!r} appears twice; parse the run files again")
        dag[line.line_id] = frozenset(_needs(line, ix) - {line.line_id})
    validate_dag(dag)
    return dag


def validate_dag(dag: Dag) -> None:
    """Raise :class:`DagError` on an edge to an unknown id or on a cycle."""
    for node, upstream in dag.items():
        unknown = sorted(set(upstream) - dag.keys())
        if unknown:
            raise DagError(
                f"{node!r} depends on unknown line(s) {', '.join(map(repr, unknown))}; "
                "every upstream id must be a key of the graph"
            )
    topological_order(dag)


def topological_order(dag: Dag) -> list[str]:
    """Ids ordered so that every line comes after all it needs (ties by id)."""
    downstream: dict[str, list[str]] = defaultdict(list)
    missing: dict[str, int] = {}
    for node, upstream in dag.items():
        for up in upstream:
            if up not in dag:
                raise DagError(
                    f"{node!r} depends on unknown line {up!r}; every upstream id must be "
                    "a key of the graph"
                )
            downstream[up].append(node)
        missing[node] = len(upstream)
    ready = [node for node, count in missing.items() if count == 0]
    heapify(ready)
    order: list[str] = []
    while ready:
        node = heappop(ready)
        order.append(node)
        for nxt in downstream[node]:
            missing[nxt] -= 1
            if missing[nxt] == 0:
                heappush(ready, nxt)
    if len(order) != len(dag):
        stuck = sorted(node for node, count in missing.items() if count > 0)
        raise DagError(
            f"dependency cycle among {len(stuck)} line(s): {', '.join(stuck[:6])}"
            f"{' ...' if len(stuck) > 6 else ''}; the graph must be acyclic"
        )
    return order


def ancestors(dag: Dag, node: str) -> set[str]:
    """Every line ``node`` needs, directly or not."""
    seen: set[str] = set()
    todo = list(dag[node])
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(dag[current])
    return seen


def descendants(dag: Dag, node: str) -> set[str]:
    """Every line that needs ``node``, directly or not (what a failure of it blocks)."""
    downstream: dict[str, set[str]] = defaultdict(set)
    for child, upstream in dag.items():
        for up in upstream:
            downstream[up].add(child)
    seen: set[str] = set()
    todo = list(downstream[node])
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(downstream[current])
    return seen


def critical_path(dag: Dag, durations: Mapping[str, float]) -> tuple[list[str], float]:
    """The longest chain of needs by summed duration, and that sum.

    With unlimited workers the graph cannot finish sooner than this sum.
    """
    order = topological_order(dag)
    missing = [node for node in order if node not in durations]
    if missing:
        raise DagError(
            f"no duration for {len(missing)} line(s): {', '.join(missing[:6])}"
            f"{' ...' if len(missing) > 6 else ''}; give a duration for every line id"
        )
    negative = [node for node in order if durations[node] < 0]
    if negative:
        raise DagError(f"negative duration for {', '.join(negative[:6])}; durations are >= 0")
    finish: dict[str, float] = {}
    via: dict[str, str | None] = {}
    for node in order:
        best: str | None = None
        for up in sorted(dag[node]):
            if best is None or finish[up] > finish[best]:
                best = up
        finish[node] = durations[node] + (finish[best] if best is not None else 0.0)
        via[node] = best
    if not order:
        return [], 0.0
    end = max(order, key=lambda n: (finish[n], n))
    path: list[str] = []
    cursor: str | None = end
    while cursor is not None:
        path.append(cursor)
        cursor = via[cursor]
    return path[::-1], finish[end]
