"""Single sign-on with the team's OpenID provider (``MLFLOW_STACK_AUTH_MODE=oidc``).

- :mod:`.config`: what the mode needs, from the settings contract;
- :mod:`.provider`: the provider's metadata and signing keys, fetched and kept;
- :mod:`.tokens`: ID tokens and access tokens checked with joserfc (signature against the
  provider's JWKS, issuer, audience, expiry, an asymmetric algorithm, the nonce);
- :mod:`.identity`: who a token names, their groups, and what those groups make them;
- :mod:`.roles`: the groups as MLflow roles, and each user's roles and admin flag kept equal
  to their groups;
- :mod:`.session`: the signed cookies of a sign-in and of a signed-in browser;
- :mod:`mlflow_stack.server.signon` (a layer of the server): ``/auth/login``, ``/auth/callback``
  and ``/auth/logout``;
- :mod:`.pages`: the pages a person sees when sign-in cannot go on.

MLflow stays the judge of permissions: a signed-in person or a token is an MLflow user (created
at first sign-in), whose groups are MLflow roles; :mod:`mlflow_stack.server.login` turns a
session cookie or a bearer token into that user for MLflow's auth app.
"""

from __future__ import annotations

from mlflow_stack.sso.config import SignOnConfig
from mlflow_stack.sso.runtime import SignOn, current, install

__all__ = ["SignOn", "SignOnConfig", "current", "install"]
