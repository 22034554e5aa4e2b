"""Orbit selection with the real EOF files (copied to tmp) and an injected downloader."""

from __future__ import annotations

import logging
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from insarflow.tasks.credentials import Credentials
from insarflow.tasks.orbits import (
    OrbitError,
    OrbitKind,
    SafeScene,
    parse_orbit_name,
    parse_safe_name,
    select_orbit,
    select_orbits,
    sentineleof_downloader,
)

POEORB_0828 = "S1A_OPER_AUX_POEORB_OPOD_20220917T081749_V20220827T225942_20220829T005942.EOF"
POEORB_1011 = "S1A_OPER_AUX_POEORB_OPOD_20221031T083817_V20221010T225942_20221012T005942.EOF"
RESORB_1024 = "S1A_OPER_AUX_RESORB_OPOD_20221024T205436_V20221024T170308_20221024T202038.EOF"


def _scene(start: datetime, mission: str = "S1A", seconds: int = 27) -> SafeScene:
    stop = start + timedelta(seconds=seconds)
    name = f"{mission}_IW_SLC__1SDV_{start:%Y%m%dT%H%M%S}_{stop:%Y%m%dT%H%M%S}_045000_056000_ABCD"
    return parse_safe_name(name + ".zip")


@pytest.fixture
def orbit_dir(fixtures_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "orbits"
    target.mkdir()
    for eof in (fixtures_dir / "orbits").glob("*.EOF"):
        shutil.copyfile(eof, target / eof.name)
    return target


class Recorder:
    """A downloader that records its calls and serves prepared files per orbit kind."""

    def __init__(
        self,
        files: dict[OrbitKind, list[Path]] | None = None,
        fail: dict[OrbitKind, Exception] | None = None,
    ) -> None:
        self.files = files or {}
        self.fail = fail or {}
        self.calls: list[tuple[str, OrbitKind]] = []

    def __call__(self, scene: SafeScene, kind: OrbitKind, save_dir: Path) -> list[Path]:
        self.calls.append((scene.name, kind))
        if kind in self.fail:
            raise self.fail[kind]
        out = []
        for src, name in ((p, p.name) for p in self.files.get(kind, [])):
            dest = save_dir / name
            shutil.copyfile(src, dest)
            out.append(dest)
        return out


def _published(fixtures_dir: Path, tmp_path: Path, name: str, source: str = POEORB_0828) -> Path:
    """A real EOF's content under another ESA name (as the service would publish it)."""
    staged = tmp_path / "published"
    staged.mkdir(exist_ok=True)
    path = staged / name
    shutil.copyfile(fixtures_dir / "orbits" / source, path)
    return path


def test_parse_names(fixtures_dir: Path) -> None:
    orbit = parse_orbit_name(POEORB_0828)
    assert orbit is not None
    assert (orbit.mission, orbit.kind) == ("S1A", "precise")
    assert orbit.valid_start == datetime(2022, 8, 27, 22, 59, 42, tzinfo=UTC)
    assert orbit.valid_stop == datetime(2022, 8, 29, 0, 59, 42, tzinfo=UTC)
    restituted = parse_orbit_name(RESORB_1024)
    assert restituted is not None and restituted.kind == "restituted"
    assert parse_orbit_name("notes.txt") is None

    safes = sorted((fixtures_dir / "safe").glob("*.zip"))
    scene = parse_safe_name(safes[0])
    assert scene.mission == "S1A"
    assert scene.start == datetime(2025, 4, 6, 2, 20, 8, tzinfo=UTC)
    assert scene.stop == datetime(2025, 4, 6, 2, 20, 35, tzinfo=UTC)
    assert scene.date == "20250406"
    with pytest.raises(OrbitError, match="not a Sentinel-1 SAFE name"):
        parse_safe_name("LC08_L1TP_123032.tar")


def test_local_precise_orbit_is_reused_without_network(orbit_dir: Path) -> None:
    never = Recorder(
        fail={"precise": AssertionError("network"), "restituted": AssertionError("network")}
    )
    choice = select_orbit(_scene(datetime(2022, 8, 28, 12)), orbit_dir, downloader=never)
    assert choice.kind == "precise"
    assert choice.path == orbit_dir / POEORB_0828
    assert choice.date == "20220828"
    assert never.calls == []


def test_precise_is_preferred_over_restituted(
    orbit_dir: Path, fixtures_dir: Path, tmp_path: Path
) -> None:
    scene = _scene(datetime(2022, 10, 24, 18))
    assert select_orbit(scene, orbit_dir, downloader=Recorder()).kind == "restituted"
    precise = _published(
        fixtures_dir,
        tmp_path,
        "S1A_OPER_AUX_POEORB_OPOD_20221113T081000_V20221023T225942_20221025T005942.EOF",
    )
    shutil.copyfile(precise, orbit_dir / precise.name)
    choice = select_orbit(scene, orbit_dir, downloader=Recorder())
    assert (choice.kind, choice.path.name) == ("precise", precise.name)


def test_uncovered_scene_calls_the_downloader_and_keeps_esa_names(
    orbit_dir: Path, fixtures_dir: Path, tmp_path: Path
) -> None:
    name = "S1A_OPER_AUX_POEORB_OPOD_20221005T081000_V20220914T225942_20220916T005942.EOF"
    fetch = Recorder({"precise": [_published(fixtures_dir, tmp_path, name)]})
    scene = _scene(datetime(2022, 9, 15, 5))
    choice = select_orbit(scene, orbit_dir, downloader=fetch)
    assert fetch.calls == [(scene.name, "precise")]
    assert choice.kind == "precise" and choice.path == orbit_dir / name
    assert (orbit_dir / name).read_bytes() == (fixtures_dir / "orbits" / POEORB_0828).read_bytes()
    assert not [p for p in orbit_dir.iterdir() if p.name.startswith(".")]


def test_restituted_fallback_when_precise_is_not_published(
    orbit_dir: Path, fixtures_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    resorb = _published(
        fixtures_dir,
        tmp_path,
        "S1A_OPER_AUX_RESORB_OPOD_20250101T030000_V20250101T000000_20250101T033000.EOF",
        source=RESORB_1024,
    )
    fetch = Recorder({"restituted": [resorb]}, fail={"precise": ConnectionError("no POEORB")})
    scene = _scene(datetime(2025, 1, 1, 2))
    with caplog.at_level(logging.WARNING, logger="insarflow.tasks.orbits"):
        choices = select_orbits([scene.name + ".zip"], orbit_dir, downloader=fetch)
    assert fetch.calls == [(scene.name, "precise"), (scene.name, "restituted")]
    assert [(c.kind, c.path.name) for c in choices] == [("restituted", resorb.name)]
    assert "redo these dates once precise orbits are published" in caplog.text
    assert "20250101" in caplog.text


def test_restituted_window_needs_the_margin(orbit_dir: Path) -> None:
    # The RESORB ends 20:20:38; a scene ending 20:20:10 lacks the 60 s margin.
    scene = _scene(datetime(2022, 10, 24, 20, 19, 43))
    with pytest.raises(OrbitError, match="margin 60 s"):
        select_orbit(scene, orbit_dir, downloader=Recorder())
    assert select_orbit(scene, orbit_dir, downloader=Recorder(), margin_s=20).kind == "restituted"


def test_nothing_covers_names_the_scene_and_what_was_tried(orbit_dir: Path) -> None:
    fetch = Recorder(fail={"precise": TimeoutError("dataspace timed out")})
    scene = _scene(datetime(2023, 3, 3, 3))
    with pytest.raises(OrbitError) as err:
        select_orbit(scene, orbit_dir, downloader=fetch)
    message = str(err.value)
    assert scene.name in message
    assert "precise download failed: TimeoutError: dataspace timed out" in message
    assert "restituted download gave no file covering the scene" in message


def test_other_mission_and_truncated_files_are_not_used(
    orbit_dir: Path, fixtures_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(OrbitError):
        select_orbit(
            _scene(datetime(2022, 8, 28, 12), mission="S1B"), orbit_dir, downloader=Recorder()
        )
    path = orbit_dir / POEORB_0828
    path.write_bytes(path.read_bytes()[:5000])  # a download cut short
    fetch = Recorder()
    with pytest.raises(OrbitError):
        select_orbit(_scene(datetime(2022, 8, 28, 12)), orbit_dir, downloader=fetch)
    assert [kind for _, kind in fetch.calls] == ["precise", "restituted"]


def test_select_orbits_reports_every_missing_scene(orbit_dir: Path) -> None:
    scenes = [
        _scene(datetime(2022, 8, 28, 12)),
        _scene(datetime(2023, 1, 1)),
        _scene(datetime(2023, 2, 1)),
    ]
    with pytest.raises(OrbitError, match="2 scene\\(s\\) without orbit") as err:
        select_orbits([s.name for s in scenes], orbit_dir, downloader=Recorder())
    assert scenes[1].name in str(err.value) and scenes[2].name in str(err.value)


def test_sentineleof_is_called_in_process_with_credentials(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import eof.download

    calls: list[dict[str, Any]] = []

    def fake_download_eofs(**kwargs: Any) -> list[str]:
        calls.append(kwargs)
        return []

    monkeypatch.setattr(eof.download, "download_eofs", fake_download_eofs)
    scene = _scene(datetime(2022, 8, 28, 12))
    esa = Credentials(service="copernicus", username="esa-user", password="esa-pass", source="test")
    sentineleof_downloader(esa=esa)(scene, "precise", tmp_path)
    sentineleof_downloader()(scene, "restituted", tmp_path)
    assert calls[0]["cdse_user"] == "esa-user" and calls[0]["cdse_password"] == "esa-pass"
    assert calls[0]["force_asf"] is False and calls[0]["orbit_type"] == "precise"
    assert calls[0]["orbit_dts"] == [scene.start] and calls[0]["missions"] == ["S1A"]
    assert calls[1]["force_asf"] is True and calls[1]["cdse_password"] == ""
    assert calls[1]["orbit_type"] == "restituted"
