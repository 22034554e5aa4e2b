"""Parse the run files and configs that ISCE2 ``stackSentinel.py`` writes.

Every line of ``run_files/run_NN_<step>`` becomes one :class:`RunLine`, keyed by
(step, reference | date | pair | geometry layer | all) so that each line can be
scheduled as its own task. The parser accepts the shapes stackSentinel writes:

* plain lines, one command each (the default);
* ``--num_proc N`` run files: a trailing ``&`` on each line, ``wait`` lines and
  blank lines between the blocks;
* ``-t/--text_cmd`` prefixes: stackSentinel writes ``text_cmd + command``, e.g.
  ``source ~/.bash_profile;SentinelWrapper.py -c ...`` or ``time SentinelWrapper.py
  -c ...``. The prefix is dropped: :attr:`RunLine.command` starts at the ISCE2 script;
* the older ``master``/``slave`` names (``run_01_unpack_topo_master``,
  ``config_slave_<date>``, ``subsetMaster.py``), mapped to today's names.

Keys come from the config file name (``config_<step>_<key>``) for
``SentinelWrapper.py`` lines and from the arguments for direct script calls.
Unknown steps and unrecognised lines raise :class:`RunFileError` naming the file.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from insarflow.tasks.isce_io import ConfigFunction, IsceConfigError, read_isce_config
from insarflow.tasks.topsstack import steps
from insarflow.tasks.topsstack.steps import (
    GEOMETRY_LAYERS,
    WRAPPER,
    KeyKind,
    StepError,
    config_outputs,
    option,
)

_RUN_FILE_RE = re.compile(r"^run_(\d+)_([A-Za-z][A-Za-z0-9_]*)$")
_PAIR_END_RE = re.compile(r"^(?P<prefix>.+)_(?P<d1>\d{8})[-_](?P<d2>\d{8})$")
_DATE_END_RE = re.compile(r"^(?P<prefix>.+)_(?P<d>\d{8})$")
_OPERATOR_RE = re.compile(r"^[();<>|&]+$")


class RunFileError(ValueError):
    """A run file or config that this project cannot interpret."""


@dataclass(frozen=True)
class RunLine:
    """One command of a run file, keyed by step and date/pair/layer.

    ``key`` is ``reference``, a date, a pair ``D1_D2``, a geometry layer, ``all``, or
    ``azimuth``/``range`` (the two ``timeseries_misreg`` lines). When the swaths of an
    ionosphere pair differ in starting range, ISCE2 writes one ``computeIon.py`` line
    per swath (key ``D1_D2_IWn``) plus a ``mergeSwathIon.py`` line (key ``D1_D2``).
    ``outputs`` lists what the config/arguments name as written paths, as they appear
    there; a directory may be shared by several steps (``coreg_secondarys/<date>`` is
    written by geo2rdr and resample), and the list is empty where the step writes
    into an existing folder (``subband_and_resamp``), so existence alone never proves
    a line done.

    A line split by swath (:mod:`~insarflow.tasks.topsstack.swath_pieces`) becomes one line per
    swath: key ``<key>_IW<n>``, ``swath`` = n, ``whole`` = the run-file line it is a piece of,
    ``of_swaths`` = how many swaths that line covers (its bursts are shared among them).
    """

    step_number: int
    step: str
    key: str
    key_kind: KeyKind
    command: tuple[str, ...]
    run_file: Path
    config_path: Path | None
    functions: tuple[ConfigFunction, ...]
    outputs: tuple[Path, ...]
    swath: int | None = None
    whole: RunLine | None = None
    of_swaths: int = 1

    @property
    def line_id(self) -> str:
        """Unique id within a stack, e.g. ``10_fullBurst_resample:20250418``."""
        return f"{self.step_number:02d}_{self.step}:{self.key}"

    @property
    def label(self) -> str:
        """Human/Prefect task-run name, e.g. ``fullBurst_resample-20250418``."""
        return f"{self.step}-{self.key}"


def _command_tokens(text: str, where: str) -> tuple[str, ...] | None:
    """The ISCE2 command of one run-file line; ``None`` for blank/``wait``/comment lines."""
    stripped = text.strip()
    if not stripped or stripped.startswith("#") or stripped == "wait":
        return None
    lexer = shlex.shlex(stripped, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        tokens = list(lexer)
    except ValueError as exc:
        raise RunFileError(f"{where}: cannot split {text!r}: {exc}") from exc
    segments: list[list[str]] = [[]]
    for token in tokens:
        if _OPERATOR_RE.match(token):
            segments.append([])
        else:
            segments[-1].append(token)
    known = {WRAPPER, *steps.scripts()}
    commands = []
    for segment in segments:
        starts = [i for i, tok in enumerate(segment) if Path(tok).name in known]
        if starts:
            commands.append(tuple(segment[starts[0] :]))
    if not commands:
        if all(not seg or seg == ["wait"] for seg in segments):
            return None
        raise RunFileError(
            f"{where}: no ISCE2 topsStack command in {text!r} (expected one of "
            f"{', '.join(sorted(known))}); regenerate the run files with stackSentinel.py"
        )
    if len(commands) > 1:
        raise RunFileError(
            f"{where}: more than one ISCE2 command on one line: {text!r}; "
            "regenerate the run files with stackSentinel.py"
        )
    return commands[0]


def _resolve_config(raw: str, stack_dir: Path) -> Path:
    """``raw`` if it exists, else ``stack_dir/configs/<basename>`` (for moved stacks)."""
    path = Path(raw)
    if not path.is_absolute():
        path = stack_dir / path
    if path.is_file():
        return path
    return stack_dir / "configs" / path.name


def _key_from_config(name: str, step: str, where: str) -> tuple[str, KeyKind]:
    """Key and kind from a config basename, checked against what ``step`` writes."""
    spec = steps.get(step)
    if not name.startswith("config_"):
        raise RunFileError(
            f"{where}: config file {name!r} does not start with 'config_'; "
            "regenerate the run files with stackSentinel.py"
        )
    body = name[len("config_") :]
    prefix: str
    key: str
    kind: KeyKind
    if body in ("reference", "master"):
        prefix, key, kind = body, "reference", "reference"
    elif pair := _PAIR_END_RE.match(body):
        prefix, key, kind = pair["prefix"], f"{pair['d1']}_{pair['d2']}", "pair"
    elif single := _DATE_END_RE.match(body):
        prefix, key, kind = single["prefix"], single["d"], "date"
    elif "_" in body and body.rsplit("_", 1)[1] in GEOMETRY_LAYERS:
        prefix, key = body.rsplit("_", 1)
        kind = "layer"
    else:
        raise RunFileError(
            f"{where}: cannot derive a date, pair or layer key from config name {name!r}; "
            "regenerate the run files with stackSentinel.py"
        )
    if prefix not in spec.config_prefixes or kind not in spec.key_kinds:
        raise RunFileError(
            f"{where}: config {name!r} does not belong to step {step!r} (expected "
            f"config_{spec.config_prefixes[0]}_<{'|'.join(spec.key_kinds)}>); "
            "the run file was edited or mixed up, regenerate it with stackSentinel.py"
        )
    return key, kind


def _key_from_script(command: Sequence[str], step: str, where: str) -> tuple[str, KeyKind]:
    """Key and kind of a direct script call (no config file)."""
    name = Path(command[0]).name
    script = next((s for s in steps.get(step).scripts if s.name == name), None)
    if script is None:
        expected = " or ".join(s.name for s in steps.get(step).scripts) or WRAPPER
        raise RunFileError(
            f"{where}: {name} is not a command of step {step!r} (expected "
            f"{expected}); regenerate the run files with stackSentinel.py"
        )
    try:
        return script.key(command, where)
    except StepError as exc:
        raise RunFileError(str(exc)) from exc


def _script_outputs(command: Sequence[str]) -> list[Path]:
    """Paths a direct script call writes, from its arguments."""
    _, script = steps.scripts()[Path(command[0]).name]
    return script.outputs(command)


def _step_of(run_file: Path) -> tuple[int, str]:
    match = _RUN_FILE_RE.match(run_file.name)
    if not match:
        raise RunFileError(
            f"{run_file}: run file names must be run_<NN>_<step>; "
            "regenerate the run files with stackSentinel.py"
        )
    number, step = int(match[1]), match[2]
    step = steps.canonical_name(step)
    if step in steps.UNSUPPORTED_STEPS:
        raise RunFileError(
            f"{run_file}: step {step!r} is not supported by insarflow; "
            f"{steps.UNSUPPORTED_STEPS[step]} and regenerate the run files"
        )
    if step not in steps.names():
        raise RunFileError(
            f"{run_file}: unknown topsStack step {step!r} (known steps: "
            f"{', '.join(steps.names())}); regenerate the run files with stackSentinel.py "
            "-W interferogram"
        )
    return number, step


def parse_run_file(run_file: Path, stack_dir: Path) -> list[RunLine]:
    """Parse one ``run_NN_<step>`` file (configs resolved against ``stack_dir``)."""
    number, step = _step_of(run_file)
    lines: list[RunLine] = []
    text = run_file.read_text(encoding="utf-8")
    for lineno, raw in enumerate(text.splitlines(), start=1):
        where = f"{run_file}:{lineno}"
        command = _command_tokens(raw, where)
        if command is None:
            continue
        config_path: Path | None = None
        functions: tuple[ConfigFunction, ...] = ()
        if Path(command[0]).name == WRAPPER:
            raw_config = option(command, "-c", "--config")
            if raw_config is None:
                raise RunFileError(
                    f"{where}: SentinelWrapper.py line without -c <config>: {raw!r}; "
                    "regenerate the run files with stackSentinel.py"
                )
            key, kind = _key_from_config(Path(raw_config).name, step, where)
            config_path = _resolve_config(raw_config, stack_dir)
            if config_path.is_file():
                try:
                    functions = read_isce_config(config_path)
                except IsceConfigError as exc:
                    raise RunFileError(str(exc)) from exc
            outputs = config_outputs(functions)
        else:
            key, kind = _key_from_script(command, step, where)
            outputs = _script_outputs(command)
        lines.append(
            RunLine(
                step_number=number,
                step=step,
                key=key,
                key_kind=kind,
                command=command,
                run_file=run_file,
                config_path=config_path,
                functions=functions,
                outputs=tuple(dict.fromkeys(outputs)),
            )
        )
    return lines


def parse_run_files(stack_dir: Path) -> list[RunLine]:
    """All lines of ``stack_dir/run_files/run_*``, in run-file then line order.

    Files whose names carry a suffix (``run_01_x.job``, ``.log``) are not run files
    and are ignored.
    """
    run_dir = stack_dir / "run_files"
    if not run_dir.is_dir():
        raise RunFileError(
            f"{run_dir} does not exist; run stackSentinel.py with -w {stack_dir} first"
        )
    files = [p for p in run_dir.glob("run_*") if p.is_file() and "." not in p.name]
    if not files:
        raise RunFileError(
            f"{run_dir} holds no run_NN_<step> files; rerun stackSentinel.py with -w {stack_dir}"
        )
    numbered = sorted((_step_of(p)[0], p.name, p) for p in files)
    seen_numbers: dict[int, Path] = {}
    for number, _, path in numbered:
        if number in seen_numbers:
            raise RunFileError(
                f"{path}: step number {number:02d} is also used by {seen_numbers[number]}; "
                f"remove the stray file or regenerate {run_dir}"
            )
        seen_numbers[number] = path
    lines: list[RunLine] = []
    seen_ids: dict[str, Path] = {}
    for _, _, path in numbered:
        for line in parse_run_file(path, stack_dir):
            if line.line_id in seen_ids:
                raise RunFileError(
                    f"{path}: line {line.line_id!r} appears twice (also in "
                    f"{seen_ids[line.line_id]}); regenerate the run files with stackSentinel.py"
                )
            seen_ids[line.line_id] = path
            lines.append(line)
    return lines
