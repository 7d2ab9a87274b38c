#!/usr/bin/env bash
# Property-based API fuzzing with schemathesis against /openapi.json, with valid credentials:
# a citizen token, an employee token, a partner key and the admin token. Fails on any 5xx.
#
#   pip install schemathesis   # 4.x
#   bash tests/schemathesis.sh [EXAMPLES_PER_OPERATION]
#
# Starts `ketenportaal demo` on a loopback port with its own store, and stops it at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
examples="${1:-100}"
port=18181
url="http://127.0.0.1:$port"
export KETENPORTAAL_DEMO_SECRET="schemathesis-secret-0123456789abcdef-0123456789"
work=$(mktemp -d)
cargo build --release --quiet
./target/release/ketenportaal demo --listen "127.0.0.1:$port" --store "$work/store.sqlite" \
  >"$work/demo.out" 2>"$work/demo.err" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do curl -sf "$url/healthz" >/dev/null && break; sleep 0.1; done

bin=./target/release/ketenportaal
citizen=$($bin token --citizen 999993653)
employee=$($bin token --employee w.jansen --role uwv-werkcoach --role auditor --org uwv)
key=$(printf '%s' "$KETENPORTAAL_DEMO_SECRET:uwv" | sha256sum | cut -d' ' -f1)
admin=$(printf '%s' "$KETENPORTAAL_DEMO_SECRET:admin" | sha256sum | cut -d' ' -f1)

run() {
  local name=$1; shift
  echo "== $name"
  schemathesis run "$url/openapi.json" --checks not_a_server_error -n "$examples" \
    --request-timeout 10 "$@" --report ndjson --report-ndjson-path "$work/$name.ndjson" \
    | tail -n 15
}
run citizen -H "Authorization: Bearer $citizen"
run employee -H "Authorization: Bearer $employee" -H "X-Purpose: re-integratie"
run partner -H "X-Api-Key: $key"
run admin -H "Authorization: Bearer $admin"
echo "== 5xx in the gateway log:"
grep -c '"status":5' "$work/demo.err" || true
