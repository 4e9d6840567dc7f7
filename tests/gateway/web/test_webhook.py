"""Webhook notifications: retried with backoff against a real local server, bounded, never blocking a grant."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pytest_aiohttp import AiohttpClient, AiohttpServer
from structlog.testing import capture_logs

from breakglass import Grant, GrantStatus, Scope
from gateway.config.secret import Secret
from gateway.web.webhook import WebhookNotifier, backoff_delays, describe, webhook_ctx
from tests.gateway.web.breakglass.support import CLIENT, NOW, REASON, as_user, build_app, make_settings


@dataclass
class Hook:
    """A webhook receiver that fails the first ``fail_first`` posts with ``fail_status`` (or hangs)."""

    fail_first: int = 0
    fail_status: int = 503
    hang: bool = False
    received: list[dict[str, object]] = field(default_factory=list)
    attempts: int = 0
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        async def handle(request: web.Request) -> web.Response:
            self.attempts += 1
            if self.hang:
                await self.released.wait()
            if self.attempts <= self.fail_first:
                return web.Response(status=self.fail_status, text="busy")
            self.received.append(await request.json())
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/hook", handle)
        return app


class Sleeps:
    """An injected sleep that records the delays and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
async def started() -> AsyncIterator[list[WebhookNotifier]]:
    """Notifiers started in a test are stopped afterwards."""
    notifiers: list[WebhookNotifier] = []
    yield notifiers
    for notifier in notifiers:
        await notifier.stop(grace_s=0)


async def notifier_for(server: TestServer, started: list[WebhookNotifier], **options: object) -> WebhookNotifier:
    notifier = WebhookNotifier(Secret(str(server.make_url("/hook"))), **options)  # type: ignore[arg-type]
    await notifier.start()
    started.append(notifier)
    return notifier


async def test_retries_with_exponential_backoff_until_delivered(aiohttp_server: AiohttpServer,
                                                                started: list[WebhookNotifier]) -> None:
    """A webhook failing three times gets the message on the fourth try, after 1, 2 and 4 s of backoff."""
    hook = Hook(fail_first=3)
    server = await aiohttp_server(hook.app())
    sleeps = Sleeps()
    notifier = await notifier_for(server, started, sleep=sleeps, max_attempts=5, backoff_initial_s=1, backoff_max_s=60)

    notifier.notify("hello")
    await notifier.drain()

    assert [{"text": "hello"}] == hook.received
    assert [1, 2, 4] == sleeps.delays
    assert {"sent": 1, "retried": 3, "failed": 0, "dropped": 0} == notifier.counts


async def test_gives_up_after_max_attempts(aiohttp_server: AiohttpServer, started: list[WebhookNotifier]) -> None:
    """A webhook that keeps failing is tried max_attempts times, with capped backoff, then logged as failed."""
    hook = Hook(fail_first=100)
    server = await aiohttp_server(hook.app())
    sleeps = Sleeps()
    notifier = await notifier_for(server, started, sleep=sleeps, max_attempts=4, backoff_initial_s=10, backoff_max_s=25)

    with capture_logs() as logs:
        notifier.notify("hello")
        await notifier.drain()

    assert 4 == hook.attempts
    assert [10, 20, 25] == sleeps.delays
    assert 1 == notifier.counts["failed"]
    assert "webhook.failed" in [e["event"] for e in logs]
    assert all(str(server.make_url("/hook")) not in str(e) for e in logs)  # the URL is a secret


async def test_client_error_is_not_retried(aiohttp_server: AiohttpServer, started: list[WebhookNotifier]) -> None:
    """A 4xx other than 429 means the webhook refuses the message: no retry."""
    hook = Hook(fail_first=1, fail_status=404)
    server = await aiohttp_server(hook.app())
    sleeps = Sleeps()
    notifier = await notifier_for(server, started, sleep=sleeps)

    notifier.notify("hello")
    await notifier.drain()

    assert (1, [], 1) == (hook.attempts, sleeps.delays, notifier.counts["failed"])


async def test_full_queue_drops_with_a_log_and_a_count(aiohttp_server: AiohttpServer,
                                                       started: list[WebhookNotifier]) -> None:
    """When the queue is full, new messages are dropped at once, logged and counted."""
    hook = Hook(hang=True)
    server = await aiohttp_server(hook.app())
    notifier = await notifier_for(server, started, queue_size=2, sleep=Sleeps())
    notifier.notify("first")
    while hook.attempts == 0:  # the worker holds the first message, in flight
        await asyncio.sleep(0)

    with capture_logs() as logs:
        accepted = [notifier.notify(f"m{i}") for i in range(4)]

    assert [True, True, False, False] == accepted
    assert 2 == notifier.counts["dropped"]
    assert 2 == [e["event"] for e in logs].count("webhook.dropped")
    hook.released.set()


async def test_a_hanging_webhook_never_delays_the_grant(aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient,
                                                        started: list[WebhookNotifier]) -> None:
    """With the webhook hanging on every post, the grant still comes back at once and is queued for notice."""
    hook = Hook(hang=True)
    server = await aiohttp_server(hook.app())
    notifier = await notifier_for(server, started, sleep=Sleeps(), timeout_s=3600)
    harness = build_app(notifier=notifier)
    client = await aiohttp_client(harness.app)

    response = await asyncio.wait_for(
        client.post("/.gatehouse/api/v1/break-glass", json={"route": "wiki", "reason": REASON},
                    headers=as_user("alice", **CLIENT)),
        timeout=5,
    )

    assert 201 == response.status
    while hook.attempts == 0:
        await asyncio.sleep(0)
    assert 1 == notifier.pending  # the grant's own message is still queued behind the hanging one
    hook.released.set()
    await notifier.drain()
    texts = [str(m["text"]) for m in hook.received]
    assert 2 == len(texts)
    assert texts[0].startswith(":rotating_light: alice@example.com requested break-glass for tier low")
    assert texts[1].startswith(":unlock: Break-glass granted at once")


async def test_request_approval_and_rejection_are_notified(aiohttp_server: AiohttpServer,
                                                           aiohttp_client: AiohttpClient,
                                                           started: list[WebhookNotifier]) -> None:
    """Pending, approval and rejection each send a message naming who did it."""
    hook = Hook()
    server = await aiohttp_server(hook.app())
    notifier = await notifier_for(server, started, sleep=Sleeps())
    client = await aiohttp_client(build_app(notifier=notifier).app)
    first = await (await client.post("/.gatehouse/api/v1/break-glass", json={"route": "source", "reason": REASON},
                                     headers=as_user("alice", "SER-1", **CLIENT))).json()
    second = await (await client.post("/.gatehouse/api/v1/break-glass", json={"route": "source", "reason": REASON},
                                      headers=as_user("alice", "SER-2", **CLIENT))).json()

    await client.post(f"/.gatehouse/api/v1/admin/break-glass/{first['id']}/approve", json={},
                      headers=as_user("carol;sre-leads", None, **CLIENT))
    await client.post(f"/.gatehouse/api/v1/admin/break-glass/{second['id']}/reject", json={"reason": "no <ticket>"},
                      headers=as_user("carol;sre-leads", None, **CLIENT))
    await notifier.drain()

    texts = [str(m["text"]) for m in hook.received]
    assert any("waits for an approver" in t for t in texts)
    assert any(t.startswith(":white_check_mark: carol@example.com approved") for t in texts)
    assert any("rejected" in t and "no &lt;ticket&gt;" in t for t in texts)


async def test_webhook_ctx_starts_and_stops_the_notifier(aiohttp_server: AiohttpServer,
                                                         aiohttp_client: AiohttpClient) -> None:
    """The cleanup context starts the notifier built from the settings and stops it with the app."""
    hook = Hook()
    server = await aiohttp_server(hook.app())
    settings = make_settings(webhook={"url": {"value": str(server.make_url("/hook"))}})
    assert settings.webhook is not None
    notifier = WebhookNotifier.from_settings(settings.webhook)
    harness = build_app(settings=settings, notifier=notifier)
    harness.app.cleanup_ctx.append(webhook_ctx(notifier))
    client = await aiohttp_client(harness.app)

    await client.post("/.gatehouse/api/v1/break-glass", json={"route": "wiki", "reason": REASON},
                      headers=as_user("alice", **CLIENT))
    await client.close()

    assert 2 == len(hook.received)


def test_backoff_is_capped() -> None:
    """Delays double from the initial value and never exceed the cap."""
    assert [0.5, 1, 2, 4, 5, 5] == backoff_delays(7, 0.5, 5)


def test_message_escapes_user_text() -> None:
    """User-written text cannot inject Slack links or mentions."""
    grant = Grant(id="g-1", user="alice", user_email="alice@example.com", device_serial="SER", scope=Scope.for_tier("low"),
                  reason="<!channel> <https://evil|click>", duration=timedelta(hours=1), requested_at=NOW,
                  status=GrantStatus.PENDING)

    text = describe("requested", grant)

    assert "&lt;!channel&gt; &lt;https://evil|click&gt;" in text
