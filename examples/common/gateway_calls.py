"""What every example client does once it holds a token: call through the gateway and check what
came back (the backend's echo of the forwarded identity headers, or the gateway's APIM-style JSON
failure). Shared by examples/*/client.py; each client keeps its platform's token flow to itself.

Each check prints one line (`ok ...`) and raises ExampleFailure with the whole response on a
mismatch, so a failing run says exactly which call broke.
"""
import argparse
import json
import os

import requests

# APIM's validate-jwt answer when the Authorization header is missing or invalid (see flows.md).
APIM_MESSAGE = "Unauthorized. Access token is missing or invalid."
TIMEOUT = 10


class ExampleFailure(AssertionError):
    """A call through the gateway did not answer what the platform expects."""


def _describe(resp):
    return f"{resp.request.method} {resp.url} -> {resp.status_code} {resp.headers} {resp.text[:600]}"


def call(gateway, method, path, token=None):
    """One request through the gateway; `token` (when given) goes in `Authorization: Bearer`."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    # A forged identity header from the client: the gateway must drop it.
    headers["X-User-Id"] = "forged-by-client"
    return requests.request(method, gateway.rstrip("/") + path, headers=headers, timeout=TIMEOUT)


def expect_forwarded(resp, status, headers):
    """The backend answered `status` and saw each header of `headers` with exactly that value."""
    if resp.status_code != status:
        raise ExampleFailure(f"expected {status}: {_describe(resp)}")
    seen = resp.json().get("headers", {})
    for name, want in headers.items():
        got = seen.get(name.lower())
        if got != want:
            raise ExampleFailure(f"backend saw {name}: {got!r}, expected {want!r}: {_describe(resp)}")
    if seen.get("x-user-id") == "forged-by-client":
        raise ExampleFailure(f"a client-sent identity header reached the backend: {_describe(resp)}")
    shown = ", ".join(f"{k}={v}" for k, v in headers.items())
    print(f"ok   {resp.request.method} {resp.request.path_url} -> {status}; backend saw {shown}")


def expect_failure(resp, status, error=None, message=APIM_MESSAGE):
    """The gateway refused with APIM's JSON body `{"statusCode", "message"}` and an RFC 6750
    challenge (`error` is its `error=` value; None when no token was sent)."""
    body = {}
    if resp.headers.get("Content-Type", "").startswith("application/json"):
        body = resp.json()
    want = {"statusCode": status, "message": message}
    if resp.status_code != status or body != want:
        raise ExampleFailure(f"expected {status} {json.dumps(want)}: {_describe(resp)}")
    challenge = "Bearer" if error is None else f'Bearer error="{error}"'
    if resp.headers.get("WWW-Authenticate") != challenge:
        raise ExampleFailure(f"expected WWW-Authenticate: {challenge}: {_describe(resp)}")
    print(f"ok   {resp.request.method} {resp.request.path_url} -> {status} {json.dumps(body)}")


def expect_token_error(resp, status, error):
    """The token server refused with an RFC 6749 error body."""
    body = resp.json() if resp.headers.get("Content-Type", "").startswith("application/json") else {}
    if resp.status_code != status or body.get("error") != error:
        raise ExampleFailure(f"expected {status} error={error}: {_describe(resp)}")
    print(f"ok   token endpoint -> {status} error={error}")


def token_from(resp):
    """The access-token response as a dict, after checking it is one."""
    if resp.status_code != 200 or "access_token" not in resp.text:
        raise ExampleFailure(f"token request failed: {_describe(resp)}")
    return resp.json()


def example_args(doc, client_file, idp_help="token server origin"):
    """The command line every example client takes: --idp, --gateway (defaults: the fixed ports
    of the examples' configs, or IDP_URL / GATEWAY_URL), --dir (the folder holding idp.yaml; key
    material goes to DIR/.local) and --prepare (only write that key material)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--idp", default=os.environ.get("IDP_URL", "http://127.0.0.1:8081"), help=idp_help)
    parser.add_argument("--gateway", default=os.environ.get("GATEWAY_URL", "http://127.0.0.1:8080"))
    parser.add_argument("--dir", default=os.path.dirname(os.path.abspath(client_file)),
                        help="folder holding idp.yaml (key material goes to DIR/.local)")
    parser.add_argument("--prepare", action="store_true", help="only write the key material idp.yaml registers")
    args = parser.parse_args()
    args.idp = args.idp.rstrip("/")
    args.local = os.path.join(args.dir, ".local")
    return args
