//! Round trips of fully populated resources, the proto's defaults, the fields the node proxy ignores, and the exact
//! error of each resource it refuses.

use std::collections::BTreeMap;

use super::*;
use crate::state::fixtures::{ip, key, ns, service, uid};

fn full_workload() -> Workload {
    let mut w = Workload::new(uid("reviews-1"), ns("demo"));
    w.name = "reviews-1".to_string();
    w.addresses = vec![ip("10.244.1.2"), ip("fd00::2")];
    w.network = "net-1".to_string();
    w.tunnel_protocol = TunnelProtocol::Hbone;
    w.trust_domain = TrustDomain::new("example.org").unwrap();
    w.service_account = ServiceAccount::new("reviews").unwrap();
    w.waypoint = Some(GatewayAddress::hostname(key("waypoint")));
    w.node = "node-1".to_string();
    w.canonical_name = "reviews".to_string();
    w.canonical_revision = "v1".to_string();
    w.workload_type = WorkloadType::Job;
    w.workload_name = "reviews-job".to_string();
    let mapping = |service_port, target_port| PortMapping {
        service_port,
        target_port,
    };
    w.services = BTreeMap::from([
        (key("reviews"), vec![mapping(80, 9080), mapping(443, 0)]),
        (key("all"), Vec::new()),
    ]);
    w.authorization_policies = vec![
        PolicyRef::new("demo", "allow-a"),
        PolicyRef::new("istio-system", "mesh"),
    ];
    w.status = WorkloadStatus::Unhealthy;
    w.cluster_id = "Kubernetes".to_string();
    w.locality = Some(Locality {
        region: "r".to_string(),
        zone: "z".to_string(),
        subzone: "s".to_string(),
    });
    w.capacity = 3;
    w
}

fn full_service() -> Service {
    let mut s = service("reviews", "10.96.0.20", &[]);
    s.addresses.push(NetworkAddress {
        network: "net-1".to_string(),
        address: ip("fd00::20"),
    });
    let port = |service_port, target_port, app_protocol| Port {
        service_port,
        target_port,
        app_protocol,
    };
    s.ports = vec![
        port(80, 9080, AppProtocol::Http11),
        port(81, 0, AppProtocol::Http2),
        port(82, 9082, AppProtocol::Grpc),
        port(83, 9083, AppProtocol::Tcp),
        port(443, 9443, AppProtocol::Tls),
        port(84, 9084, AppProtocol::Unknown),
    ];
    s.subject_alt_names = vec!["spiffe://cluster.local/ns/demo/sa/reviews".parse().unwrap()];
    s.waypoint = Some(GatewayAddress {
        destination: GatewayDestination::Address(NetworkAddress {
            network: String::new(),
            address: ip("10.244.9.9"),
        }),
        hbone_mtls_port: 15009,
    });
    s.load_balancing = Some(LoadBalancing {
        routing_preference: vec![
            LoadBalancingScope::Network,
            LoadBalancingScope::Region,
            LoadBalancingScope::Zone,
            LoadBalancingScope::Subzone,
            LoadBalancingScope::Node,
            LoadBalancingScope::Cluster,
        ],
        mode: LoadBalancingMode::Failover,
        health_policy: HealthPolicy::AllowAll,
    });
    s
}

fn net(text: &str) -> IpNet {
    text.parse().unwrap()
}

fn exact(value: &str) -> StringMatch {
    StringMatch::Exact(value.to_string())
}

/// Every match field set; group 0 has two clauses, and the first match of clause 1 has three principals.
fn full_authorization() -> Authorization {
    let full = Match {
        namespaces: vec![exact("demo"), StringMatch::Prefix("team-".to_string())],
        not_namespaces: vec![StringMatch::Suffix("-test".to_string())],
        principals: vec![
            exact("cluster.local/ns/demo/sa/a"),
            StringMatch::Presence,
            StringMatch::Prefix("cluster.local/".to_string()),
        ],
        not_principals: vec![exact("cluster.local/ns/demo/sa/b")],
        source_ips: vec![net("10.244.0.0/16"), net("fd00::/8")],
        not_source_ips: vec![net("10.244.1.2/32")],
        destination_ips: vec![net("10.96.0.0/12")],
        not_destination_ips: vec![net("0.0.0.0/0")],
        destination_ports: vec![80, 65535],
        not_destination_ports: vec![0],
        service_accounts: vec![ServiceAccountMatch::new("demo", "a")],
        not_service_accounts: vec![ServiceAccountMatch::new("demo", "b")],
    };
    let ports = Match {
        destination_ports: vec![9080],
        ..Match::default()
    };
    let group = Group {
        clauses: vec![
            Clause { matches: vec![ports] },
            Clause {
                matches: vec![full, Match::default()],
            },
        ],
    };
    Authorization {
        name: "deny-b".to_string(),
        namespace: "demo".to_string(),
        scope: Scope::WorkloadSelector,
        action: Action::Deny,
        groups: vec![
            group,
            Group::default(),
            Group {
                clauses: vec![Clause::default()],
            },
        ],
        dry_run: true,
    }
}

#[test]
fn fully_populated_resources_round_trip() {
    let workload = full_workload();
    assert_eq!(Workload::try_from(pb::Workload::from(&workload)), Ok(workload));
    let service = full_service();
    assert_eq!(Service::try_from(pb::Service::from(&service)), Ok(service));
    let policy = full_authorization();
    assert_eq!(decode_authorization(encode_authorization(&policy)), Ok(policy));
}

#[test]
fn minimal_resources_round_trip() {
    let workload = Workload::new(uid("a"), ns("demo"));
    assert_eq!(Workload::try_from(pb::Workload::from(&workload)), Ok(workload));
    let service = Service::new("", ns("demo"), Hostname::new("a.example.com").unwrap());
    assert_eq!(Service::try_from(pb::Service::from(&service)), Ok(service));
    let mut policy = full_authorization();
    (policy.scope, policy.action, policy.groups, policy.dry_run) = (Scope::Global, Action::Allow, Vec::new(), false);
    assert_eq!(decode_authorization(encode_authorization(&policy)), Ok(policy));
}

#[test]
fn every_enum_value_round_trips() {
    let kinds = [
        WorkloadType::Deployment,
        WorkloadType::Cronjob,
        WorkloadType::Pod,
        WorkloadType::Job,
    ];
    let statuses = [WorkloadStatus::Healthy, WorkloadStatus::Unhealthy];
    let tunnels = [TunnelProtocol::None, TunnelProtocol::Hbone];
    for ((kind, status), tunnel) in kinds
        .into_iter()
        .zip(statuses.into_iter().cycle())
        .zip(tunnels.into_iter().cycle())
    {
        let mut w = full_workload();
        (w.workload_type, w.status, w.tunnel_protocol) = (kind, status, tunnel);
        assert_eq!(Workload::try_from(pb::Workload::from(&w)), Ok(w));
    }
    let modes = [
        LoadBalancingMode::Unspecified,
        LoadBalancingMode::Strict,
        LoadBalancingMode::Failover,
        LoadBalancingMode::Passthrough,
    ];
    let policies = [HealthPolicy::OnlyHealthy, HealthPolicy::AllowAll];
    for (mode, health_policy) in modes.into_iter().zip(policies.into_iter().cycle()) {
        let mut s = full_service();
        s.load_balancing = Some(LoadBalancing {
            routing_preference: Vec::new(),
            mode,
            health_policy,
        });
        assert_eq!(Service::try_from(pb::Service::from(&s)), Ok(s));
    }
    for scope in [Scope::Global, Scope::Namespace, Scope::WorkloadSelector] {
        for action in [Action::Allow, Action::Deny] {
            let policy = Authorization {
                scope,
                action,
                ..full_authorization()
            };
            assert_eq!(decode_authorization(encode_authorization(&policy)), Ok(policy));
        }
    }
}

#[test]
fn addresses_wrap_workloads_and_services() {
    for resource in [
        AddressResource::Workload(full_workload()),
        AddressResource::Service(full_service()),
    ] {
        assert_eq!(AddressResource::try_from(pb::Address::from(&resource)), Ok(resource));
    }
    let empty = AddressResource::try_from(pb::Address { r#type: None }).unwrap_err();
    assert_eq!(empty.to_string(), "address: sets neither workload nor service");
    let mut bad = pb::Workload::from(&full_workload());
    bad.uid.clear();
    let bad = pb::Address {
        r#type: Some(pb::address::Type::Workload(bad)),
    };
    assert_eq!(
        AddressResource::try_from(bad).unwrap_err().to_string(),
        "workload.uid: the uid must not be empty"
    );
}

#[test]
fn encoding_follows_the_protos_conventions() {
    let w = pb::Workload::from(&full_workload());
    assert_eq!(w.addresses, [vec![10, 244, 1, 2], ip_bytes(ip("fd00::2"))]);
    assert_eq!(w.capacity, Some(3));
    assert_eq!(
        w.services.keys().collect::<Vec<_>>(),
        ["demo/all.demo.svc.cluster.local", "demo/reviews.demo.svc.cluster.local"]
    );
    assert_eq!(w.authorization_policies, ["demo/allow-a", "istio-system/mesh"]);
    // Capacity 1 is the proto's default and is left out; 0 (never chosen) is written.
    let mut one = full_workload();
    one.capacity = 1;
    assert_eq!(pb::Workload::from(&one).capacity, None);
    one.capacity = 0;
    assert_eq!(pb::Workload::from(&one).capacity, Some(0));
    // Labels are ambit's addition: they do not travel.
    one.labels.insert("app".to_string(), "reviews".to_string());
    assert!(Workload::try_from(pb::Workload::from(&one)).unwrap().labels.is_empty());
}

#[test]
fn absent_fields_take_the_protos_defaults() {
    let mut w = pb::Workload::from(&full_workload());
    (w.trust_domain, w.service_account, w.capacity) = (String::new(), String::new(), None);
    w.waypoint.as_mut().unwrap().hbone_mtls_port = 0;
    let w = Workload::try_from(w).unwrap();
    assert_eq!(w.identity().to_string(), "spiffe://cluster.local/ns/demo/sa/default");
    assert_eq!(w.capacity, 1);
    assert_eq!(w.waypoint.unwrap().hbone_mtls_port, DEFAULT_HBONE_MTLS_PORT);
    let w = Workload::try_from(pb::Workload {
        capacity: Some(0),
        ..pb::Workload::from(&full_workload())
    });
    assert_eq!(w.unwrap().capacity, 0);
}

fn extension() -> pb::Extension {
    pb::Extension {
        name: "x".to_string(),
        config: None,
    }
}

#[test]
fn informational_fields_and_extensions_are_ignored() {
    let expected = full_workload();
    let mut w = pb::Workload::from(&expected);
    w.extensions = vec![extension()];
    // Present but empty messages are unset.
    w.application_tunnel = Some(pb::ApplicationTunnel::default());
    w.network_gateway = Some(pb::GatewayAddress::default());
    // The protocol of a workload's port belongs to the service.
    w.services.values_mut().next().unwrap().ports = vec![pb::Port {
        service_port: 80,
        target_port: 9080,
        app_protocol: pb::AppProtocol::Grpc.into(),
    }];
    let decoded = Workload::try_from(w).unwrap();
    assert_eq!(
        decoded.services[&key("all")],
        [PortMapping {
            service_port: 80,
            target_port: 9080
        }]
    );
    assert_eq!(decoded.uid, expected.uid);

    let expected = full_service();
    let mut s = pb::Service::from(&expected);
    s.extensions = vec![extension()];
    s.ip_families = pb::IpFamilies::Dual.into();
    s.ingress_use_waypoint = true;
    // A full-width length is a single address.
    s.addresses[0].length = Some(32);
    s.addresses[1].length = Some(128);
    assert_eq!(Service::try_from(s), Ok(expected));

    let expected = full_authorization();
    let mut a = encode_authorization(&expected);
    a.extensions = vec![extension()];
    a.groups[0].rules[0].matches[0].extensions = vec![extension()];
    assert_eq!(decode_authorization(a), Ok(expected));
}

/// A change that makes a valid message invalid, and the error it must give.
type Case<P> = (fn(&mut P), &'static str);

/// Applies each mutation to a valid resource and expects the exact error.
fn refused<P: Clone, M: fmt::Debug>(valid: &P, decode: impl Fn(P) -> Result<M, ProtoError>, cases: &[Case<P>]) {
    for (i, (mutate, expected)) in cases.iter().enumerate() {
        let mut message = valid.clone();
        mutate(&mut message);
        match decode(message) {
            Ok(decoded) => panic!("case {i}: accepted as {decoded:?}, expected {expected}"),
            Err(error) => assert_eq!(error.to_string(), *expected, "case {i}"),
        }
    }
}

fn bad_gateway() -> pb::GatewayAddress {
    pb::GatewayAddress {
        destination: None,
        hbone_mtls_port: 15008,
    }
}

#[test]
fn bad_workloads_are_refused_with_the_field_path() {
    let cases: &[Case<pb::Workload>] = &[
        (|w| w.uid.clear(), "workload.uid: the uid must not be empty"),
        (
            |w| w.namespace = "Demo".to_string(),
            r#"workload.namespace: "Demo" is not a namespace: use 1 to 253 lowercase letters, digits, '-' or '.'"#,
        ),
        (
            |w| w.addresses[1] = vec![1, 2, 3, 4, 5],
            "workload.addresses[1]: 5 bytes is not an IPv4 or IPv6 address",
        ),
        (|w| w.tunnel_protocol = 7, "workload.tunnel_protocol: unknown value 7"),
        (
            |w| w.tunnel_protocol = pb::TunnelProtocol::LegacyIstioMtls.into(),
            "workload.tunnel_protocol: LEGACY_ISTIO_MTLS is not supported",
        ),
        (
            |w| w.trust_domain = "Example.org".to_string(),
            r#"workload.trust_domain: "Example.org" has an invalid trust domain: use 1 to 255 lowercase letters, digits, '.', '-' or '_'"#,
        ),
        (
            |w| w.service_account = "a/b".to_string(),
            r#"workload.service_account: "a/b" is not a service account: use 1 to 253 lowercase letters, digits, '-' or '.'"#,
        ),
        (
            |w| w.waypoint = Some(bad_gateway()),
            "workload.waypoint: names neither a hostname nor an address",
        ),
        (
            |w| {
                let Some(Destination::Hostname(name)) = &mut w.waypoint.as_mut().unwrap().destination else {
                    unreachable!()
                };
                name.hostname = "a b".to_string();
            },
            r#"workload.waypoint.hostname.hostname: "a b" is not a hostname: use a non-empty name without '/' or whitespace"#,
        ),
        (
            |w| w.waypoint.as_mut().unwrap().hbone_mtls_port = 70_000,
            "workload.waypoint.hbone_mtls_port: 70000 is out of range",
        ),
        (
            |w| {
                let address = pb::NetworkAddress {
                    network: String::new(),
                    address: vec![10, 0, 0, 0],
                    length: Some(24),
                };
                w.waypoint.as_mut().unwrap().destination = Some(Destination::Address(address));
            },
            "workload.waypoint.address.length: /24 is a range of addresses, which is not supported",
        ),
        (
            |w| {
                w.services.insert("nokey".to_string(), pb::PortList::default());
            },
            r#"workload.services["nokey"]: "nokey" is not a service key: use <namespace>/<hostname>"#,
        ),
        (
            |w| {
                let ports = w.services.get_mut("demo/reviews.demo.svc.cluster.local").unwrap();
                ports.ports[1].target_port = 65_536;
            },
            r#"workload.services["demo/reviews.demo.svc.cluster.local"].ports[1].target_port: 65536 is out of range"#,
        ),
        (
            |w| {
                let ports = w.services.get_mut("demo/reviews.demo.svc.cluster.local").unwrap();
                ports.ports[0].app_protocol = 9;
            },
            r#"workload.services["demo/reviews.demo.svc.cluster.local"].ports[0].app_protocol: unknown value 9"#,
        ),
        (
            |w| w.authorization_policies[1] = "mesh".to_string(),
            r#"workload.authorization_policies[1]: "mesh" is not a policy name: use <namespace>/<name>"#,
        ),
        (|w| w.workload_type = 4, "workload.workload_type: unknown value 4"),
        (|w| w.status = 2, "workload.status: unknown value 2"),
        (
            |w| w.hostname = "db.example.com".to_string(),
            "workload.hostname: workloads resolved by DNS are not supported",
        ),
        (
            |w| {
                let mut gateway = bad_gateway();
                gateway.hbone_mtls_port = 15009;
                w.network_gateway = Some(gateway);
            },
            "workload.network_gateway: network gateways are not supported",
        ),
        (
            |w| w.native_tunnel = true,
            "workload.native_tunnel: workloads that terminate the tunnel themselves are not supported",
        ),
        (
            |w| {
                w.application_tunnel = Some(pb::ApplicationTunnel {
                    protocol: pb::application_tunnel::Protocol::Proxy.into(),
                    port: 0,
                });
            },
            "workload.application_tunnel: application tunnels are not supported",
        ),
        (
            |w| w.network_mode = pb::NetworkMode::HostNetwork.into(),
            "workload.network_mode: HOST_NETWORK is not supported",
        ),
        (|w| w.network_mode = 3, "workload.network_mode: unknown value 3"),
    ];
    refused(&pb::Workload::from(&full_workload()), Workload::try_from, cases);
}

#[test]
fn bad_services_are_refused_with_the_field_path() {
    let cases: &[Case<pb::Service>] = &[
        (
            |s| s.namespace.clear(),
            r#"service.namespace: "" is not a namespace: use 1 to 253 lowercase letters, digits, '-' or '.'"#,
        ),
        (
            |s| s.hostname = "a/b".to_string(),
            r#"service.hostname: "a/b" is not a hostname: use a non-empty name without '/' or whitespace"#,
        ),
        (
            |s| s.addresses[1].address = vec![10, 0, 0],
            "service.addresses[1].address: 3 bytes is not an IPv4 or IPv6 address",
        ),
        (
            |s| s.addresses[0].length = Some(24),
            "service.addresses[0].length: /24 is a range of addresses, which is not supported",
        ),
        (
            |s| s.ports[0].service_port = 70_000,
            "service.ports[0].service_port: 70000 is out of range",
        ),
        (
            |s| s.ports[2].app_protocol = 6,
            "service.ports[2].app_protocol: unknown value 6",
        ),
        (
            |s| s.subject_alt_names[0] = "reviews".to_string(),
            r#"service.subject_alt_names[0]: "reviews" is not a SPIFFE ID: it must start with "spiffe://""#,
        ),
        (
            |s| s.waypoint.as_mut().unwrap().destination = None,
            "service.waypoint: names neither a hostname nor an address",
        ),
        (
            |s| s.load_balancing.as_mut().unwrap().routing_preference[1] = 0,
            "service.load_balancing.routing_preference[1]: UNSPECIFIED_SCOPE is not a scope",
        ),
        (
            |s| s.load_balancing.as_mut().unwrap().routing_preference[2] = 7,
            "service.load_balancing.routing_preference[2]: unknown value 7",
        ),
        (
            |s| s.load_balancing.as_mut().unwrap().mode = 4,
            "service.load_balancing.mode: unknown value 4",
        ),
        (
            |s| s.load_balancing.as_mut().unwrap().health_policy = 2,
            "service.load_balancing.health_policy: unknown value 2",
        ),
        (
            |s| s.load_balancing.as_mut().unwrap().dns_connect_strategy = 1,
            "service.load_balancing.dns_connect_strategy: FIRST_HEALTHY_RACE is not supported",
        ),
        (|s| s.ip_families = 4, "service.ip_families: unknown value 4"),
        (
            |s| s.canonical = true,
            "service.canonical: canonical services are not supported",
        ),
        (
            |s| {
                s.weighted_waypoints = vec![pb::WeightedWaypoint {
                    destination: s.waypoint.clone(),
                    weight: 1,
                }];
            },
            "service.weighted_waypoints: weighted waypoints are not supported",
        ),
        (
            |s| s.visibility = pb::Visibility::Namespace.into(),
            "service.visibility: NAMESPACE visibility is not supported",
        ),
        (|s| s.visibility = 2, "service.visibility: unknown value 2"),
    ];
    refused(&pb::Service::from(&full_service()), Service::try_from, cases);
}

/// The first match of clause 1 of group 0, the one with every field set.
fn full_match(a: &mut pb_security::Authorization) -> &mut pb_security::Match {
    &mut a.groups[0].rules[1].matches[0]
}

#[test]
fn bad_policies_are_refused_with_the_field_path() {
    let cases: &[Case<pb_security::Authorization>] = &[
        (|a| a.scope = 3, "authorization.scope: unknown value 3"),
        (|a| a.action = 2, "authorization.action: unknown value 2"),
        (
            |a| full_match(a).principals[2].match_type = None,
            "authorization.groups[0].rules[1].matches[0].principals[2]: sets none of exact, prefix, suffix and presence",
        ),
        (
            |a| full_match(a).source_ips[1].address = vec![1, 2, 3, 4, 5],
            "authorization.groups[0].rules[1].matches[0].source_ips[1].address: 5 bytes is not an IPv4 or IPv6 address",
        ),
        (
            |a| full_match(a).destination_ips[0].length = 33,
            "authorization.groups[0].rules[1].matches[0].destination_ips[0].length: 33 is longer than the 32 bits of 10.96.0.0",
        ),
        (
            |a| full_match(a).not_source_ips[0].length = 300,
            "authorization.groups[0].rules[1].matches[0].not_source_ips[0].length: 300 is longer than the 32 bits of 10.244.1.2",
        ),
        (
            |a| full_match(a).not_destination_ports[0] = 70_000,
            "authorization.groups[0].rules[1].matches[0].not_destination_ports[0]: 70000 is out of range",
        ),
        (
            |a| a.groups[0].rules[0].matches[0].destination_ports[0] = 65_536,
            "authorization.groups[0].rules[0].matches[0].destination_ports[0]: 65536 is out of range",
        ),
    ];
    refused(
        &encode_authorization(&full_authorization()),
        decode_authorization,
        cases,
    );
}
