"""What the end-to-end Python tests share: servers on free loopback ports, bounded waits, and
`portcullis idp` + `portcullis run` started from a config and stopped afterwards. Everything is
real and local; nothing here sleeps for a fixed time except between polls of a bounded wait."""
import json
import os
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from http.server import ThreadingHTTPServer

TIMEOUT = 10  # seconds, for every wait below


def wait_for(what, check, timeout=TIMEOUT):
    """Poll `check` until it returns a truthy value, for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
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


class Processes:
    """Children started in `work` (a temp dir) and stopped, in reverse order, by `stop`."""

    def __init__(self, work):
        self.bin = os.environ["PORTCULLIS_BIN"]
        self.work = work
        self.procs = []

    def idp(self, yaml):
        """`portcullis idp` with `yaml`; its URLs (`discovery`, `token`, ...) by name."""
        with open(os.path.join(self.work, "idp.yaml"), "w") as f:
            f.write(yaml)
        idp = subprocess.Popen(
            [self.bin, "idp", "-c", "idp.yaml"], cwd=self.work, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True,
        )
        self.procs.append(idp)
        lines = read_lines_until(idp, "token:", "portcullis idp")
        return {k.strip(): v.strip() for k, _, v in (l.partition(":") for l in lines)}

    def gateway(self, yaml):
        """`portcullis run` with `yaml`, ready (keys loaded): its proxy URLs (config order) and
        admin URL."""
        with open(os.path.join(self.work, "gateway.yaml"), "w") as f:
            f.write(yaml)
        log_path = os.path.join(self.work, "gateway.log")
        with open(log_path, "w") as log:
            gw = subprocess.Popen(
                [self.bin, "run", "-c", "gateway.yaml"], cwd=self.work, stdout=subprocess.PIPE,
                stderr=log, text=True,
            )
        self.procs.append(gw)
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
            with open(log_path) as log:
                raise AssertionError(f"gateway not ready; its log:\n{log.read()}") from None
        return proxies, admin

    def stop(self):
        for p in reversed(self.procs):
            p.terminate()
            try:
                p.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                p.kill()


def client_credentials_token(token_url, client, secret, scope="api://orders/.default"):
    """An access token from the token endpoint (client credentials, secret in the form)."""
    form = urllib.parse.urlencode({
        "grant_type": "client_credentials", "client_id": client,
        "client_secret": secret, "scope": scope,
    }).encode()
    with urllib.request.urlopen(token_url, data=form, timeout=TIMEOUT) as r:
        return json.load(r)["access_token"]
