#!/usr/bin/env bash
# Property-based API testing with schemathesis against the real `ketenportaal demo`, with every
# check (`--checks all`): no 5xx, every answer as documented in /openapi.json (status, content
# type, headers, body schema), schema-valid requests accepted, invalid ones refused, secured
# routes refusing requests without credentials, created resources readable, deleted ones gone.
# Exits non-zero on any failure. `.ci/run` runs it after the test suite.
#
#   bash tests/schemathesis.sh     # ST_MAX_EXAMPLES (400) per operation, ST_SEED (1); about 90 s
#
# Uses the debug binary the test suite built (builds it when missing) and schemathesis
# $ST_VERSION: the one on PATH when it is that version, else one installed with pip into
# target/schemathesis-venv. The demo gets a fixed secret, a temporary store and a free port; the
# hooks (tests/schemathesis/hooks.py) give each route the credentials of the caller it is for,
# and tests/schemathesis/schemathesis.toml says where a 422 is an accepted answer.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

ST_VERSION=4.32.5
examples="${ST_MAX_EXAMPLES:-400}"
seed="${ST_SEED:-1}"
bin=target/debug/ketenportaal

[ -x "$bin" ] || cargo build --quiet

st=""
if command -v st >/dev/null 2>&1 && [ "$(st --version 2>/dev/null)" = "st, version $ST_VERSION" ]; then
  st=st
else
  venv=target/schemathesis-venv
  if ! [ -x "$venv/bin/st" ] || [ "$("$venv/bin/st" --version 2>/dev/null)" != "st, version $ST_VERSION" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$ST_VERSION"
  fi
  st="$root/$venv/bin/st"
fi

work=$(mktemp -d)
demo_pid=""
cleanup() {
  if [ -n "$demo_pid" ]; then
    kill "$demo_pid" 2>/dev/null || true
    wait "$demo_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# A fixed secret: the tokens, partner keys and admin token below derive from it.
export KETENPORTAAL_DEMO_SECRET="schemathesis-secret-0123456789abcdef-01234"
"$bin" demo --listen 127.0.0.1:0 --store "$work/store.sqlite" >"$work/demo.out" 2>"$work/demo.log" &
demo_pid=$!
# The demo prints its URL once it listens (schemathesis then waits for the document itself).
url=""
for _ in $(seq 1 300); do
  url=$(sed -n 's/^  gateway *\(http[^ ]*\).*/\1/p' "$work/demo.out")
  [ -n "$url" ] && break
  if ! kill -0 "$demo_pid" 2>/dev/null; then
    cat "$work/demo.log" >&2
    echo "the demo did not start" >&2
    exit 1
  fi
  sleep 0.1
done
[ -n "$url" ] || { echo "the demo did not start within 30 s" >&2; exit 1; }

key() { printf '%s' "$KETENPORTAAL_DEMO_SECRET:$1" | sha256sum | cut -d' ' -f1; }
export ST_CITIZEN ST_EMPLOYEE ST_PARTNER ST_ADMIN
ST_CITIZEN=$("$bin" token --citizen 999993653 --ttl 3600)
ST_EMPLOYEE=$("$bin" token --employee w.jansen --role uwv-werkcoach --role auditor --org uwv --ttl 3600)
ST_PARTNER=$(key uwv)
ST_ADMIN=$(key admin)

echo "schemathesis $ST_VERSION against $url (at most $examples examples per operation, seed $seed)"
status=0
# Run from the temporary folder, so nothing lands in the checkout.
(
  cd "$work"
  SCHEMATHESIS_HOOKS=hooks PYTHONPATH="$root/tests/schemathesis" timeout 600 \
    "$st" --no-color --config-file "$root/tests/schemathesis/schemathesis.toml" run "$url/openapi.json" \
    --checks all --max-examples "$examples" --seed "$seed" --workers 2 \
    --generation-database none --request-timeout 10 --wait-for-schema 30 \
    --report junit --report-junit-path "$root/target/schemathesis-junit.xml"
) || status=$?

if ! kill -0 "$demo_pid" 2>/dev/null; then
  echo "the demo died during the run:" >&2
  tail -n 50 "$work/demo.log" >&2
  status=1
fi
exit "$status"
