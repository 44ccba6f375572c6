//! The checks in order, then the plan: allocation results and checked objects assembled into a
//! [`ClusterPlan`].
//!
//! Pods appear in the plan in document order (a Deployment's pods at its position, in replica order, a waypoint's
//! at its Gateway's); services, namespaces and service accounts sorted by name. A pod's uid is derived from cluster,
//! namespace and name.

use crate::model::{ClusterPlan, GatewayApiObjects, Ipv4Cidr, PodPlan, ServicePlan};

use super::Report;
use super::cluster::{self, Cluster, ClusterFacts};
use super::document::Objects;
use super::env::{self, PodFacts};
use super::gateway_api;
use super::hash;
use super::meta::Registry;
use super::namespace::{self, Accounts, Namespaces};
use super::policy::{self, Policies};
use super::schedule::{self, Placement};
use super::service::{self, ServiceChecked};
use super::waypoint;
use super::workload::{self, PodSource};

/// What objects are checked against, growing as the checks go.
#[derive(Debug)]
pub(super) struct Context<'a> {
    /// The cluster's node names; None without a usable Cluster document (then nodeName is not checked).
    pub nodes: Option<&'a [String]>,
    /// None when unknown (then requested ClusterIPs are not checked against it).
    pub service_cidr: Option<Ipv4Cidr>,
    pub namespaces: Namespaces,
    pub accounts: Accounts,
    pub registry: Registry,
}

/// Checks everything, then plans; None if any error was reported.
pub(super) fn build(objects: &Objects, report: &mut Report) -> Option<ClusterPlan> {
    let facts = cluster::check(&objects.clusters, report);
    let mut context = Context::new(&facts);
    let (mut pods, mut services) = check_objects(objects, &mut context, report);
    let policies = policy::check(objects, &mut context, report);
    let gateway_api = gateway_api::check(objects, &mut context, report);
    let cluster = facts.cluster.as_ref()?;
    let waypoints = &gateway_api.waypoints;
    waypoint::add(&cluster.name, waypoints, &mut pods, &mut services, &mut context, report);
    let placements = schedule::place(cluster, &pods, report);
    let cluster_ips = service::allocate(&services, cluster.service_cidr, report);
    if !report.errors.is_empty() {
        return None;
    }
    let pod_plans = plan_pods(cluster, &pods, &placements)?;
    service::warn_unmatched(&services, &pod_plans, report);
    let service_plans = service::plans(&services, &cluster_ips);
    let plan = assemble(cluster, pod_plans, service_plans, &context);
    Some(with_config(plan, policies, gateway_api.objects))
}

/// Checks the Kubernetes objects: the pods to run and the services.
fn check_objects<'a>(
    objects: &'a Objects,
    context: &mut Context<'_>,
    report: &mut Report,
) -> (Vec<PodSource<'a>>, Vec<ServiceChecked<'a>>) {
    namespace::check_namespaces(&objects.namespaces, context, report);
    namespace::check_service_accounts(&objects.service_accounts, context, report);
    let pods = workload::check(objects, context, report);
    let services = service::check_all(&objects.services, context, report);
    service::check_requested_unique(&services, report);
    (pods, services)
}

/// The plan of every pod; None if one was not placed (which was reported).
fn plan_pods(cluster: &Cluster, pods: &[PodSource<'_>], placements: &[Option<Placement>]) -> Option<Vec<PodPlan>> {
    let plan =
        |(pod, placement): (&PodSource<'_>, &Option<Placement>)| Some(pod_plan(cluster, pod, placement.as_ref()?));
    pods.iter().zip(placements).map(plan).collect()
}

fn assemble(cluster: &Cluster, pods: Vec<PodPlan>, services: Vec<ServicePlan>, context: &Context<'_>) -> ClusterPlan {
    ClusterPlan {
        name: cluster.name.clone(),
        cluster_domain: cluster.domain.clone(),
        pod_cidr: cluster.pod_cidr,
        service_cidr: cluster.service_cidr,
        node_cidr: cluster.node_cidr,
        control_address: cluster.control_address,
        dns_ip: cluster.dns_ip,
        nodes: cluster.nodes.clone(),
        namespaces: context.namespaces.plans(),
        service_accounts: context.accounts.plans(),
        pods,
        services,
        authorization_policies: Vec::new(),
        peer_authentications: Vec::new(),
        gateway_api: GatewayApiObjects::default(),
    }
}

/// The plan with the config objects the control plane's store starts from.
fn with_config(plan: ClusterPlan, policies: Policies, gateway_api: GatewayApiObjects) -> ClusterPlan {
    ClusterPlan {
        authorization_policies: policies.authorization,
        peer_authentications: policies.peer,
        gateway_api,
        ..plan
    }
}

fn pod_plan(cluster: &Cluster, pod: &PodSource<'_>, placement: &Placement) -> PodPlan {
    let uid = hash::uid(&cluster.name, &pod.meta.namespace, &pod.meta.name);
    let facts = PodFacts::new(pod, placement, &uid);
    let containers = pod.spec.containers.iter();
    let containers = containers.map(|container| env::container_plan(container, &facts));
    PodPlan {
        namespace: pod.meta.namespace.clone(),
        name: pod.meta.name.clone(),
        uid: uid.clone(),
        node: placement.node.clone(),
        ip: placement.ip,
        labels: pod.meta.labels.clone(),
        annotations: pod.meta.annotations.clone(),
        service_account: pod.spec.service_account.clone(),
        restart_policy: pod.spec.restart_policy,
        owner: pod.owner.clone(),
        containers: containers.collect(),
    }
}

// === impl Context ===

impl<'a> Context<'a> {
    fn new(facts: &'a ClusterFacts) -> Self {
        Self {
            nodes: facts.nodes.as_deref(),
            service_cidr: facts.service_cidr,
            namespaces: Namespaces::default(),
            accounts: Accounts::default(),
            registry: Registry::default(),
        }
    }
}
