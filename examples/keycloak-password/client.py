#!/usr/bin/env python3
"""A compliance service's client behind Keycloak (flow 3 of the design): the resource-owner
password grant (username, password, client_id, client_secret, form-encoded) at the realm's token
endpoint, access tokens that live 300 seconds, renewed with grant_type=refresh_token. The gateway
checks the `scope` string and the realm roles (realm_access.roles) and forwards who is calling.

    python3 client.py [--idp http://127.0.0.1:8081] [--gateway http://127.0.0.1:8080]

Exit code 0 when every call answered as expected; each check prints an `ok` line. (`--prepare`
is accepted for symmetry with the other examples: this flow needs no key material.)
"""
import os
import sys

import jwt
import requests

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from gateway_calls import (  # noqa: E402
    call,
    example_args,
    expect_failure,
    expect_forwarded,
    expect_token_error,
    token_from,
)

REALM = "compliance"
CLIENT = {"client_id": "compliance-ui", "client_secret": "dev-only-kc-secret"}
ACCESS_TOKEN_SECONDS = 300


def password_grant(token_url, username, password, scope):
    form = {"grant_type": "password", "username": username, "password": password, "scope": scope, **CLIENT}
    return token_from(requests.post(token_url, data=form, timeout=10))


def check_keycloak_shape(issued, issuer):
    claims = jwt.decode(issued["access_token"], options={"verify_signature": False})
    ok = (
        claims.get("iss") == issuer
        and claims.get("typ") == "Bearer"
        and isinstance(claims.get("scope"), str)
        and isinstance(claims.get("realm_access", {}).get("roles"), list)
        and issued.get("expires_in") == ACCESS_TOKEN_SECONDS
        and issued.get("refresh_token")
    )
    if not ok:
        raise AssertionError(f"not a Keycloak token response: {issued} {claims}")
    print(f"ok   token for {claims['preferred_username']}: scope={claims['scope']!r} "
          f"realm_access.roles={claims['realm_access']['roles']} expires_in={issued['expires_in']}")
    return claims


def identity(claims):
    return {
        "X-User-Id": claims["sub"],
        "X-User-Name": claims["preferred_username"],
        "X-User-Email": claims["email"],
        "X-User-Roles": ",".join(claims["realm_access"]["roles"]),
        "X-Scopes": claims["scope"],
    }


def run(idp, gateway):
    # The realm's discovery document names the issuer and the token endpoint, as Keycloak
    # adapters read them (in examples/compose.yaml the issuer is the in-network http://idp:8081).
    realm = f"{idp}/realms/{REALM}"
    discovery = requests.get(f"{realm}/.well-known/openid-configuration", timeout=10).json()
    issuer = discovery["issuer"]
    token_url = discovery["token_endpoint"]  # {realm}/protocol/openid-connect/token

    expect_failure(call(gateway, "GET", "/api/reports/q3"), 401)

    # alice, an auditor, asks for read and write.
    issued = password_grant(token_url, "alice", "alice-dev-pw", "openid reports.read reports.write")
    claims = check_keycloak_shape(issued, issuer)
    expect_forwarded(call(gateway, "GET", "/api/reports/q3", issued["access_token"]), 200, identity(claims))
    expect_forwarded(call(gateway, "POST", "/api/reports", issued["access_token"]), 202, identity(claims))

    # Refresh before the 300 s are up; the new access token works, the used refresh token does not.
    refresh = {"grant_type": "refresh_token", "refresh_token": issued["refresh_token"], **CLIENT}
    renewed = token_from(requests.post(token_url, data=refresh, timeout=10))
    claims = check_keycloak_shape(renewed, issuer)
    expect_forwarded(call(gateway, "GET", "/api/reports/q3", renewed["access_token"]), 200, identity(claims))
    expect_token_error(requests.post(token_url, data=refresh, timeout=10), 400, "invalid_grant")

    # bob, a viewer with read scope only: reads, but may not write (scope and role).
    issued = password_grant(token_url, "bob", "bob-dev-pw", "openid reports.read")
    claims = check_keycloak_shape(issued, issuer)
    expect_forwarded(call(gateway, "GET", "/api/reports/q3", issued["access_token"]), 200, identity(claims))
    expect_failure(call(gateway, "POST", "/api/reports", issued["access_token"]), 403, "insufficient_scope")

    # A wrong password gets no token.
    form = {"grant_type": "password", "username": "bob", "password": "wrong", **CLIENT}
    expect_token_error(requests.post(token_url, data=form, timeout=10), 400, "invalid_grant")


def main():
    args = example_args(__doc__, __file__, "Keycloak base URL (the realm is /realms/compliance)")
    if args.prepare:
        return 0  # this flow needs no key material
    run(args.idp, args.gateway)
    print("PASS keycloak-password")
    return 0


if __name__ == "__main__":
    sys.exit(main())
