"""Verified user and device identity for every request, and what upstreams receive about them.

Owns: the identity package (config, tokens, jwks, session, oidc, device, assertion, resolver, routes).
Must not import: gate, policy_engine, breakglass (identity carries no policy).

Public names load lazily, so importing ``gateway.identity.model`` or ``gateway.config.identity``
(from the gate or the settings) does not pull in aiohttp or the resolver.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "gateway.identity.assertion": (
        "SigningKeys", "UnsafeHeaderValue", "encode_groups", "encode_header_value", "identity_headers",
        "jwks_document", "load_signing_keys", "sign_assertion",
    ),
    "gateway.config.identity": ("IdentitySettings",),
    "gateway.identity.device": ("DeviceEvidence", "device_serial", "serial_from_peercert", "verify_device_assertion"),
    "gateway.identity.errors": ("AmbiguousDeviceCertificate", "AuthReason", "AuthenticationError", "DeviceAssertionError", "KeyFileError"),
    "gateway.identity.jwks": ("JwksCache", "KeySet", "StaticKeys", "load_key_file", "load_key_files"),
    "gateway.identity.model": ("DeviceId", "Identity", "PostureSummary"),
    "gateway.identity.resolver": ("IdentityResolver", "check_identity_files", "unauthenticated_response"),
    "gateway.identity.routes": ("add_identity_routes", "identity_cleanup_ctx"),
    "gateway.identity.session": ("SessionCodec", "safe_return_path"),
    "gateway.identity.tokens": ("ClaimNames", "UnknownKeyId", "VerifiedTokenCache", "verify_token"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

# Written out (not computed) so that checkers see the public names; a test keeps it equal to
# sorted(_MODULE_OF).
__all__ = [
    "AmbiguousDeviceCertificate", "AuthReason", "AuthenticationError", "ClaimNames", "DeviceAssertionError", "DeviceEvidence",
    "DeviceId", "Identity", "IdentityResolver", "IdentitySettings", "JwksCache", "KeyFileError", "KeySet", "PostureSummary",
    "SessionCodec", "SigningKeys", "StaticKeys", "UnknownKeyId", "UnsafeHeaderValue", "VerifiedTokenCache", "add_identity_routes",
    "check_identity_files", "device_serial", "encode_groups", "encode_header_value", "identity_cleanup_ctx", "identity_headers",
    "jwks_document", "load_key_file", "load_key_files", "load_signing_keys", "safe_return_path", "serial_from_peercert",
    "sign_assertion", "unauthenticated_response", "verify_device_assertion", "verify_token",
]


def __getattr__(name: str) -> object:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module `gateway.identity` has no attribute `{name}`")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from gateway.identity.assertion import (
        SigningKeys, UnsafeHeaderValue, encode_groups, encode_header_value, identity_headers, jwks_document,
        load_signing_keys, sign_assertion,
    )
    from gateway.config.identity import IdentitySettings
    from gateway.identity.device import DeviceEvidence, device_serial, serial_from_peercert, verify_device_assertion
    from gateway.identity.errors import AmbiguousDeviceCertificate, AuthenticationError, AuthReason, DeviceAssertionError, KeyFileError
    from gateway.identity.jwks import JwksCache, KeySet, StaticKeys, load_key_file, load_key_files
    from gateway.identity.model import DeviceId, Identity, PostureSummary
    from gateway.identity.resolver import IdentityResolver, check_identity_files, unauthenticated_response
    from gateway.identity.routes import add_identity_routes, identity_cleanup_ctx
    from gateway.identity.session import SessionCodec, safe_return_path
    from gateway.identity.tokens import ClaimNames, UnknownKeyId, VerifiedTokenCache, verify_token
