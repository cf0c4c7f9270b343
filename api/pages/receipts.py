"""Consent receipts on the pages: checked as anyone can check them, with the public,
never-pruned receipt keys (`/v1/receipt-keys`), not with anything only the vault holds."""

from __future__ import annotations

from api.pages.core import Api
from consent.receipts import ReceiptInvalid, verify_receipt


async def receipt_signature_ok(api: Api, jws: str) -> bool:
    keys = await api.get("/v1/receipt-keys", auth=False)
    try:
        verify_receipt(jws, keys)
    except ReceiptInvalid:
        return False
    return True
