//! Tables for the outbound plan (service VIPs, load balancing, pod IPs, passthrough, waypoints), the node scope's
//! lookups, the inbound authority check and policy attachment.

use std::collections::BTreeMap;

use ambit_policy::Scope;

use super::*;
use crate::state::fixtures::{
    addr, endpoint, ip, key, ns, pod, policy, service, snapshot, uid, waypoint, waypoint_pod, waypoint_service,
};
use crate::state::model::{GatewayAddress, Locality, NetworkAddress};

/// A source of scripted values; fails the test if asked more often than scripted.
fn scripted(values: &'static [u64]) -> impl FnMut(u64) -> u64 {
    let mut values = values.iter().copied();
    move |bound| {
        let value = values
            .next()
            .expect("the test scripted fewer random values than were asked for");
        assert!(value < bound, "scripted value {value} is not below {bound}");
        value
    }
}

fn client() -> Workload {
    let mut client = pod("client", "10.0.9.9");
    client.node = "node-a".to_string();
    client.locality = Some(zone("z1"));
    client
}

fn zone(zone: &str) -> Locality {
    Locality {
        region: "r1".to_string(),
        zone: zone.to_string(),
        subzone: String::new(),
    }
}

/// Pods `a` (10.0.1.1) and `b` (10.0.1.2), endpoints of `echo` (VIP 10.96.0.10, port 80 → 8080).
fn two_endpoints(edit: impl Fn(&mut Workload, &mut Workload, &mut Service)) -> Snapshot {
    let mut a = endpoint(pod("a", "10.0.1.1"), "echo", &[]);
    let mut b = endpoint(pod("b", "10.0.1.2"), "echo", &[]);
    let mut echo = service("echo", "10.96.0.10", &[(80, 8080)]);
    edit(&mut a, &mut b, &mut echo);
    snapshot(vec![client(), a, b], vec![echo])
}

fn hbone(pod_ip: &str, port: u16, pod_name: &str, service: Option<&str>, sans: &[&str]) -> OutboundPlan {
    let workload = pod(pod_name, pod_ip);
    let mut expected_identities = vec![workload.identity()];
    expected_identities.extend(sans.iter().map(|s| s.parse::<Identity>().unwrap()));
    OutboundPlan::Hbone {
        next_hop: SocketAddr::new(ip(pod_ip), HBONE_PORT),
        authority: SocketAddr::new(ip(pod_ip), port),
        expected_identities,
        destination_workload_uid: uid(pod_name),
        service: service.map(key),
        waypoint: None,
    }
}

/// HBONE through `waypoint()`'s pod `pod_name` at `pod_ip`, its identity expected, with the original destination
/// `authority`; `service` when a VIP was dialled.
fn via_waypoint(pod_ip: &str, pod_name: &str, authority: &str, service: Option<&str>) -> OutboundPlan {
    via(waypoint(), pod_ip, pod_name, authority, service)
}

fn via(gateway: GatewayAddress, pod_ip: &str, pod_name: &str, authority: &str, service: Option<&str>) -> OutboundPlan {
    OutboundPlan::Hbone {
        next_hop: SocketAddr::new(ip(pod_ip), gateway.hbone_mtls_port),
        authority: addr(authority),
        expected_identities: vec![pod(pod_name, pod_ip).identity()],
        destination_workload_uid: uid(pod_name),
        service: service.map(key),
        waypoint: Some(gateway),
    }
}

fn unavailable(destination: BoundDestination, reason: WaypointProblem) -> Result<OutboundPlan, PlanError> {
    Err(PlanError::WaypointUnavailable {
        destination,
        waypoint: waypoint(),
        reason,
    })
}

/// Everything a waypoint case may edit: the `two_endpoints` mesh, plus the waypoint's pods and its service.
struct Mesh {
    a: Workload,
    b: Workload,
    echo: Service,
    /// `wp-1` (10.0.5.1) and `wp-2` (10.0.5.2).
    waypoint_pods: Vec<Workload>,
    waypoint_service: Option<Service>,
}

/// [`two_endpoints`] with the waypoint's service and two ready pods, edited by `edit`; nothing is bound to the
/// waypoint unless `edit` binds it.
fn waypoint_mesh(edit: impl Fn(&mut Mesh)) -> Snapshot {
    let mut mesh = Mesh {
        a: endpoint(pod("a", "10.0.1.1"), "echo", &[]),
        b: endpoint(pod("b", "10.0.1.2"), "echo", &[]),
        echo: service("echo", "10.96.0.10", &[(80, 8080)]),
        waypoint_pods: vec![waypoint_pod("wp-1", "10.0.5.1"), waypoint_pod("wp-2", "10.0.5.2")],
        waypoint_service: Some(waypoint_service()),
    };
    edit(&mut mesh);
    let mut workloads = vec![client(), mesh.a, mesh.b];
    workloads.extend(mesh.waypoint_pods);
    let services = std::iter::once(mesh.echo).chain(mesh.waypoint_service).collect();
    snapshot(workloads, services)
}

/// Binds service `echo` to `waypoint()`.
fn bind_echo(mesh: &mut Mesh) {
    mesh.echo.waypoint = Some(waypoint());
}

fn to_echo_a() -> Result<OutboundPlan, PlanError> {
    Ok(hbone("10.0.1.1", 8080, "a", Some("echo"), &[]))
}

fn to_echo_b() -> Result<OutboundPlan, PlanError> {
    Ok(hbone("10.0.1.2", 8080, "b", Some("echo"), &[]))
}

fn no_endpoint() -> Result<OutboundPlan, PlanError> {
    Err(PlanError::NoHealthyEndpoint {
        service: key("echo"),
        port: 80,
    })
}

fn balancing(mode: LoadBalancingMode, prefs: &[LoadBalancingScope], health: HealthPolicy) -> Option<LoadBalancing> {
    Some(LoadBalancing {
        routing_preference: prefs.to_vec(),
        mode,
        health_policy: health,
    })
}

fn failover_zone() -> Option<LoadBalancing> {
    let prefs = [LoadBalancingScope::Region, LoadBalancingScope::Zone];
    balancing(LoadBalancingMode::Failover, &prefs, HealthPolicy::OnlyHealthy)
}

struct Case {
    name: &'static str,
    snapshot: Snapshot,
    dst: &'static str,
    random: &'static [u64],
    want: Result<OutboundPlan, PlanError>,
}

fn case(
    name: &'static str,
    snapshot: Snapshot,
    dst: &'static str,
    random: &'static [u64],
    want: Result<OutboundPlan, PlanError>,
) -> Case {
    Case {
        name,
        snapshot,
        dst,
        random,
        want,
    }
}

fn service_cases() -> Vec<Case> {
    let unchanged = |_: &mut Workload, _: &mut Workload, _: &mut Service| {};
    let vip = "10.96.0.10:80";
    vec![
        case(
            "VIP, first of two endpoints",
            two_endpoints(unchanged),
            vip,
            &[0],
            to_echo_a(),
        ),
        case(
            "VIP, second of two endpoints",
            two_endpoints(unchanged),
            vip,
            &[1],
            to_echo_b(),
        ),
        case(
            "VIP, unhealthy endpoint skipped without consulting the source",
            two_endpoints(|a, _, _| a.status = WorkloadStatus::Unhealthy),
            vip,
            &[],
            to_echo_b(),
        ),
        case(
            "VIP, ALLOW_ALL includes the unhealthy endpoint",
            two_endpoints(|a, _, s| {
                a.status = WorkloadStatus::Unhealthy;
                s.load_balancing = balancing(LoadBalancingMode::Unspecified, &[], HealthPolicy::AllowAll);
            }),
            vip,
            &[0],
            to_echo_a(),
        ),
        case(
            "VIP, every endpoint unhealthy",
            two_endpoints(|a, b, _| {
                a.status = WorkloadStatus::Unhealthy;
                b.status = WorkloadStatus::Unhealthy;
            }),
            vip,
            &[],
            no_endpoint(),
        ),
        case(
            "VIP, capacity 0 is never chosen",
            two_endpoints(|a, _, _| a.capacity = 0),
            vip,
            &[],
            to_echo_b(),
        ),
        case(
            "VIP, capacity 0 everywhere",
            two_endpoints(|a, b, _| (a.capacity, b.capacity) = (0, 0)),
            vip,
            &[],
            no_endpoint(),
        ),
        case(
            "VIP, endpoint on another network skipped",
            two_endpoints(|a, _, _| a.network = "remote".to_string()),
            vip,
            &[],
            to_echo_b(),
        ),
        case(
            "VIP, port the service does not declare",
            two_endpoints(unchanged),
            "10.96.0.10:81",
            &[],
            Err(PlanError::UnknownServicePort {
                service: key("echo"),
                port: 81,
            }),
        ),
    ]
}

fn port_cases() -> Vec<Case> {
    let vip = "10.96.0.10:80";
    let named = |a: &mut Workload, b: &mut Workload, s: &mut Service, a_port: u16| {
        s.ports[0].target_port = 0;
        *a = endpoint(a.clone(), "echo", &[(80, a_port)]);
        *b = endpoint(b.clone(), "echo", &[(9090, 9090)]);
    };
    vec![
        case(
            "named target port resolved by the endpoint; endpoint lacking the port skipped",
            two_endpoints(move |a, b, s| named(a, b, s, 8181)),
            vip,
            &[],
            Ok(hbone("10.0.1.1", 8181, "a", Some("echo"), &[])),
        ),
        case(
            "named target port the endpoint left unresolved (0)",
            two_endpoints(move |a, b, s| named(a, b, s, 0)),
            vip,
            &[],
            no_endpoint(),
        ),
        case(
            "the endpoint's mapping wins over the service's target port",
            two_endpoints(|a, b, _| {
                *a = endpoint(a.clone(), "echo", &[(80, 7070)]);
                b.status = WorkloadStatus::Unhealthy;
            }),
            vip,
            &[],
            Ok(hbone("10.0.1.1", 7070, "a", Some("echo"), &[])),
        ),
    ]
}

fn locality_cases() -> Vec<Case> {
    let vip = "10.96.0.10:80";
    let strict_node = || {
        let prefs = [LoadBalancingScope::Node];
        balancing(LoadBalancingMode::Strict, &prefs, HealthPolicy::OnlyHealthy)
    };
    vec![
        case(
            "FAILOVER prefers the client's zone",
            two_endpoints(|a, b, s| {
                (a.locality, b.locality) = (Some(zone("z2")), Some(zone("z1")));
                s.load_balancing = failover_zone();
            }),
            vip,
            &[],
            to_echo_b(),
        ),
        case(
            "FAILOVER falls back to another zone of the region",
            two_endpoints(|a, b, s| {
                (a.locality, b.locality) = (Some(zone("z2")), Some(zone("z1")));
                b.status = WorkloadStatus::Unhealthy;
                s.load_balancing = failover_zone();
            }),
            vip,
            &[],
            to_echo_a(),
        ),
        case(
            "FAILOVER spreads over endpoints of equal rank",
            two_endpoints(|a, b, s| {
                (a.locality, b.locality) = (Some(zone("z1")), Some(zone("z1")));
                s.load_balancing = failover_zone();
            }),
            vip,
            &[1],
            to_echo_b(),
        ),
        case(
            "STRICT keeps only endpoints on the client's node",
            two_endpoints(move |a, b, s| {
                (a.node, b.node) = ("node-a".to_string(), "node-b".to_string());
                s.load_balancing = strict_node();
            }),
            vip,
            &[],
            to_echo_a(),
        ),
        case(
            "STRICT with no endpoint on the client's node",
            two_endpoints(move |a, b, s| {
                (a.node, b.node) = ("node-b".to_string(), "node-c".to_string());
                s.load_balancing = strict_node();
            }),
            vip,
            &[],
            no_endpoint(),
        ),
        case(
            "no LoadBalancing: locality is ignored",
            two_endpoints(|a, b, _| (a.locality, b.locality) = (Some(zone("z2")), Some(zone("z1")))),
            vip,
            &[0],
            to_echo_a(),
        ),
    ]
}

fn destination_cases() -> Vec<Case> {
    let unchanged = |_: &mut Workload, _: &mut Workload, _: &mut Service| {};
    let sans = [
        "spiffe://cluster.local/ns/demo/sa/echo-legacy",
        "spiffe://other.domain/ns/demo/sa/echo",
    ];
    vec![
        case(
            "pod IP: HBONE to the pod, port unchanged",
            two_endpoints(unchanged),
            "10.0.1.2:9000",
            &[],
            Ok(hbone("10.0.1.2", 9000, "b", None, &[])),
        ),
        case(
            "IPv4-mapped pod IP, as a dual-stack socket reports it",
            two_endpoints(unchanged),
            "[::ffff:10.0.1.2]:9000",
            &[],
            Ok(hbone("10.0.1.2", 9000, "b", None, &[])),
        ),
        case(
            "pod IP of a workload without HBONE: plain TCP",
            two_endpoints(|_, b, _| b.tunnel_protocol = TunnelProtocol::None),
            "10.0.1.2:9000",
            &[],
            Ok(OutboundPlan::passthrough(addr("10.0.1.2:9000"), Some(uid("b")), None)),
        ),
        case(
            "VIP whose chosen endpoint has no HBONE: plain TCP to its target port",
            two_endpoints(|a, b, _| {
                a.tunnel_protocol = TunnelProtocol::None;
                b.status = WorkloadStatus::Unhealthy;
            }),
            "10.96.0.10:80",
            &[],
            Ok(OutboundPlan::passthrough(
                addr("10.0.1.1:8080"),
                Some(uid("a")),
                Some(key("echo")),
            )),
        ),
        case(
            "unknown IP: passthrough",
            two_endpoints(unchanged),
            "192.0.2.1:443",
            &[],
            Ok(OutboundPlan::passthrough(addr("192.0.2.1:443"), None, None)),
        ),
        case(
            "PASSTHROUGH service: the original destination",
            two_endpoints(|_, _, s| {
                s.load_balancing = balancing(LoadBalancingMode::Passthrough, &[], HealthPolicy::OnlyHealthy);
            }),
            "10.96.0.10:80",
            &[],
            Ok(OutboundPlan::passthrough(
                addr("10.96.0.10:80"),
                None,
                Some(key("echo")),
            )),
        ),
        case(
            "expected identities: the workload's, then the service SANs, each once",
            two_endpoints(move |a, b, s| {
                let workload_identity = a.identity();
                s.subject_alt_names = sans.iter().map(|s| s.parse().unwrap()).collect();
                s.subject_alt_names.push(workload_identity);
                b.status = WorkloadStatus::Unhealthy;
            }),
            "10.96.0.10:80",
            &[],
            Ok(hbone("10.0.1.1", 8080, "a", Some("echo"), &sans)),
        ),
    ]
}

fn waypoint_cases() -> Vec<Case> {
    let vip = "10.96.0.10:80";
    let address_waypoint = |address: &str| GatewayAddress {
        destination: GatewayDestination::Address(NetworkAddress {
            network: String::new(),
            address: ip(address),
        }),
        hbone_mtls_port: 15008,
    };
    let echo = || BoundDestination::Service(key("echo"));
    vec![
        case(
            "service waypoint: HBONE to a waypoint pod, the VIP as authority",
            waypoint_mesh(bind_echo),
            vip,
            &[0],
            Ok(via_waypoint("10.0.5.1", "wp-1", vip, Some("echo"))),
        ),
        case(
            "service waypoint: the other waypoint pod",
            waypoint_mesh(bind_echo),
            vip,
            &[1],
            Ok(via_waypoint("10.0.5.2", "wp-2", vip, Some("echo"))),
        ),
        case(
            "service waypoint: an unready waypoint pod is skipped",
            waypoint_mesh(|m| {
                bind_echo(m);
                m.waypoint_pods[0].status = WorkloadStatus::Unhealthy;
            }),
            vip,
            &[],
            Ok(via_waypoint("10.0.5.2", "wp-2", vip, Some("echo"))),
        ),
        case(
            "service waypoint: any port goes to the waypoint, which owns the service's routing",
            waypoint_mesh(bind_echo),
            "10.96.0.10:81",
            &[0],
            Ok(via_waypoint("10.0.5.1", "wp-1", "10.96.0.10:81", Some("echo"))),
        ),
        case(
            "service waypoint: the GatewayAddress's HBONE port",
            waypoint_mesh(|m| {
                let mut gateway = waypoint();
                gateway.hbone_mtls_port = 15009;
                m.echo.waypoint = Some(gateway);
                m.waypoint_pods.truncate(1);
            }),
            vip,
            &[],
            Ok(via(
                GatewayAddress {
                    hbone_mtls_port: 15009,
                    ..waypoint()
                },
                "10.0.5.1",
                "wp-1",
                vip,
                Some("echo"),
            )),
        ),
        case(
            "service waypoint: every waypoint pod unready: refused, naming the waypoint",
            waypoint_mesh(|m| {
                bind_echo(m);
                m.waypoint_pods
                    .iter_mut()
                    .for_each(|w| w.status = WorkloadStatus::Unhealthy);
            }),
            vip,
            &[],
            unavailable(echo(), WaypointProblem::NoReadyEndpoint),
        ),
        case(
            "service waypoint: a waypoint pod on another network is no candidate",
            waypoint_mesh(|m| {
                bind_echo(m);
                m.waypoint_pods.truncate(1);
                m.waypoint_pods[0].network = "remote".to_string();
            }),
            vip,
            &[],
            unavailable(echo(), WaypointProblem::NoReadyEndpoint),
        ),
        case(
            "service waypoint: no pods at all",
            waypoint_mesh(|m| {
                bind_echo(m);
                m.waypoint_pods.clear();
            }),
            vip,
            &[],
            unavailable(echo(), WaypointProblem::NoReadyEndpoint),
        ),
        case(
            "service waypoint: the waypoint's service is unknown",
            waypoint_mesh(|m| {
                bind_echo(m);
                m.waypoint_pods.clear();
                m.waypoint_service = None;
            }),
            vip,
            &[],
            unavailable(echo(), WaypointProblem::UnknownService),
        ),
        case(
            "bypass (the control plane left the waypoint out): direct to the endpoint",
            waypoint_mesh(|m| m.b.status = WorkloadStatus::Unhealthy),
            vip,
            &[],
            to_echo_a(),
        ),
        case(
            "workload waypoint: a pod IP goes to the waypoint, the pod IP as authority",
            waypoint_mesh(|m| m.a.waypoint = Some(waypoint())),
            "10.0.1.1:8080",
            &[1],
            Ok(via_waypoint("10.0.5.2", "wp-2", "10.0.1.1:8080", None)),
        ),
        case(
            "workload waypoint without pods: refused, naming the workload",
            waypoint_mesh(|m| {
                m.a.waypoint = Some(waypoint());
                m.waypoint_pods.clear();
            }),
            "10.0.1.1:8080",
            &[],
            unavailable(BoundDestination::Workload(uid("a")), WaypointProblem::NoReadyEndpoint),
        ),
        case(
            "workload waypoint: ignored for service-addressed traffic",
            waypoint_mesh(|m| {
                m.a.waypoint = Some(waypoint());
                m.b.status = WorkloadStatus::Unhealthy;
            }),
            vip,
            &[],
            to_echo_a(),
        ),
        case(
            "address waypoint: the workload with that address",
            waypoint_mesh(move |m| m.echo.waypoint = Some(address_waypoint("10.0.5.2"))),
            vip,
            &[],
            Ok(via(address_waypoint("10.0.5.2"), "10.0.5.2", "wp-2", vip, Some("echo"))),
        ),
        case(
            "address waypoint: an unready workload",
            waypoint_mesh(move |m| {
                m.echo.waypoint = Some(address_waypoint("10.0.5.2"));
                m.waypoint_pods[1].status = WorkloadStatus::Unhealthy;
            }),
            vip,
            &[],
            Err(PlanError::WaypointUnavailable {
                destination: echo(),
                waypoint: address_waypoint("10.0.5.2"),
                reason: WaypointProblem::NoReadyEndpoint,
            }),
        ),
        case(
            "address waypoint: a service VIP, through one of its endpoints",
            waypoint_mesh(move |m| m.echo.waypoint = Some(address_waypoint("10.96.0.99"))),
            vip,
            &[1],
            Ok(via(
                address_waypoint("10.96.0.99"),
                "10.0.5.2",
                "wp-2",
                vip,
                Some("echo"),
            )),
        ),
        case(
            "address waypoint: an address nobody has",
            waypoint_mesh(move |m| m.echo.waypoint = Some(address_waypoint("10.0.5.9"))),
            vip,
            &[],
            Err(PlanError::WaypointUnavailable {
                destination: echo(),
                waypoint: address_waypoint("10.0.5.9"),
                reason: WaypointProblem::UnknownAddress,
            }),
        ),
    ]
}

#[test]
fn outbound_plans() {
    let cases = [
        service_cases(),
        port_cases(),
        locality_cases(),
        destination_cases(),
        waypoint_cases(),
    ];
    for case in cases.into_iter().flatten() {
        let source = client();
        let got = outbound_plan(&case.snapshot, &source, addr(case.dst), &mut scripted(case.random));
        assert_eq!(got, case.want, "{}", case.name);
    }
}

/// The waypoint pod's identity is expected, then the waypoint service's SANs; never the destination's.
#[test]
fn a_waypoint_pod_is_expected_to_present_its_own_identity() {
    let san: Identity = "spiffe://cluster.local/ns/demo/sa/waypoint-legacy".parse().unwrap();
    let snapshot = waypoint_mesh(|m| {
        bind_echo(m);
        m.echo.subject_alt_names = vec!["spiffe://cluster.local/ns/demo/sa/echo-legacy".parse().unwrap()];
        m.waypoint_service.as_mut().unwrap().subject_alt_names = vec![san.clone()];
        m.waypoint_pods.truncate(1);
    });
    let plan = outbound_plan(&snapshot, &client(), addr("10.96.0.10:80"), &mut scripted(&[])).unwrap();
    let OutboundPlan::Hbone {
        expected_identities, ..
    } = plan
    else {
        panic!("{plan:?} is not HBONE");
    };
    assert_eq!(expected_identities, [pod("wp-1", "10.0.5.1").identity(), san]);
}

/// A pod of the waypoint sends what it forwards to a workload bound to it straight to the workload (the "sandwich"
/// case): the workload's waypoint is skipped for its own pods, and only for them.
#[test]
fn a_waypoint_pod_reaches_its_workloads_directly() {
    let by_address = GatewayAddress {
        destination: GatewayDestination::Address(NetworkAddress {
            network: String::new(),
            address: ip("10.0.5.1"),
        }),
        hbone_mtls_port: 15008,
    };
    let direct = || Ok(hbone("10.0.1.1", 8080, "a", None, &[]));
    let cases = [
        ("a pod of the named waypoint", waypoint(), "wp-1", direct()),
        (
            "the workload at the waypoint's address",
            by_address.clone(),
            "wp-1",
            direct(),
        ),
        (
            "a pod of another waypoint's address",
            by_address.clone(),
            "wp-2",
            Ok(via(by_address, "10.0.5.1", "wp-1", "10.0.1.1:8080", None)),
        ),
    ];
    for (name, gateway, source, want) in cases {
        let snapshot = waypoint_mesh(|m| m.a.waypoint = Some(gateway.clone()));
        let source = snapshot.workload(&uid(source)).unwrap();
        let got = outbound_plan(&snapshot, source, addr("10.0.1.1:8080"), &mut scripted(&[]));
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn weights_are_respected() {
    let snapshot = two_endpoints(|a, b, _| (a.capacity, b.capacity) = (3, 1));
    let mut chosen = BTreeMap::new();
    for value in 0..4 {
        let mut rng = |bound| {
            assert_eq!(bound, 4, "the total capacity");
            value
        };
        let plan = outbound_plan(&snapshot, &client(), addr("10.96.0.10:80"), &mut rng).unwrap();
        let OutboundPlan::Hbone {
            destination_workload_uid,
            ..
        } = plan
        else {
            panic!("{plan:?} is not HBONE");
        };
        *chosen.entry(destination_workload_uid).or_insert(0) += 1;
    }
    assert_eq!(chosen, BTreeMap::from([(uid("a"), 3), (uid("b"), 1)]));
}

#[test]
fn dual_stack_endpoint_is_reached_in_the_family_of_the_vip() {
    let mut a = endpoint(pod("a", "10.0.1.1"), "echo", &[]);
    a.addresses.push(ip("fd00::1:1"));
    let mut echo = service("echo", "10.96.0.10", &[(80, 8080)]);
    echo.addresses[0].address = ip("fd00::96:10");
    let snapshot = snapshot(vec![a], vec![echo]);
    let plan = outbound_plan(&snapshot, &client(), addr("[fd00::96:10]:80"), &mut scripted(&[])).unwrap();
    assert_eq!(plan, hbone("fd00::1:1", 8080, "a", Some("echo"), &[]));
}

#[test]
fn the_default_random_source_stays_below_its_bound() {
    let mut rng = FastRandom::with_seed(7);
    assert!((0..1000).all(|_| rng.below(3) < 3));
    assert_eq!(FastRandom::default().below(1), 0);
}

#[test]
fn inbound_targets() {
    let local = pod("a", "10.0.1.1");
    let cases: &[(&str, Result<InboundTarget, InboundError>)] = &[
        (
            "10.0.1.1:8080",
            Ok(InboundTarget {
                app: addr("10.0.1.1:8080"),
            }),
        ),
        (
            "[::ffff:10.0.1.1]:8080",
            Ok(InboundTarget {
                app: addr("[::ffff:10.0.1.1]:8080"),
            }),
        ),
        (
            "10.0.1.2:8080",
            Err(InboundError::IpMismatch {
                ip: ip("10.0.1.2"),
                workload: uid("a"),
            }),
        ),
        ("10.0.1.1:15008", Err(InboundError::SelfCall { port: 15008 })),
        ("10.0.1.1:15001", Err(InboundError::SelfCall { port: 15001 })),
        ("10.0.1.1:15006", Err(InboundError::SelfCall { port: 15006 })),
        (
            "echo.demo.svc.cluster.local:80",
            Err(InboundError::Unsupported {
                authority: "echo.demo.svc.cluster.local:80".to_string(),
            }),
        ),
    ];
    for (authority, want) in cases {
        let got = inbound_target(&local, &authority.parse().unwrap());
        assert_eq!(&got, want, "{authority}");
        if let Err(error) = got {
            assert_eq!(Refusal::from(error).status(), 400, "{authority}");
        }
    }
}

#[test]
fn policies_apply_by_scope_namespace_and_name() {
    let policies = vec![
        policy("istio-system", "global", Scope::Global),
        policy("istio-system", "root-namespace", Scope::Namespace),
        policy("demo", "namespace", Scope::Namespace),
        policy("other", "other-namespace", Scope::Namespace),
        policy("demo", "selected", Scope::WorkloadSelector),
        policy("demo", "not-selected", Scope::WorkloadSelector),
    ];
    let mut workload = pod("a", "10.0.1.1");
    let named = ["demo/selected", "demo/not-yet-sent"].map(|n| n.split_once('/').unwrap());
    workload.authorization_policies = named
        .iter()
        .map(|(ns, n)| ambit_policy::PolicyRef::new(ns, n))
        .collect();
    let snapshot = Snapshot::new(1, vec![workload.clone()], Vec::new(), policies).unwrap();
    let names: Vec<_> = policies_for(&snapshot, &workload, "istio-system")
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(names, ["global", "root-namespace", "namespace", "selected"]);
    assert_eq!(workload.namespace, ns("demo"));
}

#[test]
fn errors_name_their_blame() {
    let no_endpoint = no_endpoint().unwrap_err();
    assert_eq!((no_endpoint.blame(), no_endpoint.retryable()), (Blame::Upstream, true));
    assert_eq!(
        no_endpoint.to_string(),
        "service demo/echo.demo.svc.cluster.local has no healthy endpoint for port 80"
    );
    let waypoint = unavailable(BoundDestination::Service(key("echo")), WaypointProblem::NoReadyEndpoint).unwrap_err();
    assert_eq!((waypoint.blame(), waypoint.retryable()), (Blame::Upstream, true));
    assert_eq!(
        waypoint.to_string(),
        "service demo/echo.demo.svc.cluster.local is bound to waypoint demo/waypoint.demo.svc.cluster.local:15008, \
         which has no ready endpoint: refusing instead of bypassing its L7 policy"
    );
    let workload = unavailable(BoundDestination::Workload(uid("a")), WaypointProblem::UnknownService).unwrap_err();
    assert_eq!(
        workload.to_string(),
        "workload Kubernetes//Pod/demo/a is bound to waypoint demo/waypoint.demo.svc.cluster.local:15008, \
         which is not a known service: refusing instead of bypassing its L7 policy"
    );
    let self_call = InboundError::SelfCall { port: 15008 };
    assert_eq!((self_call.blame(), self_call.retryable()), (Blame::Downstream, false));
}

#[test]
fn inbound_service_follows_forwarded_host_then_the_target_port() {
    let local = endpoint(
        endpoint(pod("echo", "10.0.0.5"), "admin", &[(9000, 9000)]),
        "echo",
        &[(80, 8080)],
    );
    let cases: [(Option<&str>, u16, Option<ServiceKey>); 6] = [
        (Some("echo.demo.svc.cluster.local"), 8080, Some(key("echo"))),
        // The named service wins even on another port; a host the pod does not serve is ignored.
        (Some("admin.demo.svc.cluster.local"), 8080, Some(key("admin"))),
        (Some("other.demo.svc.cluster.local"), 8080, Some(key("echo"))),
        (None, 9000, Some(key("admin"))),
        (None, 8080, Some(key("echo"))),
        (None, 7777, None),
    ];
    for (host, port, want) in cases {
        assert_eq!(inbound_service(&local, host, port), want.as_ref(), "{host:?} {port}");
    }
}

/// The node scope's lookups: what a captured connection must look up before it can be planned, and that once
/// looked up (or when nothing is missing) the decision is the plan.
#[test]
fn outbound_decisions_name_the_key_to_look_up() {
    let only_local = || {
        let mut echo = service("echo", "10.96.0.10", &[(80, 8080)]);
        echo.subject_alt_names = Vec::new();
        snapshot(vec![client()], vec![echo])
    };
    let with_waypoint = || {
        let mut echo = service("echo", "10.96.0.10", &[(80, 8080)]);
        echo.waypoint = Some(waypoint());
        snapshot(vec![client()], vec![echo])
    };
    let at_address = |network: &str, address: &str| GatewayAddress {
        destination: GatewayDestination::Address(NetworkAddress {
            network: network.to_string(),
            address: ip(address),
        }),
        hbone_mtls_port: 15008,
    };
    let passthrough = || {
        let mut echo = service("echo", "10.96.0.10", &[(80, 8080)]);
        echo.load_balancing = balancing(LoadBalancingMode::Passthrough, &[], HealthPolicy::OnlyHealthy);
        snapshot(vec![client()], vec![echo])
    };
    let lookup = |key: &str| OutboundDecision::Lookup(key.to_string());
    let unknown = |dst: &str| OutboundDecision::Plan(Ok(OutboundPlan::passthrough(addr(dst), None, None)));
    const ECHO: &str = "demo/echo.demo.svc.cluster.local";
    const WAYPOINT: &str = "demo/waypoint.demo.svc.cluster.local";
    let echo = ECHO;
    // (case, snapshot, destination, keys already looked up, decision)
    let cases: Vec<(&str, Snapshot, &str, &[&str], OutboundDecision)> = vec![
        (
            "a VIP: its service, for the endpoints",
            only_local(),
            "10.96.0.10:80",
            &[],
            lookup(echo),
        ),
        (
            "a VIP already looked up, still without endpoints: no healthy endpoint",
            only_local(),
            "10.96.0.10:80",
            &[ECHO],
            OutboundDecision::Plan(no_endpoint()),
        ),
        (
            "a VIP with its endpoints looked up: the plan",
            two_endpoints(|_, _, _| {}),
            "10.96.0.10:80",
            &[ECHO],
            OutboundDecision::Plan(to_echo_a()),
        ),
        (
            "a VIP whose local endpoints the node holds: the service still, for the others",
            two_endpoints(|_, _, _| {}),
            "10.96.0.10:80",
            &[],
            lookup(echo),
        ),
        (
            "a VIP with a waypoint: the waypoint's service, for its pods (not the service's endpoints)",
            with_waypoint(),
            "10.96.0.10:80",
            &[ECHO],
            lookup(WAYPOINT),
        ),
        (
            "a VIP with a waypoint whose pods the node holds: the waypoint's service still, for the others",
            waypoint_mesh(bind_echo),
            "10.96.0.10:80",
            &[],
            lookup(WAYPOINT),
        ),
        (
            "a VIP with a waypoint looked up: the plan to a waypoint pod",
            waypoint_mesh(bind_echo),
            "10.96.0.10:80",
            &[WAYPOINT],
            OutboundDecision::Plan(Ok(via_waypoint("10.0.5.1", "wp-1", "10.96.0.10:80", Some("echo")))),
        ),
        (
            "a VIP with a waypoint looked up, still unknown: refused, naming it",
            with_waypoint(),
            "10.96.0.10:80",
            &[WAYPOINT],
            OutboundDecision::Plan(unavailable(
                BoundDestination::Service(key("echo")),
                WaypointProblem::UnknownService,
            )),
        ),
        (
            "a VIP with a waypoint at an address the node holds: nothing to look up",
            waypoint_mesh(move |m| m.echo.waypoint = Some(at_address("", "10.0.5.1"))),
            "10.96.0.10:80",
            &[],
            OutboundDecision::Plan(Ok(via(
                at_address("", "10.0.5.1"),
                "10.0.5.1",
                "wp-1",
                "10.96.0.10:80",
                Some("echo"),
            ))),
        ),
        (
            "a VIP with a waypoint at an unknown address: its alias, in the waypoint's network",
            waypoint_mesh(move |m| m.echo.waypoint = Some(at_address("net-w", "10.0.5.9"))),
            "10.96.0.10:80",
            &[],
            lookup("net-w/10.0.5.9"),
        ),
        (
            "a pod IP the node holds, with a waypoint: the waypoint's service",
            waypoint_mesh(|m| m.a.waypoint = Some(waypoint())),
            "10.0.1.1:8080",
            &[],
            lookup(WAYPOINT),
        ),
        (
            "a PASSTHROUGH VIP: nothing to look up",
            passthrough(),
            "10.96.0.10:80",
            &[],
            OutboundDecision::Plan(Ok(OutboundPlan::passthrough(
                addr("10.96.0.10:80"),
                None,
                Some(key("echo")),
            ))),
        ),
        (
            "an unknown IP: its alias",
            only_local(),
            "10.0.2.3:8080",
            &[],
            lookup("/10.0.2.3"),
        ),
        (
            "an IPv4-mapped unknown IP: the IPv4 alias",
            only_local(),
            "[::ffff:10.0.2.3]:8080",
            &[],
            lookup("/10.0.2.3"),
        ),
        (
            "an unknown IP looked up: passthrough",
            only_local(),
            "10.0.2.3:8080",
            &["/10.0.2.3"],
            unknown("10.0.2.3:8080"),
        ),
        (
            "another key looked up does not count",
            only_local(),
            "10.0.2.3:8080",
            &["/10.0.2.4", ECHO],
            lookup("/10.0.2.3"),
        ),
        (
            "a pod IP the node holds: the plan",
            two_endpoints(|_, _, _| {}),
            "10.0.1.2:9000",
            &[],
            OutboundDecision::Plan(Ok(hbone("10.0.1.2", 9000, "b", None, &[]))),
        ),
    ];
    for (case, snapshot, dst, looked_up, expected) in cases {
        let decision = outbound_decision(
            &snapshot,
            &client(),
            addr(dst),
            |k| looked_up.contains(&k),
            &mut scripted(&[0]),
        );
        assert_eq!(decision, expected, "{case}");
    }

    let mut remote_client = client();
    remote_client.network = "net-2".to_string();
    let decision = outbound_decision(
        &only_local(),
        &remote_client,
        addr("10.0.2.3:80"),
        |_| false,
        &mut scripted(&[]),
    );
    assert_eq!(
        decision,
        lookup("net-2/10.0.2.3"),
        "the alias is in the client's network"
    );
}

#[test]
fn an_inbound_source_the_node_does_not_hold_is_looked_up_by_its_alias() {
    let local = client();
    let snap = snapshot(vec![client()], Vec::new());
    let local_ip = local.addresses[0];
    assert_eq!(
        source_lookup_key(&snap, &local, local_ip),
        None,
        "a held workload needs no lookup"
    );
    let other: std::net::IpAddr = "10.244.2.9".parse().unwrap();
    let key = source_lookup_key(&snap, &local, other);
    assert_eq!(key, Some(format!("{}/10.244.2.9", local.network)));
    let mapped: std::net::IpAddr = "::ffff:10.244.2.9".parse().unwrap();
    assert_eq!(
        source_lookup_key(&snap, &local, mapped),
        key,
        "IPv4-mapped addresses are canonical"
    );
}
