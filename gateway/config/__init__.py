"""What an operator writes: the settings file and its sections, secrets, the policy file and the policy in force, the store DSN, the clock."""

from __future__ import annotations
