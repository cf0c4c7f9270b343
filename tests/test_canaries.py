"""Canary scan: a resident's identifiers, planted as canaries, never show in plaintext
where they must not — logs, error messages, masked answers, explanations, exports of
masked fields, or anywhere in the database file outside their ciphertexts."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import select

from tests.demo_server import residents_in, run_demo_server
from vault.models import Organisation


def test_planted_canaries_never_leak(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    database = tmp_path / "vault.db"
    with run_demo_server(tmp_path / "home", f"sqlite:///{database}", 40) as server:
        with server.runtime.vault.sessions() as session:
            # Not a resident whose phone is the committee's office number (a placeholder
            # the demo plants for `quality` to find): that number is public.
            offices = set(session.scalars(select(Organisation.office_phone)))
            for resident in residents_in(server, "cm_xingfu"):
                values = server.runtime.vault.store.read(session, resident, ["id_number", "phone"])
                if values.get("phone") not in offices and values.get("id_number"):
                    break
        canaries = [values["id_number"], values["phone"]]
        assert all(canaries)
        seen: list[str] = []  # every answer a caller who may not see them in clear got

        def keep(response: httpx.Response) -> httpx.Response:
            seen.append(response.text)
            return response

        def call(
            method: str, path: str, token: str, purpose: str | None = None, **kwargs: object
        ) -> httpx.Response:
            headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}  # type: ignore[dict-item]
            if purpose:
                headers["Purpose"] = purpose
            return keep(
                httpx.request(method, f"{server.url}{path}", headers=headers, timeout=30, **kwargs)
            )  # type: ignore[arg-type]

        # A property company (masked phone, no ID number), with and without consent.
        company = server.client_token("org_anju_property")
        me = server.resident_token(resident)
        httpx.post(
            f"{server.url}/v1/me/consents",
            headers={"Authorization": f"Bearer {me}"},
            json={
                "recipient": "org_anju_property",
                "purpose": "property-notice",
                "separate": True,
                "fields": ["phone", "address"],
            },
        )
        named = server.pseudonym("org_anju_property", resident)
        read = call("GET", f"/v1/residents/{named}", company, "property-notice")
        assert read.status_code == 200 and read.json()["treatments"]["phone"] == "masked"
        call("GET", "/v1/residents", company, "property-notice")
        call("GET", "/v1/exports/residents", company, "property-notice", params={"format": "csv"})
        # Searches by the identifier itself: POST bodies, answered without echoing it.
        call(
            "POST",
            "/v1/residents/search",
            company,
            "property-notice",
            json={"phone": values["phone"]},
        )
        call(
            "POST",
            "/v1/residents/search",
            company,
            "property-notice",
            json={"id_number": values["id_number"] + "X"},
        )
        # Refusals, explanations and dry runs of every kind.
        call("GET", f"/v1/residents/{named}", company, "subsidy-review")
        call("POST", "/v1/decisions/explain", company, json={"purpose": "subsidy-review"})
        call("GET", f"/v1/decisions/{read.headers['Decision-Id']}", company)
        # A grid worker of the other community, and bad input carrying the canary.
        worker = next(
            u
            for u in server.credentials["users"]
            if u["role"] == "grid_worker" and u["jurisdiction"]["community"] == "cm_hexie"
        )
        token = server.login(
            worker["username"], worker["password"], "residents:read residents:write"
        )["access_token"]
        other = residents_in(server, "cm_hexie")[0]
        call("GET", f"/v1/residents/{resident}", token, "grid-service")
        call(
            "PATCH",
            f"/v1/residents/{other}",
            token,
            "grid-service",
            json={"fields": {"phone": values["phone"] + "0"}},
        )
        call(
            "PATCH",
            f"/v1/residents/{other}",
            token,
            "grid-service",
            json={"fields": {"id_number": values["id_number"][:-1]}},
        )
        call("GET", f"/v1/residents/{resident}", token, "emergency-rescue")  # no grant
        # The resident's own views may show them; the departments' clear fields may too.
        own = httpx.get(f"{server.url}/v1/me", headers={"Authorization": f"Bearer {me}"})
        assert values["phone"] in own.text  # the canary is real: it does show where allowed
        auditor = server.user("auditor")
        audit = server.login(auditor["username"], auditor["password"], "audit:read")
        call("GET", "/v1/audit/entries", audit["access_token"], params={"resident_id": resident})
        call(
            "GET",
            "/v1/audit/entries",
            audit["access_token"],
            params={"resident_id": resident, "format": "csv"},
        )
        call("GET", "/v1/audit/alerts", audit["access_token"])
        call("GET", "/v1/audit/break-glass", audit["access_token"], params={"status": "all"})
        call("GET", "/v1/organisations/org_anju_property/visibility", audit["access_token"])
        server.runtime.audit.checkpoint(server.runtime.vault.sessions)
    logs = capfd.readouterr()
    files = [database, *database.parent.glob("vault.db-*")]
    stored = b"".join(path.read_bytes() for path in files if path.exists())
    for canary in canaries:
        leaks = [text[:200] for text in seen if canary in text]
        assert not leaks, f"canary in an answer: {leaks[0]}"
        assert canary not in logs.out and canary not in logs.err, "canary in the logs"
        assert canary.encode() not in stored, "canary stored in clear in the database"
        assert json.dumps(canary)[1:-1].encode() not in stored
        assert quote(canary).encode() not in stored
