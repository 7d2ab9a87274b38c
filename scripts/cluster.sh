#!/usr/bin/env bash
# A three-instance ketenportaal cluster on loopback (docs/cluster.md):
#
#   bash scripts/cluster.sh
#
# starts a throwaway PostgreSQL and Redis, the demo's fixture agencies (one set, shared), three
# `ketenportaal demo` instances on one store (gw1..gw3 on ports 8081..8083) and HAProxy in front
# on 127.0.0.1:8080, prints where everything is with ready tokens, and stops it all on Ctrl-C.
# Needs Debian's packages: apt-get install postgresql redis-server haproxy.
#
# Settings (environment): FRONT_PORT (8080), FIRST_PORT (8081), CLUSTER_DIR (target/cluster,
# wiped at start), KETENPORTAAL_DEMO_SECRET (random; the instances share it: same secret, same
# keys, one cluster), KETENPORTAAL_BIN (a built binary; default: build in release).
set -euo pipefail
cd "$(dirname "$0")/.."

FRONT_PORT=${FRONT_PORT:-8080}
FIRST_PORT=${FIRST_PORT:-8081}
DIR=${CLUSTER_DIR:-target/cluster}

pg_bin() {
  if command -v "$1" >/dev/null 2>&1; then command -v "$1"; return; fi
  ls /usr/lib/postgresql/*/bin/"$1" 2>/dev/null | sort -V | tail -1
}
INITDB=$(pg_bin initdb)
POSTGRES=$(pg_bin postgres)
for need in "$INITDB" "$POSTGRES" "$(command -v redis-server || true)" "$(command -v haproxy || true)"; do
  if [ -z "$need" ]; then
    echo "missing: install Debian's postgresql, redis-server and haproxy (apt-get install postgresql redis-server haproxy)" >&2
    exit 1
  fi
done

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

if [ -n "${KETENPORTAAL_BIN:-}" ]; then
  BIN=$KETENPORTAAL_BIN
else
  cargo build --release --quiet
  BIN=target/release/ketenportaal
fi

rm -rf "$DIR"
mkdir -p "$DIR/pg"
DIR=$(cd "$DIR" && pwd)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

# PostgreSQL: initdb refuses to run as root; then the server runs as `postgres`.
AS=()
if [ "$(id -u)" -eq 0 ]; then
  chown -R postgres "$DIR/pg"
  AS=(runuser -u postgres --)
fi
PG_PORT=$(free_port)
"${AS[@]}" "$INITDB" -D "$DIR/pg/data" -A trust -U postgres >"$DIR/initdb.log" 2>&1
"${AS[@]}" "$POSTGRES" -D "$DIR/pg/data" -p "$PG_PORT" -k "$DIR/pg" -c listen_addresses=127.0.0.1 \
  -c max_connections=200 >"$DIR/postgres.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
  if "${AS[@]}" psql -h "$DIR/pg" -p "$PG_PORT" -U postgres -c 'select 1' >/dev/null 2>&1; then break; fi
  sleep 0.1
done
"${AS[@]}" psql -h "$DIR/pg" -p "$PG_PORT" -U postgres -qc 'CREATE DATABASE ketenportaal' >/dev/null
DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/ketenportaal"

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$DIR" >"$DIR/redis.log" 2>&1 &
PIDS+=($!)

AGENCIES_PORT=$(free_port)
"$BIN" agencies --listen "127.0.0.1:$AGENCIES_PORT" >"$DIR/agencies.log" 2>&1 &
PIDS+=($!)

export KETENPORTAAL_DEMO_SECRET=${KETENPORTAAL_DEMO_SECRET:-$(python3 -c 'import secrets; print(secrets.token_hex(32))')}
export KETENPORTAAL_AGENCIES="http://127.0.0.1:$AGENCIES_PORT"
export KETENPORTAAL_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
SERVERS=""
for i in 1 2 3; do
  port=$((FIRST_PORT + i - 1))
  KETENPORTAAL_INSTANCE="gw$i" "$BIN" demo --listen "127.0.0.1:$port" --store "$DATABASE_URL" >"$DIR/gw$i.log" 2>&1 &
  PIDS+=($!)
  SERVERS+="    server gw$i 127.0.0.1:$port check"$'\n'
done
for i in 1 2 3; do
  port=$((FIRST_PORT + i - 1))
  for _ in $(seq 300); do
    if curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then break; fi
    sleep 0.1
  done
done

python3 - "$FRONT_PORT" "$SERVERS" >"$DIR/haproxy.cfg" <<'EOF'
import sys
front, servers = sys.argv[1], sys.argv[2]
text = open("config/cluster/haproxy.cfg").read()
print(text.replace("@FRONT@", f"127.0.0.1:{front}").replace("@SERVERS@", servers.rstrip("\n")))
EOF
haproxy -db -f "$DIR/haproxy.cfg" >"$DIR/haproxy.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
  if curl -fs "http://127.0.0.1:$FRONT_PORT/readyz" >/dev/null 2>&1; then break; fi
  sleep 0.1
done

cat <<EOF

ketenportaal cluster on loopback (logs and data in $DIR)
  front (HAProxy)   http://127.0.0.1:$FRONT_PORT
  instances         gw1 http://127.0.0.1:$FIRST_PORT  gw2 http://127.0.0.1:$((FIRST_PORT + 1))  gw3 http://127.0.0.1:$((FIRST_PORT + 2))
  PostgreSQL        $DATABASE_URL
  Redis             $KETENPORTAAL_REDIS_URL
  agencies          $KETENPORTAAL_AGENCIES  (GET /_intake: the applications they received)
  secret            KETENPORTAAL_DEMO_SECRET=$KETENPORTAAL_DEMO_SECRET

Tokens and curl lines, through HAProxy (from gw1's banner; the admin token opens
/admin/status on every instance):
EOF
sed -n '/curl /p' "$DIR/gw1.log" | sed "s#127.0.0.1:$FIRST_PORT#127.0.0.1:$FRONT_PORT#g" | head -20
cat <<EOF

Try: kill -9 one instance (pkill -9 -f 'ketenportaal demo --listen 127.0.0.1:$((FIRST_PORT + 1))'),
and watch HAProxy send its requests to the others; GET /admin/status on any instance lists
every instance with its config version. Ctrl-C stops everything.
EOF
wait
