"""The OAuth 2 authorization server (authlib, adapted to FastAPI) and bearer-token checks.

* `install_oauth(app, runtime)` mounts /oauth/* and the RFC 8414 metadata, and the
  verifier that `require_scopes(...)` uses;
* `require_scopes(*scopes)` is the dependency protected routes take; it returns a
  `Principal` or fails with an RFC 9457 problem (401 invalid-token, 403 insufficient-scope);
* `api.oauth.service` registers clients and people; `api.cli.clients` is its command line.
"""

from api.oauth.config import ExternalIssuer, OAuthSettings
from api.oauth.routes import install_oauth
from api.oauth.scopes import Scope
from api.oauth.tokens import (
    AuthError,
    InvalidToken,
    Principal,
    TokenVerifier,
    install_auth_handlers,
    require_scopes,
)

__all__ = [
    "AuthError",
    "ExternalIssuer",
    "InvalidToken",
    "OAuthSettings",
    "Principal",
    "Scope",
    "TokenVerifier",
    "install_auth_handlers",
    "install_oauth",
    "require_scopes",
]
