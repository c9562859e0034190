#!/usr/bin/env python3
"""Writes fuzz/corpus/jwe: compact JWEs that the fixture in fuzz/src/jwe.rs decrypts (its symmetric
keys, byte i of the n-byte key being n + i, and the throw-away RSA key src/jwe-fuzz-rsa.pem), each
around an HMAC-signed token the plain-token fixture accepts; one per alg/enc pair, plus one whose
plaintext is a bare claims set. The first byte of each seed is run_jwe's bit-flip selector.
Needs the `cryptography` package (pip or Debian's python3-cryptography)."""
import base64, hashlib, hmac, json, os, pathlib

from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import padding as asym
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_wrap

HERE = pathlib.Path(__file__).parent
OUT = HERE / "corpus" / "jwe"
NOW = 1_700_000_000
ISS, AUD = "https://issuer.fuzz/", "api://fuzz"
SECRET = b"portcullis-fuzz-hmac-secret-0123456789abcdef"
ENCS = {"A128GCM": 16, "A192GCM": 24, "A256GCM": 32, "A128CBC-HS256": 32, "A192CBC-HS384": 48,
        "A256CBC-HS512": 64}
RSA = serialization.load_pem_private_key((HERE / "src" / "jwe-fuzz-rsa.pem").read_bytes(), None)


def b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def compact(obj) -> str:
    return json.dumps(obj, separators=(",", ":"))


def key(n: int) -> bytes:
    return bytes((n + i) % 256 for i in range(n))


def signed() -> bytes:
    claims = compact({"iss": ISS, "aud": AUD, "sub": "alice", "exp": NOW + 300, "nbf": NOW - 10,
                      "iat": NOW - 10})
    signing_input = b64(compact({"alg": "HS256", "kid": "hs"}).encode()) + "." + b64(claims.encode())
    return (signing_input + "." + b64(hmac.new(SECRET, signing_input.encode(), hashlib.sha256).digest())).encode()


def seal(enc: str, cek: bytes, aad: bytes, plaintext: bytes):
    if enc.endswith("GCM"):
        iv = os.urandom(12)
        out = AESGCM(cek).encrypt(iv, plaintext, aad)
        return iv, out[:-16], out[-16:]
    half = len(cek) // 2
    mac_key, enc_key = cek[:half], cek[half:]
    iv = os.urandom(16)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(enc_key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    digest = {16: hashlib.sha256, 24: hashlib.sha384, 32: hashlib.sha512}[half]
    mac = hmac.new(mac_key, aad + iv + ciphertext + (len(aad) * 8).to_bytes(8, "big"), digest).digest()
    return iv, ciphertext, mac[:half]


def jwe(alg: str, enc: str, plaintext: bytes, cty=True) -> str:
    header = {"alg": alg, "enc": enc}
    if cty:
        header["cty"] = "JWT"
    n = ENCS[enc]
    if alg == "dir":
        cek, wrapped = key(n), b""
    else:
        cek = os.urandom(n)
        if alg.endswith("KW"):
            wrapped = aes_key_wrap(key(int(alg[1:4]) // 8), cek)
        else:
            h = hashes.SHA1() if alg == "RSA-OAEP" else hashes.SHA256()
            wrapped = RSA.public_key().encrypt(cek, asym.OAEP(asym.MGF1(h), h, None))
    aad = b64(compact(header).encode()).encode()
    iv, ciphertext, tag = seal(enc, cek, aad, plaintext)
    return ".".join([aad.decode(), b64(wrapped), b64(iv), b64(ciphertext), b64(tag)])


OUT.mkdir(parents=True, exist_ok=True)
count = 0
for enc in ENCS:
    for alg in ["dir", "A128KW", "A192KW", "A256KW", "RSA-OAEP", "RSA-OAEP-256"]:
        (OUT / f"{alg}-{enc}").write_bytes(bytes([count % 256]) + jwe(alg, enc, signed()).encode())
        count += 1
claims = compact({"iss": ISS, "aud": AUD, "sub": "eve", "exp": NOW + 300}).encode()
(OUT / "bare-claims").write_bytes(b"\x07" + jwe("A256KW", "A256GCM", claims, cty=False).encode())
print(f"wrote {count + 1} seeds to {OUT}")
