"""A planted Earthdata password never shows up anywhere.

The reference run (conftest) has the password in ``EARTHDATA_PASSWORD``/``ESA_PASSWORD``
and in a mode-600 ``~/.netrc``. Searched: its output, every file of its work directory
(logs, MintPy files, products, report, configs), the Prefect API (logs, artifacts, flow run
parameters), and the command line of every process sampled while it ran. The acquisition
paths that use credentials run in-process against local servers, with a tool that echoes
the password, and are searched the same way (Python logs, Prefect logs, exceptions, files).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect import flow

from insarflow.tasks.credentials import CredentialsError, EarthdataAuth, load_earthdata_credentials
from insarflow.tasks.dem import DemError, stitch_isce2_dem
from insarflow.tasks.download import DownloadItem, download_files
from tests.acquisition.fault_server import FaultServer, status
from tests.reliability.conftest import PlantedSecret, ReferenceRun
from tests.reliability.helpers import FIGURES

pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning:affine")


def prefect_records() -> Iterator[tuple[str, str]]:
    """(what, text) of every log, artifact and flow-run parameter set in the Prefect API."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        offset = 0
        while logs := client.read_logs(limit=200, offset=offset):
            for log in logs:
                yield "log", log.message
            offset += len(logs)
        offset = 0
        while artifacts := client.read_artifacts(limit=200, offset=offset):
            for artifact in artifacts:
                yield "artifact", f"{artifact.key} {artifact.description} {artifact.data}"
            offset += len(artifacts)
        offset = 0
        while runs := client.read_flow_runs(limit=200, offset=offset):
            for run in runs:
                yield "flow run", f"{run.name} {json.dumps(run.parameters, default=str)}"
                yield "flow run state", str(run.state.message if run.state else "")
            offset += len(runs)


def files_leaking(root: Path, secret: PlantedSecret) -> list[Path]:
    needles = (secret.password.encode(), secret.basic_token.encode())
    return [
        p
        for p in sorted(root.rglob("*"))
        if p.is_file() and any(n in p.read_bytes() for n in needles)
    ]


@pytest.mark.e2e
def test_full_flow_leaks_no_credential(
    reference_run: ReferenceRun, planted_secret: PlantedSecret
) -> None:
    secret = planted_secret
    assert not secret.leaks(reference_run.output)
    root = reference_run.config_path.parent
    scanned = sum(1 for p in root.rglob("*") if p.is_file())
    assert files_leaking(root, secret) == []
    records = list(prefect_records())
    assert any("synthetic acquisitions" in text for _, text in records), "no run log read back"
    assert any(what == "artifact" for what, _ in records)
    assert [what for what, text in records if secret.leaks(text)] == []
    sampler = reference_run.sampler
    seen = sampler.seen
    # the sampler did see the line and MintPy processes of the run
    assert any("SentinelWrapper.py" in c for c in seen) and any("smallbaseline" in c for c in seen)
    assert [c for c in seen if secret.leaks(c)] == []
    FIGURES["secret scan: files"] += scanned
    FIGURES["secret scan: Prefect records"] += len(records)
    FIGURES["secret scan: process samples"] += sampler.samples
    FIGURES["secret scan: distinct command lines"] += len(seen)


CHATTY_DEM = """\
import os, sys
from pathlib import Path
netrc = (Path(os.environ["HOME"]) / ".netrc").read_text()
Path(os.environ["RELIABILITY_RECORD"]).write_text(json.dumps({
    "argv": sys.argv,
    "netrc_has_login": "login " + os.environ["RELIABILITY_USER"] in netrc,
    "netrc_mode": oct(os.stat(Path(os.environ["HOME"]) / ".netrc").st_mode & 0o777),
}))
print("dem.py: using credentials from ~/.netrc:")
print(netrc)
print("dem.py: no tiles for this area")
sys.exit(1)
"""


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog, also fed by the ``prefect`` and ``insarflow`` loggers, at DEBUG."""
    caplog.set_level(logging.DEBUG)
    loggers = [logging.getLogger(name) for name in ("prefect", "insarflow")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(caplog.handler)
        logger.setLevel(logging.DEBUG)
    yield caplog
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(caplog.handler)
        logger.setLevel(level)


@pytest.fixture
def chatty_dem_bin(tmp_path: Path) -> Path:
    """A ``dem.py`` that prints the netrc it was given (as a verbose tool may), then fails."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "dem.py"
    script.write_text(f"#!{sys.executable}\nimport json\n{CHATTY_DEM}")
    script.chmod(0o755)
    return bin_dir


def test_acquisition_with_credentials_leaks_nothing(
    planted_secret: PlantedSecret,
    chatty_dem_bin: Path,
    tmp_path: Path,
    all_logs: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    prefect_harness: None,
) -> None:
    secret = planted_secret
    for name, value in secret.env().items():
        monkeypatch.setenv(name, value)
    record = tmp_path / "dem-record.json"
    monkeypatch.setenv("RELIABILITY_RECORD", str(record))
    monkeypatch.setenv("RELIABILITY_USER", secret.username)
    from_netrc = load_earthdata_credentials(env={}, netrc_path=secret.home / ".netrc")
    from_env = load_earthdata_credentials()
    assert from_env.source == "env:EARTHDATA_USERNAME" and from_netrc.source.startswith("netrc:")
    data = b"slc" * 30_000
    errors: list[str] = []

    @flow(name="credentials-leak-check")
    def acquire() -> None:
        with FaultServer() as server:
            url = server.add_file(
                "scene.zip",
                data,
                faults=[status(503), status(401)],
                basic_auth=(secret.username, secret.password),
            )
            auth = EarthdataAuth(from_env, auth_hosts=("127.0.0.1",), require_https=False)
            item = DownloadItem(url, tmp_path / "SLC" / "scene.zip", size=len(data))
            try:  # the injected 401 is permanent: the download stops there
                download_files([item], auth=auth, backoff_initial_s=0.01)
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
            # the credentials are right: a clean retry gets the file through Basic auth
            download_files([item], auth=auth, backoff_initial_s=0.01)
        try:
            stitch_isce2_dem(
                (34, 35, 116, 118),
                tmp_path / "dem",
                credentials=from_netrc,
                log_path=tmp_path / "logs" / "dem.log",
                extra_path=[chatty_dem_bin],
            )
        except DemError as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    acquire()
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=30)
    assert (tmp_path / "SLC" / "scene.zip").read_bytes() == data
    assert len(errors) == 2 and "HTTP 401" in errors[0] and "DemError" in errors[1], errors
    seen = json.loads(record.read_text())
    assert seen["netrc_has_login"] and seen["netrc_mode"] == "0o600"  # the tool got them ...
    texts = {
        "exceptions": "\n".join(errors),
        "dem.py command line": " ".join(seen["argv"]),
        "repr": f"{from_env!r} {from_netrc} {EarthdataAuth(from_env)!r}",
        "python logs": "\n".join(r.getMessage() for r in all_logs.records),
        "prefect": "\n".join(text for _, text in prefect_records()),
    }
    assert "for flow 'credentials-leak-check'" in texts["prefect"]
    assert "scene.zip: attempt 1 failed (HTTP 503)" in texts["python logs"]
    dem_log = (tmp_path / "logs" / "dem.log").read_text()
    assert "dem.py: using credentials from ~/.netrc:" in dem_log  # ... and said so, redacted
    assert "password ********" in dem_log and "password ********" in texts["exceptions"]
    assert [k for k, v in texts.items() if secret.leaks(v)] == []
    assert files_leaking(tmp_path, secret) == []
    assert not any(p.name == ".netrc" for p in tmp_path.rglob("*"))  # private HOME removed
    FIGURES["secret scan: acquisition texts"] += len(texts)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_netrc_readable_by_others_is_refused(
    mode: int, tmp_path: Path, planted_secret: PlantedSecret
) -> None:
    netrc = tmp_path / ".netrc"
    netrc.write_text((planted_secret.home / ".netrc").read_text())
    netrc.chmod(mode)
    with pytest.raises(CredentialsError) as info:
        load_earthdata_credentials(env={}, netrc_path=netrc)
    message = str(info.value)
    assert str(netrc) in message and f"chmod 600 {netrc}" in message
    assert f"{mode:04o}" in message
    assert not planted_secret.leaks(message)
