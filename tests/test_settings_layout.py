"""Settings by floor: each package declares its own, `api.settings.Settings` composes them.

No setting is declared twice, the composed model holds every package's, the vault's model
holds only the vault's, and every `VAULT_*` name still means what it meant.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from access.runtime import init_runtime
from access.settings import AccessSettings, RuntimeSettings, StatsSettings
from api.http.settings import HttpSettings
from api.oauth.config import OAuthSettings
from api.pages.settings import PagesSettings
from api.settings import LAYERS, Settings, settings_of
from audit.settings import AuditSettings
from consent.settings import ConsentSettings
from policies.settings import PoliciesSettings
from vault.config import LayerSettings, SettingsInvalid, VaultSettings, env_name

# What moved out of vault/config.py, and where to.
MOVED: dict[str, type[LayerSettings]] = {
    "deployment": AuditSettings,
    "log_origin": AuditSettings,
    "checkpoint_interval_seconds": AuditSettings,
    "alert_scan_seconds": AuditSettings,
    "alert_volume_floor": AuditSettings,
    "alert_suspend_on": AuditSettings,
    "opa_url": PoliciesSettings,
    "opa_expected_revision": PoliciesSettings,
    "opa_ca_file": PoliciesSettings,
    "opa_token": PoliciesSettings,
    "rate_limit_standard": AccessSettings,
    "rate_limit_sensitive": AccessSettings,
    "rate_limit_bulk": AccessSettings,
    "tls_cert_file": HttpSettings,
    "tls_key_file": HttpSettings,
    "tls_client_ca_file": HttpSettings,
    "tls_client_auth": HttpSettings,
    "forwarded_allow_ips": HttpSettings,
    "client_cert_header": HttpSettings,
    "hsts_seconds": HttpSettings,
    "metrics_enabled": HttpSettings,
    "metrics_token": HttpSettings,
    "tracing_enabled": HttpSettings,
    "shutdown_grace_seconds": HttpSettings,
    "max_body_bytes": HttpSettings,
}

# Every VAULT_<NAME> setting there was before the split: none lost, none renamed.
BEFORE = {
    "home",
    "database_url",
    "database_replica_url",
    "database_pool_size",
    "database_max_overflow",
    "database_pool_timeout_seconds",
    "database_statement_timeout_ms",
    "migrate_on_start",
    "crypto_suite",
    "keyring",
    "pkcs11_module",
    "pkcs11_token_label",
    "pkcs11_pin",
    "pkcs11_key_prefix",
    "data_key_cache_size",
    "data_key_cache_seconds",
    "backup_key_file",
    *MOVED,
}

# Each package's model lives in that package.
# Settings added since: what were constants in consent and the pages.
ADDED = {
    "break_glass_minutes",
    "break_glass_max_minutes",
    "page_session_seconds",
    "page_login_seconds",
    "public_url",
    # Alerts that fit the work (issue 19): detection relative to jurisdiction and history.
    "alert_volume_window_hours",
    "alert_volume_factor",
    "alert_jurisdiction_passes",
    "alert_baseline_days",
    "alert_sensitive_floor",
    # /metrics on its own listener or for named addresses; loopback by default (issue 19).
    "metrics_listen",
    "metrics_allow_from",
}

HOMES = {
    VaultSettings: "vault",
    AuditSettings: "audit",
    PoliciesSettings: "policies",
    ConsentSettings: "consent",
    AccessSettings: "access",
    HttpSettings: "api.http",
    PagesSettings: "api.pages",
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("VAULT_") and name != "VAULT_TEST_DATABASE_URL":
            monkeypatch.delenv(name)


def test_each_package_model_holds_only_its_own_fields() -> None:
    assert set(LAYERS) == set(HOMES)
    seen: dict[str, str] = {}
    for layer in LAYERS:
        assert layer.__module__.startswith(HOMES[layer] + "."), layer
        # declared by the model itself: a package's model composes no other
        assert set(layer.own_fields()) == set(layer.model_fields), layer.__name__
        for name in layer.model_fields:
            assert name not in seen, f"{name} in both {seen[name]} and {layer.__name__}"
            seen[name] = layer.__name__


def test_the_composed_model_has_every_field_of_every_model() -> None:
    every = [name for layer in LAYERS for name in layer.model_fields]
    assert sorted(Settings.model_fields) == sorted(every)
    assert Settings.own_fields() == ()  # composes, declares nothing
    assert set(Settings.model_fields) == BEFORE | ADDED
    for layer in (*LAYERS, RuntimeSettings):
        assert issubclass(Settings, layer)
    assert set(RuntimeSettings.model_fields) == {
        *VaultSettings.model_fields,
        *AuditSettings.model_fields,
        *ConsentSettings.model_fields,
        *AccessSettings.model_fields,
    }


def test_vault_config_keeps_only_the_vaults_own() -> None:
    kept = set(VaultSettings.model_fields)
    assert kept.isdisjoint(MOVED), sorted(kept & set(MOVED))
    for name, home in MOVED.items():
        assert name in home.own_fields(), (name, home.__name__)
    assert kept == BEFORE - set(MOVED)


def test_no_two_settings_share_an_environment_variable() -> None:
    names = [env_name(name) for name in Settings.model_fields]
    prefixed = [
        *(f"VAULT_OAUTH_{name.upper()}" for name in OAuthSettings.model_fields),
        *(f"VAULT_STATS_{name.upper()}" for name in StatsSettings.model_fields),
    ]
    assert len(set(names + prefixed)) == len(names) + len(prefixed)


def test_a_setting_given_to_the_wrong_model_is_refused_not_dropped() -> None:
    with pytest.raises(SettingsInvalid) as caught:
        VaultSettings(tls_cert_file="/etc/rv/cert.pem")  # type: ignore[call-arg]
    assert caught.value.problems == ["keyword argument: unknown setting 'tls_cert_file'"]
    with pytest.raises(SettingsInvalid) as caught:
        Settings(databse_url="sqlite:///x.db")  # type: ignore[call-arg]
    assert "did you mean 'database_url'?" in caught.value.problems[0]


def test_one_layer_read_alone_leaves_the_others_file_keys_to_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "vault.toml"
    config.write_text("database_pool_size = 7\nhsts_seconds = 9\ntypo_setting = 1\n")
    monkeypatch.setenv("VAULT_CONFIG_FILE", str(config))
    assert VaultSettings().database_pool_size == 7  # the HTTP key is not its business
    assert HttpSettings().hsts_seconds == 9
    with pytest.raises(SettingsInvalid) as caught:
        Settings()  # holds every setting: a key that is none of them is a typo
    assert len(caught.value.problems) == 1
    assert "'typo_setting'" in caught.value.problems[0]


def test_each_layer_checks_its_own_settings_and_the_composed_one_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VAULT_TLS_KEY_FILE", "/etc/rv/key.pem")
    monkeypatch.setenv("VAULT_OPA_EXPECTED_REVISION", "latest")
    monkeypatch.setenv("VAULT_KEYRING", "pkcs11")
    monkeypatch.setenv("VAULT_PKCS11_TOKEN_LABEL", "vault")
    named = {
        HttpSettings: ["VAULT_TLS_CERT_FILE"],
        PoliciesSettings: ["VAULT_OPA_EXPECTED_REVISION"],
        VaultSettings: ["VAULT_PKCS11_PIN"],
        Settings: ["VAULT_TLS_CERT_FILE", "VAULT_OPA_EXPECTED_REVISION", "VAULT_PKCS11_PIN"],
    }
    for model, expected in named.items():
        with pytest.raises(SettingsInvalid) as caught:
            model()
        assert [p.split()[0] for p in caught.value.problems] == expected, model.__name__
    assert AuditSettings().deployment == "demo"
    assert AccessSettings().rate_limit_bulk == 60


def test_the_runtime_carries_the_composed_settings(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path / "home",
        database_url=f"sqlite:///{tmp_path / 'v.db'}",
        deployment="district-b",
        rate_limit_bulk=7,
        hsts_seconds=5,
    )
    runtime = init_runtime(settings)
    try:
        assert runtime.settings is settings
        assert runtime.audit.origin == "resident-vault.example/district-b/audit"
        assert settings_of(runtime).hsts_seconds == 5
    finally:
        runtime.close()
