//! The indexes, the serialized form, what building refuses (with the field) and the references it only reports.

use ambit_policy::Scope;

use super::*;
use crate::state::fixtures::{endpoint, ip, key, pod, policy, service, snapshot, uid};
use crate::state::model::{GatewayAddress, Namespace};

fn example() -> Snapshot {
    let a = endpoint(pod("a", "10.0.1.1"), "echo", &[(80, 8080)]);
    let b = endpoint(pod("b", "10.0.1.2"), "echo", &[]);
    let c = pod("c", "fd00::1:3");
    let echo = service("echo", "10.96.0.10", &[(80, 8080)]);
    let mut other_echo = service("echo", "10.96.0.11", &[(80, 8080)]);
    other_echo.namespace = Namespace::new("other").unwrap();
    let policies = vec![policy("demo", "allow", Scope::Namespace)];
    Snapshot::new(7, vec![a, b, c], vec![echo, other_echo], policies).unwrap()
}

#[test]
fn indexes_find_workloads_services_endpoints_and_policies() {
    let snapshot = example();
    assert_eq!(snapshot.version(), 7);
    assert_eq!(snapshot.workload_by_ip(ip("10.0.1.2")).map(|w| &w.uid), Some(&uid("b")));
    assert_eq!(
        snapshot.workload_by_ip(ip("::ffff:10.0.1.2")).map(|w| &w.uid),
        Some(&uid("b"))
    );
    assert_eq!(
        snapshot.workload_by_ip(ip("fd00::1:3")).map(|w| &w.uid),
        Some(&uid("c"))
    );
    assert!(snapshot.workload_by_ip(ip("10.96.0.10")).is_none());
    assert_eq!(snapshot.workload(&uid("a")).map(|w| w.name.as_str()), Some("a"));
    assert_eq!(
        snapshot.service_by_vip(ip("10.96.0.10")).map(Service::key),
        Some(key("echo"))
    );
    assert!(snapshot.service_by_vip(ip("10.0.1.1")).is_none());
    assert_eq!(
        snapshot.service(&key("echo")).map(|s| s.addresses[0].address),
        Some(ip("10.96.0.10"))
    );
    let hostname = Hostname::new("echo.demo.svc.cluster.local").unwrap();
    let namespaces: Vec<_> = snapshot
        .services_by_hostname(&hostname)
        .map(|s| s.namespace.as_str())
        .collect();
    assert_eq!(namespaces, ["demo", "other"]);
    let endpoints: Vec<_> = snapshot.endpoints(&key("echo")).map(|w| w.name.as_str()).collect();
    assert_eq!(endpoints, ["a", "b"]);
    assert_eq!(snapshot.endpoints(&key("nothing")).count(), 0);
    assert!(snapshot.policy(&PolicyRef::new("demo", "allow")).is_some());
    assert_eq!(Snapshot::default().version(), 0);
}

#[test]
fn round_trips_through_json_and_rebuilds_its_indexes() {
    let snapshot = example();
    let json = serde_json::to_value(&snapshot).unwrap();
    assert_eq!(json["version"], 7);
    assert_eq!(json["workloads"][0]["uid"], "Kubernetes//Pod/demo/a");
    let back: Snapshot = serde_json::from_value(json).unwrap();
    assert_eq!(back, snapshot);
    assert_eq!(back.workload_by_ip(ip("10.0.1.1")).map(|w| &w.uid), Some(&uid("a")));
}

#[test]
fn deserializing_an_inconsistent_snapshot_fails() {
    let json = serde_json::json!({"workloads": [
        {"uid": "u", "namespace": "demo"},
        {"uid": "u", "namespace": "demo"},
    ]});
    let error = serde_json::from_value::<Snapshot>(json).unwrap_err();
    assert_eq!(
        error.to_string(),
        "workloads[1].uid: \"u\" is also the uid of workloads[0]"
    );
}

/// Builds the example with one change, expecting the error text.
fn refused(edit: impl FnOnce(&mut Vec<Workload>, &mut Vec<Service>, &mut Vec<Authorization>)) -> String {
    let (mut workloads, mut services, mut policies) = {
        let s = example();
        let workloads = s.workloads().iter().map(|w| Workload::clone(w)).collect::<Vec<_>>();
        (workloads, s.services().to_vec(), s.policies().to_vec())
    };
    edit(&mut workloads, &mut services, &mut policies);
    Snapshot::new(1, workloads, services, policies).unwrap_err().to_string()
}

#[test]
fn inconsistent_snapshots_are_refused_with_the_field() {
    type Edit = Box<dyn FnOnce(&mut Vec<Workload>, &mut Vec<Service>, &mut Vec<Authorization>)>;
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|w, _, _| w.push(pod("a", "10.0.2.1"))),
            "workloads[3].uid: \"Kubernetes//Pod/demo/a\" is also the uid of workloads[0]",
        ),
        (
            Box::new(|w, _, _| w.push(pod("d", "10.0.1.2"))),
            "workloads[3].addresses[0]: 10.0.1.2 is also an address of workloads[1]",
        ),
        (
            Box::new(|w, _, _| w[2].addresses.push(ip("::ffff:10.0.1.1"))),
            "workloads[2].addresses[1]: ::ffff:10.0.1.1 is also an address of workloads[0]",
        ),
        (
            Box::new(|_, s, _| s[1].addresses[0].address = ip("10.0.1.1")),
            "services[1].addresses[0].address: 10.0.1.1 is also an address of workloads[0]",
        ),
        (
            Box::new(|_, s, _| s.push(service("echo", "10.96.0.12", &[]))),
            "services[2]: demo/echo.demo.svc.cluster.local is also the key of services[0]",
        ),
        (
            Box::new(|_, s, _| s[0].ports[0].service_port = 0),
            "services[0].ports[0].service_port: 0 is not a port: use 1 to 65535",
        ),
        (
            Box::new(|_, s, _| {
                let port = s[0].ports[0];
                s[0].ports.push(port);
            }),
            "services[0].ports[1].service_port: port 80 is also in services[0].ports[0]",
        ),
        (
            Box::new(|w, _, _| w[0] = endpoint(w[0].clone(), "echo", &[(0, 8080)])),
            "workloads[0].services[\"demo/echo.demo.svc.cluster.local\"][0].service_port: 0 is not a port: use 1 to \
             65535",
        ),
        (
            Box::new(|_, s, _| {
                let mut waypoint = GatewayAddress::hostname(key("waypoint"));
                waypoint.hbone_mtls_port = 0;
                s[0].waypoint = Some(waypoint);
            }),
            "services[0].waypoint.hbone_mtls_port: 0 is not a port: use 1 to 65535",
        ),
        (
            Box::new(|_, _, p| p.push(p[0].clone())),
            "policies[1]: demo/allow is also the name of policies[0]",
        ),
    ];
    for (edit, want) in cases {
        assert_eq!(refused(edit), want);
    }
}

#[test]
fn missing_policies_and_services_are_reported_not_refused() {
    let mut a = endpoint(pod("a", "10.0.1.1"), "gone", &[(80, 8080)]);
    a.authorization_policies = vec![PolicyRef::new("demo", "allow"), PolicyRef::new("demo", "later")];
    let snapshot = Snapshot::new(
        1,
        vec![a],
        Vec::new(),
        vec![policy("demo", "allow", Scope::WorkloadSelector)],
    );
    let unresolved: Vec<_> = snapshot.unwrap().unresolved().iter().map(ToString::to_string).collect();
    assert_eq!(
        unresolved,
        [
            "workloads[0].authorization_policies[1]: there is no policy demo/later; it is ignored until it arrives",
            "workloads[0].services[\"demo/gone.demo.svc.cluster.local\"]: there is no service \
             demo/gone.demo.svc.cluster.local; it is ignored until it arrives",
        ]
    );
    assert!(snapshot_without_references().unresolved().is_empty());
}

fn snapshot_without_references() -> Snapshot {
    snapshot(vec![pod("a", "10.0.1.1")], Vec::new())
}
