"""The service's settings, composed once: every package's own model in one flat object.

Each package declares its own (`vault.config.VaultSettings`, `audit.settings`,
`policies.settings`, `consent.settings`, `access.settings`, `api.http.settings`,
`api.pages.settings`); `Settings` inherits them all,
so `Settings(home=..., checkpoint_interval_seconds=0.3)` and `VAULT_<NAME>` work as one,
every problem of every layer is named at once, and a key of the configuration file that
is no setting of any layer is a typo. Code below `api` takes the narrowest model it needs
(the runtime takes `RuntimeSettings`), which `Settings` is.

Not composed, since their variables have a prefix of their own: the authorization
server's `VAULT_OAUTH_*` (`api.oauth.config.OAuthSettings`) and the statistics'
`VAULT_STATS_*` (`access.settings.StatsSettings`).
"""

from __future__ import annotations

from typing import ClassVar

from access.runtime import Runtime
from access.settings import AccessSettings, RuntimeSettings
from api.http.settings import HttpSettings
from api.pages.settings import PagesSettings
from audit.settings import AuditSettings
from consent.settings import ConsentSettings
from policies.settings import PoliciesSettings
from vault.config import LayerSettings, VaultSettings

# Every package's model, ground floor first: the order `config check` and
# docs/configuration.md list the settings in.
LAYERS: tuple[type[LayerSettings], ...] = (
    VaultSettings,
    AuditSettings,
    PoliciesSettings,
    ConsentSettings,
    AccessSettings,
    HttpSettings,
    PagesSettings,
)


class Settings(PagesSettings, HttpSettings, PoliciesSettings, RuntimeSettings):
    """Every setting of the service. Constructing one validates it all, or raises
    `SettingsInvalid` naming every problem."""

    complete: ClassVar[bool] = True


def settings_of(runtime: Runtime) -> Settings:
    """The composed settings a runtime was opened with (the service opens it with them),
    for what is configured above access (transport, metrics)."""
    settings = runtime.settings
    if not isinstance(settings, Settings):
        raise TypeError(
            f"the runtime was opened with {type(settings).__name__}, not api.settings.Settings"
        )
    return settings
