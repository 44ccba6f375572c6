#!/usr/bin/env bash
# `make bench`: load measurements on the local cluster, client and server pods on different nodes, each the median
# of 3 runs with min and max, printed as one table with the direct path beside the meshed one.
set -euo pipefail
AMBIT=$(realpath "${1:-target/release/ambit}")
RUN_SECONDS=${BENCH_SECONDS:-5}
CLUSTER=bench
cd "$(dirname "$0")/.."
cleanup() { "$AMBIT" cluster down --name "$CLUSTER" >/dev/null 2>&1 || true; }
trap cleanup EXIT

"$AMBIT" cluster up -f benches/local/cluster.yaml >/dev/null
export AMBIT_CLUSTER=$CLUSTER
server=$("$AMBIT" get pods -n bench -o json | python3 -c '
import json,sys
print([p["status"]["podIP"] for p in json.load(sys.stdin)["items"] if p["metadata"]["name"]=="server"][0])')

# Waits until the machine is idle (1-minute load under 0.5), at most 30 s.
for _ in $(seq 30); do
  awk '{exit !($1 < 0.5)}' /proc/loadavg && break
  sleep 1
done

out=$(mktemp -d)
measure() { # NAME ARGS...: three runs of `ambit app load ARGS -o json` from the client pod
  local name=$1; shift
  for i in 1 2 3; do
    if ! "$AMBIT" exec -n bench client -- ambit app load "$@" -d "${RUN_SECONDS}s" -o json \
        >"$out/direct.$name.$i.json" 2>"$out/stderr.log"; then
      cat "$out/stderr.log" >&2
      exit 1
    fi
  done
}
measure bulk --tcp "$server:9001" --bulk
measure http1 --url "http://$server:8080/" -c 1
measure http16 --url "http://$server:8080/" -c 16
measure newconn --url "http://$server:8080/" -c 4 --new-connection
measure rate1000 --url "http://$server:8080/" -c 4 --rate 1000

python3 - "$out" <<'PY'
import json, statistics, sys, glob, os
out = sys.argv[1]
def runs(path, name):
    return [json.load(open(f)) for f in sorted(glob.glob(os.path.join(out, f"{path}.{name}.*.json")))]
def cell(path, name, get, fmt):
    vals = [get(r) for r in runs(path, name)]
    if not vals:
        return "not measured"
    return f"{fmt(statistics.median(vals))} [{fmt(min(vals))}-{fmt(max(vals))}]"
gbit = lambda v: f"{v * 8 / 1e9:.2f} Gbit/s"
rps = lambda v: f"{v:,.0f}/s"
us = lambda v: f"{v:,.0f} us"
rows = [
    ("single-stream throughput", "bulk", lambda r: r["bytes_per_sec"], gbit),
    ("HTTP req/s, 1 connection", "http1", lambda r: r["requests_per_sec"], rps),
    ("  p50 latency, 1 connection", "http1", lambda r: r["latency_us"]["p50"], us),
    ("  p99 latency, 1 connection", "http1", lambda r: r["latency_us"]["p99"], us),
    ("HTTP req/s, 16 connections", "http16", lambda r: r["requests_per_sec"], rps),
    ("  p50 latency, 16 connections", "http16", lambda r: r["latency_us"]["p50"], us),
    ("  p99 latency, 16 connections", "http16", lambda r: r["latency_us"]["p99"], us),
    ("new connections/s (connect, request, close)", "newconn", lambda r: r["requests_per_sec"], rps),
    ("1000 req/s over 4 connections: p50", "rate1000", lambda r: r["latency_us"]["p50"], us),
    ("1000 req/s over 4 connections: p90", "rate1000", lambda r: r["latency_us"]["p90"], us),
    ("1000 req/s over 4 connections: p99", "rate1000", lambda r: r["latency_us"]["p99"], us),
]
errors = sum(r["errors"] for f in glob.glob(os.path.join(out, "*.json")) for r in [json.load(open(f))])
w = 46
print(f"\n{'measurement (median of 3 [min-max])':<{w}} {'direct':<42} meshed")
print("-" * (w + 42 + 40))
for label, name, get, fmt in rows:
    print(f"{label:<{w}} {cell('direct', name, get, fmt):<42} {cell('meshed', name, get, fmt)}")
print(f"\nerrors across all runs: {errors}")
print("meshed: not measured until the node proxy exists (issue 4); the column fills in then.")
PY
rm -rf "$out"
