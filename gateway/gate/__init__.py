"""The decision per request: the gate seam (Admission, Gate), decide (pure), the policy gate and the access ledger."""

from __future__ import annotations
