"""The migrations themselves: the expand/contract rule as a test, and a round trip.

Every migration after 0010 says whether it is an *expand* (the code before it still runs
on the schema it leaves) or a *contract* (only once no node runs that older code); an
expand's SQL is checked statement by statement, in the PostgreSQL dialect production runs,
for what would break the old code or lock a busy table. docs/postgresql.md explains the rule.
"""

from __future__ import annotations

import importlib
import re
import shutil
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, select, text

import vault.db
from api.models import MODEL_MODULES
from tests.pg_support import fresh_database
from vault.db import (
    PHASES,
    SchemaPhase,
    alembic_config,
    make_engine,
    migrate,
    migrations_location,
    offline_upgrade_sql,
    schema_state,
)
from vault.models import Base

_analysed = importlib.import_module("migrations.versions.0021_place_tables_analysed_early")
PLACE_TABLES: tuple[str, ...] = _analysed.PLACE_TABLES
PLACE_THRESHOLD: int = _analysed.THRESHOLD

# Written before the rule; each declares "expand", but their SQL predates the checks (0008
# builds an index on audit_entries in the migration's transaction, for one).
GRANDFATHERED = frozenset(f"{n:04d}" for n in range(1, 11))

# Tables whose rows are bounded by configuration, not by residents, accesses or time: an
# index on one of these builds in moments. Every other table counts as large (a new table
# is large until someone decides otherwise here).
SMALL_TABLES = frozenset(
    {
        "alembic_version",
        "schema_phases",
        "key_rotations",
        "organisations",
        "streets",
        "communities",
        "grids",
        "organisation_communities",
        "organisation_buildings",
        "oauth_signing_keys",
        "oauth_clients",
        "oauth_users",
        "consent_receipt_keys",
        "suspensions",
        "audit_archives",
    }
)


def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config("sqlite://"))


def _revisions() -> list[str]:
    return [script.revision for script in _scripts().walk_revisions()][::-1]


# -- the phase every migration declares ---------------------------------------------------


def test_every_migration_after_0010_declares_expand_or_contract() -> None:
    undeclared = {
        script.revision: getattr(script.module, "phase", None)
        for script in _scripts().walk_revisions()
        if script.revision not in GRANDFATHERED
        and getattr(script.module, "phase", None) not in PHASES
    }
    assert not undeclared, (
        f"migrations without phase = 'expand' or 'contract': {undeclared} (docs/postgresql.md)"
    )
    assert set(_revisions()) > GRANDFATHERED  # the rule has migrations to apply to


# -- what an expand migration may do -------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    revision: str
    statement: str
    why: str


def _statements(sql: str) -> Iterator[str]:
    for chunk in sql.split(";\n"):
        lines = [line for line in chunk.splitlines() if not line.startswith("--")]
        statement = " ".join(" ".join(lines).split())
        if statement:
            yield statement


def _sections(sql: str) -> Iterator[tuple[str, str]]:
    """(revision, its SQL) for each migration in an offline script, in order."""
    parts = re.split(r"^-- Running upgrade \S* ?-> (\S+)$", sql, flags=re.MULTILINE)
    yield from zip(parts[1::2], parts[2::2], strict=True)


def expand_violations(sql: str, expand: set[str]) -> list[Violation]:
    """What in the offline SQL of the `expand` migrations the rule forbids.

    On a table that existed before the migration (a table it creates itself is empty and
    unused, so anything goes there), an expand migration must not:
    - DROP TABLE, drop a column, RENAME a table or column: the old code still uses them;
    - ALTER COLUMN ... TYPE (rewrites the table under an exclusive lock, and the old code
      may write values the new type refuses) or SET NOT NULL (the old code may write NULL);
    - ADD COLUMN ... NOT NULL without a DEFAULT: the old code's inserts do not fill it;
    - CREATE INDEX without CONCURRENTLY on a large table (anything not in SMALL_TABLES): a
      plain build blocks every write to the table until it finishes. Build it concurrently
      in `op.get_context().autocommit_block()`;
    - ADD CONSTRAINT on a large table unless NOT VALID (validate it later, under a weaker
      lock) or USING INDEX (an index built concurrently first): the check scans the table
      under a lock that blocks writes.
    """
    existing: set[str] = set()
    found: list[Violation] = []
    for revision, section in _sections(sql):
        created: set[str] = set()
        for statement in _statements(section):
            upper = statement.upper()
            if match := re.match(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", statement, re.I):
                created.add(match.group(1).lower())
                continue
            table = _table_of(statement)
            if revision not in expand or table is None or table not in existing:
                continue
            why = _forbidden(upper, large=table not in SMALL_TABLES)
            if why:
                found.append(Violation(revision, statement, why))
        existing |= created
        existing -= {
            m.group(1).lower() for m in re.finditer(r"DROP TABLE (?:IF EXISTS )?(\w+)", section)
        }
    return found


def _table_of(statement: str) -> str | None:
    patterns = (
        r"ALTER TABLE (?:ONLY )?(?:IF EXISTS )?(\w+)",
        r"DROP TABLE (?:IF EXISTS )?(\w+)",
        r"CREATE (?:UNIQUE )?INDEX (?:CONCURRENTLY )?(?:IF NOT EXISTS )?\w+ ON (?:ONLY )?(\w+)",
    )
    for pattern in patterns:
        if match := re.match(pattern, statement, re.I):
            return match.group(1).lower()
    return None


def _forbidden(upper: str, *, large: bool) -> str | None:  # noqa: PLR0911 - one rule each
    if upper.startswith("DROP TABLE"):
        return "drops a table the old code uses"
    if upper.startswith("CREATE"):
        if large and " CONCURRENTLY " not in upper:
            return "builds an index on a large table without CONCURRENTLY"
        return None
    if re.search(r"\bDROP COLUMN\b", upper):
        return "drops a column the old code uses"
    if re.search(r"\bRENAME\b", upper):
        return "renames what the old code uses"
    if re.search(r"\bALTER COLUMN \S+ (SET DATA )?TYPE\b", upper):
        return "changes a column's type"
    if re.search(r"\bALTER COLUMN \S+ SET NOT NULL\b", upper):
        return "makes an existing column NOT NULL"
    if (
        re.search(r"\bADD COLUMN\b", upper)
        and re.search(r"\bNOT NULL\b", upper)
        and " DEFAULT " not in upper
    ):
        return "adds a NOT NULL column without a default"
    if (
        large
        and re.search(r"\bADD CONSTRAINT\b", upper)
        and not re.search(r"\bNOT VALID\b|\bUSING INDEX\b", upper)
    ):
        return "adds a constraint that scans a large table under lock"
    return None


def _phases_of(scripts: ScriptDirectory) -> dict[str, str]:
    return {s.revision: str(getattr(s.module, "phase", "")) for s in scripts.walk_revisions()}


def test_expand_migrations_neither_break_the_old_code_nor_lock_a_large_table() -> None:
    """The rule of `expand_violations`, on the SQL production would run."""
    phases = _phases_of(_scripts())
    expand = {rev for rev, phase in phases.items() if phase == "expand"} - GRANDFATHERED
    sql = offline_upgrade_sql("postgresql+psycopg://", None, "head")
    assert not expand_violations(sql, expand)


MIGRATION_TEMPLATE = '''\
"""{revision}: a migration of the tests"""

import sqlalchemy as sa
from alembic import op

revision = {revision!r}
down_revision = {down!r}
branch_labels = None
depends_on = None
phase = {phase!r}


def upgrade() -> None:
{upgrade}


def downgrade() -> None:
{downgrade}
'''


def scripts_with(
    tmp_path: Path, migrations: Sequence[tuple[str, str, str, str]]
) -> tuple[Path, list[str]]:
    """A copy of the shipped migrations with more after the head, each given as (revision,
    phase, upgrade body, downgrade body); the directory and the new revisions."""
    location = tmp_path / "migrations"
    shutil.copytree(migrations_location(), location, ignore=shutil.ignore_patterns("__pycache__"))
    down = _scripts().get_current_head()
    for revision, phase, upgrade, downgrade in migrations:
        (location / "versions" / f"{revision}_test.py").write_text(
            MIGRATION_TEMPLATE.format(
                revision=revision,
                down=down,
                phase=phase,
                upgrade=textwrap.indent(textwrap.dedent(upgrade).strip(), "    "),
                downgrade=textwrap.indent(textwrap.dedent(downgrade).strip(), "    "),
            ),
            encoding="utf-8",
        )
        down = revision
    return location, [revision for revision, *_ in migrations]


def test_the_rule_catches_what_an_expand_must_not_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A migration calling itself an expand while doing each forbidden thing is caught, and
    the safe way of each passes: the check is not vacuous."""
    bad = """
        op.drop_table("erasures")
        op.drop_column("oauth_clients", "tls_client_auth_san")
        op.alter_column("residents", "status", type_=sa.String(40))
        op.alter_column("exports", "purpose", nullable=False)
        op.add_column("residents", sa.Column("tier", sa.Integer(), nullable=False))
        op.rename_table("consents", "consents_old")
        op.create_index("ix_residents_probe", "residents", ["status"])
        op.create_foreign_key("fk_probe", "residents", "households", ["id"], ["id"])
    """
    good = """
        op.create_table("probe", sa.Column("id", sa.Integer(), primary_key=True))
        op.create_index("ix_probe_id", "probe", ["id"])
        op.drop_column("probe", "id")
        op.add_column("residents", sa.Column("tier", sa.Integer(), nullable=True))
        op.add_column("residents", sa.Column("flag", sa.Boolean(), server_default=sa.false(),
                                             nullable=False))
        op.create_index("ix_organisations_probe", "organisations", ["type"])
        with op.get_context().autocommit_block():
            op.create_index("ix_residents_probe", "residents", ["status"],
                            postgresql_concurrently=True)
    """
    location, (bad_rev, good_rev) = scripts_with(
        tmp_path,
        [("t901", "expand", bad, "pass"), ("t902", "expand", good, "pass")],
    )
    monkeypatch.setattr(vault.db, "migrations_location", lambda: str(location))
    sql = offline_upgrade_sql("postgresql+psycopg://", None, good_rev)
    found = expand_violations(sql, {bad_rev, good_rev})
    assert {v.revision for v in found} == {bad_rev}
    assert sorted(v.why for v in found) == sorted(
        [
            "drops a table the old code uses",
            "drops a column the old code uses",
            "changes a column's type",
            "makes an existing column NOT NULL",
            "adds a NOT NULL column without a default",
            "renames what the old code uses",
            "builds an index on a large table without CONCURRENTLY",
            "adds a constraint that scans a large table under lock",
        ]
    )
    # The same statements in a contract migration are what contracts are for.
    assert not expand_violations(sql, {good_rev})


# -- down and up again ---------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'roundtrip.db'}")
        yield engine
        engine.dispose()
        return
    with fresh_database(None, "rv_migr", empty=True) as url:
        engine = make_engine(url)
        yield engine
        engine.dispose()


def schema_diff(engine: Engine) -> list[object]:
    """What `alembic check` reports: the models against the database (autogenerate)."""
    assert MODEL_MODULES  # every package's tables, as env.py registers them for autogenerate
    with engine.connect() as connection:
        partitions: set[str] = set()
        if connection.dialect.name == "postgresql":  # audit_entries' monthly partitions
            partitions = set(
                connection.scalars(text("SELECT inhrelid::regclass::text FROM pg_inherits"))
            )

        def include(item: object, name: str | None, kind: str, reflected: bool, _: object) -> bool:
            table = item.table.name if kind == "index" else name  # type: ignore[attr-defined]
            return not (reflected and table in partitions)

        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "include_object": include}
        )
        return list(compare_metadata(context, Base.metadata))


def _downgrade(engine: Engine, revision: str) -> None:
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def test_downgrade_to_base_and_upgrade_again_leaves_the_models_schema(
    empty_database: Engine,
) -> None:
    engine = empty_database
    migrate(engine)
    assert schema_diff(engine) == []
    _downgrade(engine, "base")
    with engine.connect() as connection:
        assert set(inspect(connection).get_table_names()) <= {"alembic_version"}
    migrate(engine)
    state = schema_state(engine)
    assert state.current == state.head and state.runnable
    assert schema_diff(engine) == []
    with engine.connect() as connection:
        noted = set(connection.scalars(select(SchemaPhase.revision)))
    assert noted == set(_revisions())  # every phase recorded again after the round trip


def test_place_tables_are_analysed_after_a_few_changes_on_postgresql(database_url: str) -> None:
    """A district's few dozen buildings, inserted once, must not wait for 50 changes before
    the planner learns about them (it then counted statistics with nested loops)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has no autovacuum")
    engine = make_engine(database_url)
    try:
        migrate(engine)
        with engine.connect() as connection:
            options = dict(
                connection.execute(
                    text("SELECT relname, reloptions FROM pg_class WHERE relname = ANY(:names)"),
                    {"names": list(PLACE_TABLES)},
                ).all()
            )
        assert set(options) == set(PLACE_TABLES)
        for table, reloptions in options.items():
            assert f"autovacuum_analyze_threshold={PLACE_THRESHOLD}" in (reloptions or []), table
        _downgrade(engine, "0020")
        with engine.connect() as connection:
            reset = connection.scalar(
                text("SELECT reloptions FROM pg_class WHERE relname = 'buildings'")
            )
        assert not reset
    finally:
        engine.dispose()
