#!/usr/bin/env python3
"""Entra ID client credentials, the two ways the banking platform's clients get tokens (flows 2
and 4 of the design): a certificate (a client_assertion JWT signed with the certificate's key, its
SHA-1 thumbprint in the `x5t` header, as MSAL sends it) and a client secret. Each token is then
used through the gateway: reads (GET /api/accounts) need the app role Accounts.Read, payment
commands (POST /api/payments, answered 202 Accepted) need Payments.Write.

    python3 client.py --prepare          # once: make the client certificate idp.yaml registers
    python3 client.py [--idp http://127.0.0.1:8081] [--gateway http://127.0.0.1:8080]

Exit code 0 when every call answered as expected; each check prints an `ok` line.
"""
import base64
import datetime
import os
import sys
import time
import uuid

import jwt
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from gateway_calls import call, example_args, expect_failure, expect_forwarded, token_from  # noqa: E402

TENANT = "3c1f6f4e-8a2b-4d6e-9f10-2a3b4c5d6e7f"
API_SCOPE = "api://payments-api/.default"
CERT_CLIENT = "c0ffee00-2222-4b3c-9d4e-0123456789ab"
SECRET_CLIENT = "5ec2e700-3333-4c4d-8e5f-0123456789ab"
SECRET = "dev-only-secret"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def prepare(local):
    """A self-signed client certificate and its key, as `New-SelfSignedCertificate` would make for
    an app registration; kept when present so a running token server keeps matching it."""
    cert_file = os.path.join(local, "client-cert.pem")
    if os.path.exists(cert_file):
        print(f"kept {cert_file}")
        return
    os.makedirs(local, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "payments-client")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key_file = os.path.join(local, "client-key.pem")
    with open(key_file, "wb") as f:
        os.chmod(key_file, 0o600)
        f.write(key_pem)
    with open(cert_file, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    print(f"wrote {cert_file} and {key_file}")


def client_assertion(local, token_url):
    """The JWT Entra expects from a certificate credential: aud = the token endpoint, iss = sub =
    the client id, RS256, `x5t` = base64url SHA-1 thumbprint of the certificate."""
    with open(os.path.join(local, "client-cert.pem"), "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    with open(os.path.join(local, "client-key.pem"), "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    thumbprint = base64.urlsafe_b64encode(cert.fingerprint(hashes.SHA1())).rstrip(b"=").decode()
    now = int(time.time())
    claims = {
        "aud": token_url,
        "iss": CERT_CLIENT,
        "sub": CERT_CLIENT,
        "jti": str(uuid.uuid4()),
        "nbf": now,
        "iat": now,
        "exp": now + 600,
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"x5t": thumbprint})


def get_token(token_url, form):
    resp = requests.post(token_url, data={"grant_type": "client_credentials", "scope": API_SCOPE, **form}, timeout=10)
    token = token_from(resp)["access_token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    want_iss = token_url.split(f"/{TENANT}/")[0] + f"/{TENANT}/v2.0"
    if claims.get("ver") != "2.0" or claims.get("iss") != want_iss:
        raise AssertionError(f"not an Entra v2 token: {claims}")
    print(f"ok   token for {claims['azp']}: iss={claims['iss']} aud={claims['aud']} roles={claims.get('roles')}")
    return token, claims


def identity(claims):
    return {
        "X-User-Id": claims["sub"],
        "X-Caller-App-Id": claims["azp"],
        "X-Tenant-Id": TENANT,
        "X-Caller-Roles": ",".join(claims["roles"]),
    }


def run(idp, gateway, local):
    token_url = f"{idp}/{TENANT}/oauth2/v2.0/token"

    # No token: APIM's 401.
    expect_failure(call(gateway, "GET", "/api/accounts/42"), 401)

    # Certificate credentials: may read and pay.
    token, claims = get_token(
        token_url,
        {
            "client_id": CERT_CLIENT,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": client_assertion(local, token_url),
        },
    )
    expect_forwarded(call(gateway, "GET", "/api/accounts/42", token), 200, identity(claims))
    expect_forwarded(call(gateway, "POST", "/api/payments", token), 202, identity(claims))

    # Secret credentials: may read, but holds no Payments.Write role.
    token, claims = get_token(token_url, {"client_id": SECRET_CLIENT, "client_secret": SECRET})
    expect_forwarded(call(gateway, "GET", "/api/accounts/42", token), 200, identity(claims))
    expect_failure(call(gateway, "POST", "/api/payments", token), 403, "insufficient_scope")

    # A tampered token (signature no longer matches): 401, the backend never sees it.
    head, body, sig = token.split(".")
    forged = f"{head}.{body}.{sig[:-4]}AAAA"
    expect_failure(call(gateway, "GET", "/api/accounts/42", forged), 401, "invalid_token")


def main():
    args = example_args(__doc__, __file__)
    if args.prepare:
        prepare(args.local)
        return 0
    run(args.idp, args.gateway, args.local)
    print("PASS entra-client-credentials")
    return 0


if __name__ == "__main__":
    sys.exit(main())
