//! Service endpoints: which ready pods back each service port (the EndpointSlice controller's job), and the
//! nftables ruleset that load-balances ClusterIPs over them in every node namespace (kube-proxy's job). Pure
//! functions over the plan and the set of ready pods; the supervisor applies the results.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::model::{ClusterPlan, Protocol, ServicePlan};

/// A pod, by namespace and name.
pub type PodKey = (String, String);

/// The mark the endpoint chains set on a hairpin connection (a pod reaching itself through a ClusterIP), so that
/// postrouting masquerades it and the reply comes back through the node.
pub const MASQUERADE_MARK: u32 = 0x4000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEndpoints {
    pub namespace: String,
    pub name: String,
    pub cluster_ip: Option<Ipv4Addr>,
    pub ports: Vec<PortEndpoints>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortEndpoints {
    pub name: Option<String>,
    pub port: u16,
    pub protocol: Protocol,
    pub backends: Vec<Backend>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    pub pod: String,
    pub node: String,
    pub ip: Ipv4Addr,
    pub port: u16,
}

/// The endpoints of every service, given which pods are ready.
pub fn compute(plan: &ClusterPlan, ready: &BTreeSet<PodKey>) -> Vec<ServiceEndpoints> {
    plan.services
        .iter()
        .map(|svc| service_endpoints(plan, svc, ready))
        .collect()
}

fn service_endpoints(plan: &ClusterPlan, svc: &ServicePlan, ready: &BTreeSet<PodKey>) -> ServiceEndpoints {
    let pods: Vec<_> = plan
        .pods
        .iter()
        .filter(|p| p.namespace == svc.namespace && p.matches(&svc.selector))
        .filter(|p| ready.contains(&(p.namespace.clone(), p.name.clone())))
        .collect();
    let ports = svc
        .ports
        .iter()
        .map(|sp| PortEndpoints {
            name: sp.name.clone(),
            port: sp.port,
            protocol: sp.protocol,
            backends: pods
                .iter()
                .filter_map(|p| {
                    Some(Backend {
                        pod: p.name.clone(),
                        node: p.node.clone(),
                        ip: p.ip,
                        port: p.resolve_target(&sp.target, sp.protocol)?,
                    })
                })
                .collect(),
        })
        .collect();
    ServiceEndpoints {
        namespace: svc.namespace.clone(),
        name: svc.name.clone(),
        cluster_ip: svc.cluster_ip,
        ports,
    }
}

/// The ready pod IPs behind a service (for headless DNS answers), without duplicates.
pub fn ready_ips(eps: &ServiceEndpoints) -> Vec<Ipv4Addr> {
    let set: BTreeSet<Ipv4Addr> = eps.ports.iter().flat_map(|p| p.backends.iter().map(|b| b.ip)).collect();
    set.into_iter().collect()
}

/// The `ip ambit` nftables table for a node namespace, replacing any previous one in one transaction.
///
/// Connections to a ClusterIP port pick a backend uniformly at random (`numgen random`) and are DNATed to it;
/// ports without a ready backend are not matched, so their packets meet no route and the client gets an ICMP
/// unreachable at once. Both forwarded (pod) and local (node) traffic is translated.
pub fn ruleset(endpoints: &[ServiceEndpoints]) -> String {
    let mut chains = String::new();
    let mut dispatch = String::new();
    for (si, svc) in endpoints.iter().enumerate() {
        let Some(vip) = svc.cluster_ip else { continue };
        for (pi, port) in svc.ports.iter().enumerate() {
            if port.backends.is_empty() {
                continue;
            }
            let chain = format!("svc{si}_{pi}");
            let proto = match port.protocol {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
            };
            let _ = writeln!(
                dispatch,
                "    ip daddr {vip} {proto} dport {} jump {chain} comment \"{}/{}:{}\"",
                port.port, svc.namespace, svc.name, port.port
            );
            write_service_chain(&mut chains, &chain, proto, port);
        }
    }
    format!(
        "table ip ambit {{}}\ndelete table ip ambit\ntable ip ambit {{\n  chain services {{\n{dispatch}  }}\n\
         \x20 chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n    jump services\n  }}\n\
         \x20 chain output {{\n    type nat hook output priority -100; policy accept;\n    jump services\n  }}\n\
         \x20 chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    \
         meta mark & {MASQUERADE_MARK:#x} == {MASQUERADE_MARK:#x} masquerade\n  }}\n{chains}}}\n"
    )
}

fn write_service_chain(out: &mut String, chain: &str, proto: &str, port: &PortEndpoints) {
    let n = port.backends.len();
    let map: Vec<String> = (0..n).map(|i| format!("{i} : jump {chain}_ep{i}")).collect();
    let _ = writeln!(
        out,
        "  chain {chain} {{\n    numgen random mod {n} vmap {{ {} }}\n  }}",
        map.join(", ")
    );
    for (i, b) in port.backends.iter().enumerate() {
        let _ = writeln!(
            out,
            "  chain {chain}_ep{i} {{\n    ip saddr {ip} meta mark set meta mark | {MASQUERADE_MARK:#x}\n    \
             meta l4proto {proto} dnat to {ip}:{port}\n  }}",
            ip = b.ip,
            port = b.port
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::{ContainerPlan, ContainerPort, Ipv4Cidr, PodPlan, RestartPolicy, ServicePort, TargetPort};

    fn pod(name: &str, node: &str, ip: [u8; 4], app: &str) -> PodPlan {
        PodPlan {
            namespace: "default".into(),
            name: name.into(),
            uid: name.into(),
            node: node.into(),
            ip: Ipv4Addr::from(ip),
            labels: BTreeMap::from([("app".to_string(), app.to_string())]),
            annotations: BTreeMap::new(),
            service_account: "default".into(),
            restart_policy: RestartPolicy::Always,
            owner: None,
            containers: vec![ContainerPlan {
                name: "main".into(),
                argv: vec!["true".into()],
                env: vec![],
                working_dir: None,
                ports: vec![ContainerPort {
                    name: Some("http".into()),
                    port: 8080,
                    protocol: Protocol::Tcp,
                }],
                readiness: None,
            }],
        }
    }

    fn plan() -> ClusterPlan {
        let cidr = |s: &str| s.parse::<Ipv4Cidr>().unwrap();
        ClusterPlan {
            name: "t".into(),
            cluster_domain: "cluster.local".into(),
            pod_cidr: cidr("10.244.0.0/16"),
            service_cidr: cidr("10.96.0.0/16"),
            node_cidr: cidr("172.31.0.0/24"),
            control_address: Ipv4Addr::new(172, 31, 0, 1),
            dns_ip: Ipv4Addr::new(10, 96, 0, 10),
            nodes: vec![],
            namespaces: vec![],
            service_accounts: vec![],
            authorization_policies: vec![],
            peer_authentications: vec![],
            gateway_api: Default::default(),
            pods: vec![
                pod("echo-a", "n1", [10, 244, 1, 2], "echo"),
                pod("echo-b", "n2", [10, 244, 2, 2], "echo"),
                pod("client", "n1", [10, 244, 1, 3], "client"),
            ],
            services: vec![ServicePlan {
                namespace: "default".into(),
                name: "echo".into(),
                cluster_ip: Some(Ipv4Addr::new(10, 96, 0, 16)),
                selector: BTreeMap::from([("app".to_string(), "echo".to_string())]),
                ports: vec![ServicePort {
                    name: None,
                    port: 80,
                    protocol: Protocol::Tcp,
                    target: TargetPort::Name("http".into()),
                }],
                labels: BTreeMap::new(),
            }],
        }
    }

    fn ready(names: &[&str]) -> BTreeSet<PodKey> {
        names.iter().map(|n| ("default".to_string(), n.to_string())).collect()
    }

    #[test]
    fn only_ready_matching_pods_are_backends() {
        let cases: &[(&[&str], &[&str])] = &[
            (&["echo-a", "echo-b", "client"], &["echo-a", "echo-b"]),
            (&["echo-b"], &["echo-b"]),
            (&["client"], &[]),
        ];
        for (ready_pods, want) in cases {
            let eps = compute(&plan(), &ready(ready_pods));
            let got: Vec<&str> = eps[0].ports[0].backends.iter().map(|b| b.pod.as_str()).collect();
            assert_eq!(&got, want, "ready {ready_pods:?}");
            assert!(eps[0].ports[0].backends.iter().all(|b| b.port == 8080));
        }
    }

    #[test]
    fn ruleset_spreads_over_backends_and_skips_empty_ports() {
        let text = ruleset(&compute(&plan(), &ready(&["echo-a", "echo-b"])));
        assert!(text.contains("ip daddr 10.96.0.16 tcp dport 80 jump svc0_0"), "{text}");
        assert!(
            text.contains("numgen random mod 2 vmap { 0 : jump svc0_0_ep0, 1 : jump svc0_0_ep1 }"),
            "{text}"
        );
        assert!(text.contains("meta l4proto tcp dnat to 10.244.2.2:8080"), "{text}");
        assert!(text.starts_with("table ip ambit {}\ndelete table ip ambit\n"));
        let empty = ruleset(&compute(&plan(), &ready(&[])));
        assert!(!empty.contains("svc0_0"), "{empty}");
    }
}
