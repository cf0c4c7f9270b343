"""Stale reads after a revocation, under concurrent readers of a cached read.

The hot path caches token state, subjects, suspensions and the district's data under the
change stamp (vault/stamps.py). This plays N readers (default 50) reading one resident
over and over, so every cache is warm, and then, while they read:
1. revokes the department's mandate for the purpose (`vault.mandates.revoke_mandate`);
2. revokes the readers' access token (RFC 7009, `POST /oauth/revoke`);
3. suspends the department's client, as the detector does.

For each, it prints the reads begun before and after the change committed, and the stale
reads: answered 200 although begun after the commit. The goal is 0 for each.

    python bench/bench_revocation.py [--readers 50] [--seconds 2] [--database-url URL]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from audit.models import Suspension  # noqa: E402
from tests.demo_server import DemoServer, residents_where, run_demo_server  # noqa: E402
from vault.mandates import catalogue_categories, grant_mandate, revoke_mandate  # noqa: E402
from vault.models import new_id, utcnow  # noqa: E402
from vault.purposes import RegisteredPurpose  # noqa: E402

ORGANISATION = "org_civil_affairs"
PURPOSE = "subsidy-review"


def hammer(
    server: DemoServer,
    token: str,
    resident: str,
    *,
    readers: int,
    seconds: float,
    change: Callable[[], None],
) -> tuple[int, int, int]:
    """(reads begun before the change committed, after it, stale ones among the latter)."""
    answers: list[tuple[float, int]] = []
    lock = threading.Lock()
    stop = threading.Event()
    url = f"{server.url}/v1/residents/{resident}"
    headers = {"Authorization": f"Bearer {token}", "Purpose": PURPOSE}

    def reader() -> None:
        with httpx.Client(timeout=60) as client:
            while not stop.is_set():
                began = time.monotonic()
                status = client.get(url, headers=headers).status_code
                with lock:
                    answers.append((began, status))

    threads = [threading.Thread(target=reader) for _ in range(readers)]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    change()
    committed = time.monotonic()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    before = sum(1 for began, _ in answers if began < committed)
    after = [status for began, status in answers if began > committed]
    return before, len(after), sum(1 for status in after if status == 200)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--database-url", default=None, help="default: a new SQLite file")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="rv-revocation-"))
    url = args.database_url or f"sqlite:///{home / 'vault.db'}"
    configured = {
        "rate_limit_standard": 10**8,
        "rate_limit_sensitive": 10**8,
        "alert_suspend_on": "",
    }
    print(f"{args.readers} readers; rate limits lifted and no alert suspends (settings)")
    print(f"{'change':<34} {'reads before':>12} {'reads after':>12} {'stale':>6}")
    with run_demo_server(home / "home", url, 60, **configured) as server:
        runtime = server.runtime
        resident = server.pseudonym(ORGANISATION, residents_where(server)[0])
        client = server.client(ORGANISATION)

        def revoke() -> None:
            with runtime.transaction() as session:
                revoke_mandate(session, ORGANISATION, PURPOSE, actor="bench")

        def regrant() -> None:
            with runtime.transaction() as session:
                registered = session.get(RegisteredPurpose, PURPOSE)
                actions = registered.definition["actions"] if registered else ["read"]
                grant_mandate(
                    session,
                    ORGANISATION,
                    PURPOSE,
                    actions,
                    field_categories=catalogue_categories(runtime.vault.store.catalogue),
                    actor="bench",
                )

        def token_revoked(token: str) -> Callable[[], None]:
            def change() -> None:
                httpx.post(
                    f"{server.url}/oauth/revoke",
                    data={"token": token},
                    auth=(client["client_id"], client["client_secret"]),
                ).raise_for_status()

            return change

        def suspend() -> None:
            with runtime.transaction() as session:
                session.add(
                    Suspension(
                        id=new_id("su"),
                        actor=client["client_id"],
                        actor_kind="client",
                        reason="alert:bench",
                        created_at=utcnow(),
                    )
                )

        # Each change runs against a fresh token; the mandate is granted again after its run.
        changes: list[tuple[str, Callable[[str], Callable[[], None]], Callable[[], None]]] = [
            ("mandate revoked", lambda _: revoke, regrant),
            ("access token revoked (RFC 7009)", token_revoked, lambda: None),
            ("client suspended", lambda _: suspend, lambda: None),
        ]
        rows = []
        for name, change_for, undo in changes:
            token = server.client_token(ORGANISATION)
            counts = hammer(
                server,
                token,
                resident,
                readers=args.readers,
                seconds=args.seconds,
                change=change_for(token),
            )
            rows.append((name, counts))
            undo()
    for name, (before, after, stale) in rows:
        print(f"{name:<34} {before:>12} {after:>12} {stale:>6}")
    stale_total = sum(row[1][2] for row in rows)
    print(f"stale reads in all: {stale_total} (goal 0)")


if __name__ == "__main__":
    main()
