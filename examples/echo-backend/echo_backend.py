#!/usr/bin/env python3
"""A sample backend for the examples: answers every request with JSON describing what it received
(method, path, query, headers, body size), so a client can see the identity headers the gateway
forwarded. POST answers 202 Accepted (a long-running command, as the banking platform's backends
do); every other method answers 200.

Standard library only, so it runs in a bare `python:3` container (examples/compose.yaml) and from
scripts/run-example-clients without a virtualenv.

    python3 examples/echo-backend/echo_backend.py --listen 127.0.0.1:3000

Once bound it prints one stdout line, `listening http://HOST:PORT` (port 0 picks a free port).
"""
import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


class EchoHandler(BaseHTTPRequestHandler):
    """Answers with the request it saw."""

    protocol_version = "HTTP/1.1"
    server_version = "portcullis-example-echo"

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        status = 202 if self.command == "POST" else 200
        reply = json.dumps(
            {
                "status": status,
                "method": self.command,
                "path": url.path,
                "query": url.query,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body_bytes": len(body),
            },
            indent=2,
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _answer

    def log_message(self, fmt, *args):
        # One line per request on stderr, without headers (they carry tokens).
        sys.stderr.write("echo-backend: %s\n" % (fmt % args))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:3000", help="HOST:PORT (port 0: any free port)")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), EchoHandler)
    bound_host, bound_port = server.server_address[:2]
    print(f"listening http://{bound_host}:{bound_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
