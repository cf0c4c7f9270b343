"""Schemathesis hooks (SCHEMATHESIS_HOOKS=tests.schemathesis_hooks): how to make the string
formats the OpenAPI document names, the way a client would come by them.

* `cursor`: a list's `next_cursor`; the test puts real ones in RV_ST_CURSORS (JSON).
* `log-cursor`: the audit log's cursors, which name a leaf index.
* `cn-resident-id`: a well-formed resident ID number (region, birth date, check digit);
  whether anyone holds it is what the search finds out.
"""

from __future__ import annotations

import json
import os
from datetime import date

import schemathesis
from hypothesis import strategies as st

from api.http.params import MAX_INTEGER
from audit.queries import encode_cursor
from vault.validators import PROVINCE_CODES, id_check_char


def _resident_id(region: int, born: date, serial: int) -> str:
    first = f"{region:02d}0101{born:%Y%m%d}{serial:03d}"
    return first + id_check_char(first)


_CURSORS = json.loads(os.environ.get("RV_ST_CURSORS", "[]")) or ["-"]

schemathesis.openapi.format("cursor", st.sampled_from(_CURSORS))
schemathesis.openapi.format("log-cursor", st.integers(0, MAX_INTEGER).map(encode_cursor))
schemathesis.openapi.format(
    "cn-resident-id",
    st.builds(
        _resident_id,
        st.sampled_from(sorted(PROVINCE_CODES)),
        st.dates(date(1920, 1, 1), date(2020, 12, 31)),
        st.integers(0, 999),
    ),
)
