"""Configuration as an operator writes it: env, secret files, a TOML file, and what goes wrong.

Every problem must be named at once, one line each, with the environment variable and the
file key; a secret's value must never appear in an error, in `config check` or in the logs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from api.settings import Settings
from vault.config import SettingsInvalid

SECRET_PIN = "pin-7Qz9-never-shown"
SECRET_PASSWORD = "pw-K3x8-never-shown"
SECRET_TOKEN = "tok-M2v5-never-shown"
SECRETS = (SECRET_PIN, SECRET_PASSWORD, SECRET_TOKEN)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets: no VAULT_* from the machine running the tests."""
    for name in list(os.environ):
        if name.startswith("VAULT_") and name != "VAULT_TEST_DATABASE_URL":
            monkeypatch.delenv(name)


def _secret_file(path: Path, content: str, mode: int = 0o600) -> Path:
    path.write_text(content, encoding="utf-8")
    path.chmod(mode)
    return path


def _problems(**kwargs: object) -> list[str]:
    with pytest.raises(SettingsInvalid) as caught:
        Settings(**kwargs)  # type: ignore[arg-type]
    return caught.value.problems


def _run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    return subprocess.run(
        [sys.executable, "-c", "from api.cli.main import main; main()", "--log-json", *args],
        capture_output=True,
        text=True,
        env={**clean, "VAULT_LANG": "en", **env},
        timeout=120,
        check=False,
    )


# -- precedence ----------------------------------------------------------------------------


def test_precedence_argument_over_env_over_secret_file_over_config_file_over_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "vault.toml"
    config.write_text(
        "database_pool_size = 31\ndatabase_max_overflow = 32\n"
        "database_pool_timeout_seconds = 33.0\nhsts_seconds = 34\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("VAULT_CONFIG_FILE", str(config))
    monkeypatch.setenv("VAULT_DATABASE_POOL_SIZE", "21")
    monkeypatch.setenv("VAULT_DATABASE_MAX_OVERFLOW", "22")
    monkeypatch.setenv(
        "VAULT_DATABASE_POOL_SIZE_FILE", str(_secret_file(tmp_path / "size", "11\n"))
    )
    monkeypatch.setenv(
        "VAULT_DATABASE_POOL_TIMEOUT_SECONDS_FILE", str(_secret_file(tmp_path / "t", "13\n"))
    )
    settings = Settings(database_pool_size=1)
    # argument > env > secret file > file > default, each visible in its source
    assert (settings.database_pool_size, settings.source_of("database_pool_size")) == (
        1,
        "argument",
    )
    assert (settings.database_max_overflow, settings.source_of("database_max_overflow")) == (
        22,
        "env",
    )
    assert settings.database_pool_timeout_seconds == 13.0
    assert settings.source_of("database_pool_timeout_seconds") == "secret-file"
    assert settings.origin_of("database_pool_timeout_seconds") == str(tmp_path / "t")
    assert (settings.hsts_seconds, settings.source_of("hsts_seconds")) == (34, "file")
    assert settings.origin_of("hsts_seconds") == str(config)
    assert (settings.rate_limit_bulk, settings.source_of("rate_limit_bulk")) == (60, "default")


def test_secrets_as_files_lose_only_the_trailing_newline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"postgresql+psycopg://vault:{SECRET_PASSWORD}@db.example:5432/vault"
    monkeypatch.setenv("VAULT_DATABASE_URL_FILE", str(_secret_file(tmp_path / "url", url + "\n")))
    monkeypatch.setenv(
        "VAULT_PKCS11_PIN_FILE", str(_secret_file(tmp_path / "pin", f" {SECRET_PIN} \n"))
    )
    monkeypatch.setenv("VAULT_OPA_TOKEN_FILE", str(_secret_file(tmp_path / "tok", SECRET_TOKEN)))
    settings = Settings()
    assert settings.database_url == url
    assert settings.pkcs11_pin is not None
    assert settings.pkcs11_pin.get_secret_value() == f" {SECRET_PIN} "  # spaces are the PIN's
    assert settings.opa_token is not None
    assert settings.opa_token.get_secret_value() == SECRET_TOKEN
    assert settings.source_of("pkcs11_pin") == "secret-file"
    assert settings.config_warnings == []


def test_toml_file_with_every_kind_of_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "vault.toml"
    config.write_text(
        f'home = "{tmp_path / "data"}"\nkeyring = "pkcs11"\npkcs11_token_label = "vault"\n'
        f'pkcs11_pin = "{SECRET_PIN}"\nmetrics_enabled = false\n'
        'opa_expected_revision = "rev-0123456789abcdef"\ncrypto_suite = "sm4-gcm"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("VAULT_CONFIG_FILE", str(config))
    settings = Settings()
    assert settings.home == tmp_path / "data"
    assert settings.keyring == "pkcs11"
    assert settings.metrics_enabled is False
    assert settings.crypto_suite.value == "sm4-gcm"
    assert settings.source_of("keyring") == "file"


# -- problems ------------------------------------------------------------------------------


def test_unknown_key_in_the_file_is_an_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "vault.toml"
    config.write_text('databse_url = "sqlite:///x.db"\nhsts_seconds = 10\n', encoding="utf-8")
    monkeypatch.setenv("VAULT_CONFIG_FILE", str(config))
    problems = _problems()
    assert len(problems) == 1
    assert "'databse_url'" in problems[0] and str(config) in problems[0]
    assert "database_url" in problems[0]  # the suggestion


def test_missing_or_broken_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_CONFIG_FILE", str(tmp_path / "absent.toml"))
    assert "VAULT_CONFIG_FILE" in _problems()[0]
    broken = tmp_path / "broken.toml"
    broken.write_text("hsts_seconds = = 3\n", encoding="utf-8")
    monkeypatch.setenv("VAULT_CONFIG_FILE", str(broken))
    assert "not valid TOML" in _problems()[0]


def test_unreadable_secret_file_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAULT_PKCS11_PIN_FILE", str(tmp_path / "no-such-pin"))
    problems = _problems()
    assert problems == [
        f"VAULT_PKCS11_PIN_FILE: cannot read the secret file {tmp_path / 'no-such-pin'} "
        "(FileNotFoundError)"
    ]


def test_world_readable_secret_file_is_warned_without_its_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from api.logging import configure_logging

    configure_logging(json=True)
    pin = _secret_file(tmp_path / "pin", SECRET_PIN + "\n", mode=0o644)
    monkeypatch.setenv("VAULT_PKCS11_PIN_FILE", str(pin))
    settings = Settings()
    assert len(settings.config_warnings) == 1
    assert "VAULT_PKCS11_PIN_FILE" in settings.config_warnings[0]
    assert "644" in settings.config_warnings[0]
    logged = capsys.readouterr()
    assert "config.secret_file_readable" in logged.err
    assert SECRET_PIN not in logged.err + logged.out + settings.config_warnings[0]


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"tls_cert_file": "/etc/rv/cert.pem"}, "VAULT_TLS_KEY_FILE"),
        ({"tls_key_file": "/etc/rv/key.pem"}, "VAULT_TLS_CERT_FILE"),
        ({"tls_client_ca_file": "/etc/rv/ca.pem"}, "VAULT_TLS_CLIENT_CA_FILE"),
        ({"tls_client_auth": "required"}, "VAULT_TLS_CLIENT_AUTH"),
        ({"tls_client_auth": "optional"}, "VAULT_TLS_CLIENT_AUTH"),
        ({"keyring": "pkcs11", "pkcs11_pin": SECRET_PIN}, "VAULT_PKCS11_TOKEN_LABEL"),
        ({"keyring": "pkcs11", "pkcs11_token_label": "vault"}, "VAULT_PKCS11_PIN"),
        (
            {"database_replica_url": f"postgresql+psycopg://r:{SECRET_PASSWORD}@replica/vault"},
            "VAULT_DATABASE_REPLICA_URL",
        ),
        ({"opa_expected_revision": "v1.2"}, "VAULT_OPA_EXPECTED_REVISION"),
        ({"database_url": f"not a url {SECRET_PASSWORD}"}, "VAULT_DATABASE_URL"),
        ({"database_url": f"postgress://u:{SECRET_PASSWORD}@h/db"}, "VAULT_DATABASE_URL"),
        ({"keyring": "hsm"}, "VAULT_KEYRING"),
        ({"database_pool_size": 0}, "VAULT_DATABASE_POOL_SIZE"),
    ],
)
def test_each_cross_field_problem_names_its_setting_and_no_secret(
    settings: dict[str, object], named: str
) -> None:
    problems = _problems(**settings)
    assert len(problems) == 1, problems
    assert problems[0].startswith(named)
    assert "\n" not in problems[0]
    assert not any(secret in problems[0] for secret in SECRETS)


def test_consistent_tls_and_hsm_settings_pass() -> None:
    settings = Settings(
        tls_cert_file="/etc/rv/cert.pem",  # type: ignore[arg-type]
        tls_key_file="/etc/rv/key.pem",  # type: ignore[arg-type]
        tls_client_ca_file="/etc/rv/ca.pem",  # type: ignore[arg-type]
        tls_client_auth="required",
        keyring="pkcs11",
        pkcs11_token_label="vault",
        pkcs11_pin=SECRET_PIN,  # type: ignore[arg-type]
        opa_expected_revision="any",
        database_url="postgresql+psycopg://vault@db/vault",
        database_replica_url="postgresql+psycopg://vault@replica/vault",
    )
    assert settings.tls_client_auth == "required"


def test_all_problems_listed_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "vault.toml"
    config.write_text('tls_client_auth = "required"\ntypo_setting = 1\n', encoding="utf-8")
    monkeypatch.setenv("VAULT_CONFIG_FILE", str(config))
    monkeypatch.setenv("VAULT_KEYRING", "pkcs11")
    monkeypatch.setenv("VAULT_OPA_TOKEN_FILE", str(tmp_path / "missing-token"))
    problems = _problems()
    joined = "\n".join(problems)
    for expected in (
        "VAULT_OPA_TOKEN_FILE",
        "typo_setting",
        "VAULT_TLS_CLIENT_AUTH",
        "VAULT_PKCS11_TOKEN_LABEL",
        "VAULT_PKCS11_PIN",
    ):
        assert expected in joined
    assert len(problems) == 5


def test_field_error_names_where_the_bad_value_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "vault.toml"
    config.write_text('hsts_seconds = "soon"\n', encoding="utf-8")
    monkeypatch.setenv("VAULT_CONFIG_FILE", str(config))
    (problem,) = _problems()
    assert problem.startswith("VAULT_HSTS_SECONDS (file key hsts_seconds)")
    assert f"from file {config}" in problem


def test_secret_with_a_bad_value_is_not_echoed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAULT_DATABASE_URL", f"mysql+nodriver://u:{SECRET_PASSWORD}@h/db")
    (problem,) = _problems()
    assert problem.startswith("VAULT_DATABASE_URL")
    assert SECRET_PASSWORD not in problem


# -- config check --------------------------------------------------------------------------


def test_config_check_prints_sources_and_redacts_secrets(tmp_path: Path) -> None:
    config = tmp_path / "vault.toml"
    config.write_text("hsts_seconds = 600\n", encoding="utf-8")
    pin = _secret_file(tmp_path / "pin", SECRET_PIN + "\n")
    env = {
        "VAULT_CONFIG_FILE": str(config),
        "VAULT_PKCS11_PIN_FILE": str(pin),
        "VAULT_OPA_TOKEN": SECRET_TOKEN,
        "VAULT_DATABASE_URL": f"postgresql+psycopg://vault:{SECRET_PASSWORD}@db.example/vault",
        "VAULT_HOME": str(tmp_path / "home"),
    }
    result = _run_cli(env, "config", "check")
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert lines["VAULT_HSTS_SECONDS"].split()[1:] == ["600", "file", str(config)]
    assert lines["VAULT_PKCS11_PIN"].split()[1:] == ["********", "secret-file", str(pin)]
    assert lines["VAULT_OPA_TOKEN"].split()[1:] == ["********", "env"]
    assert "vault:***@db.example/vault" in lines["VAULT_DATABASE_URL"]
    assert lines["VAULT_RATE_LIMIT_BULK"].split()[1:] == ["60", "default"]
    assert "configuration valid" in result.stdout
    everything = result.stdout + result.stderr
    assert not any(secret in everything for secret in SECRETS)


def test_config_check_lists_problems_and_exits_1(tmp_path: Path) -> None:
    config = tmp_path / "vault.toml"
    config.write_text('tls_client_auth = "required"\nhsts_secnds = 5\n', encoding="utf-8")
    env = {
        "VAULT_CONFIG_FILE": str(config),
        "VAULT_KEYRING": "pkcs11",
        "VAULT_PKCS11_TOKEN_LABEL": "vault",
        "VAULT_PKCS11_PIN": SECRET_PIN,
        "VAULT_DATABASE_REPLICA_URL": f"postgresql://r:{SECRET_PASSWORD}@replica/db",
    }
    result = _run_cli(env, "config", "check")
    assert result.returncode == 1
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if not line.startswith("{")]  # logs
    assert lines[0] == "resident-vault: configuration has 3 problem(s):"
    assert lines[1].strip().startswith(str(config)) and "'hsts_secnds'" in lines[1]
    assert lines[2].strip().startswith("VAULT_TLS_CLIENT_AUTH")
    assert lines[3].strip().startswith("VAULT_DATABASE_REPLICA_URL")
    assert not any(secret in result.stderr for secret in SECRETS)


def test_config_check_validates_and_shows_the_prefixed_groups(tmp_path: Path) -> None:
    """VAULT_OAUTH_* and VAULT_STATS_* are checked with the rest: a bad one is a problem
    line (before, config check passed and the service failed at start)."""
    home = {"VAULT_HOME": str(tmp_path / "home")}
    good = _run_cli({**home, "VAULT_STATS_THRESHOLD": "7"}, "config", "check")
    assert good.returncode == 0, good.stderr
    lines = {line.split()[0]: line for line in good.stdout.splitlines() if line.strip()}
    assert lines["VAULT_STATS_THRESHOLD"].split()[1:] == ["7", "env"]
    assert lines["VAULT_OAUTH_ACCESS_TOKEN_SECONDS"].split()[1:] == ["300", "default"]
    assert lines["VAULT_BREAK_GLASS_MAX_MINUTES"].split()[1:] == ["240", "default"]
    assert lines["VAULT_PAGE_SESSION_SECONDS"].split()[1:] == ["28800", "default"]
    env = {**home, "VAULT_STATS_THRESHOLD": "1", "VAULT_OAUTH_ACCESS_TOKEN_SECONDS": "5"}
    bad = _run_cli({**env, "VAULT_BREAK_GLASS_MINUTES": "500"}, "config", "check")
    assert bad.returncode == 1
    problems = [line.strip() for line in bad.stderr.splitlines() if line.startswith("  ")]
    assert [line.split(":")[0].split(" ")[0] for line in problems] == [
        "VAULT_BREAK_GLASS_MINUTES",
        "VAULT_OAUTH_ACCESS_TOKEN_SECONDS",
        "VAULT_STATS_THRESHOLD",
    ]


def test_any_command_refuses_a_bad_configuration_with_its_lines(tmp_path: Path) -> None:
    env = {
        "VAULT_HOME": str(tmp_path / "home"),
        "VAULT_TLS_CERT_FILE": str(tmp_path / "cert.pem"),
        "VAULT_OPA_EXPECTED_REVISION": "latest",
        "VAULT_PKCS11_PIN": SECRET_PIN,
    }
    result = _run_cli(env, "keys", "list")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    problems = [line for line in result.stderr.splitlines() if line.startswith("  ")]
    assert [p.split()[0] for p in problems] == [
        "VAULT_TLS_KEY_FILE",
        "VAULT_OPA_EXPECTED_REVISION",
    ]
    assert SECRET_PIN not in result.stderr + result.stdout


def test_service_refuses_to_start_with_a_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from api.http.app import create_app

    monkeypatch.setenv("VAULT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VAULT_TLS_CLIENT_AUTH", "required")
    monkeypatch.setenv("VAULT_METRICS_TOKEN", SECRET_TOKEN)
    with pytest.raises(SettingsInvalid) as caught:
        create_app()
    message = str(caught.value)
    assert "VAULT_TLS_CLIENT_AUTH" in message and "VAULT_TLS_CLIENT_CA_FILE" in message
    captured = capsys.readouterr()
    assert SECRET_TOKEN not in message + captured.out + captured.err
    assert not (tmp_path / "home").exists()  # nothing was created before refusing


def test_documentation_lists_every_setting_as_generated() -> None:
    from api.cli.config import DOC_BEGIN, DOC_END, settings_markdown_table

    doc = (Path(__file__).parents[1] / "docs" / "configuration.md").read_text(encoding="utf-8")
    missing = [
        f"VAULT_{name.upper()}"
        for name in Settings.model_fields
        if f"`VAULT_{name.upper()}`" not in doc
    ]
    assert missing == [], f"docs/configuration.md misses {missing}"
    table = doc.split(DOC_BEGIN, 1)[1].split(DOC_END, 1)[0].strip()
    assert table == settings_markdown_table().strip(), (
        "docs/configuration.md is out of date: regenerate its table with "
        "`resident-vault config doc`"
    )
