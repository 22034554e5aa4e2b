"""The environment ISCE2 runs in: its own Python, never insarflow's.

ISCE2 2.6.5 breaks with numpy 2.4 (which insarflow's own environment may carry) and needs
GDAL bindings with ``osgeo.gdal_array``; so stackSentinel.py, every run-file line and
ISCE2's dem.py run with an environment of their own: the one a shell script sets up
(``isce2.env_script``: the ``env.sh`` of ``make isce2``, or conda activation lines), or
the current one when no script is given. :func:`probe_isce2` builds that environment once
and checks, before any download or processing, that its ``python3`` imports ``isce``,
``osgeo.gdal_array`` and ``snaphu`` (tiled unwrapping) and that ``stackSentinel.py`` is there.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from insarflow.tasks.shell import CommandError, run_command

STACK_SENTINEL = "stackSentinel.py"

INSTALL_HINT = (
    "Build ISCE2 from source with `make isce2 ISCE2_SOURCE=<isce2 tarball or source dir> "
    "ISCE2_PREFIX=<dir>` and set `isce2.env_script: <dir>/env.sh` in the configuration, or "
    "install it from conda-forge (`conda env create -f environment.yml`) and put the "
    "activation lines in a shell file given as `isce2.env_script`. To try the pipeline "
    "without ISCE2, set `engine: simulator`."
)

# Run by ISCE2's python3: versions on stdout (logged), the environment into a private file
# (it may hold credentials, so it never reaches a log).
_PROBE = """
import json, os, sys
info = {"python": sys.executable, "environ": dict(os.environ)}
try:
    import numpy
    info["numpy"] = numpy.__version__
    import isce
    info["isce2_version"] = isce.__version__
    from osgeo import gdal, gdal_array
    info["gdal"] = gdal.__version__
except Exception as exc:
    info["error"] = f"{type(exc).__name__}: {exc}"
try:
    import snaphu
    info["snaphu"] = snaphu.__version__
except Exception as exc:
    info["snaphu_error"] = f"{type(exc).__name__}: {exc}"
with open(sys.argv[1], "w") as out:
    json.dump(info, out)
print("python", sys.executable, "numpy", info.get("numpy"), "isce2", info.get("isce2_version"),
      "gdal", info.get("gdal"), "error", info.get("error"))
"""


class IsceNotFoundError(RuntimeError):
    """ISCE2 cannot be run in the configured environment; the message says what and how to fix."""


@dataclass(frozen=True)
class Isce2Environment:
    """A checked ISCE2 environment: the variables every ISCE2 command runs with."""

    env: dict[str, str]
    version: str
    python: str
    numpy: str
    stack_sentinel: Path

    def summary(self) -> str:
        return f"ISCE2 {self.version} (python {self.python}, numpy {self.numpy})"


def find_stack_sentinel(env: Mapping[str, str]) -> Path:
    """``stackSentinel.py`` on ``env``'s PATH, else in ``$ISCE_STACK/topsStack``."""
    found = shutil.which(STACK_SENTINEL, path=env.get("PATH", ""))
    if found:
        return Path(found)
    isce_stack = env.get("ISCE_STACK")
    if isce_stack:
        candidate = Path(isce_stack) / "topsStack" / STACK_SENTINEL
        if candidate.is_file():
            return candidate
    where = "on PATH" + (f" nor in $ISCE_STACK/topsStack ({isce_stack})" if isce_stack else "")
    raise IsceNotFoundError(f"{STACK_SENTINEL} (ISCE2 topsStack) was not found {where}. ")


def with_topsstack(env: Mapping[str, str], stack_sentinel: Path) -> dict[str, str]:
    """``env`` with topsStack on PATH and its parent (``$ISCE_STACK``) on PYTHONPATH.

    ``stackSentinel.py`` imports ``topsStack.Stack``; the run-file scripts
    (``SentinelWrapper.py`` ...) live beside it.
    """
    tops_dir = stack_sentinel.parent
    out = dict(env)
    paths = out.get("PATH", "").split(os.pathsep) if out.get("PATH") else []
    if str(tops_dir) not in paths:
        out["PATH"] = os.pathsep.join([str(tops_dir), *paths])
    py = out.get("PYTHONPATH", "").split(os.pathsep) if out.get("PYTHONPATH") else []
    if str(tops_dir.parent) not in py:
        out["PYTHONPATH"] = os.pathsep.join([str(tops_dir.parent), *py])
    return out


def probe_isce2(
    env_script: Path | None,
    *,
    log_path: Path,
    base_env: Mapping[str, str] | None = None,
) -> Isce2Environment:
    """Build ISCE2's environment (sourcing ``env_script`` when given) and check it works.

    Raises :class:`IsceNotFoundError` naming the script or PATH, what failed and the fix.
    """
    base = dict(os.environ if base_env is None else base_env)
    where = f"isce2.env_script {env_script}" if env_script else "the current environment (PATH)"
    if env_script is not None and not env_script.is_file():
        raise IsceNotFoundError(
            f"isce2.env_script: {env_script} does not exist; give the env.sh that "
            f"`make isce2` wrote (ISCE2_PREFIX/env.sh) or a file with conda activation lines. "
            + INSTALL_HINT
        )
    with tempfile.TemporaryDirectory(prefix="insarflow-isce2-probe-") as tmp:
        probe = Path(tmp) / "probe_isce2.py"
        probe.write_text(_PROBE)
        out_file = Path(tmp) / "probe.json"
        if env_script is not None:
            # The script path travels as an argument, never spliced into shell text.
            bash = shutil.which("bash") or "/bin/bash"
            args = [
                bash, "-c", 'source "$1" >&2 && exec python3 "$2" "$3"', "isce2-env",
                str(env_script.absolute()), str(probe), str(out_file),
            ]  # fmt: skip
        else:
            args = ["python3", str(probe), str(out_file)]
        try:
            run_command(args, log_path=log_path, env=base, timeout_s=120)
        except (CommandError, FileNotFoundError) as exc:
            raise IsceNotFoundError(
                f"ISCE2 environment from {where} could not start python3: {exc}. " + INSTALL_HINT
            ) from None
        info = json.loads(out_file.read_text()) if out_file.is_file() else {}
    if "error" in info or "isce2_version" not in info:
        raise IsceNotFoundError(
            f"ISCE2 environment from {where}: python3 ({info.get('python', '?')}) cannot "
            f"import isce and osgeo.gdal_array ({info.get('error', 'no answer')}). " + INSTALL_HINT
        )
    if "snaphu" not in info:
        raise IsceNotFoundError(
            f"ISCE2 environment from {where}: python3 ({info.get('python', '?')}) cannot import "
            f"snaphu ({info.get('snaphu_error', 'no answer')}), which unwraps pairs in tiles "
            "(tasks/topsstack/isce_unwrap_tiles.py); install it there: `python3 -m pip install "
            "snaphu` or `conda install -c conda-forge snaphu` (`make isce2` does it)"
        )
    env: dict[str, str] = info["environ"]
    try:
        stack_sentinel = find_stack_sentinel(env)
    except IsceNotFoundError as exc:
        raise IsceNotFoundError(f"ISCE2 environment from {where}: {exc}" + INSTALL_HINT) from None
    return Isce2Environment(
        env=with_topsstack(env, stack_sentinel),
        version=str(info["isce2_version"]),
        python=str(info["python"]),
        numpy=str(info.get("numpy", "?")),
        stack_sentinel=stack_sentinel,
    )


def record_isce2(env: Isce2Environment, path: Path) -> None:
    """Remember which ISCE2 processed the stack (read back for the products' provenance)."""
    from insarflow import atomic

    record = {"isce2_version": env.version, "python": env.python, "numpy": env.numpy}
    atomic.write_text(path, json.dumps(record, indent=1) + "\n", skip_unchanged=True)


def recorded_isce2_version(path: Path) -> str | None:
    """The version :func:`record_isce2` wrote, or None."""
    try:
        return str(json.loads(path.read_text())["isce2_version"])
    except (FileNotFoundError, KeyError, ValueError):
        return None
