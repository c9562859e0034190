#!/usr/bin/env bash
# Real client libraries against `portcullis idp`: MSAL (certificate and secret, https; on-behalf-of
# through `portcullis run`), authlib (client_secret, private_key_jwt, jwt-bearer form + JSON,
# password + refresh) and curl.
# Usage: tests/python/run.sh <path-to-portcullis-binary>
# Env: PORTCULLIS_PY_VENV reuses a virtualenv (default: a fresh one under a temp dir);
# PORTCULLIS_PY_REQUIREMENTS and PORTCULLIS_PY_TESTS pick another requirements file and test files
# (scripts/browser-tests: requirements-browser.txt, test_browser_cors.py test_loadtest_report.py).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:-${PORTCULLIS_BIN:-}}"
if [[ -z "$bin" || ! -x "$bin" ]]; then
  echo "usage: $0 <path-to-portcullis-binary>" >&2
  exit 2
fi
[[ $# -gt 0 ]] && shift
export PORTCULLIS_BIN="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
venv="${PORTCULLIS_PY_VENV:-$work/venv}"
if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv"
fi
# Exact versions (requirements.txt, generated from requirements.in): a client-library release
# cannot change CI without a change here.
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/${PORTCULLIS_PY_REQUIREMENTS:-requirements.txt}"
cd "$here"
# A generous backstop over the whole run (it takes seconds): a hang fails instead of stalling CI.
# PORTCULLIS_PY_TESTS may name several files, separated by spaces.
read -r -a tests <<<"${PORTCULLIS_PY_TESTS:-test_clients.py}"
timeout "${PORTCULLIS_PY_TIMEOUT:-600}" "$venv/bin/python" -m pytest -v -p no:cacheprovider "$@" "${tests[@]}"
