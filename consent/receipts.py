"""Consent receipts: Kantara consent receipt fields, signed as a compact Ed25519 JWS.

The body follows the Kantara Initiative Consent Receipt Specification (v1.1) field names;
extension members (`consentId`, `event`, `expiresAt`, ...) carry what PIPL asks us to keep.
The signature is Ed25519 by the keyring's `consent-receipts` key; the private key never
leaves the keyring. Every public key that ever signed is kept in `consent_receipt_keys`
and published as a JWKS, so a receipt verifies offline years later with `verify_receipt`.
The JWS names the algorithm `Ed25519` (RFC 9864); receipts from before say `EdDSA`, the
same signature under the deprecated name, and verify all the same.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from consent.models import ReceiptKey
from vault.interfaces import JWS_ALGORITHM, JWS_ALGORITHMS_ACCEPTED, Keyring

SIGNING_KEY_NAME = "consent-receipts"
KANTARA_VERSION = "KI-CR-v1.1.0"
MEDIA_TYPE = "application/jose"


class ReceiptInvalid(ValueError):
    """A receipt that is malformed, signed by an unknown key, or altered."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def key_id(public_key: bytes) -> str:
    """The RFC 7638 JWK thumbprint of the Ed25519 public key (base64url SHA-256)."""
    canonical = json.dumps(
        {"crv": "Ed25519", "kty": "OKP", "x": b64url(public_key)},
        separators=(",", ":"),
        sort_keys=True,
    )
    return b64url(hashlib.sha256(canonical.encode()).digest())


def jwk(public_key: bytes) -> dict[str, str]:
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64url(public_key),
        "kid": key_id(public_key),
        "alg": JWS_ALGORITHM,
        "use": "sig",
    }


def current_key(session: Session, keyring: Keyring) -> tuple[str, bytes]:
    """The signing key's id and public key, registered in the never-pruned key table."""
    public = keyring.signing_public_key(SIGNING_KEY_NAME)
    kid = key_id(public)
    if session.get(ReceiptKey, kid) is None:
        session.add(ReceiptKey(kid=kid, public_key=public))
        session.flush()
    return kid, public


def sign_receipt(session: Session, keyring: Keyring, body: Mapping[str, Any]) -> tuple[str, str]:
    """(kid, compact JWS) of the body, signed by the keyring."""
    kid, _ = current_key(session, keyring)
    header = {"alg": JWS_ALGORITHM, "typ": "consent-receipt+jws", "kid": kid}
    signing_input = (
        b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode())
    )
    signature = keyring.sign(SIGNING_KEY_NAME, signing_input.encode("ascii"))
    return kid, f"{signing_input}.{b64url(signature)}"


def jwks(session: Session) -> dict[str, Any]:
    rows = session.scalars(select(ReceiptKey).order_by(ReceiptKey.first_used_at)).all()
    return {"keys": [jwk(row.public_key) for row in rows]}


def verify_receipt(token: str, keys: Mapping[str, Any]) -> dict[str, Any]:
    """Check a compact JWS receipt against a JWKS (a dict as `GET /v1/receipt-keys`
    returns) with no call to the vault; returns the receipt body or raises ReceiptInvalid."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise ReceiptInvalid("not a compact JWS")
    try:
        header = json.loads(b64url_decode(parts[0]))
        signature = b64url_decode(parts[2])
    except ValueError as exc:
        raise ReceiptInvalid("malformed header or signature") from exc
    # Receipts are evidence kept for years: those signed as `EdDSA`, before RFC 9864's
    # name, verify as they always did.
    if not isinstance(header, dict) or header.get("alg") not in JWS_ALGORITHMS_ACCEPTED:
        raise ReceiptInvalid("only Ed25519 (or EdDSA) receipts are accepted")
    candidates = [
        k
        for k in keys.get("keys", [])
        if k.get("kid") == header.get("kid") and k.get("kty") == "OKP" and k.get("crv") == "Ed25519"
    ]
    if not candidates:
        raise ReceiptInvalid("signed by an unknown key")
    public = Ed25519PublicKey.from_public_bytes(b64url_decode(str(candidates[0]["x"])))
    try:
        public.verify(signature, f"{parts[0]}.{parts[1]}".encode("ascii"))
    except InvalidSignature as exc:
        raise ReceiptInvalid("the signature does not match: the receipt was altered") from exc
    try:
        body = json.loads(b64url_decode(parts[1]))
    except ValueError as exc:
        raise ReceiptInvalid("malformed body") from exc
    if not isinstance(body, dict):
        raise ReceiptInvalid("malformed body")
    return body
