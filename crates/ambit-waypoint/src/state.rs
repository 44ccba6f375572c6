//! What the waypoint serves from, rebuilt whole whenever the workload state or the L7 config changes: the route table
//! of every port of every Service bound to this waypoint, and the AuthorizationPolicies attached to it, compiled.
//! Requests read one [`L7State`] from start to end, so a change never applies to half a request.

use std::collections::HashMap;
use std::sync::Arc;

use ambit_l7::balance::Algorithm;
use ambit_l7::route::{RouteTable, ServiceRef};
use ambit_node::state::Snapshot;
use ambit_policy::http::{HttpPolicy, Waypoint, waypoint_policies};

use crate::config::L7Config;
use crate::target::WaypointId;

/// The annotation on the waypoint's Gateway that chooses how requests are spread over a backend's endpoints:
/// `LEAST_REQUEST` (the default, as Istio's) or `ROUND_ROBIN` (the values of DestinationRule's `loadBalancer.simple`).
pub const LOAD_BALANCER_ANNOTATION: &str = "ambit.dev/load-balancer";

/// One consistent view: workload state, L7 config, and what was compiled from them.
#[derive(Debug)]
pub struct L7State {
    pub snapshot: Arc<Snapshot>,
    pub config: Arc<L7Config>,
    tables: HashMap<ServiceRef, RouteTable>,
    pub policies: Vec<HttpPolicy>,
    /// How each backend's endpoints are chosen ([`LOAD_BALANCER_ANNOTATION`]).
    pub algorithm: Algorithm,
    /// Parts of routes and policies that are not enforced as written, for logs and the config dump.
    pub problems: Vec<String>,
}

// === impl L7State ===

impl L7State {
    /// Compiles the routes of the Services bound to `me` and the policies attached to it.
    pub fn build(snapshot: Arc<Snapshot>, config: Arc<L7Config>, me: &WaypointId, root_namespace: &str) -> Self {
        let http: Vec<_> = config.http_routes.values().collect();
        let grpc: Vec<_> = config.grpc_routes.values().collect();
        let mut tables = HashMap::new();
        let mut problems = Vec::new();
        let bound = (snapshot.services().iter()).filter(|s| s.waypoint.as_ref().is_some_and(|gw| me.is(gw)));
        for service in bound {
            for port in &service.ports {
                let key = ServiceRef::new(service.namespace.as_str(), service.name.as_str(), port.service_port);
                let (table, found) = RouteTable::compile(&http, &grpc, &key);
                problems.extend(found.iter().map(|p| format!("{key}: {p}")));
                tables.insert(key, table);
            }
        }
        let waypoint = Waypoint {
            namespace: me.namespace.clone(),
            name: me.name.clone(),
            root_namespace: root_namespace.to_string(),
        };
        let policies = waypoint_policies(config.policies.values(), &waypoint);
        for policy in &policies {
            if let Some(error) = &policy.invalid {
                problems.push(format!(
                    "AuthorizationPolicy {}/{}: {error} (enforced fail-closed)",
                    policy.namespace, policy.name
                ));
            }
        }
        let gateway = (config.gateways.values()).find(|gw| {
            gw.metadata.namespace.as_deref() == Some(&me.namespace) && gw.metadata.name.as_deref() == Some(&me.name)
        });
        let annotation = gateway.and_then(|gw| gw.metadata.annotations.as_ref()?.get(LOAD_BALANCER_ANNOTATION));
        let algorithm = match annotation.map(String::as_str) {
            None | Some("LEAST_REQUEST") => Algorithm::LeastRequest,
            Some("ROUND_ROBIN") => Algorithm::RoundRobin,
            Some(other) => {
                problems.push(format!(
                    "Gateway {me}: metadata.annotations[\"{LOAD_BALANCER_ANNOTATION}\"]: {other:?} is not \
                     LEAST_REQUEST or ROUND_ROBIN; using LEAST_REQUEST"
                ));
                Algorithm::LeastRequest
            }
        };
        Self {
            snapshot,
            config,
            tables,
            policies,
            algorithm,
            problems,
        }
    }

    /// The route table of a bound Service port.
    pub fn table(&self, service: &ServiceRef) -> Option<&RouteTable> {
        self.tables.get(service)
    }

    /// How many Service ports have a route table.
    pub fn table_count(&self) -> usize {
        self.tables.len()
    }
}
