"""The command line as a user meets it: a real terminal width, NO_COLOR, a fresh HOME.

Each case runs the installed ``insarflow`` script in a subprocess and checks what is on
the console (progress lines, one line per problem or product, no traceback) and the exit
code (README: 0 done, 1 processing failure, 2 bad input, 3 nothing to do).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

EXE = shutil.which("insarflow", path=str(Path(sys.executable).parent))
COLUMNS = 80


def insarflow(
    *args: str, home: Path, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    assert EXE, "the insarflow console script is not installed in this environment"
    env = {
        "COLUMNS": str(COLUMNS),
        "NO_COLOR": "1",
        "PATH": str(Path(sys.executable).parent) + os.pathsep + "/usr/bin:/bin",
        "HOME": str(home),
        **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}),
        **(extra_env or {}),
    }
    return subprocess.run(
        [EXE, *args], capture_output=True, text=True, timeout=900, check=False, env=env
    )


def no_traceback(out: subprocess.CompletedProcess[str]) -> None:
    text = out.stdout + out.stderr
    assert "Traceback" not in text, text[-3000:]
    assert 'File "' not in text, text[-3000:]


SIMULATOR_STACK = """\
name: tiny
work_dir: {work}
engine: simulator
area: {{bbox: [34.0, 34.6, 116.5, 117.95]}}
acquisition: {{track: 142, start: 2024-12-01, end: 2025-12-31}}
topsstack: {{swaths: [3], coregistration: geometry, connections: 2}}
mintpy: {{max_memory_gb: 1.0, plot: false, extra: {{mintpy.reference.minCoherence: '0.5'}}}}
compute: {{workers: 2, memory_gb: 4.0}}
simulator: {{dates: 4, length: 40, width: 50}}
"""


def test_every_trap_reported_in_one_go_with_its_fix(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    netrc = home / ".netrc"
    netrc.write_text("machine urs.earthdata.nasa.gov login u password p\n")
    netrc.chmod(0o644)
    cfg = tmp_path / "traps.yaml"
    cfg.write_text(
        "name: traps\nwork_dir: " + str(tmp_path / "work") + "\n"
        "area: {bbox: [13, 14, 42, 43]}\n"
        "acquisition: {track: 0, start: 2025-04-15, end: 2024-12-01}\n"
        "topsstack: {use_gpu: true}\n"
    )
    out = insarflow("validate", str(cfg), home=home)
    no_traceback(out)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.splitlines()
    assert lines[0] == f"5 problem(s) in {cfg}:"
    # One problem per line, never wrapped at the terminal width.
    fields = [line.split(":")[0].split(" (got")[0].strip() for line in lines[1:]]
    assert fields == [
        "acquisition.track",
        "acquisition.end",
        "compute",
        "isce2.env_script",
        "Earthdata credentials",
    ]
    text = out.stderr
    assert "start 2025-04-15 is not before end 2024-12-01: swap them" in text
    assert "topsstack.use_gpu is true but compute.gpus is 0" in text
    assert f"{netrc} is accessible by group/others (mode 0644)" in text
    assert f"run `chmod 600 {netrc}`" in text
    assert "cannot import isce and osgeo.gdal_array" in text
    assert "make isce2" in text


def test_run_stops_before_any_work_on_a_missing_secret_block(tmp_path: Path) -> None:
    cfg = tmp_path / "secret.yaml"
    work = tmp_path / "work"
    cfg.write_text(
        f"name: s\nwork_dir: {work}\n"
        "area: {bbox: [34.0, 34.6, 116.5, 117.95]}\n"
        "acquisition: {track: 142, start: 2024-12-01, end: 2025-04-15, "
        "credentials_secret_block: no-such-block}\n"
    )
    home = tmp_path / "home"
    home.mkdir()
    out = insarflow("run", str(cfg), "--until", "acquire", home=home)
    no_traceback(out)
    assert out.returncode == 2, out.stderr
    assert (
        "acquisition.credentials_secret_block (got 'no-such-block'): Prefect Secret block "
        "'no-such-block' could not be loaded"
    ) in out.stderr
    assert not (work / "SLC").exists()


def test_unreachable_service_fails_fast_in_plain_words(tmp_path: Path) -> None:
    cfg = tmp_path / "net.yaml"
    work = tmp_path / "work"
    cfg.write_text(
        f"name: n\nwork_dir: {work}\n"
        "area: {bbox: [34.0, 34.6, 116.5, 117.95]}\n"
        "acquisition: {track: 142, start: 2024-12-01, end: 2025-04-15}\n"
    )
    home = tmp_path / "home"
    home.mkdir()
    # A proxy whose name never resolves (RFC 2606) stands for a machine without network.
    env = {
        "EARTHDATA_USERNAME": "u",
        "EARTHDATA_PASSWORD": "p",
        "HTTPS_PROXY": "http://proxy.example.invalid:3128",
        "HTTP_PROXY": "http://proxy.example.invalid:3128",
        "NO_PROXY": "127.0.0.1,localhost",  # the local Prefect server
    }
    out = insarflow("run", str(cfg), "--until", "acquire", home=home, extra_env=env)
    no_traceback(out)
    assert out.returncode == 1, out.stderr
    assert "run failed: cannot reach the ASF search service" in out.stderr
    assert "the host name does not resolve" in out.stderr
    assert "retrying in" not in out.stderr
    assert "HTTPSConnectionPool" not in out.stderr
    # Prefect's state stayed in the work directory; the details are in the log file.
    assert (work / "prefect" / "prefect.db").is_file()
    assert not (home / ".prefect" / "prefect.db").exists()
    assert "Traceback" in (work / "logs" / "run.log").read_text()


def test_simulator_run_shows_progress_products_and_a_rerun_skip(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    # A long path: product lines must stay whole at 80 columns.
    work = tmp_path / ("a-rather-long-work-directory-name-" * 2) / "tiny"
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(SIMULATOR_STACK.format(work=work))
    out = insarflow("run", str(cfg), home=home)
    no_traceback(out)
    assert out.returncode == 0, out.stderr[-3000:]
    err = out.stderr.splitlines()
    done = [m for line in err if (m := re.match(r"topsstack: (\d+) of (\d+) lines done", line))]
    assert done and done[-1][1] == done[-1][2], err
    lines = int(done[-1][2])
    assert any(line.startswith("mintpy: 16 of 16 steps done") for line in err), err
    assert any(" ETA " in line and "elapsed" in line for line in err)
    # Nothing at INFO from Dask or Prefect internals.
    for noise in ("distributed.", "INFO", "Task run", "Flow run", "dashboard"):
        assert noise not in out.stderr, noise
    # Each product on its own line, whole.
    products = [line for line in out.stdout.splitlines() if line.startswith("  ")]
    assert any(line.split()[0] == "zarr" for line in products), out.stdout
    for line in products:
        assert Path(line.split()[1]).exists(), line
    assert "PosixPath" not in out.stdout
    # State, scratch and logs under the work directory.
    assert (work / "prefect" / "prefect.db").is_file()
    assert (work / "stack" / "dask-scratch").is_dir()
    assert (work / "mintpy" / "dask-scratch").is_dir()  # MintPy's own cluster
    assert (work / "logs" / "run.log").is_file()
    assert not (home / ".prefect" / "prefect.db").exists()
    # mintpy.plot: false: no MintPy figures, and the cfg says so.
    figures = [p.name for p in (work / "mintpy" / "pic").glob("*.*") if p.suffix != ".cfg"]
    assert figures == [], figures  # MintPy itself keeps only a copy of its cfg there
    assert not (work / "logs" / "mintpy" / "plot.log").exists()
    cfg_text = (work / "mintpy" / "smallbaselineApp.cfg").read_text()
    assert re.search(r"^mintpy\.plot\s*=\s*no\b", cfg_text, re.MULTILINE)

    again = insarflow("run", str(cfg), "--from", "topsstack", "--until", "topsstack", home=home)
    no_traceback(again)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (
        f"topsstack: {lines} of {lines} lines skipped: already done (completion marker "
        "matches the line and its config file)"
    ) in again.stderr
