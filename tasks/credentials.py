"""Earthdata and Copernicus Data Space credentials, kept out of logs and command lines.

Sources, in order: a Prefect Secret block named by the caller, environment variables
(``EARTHDATA_USERNAME``/``EARTHDATA_PASSWORD``, ``ESA_USERNAME``/``ESA_PASSWORD``), then
``~/.netrc`` (refused unless private, mode 600). A :class:`Credentials` never shows its
password; :class:`EarthdataAuth` is the ``httpx.Auth`` downloads use.
"""

from __future__ import annotations

import base64
import json
import netrc
import os
import stat
from collections.abc import Callable, Generator, Mapping, Sequence
from pathlib import Path
from typing import Literal, cast

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr

Service = Literal["earthdata", "copernicus"]

EARTHDATA_HOST = "urs.earthdata.nasa.gov"
COPERNICUS_HOST = "dataspace.copernicus.eu"
HOSTS: dict[Service, str] = {"earthdata": EARTHDATA_HOST, "copernicus": COPERNICUS_HOST}
ENV_VARS: dict[Service, tuple[str, str]] = {
    "earthdata": ("EARTHDATA_USERNAME", "EARTHDATA_PASSWORD"),
    "copernicus": ("ESA_USERNAME", "ESA_PASSWORD"),
}
SIGNUP: dict[Service, str] = {
    "earthdata": "https://urs.earthdata.nasa.gov/users/new",
    "copernicus": "https://dataspace.copernicus.eu/",
}
# Hosts that may receive Earthdata credentials while following a download's redirects
# (the same domains asf_search trusts); everything else (S3, CloudFront) never sees them.
EARTHDATA_AUTH_DOMAINS = ("urs.earthdata.nasa.gov", "earthdata.nasa.gov", "asf.alaska.edu")

SecretLoader = Callable[[str], object]


class CredentialsError(RuntimeError):
    """No usable credentials; the message says where they were looked for and how to add them."""


class Credentials(BaseModel):
    """A username and password for one service; the password never appears in repr/str."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    service: Service
    username: str
    password: SecretStr
    source: str

    def __repr__(self) -> str:
        return (
            f"Credentials(service={self.service!r}, username={self.username!r}, "
            f"password='********', source={self.source!r})"
        )

    __str__ = __repr__

    def secrets(self) -> list[str]:
        """Strings to redact wherever output might echo them (password and Basic token)."""
        password = self.password.get_secret_value()
        return [s for s in (password, self.basic_token()) if s]

    def basic_token(self) -> str:
        """The base64 ``user:password`` token of an HTTP Basic ``Authorization`` header."""
        raw = f"{self.username}:{self.password.get_secret_value()}".encode()
        return base64.b64encode(raw).decode("ascii")


def check_netrc_permissions(path: Path) -> None:
    """Refuse a netrc file that its group or others can read or write."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise CredentialsError(
            f"{path} is accessible by group/others (mode {mode:04o}); a credentials file must be "
            f"private: run `chmod 600 {path}`"
        )


def _from_netrc(service: Service, path: Path) -> Credentials | None:
    """The netrc entry for the service's host, or None when the file or entry is absent."""
    if not path.is_file():
        return None
    check_netrc_permissions(path)
    try:
        parsed = netrc.netrc(str(path))
    except netrc.NetrcParseError as exc:
        # The parser's message can quote a token from the file (possibly a password).
        raise CredentialsError(
            f"{path}: cannot parse line {exc.lineno}; each entry must read "
            "'machine <host> login <user> password <password>'"
        ) from None
    entry = parsed.authenticators(HOSTS[service])
    if entry is None:
        return None
    login, _, password = entry
    if not login or not password:
        raise CredentialsError(
            f"{path}: the entry for machine {HOSTS[service]} lacks a login or password"
        )
    return Credentials(
        service=service, username=login, password=SecretStr(password), source=f"netrc:{path}"
    )


def _from_env(service: Service, env: Mapping[str, str]) -> Credentials | None:
    """Credentials from the service's two environment variables, or None when unset."""
    user_var, pass_var = ENV_VARS[service]
    username, password = env.get(user_var, ""), env.get(pass_var, "")
    if not username and not password:
        return None
    if not username or not password:
        missing = user_var if not username else pass_var
        raise CredentialsError(f"{missing} is not set while its partner is; set both or neither")
    return Credentials(
        service=service, username=username, password=SecretStr(password), source=f"env:{user_var}"
    )


def _load_prefect_secret(name: str) -> object:
    """The value of a Prefect Secret block."""
    from prefect.blocks.system import Secret

    block = cast(Secret, Secret.load(name))  # sync call outside an event loop
    return block.get()


def _from_secret_block(service: Service, name: str, loader: SecretLoader) -> Credentials:
    """Credentials from a Secret block holding {"username", "password"} or 'username:password'."""
    try:
        value = loader(name)
    except ValueError as exc:
        raise CredentialsError(
            f"Prefect Secret block {name!r} could not be loaded ({type(exc).__name__}); create "
            "it with Secret(value={'username': ..., 'password': ...}).save(name)"
        ) from None
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                raise CredentialsError(
                    f"Prefect Secret block {name!r} holds malformed JSON"
                ) from None
        elif ":" in text:
            username, _, password = text.partition(":")
            value = {"username": username, "password": password}
    if not isinstance(value, Mapping) or not value.get("username") or not value.get("password"):
        raise CredentialsError(
            f"Prefect Secret block {name!r} must hold {{'username': ..., 'password': ...}} "
            "or the string 'username:password'"
        )
    return Credentials(
        service=service,
        username=str(value["username"]),
        password=SecretStr(str(value["password"])),
        source=f"prefect-secret:{name}",
    )


def find_credentials(
    service: Service,
    *,
    netrc_path: Path | None = None,
    env: Mapping[str, str] | None = None,
    secret_block: str | None = None,
    secret_loader: SecretLoader | None = None,
) -> Credentials | None:
    """Credentials for ``service`` from the Secret block, the environment or netrc; else None."""
    if secret_block:
        return _from_secret_block(service, secret_block, secret_loader or _load_prefect_secret)
    found = _from_env(service, os.environ if env is None else env)
    if found is not None:
        return found
    return _from_netrc(service, netrc_path or Path.home() / ".netrc")


def load_credentials(
    service: Service,
    *,
    netrc_path: Path | None = None,
    env: Mapping[str, str] | None = None,
    secret_block: str | None = None,
    secret_loader: SecretLoader | None = None,
) -> Credentials:
    """Like :func:`find_credentials` but raise, saying how to provide them, when none exist."""
    found = find_credentials(
        service,
        netrc_path=netrc_path,
        env=env,
        secret_block=secret_block,
        secret_loader=secret_loader,
    )
    if found is None:
        user_var, pass_var = ENV_VARS[service]
        path = netrc_path or Path.home() / ".netrc"
        raise CredentialsError(
            f"no {service} credentials: set {user_var} and {pass_var}, or add "
            f"'machine {HOSTS[service]} login <user> password <password>' to {path} "
            f"(then `chmod 600 {path}`), or name a Prefect Secret block; "
            f"accounts: {SIGNUP[service]}"
        )
    return found


def load_earthdata_credentials(
    *,
    secret_block: str | None = None,
    netrc_path: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Credentials:
    """Earthdata login (ASF SLC downloads, SRTM for ISCE2's dem.py)."""
    return load_credentials("earthdata", secret_block=secret_block, netrc_path=netrc_path, env=env)


def write_private_netrc(directory: Path, credentials: Sequence[Credentials]) -> Path:
    """Write a mode-600 ``.netrc`` in ``directory`` (for tools that read only ``~/.netrc``)."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    path = directory / ".netrc"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        for cred in credentials:
            fh.write(
                f"machine {HOSTS[cred.service]}\n    login {cred.username}\n"
                f"    password {cred.password.get_secret_value()}\n"
            )
    path.chmod(0o600)
    return path


def _host_matches(url: httpx.URL, patterns: Sequence[str]) -> bool:
    """True when the URL's host (or host:port) equals a pattern or is a subdomain of one."""
    host = url.host.lower()
    host_port = f"{host}:{url.port}" if url.port else host
    for pattern in patterns:
        pattern = pattern.lower()
        if host_port == pattern or host == pattern or host.endswith("." + pattern):
            return True
    return False


class EarthdataAuth(httpx.Auth):
    """HTTP Basic auth that follows redirects itself, keeping credentials on trusted hosts.

    httpx drops ``Authorization`` on cross-origin redirects, but an ASF download redirects
    to Earthdata login, which needs it. This flow follows the redirects (the client must
    use ``follow_redirects=False``; see :attr:`handles_redirects`), sends Basic auth only to
    ``auth_hosts`` over HTTPS, and carries cookies set along the way.
    """

    handles_redirects = True

    def __init__(
        self,
        credentials: Credentials,
        *,
        auth_hosts: Sequence[str] = EARTHDATA_AUTH_DOMAINS,
        require_https: bool = True,
        max_redirects: int = 20,
    ) -> None:
        self._credentials = credentials
        self._auth_hosts = tuple(auth_hosts)
        self._require_https = require_https
        self._max_redirects = max_redirects
        self._cookies = httpx.Cookies()

    def __repr__(self) -> str:
        return f"EarthdataAuth(username={self._credentials.username!r}, hosts={self._auth_hosts})"

    def secrets(self) -> list[str]:
        """Strings to redact (see :meth:`Credentials.secrets`)."""
        return self._credentials.secrets()

    def _prepare(self, request: httpx.Request) -> None:
        """Attach cookies, and the Basic header only where credentials may go."""
        request.headers.pop("Authorization", None)
        request.headers.pop("Cookie", None)
        self._cookies.set_cookie_header(request)
        secure = request.url.scheme == "https" or not self._require_https
        if secure and _host_matches(request.url, self._auth_hosts):
            request.headers["Authorization"] = f"Basic {self._credentials.basic_token()}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Send the request and follow redirects, re-deciding authorization at every hop."""
        for _ in range(self._max_redirects + 1):
            self._prepare(request)
            response = yield request
            self._cookies.extract_cookies(response)
            location = response.headers.get("Location")
            if not response.is_redirect or location is None:
                return
            headers = {
                k: v
                for k, v in request.headers.items()
                if k.lower() not in ("host", "authorization", "cookie", "content-length")
            }
            method = "GET" if response.status_code == 303 else request.method
            request = httpx.Request(
                method, response.url.join(location), headers=headers, extensions=request.extensions
            )
        raise httpx.TooManyRedirects(f"more than {self._max_redirects} redirects", request=request)
