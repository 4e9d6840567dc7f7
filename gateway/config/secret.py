"""Secret values in configuration: read from the environment or a file, never printed.

Owns: Secret and the pydantic field type SecretValue.
Must not import: anything from gateway beyond this module (it is a leaf).

In a config file a secret is written as one of::

    enroll_secret: {env: GATEHOUSE_ENROLL_SECRET}
    enroll_secret: {file: /run/secrets/enroll_secret}
    enroll_secret: {value: "only-for-demos-and-tests"}
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path
from typing import Annotated, Mapping

from pydantic import GetCoreSchemaHandler, ValidationInfo
from pydantic_core import PydanticCustomError, core_schema


class Secret:
    """A secret string whose repr and str never show it; call ``reveal()`` where it is used."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself."""
        return self._value

    def matches(self, candidate: str) -> bool:
        """Compare in constant time."""
        return hmac.compare_digest(self._value.encode(), candidate.encode())

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and self.matches(other._value)

    def __hash__(self) -> int:
        return hash(self._value)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: object, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.with_info_plain_validator_function(
            _validate_secret,
            serialization=core_schema.plain_serializer_function_ser_schema(lambda s: "***"),
        )


def _validate_secret(raw: object, info: ValidationInfo) -> Secret:
    if isinstance(raw, Secret):
        return raw
    context = info.context or {}
    environ: Mapping[str, str] = context.get("environ", os.environ)
    base_dir = Path(context.get("base_dir", "."))
    if not isinstance(raw, dict) or len(raw) != 1:
        raise PydanticCustomError(
            "secret",
            "write a secret as `{env: NAME}`, `{file: PATH}` or `{value: TEXT}`",
        )
    (kind, ref), = raw.items()
    if not isinstance(ref, str) or not ref:
        raise PydanticCustomError("secret", f"`{kind}` needs a non-empty string")
    if kind == "env":
        if ref not in environ:
            raise PydanticCustomError(
                "secret", f"environment variable `{ref}` is not set; export it before starting"
            )
        value = environ[ref]
    elif kind == "file":
        path = Path(ref) if Path(ref).is_absolute() else base_dir / ref
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise PydanticCustomError(
                "secret", f"cannot read secret file `{path}`: {exc.strerror or exc}"
            ) from None
    elif kind == "value":
        value = ref
    else:
        raise PydanticCustomError(
            "secret", f"unknown secret source `{kind}`; write `env`, `file` or `value`"
        )
    if not value:
        raise PydanticCustomError("secret", f"the secret from `{kind}: {ref}` is empty")
    return Secret(value)


SecretValue = Annotated[Secret, "secret"]
