#!/usr/bin/env python3
"""A security platform integration (flow 1 of the design): it holds a connection file (service
principal id, tenant id, an RSA private key as a JWK, the STS base address), signs an assertion
itself (RS256; iss = sub = <ServicePrincipalId>@<TenantId>; exp = now + 1 h) and trades it at
<sts>/connect/token with the RFC 7523 jwt-bearer grant, sent as a JSON body the way the platform's
Node and Python samples send it (and form-encoded, the way its curl sample does). The .NET-style
access token then goes through the gateway, which forwards the URI-named claims as headers.

    python3 client.py --prepare          # once: write the connection file and its public JWKS
    python3 client.py [--idp http://127.0.0.1:8081] [--gateway http://127.0.0.1:8080]

Exit code 0 when every call answered as expected; each check prints an `ok` line.
"""
import json
import os
import sys
import time
import uuid

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from gateway_calls import (  # noqa: E402
    call,
    example_args,
    expect_failure,
    expect_forwarded,
    expect_token_error,
    token_from,
)

SERVICE_PRINCIPAL = "9b8a7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d"
TENANT = "6a0d5c1e-4b7f-4e2a-8d93-1f2e3d4c5b6a"
GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
XMLDSIG_RS512 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512"
NAME = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name"
ROLE = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
TENANT_ID = "http://schemas.microsoft.com/identity/claims/tenantid"


def prepare(local):
    """The connection file the platform hands out, and the public half the STS (idp.yaml) trusts.
    Kept when present so a running token server keeps matching it."""
    conn_file = os.path.join(local, "connection.json")
    if os.path.exists(conn_file):
        print(f"kept {conn_file}")
        return
    os.makedirs(local, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key))
    private_jwk.update(kid="integration-key-1", alg="RS256", use="sig")
    public_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    public_jwk.update(kid="integration-key-1", alg="RS256", use="sig")
    connection = {
        "ServicePrincipalId": SERVICE_PRINCIPAL,
        "TenantId": TENANT,
        "PrivateKey": private_jwk,
        "StsBaseAddress": "http://127.0.0.1:8081/sts",
    }
    with open(conn_file, "w") as f:
        os.chmod(conn_file, 0o600)
        json.dump(connection, f, indent=2)
    with open(os.path.join(local, "assertion-jwks.json"), "w") as f:
        json.dump({"keys": [public_jwk]}, f, indent=2)
    print(f"wrote {conn_file} and assertion-jwks.json")


def assertion(connection, token_url):
    """The self-signed assertion: iss = sub = <ServicePrincipalId>@<TenantId>, valid one hour."""
    principal = f"{connection['ServicePrincipalId']}@{connection['TenantId']}"
    jwk = connection["PrivateKey"]
    key = jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(jwk))
    now = int(time.time())
    claims = {"iss": principal, "sub": principal, "aud": token_url, "jti": str(uuid.uuid4()),
              "iat": now, "nbf": now, "exp": now + 3600}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": jwk["kid"]})


def check_sts_shape(token):
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    principal = f"{SERVICE_PRINCIPAL}@{TENANT}"
    if header.get("alg") != XMLDSIG_RS512 or claims.get("aud") != "client" or claims.get(NAME) != principal:
        raise AssertionError(f"not a .NET STS token: {header} {claims}")
    print(f"ok   STS token: alg={header['alg']} kid={header['kid']} aud=client roles={claims[ROLE]}")
    return claims


def identity(claims):
    return {
        "X-User-Id": claims[NAME],
        "X-User-Roles": ",".join(claims[ROLE]),
        "X-Tenant-Id": TENANT,
        "X-Client-Id": SERVICE_PRINCIPAL,
    }


def run(sts, gateway, local):
    with open(os.path.join(local, "connection.json")) as f:
        connection = json.load(f)
    token_url = f"{sts}/connect/token"

    expect_failure(call(gateway, "GET", "/api/alerts"), 401)

    # jwt-bearer with a JSON body (the platform's Node and Python samples).
    body = {"grant_type": GRANT, "client_id": SERVICE_PRINCIPAL, "assertion": assertion(connection, token_url)}
    issued = token_from(requests.post(token_url, json=body, timeout=10))
    claims = check_sts_shape(issued["access_token"])
    expect_forwarded(call(gateway, "GET", "/api/alerts", issued["access_token"]), 200, identity(claims))
    # The integration holds Incidents.Read, not Incidents.Write.
    expect_failure(call(gateway, "POST", "/api/incidents", issued["access_token"]), 403, "insufficient_scope")

    # Refresh (JSON body too); the used refresh token stops working.
    refresh = {"grant_type": "refresh_token", "client_id": SERVICE_PRINCIPAL, "refresh_token": issued["refresh_token"]}
    renewed = token_from(requests.post(token_url, json=refresh, timeout=10))
    claims = check_sts_shape(renewed["access_token"])
    expect_forwarded(call(gateway, "GET", "/api/alerts", renewed["access_token"]), 200, identity(claims))
    expect_token_error(requests.post(token_url, json=refresh, timeout=10), 400, "invalid_grant")

    # The same grant form-encoded (the platform's curl sample), at <sts>/token.
    form_url = f"{sts}/token"
    form = {"grant_type": GRANT, "client_id": SERVICE_PRINCIPAL, "assertion": assertion(connection, form_url)}
    issued = token_from(requests.post(form_url, data=form, timeout=10))
    claims = check_sts_shape(issued["access_token"])
    expect_forwarded(call(gateway, "GET", "/api/alerts", issued["access_token"]), 200, identity(claims))


def main():
    args = example_args(__doc__, __file__, "token server origin; the STS base address is IDP/sts")
    if args.prepare:
        prepare(args.local)
        return 0
    run(f"{args.idp}/sts", args.gateway, args.local)
    print("PASS sts-jwt-bearer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
