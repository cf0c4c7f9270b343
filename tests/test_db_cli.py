"""`resident-vault db current | upgrade` and the start-up check, as an operator meets them.

Each test starts from an empty database (SQLite, and PostgreSQL when configured) with
VAULT_MIGRATE_ON_START=false, the production setting, so nothing migrates unless asked.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, func, insert, inspect, select, text
from typer.testing import CliRunner, Result

import vault.context
import vault.db
from access.runtime import open_runtime
from api.cli.db import EXIT_AHEAD, EXIT_BEHIND, db_app
from api.cli.main import app
from api.settings import Settings
from audit.models import AuditEntry
from audit.verify import verify_log
from tests.pg_support import fresh_database
from tests.test_migrations import schema_diff, scripts_with
from vault.context import open_vault
from vault.crypto import Suite
from vault.db import (
    MIGRATION_LOCK,
    SchemaMismatch,
    SchemaPhase,
    SchemaState,
    UpgradeRefused,
    alembic_config,
    make_engine,
    migrate,
    migration_phases,
    plan_upgrade,
    schema_state,
)
from vault.keyring import LocalKeyring


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'vault.db'}"
        return
    with fresh_database(None, "rv_dbcli", empty=True) as url:
        yield url


@pytest.fixture
def home(tmp_path: Path, empty_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The operator's environment: this database, no migration at start-up, English."""
    monkeypatch.setenv("VAULT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VAULT_DATABASE_URL", empty_url)
    monkeypatch.setenv("VAULT_MIGRATE_ON_START", "false")
    monkeypatch.setenv("VAULT_LANG", "en")
    return tmp_path / "home"


@pytest.fixture(autouse=True)
def _dispose_refused_starts(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A refused start-up leaves its engine for the process exit to close; a test, which
    goes on, closes the engines open_vault made itself."""
    made: list[Engine] = []
    real = vault.context.engines_for

    def tracked(settings: Settings) -> tuple[Engine, Engine]:
        engines = real(settings)
        made.extend(engines)
        return engines

    monkeypatch.setattr(vault.context, "engines_for", tracked)
    yield
    for engine in made:
        engine.dispose()


@pytest.fixture
def engine(empty_url: str) -> Iterator[Engine]:
    engine = make_engine(empty_url)
    yield engine
    engine.dispose()


def db(*args: str) -> Result:
    return CliRunner().invoke(db_app, list(args), catch_exceptions=False)


def _make_keyring(home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    LocalKeyring.create(home / "keyring.json", Suite.AES_256_GCM)


def _previous_head() -> str:
    """The revision before the newest expand: a database one release behind this code,
    which it cannot run on (a schema lacking only contracts is one it can run on)."""
    scripts = ScriptDirectory.from_config(alembic_config("sqlite://"))
    phases = migration_phases()
    revision = scripts.get_revision(scripts.get_current_head() or "head")
    while revision is not None and phases.get(revision.revision) == "contract":
        revision = scripts.get_revision(str(revision.down_revision))
    assert revision is not None
    return str(revision.down_revision)


def _pending_after(revision: str) -> list[str]:
    """The revisions after `revision`, oldest first."""
    return [r for r in sorted(migration_phases()) if r > revision]


def _stamp_ahead(engine: Engine, revision: str, phase: str | None) -> None:
    """What newer code leaves: its revision stamped, and its phase noted (unless None)."""
    with engine.begin() as connection:
        if phase is not None:
            connection.execute(
                insert(SchemaPhase).values(
                    revision=revision, phase=phase, applied_at=func.current_timestamp()
                )
            )
        connection.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})


def _current(engine: Engine) -> str | None:
    return schema_state(engine).current


# -- db current and db upgrade -------------------------------------------------------------


def test_fresh_database_is_behind_until_db_upgrade_brings_it_to_head(
    home: Path, engine: Engine
) -> None:
    head = schema_state(engine).head
    before = db("current")
    assert before.exit_code == EXIT_BEHIND
    assert "database revision: empty" in before.stdout
    assert "this code can run on it: no" in before.stdout
    assert "resident-vault db upgrade" in before.stdout
    document = json.loads(db("current", "--json").stdout)
    assert document["current"] is None and document["head"] == head
    assert document["runnable"] is False and document["problem"] == "behind"
    assert [p["revision"] for p in document["pending"]] == sorted(migration_phases())
    assert [p["phase"] for p in document["pending"]] == [
        migration_phases()[p["revision"]] for p in document["pending"]
    ]

    upgraded = db("upgrade")
    assert upgraded.exit_code == 0, upgraded.output
    assert f"the database is at {head}, the head of this code" in upgraded.stdout
    # Fresh install: migrations come before `init`, so there is no keyring to record with.
    assert "not recorded in the audit log (no keyring yet" in upgraded.stderr

    after = db("current", "--json")
    assert after.exit_code == 0
    document = json.loads(after.stdout)
    assert document["current"] == head and document["runnable"] is True
    assert document["pending"] == [] and document["problem"] is None
    with engine.connect() as connection:  # phases recorded as migrate() does
        noted = dict(connection.execute(select(SchemaPhase.revision, SchemaPhase.phase)).all())
    assert noted == migration_phases()

    again = db("upgrade")
    assert again.exit_code == 0
    assert f"nothing to apply: the database is at {head}" in again.stdout


def test_upgrade_to_a_revision_stops_there_and_never_goes_back(home: Path, engine: Engine) -> None:
    assert db("upgrade", "--to", "0005").exit_code == 0
    assert _current(engine) == "0005"
    assert db("upgrade", "--to", "0005").exit_code == 0  # the same step twice is fine
    back = db("upgrade", "--to", "0003")
    assert back.exit_code == 1
    assert "already applied" in back.stderr and "never downgrades" in back.stderr
    unknown = db("upgrade", "--to", "zz99")
    assert unknown.exit_code == 1 and "no migration zz99" in unknown.stderr
    assert back.stderr.count("\n") == unknown.stderr.count("\n") == 1  # one line each
    assert _current(engine) == "0005"


def test_upgrade_is_recorded_in_the_audit_log_with_the_schema_change(
    home: Path, engine: Engine
) -> None:
    migrate(engine, _previous_head())
    _make_keyring(home)
    result = db("upgrade", "--actor", "dba:wang")
    assert result.exit_code == 0, result.output
    assert "recorded in the audit log (schema.upgraded)" in result.stdout
    head = schema_state(engine).head
    with engine.connect() as connection:
        entries = connection.execute(
            select(AuditEntry.user, AuditEntry.details).where(
                AuditEntry.action == "schema.upgraded"
            )
        ).all()
    assert len(entries) == 1
    user, details = entries[0]
    assert user == "dba:wang"
    assert details["from"] == _previous_head() and details["to"] == head
    assert details["migrations"] == [
        {"revision": r, "phase": migration_phases()[r]} for r in _pending_after(_previous_head())
    ]
    # A real entry of the log: it integrates, gets signed and verifies.
    runtime = open_runtime(Settings())
    try:
        runtime.audit.checkpoint(runtime.vault.sessions, force=True)
        with runtime.vault.sessions() as session:
            report = verify_log(session, runtime.audit.verifier_key)
        assert report.entries == 1
    finally:
        runtime.close()


# -- the service's start-up check ----------------------------------------------------------


def test_start_up_refuses_a_schema_behind_the_code_and_names_db_upgrade(
    home: Path, engine: Engine
) -> None:
    migrate(engine, _previous_head())
    _make_keyring(home)
    with pytest.raises(SchemaMismatch) as refused:
        open_vault(Settings())
    assert "run `resident-vault db upgrade`" in refused.value.message_en
    assert "请先运行 resident-vault db upgrade" in refused.value.message_zh
    assert _current(engine) == _previous_head()  # the refusal changed nothing

    migrating = open_vault(Settings(migrate_on_start=True))
    migrating.close()
    assert schema_state(engine).runnable


def test_schema_ahead_by_an_expand_runs_ahead_by_a_contract_refuses(
    home: Path, engine: Engine
) -> None:
    migrate(engine)
    _make_keyring(home)
    _stamp_ahead(engine, "9001", "expand")  # newer code expanded: this code still runs
    current = db("current", "--json")
    assert current.exit_code == 0
    document = json.loads(current.stdout)
    assert document["runnable"] is True
    assert document["ahead"] == [{"revision": "9001", "phase": "expand"}]
    open_vault(Settings()).close()

    _stamp_ahead(engine, "9002", "contract")  # newer code contracted: this code must not
    current = db("current")
    assert current.exit_code == EXIT_AHEAD
    assert "ahead of this code: 9001 expand, 9002 contract" in current.stdout
    with pytest.raises(SchemaMismatch) as refused:
        open_vault(Settings())
    assert "9002" in refused.value.message_en and "9001" not in refused.value.message_en
    assert "deploy the newer code" in refused.value.message_en

    refused_upgrade = db("upgrade")
    assert refused_upgrade.exit_code == EXIT_AHEAD
    assert refused_upgrade.stderr.count("\n") == 1
    assert "ahead of this code" in refused_upgrade.stderr
    assert _current(engine) == "9002"


def test_a_newer_revision_without_a_recorded_phase_counts_as_a_contract(
    home: Path, engine: Engine
) -> None:
    migrate(engine)
    _stamp_ahead(engine, "9003", None)
    assert db("current").exit_code == EXIT_AHEAD
    with pytest.raises(SchemaMismatch):
        vault.db.require_runnable_schema(engine)


# -- offline SQL ---------------------------------------------------------------------------


def test_sql_prints_the_migrations_for_review_and_touches_nothing(
    home: Path, engine: Engine, empty_url: str
) -> None:
    result = db("upgrade", "--sql")
    if not empty_url.startswith("postgresql"):
        assert result.exit_code == 1
        assert "--sql is for PostgreSQL" in result.stderr and result.stdout == ""
        with engine.connect() as connection:
            assert inspect(connection).get_table_names() == []
        return
    assert result.exit_code == 0, result.output
    sql = result.stdout
    assert sql.startswith("BEGIN;") and sql.rstrip().endswith("COMMIT;")
    assert "SET LOCAL lock_timeout = '5s';" in sql
    for table in ("alembic_version", "residents", "audit_entries", "schema_phases"):
        assert f"CREATE TABLE {table} (" in sql
    assert "INSERT INTO schema_phases" in sql  # older code can read the phases afterwards
    assert "nothing was changed" in result.stderr
    with engine.connect() as connection:
        assert inspect(connection).get_table_names() == []

    # What the DBA applies is what `db upgrade` would have done.
    with engine.connect() as connection:
        connection.connection.driver_connection.execute(sql)  # type: ignore[union-attr]
    state = schema_state(engine)
    assert state.current == state.head and state.runnable
    assert schema_diff(engine) == []
    with engine.connect() as connection:
        noted = dict(connection.execute(select(SchemaPhase.revision, SchemaPhase.phase)).all())
    assert noted == migration_phases()
    assert db("upgrade", "--sql").stdout == ""  # nothing left to review


def test_sql_from_an_older_schema_holds_only_the_missing_migrations(
    home: Path, engine: Engine, empty_url: str
) -> None:
    if not empty_url.startswith("postgresql"):
        pytest.skip("offline SQL is for PostgreSQL")
    migrate(engine, _previous_head())
    sql = db("upgrade", "--sql").stdout
    head = schema_state(engine).head
    pending = _pending_after(_previous_head())
    assert pending[-1] == head
    for older, newer in zip([_previous_head(), *pending], pending, strict=False):
        assert f"-- Running upgrade {older} -> {newer}" in sql
    assert "CREATE TABLE alembic_version" not in sql and "CREATE TABLE residents" not in sql
    noted = sql[sql.index("INSERT INTO schema_phases") :].split("VALUES", 1)[1]
    assert noted.strip().startswith(f"('{pending[0]}', ")  # the others are noted already
    assert _current(engine) == _previous_head()


# -- rolling deploys: expand, restart the nodes, then contract ------------------------------


def test_rolling_deploy_expand_then_restart_then_contract(
    home: Path, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A release with two expands and a contract (its last migration), deployed the way
    docs/postgresql.md says: old and new nodes both run between the two steps."""
    migrate(engine)  # the database of the running release
    _make_keyring(home)
    location, (added, noted, dropped) = scripts_with(
        tmp_path,
        [
            (
                "x901",
                "expand",
                """
                op.create_table("probe", sa.Column("id", sa.Integer(), primary_key=True),
                                sa.Column("old_name", sa.String(20), nullable=True))
                """,
                'op.drop_table("probe")',
            ),
            (
                "x902",
                "expand",
                """
                with op.batch_alter_table("probe") as batch:
                    batch.add_column(sa.Column("note", sa.Text(), nullable=True))
                """,
                """
                with op.batch_alter_table("probe") as batch:
                    batch.drop_column("note")
                """,
            ),
            (
                "x903",
                "contract",
                """
                with op.batch_alter_table("probe") as batch:
                    batch.drop_column("old_name")
                """,
                """
                with op.batch_alter_table("probe") as batch:
                    batch.add_column(sa.Column("old_name", sa.String(20), nullable=True))
                """,
            ),
        ],
    )
    shipped = vault.db.migrations_location()

    def release(new: bool) -> None:
        """From here on, run the next release's code (new) or the running one's."""
        where = str(location) if new else shipped
        monkeypatch.setattr(vault.db, "migrations_location", lambda: where)

    release(new=True)
    planned = json.loads(db("current", "--json").stdout)
    assert [(p["revision"], p["phase"]) for p in planned["pending"]] == [
        (added, "expand"),
        (noted, "expand"),
        (dropped, "contract"),
    ]
    assert planned["expand_target"] == noted
    assert f"contract migration {dropped} waits" in db("current").stdout

    # 1. Before the rolling restart: the expand step only.
    step = db("upgrade", "--phase", "expand")
    assert step.exit_code == 0, step.output
    assert _current(engine) == noted
    assert f"not applied: {dropped} contract" in step.stdout
    # 2. While the nodes restart one by one, the old code runs on it...
    release(new=False)
    assert schema_state(engine).ahead == {added: "expand", noted: "expand"}
    open_vault(Settings()).close()
    # ...and so does the new code, with only its contract pending.
    release(new=True)
    open_vault(Settings()).close()
    assert db("current").exit_code == 0
    again = db("upgrade", "--phase", "expand")
    assert again.exit_code == 0 and _current(engine) == noted
    assert f"the next migration {dropped} is a contract" in again.stdout
    # 3. Once no node runs the old code: the contract.
    rest = db("upgrade")
    assert rest.exit_code == 0, rest.output
    assert _current(engine) == dropped
    with engine.connect() as connection:
        columns = {c["name"] for c in inspect(connection).get_columns("probe")}
    assert columns == {"id", "note"}
    # An old node started now refuses: the contract removed what it may need.
    release(new=False)
    with pytest.raises(SchemaMismatch) as refused:
        open_vault(Settings())
    assert dropped in refused.value.message_en and added not in refused.value.message_en
    assert db("upgrade").exit_code == EXIT_AHEAD


def test_code_runs_before_its_contracts_but_not_before_an_expand_after_one() -> None:
    """A release's contracts go last: an expand after a contract is applied only with it,
    so the new code cannot start before the contract step."""
    phases = {"0013": "expand", "0014": "contract", "0015": "expand"}
    contracts_last = SchemaState("0013", "0014", ("0014",), behind_phases=phases)
    assert contracts_last.runnable and contracts_last.missing == ()
    contract_first = SchemaState("0013", "0015", ("0014", "0015"), behind_phases=phases)
    assert not contract_first.runnable and contract_first.missing == ("0015",)
    plan = plan_upgrade(contract_first, phases, expand_only=True)
    assert plan.target is None and [r for r, _ in plan.held_back] == ["0014", "0015"]
    assert plan_upgrade(contract_first, phases).target == "0015"
    unknown = {**phases, "0014": "unknown"}  # no declared phase: never treated as a contract
    assert plan_upgrade(contract_first, unknown, expand_only=True).target is None
    assert SchemaState("0013", "0014", ("0014",), behind_phases=unknown).missing == ("0014",)
    with pytest.raises(UpgradeRefused):
        plan_upgrade(SchemaState("0016", "0015", (), {"0016": "expand"}), phases)


# -- two migrators at once -----------------------------------------------------------------


def test_concurrent_migrations_wait_for_each_other(engine: Engine, empty_url: str) -> None:
    """Two nodes starting at once with migrate-on-start (or two upgrade jobs): the second
    waits for the first's advisory lock, then finds nothing left to do."""
    if not empty_url.startswith("postgresql"):
        pytest.skip("SQLite serialises writers itself")
    others = make_engine(empty_url)  # the other node, and someone watching pg_locks
    holder = others.connect()
    holder.execute(select(text(f"pg_advisory_lock({MIGRATION_LOCK})")))
    failures: list[BaseException] = []

    def migrator() -> None:
        try:
            migrate(engine)
        except BaseException as exc:  # reported by the assertion below
            failures.append(exc)

    worker = threading.Thread(target=migrator)
    worker.start()
    try:
        waiting = (
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND ((classid::bigint << 32) | objid::bigint) = :key "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        with others.connect() as observer:
            while not observer.execute(text(waiting), {"key": MIGRATION_LOCK}).scalar():
                observer.rollback()  # a fresh look each time
                assert worker.is_alive(), failures
        assert _current(engine) is None  # held off: nothing migrated yet
        holder.execute(select(text(f"pg_advisory_unlock({MIGRATION_LOCK})")))
        holder.commit()
    finally:
        holder.close()
        worker.join()
        others.dispose()
    assert not failures
    state = schema_state(engine)
    assert state.current == state.head
    migrate(engine)  # a second migrator after the first: a no-op
    assert _current(engine) == state.head


# -- through the real entry point -----------------------------------------------------------


def test_the_resident_vault_command_has_db(home: Path, engine: Engine) -> None:
    """`resident-vault db ...` as installed (api.cli.main registers the sub-app), and the
    start-up refusal as the operator reads it, in Chinese by default."""
    runner = CliRunner()
    behind = runner.invoke(app, ["--lang", "en", "db", "current", "--json"])
    assert behind.exit_code == EXIT_BEHIND, behind.output
    assert json.loads(behind.stdout)["problem"] == "behind"
    migrate(engine, _previous_head())
    _make_keyring(home)
    upgraded = runner.invoke(app, ["--lang", "zh", "db", "upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    assert f"已应用 {len(_pending_after(_previous_head()))} 个迁移" in upgraded.stdout
    assert runner.invoke(app, ["db", "current"]).exit_code == 0


@pytest.mark.parametrize(
    ("lang", "expected"),
    [("zh", "数据库结构落后于程序"), ("en", "the database schema is behind this code")],
)
def test_a_command_on_a_schema_behind_says_so_in_one_line_in_both_languages(
    home: Path, engine: Engine, empty_url: str, lang: str, expected: str
) -> None:
    if empty_url.startswith("postgresql") and lang == "zh":
        pytest.skip("the wording does not depend on the database")
    migrate(engine, _previous_head())
    _make_keyring(home)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from api.cli.main import main; main()",
            "--log-console",
            "--lang",
            lang,
            "keys",
            "list",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert expected in result.stderr and "resident-vault db upgrade" in result.stderr
