"""Consent receipts name their algorithm `Ed25519` (RFC 9864); receipts signed under the
deprecated `EdDSA` before the rename are evidence kept for years and verify all the same."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from joserfc import jws
from joserfc.jwk import KeySet

from access.runtime import Runtime, init_runtime
from api.settings import Settings
from consent import ReceiptInvalid, verify_receipt
from consent.receipts import SIGNING_KEY_NAME, b64url, b64url_decode, jwks, sign_receipt

BODY = {"consentId": "cs_1", "event": "granted", "piiPrincipalId": "r_1"}


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    rt = init_runtime(Settings(home=tmp_path / "h", database_url=f"sqlite:///{tmp_path}/v.db"))
    try:
        yield rt
    finally:
        rt.close()


def _resigned(runtime: Runtime, receipt: str, alg: str) -> str:
    """The same receipt with another `alg` in its header, signed by the same key."""
    header_part, payload, _ = receipt.split(".")
    header = {**json.loads(b64url_decode(header_part)), "alg": alg}
    signing_input = f"{b64url(json.dumps(header).encode())}.{payload}"
    signature = runtime.vault.keyring.sign(SIGNING_KEY_NAME, signing_input.encode())
    return f"{signing_input}.{b64url(signature)}"


def test_new_receipts_say_ed25519_and_old_eddsa_ones_still_verify(runtime: Runtime) -> None:
    with runtime.transaction() as session:
        _, receipt = sign_receipt(session, runtime.vault.keyring, BODY)
        keys = jwks(session)
    header = json.loads(b64url_decode(receipt.split(".")[0]))
    assert header["alg"] == "Ed25519"
    assert {(k["crv"], k["alg"]) for k in keys["keys"]} == {("Ed25519", "Ed25519")}
    assert verify_receipt(receipt, keys) == BODY
    # A JOSE library that knows RFC 9864 checks it with nothing but the published keys.
    checked = jws.deserialize_compact(receipt, KeySet.import_key_set(keys), algorithms=["Ed25519"])
    assert json.loads(checked.payload) == BODY

    assert verify_receipt(_resigned(runtime, receipt, "EdDSA"), keys) == BODY
    for alg in ("HS256", "none", "Ed448"):
        with pytest.raises(ReceiptInvalid, match="only Ed25519"):
            verify_receipt(_resigned(runtime, receipt, alg), keys)
