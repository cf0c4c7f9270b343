"""The OPA-server engine: the same Rego, evaluated by an OPA sidecar over its REST API.

Production runs OPA beside each API node with a bundle built by
`opa build -b ... --revision R` (`policies.bundle.build_bundle`); the engine reads the
revision the server actually evaluated with from each response's provenance and can
insist on an expected one. For development and tests it can instead push the modules
and data itself (`OpaServerEngine.push`). When the server keeps decision logs, the
response's `decision_id` becomes the decision's `evaluation_id`, so audit entries and
OPA's decision log correlate. The district's data (purpose registry and mandates, from
the database: `policies.district`) is put at `data.district` through OPA's data API
(`load_district`) on the first request after it changes, beside the bundle, which owns
only `data.vault`.

Transport is opa-python-client's synchronous `OpaClient`. Its `ssl` option only picks
the URL scheme, so certificate verification is set here explicitly (`verify`: True, a
CA bundle path, or False only for a test server).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.parse import urlsplit

import requests
from opa_client import OpaClient
from opa_client.errors import (
    ConnectionsError,
    DeletePolicyError,
    PolicyNotFoundError,
    RegoParseError,
)

from policies.bundle import (
    DATA_ROOT,
    DISTRICT_ROOT,
    PolicyBundle,
    combined_revision,
    load_bundle,
)
from policies.errors import PolicyEngineFault, PolicyError, PolicyUnavailable
from policies.inputs import field_names
from policies.interfaces import Decision

__all__ = ["OpaServerEngine", "UnexpectedRevision", "free_port", "local_opa_server"]

_PACKAGE, _RULE = "vault/decision", "decision"
_BATCH_QUERY = (
    "decisions := [d | some c in input.cases; d := data.vault.decision.decision with input as c]"
)
_UNAVAILABLE_STATUS = frozenset({502, 503, 504})


class UnexpectedRevision(PolicyEngineFault):
    """The OPA server evaluates under a bundle revision other than the pinned one (or
    none): its decisions are refused, never silently replaced by another engine's."""

    def __init__(self, reported: str | None, expected: str) -> None:
        super().__init__(f"the OPA server runs revision {reported or 'none'}, expected {expected}")
        self.reported = reported
        self.expected = expected


class OpaServerEngine:
    """`PolicyEngine` over an OPA server. Thread-safe (one pooled HTTP session)."""

    def __init__(
        self,
        url: str,
        *,
        verify: bool | str = True,
        cert: str | tuple[str, str] | None = None,
        token: str | None = None,
        timeout: float = 2.0,
        retries: int = 1,
        expected_revision: str | None = None,
        revision_ttl: float = 5.0,
    ) -> None:
        """`url` is the server's base, e.g. `http://127.0.0.1:8181`.

        `expected_revision`: refuse decisions made under any other bundle revision.
        `revision_ttl`: how long a revision read from the server is trusted before
        `revision` asks again (each evaluation also refreshes it from its provenance).
        """
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise PolicyError(f"not an OPA server URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        self._client = OpaClient(
            host=parts.hostname,
            port=port,
            ssl=parts.scheme == "https",
            cert=cert,
            token=token,
            retries=retries,
            timeout=timeout,
        )
        # OpaClient leaves verification at requests' default unless ssl=True; be explicit.
        self._client._session.verify = verify
        self.url = f"{parts.scheme}://{parts.hostname}:{port}"
        self._expected = expected_revision
        self._ttl = revision_ttl
        self._pushed: PolicyBundle | None = None
        # The district data revision this engine last put at data.district, if any.
        self._district: str | None = None
        self._revision: str | None = None
        self._revision_read_at = float("-inf")
        self._lock = threading.Lock()

    @classmethod
    def push(cls, url: str, bundle: PolicyBundle | None = None, **options: Any) -> OpaServerEngine:
        """An engine that first loads `bundle` (default: the shipped policy) into the server."""
        engine = cls(url, **options)
        engine.load(bundle or load_bundle())
        return engine

    # -- revision --------------------------------------------------------------------

    @property
    def revision(self) -> str:
        return combined_revision(self._code_revision(), self._district)

    def _code_revision(self) -> str:
        if self._pushed is not None:
            return self._pushed.revision
        if self._revision is None or time.monotonic() - self._revision_read_at > self._ttl:
            self._remember(self.server_revision())
        assert self._revision is not None  # noqa: S101 - set by _remember or it raised
        return self._revision

    def server_revision(self) -> str:
        """The revision of the bundle the server has activated (`/v1/data/system/bundles`)."""
        try:
            bundles = self._client.get_data("system/bundles").get("result") or {}
        except PolicyNotFoundError as exc:
            raise PolicyEngineFault(f"cannot read the OPA server's bundles: {exc.message}") from exc
        except (requests.RequestException, ConnectionsError, ValueError) as exc:
            raise PolicyUnavailable(f"OPA server unreachable at {self.url}: {exc}") from exc
        # Only bundles that own data.vault count: the sidecar may run others beside ours.
        revisions = {
            str(entry.get("manifest", {}).get("revision", ""))
            for entry in bundles.values()
            if isinstance(entry, Mapping) and _owns_vault(entry.get("manifest", {}))
        }
        if len(revisions) != 1 or "" in revisions:
            if self._expected is not None:
                raise UnexpectedRevision(None, self._expected)
            raise PolicyEngineFault(f"expected one bundle with a revision, found {bundles!r}")
        return revisions.pop()

    @property
    def expected_revision(self) -> str | None:
        """The pinned revision, or None when any revision the server reports is accepted."""
        return self._expected

    def _remember(self, revision: str) -> None:
        if self._expected is not None and revision != self._expected:
            raise UnexpectedRevision(revision, self._expected)
        with self._lock:
            self._revision = revision
            self._revision_read_at = time.monotonic()

    # -- evaluation ------------------------------------------------------------------

    def evaluate(self, input: Mapping[str, Any]) -> Decision:
        names = field_names(input)
        response = self._query(input)
        if "result" not in response:
            raise PolicyEngineFault("the policy decision is undefined on the OPA server")
        revision = self._revision_of(response)
        decision_id = response.get("decision_id")
        return Decision.from_result(
            response["result"],
            revision=revision,
            evaluation_id=decision_id if isinstance(decision_id, str) else str(uuid.uuid4()),
            field_names=names,
        )

    def evaluate_many(
        self, inputs: Sequence[Mapping[str, Any]], *, chunk_size: int = 250, workers: int = 2
    ) -> list[Decision]:
        """Many decisions in a few round trips, in order: dry runs ("who could see my
        fields?"), explanations, the CI decision table. One ad-hoc query per chunk
        evaluates the decision once per input; the server logs one decision per chunk,
        so each decision gets a fresh UUID as its evaluation id."""
        names = [field_names(case) for case in inputs]
        chunks = [list(inputs[i : i + chunk_size]) for i in range(0, len(inputs), chunk_size)]
        before = self._code_revision() if self._pushed is not None else self.server_revision()
        district = self._district
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            answers = list(pool.map(self._query_batch, chunks))
        after = self._code_revision() if self._pushed is not None else self.server_revision()
        if before != after or district != self._district:
            raise PolicyEngineFault(f"the server moved from {before} to {after} during a batch")
        if self._pushed is None:
            self._remember(after)
        after = combined_revision(after, district)
        results = [result for answer in answers for result in answer]
        if len(results) != len(inputs):
            raise PolicyEngineFault("the OPA server returned too few decisions")
        return [
            Decision.from_result(
                result, revision=after, evaluation_id=str(uuid.uuid4()), field_names=fields
            )
            for result, fields in zip(results, names, strict=True)
        ]

    def _query_batch(self, cases: list[Mapping[str, Any]]) -> list[Any]:
        response = self._call(
            lambda: self._client.ad_hoc_query(
                _BATCH_QUERY, input_data={"cases": [dict(case) for case in cases]}
            )
        )
        rows = response.get("result")
        if not isinstance(rows, list) or len(rows) != 1 or not isinstance(rows[0], Mapping):
            raise PolicyEngineFault("the OPA server's batch answer is malformed")
        decisions = rows[0].get("decisions")
        if not isinstance(decisions, list):
            raise PolicyEngineFault("the OPA server's batch answer is malformed")
        return decisions

    def _query(self, input: Mapping[str, Any]) -> Mapping[str, Any]:
        return self._call(
            lambda: self._client.query_rule(
                dict(input), _PACKAGE, _RULE, query_params={"provenance": "true"}
            )
        )

    def _call(self, request: Callable[[], object]) -> Mapping[str, Any]:
        try:
            response = request()
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            detail = _opa_message(exc.response)
            if status in _UNAVAILABLE_STATUS:
                raise PolicyUnavailable(f"OPA server answered {status}: {detail}") from exc
            raise PolicyEngineFault(f"OPA server answered {status}: {detail}") from exc
        except (requests.RequestException, ConnectionsError) as exc:
            raise PolicyUnavailable(f"OPA server unreachable at {self.url}: {exc}") from exc
        except ValueError as exc:  # a body that is not JSON
            raise PolicyEngineFault(f"OPA server sent a malformed response: {exc}") from exc
        if not isinstance(response, Mapping):
            raise PolicyEngineFault("OPA server sent a malformed response")
        return response

    def _revision_of(self, response: Mapping[str, Any]) -> str:
        return combined_revision(self._bundle_revision_of(response), self._district)

    def _bundle_revision_of(self, response: Mapping[str, Any]) -> str:
        provenance = response.get("provenance")
        bundles = provenance.get("bundles") if isinstance(provenance, Mapping) else None
        if self._pushed is not None:
            if bundles:
                raise PolicyEngineFault("the OPA server runs a bundle, not the pushed policy")
            return self._pushed.revision
        revisions = {
            entry.get("revision")
            for entry in (bundles or {}).values()
            if isinstance(entry, Mapping)
        }
        if len(revisions) != 1:
            if self._expected is not None:
                raise UnexpectedRevision(None, self._expected)
            raise PolicyEngineFault(f"cannot tell the revision of this decision: {bundles!r}")
        revision = revisions.pop()
        if not isinstance(revision, str) or not revision:
            if self._expected is not None:
                raise UnexpectedRevision(None, self._expected)
            raise PolicyEngineFault("the OPA server's bundle has no revision")
        self._remember(revision)
        return revision

    # -- pushing policy and data -----------------------------------------------------

    def load(self, bundle: PolicyBundle) -> str:
        """Push the bundle's data and modules to the server (a server without bundles);
        modules of an earlier push that the bundle no longer has are removed."""
        try:
            if not self._client.update_or_create_data(bundle.data, DATA_ROOT):
                raise PolicyEngineFault("the OPA server refused the data document")
            self._push_modules(bundle.modules)
            for stale in set(self._client.get_policies_list()) - set(bundle.modules):
                if stale.startswith(f"{DATA_ROOT}/"):
                    self._client.delete_policy(stale)
        except (RegoParseError, DeletePolicyError) as exc:
            raise PolicyEngineFault(f"the OPA server refused the policy: {exc}") from exc
        except (requests.RequestException, ConnectionsError) as exc:
            raise PolicyUnavailable(f"OPA server unreachable at {self.url}: {exc}") from exc
        self._pushed = bundle
        district = bundle.district
        if district is not None:
            return self.load_district(district)
        return self.revision

    def _push_modules(self, modules: Mapping[str, str]) -> None:
        # A module that calls another's functions compiles only once that one is loaded:
        # push in rounds until every module is in, or a round makes no progress.
        pending = dict(modules)
        while pending:
            failures: dict[str, RegoParseError] = {}
            for path, source in sorted(pending.items()):
                try:
                    self._client.update_policy_from_string(source, path, rego_compat=False)
                except RegoParseError as exc:
                    failures[path] = exc
            if len(failures) == len(pending):
                raise next(iter(failures.values()))
            pending = {path: modules[path] for path in failures}

    def load_district(self, district: Mapping[str, Any]) -> str:
        """Put the district's data at data.district through the data API (beside the
        bundle, which owns only data.vault); the new revision."""
        try:
            if not self._client.update_or_create_data(dict(district), DISTRICT_ROOT):
                raise PolicyEngineFault("the OPA server refused the district data")
        except (requests.RequestException, ConnectionsError) as exc:
            raise PolicyUnavailable(f"OPA server unreachable at {self.url}: {exc}") from exc
        self._district = str(district.get("revision", "0"))
        return self.revision

    def set_data(self, data: Mapping[str, Any]) -> str:
        """Push another data document with the same modules; the new revision."""
        if self._pushed is None:
            raise PolicyError("this engine runs the server's bundle; its data comes with it")
        return self.load(self._pushed.with_data(data))

    def close(self) -> None:
        self._client.close_connection()

    def __enter__(self) -> OpaServerEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _owns_vault(manifest: object) -> bool:
    if not isinstance(manifest, Mapping):
        return False
    roots = manifest.get("roots", [""])
    if not isinstance(roots, list):
        return False
    ours = DATA_ROOT.split("/")
    for root in roots:
        if not isinstance(root, str):
            continue
        parts = [part for part in root.split("/") if part]
        common = min(len(parts), len(ours))
        if parts[:common] == ours[:common]:  # an ancestor of data.vault, or inside it
            return True
    return False


def _opa_message(response: requests.Response | None) -> str:
    if response is None:
        return "no response"
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, Mapping):
        return f"{body.get('code', '')}: {body.get('message', '')}"
    return str(body)[:200]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def local_opa_server(
    opa: str,
    *,
    bundle: Path | None = None,
    log: Path | None = None,
    startup_timeout: float = 20.0,
    config: Path | None = None,
    overrides: Sequence[str] = (),
    files: Sequence[Path] = (),
    env: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """Run `opa run --server` on a free loopback port for tests and benchmarks; yields
    its URL once healthy (with its bundle activated) and stops it afterwards.

    With `log`, decision logs are written there (console logger), so responses carry a
    `decision_id`. `config` is an OPA configuration file (e.g. deploy/opa/config.yaml),
    `overrides` its `--set` values, `files` policies loaded beside the bundle (e.g. the
    decision-log mask) and `env` extra environment for the config's `${VAR}`s.
    """
    port = free_port()
    args = [opa, "run", "--server", "--addr", f"127.0.0.1:{port}", "--log-level", "error"]
    if config is not None:
        args += ["--config-file", str(config)]
    for override in overrides:
        args += ["--set", override]
    if log is not None:
        args += ["--set", "decision_logs.console=true"]
    if bundle is not None:
        args += ["--bundle", str(bundle)]
    args += [str(path) for path in files]
    with contextlib.ExitStack() as stack:
        sink = stack.enter_context(log.open("ab")) if log is not None else subprocess.DEVNULL
        process = subprocess.Popen(  # noqa: S603 - our own opa binary and arguments
            args,
            stdout=sink,
            stderr=sink,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env} if env else None,
        )
        try:
            _wait_healthy(process, f"http://127.0.0.1:{port}", startup_timeout)
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_healthy(process: subprocess.Popen[bytes], url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise PolicyUnavailable(f"opa exited with {process.returncode} before it was healthy")
        try:
            # `?bundles` answers 200 only once every configured bundle is activated.
            with urllib.request.urlopen(f"{url}/health?bundles", timeout=1) as answer:  # noqa: S310
                if answer.status == 200:
                    return
        except (URLError, OSError):
            pass
        time.sleep(0.05)
    raise PolicyUnavailable(f"opa was not healthy within {timeout} s")
