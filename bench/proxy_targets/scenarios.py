"""The rows of `make bench`: what each wrk run sends, and the check that a target answers it right.

Owns: Scenario, SCENARIOS, POST_BODY, write_tokens, wrk_script, probe.
Must not import: gateway, aiohttp (the harness stays synchronous and light).

- ``get``: ``GET /`` with one user's token, the upstream's 100-byte answer (the row `make bench` always had).
- ``post-1k``: ``POST /`` with a 1 KiB JSON body (wrk/post.lua), the 100-byte answer.
- ``download-256k``: ``GET /download``, a 256 KiB answer.
- ``many-users``: ``GET /``, each request with the next of 1,000 users' tokens (wrk/many_users.lua),
  each user on their own device, so every request names another user and device, as a fleet does;
  Gatehouse's caches and the nginx auth service's token cache see the same 1,000 tokens.

A wrk script is report.lua, then the row's script, then pace.lua for a paced run, written once per
run directory (the many-users script gets the path of the tokens file on its first line).
"""

from __future__ import annotations

import http.client
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from proxy_targets.procs import TargetUnavailable
from proxy_targets.upstream import BODY, DOWNLOAD, DOWNLOAD_PATH

WRK_DIR = Path(__file__).resolve().parent / "wrk"
POST_BODY = b'{"data":"' + b"x" * 1013 + b'"}'
# INVARIANT: the same 1 KiB body as wrk/post.lua sends.
if len(POST_BODY) != 1024:
    raise RuntimeError(f"the POST row's body is {len(POST_BODY)} bytes, not 1024")


@dataclass(frozen=True, slots=True)
class Scenario:
    """One row of the bench: the request wrk sends and the answer every target must give."""

    name: str
    description: str
    method: str = "GET"
    path: str = "/"
    lua: str = ""
    """The row's wrk script in wrk/ (empty: wrk's default request)."""
    body: bytes = b""
    answer: bytes = BODY
    many_users: bool = False
    """Tokens come from the script, one user after another, instead of the target's fixed header."""


SCENARIOS = (
    Scenario("get", "GET /, one user's token, 100-byte answer"),
    Scenario("post-1k", "POST / with a 1 KiB JSON body, 100-byte answer", method="POST", lua="post.lua", body=POST_BODY),
    Scenario("download-256k", "GET /download, one user's token, 256 KiB answer", path=DOWNLOAD_PATH, answer=DOWNLOAD),
    Scenario("many-users", "GET /, 1,000 users on 1,000 devices, each request the next user's token", lua="many_users.lua", many_users=True),
)
BY_NAME = {s.name: s for s in SCENARIOS}


def write_tokens(path: Path, tokens: Sequence[str]) -> Path:
    """Write the many-users tokens, one per line, for wrk/many_users.lua."""
    path.write_text("".join(f"{token}\n" for token in tokens), encoding="utf-8")
    return path


def wrk_script(workdir: Path, scenario: Scenario, *, paced: bool, tokens_file: Path | None = None) -> Path:
    """The Lua script for a run: the JSON report hook, the row's script, and the pacing hook for a paced run."""
    path = workdir / f"{scenario.name}{'-paced' if paced else ''}.lua"
    if not path.exists():
        parts = [(WRK_DIR / "report.lua").read_text()]
        if scenario.many_users:
            if tokens_file is None:
                raise ValueError(f"the `{scenario.name}` row needs the tokens file")
            parts.append(f"bench_tokens_file = [[{tokens_file}]]\n")
        if scenario.lua:
            parts.append((WRK_DIR / scenario.lua).read_text())
        if paced:
            parts.append((WRK_DIR / "pace.lua").read_text())
        path.write_text("\n".join(parts))
    return path


def probe(url: str, scenario: Scenario, headers: Sequence[tuple[str, str]], *, timeout: float = 10.0) -> None:
    """Send the row's request once (for many-users, once per given header set); raise when the answer is not the upstream's.

    ``headers`` is the target's fixed header for every row but many-users; for many-users, pass
    the ``Authorization`` headers of the users to try (the first, a middle and the last).

    Raises:
        TargetUnavailable: the target answered another status or body, or not at all.
    """
    host_port = url.removeprefix("http://").split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    tries = [[h] for h in headers] if scenario.many_users else [list(headers)]
    for sent in tries:
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
        try:
            request_headers = dict(sent)
            if scenario.body:
                request_headers["Content-Type"] = "application/json"
            conn.request(scenario.method, scenario.path, body=scenario.body or None, headers=request_headers)
            response = conn.getresponse()
            status, body = response.status, response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise TargetUnavailable(f"{scenario.method} {scenario.path} ({scenario.name} row) to {url} failed: {exc!r}") from None
        finally:
            conn.close()
        if (status, body) != (200, scenario.answer):
            raise TargetUnavailable(
                f"{scenario.method} {scenario.path} ({scenario.name} row) answered {status} with {len(body)} bytes,"
                f" not 200 with the upstream's {len(scenario.answer)}: {body[:160]!r}"
            )
