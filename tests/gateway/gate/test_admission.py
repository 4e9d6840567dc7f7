from __future__ import annotations

import contextvars

import structlog

from gateway.logging import log_context_var


class TestLogContextVar:
    def test_setting_the_var_binds_the_field(self) -> None:
        """Setting a log context variable binds its field exactly as bind_contextvars does."""
        var = log_context_var("probe_field")

        bound = contextvars.copy_context().run(lambda: (var.set("x"), structlog.contextvars.get_contextvars())[1])

        assert "x" == bound["probe_field"]

    def test_same_var_as_bind_contextvars(self) -> None:
        """A field bound with bind_contextvars and one set through the variable are one and the same."""
        var = log_context_var("probe_other")

        def bind_then_read() -> object:
            structlog.contextvars.bind_contextvars(probe_other="y")
            return var.get()

        assert "y" == contextvars.copy_context().run(bind_then_read)

    def test_creating_the_var_binds_nothing(self) -> None:
        """Making the variable leaves the field unbound."""
        log_context_var("probe_unbound")

        assert "probe_unbound" not in structlog.contextvars.get_contextvars()
