"""The bench's rows are set up as documented: the POST, download and many-users requests, the logs-on and ledger-off targets.

Real processes and sockets on 127.0.0.1, no timing assertions. wrk and nginx are what `make bench`
installs (scripts/bench-deps.sh); the tests that drive them are skipped, saying so, where they are missing.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from aiohttp import web
from bench_proxy import Bench, run_wrk
from proxy_targets import gatehouse as gatehouse_target
from proxy_targets.nginx import render_config
from proxy_targets.procs import Target, free_port, python_argv, start_proc, wait_http
from proxy_targets.scenarios import BY_NAME, POST_BODY, probe, write_tokens
from proxy_targets.tokens import BenchKeys, make_keys, mint_token
from proxy_targets.upstream import BODY, DOWNLOAD

from policy_engine import compile_policy_set, parse_policy_document

needs_wrk = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (bash scripts/bench-deps.sh)")
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
needs_nginx = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (bash scripts/bench-deps.sh)")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> BenchKeys:
    """One benchmark key pair for the module."""
    return make_keys(tmp_path_factory.mktemp("keys"))


class Recorder:
    """An upstream in its own thread that answers BODY and remembers each request's method, body size and token."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, str]] = []
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        body = await request.read()
        self.seen.append((request.method, len(body), request.headers.get("Authorization", "")))
        return web.Response(body=BODY, content_type="application/json")

    async def _start(self) -> web.ServerRunner:
        runner = web.ServerRunner(web.Server(self._handle, access_log=None), handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        return runner

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        runner = self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())
        self._loop.close()

    def __enter__(self) -> Recorder:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def bench_for(tmp_path: Path, tokens: list[str]) -> Bench:
    args = argparse.Namespace(threads=1)
    bench = Bench(args=args, workdir=tmp_path, client_core=None, server_core=None)
    bench.user_tokens = tokens
    bench.tokens_file = write_tokens(tmp_path / "many-users.tokens", tokens)
    return bench


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The bench upstream as `make bench` starts it; its URL."""
    workdir = tmp_path_factory.mktemp("upstream")
    port = free_port()
    proc = start_proc("upstream", python_argv("upstream", "--port", str(port)), workdir=workdir, core=None)
    try:
        wait_http(proc, "127.0.0.1", port, timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


class TestUpstream:
    @pytest.mark.parametrize("row", ["get", "post-1k", "download-256k"])
    def test_answers_each_row_with_its_body(self, upstream: str, row: str) -> None:
        """GET and a 1 KiB POST get the 100-byte answer and /download 256 KiB, as every target must pass on."""
        probe(upstream, BY_NAME[row], ())

        assert (1024, 256 * 1024) == (len(POST_BODY), len(DOWNLOAD))


class TestFleet:
    def test_many_users_devices_pass_the_bench_tier_and_belong_to_their_users(self) -> None:
        """Each of the 1,000 users' devices is allowed at tier `high` and owned by that user only, so the row is all 200s."""
        now = datetime.now(UTC)
        policies = compile_policy_set(parse_policy_document(yaml.safe_load(gatehouse_target.POLICY), source="bench policy"))
        users = gatehouse_target.many_users()

        fleet = list(gatehouse_target.bench_fleet(1_500, now))

        assert 1_000 == len({serial for _, serial in users})
        assert (gatehouse_target.BENCH_USER, gatehouse_target.BENCH_SERIAL) == users[0]
        assert [(user,) for user, _ in users] == [s.owners for s in fleet[:1_000]]
        assert [serial for _, serial in users] == [s.serial for s in fleet[:1_000]]
        assert [] == [s.serial for s in fleet[:1_000] if not policies.evaluate(s, gatehouse_target.ROUTE_TIER, now=now).allowed]
        assert set() == {s.serial for s in fleet[1_000:]} & {serial for _, serial in users}


class TestWrkScripts:
    @needs_wrk
    def test_many_users_sends_every_users_token_in_turn(self, tmp_path: Path, keys: BenchKeys) -> None:
        """On one connection, each request carries the next user's token, starting over after the last; wrk's report is read."""
        tokens = [mint_token(keys, user=f"user{i}@bench.example", device=f"C02T{i:04d}") for i in range(5)]
        bench = bench_for(tmp_path, tokens)
        with Recorder() as recorder:
            target = Target("recorder", "", f"http://127.0.0.1:{recorder.port}/", [], headers=(("Authorization", "Bearer fixed"),))

            report = run_wrk(bench, target, BY_NAME["many-users"], duration=1, connections=1)

        order = [tokens.index(auth.removeprefix("Bearer ")) for _, _, auth in recorder.seen]
        assert 10 <= len(order)
        assert {1} == {(b - a) % len(tokens) for a, b in zip(order, order[1:])}
        assert 0 < int(report["requests"])  # type: ignore[call-overload]

    @needs_wrk
    def test_post_row_sends_a_1_kib_json_body_with_the_targets_token(self, tmp_path: Path) -> None:
        """Every request of the POST row is a POST of 1,024 bytes carrying the target's fixed token."""
        bench = bench_for(tmp_path, ["unused"])
        with Recorder() as recorder:
            target = Target("recorder", "", f"http://127.0.0.1:{recorder.port}/", [], headers=(("Authorization", "Bearer fixed"),))

            run_wrk(bench, target, BY_NAME["post-1k"], duration=1, connections=2)

        assert {("POST", 1024, "Bearer fixed")} == set(recorder.seen)


class TestNginxConfig:
    @needs_nginx
    @pytest.mark.parametrize("access_log", [False, True], ids=["logs-off", "logs-on"])
    def test_auth_request_config_is_valid_with_and_without_the_access_log(self, tmp_path: Path, access_log: bool) -> None:
        """nginx -t accepts the auth_request configuration; logs on writes the combined format to a file, logs off writes none."""
        (tmp_path / "logs").mkdir()
        conf = tmp_path / "nginx.conf"
        conf.write_text(render_config(tmp_path, port=free_port(), upstream="127.0.0.1:9", auth="127.0.0.1:9", access_log=access_log))

        checked = subprocess.run([str(NGINX), "-t", "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "error.log")],
                                 capture_output=True, text=True, check=False)

        assert 0 == checked.returncode, checked.stderr
        expected = f"access_log {tmp_path}/access.log combined;" if access_log else "access_log off;"
        assert expected in conf.read_text()


class TestGatehouseRows:
    def test_logs_on_ledger_off_gatehouse_serves_every_row(self, tmp_path: Path, keys: BenchKeys, upstream: str) -> None:
        """`gatehouse serve` with info logs and the ledger off answers all four rows as the upstream does, and logs each request to its file."""
        token = mint_token(keys, user=gatehouse_target.BENCH_USER, device=gatehouse_target.BENCH_SERIAL)
        users = gatehouse_target.many_users()
        user_headers = [("Authorization", f"Bearer {mint_token(keys, user=u, device=d)}") for u, d in (users[1], users[500], users[-1])]
        target = gatehouse_target.start_gatehouse(
            tmp_path, upstream, keys=keys, token=token, core=None, devices=1_200, log_level="info", ledger=False, name="gatehouse-log",
        )
        try:
            for row in ("get", "post-1k", "download-256k"):
                probe(target.url, BY_NAME[row], target.headers)
            probe(target.url, BY_NAME["many-users"], user_headers)
            log = target.procs[0].log.read_text()
        finally:
            target.stop()

        assert 6 <= log.count('"request.completed"')
        assert '"ledger.disabled"' in log

    @needs_nginx
    def test_nginx_auth_with_access_log_serves_every_row(self, tmp_path: Path, keys: BenchKeys, upstream: str) -> None:
        """nginx + auth_request (logs on) answers all four rows, many users included, and writes one access line per request."""
        from bench_proxy import start_nginx_auth

        token = mint_token(keys, user=gatehouse_target.BENCH_USER, device=gatehouse_target.BENCH_SERIAL)
        users = gatehouse_target.many_users()
        user_headers = [("Authorization", f"Bearer {mint_token(keys, user=u, device=d)}") for u, d in (users[1], users[-1])]
        bench = bench_for(tmp_path, [token])
        target = start_nginx_auth(bench, upstream.removeprefix("http://"), keys, token, name="nginx-auth-log", access_log=True)
        try:
            for row in ("get", "post-1k", "download-256k"):
                probe(target.url, BY_NAME[row], target.headers)
            probe(target.url, BY_NAME["many-users"], user_headers)
        finally:
            target.stop()

        assert 6 <= len((tmp_path / "nginx-auth-log" / "access.log").read_text().splitlines())

