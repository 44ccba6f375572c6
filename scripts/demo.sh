#!/usr/bin/env bash
# `make demo`: a two-node local cluster with a client and a two-replica echo service; traffic pod to pod across
# nodes, through the ClusterIP and by DNS name; a short load run; then a clean teardown, checked.
set -euo pipefail
AMBIT=${1:-target/release/ambit}
AMBIT=$(realpath "$AMBIT")
CLUSTER=demo
cd "$(dirname "$0")/.."

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
cleanup() { "$AMBIT" cluster down --name "$CLUSTER" >/dev/null 2>&1 || true; }
trap cleanup EXIT

say "Bringing up cluster '$CLUSTER' from examples/demo"
"$AMBIT" cluster up -f examples/demo
export AMBIT_CLUSTER=$CLUSTER

say "Nodes, pods and services"
"$AMBIT" get nodes
echo
"$AMBIT" get pods -n demo -o wide
echo
"$AMBIT" get services -n demo -o wide

client_node=$("$AMBIT" get pods -n demo -o json | python3 -c '
import json,sys
for p in json.load(sys.stdin)["items"]:
    if p["metadata"]["name"] == "client": print(p["spec"]["nodeName"])')
read -r remote_pod remote_ip < <("$AMBIT" get pods -n demo -o json | python3 -c '
import json,sys
node=sys.argv[1]
for p in json.load(sys.stdin)["items"]:
    if p["metadata"].get("labels",{}).get("app")=="echo" and p["spec"]["nodeName"]!=node:
        print(p["metadata"]["name"], p["status"]["podIP"]); break' "$client_node")

say "Pod to pod across nodes: client ($client_node) -> $remote_pod ($remote_ip) with curl"
"$AMBIT" exec -n demo client -- curl -sS --max-time 5 "http://$remote_ip:8080/hello"

say "Through the ClusterIP, by each DNS name form (svc, svc.ns, svc.ns.svc.cluster.local)"
for name in echo echo.demo echo.demo.svc.cluster.local; do
  printf '%-32s -> ' "$name"
  "$AMBIT" exec -n demo client -- curl -sS --max-time 5 "http://$name/" | head -n 1
done

say "ClusterIP load balancing: 20 requests to http://echo/, answered by"
"$AMBIT" exec -n demo client -- sh -c 'for i in $(seq 20); do curl -sS --max-time 5 http://echo/ | head -n 1; done' \
  | awk '{print $1}' | sort | uniq -c

say "Load: 4 keep-alive connections for 3 s from the client to http://echo/"
"$AMBIT" exec -n demo client -- ambit app load --url http://echo/ -c 4 -d 3s

say "Logs of the client pod"
"$AMBIT" logs -n demo client

say "Tearing down"
"$AMBIT" cluster down --name "$CLUSTER"
trap - EXIT
left=$(ip netns list | grep -c "^ambit\.$CLUSTER\." || true)
procs=$(pgrep -fc "cluster supervise --name $CLUSTER" || true)
if [ "$left" != 0 ] || [ "$procs" != 0 ] || [ -e "/run/ambit/$CLUSTER" ]; then
  echo "teardown left $left namespaces and $procs supervisor processes" >&2
  exit 1
fi
echo "nothing left behind: no ambit namespace, link, file or process of cluster '$CLUSTER'"
say "Demo done"
