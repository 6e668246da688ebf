#!/usr/bin/env bash
# `make run-ratelimit`: fleet-wide limits on one machine, no compose, everything on loopback.
#   redis-server            127.0.0.1:6379 (no persistence)
#   tests/rls-server        127.0.0.1:8081, Envoy's RateLimitService on limitador + Redis,
#                           limits from envoy/ratelimit-limits.json
#   envoy (A)               envoy/envoy-ratelimit.yaml: gateway :10000, admin :9901, demo :10080
#   envoy (B)               the same file with ports moved: gateway :10001, admin :9902, demo :10081
# Ctrl-C stops all of them. Expects `make build rls-server envoy` to have run (the Makefile does).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
ENVOY=${ENVOY:-$root/.tools/bin/envoy}
RLS=$root/target/rls-server/debug/rls-server
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

for port in 6379 8081 10000 10001 9901 9902 10080 10081; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "run-ratelimit: 127.0.0.1:$port is in use; stop what listens there first" >&2
    exit 1
  fi
done

redis-server --port 6379 --bind 127.0.0.1 --save '' --appendonly no --loglevel warning &
pids+=($!)
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null && break; sleep 0.05; done

"$RLS" --grpc 127.0.0.1:8081 --redis redis://127.0.0.1:6379 \
  --limits envoy/ratelimit-limits.json >"$work/rls.out" &
pids+=($!)
for _ in $(seq 100); do grep -q '^listening' "$work/rls.out" 2>/dev/null && break; sleep 0.05; done

sed -e 's/port_value: 10000/port_value: 10001/' -e 's/port_value: 9901/port_value: 9902/' \
  -e 's/port_value: 10080/port_value: 10081/' envoy/envoy-ratelimit.yaml >"$work/envoy-b.yaml"
"$ENVOY" -c envoy/envoy-ratelimit.yaml --concurrency 2 --disable-hot-restart --base-id 11 \
  --component-log-level wasm:info --log-path "$work/envoy-a.log" &
pids+=($!)
"$ENVOY" -c "$work/envoy-b.yaml" --concurrency 2 --disable-hot-restart --base-id 12 \
  --component-log-level wasm:info --log-path "$work/envoy-b.log" &
pids+=($!)

cat <<'TXT'

tollgate fleet demo: two Envoys (gateways :10000 and :10001) share the free plan's quota of
10 requests a day per key, held by the rate limit service on Redis.

  for p in 10000 10001 10000 10001 10000 10001 10000 10001 10000 10001 10000 10001; do
    curl -s -o /dev/null -w '%{http_code} ' -H 'x-api-key: dev-key-123' localhost:$p/pets/1; done; echo
  curl -i -H 'x-api-key: dev-key-123' localhost:10001/pets/1          # 429 Limit Exceeded
  curl -s localhost:9901/stats/prometheus | grep tollgate_rate_limit_service

Redis keeps the counts until it stops. Ctrl-C stops everything.
TXT
wait -n "${pids[@]}" || true
echo "run-ratelimit: a process exited; stopping" >&2
