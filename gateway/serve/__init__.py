"""Processes and sockets: listeners, TLS, signals, reload and the worker supervisor; knows no URL paths."""

from __future__ import annotations
