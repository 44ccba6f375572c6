#!/usr/bin/env bash
# `make bench`: load measurements on the local cluster, client and server pods on different nodes, each the median
# of 3 runs with min and max, printed as one table with the direct path (namespace `bench`) beside the meshed one
# (namespace `bench-mesh`, enrolled in ambient: through both node proxies over HBONE), the node proxies' cost, and
# the issue's targets. Beside them, the floor under any node proxy: the direct pods talking through a pair of plain
# TCP relays (`ambit app relay`, one in the client's pod, one in the server's), the same TCP hops as the mesh with no
# TLS, HTTP/2, policy or telemetry. Direct run i, relay run i and meshed run i alternate, so machine noise hits all
# paths alike. The HTTP rows with 1 and 16 connections also run on a fourth path, through the waypoint (namespace
# `bench-waypoint`: client -> node proxy -> waypoint -> node proxy -> server), with the waypoint's CPU per 1000
# requests and its RSS. Then a second table for the control plane: policy propagation over xDS and memory with
# 10,000 workloads (without the cluster).
# Exits non-zero only when a run produced no result; a missed target is reported, not fatal.
# BENCH_SECONDS sets each run's length (default 5); BENCH_CONTROL_PLANE=0 leaves out the second table (node proxies
# only, without building the control plane's benchmark); BENCH_STUNNEL=1 adds a TLS relay pair built by others
# (stunnel with OpenSSL, TLS 1.3, in the same two pods) to the alternation and prints it in a table of its own.
set -euo pipefail
AMBIT=$(realpath "${1:-target/release/ambit}")
RUN_SECONDS=${BENCH_SECONDS:-5}
CLUSTER=bench
NODES=(node-1 node-2)
DIRECT_NS=bench
MESH_NS=bench-mesh
WAYPOINT_NS=bench-waypoint
cd "$(dirname "$0")/.."
out=$(mktemp -d)
relays=()
stop_relays() {
  if [[ ${#relays[@]} -gt 0 ]]; then
    kill "${relays[@]}" 2>/dev/null || true
    wait "${relays[@]}" 2>/dev/null || true
    relays=()
  fi
}
cleanup() {
  stop_relays
  "$AMBIT" cluster down --name "$CLUSTER" >/dev/null 2>&1 || true
  rm -rf "$out"
}
trap cleanup EXIT

if ! "$AMBIT" cluster up -f benches/local/cluster.yaml >"$out/up.log" 2>&1; then
  cat "$out/up.log" >&2
  exit 1
fi
export AMBIT_CLUSTER=$CLUSTER
pod_ip() { # NAMESPACE POD
  "$AMBIT" get pods -n "$1" -o json | python3 -c '
import json,sys
print([p["status"]["podIP"] for p in json.load(sys.stdin)["items"] if p["metadata"]["name"]==sys.argv[1]][0])' "$2"
}
service_ip() { # NAMESPACE SERVICE
  "$AMBIT" get services -n "$1" -o json | python3 -c '
import json,sys
print([s["spec"]["clusterIP"] for s in json.load(sys.stdin)["items"] if s["metadata"]["name"]==sys.argv[1]][0])' "$2"
}
# The waypoint path is service-addressed: a waypoint serves the Services bound to it.
# The relay path is the direct pods through two relays: the client's relay listens on the server's ports on
# 127.0.0.1 of the client pod and forwards to the server pod's relay (ports + 10000), which forwards to the server.
declare -A server=([direct]=$(pod_ip "$DIRECT_NS" server) [relay]=127.0.0.1 [meshed]=$(pod_ip "$MESH_NS" server)
  [waypoint]=$(service_ip "$WAYPOINT_NS" server) [stunnel]=127.0.0.2)
declare -A namespace=([direct]=$DIRECT_NS [relay]=$DIRECT_NS [meshed]=$MESH_NS [waypoint]=$WAYPOINT_NS
  [stunnel]=$DIRECT_NS)
"$AMBIT" exec -n "$DIRECT_NS" server -- ambit app relay --route 0.0.0.0:18080=127.0.0.1:8080 \
  --route 0.0.0.0:19001=127.0.0.1:9001 >"$out/relay-server.log" 2>&1 &
relays+=($!)
"$AMBIT" exec -n "$DIRECT_NS" client -- ambit app relay --route "127.0.0.1:8080=${server[direct]}:18080" \
  --route "127.0.0.1:9001=${server[direct]}:19001" >"$out/relay-client.log" 2>&1 &
relays+=($!)
# The TLS relay pair (BENCH_STUNNEL=1): the same routes as the relays above, on 127.0.0.2 of the client pod and ports
# + 20000 in the server pod, with a throw-away P-256 certificate.
stunnel_pair=false
if [[ ${BENCH_STUNNEL:-0} == 1 ]]; then
  command -v stunnel >/dev/null || { echo "bench: BENCH_STUNNEL=1 needs stunnel (apt-get install stunnel4)" >&2; exit 1; }
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$out/tls.key" -out "$out/tls.crt" \
    -days 1 -subj /CN=bench >/dev/null 2>&1
  common=$'foreground = yes\npid =\nsocket = a:TCP_NODELAY=1\nsocket = r:TCP_NODELAY=1\nsslVersionMin = TLSv1.3'
  printf '%s\n' "$common" "[http]" "accept = 0.0.0.0:28080" "connect = 127.0.0.1:8080" "cert = $out/tls.crt" \
    "key = $out/tls.key" "[bulk]" "accept = 0.0.0.0:29001" "connect = 127.0.0.1:9001" "cert = $out/tls.crt" \
    "key = $out/tls.key" >"$out/stunnel-server.conf"
  printf '%s\n' "$common" "[http]" "client = yes" "accept = 127.0.0.2:8080" "connect = ${server[direct]}:28080" \
    "[bulk]" "client = yes" "accept = 127.0.0.2:9001" "connect = ${server[direct]}:29001" >"$out/stunnel-client.conf"
  "$AMBIT" exec -n "$DIRECT_NS" server -- stunnel "$out/stunnel-server.conf" >"$out/stunnel-server.log" 2>&1 &
  relays+=($!)
  "$AMBIT" exec -n "$DIRECT_NS" client -- stunnel "$out/stunnel-client.conf" >"$out/stunnel-client.log" 2>&1 &
  relays+=($!)
  stunnel_pair=true
fi

# Waits until every node proxy is ready (`cluster up` already waited for the pods), at most 30 s.
for node in "${NODES[@]}"; do
  ready=false
  for _ in $(seq 60); do
    if ip netns exec "ambit.$CLUSTER.node.$node" curl -sf -o /dev/null -m 1 http://127.0.0.1:15021/healthz/ready; then
      ready=true
      break
    fi
    sleep 0.5
  done
  $ready || echo "bench: warning: the node proxy of $node is not ready after 30 s" >&2
done
# Waits until a request through both relays reaches the server, at most 10 s.
for _ in $(seq 20); do
  ip netns exec "ambit.$CLUSTER.pod.$DIRECT_NS.client" curl -sf -o /dev/null -m 1 http://127.0.0.1:8080/ && break
  sleep 0.5
done

# The node proxies: `ambit node ...` processes (`node` is their 2nd argument) in the node namespaces.
# proxy_stat prints one line per node proxy: NODE PID CPU_TICKS (utime+stime) VMHWM_KIB.
proxy_stat() {
  local node pid arg stat rest hwm fields
  for node in "${NODES[@]}"; do
    for pid in $(ip netns pids "ambit.$CLUSTER.node.$node" 2>/dev/null); do
      arg=$(tr '\0' '\n' 2>/dev/null <"/proc/$pid/cmdline" | sed -n 2p) || continue
      [[ $arg == node ]] || continue
      stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
      rest=${stat##*) }                   # fields from the 3rd on; the 14th and 15th are utime and stime
      read -ra fields <<<"$rest"
      hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null) || hwm=0
      echo "$node $pid $((fields[11] + fields[12])) ${hwm:-0}"
    done
  done
}
# The waypoint: the `ambit waypoint` process in its pod's namespace. Prints: PID CPU_TICKS VMHWM_KIB.
waypoint_stat() {
  local ns pid arg stat rest hwm fields
  for ns in $(ip netns list | awk '{print $1}' | grep "^ambit\.$CLUSTER\.pod\.$WAYPOINT_NS\.waypoint-"); do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do
      arg=$(tr '\0' '\n' 2>/dev/null <"/proc/$pid/cmdline" | sed -n 2p) || continue
      [[ $arg == waypoint ]] || continue
      stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
      rest=${stat##*) }
      read -ra fields <<<"$rest"
      hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null) || hwm=0
      echo "$pid $((fields[11] + fields[12])) ${hwm:-0}"
    done
  done
}
if [[ -z $(waypoint_stat) ]]; then
  echo "bench: warning: no waypoint process found in the $WAYPOINT_NS waypoint pod; waypoint cost not measured" >&2
fi
if [[ -z $(proxy_stat) ]]; then
  echo "bench: warning: no node proxy process found in ambit.$CLUSTER.node.*; node proxy cost not measured" >&2
fi

# Waits until the machine is idle (1-minute load under 0.5), at most 30 s.
for _ in $(seq 30); do
  awk '{exit !($1 < 0.5)}' /proc/loadavg && break
  sleep 1
done

failed=0
run() { # PATH NAME I ARGS...: one run of `ambit app load ARGS -o json` from the path's client pod
  local path=$1 name=$2 i=$3 target=${server[$1]}; shift 3
  local json="$out/$path.$name.$i.json"
  [[ $path == meshed ]] && proxy_stat >"$out/proxy.$name.$i.before"
  [[ $path == waypoint ]] && waypoint_stat >"$out/waypoint.$name.$i.before"
  # The target's address is the path's server; ARGS name it SERVER.
  if ! timeout -k 5 $((RUN_SECONDS + 60)) "$AMBIT" exec -n "${namespace[$path]}" client -- \
      ambit app load "${@//SERVER/$target}" -d "${RUN_SECONDS}s" -o json >"$json" 2>"$out/stderr.log" \
      || ! python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$json" 2>/dev/null; then
    echo "bench: $path run $i of $name produced no result:" >&2
    sed 's/^/  /' "$out/stderr.log" >&2
    rm -f "$json"
    failed=1
  fi
  [[ $path == meshed ]] && proxy_stat >"$out/proxy.$name.$i.after"
  [[ $path == waypoint ]] && waypoint_stat >"$out/waypoint.$name.$i.after"
  return 0
}
measure() { # NAME ARGS...: three runs on each path, direct run i, relay run i, then meshed run i (then waypoint
  # run i for the HTTP runs with 1 and 16 connections)
  local name=$1 i; shift
  for i in 1 2 3; do
    run direct "$name" "$i" "$@"
    run relay "$name" "$i" "$@"
    if $stunnel_pair; then run stunnel "$name" "$i" "$@"; fi
    run meshed "$name" "$i" "$@"
    if [[ $name == http1 || $name == http16 ]]; then run waypoint "$name" "$i" "$@"; fi
  done
}
measure bulk --tcp SERVER:9001 --bulk
measure http1 --url http://SERVER:8080/ -c 1
measure http16 --url http://SERVER:8080/ -c 16
measure newconn --url http://SERVER:8080/ -c 4 --new-connection
measure rate1000 --url http://SERVER:8080/ -c 4 --rate 1000

python3 - "$out" "$(getconf CLK_TCK)" "$RUN_SECONDS" "$DIRECT_NS" "$MESH_NS" <<'PY'
import glob, json, os, statistics, sys
out, tck, seconds, direct_ns, mesh_ns = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
names = ["bulk", "http1", "http16", "newconn", "rate1000"]
http = ["http1", "http16", "newconn", "rate1000"]
def runs(path, name):
    return [json.load(open(f)) for f in sorted(glob.glob(os.path.join(out, f"{path}.{name}.*.json")))]
def median(path, name, get):
    vals = [get(r) for r in runs(path, name)]
    return statistics.median(vals) if vals else None
def cell(path, name, get, fmt, unit):
    vals = [get(r) for r in runs(path, name)]
    if not vals:
        return "not measured"
    return f"{fmt(statistics.median(vals))} [{fmt(min(vals))}-{fmt(max(vals))}] {unit}"
gbit = (lambda v: f"{v * 8 / 1e9:.2f}", "Gbit/s")
rps = (lambda v: f"{v:,.0f}", "/s")
us = (lambda v: f"{v:,.0f}", "us")
bps, reqs, p = (lambda r: r["bytes_per_sec"]), (lambda r: r["requests_per_sec"]), (lambda q: lambda r: r["latency_us"][q])
# (label, run name, value, format, target): a target is ("ratio", minimum) or ("plus", maximum added microseconds).
rows = [
    ("single-stream throughput", "bulk", bps, gbit, ("ratio", 0.50)),
    ("HTTP req/s, 1 connection", "http1", reqs, rps, None),
    ("  p50 latency, 1 connection", "http1", p("p50"), us, ("plus", 20)),
    ("  p99 latency, 1 connection", "http1", p("p99"), us, None),
    ("HTTP req/s, 16 connections", "http16", reqs, rps, ("ratio", 0.40)),
    ("  p50 latency, 16 connections", "http16", p("p50"), us, None),
    ("  p99 latency, 16 connections", "http16", p("p99"), us, None),
    ("new connections/s (connect, request, close)", "newconn", reqs, rps, ("ratio", 0.50)),
    ("1000 req/s over 4 connections: p50", "rate1000", p("p50"), us, None),
    ("1000 req/s over 4 connections: p90", "rate1000", p("p90"), us, None),
    ("1000 req/s over 4 connections: p99", "rate1000", p("p99"), us, None),
]
w, c, d = 46, 30, 17
def versus(name, get, latency, base, path):
    a, b = median(base, name, get), median(path, name, get)
    if a is None or b is None:
        return "-"
    if latency:
        return f"{b - a:+,.0f} us"
    return f"{b / a:.0%}" if a else "-"
print(f"\n{'measurement (median of 3 [min-max])':<{w}} {'direct':<{c}} {'relay pair (floor)':<{c}} {'meshed (L4)':<{c}} "
      f"{'meshed vs direct':<{d}} {'target':<26} {'relay vs direct':<{d}} {'meshed vs relay':<{d}} "
      f"{'waypoint (L7)':<{c}} waypoint vs direct")
print("-" * (w + 4 * c + 4 * d + 30))
for label, name, get, (fmt, unit), target in rows:
    a, b = median("direct", name, get), median("meshed", name, get)
    latency = unit == "us"
    goal = ""
    if target:
        kind, limit = target
        goal = f">= {limit:.0%} of direct" if kind == "ratio" else f"<= direct + {limit} us"
        if a is None or b is None or (kind == "ratio" and not a):
            goal += "  not measured"
        else:
            ok = b >= limit * a if kind == "ratio" else b <= a + limit
            goal += "  PASS" if ok else "  FAIL"
    wp = cell("waypoint", name, get, fmt, unit) if runs("waypoint", name) else "-"
    wp_versus = versus(name, get, latency, "direct", "waypoint") if runs("waypoint", name) else ""
    print(f"{label:<{w}} {cell('direct', name, get, fmt, unit):<{c}} {cell('relay', name, get, fmt, unit):<{c}} "
          f"{cell('meshed', name, get, fmt, unit):<{c}} {versus(name, get, latency, 'direct', 'meshed'):<{d}} "
          f"{goal:<26} {versus(name, get, latency, 'direct', 'relay'):<{d}} "
          f"{versus(name, get, latency, 'relay', 'meshed'):<{d}} {wp:<{c}} {wp_versus}".rstrip())

# Node proxies: CPU (utime+stime) over the meshed runs only, from the snapshots taken around each of them.
def snapshot(f):
    snap = {}
    for line in open(f):
        node, pid, ticks, hwm = line.split()
        snap[node] = (pid, int(ticks), int(hwm))
    return snap
cpu, warned, last = {}, set(), {}
for name in names:
    for before_file in sorted(glob.glob(os.path.join(out, f"proxy.{name}.*.before"))):
        after_file = before_file[: -len(".before")] + ".after"
        before, after = snapshot(before_file), snapshot(after_file) if os.path.exists(after_file) else {}
        total = 0
        for node, (pid, ticks, hwm) in after.items():
            last[node] = hwm
            old = before.get(node)
            if old and old[0] == pid:
                total += ticks - old[1]
            else:  # started (or restarted) during the run: all of its CPU time is the run's
                total += ticks
                if node not in warned:
                    print(f"bench: warning: the node proxy of {node} (re)started during the meshed runs", file=sys.stderr)
                    warned.add(node)
        cpu[name] = cpu.get(name, 0) + total / tck
if last:
    requests = sum(r["requests"] for n in http for r in runs("meshed", n))
    http_cpu = sum(cpu.get(n, 0) for n in http)
    per_k = f"{http_cpu / requests * 1e6:,.1f} ms per 1000 requests of the HTTP runs" if requests else ""
    cpu_cell = f"{sum(cpu.values()):.2f} s, both nodes" + (f"; {per_k}" if per_k else "")
    by_run = [(n, cpu.get(n, 0), sum(r["requests"] for r in runs("meshed", n))) for n in http]
    per_run = ", ".join(f"{n} {t / q * 1e6:,.1f}" for n, t, q in by_run if q)
    rss_cell = ", ".join(f"{node} {kib / 1024:.1f} MiB" for node, kib in sorted(last.items()))
else:
    cpu_cell = rss_cell = "not measured"
print(f"{'node proxies: CPU seconds during meshed runs':<{w}} {'-':<{c}} {cpu_cell}")
if last and per_run:
    print(f"{'  CPU ms per 1000 requests, by run':<{w}} {'-':<{c}} {per_run}")
print(f"{'node proxies: peak RSS':<{w}} {'-':<{c}} {rss_cell}")

# The waypoint: CPU over its runs, per 1000 requests, and its peak RSS.
wp_ticks, wp_hwm, wp_requests = 0, 0, 0
for before_file in sorted(glob.glob(os.path.join(out, "waypoint.*.before"))):
    after_file = before_file[: -len(".before")] + ".after"
    lines = [open(f).read().split() for f in (before_file, after_file) if os.path.exists(f)]
    if len(lines) == 2 and len(lines[0]) == 3 and len(lines[1]) == 3:
        (pid0, t0, _), (pid1, t1, h1) = lines
        wp_ticks += int(t1) - (int(t0) if pid0 == pid1 else 0)
        wp_hwm = max(wp_hwm, int(h1))
for n in ("http1", "http16"):
    wp_requests += sum(r["requests"] for r in runs("waypoint", n))
if wp_hwm:
    per_k = f"; {wp_ticks / tck / wp_requests * 1e6:,.1f} ms per 1000 requests" if wp_requests else ""
    print(f"{'waypoint: CPU seconds during its runs':<{w}} {'-':<{c}} {wp_ticks / tck:.2f} s{per_k}")
    print(f"{'waypoint: peak RSS':<{w}} {'-':<{c}} {wp_hwm / 1024:.1f} MiB")
else:
    print(f"{'waypoint: CPU and RSS':<{w}} {'-':<{c}} not measured")

def errors(path):
    counts = {n: sum(r["errors"] for r in runs(path, n)) for n in names}
    listed = ", ".join(f"{n} {v}" for n, v in counts.items() if v)
    return f"{sum(counts.values())}" + (f" ({listed})" if listed else "")
if any(runs("stunnel", n) for n in names):
    print(f"\n{'TLS relay pair: stunnel (OpenSSL, TLS 1.3)':<{w}} {'stunnel':<{c}} {'stunnel vs direct':<{d}} meshed vs stunnel")
    for label, name, get, (fmt, unit), target in rows:
        latency = unit == "us"
        print(f"{label:<{w}} {cell('stunnel', name, get, fmt, unit):<{c}} "
              f"{versus(name, get, latency, 'direct', 'stunnel'):<{d}} {versus(name, get, latency, 'stunnel', 'meshed')}")
print(f"\nerrors across all runs: direct {errors('direct')}, relay {errors('relay')}, meshed {errors('meshed')}, "
      f"waypoint {errors('waypoint')}" + (f", stunnel {errors('stunnel')}" if any(runs("stunnel", n) for n in names) else ""))
print(f"figures: `ambit exec -n {direct_ns}|{mesh_ns} client -- ambit app load ... -d {seconds}s -o json` from node-1 "
      f"to the server pod on node-2 (the relay path: through `ambit app relay` in both {direct_ns} pods), "
      f"BENCH_SECONDS={seconds}, 3 runs per path alternating direct, relay and meshed; targets are informational.")
PY

# The control plane, without the cluster (taken down first, so it adds no noise): one policy change to 10 node
# proxies' xDS streams with 10,000 workloads in the store, and the control plane's memory. The program
# (crates/ambit-control/examples/xds_propagation.rs) runs `$AMBIT control` on generated Kubernetes objects (an objects
# file and a config store), applies each policy change through its config API socket and prints its own rows; a
# missed target is reported, only a failed measurement fails the bench.
stop_relays
"$AMBIT" cluster down --name "$CLUSTER" >/dev/null 2>&1 || true
if [[ ${BENCH_CONTROL_PLANE:-1} == 0 ]]; then
  exit "$failed"
fi
if ! "${CARGO:-cargo}" build --release --locked --example xds_propagation -p ambit-control >"$out/build.log" 2>&1; then
  echo "bench: cannot build the control plane benchmark:" >&2
  sed 's/^/  /' "$out/build.log" >&2
  failed=1
elif ! "${CARGO_TARGET_DIR:-target}/release/examples/xds_propagation" "$AMBIT"; then
  echo "bench: the control plane measurement failed" >&2
  failed=1
fi
exit "$failed"
