"""A deployment run's parameters from a configuration file, as JSON on stdout.

Both deployments take the configuration object ``config``; this turns a YAML file into it
for ``prefect deployment run ... --params -``::

    python -m insarflow.deployments.params mystack.yaml |
        prefect deployment run sbas/sbas-adhoc --params -

The file is validated first: every problem is printed with its field, value and fix, and
the exit code is 2, so the pipe creates no run. ``work_dir`` is written as an absolute
path (relative to the current directory, as ``insarflow run`` reads it), because the run's
process starts in the checkout the deployment names, not where this command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

from insarflow.config import ConfigError, StackConfig, load_config

EXIT_BAD_INPUT = 2


def run_parameters(config: StackConfig) -> dict[str, Any]:
    """``{"config": ...}`` as Prefect's API takes it, with an absolute ``work_dir``."""
    absolute = config.model_copy(update={"work_dir": config.paths.root})
    return {"config": absolute.model_dump(mode="json")}


def _refuse(message: str) -> NoReturn:
    print(message, file=sys.stderr)
    raise SystemExit(EXIT_BAD_INPUT)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="Stack configuration (YAML).")
    path: Path = parser.parse_args(argv).config
    if not path.is_file():
        _refuse(f"config file {path} not found; write one with `insarflow config > {path}`")
    try:
        config = load_config(path)
    except ConfigError as exc:
        problems = [f"{len(exc.issues)} problem(s) in {exc.source}:"]
        for issue in exc.issues:
            shown = issue.value is not None and not isinstance(issue.value, dict)
            got = f" (got {issue.value!r})" if shown else ""
            problems.append(f"  {issue.field}{got}: {issue.message}")
        _refuse("\n".join(problems))
    print(json.dumps(run_parameters(config)))


if __name__ == "__main__":
    main()
