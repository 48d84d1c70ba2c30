#!/usr/bin/env bash
# HTTP throughput and latency of POST /api/check_and_consume on the memory store and on the Redis
# store (same release binary, same wrk load), plus Redis round trips per decision from
# INFO commandstats. Starts its own redis-server and tollgate on free loopback ports.
#
#   scripts/bench_redis_http.sh            # DUR=10 CONNS=64 THREADS=2 by default
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${DUR:-10}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}

cargo build --release -q -p tollgate-server
BIN=target/release/tollgate
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

cat > "$tmp/decide.lua" <<'LUA'
-- 64 tenants x 1,000 clients, limits high enough that decisions are mostly "allowed".
local n = 0
request = function()
  n = n + 1
  local body = string.format(
    '{"tenant_id":"t%d","client_id":"c%d","action_type":"bench","max_requests":1000000,"window_duration_seconds":60}',
    n % 64, n % 1000)
  return wrk.format("POST", "/api/check_and_consume", {["Content-Type"] = "application/json"}, body)
end
LUA

wait_healthy() {
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$1/api/health" >/dev/null && return 0
    sleep 0.1
  done
  echo "tollgate on port $1 did not come up" >&2
  exit 1
}

run_wrk() { # port label
  echo "== $2"
  wrk -t"$THREADS" -c"$CONNS" -d"${DUR}s" --latency -s "$tmp/decide.lua" "http://127.0.0.1:$1" \
    | grep -E "Requests/sec|Latency|50%|99%|requests in|Non-2xx"
}

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$tmp" --save '' --appendonly no >/dev/null &
pids+=($!)
for _ in $(seq 1 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done

mem_port=$(free_port)
TOLLGATE_LOG=warn "$BIN" --listen "127.0.0.1:$mem_port" --data-dir "$tmp/mem" &
pids+=($!)
wait_healthy "$mem_port"
echo "== memory store: GET /api/health (baseline)"
wrk -t"$THREADS" -c"$CONNS" -d"${DUR}s" "http://127.0.0.1:$mem_port/api/health" | grep -E "Requests/sec"
run_wrk "$mem_port" "memory store: POST /api/check_and_consume"
kill "${pids[-1]}"

red_port=$(free_port)
TOLLGATE_LOG=warn "$BIN" --listen "127.0.0.1:$red_port" --store redis \
  --redis-url "redis://127.0.0.1:$redis_port" --data-dir "$tmp/red" &
pids+=($!)
wait_healthy "$red_port"
redis-cli -p "$redis_port" config resetstat >/dev/null
run_wrk "$red_port" "redis store: POST /api/check_and_consume"
echo "== redis INFO commandstats (client commands vs commands run inside the script)"
redis-cli -p "$redis_port" info commandstats | grep -E "cmdstat_(evalsha|eval|script|getrange|setrange|time|pexpire|hget)" || true
