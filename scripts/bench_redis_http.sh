#!/usr/bin/env bash
# HTTP throughput and latency of POST /api/check_and_consume on the Redis store against the memory
# store: the same release binary started twice (once per store), the same wrk load, alternating the
# two RUNS times in one run; prints every run, the medians and the Redis/memory ratio (issue
# target >= 0.75), plus Redis' own INFO commandstats over the Redis phases (round trips and
# usec_per_call per decision). Starts its own redis-server and servers on free loopback ports.
#
#   scripts/bench_redis_http.sh     # env: DURATION=6s CONNECTIONS=64 THREADS=1 RUNS=3 TOLLGATE_BIN=
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-6s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
RUNS=${RUNS:-3}

if ! command -v wrk >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
BIN=${TOLLGATE_BIN:-}
if [[ -z "$BIN" ]]; then
  cargo build --release -q -p tollgate-server --bin tollgate
  BIN=target/release/tollgate
fi
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

# The key mix of scripts/bench-http: 100 tenants x 1,000 clients x 4 actions, formatted up front.
cat > "$tmp/check.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local actions = {"api_call", "login", "upload", "search"}
local pool, n, i = {}, 20000, 0
init = function(args)
    math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 1000)
    for k = 1, n do
        local body = string.format(
            '{"tenant_id":"tenant-%d","client_id":"client-%d","action_type":"%s","max_requests":1000000,"window_duration_seconds":60}',
            math.random(1, 100), math.random(1, 1000), actions[math.random(1, 4)])
        pool[k] = wrk.format(nil, "/api/check_and_consume", nil, body)
    end
end
request = function()
    i = i % n + 1
    return pool[i]
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

# Never queue or shed, and admit every new key (unconfigured tenants share one new-key budget).
raise_limits() {
  curl -fsS -X PUT "http://127.0.0.1:$1/api/config/global" -H 'Content-Type: application/json' \
    -d '{"max_global_concurrent_requests":100000,"max_tenant_queue_size":100000,"queue_timeout_ms":1000,"new_keys_per_second":1000000000,"max_keys_per_tenant":100000000}' >/dev/null
}

# Runs wrk; prints "rps p50_ms p99_ms non2xx requests".
run_wrk() {
  local out
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$tmp/check.lua" "http://127.0.0.1:$1/api/check_and_consume")
  awk '
    function ms(v) {
      if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
      if (v ~ /ms$/) return substr(v, 1, length(v) - 2) + 0
      if (v ~ /s$/) return substr(v, 1, length(v) - 1) * 1000
      return v
    }
    /^ +50%/ { p50 = ms($2) }
    /^ +99%/ { p99 = ms($2) }
    /Non-2xx/ { non2xx = $NF }
    /^Requests\/sec/ { rps = $2 }
    / requests in / { total = $1 }
    END { printf "%s %.3f %.3f %d %d\n", rps, p50, p99, non2xx, total }
  ' <<<"$out"
}

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$tmp" --save '' --appendonly no >/dev/null &
pids+=($!)
redis_pid=$!
for _ in $(seq 1 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done

mem_port=$(free_port)
TOLLGATE_LOG=warn "$BIN" --listen "127.0.0.1:$mem_port" --rls-listen off --data-dir "$tmp/mem" 2>"$tmp/mem.log" &
pids+=($!)
red_port=$(free_port)
TOLLGATE_LOG=warn "$BIN" --listen "127.0.0.1:$red_port" --rls-listen off --store redis \
  --redis-url "redis://127.0.0.1:$redis_port" --data-dir "$tmp/red" 2>"$tmp/red.log" &
pids+=($!)
red_pid=$!
wait_healthy "$mem_port"
wait_healthy "$red_port"
raise_limits "$mem_port"
raise_limits "$red_port"
redis-cli -p "$redis_port" config resetstat >/dev/null

echo "tollgate HTTP, Redis store vs memory store: $(nproc) cores, wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $RUNS runs alternating"
printf '%-4s %-8s %12s %9s %9s %s\n' run store req/s p50_ms p99_ms non-2xx
# CPU time (user + system, clock ticks) of a process: what it really spent, unlike usec_per_call,
# which counts the time Redis was descheduled inside a command on these shared cores.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
mem=() red=() ratios=() red_total=0 redis_ticks=0 server_ticks=0
for run in $(seq 1 "$RUNS"); do
  read -r rps p50 p99 bad _ < <(run_wrk "$mem_port")
  printf '%-4s %-8s %12s %9s %9s %s\n' "$run" memory "$rps" "$p50" "$p99" "$bad"
  mem+=("$rps"); mr=$rps
  r0=$(ticks "$redis_pid") s0=$(ticks "$red_pid")
  read -r rps p50 p99 bad total < <(run_wrk "$red_port")
  redis_ticks=$((redis_ticks + $(ticks "$redis_pid") - r0))
  server_ticks=$((server_ticks + $(ticks "$red_pid") - s0))
  red_total=$((red_total + total))
  printf '%-4s %-8s %12s %9s %9s %s\n' "$run" redis "$rps" "$p50" "$p99" "$bad"
  red+=("$rps")
  ratios+=("$(awk -v r="$rps" -v m="$mr" 'BEGIN { printf "%.3f", r / m }')")
done
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
echo
printf 'medians: memory %.0f req/s, redis %.0f req/s\n' "$(median "${mem[@]}")" "$(median "${red[@]}")"
echo "redis / memory throughput, per run: ${ratios[*]}; median $(median "${ratios[@]}") (target >= 0.75)"
echo "redis INFO commandstats over the Redis phases:"
stats=$(redis-cli -p "$redis_port" info commandstats | tr -d '\r')
grep -E "cmdstat_(evalsha|eval|time|getrange|setrange|pexpire|pexpireat|strlen)" <<<"$stats" || true
# Decisions per EVALSHA (batching sends several in one call) and Redis' CPU per decision.
awk -F'[=,:]' -v d="$red_total" '/^cmdstat_evalsha:/ {
  printf "decisions %d, EVALSHA calls %d: %.2f decisions per call; %.2f usec per call, %.2f usec of EVALSHA per decision\n",
    d, $3, d / $3, $7, $5 / d }' <<<"$stats"
hz=$(getconf CLK_TCK)
awk -v r="$redis_ticks" -v s="$server_ticks" -v d="$red_total" -v hz="$hz" 'BEGIN {
  printf "CPU per decision (/proc/<pid>/stat over the Redis phases): redis-server %.2f usec, tollgate %.2f usec\n",
    r / hz * 1e6 / d, s / hz * 1e6 / d }'
