"""Consent (issue 5): records, revocations, requests, receipts, and the gate's look-up.

Depends on `audit`, `policies` and `vault`; never on `api`.
"""

from consent import models as models  # registers the tables with the shared metadata
from consent.errors import ConsentConflict, ConsentError, ConsentNotFound, InvalidConsent
from consent.receipts import ReceiptInvalid, verify_receipt
from consent.services import Actor, ConsentCover, ConsentService, Grant

__all__ = [
    "Actor",
    "ConsentConflict",
    "ConsentCover",
    "ConsentError",
    "ConsentNotFound",
    "ConsentService",
    "Grant",
    "InvalidConsent",
    "ReceiptInvalid",
    "verify_receipt",
]
