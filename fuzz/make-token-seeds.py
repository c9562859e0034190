#!/usr/bin/env python3
"""Writes fuzz/corpus/token_raw: HMAC-signed tokens that the fixture in fuzz/src/token.rs accepts
(the same secret, issuer, audience and clock), so token_raw mutates next to accepted tokens.
The first byte of each seed is run_raw's mode (0 Bearer header, 1 whole header, 2 query, 3 verify).
Check them with: PORTCULLIS_FUZZ_TRACE=1 <target dir>/token_raw fuzz/corpus/token_raw/<seed>"""
import base64, hashlib, hmac, json, pathlib

NOW = 1_700_000_000
ISS, AUD = "https://issuer.fuzz/", "api://fuzz"
SECRET = b"portcullis-fuzz-hmac-secret-0123456789abcdef"
OUT = pathlib.Path(__file__).parent / "corpus" / "token_raw"


def b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def compact(obj) -> str:
    return json.dumps(obj, separators=(",", ":"))


def sign(header: dict, claims: str) -> str:
    signing_input = b64(compact(header).encode()) + "." + b64(claims.encode())
    digest = {"HS384": hashlib.sha384, "HS512": hashlib.sha512}.get(header.get("alg"), hashlib.sha256)
    return signing_input + "." + b64(hmac.new(SECRET, signing_input.encode(), digest).digest())


basic = compact({"iss": ISS, "aud": AUD, "sub": "alice", "exp": NOW + 300, "nbf": NOW - 10, "iat": NOW - 10})
rules = compact({"iss": ISS, "aud": ["x", AUD], "sub": "bob", "exp": NOW + 300, "tid": "t0,t2",
                 "scp": "read write", "realm_access": {"roles": ["admin"]}, "azp": "app"})


def hs(alg, kid, claims):
    return sign({"alg": alg, "kid": kid, "typ": "JWT"}, claims)


SEEDS = {
    "bearer-hs256": (0, "", hs("HS256", "hs", basic)),
    "bearer-hs384": (0, "", hs("HS384", "hs", basic)),
    "bearer-hs512-nokid": (0, "", sign({"alg": "HS512"}, basic)),
    "bearer-xmldsig-hmac": (0, "", hs("http://www.w3.org/2001/04/xmldsig-more#hmac-sha256", "hs", basic)),
    "header-bearer": (1, "Bearer ", hs("HS256", "hs", basic)),
    "query": (2, "x=1&access_token=", hs("HS256", "hs", basic)),
    "verify-rules": (3, "", hs("HS256", "hs", rules)),
    "verify-unsigned": (3, "", b64(b'{"alg":"none"}') + "." + b64(rules.encode()) + "."),
    "rs256-kid": (0, "", hs("RS256", "rsa", basic)),
    "es256-kid": (0, "", hs("ES256", "ec", basic)),
}

for name, (mode, prefix, token) in SEEDS.items():
    (OUT / name).write_bytes(bytes([mode]) + prefix.encode() + token.encode())
