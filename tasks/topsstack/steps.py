"""Everything insarflow knows about each ISCE2 topsStack step, in one registry.

One :class:`Step` per run-file step, in the order stackSentinel.py writes them
(interferogram workflow, NESD, ionosphere). The run-file parser, the dependency graph,
the resource estimates, the plan and the simulator's stackSentinel all read
:data:`STEPS`; a new step is one :func:`register` call (or one entry below). Only the
simulator then needs code of its own to stand in for it: a writer in
``insarflow.simulator.stack_sentinel.WRITERS`` (a test checks that every step has one).

Per step:

* ``config_prefixes`` / ``key_kinds``: ``SentinelWrapper.py -c configs/config_<prefix>_<key>``
  lines and the kinds of key their names carry; ``scripts``: direct script calls, each
  with how to read its key and its outputs from its arguments.
* ``needs``: the lines it reads the outputs of (see :mod:`insarflow.tasks.topsstack.dag`).
* ``memory`` (and ``memory_by_kind``): the memory model, ``base + n_bursts * (full +
  looked * 27 / (range_looks * azimuth_looks))`` MB (see
  :mod:`insarflow.tasks.topsstack.resources` for the anchors).
* ``resource_class``: ``gpu`` (topo/geo2rdr: on the GPU with ``--useGPU``, else ``cpu``),
  ``memory-heavy`` or ``cpu``.
* ``output_check``: what makes outputs that exist unusable downstream (the baseline
  file of ``average_baseline``).
* ``workflow`` and ``lines``: when stackSentinel writes the step (always, NESD
  coregistration only, ``--param_ion`` only) and how many lines it has.

What a ``SentinelWrapper.py`` line must have produced comes from its config's functions
(:data:`FUNCTION_OUTPUTS`, shared by steps that call the same ISCE2 function: a step
calling a function not listed there adds it); a script line's from its arguments
(:attr:`Script.outputs`).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from insarflow.constants import GEOMETRY_LAYERS
from insarflow.tasks.isce_io import baseline_values, is_finite_number

if TYPE_CHECKING:
    from insarflow.tasks.isce_io import ConfigFunction
    from insarflow.tasks.topsstack.runfiles import RunLine

KeyKind = Literal["reference", "date", "pair", "layer", "all"]
ResourceClass = Literal["gpu", "memory-heavy", "cpu"]
Workflow = Literal["always", "NESD", "ion"]

WRAPPER = "SentinelWrapper.py"


class StepError(ValueError):
    """A run-file line that its step's registry entry cannot interpret."""


@dataclass(frozen=True)
class StackCounts:
    """The numbers a step's line count depends on."""

    dates: int
    pairs: int  # interferogram pairs (connections)
    misreg_pairs: int  # NESD / ionosphere pairs (num_overlap_connections)


@dataclass(frozen=True)
class Memory:
    """Peak MB of one line: ``base + n_bursts * (full + looked * 27 / looks)``."""

    base_mb: int
    full_mb_per_burst: int
    looked_mb_per_burst: int


@dataclass(frozen=True)
class Script:
    """A direct script call in a run file (no config file)."""

    name: str
    key: Callable[[Sequence[str], str], tuple[str, KeyKind]]  # (command, where) -> key, kind
    outputs: Callable[[Sequence[str]], list[Path]]


@dataclass(frozen=True)
class Step:
    """One topsStack run-file step (see the module doc)."""

    name: str
    needs: Callable[[RunLine, LineIndex], set[str]]
    memory: Memory
    lines: Callable[[StackCounts], int]
    config_prefixes: tuple[str, ...] = ()
    key_kinds: tuple[KeyKind, ...] = ()
    scripts: tuple[Script, ...] = ()
    resource_class: ResourceClass = "cpu"
    memory_by_kind: Mapping[str, Memory] = field(default_factory=dict)
    workflow: Workflow = "always"
    aliases: tuple[str, ...] = ()  # run-file names of stackSentinel versions that said master/slave
    # What is wrong with a finished line's outputs (absolute paths) that exist, or None.
    output_check: Callable[[Sequence[Path]], str | None] | None = None

    def memory_for(self, key_kind: str) -> Memory:
        return self.memory_by_kind.get(key_kind, self.memory)


# Steps ISCE2 can write that this project does not schedule, with what to change.
_BURST_PROPERTIES = (
    "set 'consider burst properties in ionosphere computation : False' "
    "in the ionosphere parameter file"
)
UNSUPPORTED_STEPS: Mapping[str, str] = {
    "filtIonShift": _BURST_PROPERTIES,
    "invertIonShift": _BURST_PROPERTIES,
    "burstRampIon": _BURST_PROPERTIES,
    "mergeBurstRampIon": _BURST_PROPERTIES,
    "grid_baseline": "use the interferogram workflow (-W interferogram)",
    "dense_offsets": "use the interferogram workflow (-W interferogram)",
}

#: The registry, in stackSentinel's run-file order. Read it through the functions below.
STEPS: dict[str, Step] = {}


def register(step: Step, *, after: str | None = None) -> Step:
    """Add ``step`` to the registry, at the end or right after step ``after``."""
    if step.name in STEPS:
        raise ValueError(f"step {step.name!r} is already registered; give it another name")
    if after is None:
        STEPS[step.name] = step
        return step
    if after not in STEPS:
        raise ValueError(f"after={after!r} is not a registered step; expected one of {names()}")
    items = list(STEPS.items())
    at = [name for name, _ in items].index(after) + 1
    items.insert(at, (step.name, step))
    STEPS.clear()
    STEPS.update(items)
    return step


def names() -> tuple[str, ...]:
    """Registered step names, in run-file order."""
    return tuple(STEPS)


def get(name: str) -> Step:
    """The step called ``name``; ``ValueError`` naming the known steps otherwise."""
    try:
        return STEPS[name]
    except KeyError:
        raise ValueError(
            f"step={name!r} is not a topsStack step; expected one of {', '.join(STEPS)}"
        ) from None


def canonical_name(name: str) -> str:
    """Today's name of a run-file step (older master/slave names mapped)."""
    for step in STEPS.values():
        if name in step.aliases:
            return step.name
    return name


def scripts() -> dict[str, tuple[Step, Script]]:
    """Every direct script of every step, by script name."""
    return {script.name: (step, script) for step in STEPS.values() for script in step.scripts}


def run_file_steps(counts: StackCounts, coregistration: str, ion: bool) -> list[tuple[str, int]]:
    """(run file name, number of lines) as stackSentinel writes them for a stack."""
    written = {"always", *(["NESD"] if coregistration == "NESD" else []), *(["ion"] if ion else [])}
    selected = [s for s in STEPS.values() if s.workflow in written]
    return [(f"run_{i:02d}_{s.name}", s.lines(counts)) for i, s in enumerate(selected, start=1)]


# ----------------------------------------------------------------------------- outputs

# ISCE2 config function -> the parameters naming what it writes.
FUNCTION_OUTPUTS: Mapping[str, tuple[str, ...]] = {
    "Sentinel1_TOPS": ("outdir",),
    "topo": ("geom_referenceDir", "geom_masterDir"),
    "computeBaseline": ("baseline_file",),
    "geo2rdr": ("coregSLCdir",),
    "resamp_withCarrier": ("coregdir",),
    "generateIgram": ("interferogram",),
    "overlap_withDEM": ("overlap_dir",),
    "estimateAzimuthMisreg": ("out_azimuth",),
    "estimateRangeMisreg": ("out_range",),
    "mergeBursts": ("outfile",),
    "mergeBurstsIon": ("outfile",),
    "FilterAndCoherence": ("filt", "coh"),
    "unwrap": ("unw",),
    "coherenceIon": ("coherence",),
    "lookUnwIon": ("output",),
    "filtIon": ("output",),
}


def config_outputs(functions: Sequence[ConfigFunction]) -> list[Path]:
    """Paths the config's functions write, from their parameters."""
    out: list[Path] = []
    for fn in functions:
        p = fn.params
        keys = FUNCTION_OUTPUTS.get(fn.name, ())
        if fn.name == "mergeBursts" and p.get("outfile") and p.get("multilook") == "False":
            # Without multilooking ISCE2 writes only a virtual mosaic: <outfile>.full.vrt,
            # or <outfile>.vrt at 1 x 1 looks.
            looks = int(p.get("range_looks", "1")) * int(p.get("azimuth_looks", "1"))
            out.append(Path(p["outfile"] + (".full.vrt" if looks > 1 else ".vrt")))
            keys = ()
        out.extend(Path(p[key]) for key in keys if p.get(key))
        if fn.name == "unwrap" and p.get("unw") and p.get("method", "snaphu") == "snaphu":
            out.append(Path(p["unw"] + ".conncomp"))
    return out


def _baseline_problem(outputs: Sequence[Path]) -> str | None:
    """A baseline file saying ``Bperp (average): nan`` (identical or broken orbits) makes
    MintPy fail much later; the run stops at this line instead, naming the file."""
    for path in outputs:
        if path.suffix != ".txt" or not path.is_file():
            continue
        values = baseline_values(path.read_text(errors="replace"))
        bad = [v for v in values if not is_finite_number(v)]
        if bad:  # a file without the line is the MintPy pre-flight's to report
            return (
                f"{path} gives a perpendicular baseline of {bad[0]}: "
                "the orbits of the two dates are identical or do not cover the scene; "
                "check the orbit files of this date and of the reference (inputs.orbit_dir), "
                "or exclude the date (acquisition.exclude_dates)"
            )
    return None


def option(command: Sequence[str], *flags: str) -> str | None:
    """The value following the first of ``flags`` in ``command``."""
    for i, tok in enumerate(command[:-1]):
        if tok in flags:
            return command[i + 1]
    return None


def _paths(*values: str | Path | None) -> list[Path]:
    return [Path(v) for v in values if v]


# ----------------------------------------------------------------------------- script keys


def _one_key(command: Sequence[str], where: str) -> tuple[str, KeyKind]:
    return "all", "all"


def _misreg_key(command: Sequence[str], where: str) -> tuple[str, KeyKind]:
    source = option(command, "-i", "--input")
    parts = Path(source).parts if source else ()
    if len(parts) >= 2 and parts[-1] == "pairs" and parts[-2] in ("azimuth", "range"):
        return parts[-2], "all"
    raise StepError(
        f"{where}: invertMisreg.py -i must be .../misreg/azimuth/pairs/ or "
        f".../misreg/range/pairs/, got {source!r}; regenerate the run files"
    )


_ION_PAIR_DIR_RE = re.compile(r"^(\d{8})_(\d{8})$")


def _ion_pair_key(path_text: str, where: str) -> tuple[str, str | None]:
    """(pair, swath) from an ``.../ion/D1_D2/ion_cal[_IWn]/...`` path."""
    parts = Path(path_text).parts
    for i, part in enumerate(parts[:-1]):
        match = _ION_PAIR_DIR_RE.match(part)
        if match and i > 0 and parts[i - 1] == "ion":
            cal = parts[i + 1]
            swath = cal[len("ion_cal_") :] if cal.startswith("ion_cal_IW") else None
            return f"{match[1]}_{match[2]}", swath
    raise StepError(
        f"{where}: no .../ion/<date1>_<date2>/ directory in {path_text!r}; "
        "regenerate the run files with stackSentinel.py"
    )


def _compute_ion_key(command: Sequence[str], where: str) -> tuple[str, KeyKind]:
    ion = option(command, "--ionosphere")
    if ion is None:
        raise StepError(f"{where}: computeIon.py without --ionosphere; regenerate it")
    pair, swath = _ion_pair_key(ion, where)
    return (f"{pair}_{swath}" if swath else pair), "pair"


def _merge_swath_ion_key(command: Sequence[str], where: str) -> tuple[str, KeyKind]:
    source = option(command, "--input")
    if source is None:
        raise StepError(f"{where}: mergeSwathIon.py without --input; regenerate it")
    return _ion_pair_key(str(Path(source) / "ion_cal" / "x"), where)[0], "pair"


def _merge_swath_ion_outputs(command: Sequence[str]) -> list[Path]:
    target = option(command, "--output")
    if target is None:
        return []
    return [Path(target) / "raw_no_projection.ion", Path(target) / "raw_no_projection.cor"]


def _stack_dir_outputs(command: Sequence[str]) -> list[Path]:
    reference = option(command, "-m")
    return [Path(reference).parent / "stack"] if reference else []


def _subset(name: str) -> Script:
    return Script(
        name,
        _one_key,
        lambda c: _paths(*(Path(v) / "overlap" for v in (option(c, "-m"), option(c, "-g")) if v)),
    )


# ----------------------------------------------------------------------------- dependencies


class LineIndex:
    """Look up the line ids of a stack by (step, key)."""

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

    def both_dates(self, step: str, pair: str) -> set[str]:
        """(step, D1) and (step, D2) of pair ``D1_D2``."""
        d1, d2 = pair_dates(pair)
        return self.one(step, d1) | self.one(step, d2)


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


def pair_dates(key: str) -> tuple[str, str]:
    first, second = key.split("_")[:2]
    return first, second


def _nothing(line: RunLine, ix: LineIndex) -> set[str]:
    return set()


def _same_key(step: str) -> Callable[[RunLine, LineIndex], set[str]]:
    """Needs (``step``, this line's key)."""
    return lambda line, ix: ix.one(step, line.key)


def _merge_needs(line: RunLine, ix: LineIndex) -> set[str]:
    valid = ix.one("extract_stack_valid_region", "all")
    if line.key_kind == "layer":
        return ix.reference_bursts() | valid
    return valid | ix.coregistered(line.key)


def _compute_ion_needs(line: RunLine, ix: LineIndex) -> set[str]:
    pair = "_".join(pair_dates(line.key))
    if line.key != pair:  # one swath of a pair whose swaths differ in starting range
        return ix.one("look_ion", pair)
    swaths = {
        ix.one("computeIon", k).pop() for k in ix.keys("computeIon") if k.startswith(pair + "_IW")
    }
    return swaths or ix.one("look_ion", pair)


# ----------------------------------------------------------------------------- line counts


def _one(c: StackCounts) -> int:
    return 1


def _secondaries(c: StackCounts) -> int:
    return c.dates - 1


def _pairs(c: StackCounts) -> int:
    return c.pairs


def _misreg_pairs(c: StackCounts) -> int:
    return c.misreg_pairs


# ----------------------------------------------------------------------------- the steps

for _step in (
    Step(
        "unpack_topo_reference",
        _nothing,
        Memory(2000, 100, 0),
        _one,
        ("reference", "master"),
        ("reference",),
        resource_class="gpu",
        aliases=("unpack_topo_master",),
    ),
    Step(
        "unpack_secondary_slc",
        _nothing,
        Memory(500, 20, 0),
        _secondaries,
        ("secondary", "slave"),
        ("date",),
        aliases=("unpack_slave_slc",),
    ),
    Step(
        "average_baseline",
        lambda ln, ix: ix.reference_bursts() | ix.one("unpack_secondary_slc", ln.key),
        Memory(300, 5, 0),
        _secondaries,
        ("baseline",),
        ("date",),
        output_check=_baseline_problem,
    ),
    Step(
        "extract_burst_overlaps",
        lambda ln, ix: ix.reference_bursts(),
        Memory(500, 20, 0),
        _one,
        scripts=(_subset("subsetReference.py"), _subset("subsetMaster.py")),
        workflow="NESD",
    ),
    Step(
        "overlap_geo2rdr",
        lambda ln, ix: (
            ix.one("extract_burst_overlaps", "all") | ix.one("unpack_secondary_slc", ln.key)
        ),
        Memory(1000, 10, 0),
        _secondaries,
        ("overlap_geo2rdr",),
        ("date",),
        resource_class="gpu",
        workflow="NESD",
    ),
    Step(
        "overlap_resample",
        _same_key("overlap_geo2rdr"),
        Memory(1000, 10, 0),
        _secondaries,
        ("overlap_resample",),
        ("date",),
        resource_class="memory-heavy",
        workflow="NESD",
    ),
    Step(
        "pairs_misreg",
        lambda ln, ix: set().union(*(ix.overlaps(d) for d in pair_dates(ln.key))),
        Memory(1000, 20, 0),
        _misreg_pairs,
        ("misreg",),
        ("pair",),
        workflow="NESD",
    ),
    Step(
        "timeseries_misreg",
        lambda ln, ix: ix.every("pairs_misreg"),
        Memory(300, 0, 0),
        lambda c: 2,  # azimuth and range
        scripts=(
            Script("invertMisreg.py", _misreg_key, lambda c: _paths(option(c, "-o", "--output"))),
        ),
        workflow="NESD",
    ),
    Step(
        "fullBurst_geo2rdr",
        lambda ln, ix: (
            ix.reference_bursts()
            | ix.one("unpack_secondary_slc", ln.key)
            | ix.every("timeseries_misreg")
        ),
        Memory(2500, 20, 0),
        _secondaries,
        ("fullBurst_geo2rdr",),
        ("date",),
        resource_class="gpu",
    ),
    Step(
        "fullBurst_resample",
        _same_key("fullBurst_geo2rdr"),
        Memory(2000, 30, 0),
        _secondaries,
        ("fullBurst_resample",),
        ("date",),
        resource_class="memory-heavy",
    ),
    Step(
        "extract_stack_valid_region",
        lambda ln, ix: ix.reference_bursts() | ix.every("fullBurst_resample"),
        Memory(300, 5, 0),
        _one,
        scripts=(Script("extractCommonValidRegion.py", _one_key, _stack_dir_outputs),),
    ),
    Step(
        "merge_reference_secondary_slc",
        _merge_needs,
        Memory(1000, 50, 0),
        lambda c: c.dates + len(GEOMETRY_LAYERS),
        ("merge",),
        ("date", "layer"),
        resource_class="memory-heavy",
        memory_by_kind={"layer": Memory(300, 0, 30)},  # multilooked float rasters stay small
        aliases=("merge_master_slave_slc",),
    ),
    Step(
        "generate_burst_igram",
        lambda ln, ix: set().union(*(ix.coregistered(d) for d in pair_dates(ln.key))),
        Memory(1500, 20, 0),
        _pairs,
        ("generate_igram",),
        ("pair",),
    ),
    Step(
        "merge_burst_igram",
        lambda ln, ix: (
            ix.one("generate_burst_igram", ln.key) | ix.one("extract_stack_valid_region", "all")
        ),
        Memory(1000, 100, 30),
        _pairs,
        ("merge_igram",),
        ("pair",),
        resource_class="memory-heavy",
    ),
    Step(
        "filter_coherence",
        lambda ln, ix: (
            ix.one("merge_burst_igram", ln.key)
            | ix.both_dates("merge_reference_secondary_slc", ln.key)
        ),
        Memory(1000, 100, 100),
        _pairs,
        ("igram_filt_coh",),
        ("pair",),
        resource_class="memory-heavy",
    ),
    Step(
        "unwrap",
        _same_key("filter_coherence"),
        Memory(2000, 0, 300),
        _pairs,
        ("igram_unw",),
        ("pair",),
        resource_class="memory-heavy",
    ),
    Step(
        "subband_and_resamp",
        lambda ln, ix: ix.coregistered(ln.key),
        Memory(2500, 30, 0),
        lambda c: c.dates,
        ("subband_and_resamp",),
        ("date",),
        resource_class="memory-heavy",
        workflow="ion",
    ),
    Step(
        "generateIgram_ion",
        lambda ln, ix: ix.both_dates("subband_and_resamp", ln.key),
        Memory(1500, 40, 0),
        _misreg_pairs,
        ("generateIgram_ion",),
        ("pair",),
        workflow="ion",
    ),
    Step(
        "mergeBurstsIon",
        lambda ln, ix: (
            ix.one("generateIgram_ion", ln.key) | ix.one("extract_stack_valid_region", "all")
        ),
        Memory(1000, 100, 0),
        _misreg_pairs,
        ("mergeBurstsIon",),
        ("pair",),
        resource_class="memory-heavy",
        workflow="ion",
    ),
    Step(
        "unwrap_ion",
        _same_key("mergeBurstsIon"),
        Memory(1000, 60, 0),
        _misreg_pairs,
        ("unwrap_ion",),
        ("pair",),
        resource_class="memory-heavy",
        workflow="ion",
    ),
    Step(
        "look_ion",
        _same_key("unwrap_ion"),
        Memory(500, 5, 0),
        _misreg_pairs,
        ("look_ion",),
        ("pair",),
        workflow="ion",
    ),
    Step(
        "computeIon",
        _compute_ion_needs,
        Memory(500, 5, 0),
        _misreg_pairs,
        scripts=(
            Script(
                "computeIon.py",
                _compute_ion_key,
                lambda c: _paths(option(c, "--ionosphere"), option(c, "--coherence_output")),
            ),
            Script("mergeSwathIon.py", _merge_swath_ion_key, _merge_swath_ion_outputs),
        ),
        workflow="ion",
    ),
    Step(
        "filtIon",
        _same_key("computeIon"),
        Memory(500, 5, 0),
        _misreg_pairs,
        ("filtIon",),
        ("pair",),
        workflow="ion",
    ),
    Step(
        "invertIon",
        lambda ln, ix: ix.every("filtIon") | ix.one("merge_reference_secondary_slc", "hgt"),
        Memory(1000, 10, 0),
        _one,
        scripts=(Script("invertIon.py", _one_key, lambda c: _paths(option(c, "--odir"))),),
        workflow="ion",
    ),
):
    register(_step)
