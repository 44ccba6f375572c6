//! `ambit get KIND [NAME]`: the nodes, pods and services of a local cluster (from its plan and status), and the
//! objects of its control plane's config store (from the config API), as tables like kubectl prints them, or as
//! Kubernetes objects in YAML or JSON.

use std::process::ExitCode;

use ambit_cluster::endpoints::ServiceEndpoints;
use ambit_cluster::model::ClusterPlan;
use ambit_cluster::status::{ClusterStatus, unix_now};
use ambit_cluster::view;
use clap::ValueEnum;
use comfy_table::{Table, presets::NOTHING};
use serde_json::Value;

use super::api::{self, ApiError, Client, ObjectQuery};

#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// What to list: nodes, pods, services (from the cluster's plan); authorizationpolicies (ap),
    /// peerauthentications (pa), gateways (gtw), httproutes, grpcroutes, namespaces (ns), serviceaccounts (sa) (from
    /// the control plane). Singular, plural or short names, any case.
    #[arg(value_enum, ignore_case = true, hide_possible_values = true)]
    kind: Kind,
    /// Only the object of this name; fails when there is none.
    name: Option<String>,
    /// Only objects of this namespace (default: "default").
    #[arg(short, long)]
    namespace: Option<String>,
    /// Objects of every namespace.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    all_namespaces: bool,
    /// Output format.
    #[arg(short, long, value_enum)]
    output: Option<Output>,
    #[command(flatten)]
    cluster: super::ClusterSelector,
}

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum Kind {
    #[value(alias = "node", alias = "no")]
    Nodes,
    #[value(alias = "pod", alias = "po")]
    Pods,
    #[value(alias = "service", alias = "svc")]
    Services,
    #[value(name = "authorizationpolicies", alias = "authorizationpolicy", alias = "ap")]
    AuthorizationPolicies,
    #[value(name = "peerauthentications", alias = "peerauthentication", alias = "pa")]
    PeerAuthentications,
    #[value(alias = "gateway", alias = "gtw")]
    Gateways,
    #[value(name = "httproutes", alias = "httproute")]
    HttpRoutes,
    #[value(name = "grpcroutes", alias = "grpcroute")]
    GrpcRoutes,
    #[value(alias = "namespace", alias = "ns")]
    Namespaces,
    #[value(name = "serviceaccounts", alias = "serviceaccount", alias = "sa")]
    ServiceAccounts,
}

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum Output {
    Wide,
    Yaml,
    Json,
}

/// A kind the control plane's config API serves: its Kind name, its resource (plural) and API group as kubectl
/// names them, and whether its objects live in namespaces.
#[derive(Clone, Copy, Debug, PartialEq)]
struct StoreKind {
    kind: &'static str,
    resource: &'static str,
    group: &'static str,
    namespaced: bool,
}

/// Which objects a `get` shows: those of one namespace (None: every namespace, or a cluster-scoped kind) and of one
/// name (None: every name).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Filter<'a> {
    namespace: Option<&'a str>,
    name: Option<&'a str>,
}

/// What a command prints and how it ends, decided before anything is printed.
#[derive(Debug, PartialEq, Default)]
struct Printout {
    stdout: String,
    stderr: String,
    failed: bool,
}

const ISTIO_SECURITY: &str = "security.istio.io";
const GATEWAY_API: &str = "gateway.networking.k8s.io";
/// The kinds of the config API, in the order `Kind` lists them.
const STORE_KINDS: [StoreKind; 7] = [
    StoreKind::new("AuthorizationPolicy", "authorizationpolicies", ISTIO_SECURITY, true),
    StoreKind::new("PeerAuthentication", "peerauthentications", ISTIO_SECURITY, true),
    StoreKind::new("Gateway", "gateways", GATEWAY_API, true),
    StoreKind::new("HTTPRoute", "httproutes", GATEWAY_API, true),
    StoreKind::new("GRPCRoute", "grpcroutes", GATEWAY_API, true),
    StoreKind::new("Namespace", "namespaces", "", false),
    StoreKind::new("ServiceAccount", "serviceaccounts", "", true),
];
/// A value a table has no data for, as kubectl shows it.
const NONE: &str = "<none>";

// === impl Kind ===

impl Kind {
    /// The config API's kind, or None for the kinds read from the cluster's plan.
    fn store(self) -> Option<StoreKind> {
        let index = match self {
            Kind::Nodes | Kind::Pods | Kind::Services => return None,
            Kind::AuthorizationPolicies => 0,
            Kind::PeerAuthentications => 1,
            Kind::Gateways => 2,
            Kind::HttpRoutes => 3,
            Kind::GrpcRoutes => 4,
            Kind::Namespaces => 5,
            Kind::ServiceAccounts => 6,
        };
        Some(STORE_KINDS[index])
    }

    /// The resource name in kubectl's messages, e.g. `pods` or `httproutes.gateway.networking.k8s.io`.
    fn resource(self) -> String {
        match self.store() {
            Some(kind) => qualified(kind.resource, kind.group),
            None => self
                .to_possible_value()
                .map(|v| v.get_name().to_string())
                .unwrap_or_default(),
        }
    }
}

// === impl StoreKind ===

impl StoreKind {
    const fn new(kind: &'static str, resource: &'static str, group: &'static str, namespaced: bool) -> Self {
        StoreKind {
            kind,
            resource,
            group,
            namespaced,
        }
    }
}

// === impl Filter ===

impl Filter<'_> {
    fn keeps(&self, namespace: &str, name: &str) -> bool {
        self.namespace.is_none_or(|ns| ns == namespace) && self.name.is_none_or(|n| n == name)
    }
}

/// The API group of a Kind name: `""` for the core kinds (and kinds the config API does not serve).
pub fn group_of(kind: &str) -> &'static str {
    STORE_KINDS.iter().find(|k| k.kind == kind).map_or("", |k| k.group)
}

/// `name.group`, or `name` for the core group.
pub fn qualified(name: &str, group: &str) -> String {
    if group.is_empty() {
        name.to_string()
    } else {
        format!("{name}.{group}")
    }
}

pub fn run(args: GetArgs) -> anyhow::Result<ExitCode> {
    let printout = match args.kind.store() {
        Some(kind) => run_store(&args, kind)?,
        None => run_plan(&args)?,
    };
    print!("{}", printout.stdout);
    eprint!("{}", printout.stderr);
    Ok(if printout.failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The filter of the command line for a kind that is namespaced or not.
fn filter(args: &GetArgs, namespaced: bool) -> Filter<'_> {
    let namespace = match (namespaced, args.all_namespaces) {
        (true, false) => Some(args.namespace.as_deref().unwrap_or("default")),
        _ => None,
    };
    Filter {
        namespace,
        name: args.name.as_deref(),
    }
}

/// A config-store kind: asks the control plane, then renders.
fn run_store(args: &GetArgs, kind: StoreKind) -> anyhow::Result<Printout> {
    let filter = filter(args, kind.namespaced);
    let client = Client::new(args.cluster.resolve()?.control_socket());
    let query = ObjectQuery {
        kind: kind.kind,
        namespace: filter.namespace,
        name: filter.name,
    };
    let items = match api::block_on(client.objects(&query))? {
        Ok(items) => items,
        // The API's answer to a name that matches nothing.
        Err(ApiError::Rejected { status: 404, .. }) if filter.name.is_some() => Vec::new(),
        Err(ApiError::Rejected { diagnostics, .. }) if !diagnostics.is_empty() => {
            return Ok(Printout {
                stderr: super::apply::diagnostic_lines(&diagnostics),
                failed: true,
                ..Printout::default()
            });
        }
        Err(error) => return Err(error.into()),
    };
    let with_namespace = args.all_namespaces && kind.namespaced;
    render(args.kind, filter, args.output, items, |items| {
        store_table(kind, items, with_namespace)
    })
}

/// The objects as the output format asks, or kubectl's message when there are none.
fn render(
    kind: Kind,
    filter: Filter<'_>,
    output: Option<Output>,
    items: Vec<Value>,
    table: impl FnOnce(&[Value]) -> Table,
) -> anyhow::Result<Printout> {
    if let (Some(name), true) = (filter.name, items.is_empty()) {
        return Ok(not_found(kind, name));
    }
    let document = || match (filter.name, items.as_slice()) {
        (Some(_), [one]) => one.clone(),
        _ => view::list(&items),
    };
    let stdout = match output {
        Some(Output::Json) => format!("{}\n", serde_json::to_string_pretty(&document())?),
        Some(Output::Yaml) => serde_saphyr::to_string(&document())?,
        _ if items.is_empty() => {
            return Ok(Printout {
                stderr: no_resources(filter.namespace),
                ..Printout::default()
            });
        }
        _ => format!("{}\n", table(&items).trim_fmt()),
    };
    Ok(Printout {
        stdout,
        ..Printout::default()
    })
}

/// kubectl's answer to a name that matches nothing.
fn not_found(kind: Kind, name: &str) -> Printout {
    Printout {
        stderr: format!(
            "Error from server (NotFound): {} \"{name}\" not found\n",
            kind.resource()
        ),
        failed: true,
        ..Printout::default()
    }
}

/// kubectl's answer to a list with no objects.
fn no_resources(namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("No resources found in {ns} namespace.\n"),
        None => "No resources found\n".into(),
    }
}

/// The table of config-store objects: NAMESPACE (with -A), NAME, then the columns of the kind.
fn store_table(kind: StoreKind, items: &[Value], with_namespace: bool) -> Table {
    let mut header = vec!["NAMESPACE", "NAME"];
    header.extend(store_columns(kind.kind));
    let mut table = table(if with_namespace { &header } else { &header[1..] });
    for object in items {
        let meta = &object["metadata"];
        let mut row = vec![text(&meta["namespace"]), text(&meta["name"])];
        row.extend(store_cells(kind.kind, object));
        table.add_row(if with_namespace { row } else { row[1..].to_vec() });
    }
    table
}

/// The columns after NAME of a config-store kind.
fn store_columns(kind: &str) -> &'static [&'static str] {
    match kind {
        "AuthorizationPolicy" => &["ACTION", "STATUS"],
        "PeerAuthentication" => &["MODE"],
        "Gateway" => &["CLASS"],
        "HTTPRoute" | "GRPCRoute" => &["HOSTNAMES"],
        "Namespace" => &["STATUS"],
        _ => &[],
    }
}

/// The cells of [`store_columns`] for one object.
fn store_cells(kind: &str, object: &Value) -> Vec<String> {
    let spec = &object["spec"];
    match kind {
        // ALLOW is the action of a policy that names none; the status is the proxy's condition on it.
        "AuthorizationPolicy" => vec![
            spec["action"].as_str().unwrap_or("ALLOW").to_string(),
            or_none(&object["status"]["conditions"][0]["reason"]),
        ],
        "PeerAuthentication" => vec![spec["mtls"]["mode"].as_str().unwrap_or("UNSET").to_string()],
        "Gateway" => vec![or_none(&spec["gatewayClassName"])],
        "HTTPRoute" | "GRPCRoute" => {
            let hostnames: Vec<&str> = spec["hostnames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            vec![if hostnames.is_empty() {
                NONE.into()
            } else {
                hostnames.join(",")
            }]
        }
        "Namespace" => vec![object["status"]["phase"].as_str().unwrap_or("Active").to_string()],
        _ => Vec::new(),
    }
}

/// A string field, or `""`.
fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// A string field, or `<none>`.
fn or_none(v: &Value) -> String {
    v.as_str().filter(|s| !s.is_empty()).unwrap_or(NONE).to_string()
}

fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_style(NOTHING);
    table.set_header(header);
    table
}

/// A kind of the cluster's plan: nodes, pods or services.
fn run_plan(args: &GetArgs) -> anyhow::Result<Printout> {
    let layout = args.cluster.resolve()?;
    let plan = super::load_plan(&layout)?;
    let status = ClusterStatus::read(&layout.status_file()).ok();
    let filter = filter(args, args.kind != Kind::Nodes);
    let objects: Vec<Value> = match args.kind {
        Kind::Nodes => plan
            .nodes
            .iter()
            .filter(|n| filter.keeps("", &n.name))
            .map(|n| to_value(view::node(&plan, n)))
            .collect(),
        Kind::Pods => {
            let mut pods: Vec<Value> = (plan.pods.iter())
                .filter(|p| filter.keeps(&p.namespace, &p.name))
                .map(|p| to_value(view::pod(&plan, p, status.as_ref())))
                .collect();
            // Labels and annotations change after the plan (`ambit label`, the node agent's annotation): the control
            // plane holds them as they are now.
            if matches!(args.output, Some(Output::Json | Output::Yaml)) && !pods.is_empty() {
                overlay_live_metadata(&layout, &filter, &mut pods);
            }
            pods
        }
        _ => plan
            .services
            .iter()
            .filter(|s| filter.keeps(&s.namespace, &s.name))
            .map(|s| to_value(view::service(s)))
            .collect(),
    };
    let with_ns = args.all_namespaces;
    let wide = args.output == Some(Output::Wide);
    render(args.kind, filter, args.output, objects, |_| {
        plan_table(args.kind, &plan, status.as_ref(), &filter, with_ns, wide)
    })
}

/// Replaces the planned labels and annotations of `pods` by the control plane's, when it answers (within a second);
/// otherwise they stay as planned, with a note on stderr.
fn overlay_live_metadata(layout: &ambit_cluster::layout::Layout, filter: &Filter<'_>, pods: &mut [Value]) {
    let client = Client::new(layout.control_socket()).with_timeout(std::time::Duration::from_secs(1));
    let query = ObjectQuery {
        kind: "Pod",
        namespace: filter.namespace,
        name: filter.name,
    };
    match api::block_on(client.objects(&query)).and_then(|answer| Ok(answer?)) {
        Ok(live) => with_live_metadata(pods, &live),
        Err(error) => eprintln!("labels and annotations as planned: {error}"),
    }
}

/// Sets `metadata.labels` and `metadata.annotations` of each pod to those of the live object of the same namespace
/// and name; a pod the live list lacks keeps its own.
fn with_live_metadata(pods: &mut [Value], live: &[Value]) {
    fn key(object: &Value) -> (Option<&str>, Option<&str>) {
        let metadata = &object["metadata"];
        (metadata["namespace"].as_str(), metadata["name"].as_str())
    }
    let live: std::collections::HashMap<_, &Value> =
        live.iter().map(|object| (key(object), &object["metadata"])).collect();
    for pod in pods.iter_mut() {
        let Some(&found) = live.get(&key(pod)) else {
            continue;
        };
        let Some(metadata) = pod["metadata"].as_object_mut() else {
            continue;
        };
        for field in ["labels", "annotations"] {
            match found.get(field) {
                Some(value) => metadata.insert(field.to_string(), value.clone()),
                None => metadata.remove(field),
            };
        }
    }
}

fn to_value<T: serde::Serialize>(v: T) -> serde_json::Value {
    // Kubernetes API types always serialize.
    serde_json::to_value(v).unwrap_or_default()
}

fn plan_table(
    kind: Kind,
    plan: &ClusterPlan,
    status: Option<&ClusterStatus>,
    filter: &Filter<'_>,
    with_ns: bool,
    wide: bool,
) -> Table {
    let mut table = Table::new();
    table.load_style(NOTHING);
    let age = status
        .map(|s| human_age(unix_now().saturating_sub(s.started_at)))
        .unwrap_or_default();
    match kind {
        Kind::Nodes => {
            table.set_header(["NAME", "STATUS", "AGE", "INTERNAL-IP", "POD-CIDR"]);
            for n in plan.nodes.iter().filter(|n| filter.keeps("", &n.name)) {
                let row = [
                    n.name.clone(),
                    "Ready".into(),
                    age.clone(),
                    n.address.to_string(),
                    n.pod_cidr.to_string(),
                ];
                table.add_row(row);
            }
        }
        Kind::Pods => pods_table(&mut table, plan, status, filter, with_ns, wide),
        _ => services_table(&mut table, plan, status, filter, with_ns, wide, &age),
    }
    table
}

fn pods_table(
    table: &mut Table,
    plan: &ClusterPlan,
    status: Option<&ClusterStatus>,
    filter: &Filter<'_>,
    with_ns: bool,
    wide: bool,
) {
    let mut header = vec!["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS"];
    if wide {
        header.extend(["IP", "NODE", "PID"]);
    }
    table.set_header(if with_ns { &header[..] } else { &header[1..] });
    for p in plan.pods.iter().filter(|p| filter.keeps(&p.namespace, &p.name)) {
        let st = status.and_then(|s| s.pod(&p.namespace, &p.name));
        let ready = st.map(|s| s.containers.iter().filter(|c| c.ready).count()).unwrap_or(0);
        let mut row = vec![
            p.namespace.clone(),
            p.name.clone(),
            format!("{ready}/{}", p.containers.len()),
            st.map(|s| s.display_status()).unwrap_or_else(|| "Unknown".into()),
            st.map(|s| s.restarts()).unwrap_or(0).to_string(),
        ];
        if wide {
            let pids = st.map(|s| s.pids()).unwrap_or_default();
            row.extend([p.ip.to_string(), p.node.clone(), pids]);
        }
        table.add_row(if with_ns { row } else { row[1..].to_vec() });
    }
}

fn services_table(
    table: &mut Table,
    plan: &ClusterPlan,
    status: Option<&ClusterStatus>,
    filter: &Filter<'_>,
    with_ns: bool,
    wide: bool,
    age: &str,
) {
    let mut header = vec!["NAMESPACE", "NAME", "TYPE", "CLUSTER-IP", "PORT(S)", "AGE"];
    if wide {
        header.extend(["SELECTOR", "ENDPOINTS"]);
    }
    table.set_header(if with_ns { &header[..] } else { &header[1..] });
    for s in plan.services.iter().filter(|s| filter.keeps(&s.namespace, &s.name)) {
        let ports: Vec<String> = s.ports.iter().map(|p| format!("{}/{}", p.port, p.protocol)).collect();
        let mut row = vec![
            s.namespace.clone(),
            s.name.clone(),
            "ClusterIP".into(),
            s.cluster_ip.map(|i| i.to_string()).unwrap_or_else(|| "None".into()),
            ports.join(","),
            age.to_string(),
        ];
        if wide {
            let selector: Vec<String> = s.selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let eps = status.and_then(|st| {
                st.endpoints
                    .iter()
                    .find(|e| e.namespace == s.namespace && e.name == s.name)
            });
            row.extend([
                selector.join(","),
                eps.map(endpoints_text).unwrap_or_else(|| "<none>".into()),
            ]);
        }
        table.add_row(if with_ns { row } else { row[1..].to_vec() });
    }
}

fn endpoints_text(eps: &ServiceEndpoints) -> String {
    let mut all: Vec<String> = eps
        .ports
        .iter()
        .flat_map(|p| p.backends.iter().map(|b| format!("{}:{}", b.ip, b.port)))
        .collect();
    all.dedup();
    if all.is_empty() { "<none>".into() } else { all.join(",") }
}

fn human_age(secs: u64) -> String {
    match secs {
        0..120 => format!("{secs}s"),
        120..7200 => format!("{}m", secs / 60),
        7200..172800 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use serde_json::json;

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(argv: &[&str]) -> GetArgs {
        let argv = [&["ambit", "get"][..], argv].concat();
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Get(args) => args,
            other => panic!("not get: {other:?}"),
        }
    }

    #[test]
    fn kinds_parse_from_any_of_their_names() {
        let cases = [
            (
                Kind::AuthorizationPolicies,
                &["authorizationpolicies", "AuthorizationPolicy", "ap", "AP"][..],
            ),
            (
                Kind::PeerAuthentications,
                &["peerauthentications", "peerauthentication", "pa"],
            ),
            (Kind::Gateways, &["gateways", "Gateway", "gtw"]),
            (Kind::HttpRoutes, &["httproutes", "HTTPRoute"]),
            (Kind::GrpcRoutes, &["grpcroutes", "GRPCRoute"]),
            (Kind::Namespaces, &["namespaces", "Namespace", "ns"]),
            (Kind::ServiceAccounts, &["serviceaccounts", "ServiceAccount", "sa"]),
            (Kind::Pods, &["pods", "pod", "po", "Pods"]),
            (Kind::Services, &["services", "svc"]),
            (Kind::Nodes, &["nodes", "no"]),
        ];
        for (kind, names) in cases {
            for name in names {
                assert_eq!(parse(&[*name]).kind, kind, "{name}");
            }
        }
        for wrong in [
            &["policies"][..],
            &["ap", "-n", "a", "-A"],
            &["ap", "a", "b"],
            &["ap", "-o", "name"],
        ] {
            let argv = [&["ambit", "get"][..], wrong].concat();
            assert!(Cli::try_parse_from(argv).is_err(), "{wrong:?}");
        }
    }

    #[test]
    fn filters_follow_namespace_flags_and_scope() {
        /// Arguments, and the kind's scope and the filter they give.
        type Case = (
            &'static [&'static str],
            bool,
            Option<&'static str>,
            Option<&'static str>,
        );
        let cases: [Case; 6] = [
            (&["ap"], true, Some("default"), None),
            (&["ap", "deny", "-n", "web"], true, Some("web"), Some("deny")),
            (&["ap", "-A"], true, None, None),
            (&["ns", "-n", "web"], false, None, None),
            (&["ns", "web"], false, None, Some("web")),
            (&["sa", "--namespace", "web"], true, Some("web"), None),
        ];
        for (argv, namespaced, namespace, name) in cases {
            let args = parse(argv);
            assert_eq!(args.kind.store().unwrap().namespaced, namespaced, "{argv:?}");
            assert_eq!(filter(&args, namespaced), Filter { namespace, name }, "{argv:?}");
        }
        let keep = Filter {
            namespace: Some("web"),
            name: Some("a"),
        };
        assert!(keep.keeps("web", "a"));
        assert!(!keep.keeps("web", "b") && !keep.keeps("other", "a"));
        assert!(
            Filter {
                namespace: None,
                name: None
            }
            .keeps("any", "thing")
        );
    }

    fn object(kind: &str, namespace: &str, name: &str, spec: Value, status: Value) -> Value {
        json!({"kind": kind, "metadata": {"namespace": namespace, "name": name}, "spec": spec, "status": status})
    }

    /// The table's lines, each split at runs of spaces.
    fn cells(table: Table) -> Vec<Vec<String>> {
        let text = table.trim_fmt();
        text.lines()
            .map(|l| l.split_whitespace().map(String::from).collect())
            .collect()
    }

    #[test]
    fn store_tables_show_the_columns_of_each_kind() {
        let accepted = json!({"conditions": [{"type": "ZtunnelAccepted", "status": "True", "reason": "Accepted"}]});
        let cases: Vec<(Kind, Value, &[&str], &[&str])> = vec![
            (
                Kind::AuthorizationPolicies,
                object(
                    "AuthorizationPolicy",
                    "web",
                    "deny",
                    json!({"action": "DENY"}),
                    accepted,
                ),
                &["NAME", "ACTION", "STATUS"],
                &["deny", "DENY", "Accepted"],
            ),
            (
                Kind::AuthorizationPolicies,
                object("AuthorizationPolicy", "web", "allow", json!({}), Value::Null),
                &["NAME", "ACTION", "STATUS"],
                &["allow", "ALLOW", "<none>"],
            ),
            (
                Kind::PeerAuthentications,
                object(
                    "PeerAuthentication",
                    "web",
                    "strict",
                    json!({"mtls": {"mode": "STRICT"}}),
                    Value::Null,
                ),
                &["NAME", "MODE"],
                &["strict", "STRICT"],
            ),
            (
                Kind::PeerAuthentications,
                object(
                    "PeerAuthentication",
                    "web",
                    "ports",
                    json!({"portLevelMtls": {}}),
                    Value::Null,
                ),
                &["NAME", "MODE"],
                &["ports", "UNSET"],
            ),
            (
                Kind::Gateways,
                object(
                    "Gateway",
                    "web",
                    "waypoint",
                    json!({"gatewayClassName": "istio-waypoint"}),
                    Value::Null,
                ),
                &["NAME", "CLASS"],
                &["waypoint", "istio-waypoint"],
            ),
            (
                Kind::HttpRoutes,
                object(
                    "HTTPRoute",
                    "web",
                    "r",
                    json!({"hostnames": ["a.example", "b.example"]}),
                    Value::Null,
                ),
                &["NAME", "HOSTNAMES"],
                &["r", "a.example,b.example"],
            ),
            (
                Kind::GrpcRoutes,
                object("GRPCRoute", "web", "g", json!({}), Value::Null),
                &["NAME", "HOSTNAMES"],
                &["g", "<none>"],
            ),
            (
                Kind::Namespaces,
                json!({"kind": "Namespace", "metadata": {"name": "web"}}),
                &["NAME", "STATUS"],
                &["web", "Active"],
            ),
            (
                Kind::Namespaces,
                json!({"kind": "Namespace", "metadata": {"name": "old"}, "status": {"phase": "Terminating"}}),
                &["NAME", "STATUS"],
                &["old", "Terminating"],
            ),
            (
                Kind::ServiceAccounts,
                object("ServiceAccount", "web", "echo", Value::Null, Value::Null),
                &["NAME"],
                &["echo"],
            ),
        ];
        for (kind, object, header, row) in cases {
            let store = kind.store().unwrap();
            let lines = cells(store_table(store, std::slice::from_ref(&object), false));
            assert_eq!(lines, [header.to_vec(), row.to_vec()], "{kind:?} {object}");
            // With -A, namespaced kinds lead with the namespace; the cluster-scoped Namespace has none.
            let lines = cells(store_table(store, &[object], store.namespaced));
            let with_ns = |cells: &[&'static str], ns: &'static str| [&[ns][..], cells].concat();
            if store.namespaced {
                assert_eq!(lines, [with_ns(header, "NAMESPACE"), with_ns(row, "web")], "{kind:?}");
            } else {
                assert_eq!(lines, [header.to_vec(), row.to_vec()], "{kind:?}");
            }
        }
    }

    /// The printout of `render` for a config-store kind.
    fn rendered(kind: Kind, filter: Filter<'_>, output: Option<Output>, items: Vec<Value>) -> Printout {
        let store = kind.store().unwrap();
        render(kind, filter, output, items, |items| store_table(store, items, false)).unwrap()
    }

    #[test]
    fn live_labels_and_annotations_replace_the_planned_ones() {
        let pod = |ns: &str, name: &str, labels: Value| serde_json::json!({"metadata": {"namespace": ns, "name": name, "labels": labels}, "spec": {}});
        let mut pods = vec![
            pod("web", "a", serde_json::json!({"app": "a"})),
            pod("web", "b", serde_json::json!({"app": "b"})),
        ];
        let mut patched = pod(
            "web",
            "a",
            serde_json::json!({"app": "a", "istio.io/dataplane-mode": "ambient"}),
        );
        patched["metadata"]["annotations"] = serde_json::json!({"ambient.istio.io/redirection": "enabled"});
        patched["spec"] = serde_json::json!({"nodeName": "elsewhere"});
        let live = vec![patched, pod("other", "b", serde_json::json!({}))];
        with_live_metadata(&mut pods, &live);
        assert_eq!(
            pods[0]["metadata"]["labels"],
            serde_json::json!({"app": "a", "istio.io/dataplane-mode": "ambient"})
        );
        assert_eq!(
            pods[0]["metadata"]["annotations"],
            serde_json::json!({"ambient.istio.io/redirection": "enabled"})
        );
        assert_eq!(
            pods[0]["spec"],
            serde_json::json!({}),
            "only the metadata comes from the live object"
        );
        // `web/b` has no live object (the one named b is in another namespace): it keeps its planned labels.
        assert_eq!(pods[1]["metadata"]["labels"], serde_json::json!({"app": "b"}));
    }

    #[test]
    fn empty_lists_and_missing_names_are_reported_as_kubectl_does() {
        let web = Filter {
            namespace: Some("web"),
            name: None,
        };
        let everywhere = Filter {
            namespace: None,
            name: None,
        };
        let named = Filter {
            namespace: Some("web"),
            name: Some("deny"),
        };
        let cases = [
            (
                Kind::AuthorizationPolicies,
                web,
                None,
                "No resources found in web namespace.\n",
                false,
            ),
            (
                Kind::Gateways,
                everywhere,
                Some(Output::Wide),
                "No resources found\n",
                false,
            ),
            (
                Kind::AuthorizationPolicies,
                named,
                None,
                "Error from server (NotFound): authorizationpolicies.security.istio.io \"deny\" not found\n",
                true,
            ),
            (
                Kind::HttpRoutes,
                named,
                Some(Output::Json),
                "Error from server (NotFound): httproutes.gateway.networking.k8s.io \"deny\" not found\n",
                true,
            ),
            (
                Kind::Namespaces,
                named,
                None,
                "Error from server (NotFound): namespaces \"deny\" not found\n",
                true,
            ),
        ];
        for (kind, filter, output, stderr, failed) in cases {
            let printout = rendered(kind, filter, output, Vec::new());
            let expected = Printout {
                stdout: String::new(),
                stderr: stderr.into(),
                failed,
            };
            assert_eq!(printout, expected, "{kind:?}");
        }
    }

    #[test]
    fn structured_output_is_the_object_when_named_else_a_list() {
        let ap = object(
            "AuthorizationPolicy",
            "web",
            "deny",
            json!({"action": "DENY"}),
            Value::Null,
        );
        let named = Filter {
            namespace: Some("web"),
            name: Some("deny"),
        };
        let all = Filter {
            namespace: Some("web"),
            name: None,
        };
        let kind = Kind::AuthorizationPolicies;

        let one = rendered(kind, named, Some(Output::Json), vec![ap.clone()]);
        assert_eq!(serde_json::from_str::<Value>(&one.stdout).unwrap(), ap);
        let list = rendered(kind, all, Some(Output::Json), vec![ap.clone()]);
        let expected = json!({"apiVersion": "v1", "kind": "List", "items": [ap]});
        assert_eq!(serde_json::from_str::<Value>(&list.stdout).unwrap(), expected);
        let empty = rendered(kind, all, Some(Output::Json), Vec::new());
        assert_eq!(
            serde_json::from_str::<Value>(&empty.stdout).unwrap()["items"],
            json!([])
        );

        let yaml = rendered(kind, named, Some(Output::Yaml), vec![ap.clone()]);
        assert_eq!(serde_saphyr::from_str::<Value>(&yaml.stdout).unwrap(), ap);
        assert!(yaml.stdout.contains("action: DENY"), "{}", yaml.stdout);

        let table = rendered(kind, all, None, vec![ap]);
        assert_eq!((table.stderr.as_str(), table.failed), ("", false));
        assert_eq!(
            table
                .stdout
                .lines()
                .nth(1)
                .unwrap()
                .split_whitespace()
                .collect::<Vec<_>>(),
            ["deny", "DENY", "<none>"]
        );
    }

    /// Two nodes, two pods in `mesh` and one in `default`, and one service.
    const PLAN: &str = r#"
apiVersion: ambit.dev/v1alpha1
kind: Cluster
metadata: {name: t}
spec:
  nodes: [{name: node-1}, {name: node-2}]
---
apiVersion: v1
kind: Namespace
metadata: {name: mesh}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: mesh, labels: {app: server}}
spec:
  nodeName: node-2
  containers: [{name: echo, command: [sleep, infinity]}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: mesh}
spec:
  nodeName: node-1
  containers: [{name: client, command: [sleep, infinity]}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  nodeName: node-1
  containers: [{name: client, command: [sleep, infinity]}]
---
apiVersion: v1
kind: Service
metadata: {name: server, namespace: mesh}
spec:
  selector: {app: server}
  ports: [{port: 80}]
"#;

    #[test]
    fn plan_tables_keep_the_namespace_and_name_asked_for() {
        let source = ambit_cluster::manifest::Source {
            name: "plan.yaml".into(),
            text: PLAN.into(),
        };
        let plan = ambit_cluster::manifest::load(&[source]).unwrap().plan;
        let names = |kind, namespace, name, with_ns| -> Vec<Vec<String>> {
            let filter = Filter { namespace, name };
            let lines = cells(plan_table(kind, &plan, None, &filter, with_ns, false));
            let column = usize::from(with_ns);
            lines.iter().skip(1).map(|row| row[..=column].to_vec()).collect()
        };
        let rows = |rows: &[&[&str]]| -> Vec<Vec<String>> {
            rows.iter().map(|r| r.iter().map(|c| c.to_string()).collect()).collect()
        };
        let cases = [
            (Kind::Pods, Some("mesh"), None, false, rows(&[&["server"], &["client"]])),
            (Kind::Pods, Some("mesh"), Some("client"), false, rows(&[&["client"]])),
            (
                Kind::Pods,
                None,
                Some("client"),
                true,
                rows(&[&["mesh", "client"], &["default", "client"]]),
            ),
            (Kind::Pods, Some("default"), Some("server"), false, rows(&[])),
            (
                Kind::Services,
                Some("mesh"),
                Some("server"),
                false,
                rows(&[&["server"]]),
            ),
            (Kind::Services, Some("default"), None, false, rows(&[])),
            (Kind::Nodes, None, None, false, rows(&[&["node-1"], &["node-2"]])),
            (Kind::Nodes, None, Some("node-2"), false, rows(&[&["node-2"]])),
        ];
        for (kind, namespace, name, with_ns, expected) in cases {
            let mut got = names(kind, namespace, name, with_ns);
            let mut expected = expected;
            got.sort();
            expected.sort();
            assert_eq!(got, expected, "{kind:?} {namespace:?} {name:?}");
        }
        let missing = render(
            Kind::Pods,
            Filter {
                namespace: Some("mesh"),
                name: Some("x"),
            },
            None,
            Vec::new(),
            |_| unreachable!("no table for a missing name"),
        );
        assert_eq!(
            missing.unwrap().stderr,
            "Error from server (NotFound): pods \"x\" not found\n"
        );
    }

    #[test]
    fn resources_are_named_with_their_group() {
        let cases = [
            (Kind::AuthorizationPolicies, "authorizationpolicies.security.istio.io"),
            (Kind::PeerAuthentications, "peerauthentications.security.istio.io"),
            (Kind::Gateways, "gateways.gateway.networking.k8s.io"),
            (Kind::GrpcRoutes, "grpcroutes.gateway.networking.k8s.io"),
            (Kind::ServiceAccounts, "serviceaccounts"),
            (Kind::Pods, "pods"),
            (Kind::Nodes, "nodes"),
        ];
        for (kind, expected) in cases {
            assert_eq!(kind.resource(), expected);
        }
        let groups = [
            ("AuthorizationPolicy", "security.istio.io"),
            ("HTTPRoute", "gateway.networking.k8s.io"),
            ("Namespace", ""),
            ("Pod", ""),
        ];
        for (kind, group) in groups {
            assert_eq!(group_of(kind), group, "{kind}");
        }
        // Every config kind of the table is reachable from the command line.
        for store in STORE_KINDS {
            assert_eq!(parse(&[store.resource]).kind.store(), Some(store));
        }
    }
}
