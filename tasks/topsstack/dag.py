"""True dependencies between topsStack run-file lines.

``stackSentinel.py``'s run files are barriers: every line of ``run_10`` waits for
every line of ``run_09``. The real data flow is finer: a pair can be unwrapped while
other dates still resample. :func:`build_dag` asks each line's step in the registry
(:attr:`insarflow.tasks.topsstack.steps.Step.needs`, by step *name*: ``-C geometry``
renumbers the steps) which lines it reads the outputs of.

A needed line that is absent from the run files is taken as already done: in update
mode stackSentinel leaves out ``unpack_topo_reference`` and ``extract_burst_overlaps``
and only re-processes the newest dates.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from heapq import heapify, heappop, heappush

from insarflow.tasks.topsstack import steps
from insarflow.tasks.topsstack.runfiles import RunLine

Dag = Mapping[str, frozenset[str]]


class DagError(ValueError):
    """A dependency graph with a cycle or an edge to an unknown line."""


def build_dag(lines: Sequence[RunLine]) -> dict[str, frozenset[str]]:
    """Map each line id to the ids of the lines it needs (its step's ``needs``)."""
    ix = steps.LineIndex(lines)
    dag: dict[str, frozenset[str]] = {}
    for line in lines:
        if line.line_id in dag:
            raise DagError(f"line id {line.line_id!r} appears twice; parse the run files again")
        needs = steps.get(line.step).needs(line, ix)
        dag[line.line_id] = frozenset(needs - {line.line_id})
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
