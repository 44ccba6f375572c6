//! `ambit get nodes|pods|services`: tables as kubectl prints them, or Kubernetes objects as YAML or JSON.

use std::process::ExitCode;

use ambit_cluster::endpoints::ServiceEndpoints;
use ambit_cluster::model::ClusterPlan;
use ambit_cluster::status::{ClusterStatus, unix_now};
use ambit_cluster::view;
use clap::ValueEnum;
use comfy_table::{Table, presets::NOTHING};

#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// What to list.
    #[arg(value_enum)]
    kind: Kind,
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

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Kind {
    #[value(alias = "node", alias = "no")]
    Nodes,
    #[value(alias = "pod", alias = "po")]
    Pods,
    #[value(alias = "service", alias = "svc")]
    Services,
}

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum Output {
    Wide,
    Yaml,
    Json,
}

pub fn run(args: GetArgs) -> anyhow::Result<ExitCode> {
    let layout = args.cluster.resolve()?;
    let plan = super::load_plan(&layout)?;
    let status = ClusterStatus::read(&layout.status_file()).ok();
    let ns_filter = |ns: &str| args.all_namespaces || ns == args.namespace.as_deref().unwrap_or("default");
    let objects: Vec<serde_json::Value> = match args.kind {
        Kind::Nodes => plan.nodes.iter().map(|n| to_value(view::node(&plan, n))).collect(),
        Kind::Pods => plan
            .pods
            .iter()
            .filter(|p| ns_filter(&p.namespace))
            .map(|p| to_value(view::pod(&plan, p, status.as_ref())))
            .collect(),
        Kind::Services => plan
            .services
            .iter()
            .filter(|s| ns_filter(&s.namespace))
            .map(|s| to_value(view::service(s)))
            .collect(),
    };
    match args.output {
        Some(Output::Json) => println!("{}", serde_json::to_string_pretty(&view::list(&objects))?),
        Some(Output::Yaml) => print!("{}", serde_saphyr::to_string(&view::list(&objects))?),
        wide => print_table(&args, &plan, status.as_ref(), &ns_filter, wide == Some(Output::Wide)),
    }
    Ok(ExitCode::SUCCESS)
}

fn to_value<T: serde::Serialize>(v: T) -> serde_json::Value {
    // Kubernetes API types always serialize.
    serde_json::to_value(v).unwrap_or_default()
}

fn print_table(
    args: &GetArgs,
    plan: &ClusterPlan,
    status: Option<&ClusterStatus>,
    ns_filter: &dyn Fn(&str) -> bool,
    wide: bool,
) {
    let mut table = Table::new();
    table.load_style(NOTHING);
    let age = status
        .map(|s| human_age(unix_now().saturating_sub(s.started_at)))
        .unwrap_or_default();
    let with_ns = args.all_namespaces;
    match args.kind {
        Kind::Nodes => {
            table.set_header(["NAME", "STATUS", "AGE", "INTERNAL-IP", "POD-CIDR"]);
            for n in &plan.nodes {
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
        Kind::Pods => pods_table(&mut table, plan, status, ns_filter, with_ns, wide),
        Kind::Services => services_table(&mut table, plan, status, ns_filter, with_ns, wide, &age),
    }
    if table.row_count() == 0 {
        eprintln!("No resources found.");
    } else {
        println!("{}", table.trim_fmt());
    }
}

fn pods_table(
    table: &mut Table,
    plan: &ClusterPlan,
    status: Option<&ClusterStatus>,
    ns_filter: &dyn Fn(&str) -> bool,
    with_ns: bool,
    wide: bool,
) {
    let mut header = vec!["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS"];
    if wide {
        header.extend(["IP", "NODE", "PID"]);
    }
    table.set_header(if with_ns { &header[..] } else { &header[1..] });
    for p in plan.pods.iter().filter(|p| ns_filter(&p.namespace)) {
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
    ns_filter: &dyn Fn(&str) -> bool,
    with_ns: bool,
    wide: bool,
    age: &str,
) {
    let mut header = vec!["NAMESPACE", "NAME", "TYPE", "CLUSTER-IP", "PORT(S)", "AGE"];
    if wide {
        header.extend(["SELECTOR", "ENDPOINTS"]);
    }
    table.set_header(if with_ns { &header[..] } else { &header[1..] });
    for s in plan.services.iter().filter(|s| ns_filter(&s.namespace)) {
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
