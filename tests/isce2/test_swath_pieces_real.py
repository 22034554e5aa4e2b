"""Real ISCE2 2.6.5 lines split by swath: the same bytes as the lines as written, resumable per
piece.

Two dates made from the real SAFE in ``../shared/fixtures/safe_pixels/`` (IW1 and IW2, two
bursts each) go through ``insarflow run config.yaml --until topsstack`` with the engine's
default ``topsstack.split_swaths``: the reference's unpack and topo line, the secondary's
unpack, geo2rdr and resample lines and the pair's burst interferogram line each run as one
task per swath (``tasks/topsstack/swath_pieces.py``). Then one piece's completion marker is
dropped: the rerun runs that piece and what needs it, and no piece of the other swath. Last,
the lines run again as stackSentinel wrote them (ISCE2's own loop over both swaths) and
every file they write is compared with what the pieces wrote: byte for byte, except ISCE2's
product shelves (``IW<n>.xml.data.*``, pickles holding the writing process's memory addresses,
which differ between any two runs of a line), compared by the data they pickle
(``isce_io.shelve_fingerprint``). The topo line as written takes as long as the rest of the
test together (8-15 minutes on 2 cores), so its comparison runs in the full check only
(``INSARFLOW_ISCE2_FULL=1``); otherwise the other four lines are compared, reading the topo
pieces' outputs.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from .known_deformation import GaussianBowl
from .safe_stack import user_stack_config
from .test_real_stack import INSARFLOW, _env, _markers

pytestmark = [
    pytest.mark.isce2,
    pytest.mark.timeout(3600),  # 32 min on a slow 2-core machine beside the other isce2 test
    # rasterio/rioxarray transforms go through affine's deprecated matmul path.
    pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning"),
]

BBOX = (47.05, 47.10, 11.22, 11.30)  # S N W E: two bursts of IW1 and two of IW2
DEM_SNWE = (46.8, 47.5, 10.0, 12.6)  # both swaths' bursts
BOWL = GaussianBowl(lat=47.07, lon=11.5, sigma_km=6.0, peak_m_per_year=-0.5)
SECONDARY, PAIR = "20210413", "20210401_20210413"
FULL_ENV = "INSARFLOW_ISCE2_FULL"  # 1: compare the topo line as written too
# step -> (key, the folders of the stack its line writes), in run-file order
SPLIT = {
    "unpack_topo_reference": ("reference", ("reference", "geom_reference")),
    "unpack_secondary_slc": (SECONDARY, (f"secondarys/{SECONDARY}",)),
    "fullBurst_geo2rdr": (SECONDARY, (f"coreg_secondarys/{SECONDARY}",)),
    "fullBurst_resample": (SECONDARY, (f"coreg_secondarys/{SECONDARY}",)),
    "generate_burst_igram": (PAIR, (f"interferograms/{PAIR}",)),
}


def _run_topsstack(config: Path, log: Path) -> None:
    with log.open("a") as out:
        done = subprocess.run(
            [str(INSARFLOW), "run", str(config), "--until", "topsstack"],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=1800,
            env=_env(config.parent),
        )
    assert done.returncode == 0, log.read_text()[-3000:]


@pytest.fixture  # in tmp_path: GBs, removed when the test passes
def two_swaths(tmp_path: Path, fixtures_dir: Path, isce2_env_script: Path) -> Path:
    return user_stack_config(
        tmp_path,
        next((fixtures_dir / "safe_pixels").glob("*.zip")),
        isce2_env_script,
        name="real-isce2-swaths",
        dates=2,
        offsets_m=(0.0, 0.004),
        deformation=BOWL,
        polarization="vh",
        bbox=BBOX,
        dem_snwe=DEM_SNWE,
        end="2021-04-20",
        topsstack={"swaths": [1, 2], "connections": 1},
    )


def test_lines_split_by_swath_write_the_same_bytes_and_resume_per_piece(
    two_swaths: Path, isce2_env_script: Path
) -> None:
    from insarflow.tasks.isce2_env import probe_isce2
    from insarflow.tasks.isce_io import product_digests
    from insarflow.tasks.shell import run_command
    from insarflow.tasks.topsstack import multicore
    from insarflow.tasks.topsstack.runfiles import parse_run_files

    root = two_swaths.parent
    stack_dir = root / "work" / "stack"
    log = root / "run.log"

    # 1. The stage runs the five lines as one task per swath.
    _run_topsstack(two_swaths, log)
    first = _markers(stack_dir)
    for step, (key, _) in SPLIT.items():
        assert {f"{step}-{key}_IW1", f"{step}-{key}_IW2"} <= first.keys(), sorted(first)
        assert f"{step}-{key}" not in first
    piece_log = (root / "work" / "logs" / "fullBurst_geo2rdr" / f"{SECONDARY}_IW2.log").read_text()
    assert "isce_swath.py: swath 2 of: SentinelWrapper.py -c" in piece_log
    assert "unwrap-" + PAIR in first  # the stage went to its end

    # 2. A piece whose marker is gone runs again, with what needs it; the other swath does not.
    # (the last split step's piece: what needs it is the pair's merge, filter and unwrap)
    (stack_dir / ".insarflow" / "done" / f"generate_burst_igram-{PAIR}_IW2.json").unlink()
    _run_topsstack(two_swaths, log)
    again = _markers(stack_dir)
    assert again.keys() == first.keys()
    reran = {label for label in first if again[label] != first[label]}
    assert {f"generate_burst_igram-{PAIR}_IW2", f"unwrap-{PAIR}"} <= reran, sorted(reran)
    assert not any(label.endswith("_IW1") for label in reran), sorted(reran)
    assert f"fullBurst_resample-{SECONDARY}_IW2" not in reran  # the piece before it is done

    # 3. The lines as written (ISCE2 looping over both swaths) write the same bytes.
    full = os.environ.get(FULL_ENV) == "1"
    compared = {k: v for k, v in SPLIT.items() if full or k != multicore.TOPO_STEP}
    folders = sorted({stack_dir / folder for _, written in compared.values() for folder in written})
    by_pieces = {folder: product_digests(folder) for folder in folders}
    assert all(len(files) > 4 for files in by_pieces.values()), by_pieces
    for folder in folders:
        folder.rename(folder.with_name(folder.name + ".pieces"))
    isce2 = probe_isce2(isce2_env_script, log_path=root / "isce2-env.log")
    lines = {(ln.step, ln.key): ln for ln in parse_run_files(stack_dir)}
    for step, (key, _) in compared.items():
        line = lines[(step, key)]
        # topo on the 2 cores (numProcess changes how it runs, not what it writes)
        how = multicore.launch(line, cores=2, memory_mb=4000, unwrap_in_tiles=False)
        command, env = (how.command, {**isce2.env, **how.env}) if how else (line.command, isce2.env)
        run_command(command, log_path=root / "as-written.log", cwd=stack_dir, env=env)
    for folder in folders:
        assert product_digests(folder) == by_pieces[folder], folder
