"""The live configuration: settings, the route table built from them and the trusted proxy networks, swapped as one.

Owns: LiveConfig, ConfigHolder, ReloadHook.
Must not import: gateway.keys, app, gateway.serve (keys.py names these types, so this module stays below it).

``app[CONFIG]`` is a ConfigHolder; ``holder.swap(settings)`` replaces the settings and route table
for every request that starts afterwards (a request keeps the snapshot it started with, as
``request[LIVE]``). A ReloadHook is an ``async def hook(settings) -> None`` run after a SIGHUP
swapped the new configuration in (``app[RELOAD_HOOKS]``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from gateway.proxy.rules import peer_is_trusted
from gateway.proxy.routing import RouteTable
from gateway.config.settings import Settings

ReloadHook = Callable[[Settings], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class LiveConfig:
    """One consistent configuration: settings, the route table built from them, trusted networks."""

    settings: Settings
    routes: RouteTable
    trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    loaded_at: datetime

    @classmethod
    def build(cls, settings: Settings, *, now: datetime) -> LiveConfig:
        """Precompute everything a request needs from the settings."""
        routes = RouteTable.from_settings(settings.routes, default_max_body_bytes=settings.server.default_max_body_bytes)
        return cls(settings=settings, routes=routes, trusted=settings.server.trusted_networks(), loaded_at=now)

    def trusts(self, remote: str | None) -> bool:
        """True when the peer is a configured trusted proxy."""
        return peer_is_trusted(remote, self.trusted)


class ConfigHolder:
    """The one swappable slot holding the live configuration; read once per request."""

    __slots__ = ("current",)

    def __init__(self, live: LiveConfig) -> None:
        self.current = live

    def swap(self, settings: Settings, *, now: datetime) -> LiveConfig:
        """Make ``settings`` the configuration for every request that starts from now on."""
        live = LiveConfig.build(settings, now=now)
        self.current = live  # INVARIANT: a single reference assignment; requests never see a mix
        return live


__all__ = ["ConfigHolder", "LiveConfig", "ReloadHook"]
