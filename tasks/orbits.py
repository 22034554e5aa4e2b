"""Sentinel-1 orbit files (EOF) for each SAFE scene: precise when published, else restituted.

Local files in the orbit directory are reused when their validity window (from the ESA
file name) covers the scene plus a margin; otherwise sentineleof fetches one, in-process,
with credentials passed programmatically. Each scene gets an :class:`OrbitChoice` so the
run report can list dates processed with restituted orbits, to redo later.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from prefect import task
from prefect.cache_policies import NO_CACHE

from insarflow import atomic
from insarflow.tasks.credentials import Credentials, find_credentials
from insarflow.tasks.errors import PermanentError, retry_condition

log = logging.getLogger(__name__)


OrbitKind = Literal["precise", "restituted"]

_SAFE = re.compile(
    r"(?P<mission>S1[A-D])_(?P<mode>\w{2})_(?P<ptype>\w{3})\w_\w{4}_"
    r"(?P<start>\d{8}T\d{6})_(?P<stop>\d{8}T\d{6})_"
)
_EOF = re.compile(
    r"^(?P<mission>S1[A-D])_OPER_AUX_(?P<type>POEORB|RESORB)_OPOD_(?P<created>\d{8}T\d{6})_"
    r"V(?P<start>\d{8}T\d{6})_(?P<stop>\d{8}T\d{6})\.EOF$"
)
_KINDS: dict[str, OrbitKind] = {"POEORB": "precise", "RESORB": "restituted"}
_EOF_END = b"</Earth_Explorer_File>"


class OrbitError(PermanentError):
    """No orbit covers a scene; the message names the scene and what was tried."""


def _ts(value: str) -> datetime:
    return datetime.strptime(value, "%Y%m%dT%H%M%S").replace(tzinfo=UTC)


@dataclass(frozen=True)
class SafeScene:
    """The mission and sensing window of a SAFE product, from its name."""

    name: str
    mission: str
    start: datetime
    stop: datetime

    @property
    def date(self) -> str:
        """Acquisition date, YYYYMMDD."""
        return self.start.strftime("%Y%m%d")


@dataclass(frozen=True)
class OrbitFile:
    """An EOF file and its validity window, from its ESA name."""

    path: Path
    mission: str
    kind: OrbitKind
    created: datetime
    valid_start: datetime
    valid_stop: datetime

    def covers(self, scene: SafeScene, margin: timedelta) -> bool:
        """True when this orbit is for the scene's mission and spans it plus ``margin``."""
        return (
            self.mission == scene.mission
            and self.valid_start <= scene.start - margin
            and self.valid_stop >= scene.stop + margin
        )


@dataclass(frozen=True)
class OrbitChoice:
    """The orbit chosen for a scene; ``kind`` restituted means: redo when precise appears."""

    scene: str
    date: str
    path: Path
    kind: OrbitKind


OrbitDownloader = Callable[[SafeScene, OrbitKind, Path], list[Path]]


def parse_safe_name(path: str | Path) -> SafeScene:
    """Parse ``S1A_IW_SLC__1SDV_<start>_<stop>_...`` (a .zip or .SAFE path or bare name)."""
    name = Path(path).name
    for suffix in (".zip", ".SAFE"):
        name = name.removesuffix(suffix)
    match = _SAFE.match(name)
    if match is None:
        raise OrbitError(
            f"{path}: not a Sentinel-1 SAFE name (expected e.g. "
            "S1A_IW_SLC__1SDV_20250406T022008_20250406T022035_058630_07421F_93A7.zip)"
        )
    return SafeScene(
        name=name,
        mission=match["mission"],
        start=_ts(match["start"]),
        stop=_ts(match["stop"]),
    )


def parse_orbit_name(path: str | Path) -> OrbitFile | None:
    """Parse an ESA EOF name (``..._V20220827T225942_20220829T005942.EOF``); None if not one."""
    p = Path(path)
    match = _EOF.match(p.name)
    if match is None:
        return None
    return OrbitFile(
        path=p,
        mission=match["mission"],
        kind=_KINDS[match["type"]],
        created=_ts(match["created"]),
        valid_start=_ts(match["start"]),
        valid_stop=_ts(match["stop"]),
    )


def is_valid_orbit_file(path: Path) -> bool:
    """True when the file is non-empty and ends with the EOF closing tag (not truncated)."""
    try:
        size = path.stat().st_size
        if size < len(_EOF_END):
            return False
        with path.open("rb") as fh:
            fh.seek(max(0, size - 256))
            return _EOF_END in fh.read()
    except OSError:
        return False


def local_orbits(orbit_dir: Path) -> list[OrbitFile]:
    """Valid EOF files in ``orbit_dir``."""
    if not orbit_dir.is_dir():
        return []
    found = [parse_orbit_name(p) for p in sorted(orbit_dir.glob("S1*_OPER_AUX_*ORB_*.EOF"))]
    return [o for o in found if o is not None and is_valid_orbit_file(o.path)]


def find_local_orbit(
    scene: SafeScene, orbit_dir: Path, kind: OrbitKind, margin: timedelta
) -> OrbitFile | None:
    """The newest local orbit of ``kind`` covering ``scene``, or None."""
    candidates = [o for o in local_orbits(orbit_dir) if o.kind == kind and o.covers(scene, margin)]
    return max(candidates, key=lambda o: o.created) if candidates else None


def orbit_in_use(safe: str | Path, orbit_dir: Path, margin_s: float = 60.0) -> str:
    """Name of the orbit file in ``orbit_dir`` that unpacking ``safe`` reads: the newest precise
    orbit covering it, else the newest restituted one (the preference of :func:`select_orbit`
    and of ISCE2's reader); "" when none covers it or ``safe`` is not a SAFE name."""
    try:
        scene = parse_safe_name(safe)
    except OrbitError:
        return ""
    kinds: tuple[OrbitKind, ...] = ("precise", "restituted")
    for kind in kinds:
        found = find_local_orbit(scene, orbit_dir, kind, timedelta(seconds=margin_s))
        if found is not None:
            return found.path.name
    return ""


def _adopt(paths: Sequence[Path], orbit_dir: Path) -> None:
    """Move freshly downloaded EOFs into ``orbit_dir`` (atomic rename), keeping ESA names."""
    orbit_dir.mkdir(parents=True, exist_ok=True)
    for path in paths:
        if parse_orbit_name(path) is None or not is_valid_orbit_file(path):
            log.warning("ignoring downloaded file %s: not a complete EOF", path.name)
            continue
        if path.parent.resolve() == orbit_dir.resolve():
            continue
        with atomic.replacing(orbit_dir / path.name) as staged:
            shutil.copyfile(path, staged)


def _not_covering(scene: SafeScene, orbit_dir: Path, kind: OrbitKind) -> str:
    """The local EOFs of ``kind`` for the scene's mission that do not cover it, named."""
    others = [
        o
        for o in (parse_orbit_name(p) for p in sorted(orbit_dir.glob("S1*_OPER_AUX_*ORB_*.EOF")))
        if o is not None and o.kind == kind and o.mission == scene.mission
    ]
    if not others:
        return ""
    shown = [
        f"{o.path.name} ("
        + (
            f"valid {o.valid_start:%Y-%m-%dT%H:%M:%S}..{o.valid_stop:%Y-%m-%dT%H:%M:%S}"
            if is_valid_orbit_file(o.path)
            else "incomplete file"
        )
        + ")"
        for o in others[:3]
    ]
    more = f" and {len(others) - 3} more" if len(others) > 3 else ""
    return f" covering it (found {', '.join(shown)}{more})"


def select_orbit(
    scene: SafeScene,
    orbit_dir: Path,
    *,
    downloader: OrbitDownloader | None = None,
    margin_s: float = 60.0,
) -> OrbitChoice:
    """Pick (fetching if needed) the best orbit for ``scene``: precise, else restituted.

    Order: local precise; download precise; local restituted; download restituted.
    ``downloader`` (default: sentineleof, no credentials) writes into a staging directory.
    """
    margin = timedelta(seconds=margin_s)
    logger = log
    fetch = downloader or sentineleof_downloader()
    tried: list[str] = []
    orbit_dir.mkdir(parents=True, exist_ok=True)
    kinds: tuple[OrbitKind, ...] = ("precise", "restituted")
    for kind in kinds:
        local = find_local_orbit(scene, orbit_dir, kind, margin)
        if local is not None:
            return OrbitChoice(scene.name, scene.date, local.path, kind)
        tried.append(f"no local {kind} orbit in {orbit_dir}{_not_covering(scene, orbit_dir, kind)}")
        with tempfile.TemporaryDirectory(prefix=".eof-", dir=orbit_dir) as tmp:
            try:
                got = fetch(scene, kind, Path(tmp))
            except Exception as exc:
                logger.warning("%s: %s orbit download failed: %s", scene.name, kind, exc)
                tried.append(f"{kind} download failed: {type(exc).__name__}: {exc}")
                continue
            _adopt(got, orbit_dir)
        local = find_local_orbit(scene, orbit_dir, kind, margin)
        if local is not None:
            logger.info("%s: using %s orbit %s", scene.name, kind, local.path.name)
            return OrbitChoice(scene.name, scene.date, local.path, kind)
        tried.append(f"{kind} download gave no file covering the scene")
    raise OrbitError(
        f"no orbit covers scene {scene.name} ({scene.mission} {scene.start:%Y-%m-%dT%H:%M:%S}"
        f"..{scene.stop:%H:%M:%S} UTC, margin {margin_s:.0f} s): "
        + "; ".join(tried)
        + ". Put a matching EOF into the orbit directory or retry when the network is back."
    )


def select_orbits(
    safe_files: Sequence[str | Path],
    orbit_dir: Path,
    *,
    downloader: OrbitDownloader | None = None,
    margin_s: float = 60.0,
) -> list[OrbitChoice]:
    """:func:`select_orbit` for every SAFE; all scenes are tried before failures are raised."""
    choices: list[OrbitChoice] = []
    errors: list[str] = []
    fetch = downloader or sentineleof_downloader()
    for safe in safe_files:
        try:
            scene = parse_safe_name(safe)
            choices.append(select_orbit(scene, orbit_dir, downloader=fetch, margin_s=margin_s))
        except OrbitError as exc:
            errors.append(str(exc))
    if errors:
        raise OrbitError(f"{len(errors)} scene(s) without orbit:\n" + "\n".join(errors))
    restituted = [c.date for c in choices if c.kind == "restituted"]
    if restituted:
        log.warning(
            "restituted orbits for %s: redo these dates once precise orbits are published",
            ", ".join(sorted(set(restituted))),
        )
    return choices


def sentineleof_downloader(
    *,
    esa: Credentials | None = None,
    max_workers: int = 1,
) -> OrbitDownloader:
    """A downloader using sentineleof: Copernicus Data Space when ``esa`` is given, else ASF."""

    def download(scene: SafeScene, kind: OrbitKind, save_dir: Path) -> list[Path]:
        from eof.download import download_eofs

        paths = download_eofs(
            orbit_dts=[scene.start],
            missions=[scene.mission],
            save_dir=str(save_dir),
            orbit_type=kind,
            force_asf=esa is None,
            cdse_user=esa.username if esa else "",
            cdse_password=esa.password.get_secret_value() if esa else "",
            max_workers=max_workers,
        )
        return [Path(p) for p in paths]

    return download


@task(
    name="fetch-orbits",
    tags=["network"],
    retries=1,
    retry_delay_seconds=60,
    retry_condition_fn=retry_condition,
    cache_policy=NO_CACHE,
)
def fetch_orbits_task(
    safe_files: Sequence[str | Path],
    orbit_dir: Path,
    *,
    credentials: Credentials | None = None,
    esa_credentials: Credentials | None = None,
) -> list[OrbitChoice]:
    """Prefect task: an orbit per SAFE (Copernicus Data Space if ESA credentials exist, else ASF).

    ``credentials`` (Earthdata) is accepted for symmetry; ASF serves orbits publicly.
    """
    esa = esa_credentials or find_credentials("copernicus")
    return select_orbits(safe_files, orbit_dir, downloader=sentineleof_downloader(esa=esa))
