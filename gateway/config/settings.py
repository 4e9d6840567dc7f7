"""Gateway configuration: one YAML (or JSON) file, validated at start with every problem listed.

Owns: Settings and its sections, load_settings, parse_settings.
Must not import: aiohttp, app, gateway.gate.admission (settings is a leaf the rest of the gateway reads).

Relative paths in the file are resolved against the file's own directory.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any, Literal, Mapping
from urllib.parse import urlsplit

import yaml
from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from gateway.config.breakglass import BreakglassSettings
from gateway.errors import ConfigError, Problem
from gateway.config.evidence import EvidenceSettings
from gateway.config.identity import IdentitySettings
from gateway.config.ingest import IngestSettings
from gateway.config.secret import Secret, SecretValue
from gateway.config.section import Section, checked_networks
from gateway.config.dsn import refuse_moved_store, sqlite_file


def _split_address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"`{value}` is not an address; write host:port such as `127.0.0.1:8080`")
    return host.strip("[]"), int(port)


class TlsSettings(Section):
    """A TLS listener's certificate, and optionally the CA that client certificates must chain to."""

    cert: Path
    key: Path
    client_ca: Path | None = None
    client_cert: Literal["none", "optional", "required"] = "none"
    """Client certificates are verified against `client_ca` and, when configured, Gatehouse's device CA
    (`identity.device.ca`); one of the two is required for `optional` or `required`."""


class ListenerSettings(Section):
    """One socket Gatehouse listens on, plain HTTP or TLS."""

    address: str
    tls: TlsSettings | None = None

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        _split_address(value)
        return value

    @property
    def host(self) -> str:
        return _split_address(self.address)[0]

    @property
    def port(self) -> int:
        return _split_address(self.address)[1]


class MetricsSettings(Section):
    """The Prometheus listener; never the proxy port."""

    address: str | None = "127.0.0.1:9090"

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None:
            _split_address(value)
        return value


_ROUTE_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_UPGRADE_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+(/[A-Za-z0-9!#$%&'*+.^_`|~-]+)?")
"""A protocol name in ``Upgrade`` (RFC 9110 §7.8): a token, optionally ``/version``."""
_HOST = re.compile(r"(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:\d{1,5})?")


class RouteSettings(Section):
    """One protected service: what requests it matches, where they go, and which tier guards it."""

    id: str
    host: str | None = None
    """Exact host (``wiki.corp.example``) or one-label wildcard (``*.corp.example``); any host when absent."""
    path_prefix: str = "/"
    upstream: str
    tier: str
    mode: Literal["enforce", "monitor"] = "enforce"
    case_insensitive_path: bool = False
    max_body_bytes: int | None = Field(default=None, ge=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    read_timeout_s: float = Field(default=60.0, gt=0)
    require_owner: bool = False
    """Require the requesting user to be one of the device's owners (by email) in the owner inventory
    (`gatehouse devices assign`; reported snapshot owners only with `ingest.trust_reported_owners`); a device
    nobody owns is refused (`device-unowned`)."""
    upgrades: tuple[str, ...] = ("websocket",)
    """Protocols a client may switch to on this route (``Upgrade`` tokens, compared in lower case), tunnelled after the
    same decision as any request; an ``Upgrade`` not listed is dropped and the request served as HTTP/1.1. ``[]`` allows none."""

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _ROUTE_ID.fullmatch(value):
            raise ValueError(f"`{value}` is not a route id; use lowercase letters, digits, `-` and `_`")
        return value

    @field_validator("upgrades")
    @classmethod
    def _upgrades(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for token in value:
            if not _UPGRADE_TOKEN.fullmatch(token):
                raise ValueError(f"`{token}` is not an Upgrade protocol name; use a token such as `websocket`")
        return tuple(token.lower() for token in value)

    @field_validator("host")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        if value is None:
            return None
        lowered = value.lower()
        if not _HOST.fullmatch(lowered):
            raise ValueError(f"`{value}` is not a host name; write `wiki.corp.example` or `*.corp.example`")
        return lowered

    @field_validator("path_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not value.startswith("/") or any(seg in (".", "..") for seg in value.split("/")) or "//" in value or "%" in value or "\\" in value:
            raise ValueError(f"`{value}` is not a canonical path prefix; write an absolute path such as `/billing/` without `..`, `//`, `%` or `\\`")
        return value

    @field_validator("upstream")
    @classmethod
    def _upstream(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"`{value}` is not an http(s) URL; write e.g. `http://127.0.0.1:9000`")
        if parts.query or parts.fragment or parts.username:
            raise ValueError(f"`{value}` must not carry a query, fragment or credentials")
        return value.rstrip("/")


class ServerSettings(Section):
    """Limits and trust settings of the HTTP front."""

    trusted_proxies: tuple[str, ...] = ()
    """Addresses or networks whose X-Forwarded-*, Forwarded and X-Request-Id are believed."""
    header_read_timeout_s: float = Field(default=10.0, gt=0)
    keepalive_timeout_s: float = Field(default=75.0, gt=0)
    max_header_count: int = Field(default=100, ge=8)
    max_header_bytes: int = Field(default=8190, ge=1024)
    """The longest request line, and the longest single header line."""
    max_head_bytes: int = Field(default=64 * 1024, ge=1024)
    """The longest request head (request line and every header line together); longer: 431."""
    default_max_body_bytes: int = Field(default=100 * 1024 * 1024, ge=0)
    shutdown_grace_s: float = Field(default=30.0, ge=0)

    @model_validator(mode="after")
    def _head_fits_a_line(self) -> ServerSettings:
        if self.max_head_bytes < self.max_header_bytes:
            raise ValueError(
                f"`max_head_bytes` ({self.max_head_bytes}) is less than `max_header_bytes` ({self.max_header_bytes}); "
                "a head must have room for its longest line: raise `max_head_bytes` or lower `max_header_bytes`"
            )
        return self

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return checked_networks(value, example="10.0.0.0/8")

    def trusted_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(item, strict=False) for item in self.trusted_proxies)


class LoggingSettings(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class Settings(Section):
    """The whole configuration, frozen."""

    listeners: tuple[ListenerSettings, ...] = Field(min_length=1)
    metrics: MetricsSettings = MetricsSettings()
    store: SecretValue = Field(default=Secret("sqlite:var/gatehouse.db"), validate_default=True)
    """Where state lives: ``sqlite:///abs/path.db``, ``sqlite:path.db`` (relative to the file; the default is
    ``sqlite:var/gatehouse.db``) or ``postgresql://...``; may be a secret reference. Validated into
    ``sqlite:///absolute/path`` (gateway.config.dsn is the one reading of it)."""
    policy: Path | None = None
    routes: tuple[RouteSettings, ...] = ()
    server: ServerSettings = ServerSettings()
    logging: LoggingSettings = LoggingSettings()
    identity: IdentitySettings | None = None
    """Who the user is and which device; required to serve routes (see the README's identity section)."""
    ingest: IngestSettings = IngestSettings()
    breakglass: BreakglassSettings = BreakglassSettings()
    evidence: EvidenceSettings = EvidenceSettings()
    """The access ledger: how often its counts are written, how many are held during a store outage, retention."""
    demo: bool = False
    """Demo mode: accepts tokens signed by the demo key under ./var/. Never set in production."""
    source: str = Field(default="<memory>", exclude=True)

    @field_validator("store", mode="before")
    @classmethod
    def _store_text(cls, value: object) -> object:
        return {"value": value} if isinstance(value, str) else value

    @field_validator("store")
    @classmethod
    def _store_file(cls, value: Secret, info: ValidationInfo) -> Secret:
        base_dir = Path((info.context or {}).get("base_dir", "."))
        try:
            path = sqlite_file(value.reveal(), base_dir=base_dir)
        except ValueError as exc:
            raise ValueError(f"{exc} (a DSN may also be `{{env: NAME}}`)") from None
        if path is None:
            return value
        refuse_moved_store(value.reveal(), path, base_dir)
        return Secret(f"sqlite://{path}")

    @model_validator(mode="after")
    def _routes_distinct(self) -> Settings:
        seen_ids: dict[str, int] = {}
        seen_match: dict[tuple[str | None, str], str] = {}
        for route in self.routes:
            if route.id in seen_ids:
                raise ValueError(f"route id `{route.id}` is used twice; give each route its own id")
            seen_ids[route.id] = 1
            key = (route.host, route.path_prefix.lower() if route.case_insensitive_path else route.path_prefix)
            if key in seen_match:
                raise ValueError(
                    f"routes `{seen_match[key]}` and `{route.id}` both match `{route.host or '*'}{route.path_prefix}`; give one a different host or path prefix"
                )
            seen_match[key] = route.id
        device_ca = self.identity is not None and self.identity.device.ca is not None
        for listener in self.listeners:
            tls = listener.tls
            if tls is not None and tls.client_cert != "none" and tls.client_ca is None and not device_ca:
                raise ValueError(
                    f"listener `{listener.address}`: client_cert `{tls.client_cert}` needs `client_ca`, the CA file that signs "
                    "device certificates, or Gatehouse's own device CA under `identity.device.ca`"
                )
        return self


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith("function-") or part in ("tagged-union",):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def _message(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    value = error.get("input")
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "unknown key; check the spelling against the configuration reference in the README"
    if kind in ("value_error", "assertion_error"):
        return str(error["ctx"]["error"]) if "ctx" in error else error["msg"]
    if kind == "secret":
        return str(error["msg"])
    shown = f"`{value}`" if isinstance(value, (str, int, float, bool)) else "this value"
    return f"{shown}: {error['msg'][0].lower()}{error['msg'][1:]}"


def parse_settings(raw: object, *, source: str, base_dir: Path, environ: Mapping[str, str]) -> Settings:
    """Validate an already-loaded mapping into Settings.

    Raises:
        ConfigError: every problem found, each with its location.
    """
    if not isinstance(raw, dict):
        raise ConfigError(source, (Problem("", "the file must hold a mapping of settings at the top level"),))
    try:
        settings = Settings.model_validate(raw, context={"environ": environ, "base_dir": base_dir})
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        # A list whose items failed also reports itself as too short; the item errors say it better.
        item_locs = {e["loc"][:-1] for e in errors if len(e["loc"]) > 1}
        problems = tuple(
            Problem(_location(e["loc"]), _message(e))
            for e in errors
            if not (e["type"] == "too_short" and any(loc[: len(e["loc"])] == e["loc"] for loc in item_locs))
        )
        raise ConfigError(source, problems) from None
    return settings.model_copy(update={"source": source, **_resolved_paths(settings, base_dir)})


def _resolved_paths(settings: Settings, base_dir: Path) -> dict[str, object]:
    def resolve(path: Path) -> Path:
        return path if path.is_absolute() else (base_dir / path).resolve()

    listeners = tuple(
        lst if lst.tls is None else lst.model_copy(update={"tls": lst.tls.model_copy(update={
            "cert": resolve(lst.tls.cert),
            "key": resolve(lst.tls.key),
            "client_ca": resolve(lst.tls.client_ca) if lst.tls.client_ca else None,
        })})
        for lst in settings.listeners
    )
    return {
        "listeners": listeners,
        "policy": resolve(settings.policy) if settings.policy else None,
    }


def load_settings(path: Path | str, environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate a YAML or JSON configuration file.

    Raises:
        ConfigError: the file cannot be read or parsed, or any value is wrong (all listed).
    """
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, (Problem("", f"cannot read the file: {exc.strerror or exc}"),)) from None
    try:
        raw = yaml.safe_load(text)  # JSON is a subset of YAML 1.2 for our purposes
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(source, (Problem(where, f"not valid YAML or JSON: {getattr(exc, 'problem', exc)}"),)) from None
    return parse_settings(raw, source=source, base_dir=path.parent.resolve(), environ=os.environ if environ is None else environ)
