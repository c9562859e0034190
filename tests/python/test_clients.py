"""Each client library and flow a developer would use against the dev token server; every
access token is verified with authlib against the server's JWKS (the STS one by hand: its alg
is an XML-DSig URI). MSAL's on-behalf-of flow also goes through the gateway to a backend."""
import base64
import json
import os
import subprocess
import time
from http.server import BaseHTTPRequestHandler

import msal
import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.jose import JsonWebKey, jwt
from authlib.oauth2.rfc7523 import JWTBearerGrant, PrivateKeyJWT
from stack import Server, start_gateway, stop

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def discovery(idp):
    return requests.get(f"{idp['issuer']}/.well-known/openid-configuration", timeout=10).json()


def verify(idp, token, aud="api://orders"):
    keys = JsonWebKey.import_key_set(requests.get(discovery(idp)["jwks_uri"], timeout=10).json())
    claims = jwt.decode(token, keys)
    claims.validate()
    audience = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    assert aud in audience
    return claims


def test_msal_certificate_sha1_thumbprint(idp):
    app = msal.ConfidentialClientApplication(
        "svc-cert",
        authority=idp["issuer"],
        client_credential={"private_key": idp["cert_key_pem"], "thumbprint": idp["cert_sha1"]},
        validate_authority=False,
        instance_discovery=False,
    )
    result = app.acquire_token_for_client(scopes=["api://orders/.default"])
    assert "access_token" in result, result
    claims = verify(idp, result["access_token"])
    assert claims["azp"] == "svc-cert" and claims["azpacr"] == "2"


def test_msal_certificate_sha256_x5c(idp):
    app = msal.ConfidentialClientApplication(
        "svc-cert",
        authority=idp["issuer"],
        client_credential={"private_key": idp["cert_key_pem"], "public_certificate": idp["cert_pem"]},
        validate_authority=False,
        instance_discovery=False,
    )
    result = app.acquire_token_for_client(scopes=["api://orders/.default"])
    assert "access_token" in result, result
    assert verify(idp, result["access_token"])["sub"] == "svc-cert"
    # a second acquisition (from MSAL's cache or with a new assertion) works as well
    again = app.acquire_token_for_client(scopes=["api://orders/.default"])
    assert "access_token" in again, again


def test_msal_secret(idp):
    app = msal.ConfidentialClientApplication(
        "svc-secret",
        authority=idp["issuer"],
        client_credential="s3cret",
        validate_authority=False,
        instance_discovery=False,
    )
    result = app.acquire_token_for_client(scopes=["api://orders/.default"])
    assert "access_token" in result, result
    claims = verify(idp, result["access_token"])
    assert claims["roles"] == ["Orders.Reader"]
    assert claims["iss"].endswith("/v2.0")


def test_msal_wrong_secret_gets_invalid_client(idp):
    app = msal.ConfidentialClientApplication(
        "svc-secret", authority=idp["issuer"], client_credential="nope",
        validate_authority=False, instance_discovery=False,
    )
    result = app.acquire_token_for_client(scopes=["api://orders/.default"])
    assert result.get("error") == "invalid_client", result


def test_authlib_client_secret_basic(idp):
    token_url = discovery(idp)["token_endpoint"]
    session = OAuth2Session("svc-secret", "s3cret", token_endpoint_auth_method="client_secret_basic")
    token = session.fetch_token(token_url, grant_type="client_credentials")
    assert verify(idp, token["access_token"])["sub"] == "svc-secret"


def test_authlib_private_key_jwt(idp):
    token_url = discovery(idp)["token_endpoint"]
    session = OAuth2Session(
        "svc-jwk", idp["jwk_pem"], token_endpoint_auth_method=PrivateKeyJWT(token_url)
    )
    token = session.fetch_token(token_url, grant_type="client_credentials")
    assert verify(idp, token["access_token"])["sub"] == "svc-jwk"


def test_authlib_password_and_refresh(idp):
    token_url = f"{idp['https']}/realms/dev/protocol/openid-connect/token"
    session = OAuth2Session(
        "svc-post", "p0st", token_endpoint_auth_method="client_secret_post", scope="openid orders.read"
    )
    token = session.fetch_token(token_url, username="alice", password="alice-pw")
    claims = verify(idp, token["access_token"])
    assert claims["realm_access"]["roles"] == ["orders-reader"]
    assert claims["scope"] == "orders.read"
    assert token["expires_in"] == 300
    first_refresh = token["refresh_token"]
    renewed = session.refresh_token(token_url, refresh_token=first_refresh)
    assert verify(idp, renewed["access_token"])["sub"] == "alice"
    assert renewed["refresh_token"] != first_refresh
    with pytest.raises(Exception) as err:  # rotating: the old refresh token is spent
        session.refresh_token(token_url, refresh_token=first_refresh)
    assert "invalid_grant" in str(err.value)


def _sts_claims(idp, token):
    def part(p):
        return json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))

    header, claims = part(token.split(".")[0]), part(token.split(".")[1])
    assert header["alg"] == "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512"
    jwks = requests.get(discovery(idp)["jwks_uri"], timeout=10).json()
    jwk = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    key = JsonWebKey.import_key(jwk)
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    signing_input, _, sig = token.rpartition(".")
    key.get_public_key().verify(
        base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)),
        signing_input.encode(),
        padding.PKCS1v15(),
        hashes.SHA512(),
    )
    return claims


def _connection_assertion(idp, audience):
    sub = "8d1c6f0e-sp@tenant-7"
    now = int(time.time())
    signed = JWTBearerGrant.sign(
        JsonWebKey.import_key(idp["assert_pem"], {"kid": "conn-key"}),
        issuer=sub, audience=audience, subject=sub, issued_at=now, expires_at=now + 3600,
        claims={"nbf": now}, header={"alg": "RS256", "kid": "conn-key"},
    )
    return signed.decode() if isinstance(signed, bytes) else signed


def test_authlib_jwt_bearer_form_and_refresh(idp):
    token_url = f"{idp['https']}/connect/token"
    session = OAuth2Session("svc-assert", token_endpoint_auth_method="none")
    token = session.fetch_token(
        token_url, grant_type=JWT_BEARER, assertion=_connection_assertion(idp, token_url),
        client_id="svc-assert",
    )
    claims = _sts_claims(idp, token["access_token"])
    assert claims["aud"] == "client"
    assert claims["http://schemas.microsoft.com/ws/2008/06/identity/claims/role"] == ["Reader"]
    assert claims["http://schemas.microsoft.com/identity/claims/tenantid"] == "tenant-7"
    renewed = session.refresh_token(token_url, refresh_token=token["refresh_token"])
    assert _sts_claims(idp, renewed["access_token"])["sub"] == "8d1c6f0e-sp@tenant-7"


def test_jwt_bearer_json_body_like_the_python_sample(idp):
    token_url = f"{idp['https']}/token"
    resp = requests.post(
        token_url,
        json={"grant_type": JWT_BEARER, "client_id": "svc-assert",
              "assertion": _connection_assertion(idp, token_url)},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    assert _sts_claims(idp, resp.json()["access_token"])["aud"] == "client"


def _curl(idp, *args):
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "30", "--cacert", idp["ca"], "-w", "\n%{http_code}", *args],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    body, _, status = out.rpartition("\n")
    return int(status), json.loads(body)


def test_curl_form_bodies(idp):
    url = f"{idp['https']}/tenant-a/oauth2/v2.0/token"
    status, body = _curl(idp, "-u", "svc-secret:s3cret", "-d", "grant_type=client_credentials",
                         "-d", "scope=api://orders/.default", url)
    assert status == 200, body
    verify(idp, body["access_token"])
    status, body = _curl(idp, "-d", "grant_type=password", "-d", "client_id=svc-post",
                         "-d", "client_secret=p0st", "-d", "username=alice", "-d", "password=alice-pw", url)
    assert status == 200 and "refresh_token" in body, body
    status, body = _curl(idp, "-u", "svc-secret:bad", "-d", "grant_type=client_credentials", url)
    assert (status, body["error"]) == (401, "invalid_client")
    status, body = _curl(idp, "-H", "Content-Type: application/json", "--data-binary",
                         json.dumps({"grant_type": JWT_BEARER, "client_id": "svc-assert",
                                     "assertion": _connection_assertion(idp, url)}), url)
    assert status == 200, body


# ---- on-behalf-of: SPA user token -> BFF exchanges it with MSAL -> gateway -> backend

DEFAULT_TENANT = "7d3c1b9a-0c5e-4f2a-9b61-2f6d8e4a1c00"  # the dev token server's default tenant-id


def recording_backend(seen):
    class Backend(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append({k.lower(): v for k, v in self.headers.items()})
            body = b'{"backend": "ok"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    return Backend


@pytest.fixture(scope="module")
def gateway(idp):
    """`portcullis run` in front of a recording backend: /downstream needs a token whose audience
    is api://downstream and forwards the user's identity. Keys come through the idp's plain-http
    Entra v2 discovery for the default tenant (its issuer is the one Entra v2 tokens carry)."""
    seen = []
    backend = Server(recording_backend(seen))
    discovery = f"{idp['http']}/{DEFAULT_TENANT}/v2.0/.well-known/openid-configuration"
    yaml_text = f"""
server:
  listen: "127.0.0.1:0"
  admin: "127.0.0.1:0"
policies:
  downstream:
    validate-jwt:
      openid-config: [{{ url: "{discovery}" }}]
      audiences: ["api://downstream"]
    forward-claims: {{ X-User: sub, X-Oid: oid, X-Name: name, X-Client: azp, X-Roles: roles, X-Scopes: scp }}
routes:
  - {{ name: downstream, match: {{ path-prefix: /downstream }}, upstream: "{backend.url}", policy: downstream }}
"""
    proc, proxy, _ = start_gateway(os.environ["PORTCULLIS_BIN"], idp["work"], yaml_text)
    try:
        yield {"proxy": proxy, "seen": seen}
    finally:
        stop(proc)
        backend.close()


def test_msal_on_behalf_of_through_the_gateway(idp, gateway):
    # The user signs in to the SPA (a public client) with the user flow the dev token server has,
    # resource-owner password (authlib; MSAL's own ROPC first probes Entra's user-realm endpoint on
    # port 443), and gets a token for the BFF's API.
    spa = OAuth2Session("spa", token_endpoint_auth_method="none", scope="api://bff/access_as_user")
    user = spa.fetch_token(discovery(idp)["token_endpoint"], username="alice", password="alice-pw")
    assert verify(idp, user["access_token"], aud="api://bff")["sub"] == "alice"

    # The BFF, a confidential client, exchanges it on behalf of alice for the downstream API,
    # with MSAL's own OBO call, unchanged.
    bff = msal.ConfidentialClientApplication(
        "bff", authority=idp["issuer"], client_credential="bff-secret",
        validate_authority=False, instance_discovery=False,
    )
    result = bff.acquire_token_on_behalf_of(user["access_token"], scopes=["api://downstream/.default"])
    assert "access_token" in result, result
    obo = result["access_token"]
    claims = verify(idp, obo, aud="api://downstream")
    assert (claims["sub"], claims["azp"], claims["roles"]) == ("alice", "bff", ["Data.Reader"])

    # Through the gateway: the downstream route takes the OBO token, not the user's BFF token.
    def call(token):
        return requests.get(f"{gateway['proxy']}/downstream/data",
                            headers={"Authorization": f"Bearer {token}"}, timeout=10)

    assert call(user["access_token"]).status_code == 401
    before = len(gateway["seen"])
    resp = call(obo)
    assert resp.status_code == 200, resp.text
    seen = gateway["seen"][before:]
    assert len(seen) == 1, seen
    headers = seen[0]
    assert headers["x-user"] == "alice" and headers["x-oid"] == "alice"
    assert headers["x-name"] == "Alice Example"
    assert headers["x-client"] == "bff"
    assert headers["x-roles"] == "Data.Reader"
    assert headers["x-scopes"] == "data.read"

    # A client the user's token was not issued to cannot exchange it: Entra's answer.
    other = msal.ConfidentialClientApplication(
        "svc-post", authority=idp["issuer"], client_credential="p0st",
        validate_authority=False, instance_discovery=False,
    )
    refused = other.acquire_token_on_behalf_of(user["access_token"], scopes=["api://downstream/.default"])
    assert refused.get("error") == "unauthorized_client", refused
