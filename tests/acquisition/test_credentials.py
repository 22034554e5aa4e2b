"""Credentials: sources, permission checks, Earthdata redirects, and no leaks anywhere."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from insarflow.tasks.credentials import (
    Credentials,
    CredentialsError,
    EarthdataAuth,
    find_credentials,
    load_credentials,
    load_earthdata_credentials,
)
from insarflow.tasks.download import DownloadItem, HTTPStatusDownloadError, download_files
from tests.acquisition.fault_server import FaultServer, Reply, Request

pytestmark = [
    # asf_search's WKT repair calls shapely.ops.transform, deprecated in shapely 2.1.
    pytest.mark.filterwarnings(
        "ignore:The 'shapely.ops.transform\\(\\)' function is deprecated:DeprecationWarning"
    ),
]

PLANTED = "Pl4nted-S3cret-77"
NETRC = f"""\
machine urs.earthdata.nasa.gov
    login earth-user
    password {PLANTED}
machine dataspace.copernicus.eu login esa-user password esa-{PLANTED}
"""


@pytest.fixture
def netrc_file(tmp_path: Path) -> Path:
    path = tmp_path / ".netrc"
    path.write_text(NETRC)
    path.chmod(0o600)
    return path


def test_netrc_entries_are_read(netrc_file: Path) -> None:
    earth = load_credentials("earthdata", netrc_path=netrc_file, env={})
    esa = load_credentials("copernicus", netrc_path=netrc_file, env={})
    assert (earth.username, earth.password.get_secret_value()) == ("earth-user", PLANTED)
    assert esa.username == "esa-user" and esa.source == f"netrc:{netrc_file}"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_readable_netrc_is_refused(netrc_file: Path, mode: int) -> None:
    netrc_file.chmod(mode)
    with pytest.raises(CredentialsError) as err:
        load_credentials("earthdata", netrc_path=netrc_file, env={})
    assert f"run `chmod 600 {netrc_file}`" in str(err.value)
    assert f"mode {mode:04o}" in str(err.value)
    assert PLANTED not in str(err.value)


def test_unparsable_netrc_does_not_quote_it(tmp_path: Path) -> None:
    path = tmp_path / ".netrc"
    path.write_text(f"machine urs.earthdata.nasa.gov login u passwd {PLANTED} extra\n")
    path.chmod(0o600)
    with pytest.raises(CredentialsError, match="cannot parse line") as err:
        load_credentials("earthdata", netrc_path=path, env={})
    assert PLANTED not in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_environment_wins_over_netrc(netrc_file: Path) -> None:
    env = {"EARTHDATA_USERNAME": "env-user", "EARTHDATA_PASSWORD": "env-pass"}
    creds = load_credentials("earthdata", netrc_path=netrc_file, env=env)
    assert (creds.username, creds.source) == ("env-user", "env:EARTHDATA_USERNAME")
    with pytest.raises(CredentialsError, match="ESA_PASSWORD is not set"):
        load_credentials("copernicus", netrc_path=netrc_file, env={"ESA_USERNAME": "x"})


def test_missing_credentials_say_how_to_add_them(tmp_path: Path) -> None:
    absent = tmp_path / "none" / ".netrc"
    with pytest.raises(CredentialsError) as err:
        load_credentials("earthdata", netrc_path=absent, env={})
    message = str(err.value)
    assert "EARTHDATA_USERNAME and EARTHDATA_PASSWORD" in message
    assert f"'machine urs.earthdata.nasa.gov login <user> password <password>' to {absent}" in (
        message
    )
    assert find_credentials("copernicus", netrc_path=absent, env={}) is None


def test_secret_never_shows_in_repr_str_or_dumps(netrc_file: Path) -> None:
    creds = load_credentials("earthdata", netrc_path=netrc_file, env={})
    for text in (
        repr(creds),
        str(creds),
        f"{creds}",
        creds.model_dump_json(),
        str(creds.model_dump()),
        repr(EarthdataAuth(creds)),
    ):
        assert PLANTED not in text
    assert "earth-user" in repr(creds)
    assert PLANTED in creds.secrets()
    assert creds.basic_token() in creds.secrets()


def test_secret_block_loader_formats() -> None:
    def loader(value: object) -> Callable[[str], object]:
        return lambda name: value

    for value in (
        {"username": "u", "password": PLANTED},
        f"u:{PLANTED}",
        f'{{"username": "u", "password": "{PLANTED}"}}',
    ):
        creds = load_credentials("earthdata", secret_block="blk", secret_loader=loader(value))
        assert creds.username == "u" and creds.password.get_secret_value() == PLANTED
        assert creds.source == "prefect-secret:blk"
    with pytest.raises(CredentialsError, match="must hold") as err:
        load_credentials("earthdata", secret_block="blk", secret_loader=loader(PLANTED))
    assert PLANTED not in str(err.value)


def test_prefect_secret_block(prefect_harness: None) -> None:
    from prefect.blocks.system import Secret

    Secret(value={"username": "block-user", "password": PLANTED}).save(
        "insarflow-test-earthdata", overwrite=True
    )
    creds = load_earthdata_credentials(secret_block="insarflow-test-earthdata")
    assert (creds.username, creds.password.get_secret_value()) == ("block-user", PLANTED)
    with pytest.raises(CredentialsError, match="could not be loaded"):
        load_earthdata_credentials(secret_block="no-such-block")


# ------------------------------------------------------------- Earthdata redirects


@pytest.fixture
def earthdata() -> Iterator[tuple[FaultServer, FaultServer]]:
    """A data host that redirects to a login host (another origin), like ASF and URS."""
    with FaultServer() as data_host, FaultServer() as urs:
        payload = b"SAFE-zip-bytes" * 1000

        def product(req: Request) -> Reply:
            if "asf-urs=ok" in req.headers.get("cookie", ""):
                return Reply(302, {"Location": data_host.url("storage/f.zip?sig=abc")})
            back = quote(data_host.url("login"), safe="")
            return Reply(302, {"Location": urs.url(f"oauth/authorize?redirect_uri={back}")})

        def authorize(req: Request) -> Reply:
            expected = httpx.BasicAuth("earth-user", PLANTED)._auth_header
            if req.headers.get("authorization") != expected:
                return Reply(401, {"WWW-Authenticate": "Basic"}, b"login required")
            return Reply(302, {"Location": req.query["redirect_uri"] + "?code=c0de"})

        def login(req: Request) -> Reply:
            return Reply(
                302, {"Location": data_host.url("f.zip"), "Set-Cookie": "asf-urs=ok; Path=/"}
            )

        data_host.route("f.zip", product)
        data_host.route("login", login)
        data_host.add_file("storage/f.zip", payload)
        urs.route("oauth/authorize", authorize)
        yield data_host, urs


def _creds() -> Credentials:
    return Credentials(service="earthdata", username="earth-user", password=PLANTED, source="test")


def test_earthdata_auth_keeps_credentials_for_login_host_only(
    earthdata: tuple[FaultServer, FaultServer], tmp_path: Path
) -> None:
    data_host, urs = earthdata
    auth = EarthdataAuth(_creds(), auth_hosts=(f"127.0.0.1:{urs.port}",), require_https=False)
    item = DownloadItem(data_host.url("f.zip"), tmp_path / "f.zip", size=14000)
    download_files([item], auth=auth, backoff_initial_s=0.01)
    assert item.dest.read_bytes() == b"SAFE-zip-bytes" * 1000
    assert [r.status for r in urs.requests()] == [302]
    assert all("authorization" in r.headers for r in urs.requests())
    assert not any("authorization" in r.headers for r in data_host.requests())
    assert [r.path for r in data_host.requests()] == [
        "/f.zip",
        "/login",
        "/f.zip",
        "/storage/f.zip",
    ]


def test_plain_basic_auth_loses_the_header_on_the_redirect(
    earthdata: tuple[FaultServer, FaultServer], tmp_path: Path
) -> None:
    data_host, _ = earthdata
    item = DownloadItem(data_host.url("f.zip"), tmp_path / "f.zip", size=14000)
    with pytest.raises(HTTPStatusDownloadError, match="HTTP 401") as err:
        download_files([item], auth=httpx.BasicAuth("earth-user", PLANTED))
    assert PLANTED not in str(err.value)
    assert not item.dest.exists()


def test_credentials_are_not_sent_over_plain_http_by_default(
    earthdata: tuple[FaultServer, FaultServer], tmp_path: Path
) -> None:
    data_host, urs = earthdata
    auth = EarthdataAuth(_creds(), auth_hosts=(f"127.0.0.1:{urs.port}",))
    item = DownloadItem(data_host.url("f.zip"), tmp_path / "f.zip")
    with pytest.raises(HTTPStatusDownloadError, match="HTTP 401"):
        download_files([item], auth=auth)
    assert not any("authorization" in r.headers for r in urs.requests())


# ------------------------------------------------------------- nothing leaks


LEAKY_DEM_PY = """\
#!{python}
# A dem.py stand-in that echoes its .netrc (as a careless tool might) and fails.
import os, sys
from pathlib import Path
print(Path(os.environ["HOME"], ".netrc").read_text())
print("args:", sys.argv[1:])
sys.exit(3)
"""


def _flush_api_logs() -> None:
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)


def test_planted_secret_appears_nowhere(
    prefect_harness: None,
    fixtures_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import eof.download
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )

    from insarflow.tasks.dem import prepare_dem_task
    from insarflow.tasks.download import download_files_task
    from insarflow.tasks.orbits import fetch_orbits_task
    from insarflow.tasks.search import search_scenes_task
    from tests.acquisition.cmr_server import FakeCMR, load_records

    monkeypatch.setenv("EARTHDATA_USERNAME", "earth-user")
    monkeypatch.setenv("EARTHDATA_PASSWORD", PLANTED)
    monkeypatch.setenv("ESA_USERNAME", "esa-user")
    monkeypatch.setenv("ESA_PASSWORD", "esa-" + PLANTED)
    earth = load_earthdata_credentials()
    esa = load_credentials("copernicus")

    def failing_eof(**kwargs: Any) -> list[str]:
        assert kwargs["cdse_password"] == "esa-" + PLANTED  # handed over in-process
        raise RuntimeError("CDSE access token creation failed. Reason: 401 Unauthorized")

    monkeypatch.setattr(eof.download, "download_eofs", failing_eof)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dem.py").write_text(LEAKY_DEM_PY.format(python=sys.executable))
    (bin_dir / "dem.py").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")

    texts: list[str] = []
    run_ids: list[Any] = []
    with FaultServer() as server:
        cmr = FakeCMR(server, load_records(fixtures_dir / "asf_search" / "Fairbanks_S1_stack.yml"))
        url = server.add_file("s.zip", b"z" * 100, basic_auth=("earth-user", "other-password"))

        @flow
        def acquire() -> None:
            from prefect.runtime import flow_run

            run_ids.append(flow_run.id)
            search_scenes_task(
                (64.5, 65.3, -148.5, -146.0),
                track=94,
                start=date(2021, 1, 1),
                end=date(2021, 1, 31),
                session=cmr.session(),
                cmr_host=cmr.host,
            )
            steps: list[Callable[[], object]] = [
                lambda: download_files_task(
                    [DownloadItem(url, tmp_path / "s.zip", size=100)], credentials=earth
                ),
                lambda: fetch_orbits_task(
                    ["S1A_IW_SLC__1SDV_20230101T000000_20230101T000027_046000_058000_ABCD.zip"],
                    tmp_path / "orbits",
                    credentials=earth,
                    esa_credentials=esa,
                ),
                lambda: prepare_dem_task(
                    (32.3, 33.6, 115.4, 116.7),
                    tmp_path / "dem",
                    source="isce2",
                    credentials=earth,
                    log_path=tmp_path / "dem.log",
                ),
            ]
            for step in steps:
                try:
                    step()
                except Exception as exc:
                    texts.append("".join(traceback.format_exception(exc)))

        with caplog.at_level(logging.DEBUG):
            acquire()
        _flush_api_logs()

    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=run_ids)))
        artifacts = client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=run_ids))
        )
    texts += [caplog.text, (tmp_path / "dem.log").read_text()]
    texts += [log.message for log in logs]
    texts += [str(a.data) + str(a.description) for a in artifacts]

    # The captured material is the real thing: each path failed or reported as expected.
    joined = "\n".join(texts)
    assert "HTTP 401 for " + url in joined
    assert "CDSE access token creation failed" in joined
    assert "login earth-user" in joined and "password ********" in joined  # dem.py echo
    assert any(a.key == "scene-search" for a in artifacts)
    assert any("password ********" in log.message for log in logs)  # shipped to the API
    assert len(texts) >= 6
    for text in texts:
        assert PLANTED not in text
        assert earth.basic_token() not in text
