"""The decision per request: the gate seam (Admission, Gate, GateAnswers), decide (pure), the policy gate and the access ledger; never renders a page."""

from __future__ import annotations
