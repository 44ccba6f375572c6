#!/usr/bin/env bash
# `make demo`: a two-node local cluster running the ambient mesh. Namespaces `demo` and `payments` are enrolled
# (their pods' TCP traffic goes through the node proxies over mTLS, HBONE on port 15008), `legacy` is not.
# Shows: traffic pod to pod across nodes, through the ClusterIP and by DNS name, load balancing, a short load run;
# the SPIFFE identities the node proxies hold; what crosses the wire (TLS to 15008 only, plaintext for the
# unenrolled pod); an ALLOW-by-principal AuthorizationPolicy and a STRICT PeerAuthentication at work; a DENY
# applied and deleted live with `ambit apply/get/describe/delete`; Istio's TCP metrics; the access log of a denial;
# a waypoint (L7) applied live: fail-closed before, then a route's response header, an L7 DENY by path (403) and
# Istio's request metrics; a running pod enrolled and released with `ambit label` (same processes); both node
# proxies upgraded under load
# with `ambit node upgrade` (no request fails); then a clean teardown, checked.
# Every step checks its outcome and fails the script if it is not the expected one: the demo is also a smoke test.
set -euo pipefail
AMBIT=${1:-target/release/ambit}
AMBIT=$(realpath "$AMBIT")
CLUSTER=demo
TD=cluster.local
cd "$(dirname "$0")/.."
export AMBIT_CLUSTER=$CLUSTER
TMP=$(mktemp -d)

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
note() { printf '\033[2m%s\033[0m\n' "$*"; }
fail() { printf '\n\033[1;31mDEMO FAILED: %s\033[0m\n' "$*" >&2; exit 1; }
cleanup() {
  "$AMBIT" cluster down --name "$CLUSTER" >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT

# curl from a pod: `from NS POD URL` prints the answer (or curl's error) and returns curl's status.
from() { "$AMBIT" exec -n "$1" "$2" -- curl -sS --max-time 5 "$3" 2>&1; }
# Right after `cluster up` the node proxies may not have seen the last readiness change yet.
retry() {
  local out i
  for i in $(seq 15); do
    if out=$("$@"); then printf '%s\n' "$out"; return 0; fi
    sleep 0.2
  done
  printf '%s\n' "$out"
  return 1
}
# A node proxy's admin (15000) or metrics (15020) endpoint, read from inside the node's namespace.
node_get() { ip netns exec "ambit.$CLUSTER.node.$1" curl -sS --max-time 5 "http://127.0.0.1:$2"; }
node_log() { printf '/run/ambit/%s/logs/system/node.%s.log' "$CLUSTER" "$1"; }
# pods NS: "name node ip" per pod.
pods() {
  "$AMBIT" get pods -n "$1" -o json | python3 -c '
import json,sys
for p in json.load(sys.stdin)["items"]:
    print(p["metadata"]["name"], p["spec"]["nodeName"], p["status"]["podIP"])'
}
first_line() { printf '%s\n' "$1" | head -n 1; }

say "Bringing up cluster '$CLUSTER' from examples/demo"
note "the control plane (CA) and one node proxy per node start with it; enrolled pods get in-pod capture"
"$AMBIT" cluster up -f examples/demo

say "Nodes, pods and services"
note "enrolled in ambient (istio.io/dataplane-mode=ambient): namespaces demo and payments; legacy is not"
"$AMBIT" get nodes
echo
"$AMBIT" get pods -A -o wide
echo
"$AMBIT" get services -A -o wide

read -r _ client_node client_ip < <(pods demo | awk '$1 == "client"') || fail "no pod demo/client"
read -r _ ledger_node _ < <(pods payments | awk '$1 == "ledger"') || fail "no pod payments/ledger"
read -r remote_pod remote_node remote_ip < <(pods demo | awk -v n="$client_node" '$1 ~ /^echo-/ && $2 != n' | head -n 1) ||
  fail "no echo pod on another node than the client's ($client_node)"
# The fabric port of a node is node<i>, i its position in the cluster's node list.
fabric_port=$("$AMBIT" get nodes -o json | python3 -c '
import json,sys
names=[n["metadata"]["name"] for n in json.load(sys.stdin)["items"]]
print("node%d" % names.index(sys.argv[1]))' "$client_node")

say "Pod to pod across nodes: client ($client_node) -> $remote_pod ($remote_node, $remote_ip)"
note "through both node proxies: captured in the client pod, carried over HBONE, delivered from the client's IP"
out=$(retry from demo client "http://$remote_ip:8080/hello") || fail "client -> $remote_pod: $out"
printf '%s\n' "$out"
grep -q "peer=$client_ip:" <<<"$out" || fail "the echo pod did not see the client's pod IP $client_ip"

say "Through the ClusterIP, by each DNS name form (svc, svc.ns, svc.ns.svc.cluster.local)"
for name in echo echo.demo echo.demo.svc.cluster.local; do
  out=$(retry from demo client "http://$name/") || fail "client -> http://$name/: $out"
  printf '%-32s -> %s\n' "$name" "$(first_line "$out")"
done

say "ClusterIP load balancing: 20 requests to http://echo/, answered by"
"$AMBIT" exec -n demo client -- sh -c 'for i in $(seq 20); do curl -sS --max-time 5 http://echo/ | head -n 1; done' \
  >"$TMP/lb.txt" || fail "a request to http://echo/ failed"
awk '{print $1}' "$TMP/lb.txt" | sort | uniq -c
[ "$(awk '{print $1}' "$TMP/lb.txt" | sort -u | grep -c '^pod=echo-')" = 2 ] ||
  fail "20 requests did not reach both echo pods"

say "Load: 4 keep-alive connections for 3 s from the client to http://echo/ (through the mesh)"
"$AMBIT" exec -n demo client -- ambit app load --url http://echo/ -c 4 -d 3s || fail "the load run failed"

say "Identities: the pods each node proxy serves and their SPIFFE certificates (from :15000/config_dump)"
note "issued by the CA of 'ambit control' to each node for the service accounts of the pods on that node only"
for node in node-1 node-2; do node_get "$node" 15000/config_dump >"$TMP/dump.$node.json" || fail "config dump of $node"; done
python3 - "$TMP" "$TD" <<'EOF' || fail "the node proxies do not serve the enrolled pods with their identities"
import json, sys
tmp, td = sys.argv[1], sys.argv[2]
expected = {"demo/client": "demo/sa/client", "demo/intruder": "demo/sa/intruder", "payments/ledger": "payments/sa/default"}
served, problems = {}, []
for node in ("node-1", "node-2"):
    dump = json.load(open(f"{tmp}/dump.{node}.json"))
    print(node)
    for p in dump["pods"]:
        name = p["uid"].split("/Pod/", 1)[1]
        served[name] = p["identity"]
        print(f"  pod  {name:<28} {p['identity']:<46} {p['state']}")
        if p["state"] != "Ready":
            problems.append(f"{node}: pod {name} is {p['state']}: {p['error']}")
    for c in dump["certificates"]:
        print(f"  cert {c['identity']:<75} {c['state']}, expires {c['not_after']}")
        if c["state"] != "Available":
            problems.append(f"{node}: certificate {c['identity']} is {c['state']}: {c['last_error']}")
for name, sa in expected.items():
    if served.get(name) != f"spiffe://{td}/ns/{sa}":
        problems.append(f"{name} is served as {served.get(name)}, expected spiffe://{td}/ns/{sa}")
if sum(n.startswith("demo/echo-") for n in served) != 2:
    problems.append("the two echo pods are not both served")
if "legacy/outsider" in served:
    problems.append("the unenrolled legacy/outsider is served by a node proxy")
for p in problems:
    print("  !", p)
sys.exit(1 if problems else 0)
EOF

# capture FILTER CMD...: tcpdump on the client node's fabric port while CMD runs, for ~2 s or 10 packets.
capture() {
  local filter=$1 pid i
  shift
  # `ip netns exec` execs tcpdump: $! is tcpdump's pid.
  ip netns exec "ambit.$CLUSTER.fabric" tcpdump -i "$fabric_port" -n -l -A -c 10 "$filter" \
    >"$TMP/cap.txt" 2>"$TMP/cap.err" &
  pid=$!
  for i in $(seq 100); do grep -q 'listening on' "$TMP/cap.err" && break; sleep 0.1; done
  grep -q 'listening on' "$TMP/cap.err" || fail "tcpdump did not start: $(cat "$TMP/cap.err")"
  "$@" >/dev/null || fail "the traffic for the capture failed: $*"
  for i in $(seq 20); do grep -q ') [RSD]' "/proc/$pid/stat" 2>/dev/null || break; sleep 0.1; done
  kill -INT "$pid" 2>/dev/null || true
  wait "$pid" || true
  # The packet lines (the payloads, printed by -A for the checks, are left out).
  grep -aE '^[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]+ IP ' "$TMP/cap.txt" | cut -c 1-110 >"$TMP/cap.lines" || true
}
three_requests() { for _ in 1 2 3; do from "$@" || return 1; done; }

say "mTLS on the wire: tcpdump on $client_node's fabric port ($fabric_port) while the client calls $remote_ip:8080"
note "pod IPs appear only with port 15008: the request (GET /SECRET-7f3a) travels inside TLS 1.3 (HBONE)"
capture 'tcp and net 10.244.0.0/16' three_requests demo client "http://$remote_ip:8080/SECRET-7f3a"
cat "$TMP/cap.lines"
grep -q "IP $client_ip\.[0-9]* > $remote_ip\.15008:" "$TMP/cap.lines" || fail "no packet from the client to $remote_ip:15008"
if grep -vE '\.15008( >|:)' "$TMP/cap.lines"; then fail "the packets above are pod traffic outside HBONE"; fi
if grep -aq 'SECRET-7f3a' "$TMP/cap.txt"; then fail "the enrolled client's request crossed the fabric in plaintext"; fi

say "For contrast: the unenrolled legacy/outsider calls $remote_ip:8080 (PERMISSIVE accepts plaintext)"
note "the same kind of request crosses the fabric to port 8080, readable by anyone on the path"
capture 'tcp port 8080' from legacy outsider "http://$remote_ip:8080/PLAIN-19c2"
head -n 4 "$TMP/cap.lines"
grep -aom1 'GET /PLAIN-19c2 HTTP/1.1' "$TMP/cap.txt" | sed 's/^/    payload: /' ||
  fail "the outsider's plaintext request was not seen on the fabric (so the capture proves nothing)"

say "Policy: ledger ALLOWs only principal $TD/ns/demo/sa/client; payments is STRICT"
note "checked by ledger's node proxy ($ledger_node) on each connection, before the app sees it"
check() { # check NS POD URL allowed|denied WHY
  local out
  if out=$(from "$1" "$2" "$3"); then
    [ "$4" = allowed ] || fail "$1/$2 -> $3 should be denied ($5) but got: $(first_line "$out")"
    printf '%-16s -> %-22s allowed  %-34s %s\n' "$1/$2" "${3#http://}" "($5)" "$(first_line "$out" | cut -d' ' -f1)"
  else
    [ "$4" = denied ] || fail "$1/$2 -> $3 should be allowed ($5) but failed: $out"
    printf '%-16s -> %-22s denied   %-34s %s\n' "$1/$2" "${3#http://}" "($5)" "$out"
  fi
}
retry from demo client http://ledger.payments/ >/dev/null || true
check demo client http://ledger.payments/ allowed "principal named by the policy"
check demo intruder http://ledger.payments/ denied "mTLS, but principal not allowed"
check legacy outsider http://ledger.payments/ denied "plaintext: STRICT needs mTLS"
check legacy outsider http://echo.demo/ allowed "demo is PERMISSIVE: plaintext ok"

say "Live config: ambit apply a DENY for demo/intruder -> echo, look at it, then ambit delete it"
note "the control plane validates, stores and translates it; both node proxies enforce it within a second"
check demo intruder http://echo.demo/ allowed "no policy on echo yet"
cat >"$TMP/deny-intruder.yaml" <<EOF
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-intruder
  namespace: demo
spec:
  selector:
    matchLabels: {app: echo}
  action: DENY
  rules:
  - from:
    - source:
        principals: [$TD/ns/demo/sa/intruder]
EOF
"$AMBIT" apply -f "$TMP/deny-intruder.yaml" || fail "ambit apply failed"
sleep 1
check demo intruder http://echo.demo/ denied "DENY by principal, applied 1 s ago"
check demo client http://echo.demo/ allowed "another principal"
"$AMBIT" get authorizationpolicies -A
read -r echo_pod _ < <(pods demo | awk '$1 ~ /^echo-/' | head -n 1)
"$AMBIT" describe pod "$echo_pod" -n demo --peer "spiffe://$TD/ns/demo/sa/intruder" --port 8080 ||
  fail "ambit describe pod failed"
note "an invalid policy is refused whole, with the field and the reason; nothing changes:"
sed "s|principals: \[$TD|principals: [spiffe://$TD|" "$TMP/deny-intruder.yaml" >"$TMP/bad.yaml"
if "$AMBIT" apply -f "$TMP/bad.yaml"; then fail "an invalid policy was accepted"; fi
"$AMBIT" delete -f "$TMP/deny-intruder.yaml" || fail "ambit delete failed"
sleep 1
check demo intruder http://echo.demo/ allowed "the DENY was deleted 1 s ago"

say "The denials in ledger's node proxy access log ($ledger_node)"
note "one line per connection; the fields kept here: who, to what, and why it was refused"
for _ in $(seq 10); do
  grep -q 'src.workload="outsider".*error="denied' "$(node_log "$ledger_node")" && break
  sleep 0.1
done
{ grep 'error="denied' "$(node_log "$ledger_node")" || true; } | python3 -c '
import re,sys
for line in sys.stdin:
    f = dict(re.findall(r"(\S+)=\"([^\"]*)\"", line))
    print(line.split()[1], "src=%s/%s" % (f.get("src.namespace"), f.get("src.workload")),
          "identity=%s" % f.get("src.identity", "(none: plaintext)"),
          "dst=%s/%s" % (f.get("dst.namespace"), f.get("dst.workload")), f.get("direction"))
    print("      error=%s" % f.get("error"))' | tee "$TMP/denials.txt"
grep -q 'src=demo/intruder' "$TMP/denials.txt" || fail "the intruder's denial is not in the access log"
grep -q 'src=legacy/outsider' "$TMP/denials.txt" || fail "the outsider's denial is not in the access log"

say "Metrics: Istio's istio_tcp_* series from each node proxy's :15020/metrics"
note "summed per node, reporter and peers (principals without the spiffe://$TD/ prefix; 'unknown' = plaintext)"
for node in node-1 node-2; do node_get "$node" 15020/metrics >"$TMP/metrics.$node.txt" || fail "metrics of $node"; done
python3 - "$TMP" "$TD" "$client_node" "$ledger_node" <<'EOF' || fail "the metrics lack the expected series"
import collections, re, sys
tmp, td, client_node, ledger_node = sys.argv[1:]
short = lambda p: p.replace(f"spiffe://{td}/", "")
rows = collections.Counter()
for node in ("node-1", "node-2"):
    for line in open(f"{tmp}/metrics.{node}.txt"):
        m = re.match(r"(istio_tcp_connections_(?:opened|failed)_total)\{(.*)\} (\S+)$", line)
        if not m:
            continue
        l = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        key = (m.group(1), node, l["reporter"], short(l["source_principal"]), short(l["destination_principal"]),
               l["connection_security_policy"], l["response_flags"])
        rows[key] += float(m.group(3))
fmt = "  {:<7} {:<12} {:<22} {:<22} {:<11} {:>5}"
for metric in ("istio_tcp_connections_opened_total", "istio_tcp_connections_failed_total"):
    print(metric)
    print(fmt.format("node", "reporter", "source_principal", "destination_principal", "security", "count"),
          "response_flags" if "failed" in metric else "")
    for key, n in sorted(rows.items()):
        if key[0] == metric:
            print(fmt.format(*key[1:6], int(n)), key[6] if "failed" in metric else "")
def has(metric, node, reporter, src, dst, security, flags=None):
    ok = any(k[:6] == (metric, node, reporter, src, dst, security) and (flags is None or k[6] == flags) for k in rows)
    if not ok:
        print(f"  ! missing: {metric} node={node} reporter={reporter} {src} -> {dst} {security} {flags or ''}")
    return ok
opened, failed = "istio_tcp_connections_opened_total", "istio_tcp_connections_failed_total"
ledger = "ns/payments/sa/default"
checks = [
    has(opened, client_node, "source", "ns/demo/sa/client", ledger, "mutual_tls"),
    has(opened, ledger_node, "destination", "ns/demo/sa/client", ledger, "mutual_tls"),
    has(failed, ledger_node, "destination", "ns/demo/sa/intruder", ledger, "mutual_tls", "DENY"),
    has(failed, ledger_node, "destination", "unknown", ledger, "unknown", "DENY"),
]
sys.exit(0 if all(checks) else 1)
EOF

say "Waypoint (L7): echo-l7 is bound to waypoint 'waypoint', which does not exist yet: its traffic fails closed"
if from demo client http://echo-l7.demo/ >/dev/null; then fail "echo-l7 answered without its waypoint"; fi
echo "client -> http://echo-l7.demo/: refused (the node proxy does not bypass a missing waypoint)"
note "ambit apply: the waypoint Gateway, an HTTPRoute adding a response header, a DENY of /admin* on echo-l7"
"$AMBIT" apply -f - <<'EOF' || fail "ambit apply of the waypoint failed"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: demo}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: echo-l7, namespace: demo}
spec:
  parentRefs: [{group: "", kind: Service, name: echo-l7}]
  rules:
  - backendRefs: [{name: echo, port: 80}]
    filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier: {add: [{name: x-routed-by, value: demo-waypoint}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: demo}
spec:
  targetRefs: [{group: "", kind: Service, name: echo-l7}]
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin*"]}}]
EOF
waypoint_pod=""
for _ in $(seq 100); do
  waypoint_pod=$("$AMBIT" get pods -n demo | awk '$1 ~ /^waypoint-/ && $2 == "1/1" {print $1}')
  [ -n "$waypoint_pod" ] && break
  sleep 0.2
done
[ -n "$waypoint_pod" ] || fail "the waypoint's pod did not become ready"
echo "the cluster deployed the waypoint's pod: demo/$waypoint_pod"
retry from demo client http://echo-l7.demo/ >/dev/null || fail "echo-l7 does not answer through its waypoint"
"$AMBIT" exec -n demo client -- curl -sS -D - -o /dev/null --max-time 5 http://echo-l7.demo/ |
  grep -iE '^(HTTP/|x-routed-by|x-echo-pod)' | sed 's/^/  /' | tee "$TMP/l7.txt"
grep -qi 'x-routed-by: demo-waypoint' "$TMP/l7.txt" || fail "the route's response header is missing"
denied=$("$AMBIT" exec -n demo client -- curl -sS --max-time 5 -w ' (%{http_code})' http://echo-l7.demo/admin/users)
echo "  client -> http://echo-l7.demo/admin/users: $denied"
[[ $denied == *"(403)" && $denied == *"demo/no-admin"* ]] || fail "the L7 DENY did not answer 403 naming the policy"
note "the waypoint's istio_requests_total (reporter=waypoint), by response code"
"$AMBIT" exec -n demo "$waypoint_pod" -- curl -sS --max-time 5 http://127.0.0.1:15020/metrics |
  python3 -c '
import collections, re, sys
rows = collections.Counter()
for line in sys.stdin:
    m = re.match(r"istio_requests_total\{(.*)\} (\S+)$", line)
    if m:
        l = dict(re.findall(r"(\w+)=\"([^\"]*)\"", m.group(1)))
        rows[(l["reporter"], l["source_workload"], l["destination_service_name"], l["response_code"])] += float(m.group(2))
for (reporter, src, svc, code), n in sorted(rows.items()):
    print(f"  reporter={reporter} source={src} service={svc} code={code}: {int(n)}")
sys.exit(0 if any(k[3] == "403" for k in rows) and any(k[3] == "200" for k in rows) else 1)' ||
  fail "the waypoint's request metrics lack the 200 and 403 series"

say "Enroll a running pod without restarting it: ambit label pod outsider -n legacy istio.io/dataplane-mode=ambient"
note "node-1's agent installs capture inside the pod, hands its namespace to the node proxy over ZDS, then marks it"
# The pod's app processes (the agent's own short-lived ip/nft commands also run in its namespace).
pod_pids() {
  local pid
  for pid in $(ip netns pids "ambit.$CLUSTER.pod.$1.$2" | sort -n); do
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$3" ]; then printf '%s ' "$pid"; fi
  done
}
enrolled() { "$AMBIT" describe pod "$2" -n "$1" 2>/dev/null | grep -q 'enrolled (HBONE)'; }
before=$(pod_pids legacy outsider sleep)
"$AMBIT" label pod outsider -n legacy istio.io/dataplane-mode=ambient || fail "ambit label failed"
for _ in $(seq 50); do enrolled legacy outsider && break; sleep 0.2; done
enrolled legacy outsider || fail "the agent did not enroll legacy/outsider"
"$AMBIT" describe pod outsider -n legacy | grep -E '^(Name|Mesh|Identity)' || true
retry from legacy outsider http://echo.demo/ >/dev/null || fail "legacy/outsider cannot reach echo after enrolling"
check legacy outsider http://echo.demo/ allowed "enrolled now: mTLS as legacy/sa/default"
after=$(pod_pids legacy outsider sleep)
echo "outsider's processes before: $before  after: $after"
[ "$before" = "$after" ] || fail "enrolling restarted the pod's processes"
"$AMBIT" label pod outsider -n legacy istio.io/dataplane-mode- || fail "ambit label (remove) failed"
for _ in $(seq 50); do enrolled legacy outsider || break; sleep 0.2; done
enrolled legacy outsider && fail "the agent did not release legacy/outsider"
retry from legacy outsider http://echo.demo/ >/dev/null || fail "legacy/outsider cannot reach echo after leaving"
check legacy outsider http://echo.demo/ allowed "left the mesh: plaintext again"
[ "$before" = "$(pod_pids legacy outsider sleep)" ] || fail "leaving the mesh restarted the pod's processes"
echo "agent metrics ($client_node):"
ip netns exec "ambit.$CLUSTER.node.$client_node" sh -c \
  "curl -sS --max-time 5 http://\$(ip -4 -o addr show eth0 | awk '{print \$4}' | cut -d/ -f1):15014/metrics" |
  grep -E '^ambit_agent_(enrolled_pods|capture_repairs_total|zds_connections)' | sed 's/^/  /'

say "Upgrade both node proxies while the client keeps opening connections: ambit node upgrade --node NODE"
note "a new instance starts beside the old one, takes over the pods; the old one drains and exits; no request fails"
"$AMBIT" exec -n demo client -- ambit app load --url http://echo/ --new-connection --rate 200 --duration 6s -o json \
  >"$TMP/upgrade-load.json" 2>/dev/null &
load=$!
sleep 1
for node in node-1 node-2; do "$AMBIT" node upgrade --node "$node" || fail "ambit node upgrade --node $node failed"; done
wait "$load" || fail "the load during the upgrades did not run"
python3 - "$TMP/upgrade-load.json" <<'EOF' || fail "requests failed during the upgrades"
import json, sys
r = json.load(open(sys.argv[1]))
print(f"  {r['requests']} requests over new connections during the upgrades, {r['errors']} failed")
sys.exit(0 if r["errors"] == 0 and r["requests"] > 0 else 1)
EOF

say "Logs of the client pod"
"$AMBIT" logs -n demo client

say "Tearing down"
"$AMBIT" cluster down --name "$CLUSTER"
trap - EXIT
rm -rf "$TMP"
left=$(ip netns list | grep -c "^ambit\.$CLUSTER\." || true)
supervisors=$(pgrep -fc "ambit cluster supervise --name $CLUSTER\$" || true)
proxies=$(pgrep -fc "ambit node .*--cluster $CLUSTER( |\$)" || true)
agents=$(pgrep -fc "ambit agent .*/run/ambit/$CLUSTER/" || true)
controls=$(pgrep -fc "ambit control .*/run/ambit/$CLUSTER/" || true)
if [ "$left" != 0 ] || [ "$supervisors" != 0 ] || [ "$proxies" != 0 ] || [ "$agents" != 0 ] || [ "$controls" != 0 ] ||
  [ -e "/run/ambit/$CLUSTER" ]; then
  fail "teardown left $left namespaces, $supervisors supervisor, $proxies node proxy, $agents agent and $controls control processes"
fi
echo "nothing left behind: no namespace, link, file or process (supervisor, control plane, node agent, node proxy) of '$CLUSTER'"
say "Demo done in ${SECONDS} s"
