"""Break-glass notifications to a Slack-compatible incoming webhook, sent in the background.

Owns: WebhookNotifier, webhook_ctx, describe (the message text), backoff_delays.
Must not import: gateway.keys, gateway.app, gateway.gate.admission (keys.py names WebhookNotifier, so this module stays below it).

``notify(text)`` only puts the message on a bounded queue and returns at once: a slow, failing or
unreachable webhook can never block or delay a grant. One worker task sends ``{"text": ...}``
with retries and exponential backoff (``backoff_initial_s * 2**n`` capped at ``backoff_max_s``,
honouring a numeric ``Retry-After`` on 429) and gives up after ``max_attempts``. When the queue
is full the new message is dropped, logged (``webhook.dropped``) and counted. The URL embeds a
token, so it is never logged.

The sleep between attempts is injected (``sleep=``) so tests drive retries without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime

import aiohttp
import structlog
from aiohttp import web

from breakglass import Grant
from gateway.config.breakglass import WebhookSettings
from gateway.config.secret import Secret

_log = structlog.get_logger("gateway.webhook")

Sleep = Callable[[float], Awaitable[None]]
OUTCOMES = ("sent", "retried", "failed", "dropped")
"""Closed set of delivery outcomes counted by ``WebhookNotifier.counts`` (and ``on_outcome``)."""


def backoff_delays(max_attempts: int, initial_s: float, max_s: float) -> list[float]:
    """The waits between ``max_attempts`` attempts: ``initial, 2*initial, 4*initial…`` capped at ``max_s``."""
    return [min(initial_s * 2**n, max_s) for n in range(max_attempts - 1)]


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _truncate(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _minutes(grant: Grant) -> str:
    seconds = int(grant.duration.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    return f"{seconds // 60} min"


def describe(kind: str, grant: Grant, *, actor: str = "", note: str = "", public_url: str = "",
             now: datetime | None = None) -> str:
    """The message for one event (``requested``, ``granted``, ``pending``, ``approved``, ``rejected``,
    ``revoked``, ``ended``, ``refused``) in Slack's mrkdwn, user text escaped."""
    who = _slack_escape(grant.user_email or grant.user)
    scope = _slack_escape(grant.scope.describe())
    link = f" <{public_url}/.gatehouse/admin/break-glass/{grant.id}|{grant.id}>" if public_url else f" `{grant.id}`"
    reason = _slack_escape(_truncate(grant.reason))
    by = _slack_escape(actor)
    extra = f": {_slack_escape(_truncate(note, 200))}" if note else ""
    texts = {
        "requested": f":rotating_light: {who} requested break-glass for {scope} ({_minutes(grant)}) on device "
                     f"`{_slack_escape(grant.device_serial)}`{link}. Reason: {reason}",
        "granted": f":unlock: Break-glass granted at once to {who} for {scope} until "
                   f"{grant.expires_at:%d %b %H:%M} UTC{link}" if grant.expires_at else "",
        "pending": f":hourglass: Break-glass for {who} ({scope}) waits for an approver{link}",
        "approved": f":white_check_mark: {by} approved break-glass for {who} ({scope}){link}",
        "rejected": f":no_entry: {by} rejected break-glass for {who} ({scope}){link}{extra}",
        "refused": f":no_entry: Break-glass for {who} refused: the policy never allows it for {scope}{link}",
        "revoked": f":lock: {by} revoked break-glass of {who} ({scope}){link}{extra}",
        "ended": f":lock: {who} ended their break-glass ({scope}){link}",
    }
    return texts.get(kind) or f"Break-glass {kind} for {who} ({scope}){link}"


class WebhookNotifier:
    """A bounded queue of messages and the one task that posts them to the webhook."""

    def __init__(
        self,
        url: Secret,
        *,
        public_url: str = "",
        max_attempts: int = 5,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
        timeout_s: float = 5.0,
        queue_size: int = 1000,
        sleep: Sleep = asyncio.sleep,
        on_outcome: Callable[[str], None] | None = None,
    ) -> None:
        self.public_url = public_url
        self._url = url
        self._delays = backoff_delays(max_attempts, backoff_initial_s, backoff_max_s)
        self._backoff_max_s = backoff_max_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._queue: asyncio.Queue[str] = asyncio.Queue(maxsize=queue_size)
        self._sleep = sleep
        self._on_outcome = on_outcome
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self.counts: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        """Delivery outcomes since start, for tests and until ``gateway/metrics.py`` has a counter."""

    @classmethod
    def from_settings(cls, hook: WebhookSettings) -> WebhookNotifier:
        """The notifier ``breakglass.webhook`` describes."""
        return cls(
            hook.url, public_url=hook.public_url, max_attempts=hook.max_attempts,
            backoff_initial_s=hook.backoff_initial_s, backoff_max_s=hook.backoff_max_s,
            timeout_s=hook.timeout_s, queue_size=hook.queue_size,
        )

    def _count(self, outcome: str) -> None:
        self.counts[outcome] += 1
        if self._on_outcome is not None:
            self._on_outcome(outcome)

    def notify(self, text: str) -> bool:
        """Queue ``text`` for sending; never waits. False (logged, counted) when the queue is full."""
        try:
            self._queue.put_nowait(text)
        except asyncio.QueueFull:
            self._count("dropped")
            _log.warning("webhook.dropped", queued=self._queue.qsize(), why="queue full")
            return False
        return True

    @property
    def pending(self) -> int:
        """Messages waiting to be sent."""
        return self._queue.qsize()

    async def start(self) -> None:
        """Open the HTTP client and start the sending task."""
        if self._task is not None:
            return
        self._session = aiohttp.ClientSession(timeout=self._timeout, trust_env=False)
        self._task = asyncio.create_task(self._run(), name="breakglass-webhook")

    async def drain(self) -> None:
        """Wait until every queued message was sent or given up on (for tests and shutdown)."""
        await self._queue.join()

    async def stop(self, *, grace_s: float = 5.0) -> None:
        """Give queued messages up to ``grace_s`` to go out, then stop the task and close the client."""
        if self._task is None:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout=grace_s)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self) -> None:
        while True:
            text = await self._queue.get()
            try:
                await self._deliver(text)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let one message kill the worker
                self._count("failed")
                _log.error("webhook.failed", error=type(exc).__name__, attempts=0)
            finally:
                self._queue.task_done()

    async def _deliver(self, text: str) -> None:
        if self._session is None:
            raise RuntimeError("the webhook notifier was not started; call start() first")
        attempts = len(self._delays) + 1
        for attempt in range(1, attempts + 1):
            retry_after: float | None = None
            try:
                async with self._session.post(self._url.reveal(), json={"text": text}) as response:
                    status = response.status
                    await response.read()
                    if 200 <= status < 300:
                        self._count("sent")
                        return
                    if status == 429:
                        header = response.headers.get("Retry-After", "")
                        retry_after = float(header) if header.isdigit() else None
                    elif 400 <= status < 500:
                        self._count("failed")
                        _log.error("webhook.failed", status=status, attempts=attempt, why="refused by the webhook")
                        return
                    problem = f"status {status}"
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                problem = type(exc).__name__
            if attempt == attempts:
                self._count("failed")
                _log.error("webhook.failed", attempts=attempt, problem=problem, why="gave up")
                return
            self._count("retried")
            delay = self._delays[attempt - 1]
            if retry_after is not None:
                delay = min(max(delay, retry_after), self._backoff_max_s)
            _log.info("webhook.retrying", attempt=attempt, problem=problem, delay_s=delay)
            await self._sleep(delay)


def webhook_ctx(notifier: WebhookNotifier | None) -> Callable[[web.Application], AsyncIterator[None]]:
    """cleanup_ctx: start ``notifier`` with the app and stop it with the app; without one, nothing runs.

    app.py builds the notifier from ``breakglass.webhook`` (``WebhookNotifier.from_settings``) and
    stores it as ``app[WEBHOOK]``, where the break-glass handlers find it; without a webhook in the
    settings break-glass works without notifications.
    """

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        if notifier is None:
            yield
            return
        await notifier.start()
        try:
            yield
        finally:
            await notifier.stop()

    return ctx
