"""A tiny escape-by-default HTML builder for the server-rendered pages.

Owns: Markup, esc, el, join.
Must not import: aiohttp or any other gateway module; standard library only.

Every ``str`` that reaches a page goes through ``html.escape`` unless it is already ``Markup``
(built by ``el`` or ``join`` from escaped parts), so a value from a device, user or request can
never open a tag or an attribute.
"""

from __future__ import annotations

import html
from typing import Iterable, Union

Child = Union["Markup", str, int, float, None, Iterable["Child"]]

_VOID = frozenset({"br", "hr", "input", "meta", "link", "img", "col"})


class Markup(str):
    """Text that is already safe HTML; only this module creates it from raw strings."""

    __slots__ = ()


def esc(value: object) -> Markup:
    """Escape any value for use in element text or a quoted attribute."""
    if isinstance(value, Markup):
        return value
    return Markup(html.escape("" if value is None else str(value), quote=True))


def _flatten(children: Iterable[Child], out: list[str]) -> None:
    for child in children:
        if child is None or child is False:
            continue
        if isinstance(child, Markup):
            out.append(child)
        elif isinstance(child, (str, int, float)):
            out.append(esc(child))
        else:
            _flatten(child, out)


def join(*children: Child) -> Markup:
    """Concatenate children, escaping every plain string."""
    out: list[str] = []
    _flatten(children, out)
    return Markup("".join(out))


def el(tag: str, *children: Child, **attrs: object) -> Markup:
    """An element; ``class_``/``for_`` name ``class``/``for``, True is a bare attribute, None/False omit it."""
    parts = [tag]
    for name, value in attrs.items():
        if value is None or value is False:
            continue
        key = name.rstrip("_").replace("_", "-")
        parts.append(key if value is True else f'{key}="{esc(value)}"')
    opening = "<" + " ".join(parts) + ">"
    if tag in _VOID:
        return Markup(opening)
    return Markup(opening + join(*children) + f"</{tag}>")


def filter_select(name: str, label: str, choices: Iterable[tuple[str, str]], current: str) -> Markup:
    """A labelled ``<select>`` for a GET filter form, with an "Any" choice first."""
    ident = f"f-{name}"
    options = [el("option", "Any", value="")] + [
        el("option", text, value=value, selected=value == current) for value, text in choices]
    return el("div", el("label", label, for_=ident), el("select", options, id=ident, name=name))
