"""Configuration: settings from several places, validated together at start-up.

Precedence, highest first: keyword arguments, environment variables `VAULT_<NAME>`, secrets
given as files (`VAULT_<NAME>_FILE=/run/secrets/x`, content without its trailing newline),
a TOML file named by `VAULT_CONFIG_FILE` (keys are the names in lower case), defaults.

Every problem is collected before anything is raised, so one start-up names them all:
`SettingsInvalid` carries one line per problem, each naming the environment variable and
the file key, never a secret's value. The embedded default is a data directory `./.vault`
(or `$VAULT_HOME`) holding an SQLite database and the local keyring; production points
`VAULT_DATABASE_URL` at PostgreSQL.

Each package declares its own settings as a `LayerSettings` model holding only its fields
(this module: the vault's, `VaultSettings`; `audit.settings`, `policies.settings`,
`access.settings`, `api.http.settings`), and `api.settings.Settings` composes them into the
one flat object the service and the CLI read. Code below `api` takes the narrowest model
it needs, which the composed one is.
"""

from __future__ import annotations

import difflib
import inspect
import os
import stat
import tomllib
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import structlog
from pydantic import Field, PrivateAttr, SecretStr, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from vault.crypto import Suite
from vault.errors import ConfigurationError

log = structlog.get_logger(__name__)

ENV_PREFIX = "VAULT_"
CONFIG_FILE_ENV = "VAULT_CONFIG_FILE"
FILE_SUFFIX = "_FILE"
# Where a value came from, as `config check` prints it.
SOURCE_DEFAULT, SOURCE_INIT, SOURCE_ENV, SOURCE_SECRET_FILE, SOURCE_FILE = (
    "default",
    "argument",
    "env",
    "secret-file",
    "file",
)
# Database URLs carry passwords: treated like secrets (never echoed, redacted on display).
URL_FIELDS = ("database_url", "database_replica_url")


def env_name(name: str) -> str:
    return f"{ENV_PREFIX}{name.upper()}"


def secret_file_env_name(name: str) -> str:
    return f"{env_name(name)}{FILE_SUFFIX}"


class SettingsInvalid(ConfigurationError):
    """The configuration has problems; `problems` holds one line for each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n" + "\n".join(f"  {p}" for p in problems))
        self.problems = problems


@dataclass
class _Collector:
    """What one construction of the settings found: problems, warnings, and sources."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)  # field -> the file it came from


_collecting: ContextVar[_Collector | None] = ContextVar("vault_settings_collector", default=None)


def _collector() -> _Collector:
    current = _collecting.get()
    return current if current is not None else _Collector()


def label(name: str) -> str:
    """How a problem names a setting: both the environment variable and the file key."""
    return f"{env_name(name)} (file key {name})"


class _Recorded(PydanticBaseSettingsSource):
    """Passes a source through, noting which fields it supplied (the first source wins)."""

    def __init__(self, inner: PydanticBaseSettingsSource, source: str) -> None:
        super().__init__(inner.settings_cls)
        self._inner = inner
        self._source = source

    def _set_current_state(self, state: dict[str, Any]) -> None:
        self._inner._set_current_state(state)

    def _set_settings_sources_data(self, states: dict[str, dict[str, Any]]) -> None:
        self._inner._set_settings_sources_data(states)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._inner.get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        values = self._inner()
        collector = _collector()
        for name in values:
            collector.sources.setdefault(name, self._source)
        return values


class SecretFileSource(PydanticBaseSettingsSource):
    """`VAULT_<NAME>_FILE` names a file holding the value (Docker and Kubernetes secrets)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # __call__ reads every field at once

    def __call__(self) -> dict[str, Any]:
        collector = _collector()
        fields = self.settings_cls.model_fields
        values: dict[str, Any] = {}
        for name in fields:
            if f"{name}_file" in fields:
                continue  # VAULT_X_FILE is then the setting x_file itself
            variable = secret_file_env_name(name)
            path_text = os.environ.get(variable)
            if not path_text:
                continue
            path = Path(path_text)
            try:
                content = path.read_text(encoding="utf-8")
                mode = stat.S_IMODE(path.stat().st_mode)
            except (OSError, UnicodeDecodeError) as exc:
                collector.problems.append(
                    f"{variable}: cannot read the secret file {path} ({type(exc).__name__})"
                )
                continue
            if mode & stat.S_IROTH:
                warning = (
                    f"{variable}: the secret file {path} is readable by everyone "
                    f"(mode {mode:o}); make it readable by the service only (chmod 600)"
                )
                collector.warnings.append(warning)
                log.warning("config.secret_file_readable", variable=variable, path=str(path))
            values[name] = content.removesuffix("\n").removesuffix("\r")
            collector.origins[name] = str(path)
        return values


class ConfigFileSource(TomlConfigSettingsSource):
    """The TOML file `VAULT_CONFIG_FILE` names; a key that is no setting is an error.

    Only for a model that holds every setting (`complete`, the composed one): one layer's
    model, read on its own, leaves the other layers' keys to theirs."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        super().__init__(settings_cls, toml_file=path)
        self.path = path

    def __call__(self) -> dict[str, Any]:
        collector = _collector()
        known = self.settings_cls.model_fields
        values: dict[str, Any] = {}
        for key, value in self.toml_data.items():
            if key in known:
                values[key] = value
                collector.origins.setdefault(key, str(self.path))
                continue
            if not getattr(self.settings_cls, "complete", False):
                continue
            guess = difflib.get_close_matches(key.lower(), list(known), n=1)
            hint = f"; did you mean {guess[0]!r}?" if guess else ""
            collector.problems.append(f"{self.path}: unknown setting {key!r}{hint}")
        return values


class _Nothing(PydanticBaseSettingsSource):
    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return {}


def _config_file_source(settings_cls: type[BaseSettings]) -> PydanticBaseSettingsSource:
    path_text = os.environ.get(CONFIG_FILE_ENV)
    if not path_text:
        return _Nothing(settings_cls)
    path = Path(path_text)
    problem: str | None = None
    if not path.is_file():
        problem = f"{CONFIG_FILE_ENV}: no configuration file at {path}"
    else:
        try:
            return ConfigFileSource(settings_cls, path)
        except tomllib.TOMLDecodeError as exc:
            problem = f"{CONFIG_FILE_ENV}: {path} is not valid TOML ({exc})"
        except (OSError, UnicodeDecodeError) as exc:
            problem = f"{CONFIG_FILE_ENV}: cannot read {path} ({type(exc).__name__})"
    _collector().problems.append(problem)
    return _Nothing(settings_cls)


class LayerSettings(BaseSettings):
    """One package's settings, `VAULT_<NAME>` each, read and validated the same way.

    Constructing one validates it all, or raises `SettingsInvalid` naming every problem:
    each model's `own_problems` (settings each valid but not together) runs, for every
    model a composed one is made of. A keyword argument that is no setting is a problem
    too, so a setting given to the wrong model is not silently dropped."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")
    # A model holding every setting of the service (api.settings.Settings): a key of the
    # configuration file that is none of its fields is a typo, reported as a problem.
    complete: ClassVar[bool] = False
    _sources: dict[str, str] = PrivateAttr(default_factory=dict)
    _origins: dict[str, str] = PrivateAttr(default_factory=dict)
    _warnings: list[str] = PrivateAttr(default_factory=list)

    # -- loading and validation (init > env > secret files > config file > defaults) -------

    def __init__(self, **values: Any) -> None:
        collector = _Collector()
        token = _collecting.set(collector)
        try:
            super().__init__(**values)
        except ValidationError as exc:
            collector.problems.extend(_describe(exc, collector, type(self)))
        finally:
            _collecting.reset(token)
        if collector.problems:
            log.error("config.invalid", problems=len(collector.problems))
            raise SettingsInvalid(collector.problems)
        self._sources = collector.sources
        self._origins = collector.origins
        self._warnings = collector.warnings

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            _Recorded(init_settings, SOURCE_INIT),
            _Recorded(env_settings, SOURCE_ENV),
            _Recorded(SecretFileSource(settings_cls), SOURCE_SECRET_FILE),
            _Recorded(_config_file_source(settings_cls), SOURCE_FILE),
        )

    def own_problems(self) -> list[str]:
        """Settings of this model that are each valid but make no sense together."""
        return []

    @model_validator(mode="after")
    def _check_together(self) -> Self:
        problems = cross_field_problems(self)
        collector = _collecting.get()
        if collector is None:  # validated outside __init__ (model_validate): raise here
            if problems:
                raise ValueError("; ".join(problems))
        else:
            collector.problems.extend(problems)
        return self

    def source_of(self, name: str) -> str:
        """default, argument, env, secret-file or file: where this setting's value came from."""
        return self._sources.get(name, SOURCE_DEFAULT)

    def origin_of(self, name: str) -> str | None:
        """The file a value was read from (a secret file or the configuration file)."""
        source = self.source_of(name)
        return self._origins.get(name) if source in (SOURCE_SECRET_FILE, SOURCE_FILE) else None

    @property
    def config_warnings(self) -> list[str]:
        """Problems that do not stop the service (a secret file readable by everyone)."""
        return list(self._warnings)

    @classmethod
    def own_fields(cls) -> tuple[str, ...]:
        """The settings this class declares itself, not those of the models it composes."""
        own = inspect.get_annotations(cls)
        return tuple(name for name in own if name in cls.model_fields)

    @classmethod
    def secret_fields(cls) -> frozenset[str]:
        return frozenset(
            name
            for name, info in cls.model_fields.items()
            if name in URL_FIELDS or "SecretStr" in str(info.annotation)
        )


class VaultSettings(LayerSettings):
    """The vault's own settings: its data directory, database, keyring and cryptography."""

    home: Path = Field(default=Path(".vault"), description="data directory")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL")
    # -- PostgreSQL in production (issue 8) ------------------------------------------------
    database_replica_url: str | None = Field(
        default=None, description="read replica for lists, exports and statistics"
    )
    database_pool_size: int = Field(
        default=10, ge=1, le=500, description="connections kept open per process"
    )
    database_max_overflow: int = Field(
        default=10, ge=0, le=500, description="extra connections beyond the pool under load"
    )
    database_pool_timeout_seconds: float = Field(
        default=10.0, gt=0, description="wait for a free connection before failing"
    )
    database_statement_timeout_ms: int = Field(
        default=15_000, ge=0, description="per statement; 0 disables"
    )
    migrate_on_start: bool = Field(
        default=True,
        description="migrate the schema at start-up; off in production (`resident-vault db "
        "upgrade` instead), where start-up refuses a schema behind the code",
    )
    crypto_suite: Suite = Field(default=Suite.AES_256_GCM, description="suite for new keys")
    keyring: str = Field(
        default="local", pattern=r"^(local|pkcs11)$", description="local (file) or pkcs11 (HSM)"
    )
    # -- PKCS#11 keyring (issue 8): keys live in the token and never leave it ---------------
    pkcs11_module: Path = Field(
        default=Path("/usr/lib/softhsm/libsofthsm2.so"), description="the PKCS#11 library"
    )
    pkcs11_token_label: str | None = Field(default=None, description="token to use")
    pkcs11_pin: SecretStr | None = Field(default=None, description="user PIN (secret)")
    pkcs11_key_prefix: str = Field(
        default="rv",
        pattern=r"^[A-Za-z0-9_.-]{1,32}$",
        description="label prefix of this vault's objects, so vaults can share a token",
    )
    data_key_cache_size: int = Field(
        default=10_000, ge=0, description="unwrapped data keys kept in memory (LRU); 0 disables"
    )
    data_key_cache_seconds: float = Field(
        default=60.0, ge=0, description="how long an unwrapped data key stays cached"
    )
    # -- backups of the vault (vault.backup) -----------------------------------------------
    backup_key_file: Path | None = Field(
        default=None,
        description="public key (PEM) backups are encrypted to, made by `backup keygen`",
    )

    @property
    def keyring_path(self) -> Path:
        return self.home / "keyring.json"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'vault.db').resolve()}"

    def own_problems(self) -> list[str]:
        problems: list[str] = []
        if self.keyring == "pkcs11":
            if not self.pkcs11_token_label:
                problems.append(f"{label('pkcs11_token_label')}: the pkcs11 keyring needs a token")
            if self.pkcs11_pin is None or not self.pkcs11_pin.get_secret_value():
                problems.append(
                    f"{label('pkcs11_pin')}: the pkcs11 keyring needs the user PIN "
                    f"(or {secret_file_env_name('pkcs11_pin')})"
                )
        for name in URL_FIELDS:
            url = getattr(self, name)
            if url is not None:
                problem = _url_problem(url)
                if problem:
                    problems.append(f"{label(name)}: {problem}")
        if self.database_replica_url is not None and (
            self.resolved_database_url.startswith("sqlite")
            or self.database_replica_url.startswith("sqlite")
        ):
            problems.append(
                f"{label('database_replica_url')}: read replicas need PostgreSQL, not SQLite"
            )
        return problems


def cross_field_problems(settings: LayerSettings) -> list[str]:
    """Settings that are each valid but make no sense together, one line each: every
    model's own problems, the composed model's first, in its method resolution order."""
    problems: list[str] = []
    for cls in type(settings).__mro__:
        own = cls.__dict__.get("own_problems")
        if own is not None and cls is not LayerSettings:
            problems.extend(own(settings))
    return problems


def _url_problem(url: str) -> str | None:
    """Why SQLAlchemy cannot use this URL (never quoting it: it may hold a password)."""
    try:
        make_url(url).get_dialect()
    except ArgumentError:
        return "not a database URL SQLAlchemy can parse (dialect+driver://user@host/db)"
    except NoSuchModuleError:
        return "names a database dialect or driver that is not installed"
    return None


def _describe(
    exc: ValidationError, collector: _Collector, settings_cls: type[LayerSettings]
) -> list[str]:
    """One line per field error, naming where the value came from; secrets never quoted."""
    secret = settings_cls.secret_fields()
    known = settings_cls.model_fields
    lines: list[str] = []
    for error in exc.errors(include_url=False, include_input=True):
        name = str(error["loc"][0]) if error["loc"] else ""
        if error["type"] == "extra_forbidden":
            guess = difflib.get_close_matches(name.lower(), list(known), n=1)
            hint = f"; did you mean {guess[0]!r}?" if guess else ""
            lines.append(f"keyword argument: unknown setting {name!r}{hint}")
            continue
        if name not in known:
            lines.append(error["msg"])
            continue
        source = collector.sources.get(name, SOURCE_DEFAULT)
        where = collector.origins.get(name)
        came = f"from {source}" + (f" {where}" if where else "")
        shown = "" if name in secret else f" (got {str(error.get('input'))[:60]!r})"
        lines.append(f"{label(name)}: {error['msg']}{shown} [{came}]")
    return lines
