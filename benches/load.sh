#!/usr/bin/env bash
# End-to-end load benchmark of ketenportaal (issue "critical-path speed", docs/design.md, "Bars").
#
#   bash benches/load.sh                 # the full run, about 14 minutes after the build
#   bash benches/load.sh --quick         # 3 s runs, 1 round, 20 000 subjects: a smoke test
#   bash benches/load.sh --soak 600      # also soak the memory scenario for 600 s
#   ONLY=a bash benches/load.sh          # only scenario (a) (and (a')); ONLY=b, ..., ONLY=g, ONLY=ab, ...
#
# Settings (environment): SECS (10) seconds per measured run, ROUNDS (3) rounds for (a), (d)
# and (f) and B_ROUNDS (= ROUNDS) for (b), CONNS (64) connections for (a), (d) and (f), RATE
# (200) requests/s and DELAY_MS (20) source delay for (b), SUBJECTS (100000) and CACHE_MIB (64)
# for (c), APPLICATIONS (1000) for (d), BURST (60) citizens at once and BURST_ROUNDS (5) for
# (e); LOAD_BIN=path skips the build and uses that binary (for repeated runs).
#
# It builds the `load` bench in release, then measures side by side:
#   (a) cached GET /v1/me/dossier: the real gateway (demo config, fixture agencies, cache warm,
#       TTL 1h, durable SQLite audit store as `serve` runs it) against bare hyper answering the
#       identical bytes, plus the same gateway with log-only audit to show what durability
#       costs; closed loop, order rotating per round, medians, the ratio gateway/bare
#       (bar: >= 0.5), plus server CPU and allocations per request from each server's control
#       port;
#   (a') the same cached dossier taken apart in one process (no sockets): µs and allocations
#       per call of the token check, cache hits, merge + view filter, serialisation, the
#       whole handler;
#   (b) uncached fan-out to 3 and to 10 REST sources that answer after 20 ms; open loop at a
#       fixed rate, latency from the scheduled time (bar: p99 <= slowest source + 1 ms,
#       issue #3); with the durable audit store and with log-only audit. References: one
#       source called directly, and all N called at once by the load generator, timed until
#       the slowest answers ("the slowest source", what the bar is measured against);
#   (c) memory: SUBJECTS distinct citizens through the API into a cache of CACHE_MIB; RSS before
#       and after (3 s after, once freed pages are given back), the caches' entries and
#       weighted bytes; the same fill into a 1 MiB cache
#       first, so the RSS the caches take is told apart from what grows whatever the budget;
#       the same for the live heap (mimalloc's size of each block held, counted in the
#       gateway's allocator), against the caches' weighed bytes; optionally a soak;
#   (d) the cached dossier of (a) for a citizen with APPLICATIONS applications in the store (the
#       `zaken` section the gateway adds from it) beside the same citizen with none, and bare
#       hyper; as (a), without the wrk cross-check.
#   (e) bursts: BURST distinct citizens read at once, BURST_ROUNDS times, against a source whose
#       answers are just under 4 MiB (mostly an unmapped attachment); the gateway's peak RSS per
#       round and its RSS after IDLE_SECS (5) idle; with the default in-flight budget (64 MiB)
#       and with one the burst never reaches (1 GiB), side by side.
#   (f) saturation ("b'"): the uncached 3-way fan-out of (b) at full load: closed loop, CONNS
#       connections, the 3 REST sources answering at once (delay 0), the gateway's cache off
#       (every request makes 3 source calls; checked on the answers' `sources` and on the
#       gateway's cache counters: 0 hit, 0 joined, 0 stale); side by side in the same rounds,
#       order rotating, medians: the gateway with its durable SQLite audit store, the gateway
#       with log-only audit, nginx + njs doing the same fan-out and merge (benches/nginx), and
#       a naive axum + reqwest fan-out (one shared client, the 3 calls joined, the answers
#       merged; no auth, no audit). Per server: req/s, p50/p99, server CPU µs per request, and
#       the source calls and new source connections per request (from the sources' counters);
#       ratios gateway/nginx+njs throughput (bar: >= 2), gateway/naive axum, and durable/
#       log-only CPU per request.
#   (g) the cached dossier of (a) with the durable store on PostgreSQL (a throwaway server,
#       Debian's `postgresql`, fsync on, on the generator's core as a database on another
#       machine would be off the gateway's) beside the same gateway on SQLite, and bare hyper:
#       req/s, the gateway's CPU per request, and PostgreSQL's own CPU per request (postmaster
#       and backends). Skipped when PostgreSQL is not installed.
# Servers run pinned to core 0, the load generator (and the sources of (b), (c) and (f)) to core 1,
# when `taskset` exists and there are two cores. Everything listens on 127.0.0.1 only, every
# wait is bounded, and every process started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${SECS:-10}
ROUNDS=${ROUNDS:-3}
B_ROUNDS=${B_ROUNDS:-$ROUNDS}
CONNS=${CONNS:-64}
RATE=${RATE:-200}
DELAY_MS=${DELAY_MS:-20}
SUBJECTS=${SUBJECTS:-100000}
CACHE_MIB=${CACHE_MIB:-64}
BURST=${BURST:-60}
BURST_ROUNDS=${BURST_ROUNDS:-5}
IDLE_SECS=${IDLE_SECS:-5}
SOAK=0
APPLICATIONS=${APPLICATIONS:-1000}
ONLY=${ONLY:-abcdefg}
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) SECS=3; ROUNDS=1; B_ROUNDS=1; SUBJECTS=20000; BURST_ROUNDS=2; shift ;;
        --soak) SOAK=${2:?--soak needs seconds}; shift 2 ;;
        -h|--help) sed -n '2,59p' "$0"; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
done

if [ -n "${LOAD_BIN:-}" ]; then
    BIN=$LOAD_BIN
    echo "== using the prebuilt $BIN (LOAD_BIN)"
else
    echo "== building the load bench (release)"
    BUILD_LOG=$(mktemp)
    if ! cargo bench --bench load --no-run --message-format=json >"$BUILD_LOG"; then
        rm -f "$BUILD_LOG"
        echo "build failed" >&2
        exit 1
    fi
    BIN=$(grep -o '"executable":"[^"]*/load-[0-9a-f]*"' "$BUILD_LOG" | tail -n1 | cut -d'"' -f4)
    rm -f "$BUILD_LOG"
fi
if [ -z "$BIN" ] || [ ! -x "$BIN" ]; then
    echo "cannot find the built load bench" >&2
    exit 1
fi

if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
    PIN_SERVER="taskset -c 0"
    PIN_CLIENT="taskset -c 1"
    echo "== servers on core 0, load generator and sources on core 1"
else
    PIN_SERVER=""
    PIN_CLIENT=""
    echo "== note: taskset missing or one core: processes are not pinned"
fi

T=$(mktemp -d)
# Traversable, so that PostgreSQL, run as its own user when this runs as root, reaches its
# folder inside (part g); nothing in it is secret (loopback only, a throwaway server).
chmod a+x "$T"
RESULTS="$T/results.tsv"
PIDS=()

stop_all() {
    local p
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        # Bounded: a server that ignores SIGTERM gets SIGKILL after 2 s.
        for _ in $(seq 1 20); do
            kill -0 "$p" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    PIDS=()
}
cleanup() {
    stop_all
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

MAX_SECS=$((3600 + SOAK))

# start NAME PIN ARGS...: starts one server, waits (at most 30 s) for its address file.
start() {
    local name=$1 pin=$2
    shift 2
    rm -f "$T/$name.addr"
    # $pin is empty or `taskset -c N`: split on purpose.
    # shellcheck disable=SC2086
    TMPDIR="$T" $pin "$BIN" "$@" --addr-file "$T/$name.addr" --max-secs "$MAX_SECS" >"$T/$name.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    for _ in $(seq 1 300); do
        [ -s "$T/$name.addr" ] && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$name did not start:" >&2
            cat "$T/$name.log" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "$name did not announce itself within 30 s" >&2
    cat "$T/$name.log" >&2
    return 1
}
api() { sed -n 1p "$T/$1.addr"; }

# generator ARGS...: the load generator on the client core, bounded in time. Run in the
# background and waited for, so that Ctrl-C reaches the traps at once.
generator() {
    # shellcheck disable=SC2086
    timeout $((1800 + SOAK)) $PIN_CLIENT "$BIN" "$@" --results "$RESULTS" &
    local pid=$!
    PIDS+=("$pid")
    wait "$pid"
}

if [[ $ONLY == *a* ]]; then
echo
echo "== (a) cached dossier: gateway vs bare hyper"
start agencies "$PIN_CLIENT" serve-sources --kind fixtures
start gateway "$PIN_SERVER" serve-gateway --scenario cached --sources "http://$(api agencies)"
start gateway-log "$PIN_SERVER" serve-gateway --scenario cached --audit log \
    --sources "http://$(api agencies)"
start bare "$PIN_SERVER" serve-bare --from-gateway "$T/gateway.addr"
generator cached --gateway "$T/gateway.addr" --gateway-log "$T/gateway-log.addr" \
    --bare "$T/bare.addr" --rounds "$ROUNDS" --secs "$SECS" --conns "$CONNS"
if command -v wrk >/dev/null 2>&1; then
    TOKEN=$("$BIN" token)
    for target in bare gateway gateway-log; do
        # shellcheck disable=SC2086
        RPS=$(timeout $((SECS + 30)) $PIN_CLIENT wrk -t1 -c"$CONNS" -d"${SECS}s" \
            -H "Authorization: Bearer $TOKEN" "http://$(api $target)/v1/me/dossier" |
            awk '/Requests\/sec/ {print $2}')
        echo "    wrk cross-check, $target: ${RPS:-?} req/s"
        printf '(a) cached dossier\twrk -t1 -c%s req/s, %s\t%s\t\t\n' "$CONNS" "$target" "${RPS:-?}" >>"$RESULTS"
    done
fi
stop_all
echo
echo "== (a') the cached dossier's CPU by stage, in one process"
generator attribute --iters $((SECS * 2000))
fi

# nginx with the njs module, for the side-by-side 3-way fan-out of (b) and (f) (installed when
# apt can).
NGINX_OK=0
if [[ $ONLY == *b* || $ONLY == *f* ]]; then
if [ ! -f /usr/lib/nginx/modules/ngx_http_js_module.so ] && command -v apt-get >/dev/null 2>&1 &&
    [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx libnginx-mod-http-js >/dev/null 2>&1 || true
fi
if command -v nginx >/dev/null 2>&1 && [ -f /usr/lib/nginx/modules/ngx_http_js_module.so ]; then
    NGINX_OK=1
else
    echo "== nginx + njs not installed (apt-get install nginx libnginx-mod-http-js): its column is skipped"
fi
fi

if [[ $ONLY == *b* ]]; then

for N in 3 10; do
    echo
    echo "== (b) uncached fan-out to $N sources"
    start sources "$PIN_CLIENT" serve-sources --kind slow --delay-ms "$DELAY_MS"
    start gateway "$PIN_SERVER" serve-gateway --scenario fanout --n "$N" --sources "http://$(api sources)"
    start gateway-log "$PIN_SERVER" serve-gateway --scenario fanout --n "$N" --audit log \
        --sources "http://$(api sources)"
    # The same fan-out on nginx + njs, the peer an operator might otherwise pick (3-way only).
    NGINX=()
    if [ "$N" = 3 ] && [ "$NGINX_OK" = 1 ]; then
        start nginx "$PIN_SERVER" serve-nginx --n "$N" --sources "$(api sources)"
        NGINX=(--nginx "$T/nginx.addr")
    fi
    generator fanout --gateway "$T/gateway.addr" --gateway-log "$T/gateway-log.addr" "${NGINX[@]}" \
        --sources "$T/sources.addr" --n "$N" --rate "$RATE" --secs "$SECS" --rounds "$B_ROUNDS" \
        --delay-ms "$DELAY_MS"
    stop_all
done
fi

if [[ $ONLY == *c* ]]; then
echo
echo "== (c) memory: $SUBJECTS subjects into a 1 MiB cache (what grows whatever the budget), then into a $CACHE_MIB MiB cache"
start synthetic "$PIN_CLIENT" serve-sources --kind synthetic
start gateway "$PIN_SERVER" serve-gateway --scenario memory --cache-mib 1 \
    --sources "http://$(api synthetic)"
# Not recorded in the summary: only its growth is used, by the next run.
timeout 1800 $PIN_CLIENT "$BIN" memory --gateway "$T/gateway.addr" --subjects "$SUBJECTS" \
    --cache-mib 1 --growth-out "$T/fixed.kb" --heap-out "$T/fixed.heap.kb"
stop_all
start synthetic "$PIN_CLIENT" serve-sources --kind synthetic
start gateway "$PIN_SERVER" serve-gateway --scenario memory --cache-mib "$CACHE_MIB" \
    --sources "http://$(api synthetic)"
generator memory --gateway "$T/gateway.addr" --subjects "$SUBJECTS" --cache-mib "$CACHE_MIB" \
    --soak "$SOAK" --fixed-kb "$(cat "$T/fixed.kb")" --fixed-heap-kb "$(cat "$T/fixed.heap.kb")"
stop_all
fi

if [[ $ONLY == *d* ]]; then
echo
echo "== (d) cached dossier of a citizen with $APPLICATIONS applications beside one with none"
start agencies "$PIN_CLIENT" serve-sources --kind fixtures
start gateway "$PIN_SERVER" serve-gateway --scenario cached --sources "http://$(api agencies)"
start gateway-zaken "$PIN_SERVER" serve-gateway --scenario cached \
    --applications "$APPLICATIONS" --sources "http://$(api agencies)"
start bare "$PIN_SERVER" serve-bare --from-gateway "$T/gateway.addr"
generator cached --gateway "$T/gateway.addr" --gateway-zaken "$T/gateway-zaken.addr" \
    --zaken "$APPLICATIONS" --bare "$T/bare.addr" --rounds "$ROUNDS" --secs "$SECS" --conns "$CONNS"
stop_all
fi

if [[ $ONLY == *e* ]]; then
echo
echo "== (e) bursts of $BURST huge answers at once"
for MIB in 64 1024; do
    start huge "$PIN_CLIENT" serve-sources --kind huge
    start gateway "$PIN_SERVER" serve-gateway --scenario burst --inflight-mib "$MIB" \
        --sources "http://$(api huge)"
    generator burst --gateway "$T/gateway.addr" --at-once "$BURST" --rounds "$BURST_ROUNDS" \
        --idle-secs "$IDLE_SECS" --label ", in-flight budget $MIB MiB"
    stop_all
done
fi

if [[ $ONLY == *f* ]]; then
echo
echo "== (f) saturation: uncached 3-way fan-out, sources answering at once, closed loop"
start sources "$PIN_CLIENT" serve-sources --kind slow --delay-ms 0
# The fan-out config of (b), whose cache is off: every request calls the 3 sources.
start gateway "$PIN_SERVER" serve-gateway --scenario fanout --n 3 --sources "http://$(api sources)"
start gateway-log "$PIN_SERVER" serve-gateway --scenario fanout --n 3 --audit log \
    --sources "http://$(api sources)"
NGINX=()
if [ "$NGINX_OK" = 1 ]; then
    start nginx "$PIN_SERVER" serve-nginx --n 3 --sources "$(api sources)"
    NGINX=(--nginx "$T/nginx.addr")
fi
start naive "$PIN_SERVER" serve-naive --n 3 --sources "$(api sources)"
generator saturation --gateway "$T/gateway.addr" --gateway-log "$T/gateway-log.addr" "${NGINX[@]}" \
    --naive "$T/naive.addr" --sources "$T/sources.addr" --n 3 --rounds "$ROUNDS" --secs "$SECS" \
    --conns "$CONNS"
stop_all
fi

if [[ $ONLY == *g* ]]; then
echo
echo "== (g) cached dossier with the store on PostgreSQL beside SQLite"
if start postgres "$PIN_CLIENT" serve-postgres --url-file "$T/postgres.url"; then
    start agencies "$PIN_CLIENT" serve-sources --kind fixtures
    start gateway "$PIN_SERVER" serve-gateway --scenario cached --sources "http://$(api agencies)"
    start gateway-pg "$PIN_SERVER" serve-gateway --scenario cached \
        --postgres "$(cat "$T/postgres.url")" --sources "http://$(api agencies)"
    start bare "$PIN_SERVER" serve-bare --from-gateway "$T/gateway.addr"
    generator cached --gateway "$T/gateway.addr" --gateway-pg "$T/gateway-pg.addr" \
        --postgres "$T/postgres.addr" --bare "$T/bare.addr" --rounds "$ROUNDS" --secs "$SECS" \
        --conns "$CONNS"
else
    echo "== PostgreSQL did not start (apt-get install postgresql): (g) is skipped"
fi
stop_all
fi

echo
echo "== summary"
"$BIN" report --results "$RESULTS"
