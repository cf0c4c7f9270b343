"""The OAuth server against a red team: client enumeration, guessing, spraying, and
introspection by the wrong party.

One demo service serves the module, started with small limits (`LIMITS`). The limits are
per process and per address, so each test makes its requests from addresses of its own
(127/8 is all local) and registers the clients it makes fail: nothing one test does can
block another.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import secrets
import statistics
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from api.oauth.service import register_client
from tests.demo_server import DemoServer, demo_server_on, hidden_inputs, run_cli

CLIENT_LIMIT = 8  # failed client authentications per client id, from any address
ADDRESS_LIMIT = 12  # ... and per address, any client id
LOGIN_ADDRESS_LIMIT = 4  # failed logins per address, any username
LIMITS = {
    "VAULT_OAUTH_CLIENT_AUTH_MAX_FAILURES": str(CLIENT_LIMIT),
    "VAULT_OAUTH_CLIENT_AUTH_ADDRESS_MAX_FAILURES": str(ADDRESS_LIMIT),
    "VAULT_OAUTH_LOGIN_ADDRESS_MAX_FAILURES": str(LOGIN_ADDRESS_LIMIT),
}
CLIENT_WINDOW = 60  # the default window, in seconds
LOGIN_WINDOW = 300
STRANGER = "org_anju_property"  # a property company: no business with others' tokens
ENDPOINTS: dict[str, dict[str, str]] = {
    "/oauth/token": {"grant_type": "client_credentials"},
    "/oauth/introspect": {"token": "some-token"},
    "/oauth/revoke": {"token": "some-token"},
}
# Headers that differ between any two responses, whatever they answer.
PER_RESPONSE = {"date", "x-request-id"}

_addresses = itertools.count(1)


def fresh_address() -> str:
    """A loopback address no other request of this module has come from."""
    n = next(_addresses)
    return f"127.0.{1 + n // 250}.{1 + n % 250}"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_template: str | None,
) -> Iterator[DemoServer]:
    home = tmp_path_factory.mktemp("oauth-hardening")
    with contextlib.ExitStack() as stack:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in LIMITS.items():  # read once, when the app is made
                patch.setenv(name, value)
            demo = stack.enter_context(
                demo_server_on(request.param, home, postgres_template, residents=30)
            )
        yield demo


# -- helpers -----------------------------------------------------------------------------------


def from_address(server: DemoServer, address: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.url,
        transport=httpx.HTTPTransport(local_address=address),
        follow_redirects=False,
        timeout=60,
    )


def new_client(server: DemoServer, organisation: str = "org_health") -> tuple[str, str]:
    """A confidential client of the organisation, for one test's failures alone."""
    with server.runtime.transaction() as session:
        client_id, secret = register_client(
            session, server.runtime.audit, organisation, "confidential", ["residents:read"], []
        )
    assert secret is not None
    return client_id, secret


def cli(server: DemoServer, *args: str) -> Any:
    return run_cli(server.settings.home, server.settings.database_url or "", *args)


def printed(output: str) -> dict[str, str]:
    return dict(re.findall(r"^([a-z_]+): (\S+)$", output, re.MULTILINE))


def token_request(http: httpx.Client, auth: tuple[str, str]) -> httpx.Response:
    return http.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=auth)


def unknown_id() -> str:
    return f"cl_{secrets.token_hex(8)}"


def answer(response: httpx.Response) -> tuple[int, Any, dict[str, str]]:
    """What a caller can tell one response by: status, body, headers."""
    headers = {k: v for k, v in response.headers.items() if k not in PER_RESPONSE}
    return response.status_code, response.json(), headers


def assert_limited(response: httpx.Response, window: int = CLIENT_WINDOW) -> None:
    """An OAuth error (RFC 6749 5.2 form), 429, and when to come back."""
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["error"] == "temporarily_unavailable" and "access_token" not in body
    assert 1 <= int(response.headers["retry-after"]) <= window
    assert response.headers["cache-control"] == "no-store"


def sign_in(
    server: DemoServer, address: str, username: str, password: str, lang: str = "zh"
) -> httpx.Response:
    """The login form from `address`: GET it, then POST the credentials (no exchange)."""
    public = server.credentials["public_clients"][0]
    params = {
        "response_type": "code",
        "client_id": public["client_id"],
        "redirect_uri": public["redirect_uris"][0],
        "scope": "me",
        "state": "s1",
        "code_challenge": secrets.token_urlsafe(32),
        "code_challenge_method": "S256",
        "lang": lang,
    }
    with from_address(server, address) as browser:
        form = browser.get("/oauth/authorize", params=params)
        assert form.status_code == 200, form.text
        fields = {**hidden_inputs(form.text), "username": username, "password": password}
        return browser.post("/oauth/authorize", params=params, data=fields)


# -- client enumeration ------------------------------------------------------------------------


def test_a_wrong_secret_an_unknown_and_a_revoked_client_get_the_same_answer(
    server: DemoServer,
) -> None:
    known, _ = new_client(server)
    revoked, revoked_secret = new_client(server)
    done = cli(server, "clients", "revoke", revoked, "--reason", "contract ended")
    assert done.returncode == 0, done.stderr
    attempts = {
        "wrong secret": (known, secrets.token_urlsafe(32)),
        "unknown client": (unknown_id(), secrets.token_urlsafe(32)),
        "revoked client": (revoked, revoked_secret),  # with what used to be its secret
    }
    for path, data in ENDPOINTS.items():
        with from_address(server, fresh_address()) as http:
            for way in ("client_secret_basic", "client_secret_post"):
                answers = {}
                for case, (client_id, secret) in attempts.items():
                    if way == "client_secret_basic":
                        response = http.post(path, data=data, auth=(client_id, secret))
                    else:
                        form = {**data, "client_id": client_id, "client_secret": secret}
                        response = http.post(path, data=form)
                    answers[case] = answer(response)
                status, body, headers = answers["wrong secret"]
                assert status == 401 and body["error"] == "invalid_client", (path, way, body)
                assert headers["www-authenticate"].startswith("Basic ")
                for case, seen in answers.items():
                    assert seen == answers["wrong secret"], (path, way, case, answers)


def test_an_unknown_client_takes_about_as_long_as_a_wrong_secret(server: DemoServer) -> None:
    known, _ = new_client(server)

    def attempt(http: httpx.Client, client_id: str) -> float:
        start = time.perf_counter()
        response = token_request(http, (client_id, secrets.token_urlsafe(32)))
        elapsed = time.perf_counter() - start
        assert response.status_code == 401, response.text
        return elapsed

    wrong: list[float] = []
    unknown: list[float] = []
    with (
        from_address(server, fresh_address()) as one,
        from_address(server, fresh_address()) as other,
    ):
        for _ in range(5):  # interleaved, so both see the same load; within the limits
            wrong.append(attempt(one, known))
            unknown.append(attempt(other, unknown_id()))
    ratio = statistics.median(unknown) / statistics.median(wrong)
    assert 1 / 3 < ratio < 3, (wrong, unknown)


# -- guessing: limits on failed client authentications -----------------------------------------


def test_failures_for_one_client_id_from_many_addresses_get_429(server: DemoServer) -> None:
    target, secret = new_client(server)
    bystander, bystander_secret = new_client(server)
    for client_id in (target, unknown_id()):  # a made-up id is limited just the same
        for _ in range(CLIENT_LIMIT):
            with from_address(server, fresh_address()) as http:
                guess = token_request(http, (client_id, secrets.token_urlsafe(32)))
                assert guess.status_code == 401, guess.text
        with from_address(server, fresh_address()) as http:
            assert_limited(token_request(http, (client_id, secrets.token_urlsafe(32))))
    with from_address(server, fresh_address()) as http:
        # Even the right secret waits: otherwise the guessing would go on behind the 429.
        assert_limited(token_request(http, (target, secret)))
        # Other clients, from the same address, are not held back.
        assert token_request(http, (bystander, bystander_secret)).status_code == 200


def test_failures_from_one_address_across_client_ids_get_429(server: DemoServer) -> None:
    client_id, secret = new_client(server)
    with from_address(server, fresh_address()) as http:
        for _ in range(ADDRESS_LIMIT):
            guess = token_request(http, (unknown_id(), secrets.token_urlsafe(32)))
            assert guess.status_code == 401, guess.text
        assert_limited(token_request(http, (client_id, secret)))
        introspect = http.post("/oauth/introspect", data={"token": "x"}, auth=(client_id, secret))
        assert_limited(introspect)  # every endpoint that authenticates clients
    with from_address(server, fresh_address()) as elsewhere:
        assert token_request(elsewhere, (client_id, secret)).status_code == 200


def test_the_default_limits_let_a_few_failures_by_and_stop_a_flood() -> None:
    """The red team's run (60 wrong secrets in 3.4 s) on the defaults; a department that
    gets its secret wrong a few times a minute is never held back."""
    from api.oauth.config import OAuthSettings
    from api.oauth.ratelimit import ClientAuthLimiter, LoginLimiter

    defaults = OAuthSettings()
    now = [0.0]

    def clock() -> float:
        return now[0]

    clients = ClientAuthLimiter(
        defaults.client_auth_max_failures,
        defaults.client_auth_address_max_failures,
        defaults.client_auth_window_seconds,
        clock=clock,
    )
    logins = LoginLimiter(
        defaults.login_max_failures,
        defaults.login_window_seconds,
        address_max_failures=defaults.login_address_max_failures,
        clock=clock,
    )
    for _ in range(30):  # three failures every minute for ten minutes
        for _ in range(3):
            assert clients.retry_after("cl_dept", "10.1.1.1") == 0
            clients.failed("cl_dept", "10.1.1.1")
            assert logins.retry_after(f"worker{secrets.token_hex(2)}", "10.1.1.1") == 0
            logins.failed(f"worker{secrets.token_hex(2)}", "10.1.1.1")
        now[0] += 60
    refused = 0
    for n in range(60):  # one wrong secret, and one password, every 57 ms
        now[0] += 3.4 / 60
        if clients.retry_after("cl_target", "203.0.113.9") > 0:
            refused += 1
        else:
            clients.failed("cl_target", "203.0.113.9")
        if logins.retry_after(f"user{n}", "203.0.113.9") > 0:
            refused += 1
        else:
            logins.failed(f"user{n}", "203.0.113.9")
    assert refused >= 60  # of 120: at most tens of the flood got an answer


# -- spraying: one password on many accounts ---------------------------------------------------


def test_one_address_trying_many_usernames_gets_429(server: DemoServer) -> None:
    resident = server.user("resident")
    others = [u["username"] for u in server.credentials["users"] if u is not resident]
    usernames = [*others[:2], *(f"spray{n}" for n in range(LOGIN_ADDRESS_LIMIT - 2))]
    sprayer = fresh_address()
    for username in usernames:  # one try each: no account's own limit is reached
        failed = sign_in(server, sprayer, username, "Spring2024!Spring")
        assert failed.status_code == 400 and "用户名或密码不正确" in failed.text
    blocked = sign_in(server, sprayer, resident["username"], resident["password"])
    assert blocked.status_code == 429, blocked.text
    assert 1 <= int(blocked.headers["retry-after"]) <= LOGIN_WINDOW
    assert "尝试次数过多" in blocked.text
    english = sign_in(server, sprayer, resident["username"], resident["password"], "en")
    assert english.status_code == 429 and "Too many attempts" in english.text
    # The account is not locked: its owner, elsewhere, signs in.
    owner = sign_in(server, fresh_address(), resident["username"], resident["password"])
    assert owner.status_code == 303, owner.text
    assert "code=" in owner.headers["location"]


# -- introspection (RFC 7662 section 4) --------------------------------------------------------


def test_introspection_tells_only_the_tokens_audience_its_client_or_an_introspect_client(
    server: DemoServer,
) -> None:
    resident = server.user("resident")
    person = server.login(resident["username"], resident["password"], "me")
    health = server.client("org_health")
    health_auth = (health["client_id"], health["client_secret"])
    health_token = server.client_token("org_health")
    stranger = server.client(STRANGER)
    stranger_auth = (stranger["client_id"], stranger["client_secret"])

    def introspect(token: str, auth: tuple[str, str]) -> dict[str, Any]:
        response = httpx.post(f"{server.url}/oauth/introspect", data={"token": token}, auth=auth)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    # An unrelated system learns nothing: not even that the token is live, nor whose it is.
    for token in (person["access_token"], person["refresh_token"], health_token):
        assert introspect(token, stranger_auth) == {"active": False}
    # A resource server registered for it, by the operator's command, learns everything.
    added = cli(
        server, "clients", "add", "--organisation", "org_civil_affairs", "--scopes", "introspect"
    )
    assert added.returncode == 0, added.stderr
    gateway = printed(added.stdout)
    gateway_auth = (gateway["client_id"], gateway["client_secret"])
    full = introspect(person["access_token"], gateway_auth)
    assert full["active"] is True and full["username"] == resident["username"]
    assert full["role"] == "resident"
    assert introspect(health_token, gateway_auth)["client_id"] == health["client_id"]
    own = introspect(health_token, health_auth)
    assert own["active"] is True and own["client_id"] == health["client_id"]
    # A token meant for the stranger's system too (it is in `aud`) is its to ask about.
    oauth = server.app.state.oauth_server
    now = int(time.time())
    claims = {
        "iss": oauth.settings.resolved_issuer,
        "aud": [oauth.settings.resolved_audience, stranger["client_id"]],
        "sub": health["client_id"],
        "client_id": health["client_id"],
        "scope": "residents:read",
        "iat": now,
        "exp": now + 300,
        "jti": secrets.token_urlsafe(16),
        "org": "org_health",
    }
    with server.runtime.transaction() as session:
        shared = oauth.signer.sign(session, claims)
    assert introspect(shared, stranger_auth)["active"] is True
    # A property company's system cannot be given the scope.
    refused = cli(server, "clients", "add", "--organisation", STRANGER, "--scopes", "introspect")
    assert refused.returncode != 0 and "introspect" in refused.stderr
