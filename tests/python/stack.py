"""Pieces shared by the Python tests that run the gateway itself: a thread-served loopback HTTP
server (backends, pages), bounded waits, and `portcullis run` started from a gateway.yaml and
waited on until /readyz says its keys are loaded. Everything on free loopback ports."""
import json
import os
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from http.server import ThreadingHTTPServer

TIMEOUT = 10  # seconds, for every wait below


def wait_for(what, check):
    """Poll `check` until it returns a truthy value, for at most TIMEOUT seconds."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {TIMEOUT}s waiting for {what}")
        time.sleep(0.02)


class Server:
    """A ThreadingHTTPServer on a free loopback port, in a thread."""

    def __init__(self, handler):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def read_lines_until(proc, last_key, what):
    """Read `key: value` or `k=v` lines from a child's stdout until `last_key` (bounded)."""
    info, done = {}, threading.Event()

    def reader():
        for line in proc.stdout:
            info.setdefault("lines", []).append(line)
            if line.startswith(last_key):
                break
        done.set()

    threading.Thread(target=reader, daemon=True).start()
    if not done.wait(TIMEOUT) or not any(l.startswith(last_key) for l in info.get("lines", [])):
        proc.kill()
        raise AssertionError(f"{what} did not start: {info.get('lines')}")
    return info["lines"]


def get(url):
    with urllib.request.urlopen(url, timeout=TIMEOUT) as r:
        return r.status, r.read().decode()


def start_idp(bin_, work, yaml_text):
    """Writes work/idp.yaml and runs `portcullis idp` on it. Returns (process, its URLs by name:
    `discovery`, `token`, ...); the caller terminates it."""
    with open(os.path.join(work, "idp.yaml"), "w") as f:
        f.write(yaml_text)
    idp = subprocess.Popen(
        [bin_, "idp", "-c", "idp.yaml"], cwd=work, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True,
    )
    lines = read_lines_until(idp, "token:", "portcullis idp")
    return idp, {k.strip(): v.strip() for k, _, v in (l.partition(":") for l in lines)}


def client_credentials_token(token_url, client, secret, scope="api://orders/.default"):
    """An access token from a token endpoint: client credentials, the secret in the form."""
    form = urllib.parse.urlencode({
        "grant_type": "client_credentials", "client_id": client,
        "client_secret": secret, "scope": scope,
    }).encode()
    with urllib.request.urlopen(token_url, data=form, timeout=TIMEOUT) as r:
        return json.load(r)["access_token"]


def start_gateway(bin_, work, yaml_text):
    """Writes work/gateway.yaml, runs `portcullis run` on it (log in work/gateway.log) and waits
    for /readyz. Returns (process, first proxy URL, admin URL); the caller terminates it."""
    gw, proxies, admin = start_gateway_listeners(bin_, work, yaml_text)
    return gw, proxies[0], admin


def start_gateway_listeners(bin_, work, yaml_text):
    """As `start_gateway`, with every proxy listener's URL, in config order."""
    with open(os.path.join(work, "gateway.yaml"), "w") as f:
        f.write(yaml_text)
    with open(os.path.join(work, "gateway.log"), "w") as log:
        gw = subprocess.Popen(
            [bin_, "run", "-c", "gateway.yaml"], cwd=work, stdout=subprocess.PIPE,
            stderr=log, text=True,
        )
    banner = read_lines_until(gw, "", "portcullis run")[0]
    fields = dict(w.split("=", 1) for w in banner.split() if "=" in w)
    proxies, admin = fields["proxy"].split(","), fields["admin"]

    def ready():
        try:
            return get(f"{admin}/readyz")[0] == 200
        except OSError:
            return False

    try:
        wait_for("the gateway's /readyz (keys loaded)", ready)
    except AssertionError:
        gw.kill()
        with open(os.path.join(work, "gateway.log")) as log:
            raise AssertionError(f"gateway not ready; its log:\n{log.read()}") from None
    return gw, proxies, admin


def stop(proc):
    """Terminate a child, killing it when it does not exit within TIMEOUT."""
    proc.terminate()
    try:
        proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=TIMEOUT)


def start_demo(bin_, work):
    """`portcullis demo` on free ports (state in work/demo). Returns (process, the arguments of
    the loadtest line it prints, without the leading `portcullis loadtest`, admin URL), once
    /readyz answers 200; the caller stops it."""
    log_path = os.path.join(work, "demo.log")
    with open(log_path, "w") as log:
        demo = subprocess.Popen(
            [bin_, "demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
             "--idp-listen", "127.0.0.1:0", "--backend-listen", "127.0.0.1:0",
             "--state-dir", os.path.join(work, "demo")],
            stdout=log, stderr=subprocess.STDOUT, text=True,
        )

    def banner():
        with open(log_path) as f:
            text = f.read()
        if demo.poll() is not None:
            raise AssertionError(f"portcullis demo exited early:\n{text}")
        lines = text.splitlines()
        loadtest = [l for l in lines if l.startswith("portcullis loadtest ")]
        admin = [l.split()[1] for l in lines if l.startswith("admin ") and len(l.split()) > 1]
        return loadtest and admin and (loadtest[0], admin[0])

    try:
        line, admin = wait_for("portcullis demo's banner", banner)
        wait_for("the demo's /readyz", lambda: _ready(admin))
    except AssertionError:
        stop(demo)
        raise
    return demo, line.split()[2:], admin


def _ready(admin):
    try:
        return get(f"{admin}/readyz")[0] == 200
    except OSError:
        return False
