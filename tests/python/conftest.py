"""Starts `portcullis idp` (binary from $PORTCULLIS_BIN) on port 0 with a generated https
certificate, and the key material the clients use: a client certificate (MSAL, private_key_jwt),
a JWK for authlib's private_key_jwt and an RSA JWK for the jwt-bearer grant. The SPA, the BFF
and the downstream API are the on-behalf-of cast."""
import datetime
import json
import os
import queue
import subprocess
import tempfile
import threading
import time

import pytest
from authlib.jose import JsonWebKey
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


def _rsa_pem():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return key, pem


def _self_signed(key, cn):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


CONFIG = """
listen: "127.0.0.1:0"
https: { listen: "127.0.0.1:0", generate: true }
issuer: "https://127.0.0.1:{https-port}/realm"
resources:
  "api://orders": { scopes: [orders.read, orders.write], token-lifetime: 300 }
  "api://bff": { scopes: [access_as_user] }
  "api://downstream": { scopes: [data.read], signing-alg: PS256 }
clients:
  - { client-id: svc-secret, client-secret: "s3cret", auth-method: client_secret_basic,
      default-resource: "api://orders", profile: entra-v2, roles: [Orders.Reader] }
  - { client-id: svc-post, client-secret: "p0st", auth-method: client_secret_post,
      grant-types: [client_credentials, password, refresh_token], default-resource: "api://orders",
      profile: keycloak }
  - { client-id: svc-cert, auth-method: private_key_jwt, certificate-file: svc-cert.pem,
      default-resource: "api://orders", profile: entra-v2 }
  - { client-id: svc-jwk, auth-method: private_key_jwt, jwks-file: svc-jwk.json,
      default-resource: "api://orders" }
  - { client-id: svc-assert, auth-method: none, assertion-jwks-file: assert-jwks.json,
      grant-types: ["urn:ietf:params:oauth:grant-type:jwt-bearer", refresh_token],
      default-resource: "api://orders", profile: dotnet-sts, roles: [Reader] }
  - { client-id: spa, auth-method: none, grant-types: [password], default-resource: "api://bff",
      profile: entra-v2 }
  - { client-id: bff, client-secret: "bff-secret", auth-method: client_secret_post, profile: entra-v2,
      identifier-uris: ["api://bff"], on-behalf-of: ["api://downstream"] }
users:
  - { username: alice, password: "alice-pw", roles: [orders-reader],
      resource-roles: { "api://downstream": [Data.Reader] }, claims: { name: Alice Example } }
"""


# Generous: the server prints its URLs within a second; a cold debug binary on a loaded machine
# may take a few.
STARTUP_TIMEOUT_S = 60


def _read_banner(proc, timeout_s):
    """Readiness: the lines the server prints once it listens, up to "https CA", read on a thread
    so the wait is bounded. Kills the server and fails on timeout or early exit."""
    lines = queue.Queue()

    def pump():
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)  # EOF: the server exited

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout_s
    info = {}
    while "https CA" not in info:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            proc.kill()
            pytest.fail(f"idp printed no https CA line within {timeout_s}s: {info}")
        if line is None:
            pytest.fail(f"idp exited ({proc.wait(timeout=10)}) before it was ready: {info}")
        key, _, value = line.partition(":")
        info[key.strip()] = value.strip()
    assert "https" in info, f"idp did not start: {info}"
    return info


@pytest.fixture(scope="session")
def idp():
    work = tempfile.mkdtemp(prefix="portcullis-idp-py-")
    cert_key, cert_key_pem = _rsa_pem()
    cert = _self_signed(cert_key, "svc-cert")
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    with open(os.path.join(work, "svc-cert.pem"), "w") as f:
        f.write(cert_pem)
    _, jwk_pem = _rsa_pem()
    jwk_pub = JsonWebKey.import_key(jwk_pem, {"kid": "jwk-1"}).as_dict(is_private=False)
    with open(os.path.join(work, "svc-jwk.json"), "w") as f:
        json.dump({"keys": [jwk_pub]}, f)
    _, assert_pem = _rsa_pem()
    assert_pub = JsonWebKey.import_key(assert_pem, {"kid": "conn-key"}).as_dict(is_private=False)
    with open(os.path.join(work, "assert-jwks.json"), "w") as f:
        json.dump({"keys": [assert_pub]}, f)
    config = os.path.join(work, "idp.yaml")
    with open(config, "w") as f:
        f.write(CONFIG)
    proc = subprocess.Popen(
        [os.environ["PORTCULLIS_BIN"], "idp", "-c", config],
        stdout=subprocess.PIPE,
        text=True,
    )
    info = _read_banner(proc, STARTUP_TIMEOUT_S)
    info.update(
        work=work,
        ca=info["https CA"],
        cert_pem=cert_pem,
        cert_key_pem=cert_key_pem,
        cert_sha1=cert.fingerprint(hashes.SHA1()).hex(),
        jwk_pem=jwk_pem,
        assert_pem=assert_pem,
    )
    os.environ["REQUESTS_CA_BUNDLE"] = info["ca"]
    try:
        yield info
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
