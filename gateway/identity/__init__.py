"""Verified user and device identity for every request, and what upstreams receive about them.

Owns: the identity package (config, tokens, jwks, session, oidc, device, assertion, resolver, routes).
Must not import: gate, policy_engine, breakglass (identity carries no policy).
"""

from __future__ import annotations

from gateway.identity.assertion import (
    SigningKeys, UnsafeHeaderValue, encode_groups, encode_header_value, identity_headers, jwks_document,
    load_signing_keys, sign_assertion,
)
from gateway.identity.config import IdentitySettings
from gateway.identity.device import DeviceEvidence, device_serial, owner_matches, serial_from_peercert, verify_device_assertion
from gateway.identity.errors import AuthenticationError, AuthReason, DeviceAssertionError, KeyFileError
from gateway.identity.jwks import JwksCache, KeySet, StaticKeys, load_key_file, load_key_files
from gateway.identity.model import DeviceId, Identity, PostureSummary
from gateway.identity.resolver import IdentityResolver, check_identity_files, identity_cleanup_ctx, unauthenticated_response
from gateway.identity.routes import add_identity_routes
from gateway.identity.session import SessionCodec, safe_return_path
from gateway.identity.tokens import ClaimNames, UnknownKeyId, VerifiedTokenCache, verify_token

__all__ = [
    "AuthReason", "AuthenticationError", "ClaimNames", "DeviceAssertionError", "DeviceEvidence", "DeviceId",
    "Identity", "IdentityResolver", "IdentitySettings", "JwksCache", "KeyFileError", "KeySet", "PostureSummary",
    "SessionCodec", "SigningKeys", "StaticKeys", "UnknownKeyId", "UnsafeHeaderValue", "VerifiedTokenCache",
    "add_identity_routes", "check_identity_files", "device_serial", "encode_groups", "encode_header_value", "identity_cleanup_ctx",
    "identity_headers", "jwks_document", "load_key_file", "load_key_files", "load_signing_keys", "owner_matches",
    "safe_return_path", "serial_from_peercert", "sign_assertion", "unauthenticated_response", "verify_device_assertion",
    "verify_token",
]
