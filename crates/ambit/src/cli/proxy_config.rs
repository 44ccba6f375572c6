//! `ambit proxy-config workloads|services|policies|certs|pods --node NODE`: what one node proxy holds, read from its
//! admin endpoint (`/config_dump`) inside the node's network namespace, as tables like `istioctl ztunnel-config`
//! prints them, or that section of the dump as JSON.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::ValueEnum;
use comfy_table::{Table, presets::NOTHING};
use serde_json::Value;

/// The node proxy's admin endpoint, on the loopback of the node's namespace.
const ADMIN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 15000);
/// How long the whole request (namespace, connect, reply) may take.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The largest dump read; a larger reply is cut off and fails to parse.
const MAX_DUMP: u64 = 64 << 20;

#[derive(clap::Args, Debug)]
pub struct ProxyConfigArgs {
    /// Which part of the proxy's state to show.
    #[arg(value_enum)]
    kind: Kind,
    /// The node whose proxy to ask.
    #[arg(long)]
    node: String,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(flatten)]
    cluster: super::ClusterSelector,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Kind {
    #[value(alias = "workload")]
    Workloads,
    #[value(alias = "service", alias = "svc")]
    Services,
    #[value(alias = "policy")]
    Policies,
    #[value(alias = "cert", alias = "certificates")]
    Certs,
    #[value(alias = "pod")]
    Pods,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Output {
    Table,
    Json,
}

impl Kind {
    /// The key of the section in the config dump.
    fn section(self) -> &'static str {
        match self {
            Kind::Workloads => "workloads",
            Kind::Services => "services",
            Kind::Policies => "policies",
            Kind::Certs => "certificates",
            Kind::Pods => "pods",
        }
    }
}

pub fn run(args: ProxyConfigArgs) -> anyhow::Result<ExitCode> {
    let layout = args.cluster.resolve()?;
    let plan = super::load_plan(&layout)?;
    if !plan.nodes.iter().any(|n| n.name == args.node) {
        let nodes: Vec<&str> = plan.nodes.iter().map(|n| n.name.as_str()).collect();
        anyhow::bail!(
            "node {} not found in cluster {} (its nodes: {})",
            args.node,
            plan.name,
            nodes.join(", ")
        );
    }
    let netns = ambit_netns::path_of(&layout.node_ns(&args.node));
    let dump = fetch_dump(netns).with_context(|| {
        format!(
            "the node proxy of node {} did not answer on its admin endpoint {ADMIN}",
            args.node
        )
    })?;
    let section = dump
        .get(args.kind.section())
        .cloned()
        .unwrap_or(Value::Array(Vec::new()));
    let items = section.as_array().map(Vec::as_slice).unwrap_or_default();
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&section)?),
        Output::Table => {
            let table = match args.kind {
                Kind::Workloads => workloads_table(items),
                Kind::Services => services_table(
                    items,
                    dump["workloads"].as_array().map(Vec::as_slice).unwrap_or_default(),
                ),
                Kind::Policies => policies_table(items),
                Kind::Certs => certs_table(items),
                Kind::Pods => pods_table(items),
            };
            if table.row_count() == 0 {
                eprintln!("No {} on the proxy of node {}.", args.kind.section(), args.node);
            } else {
                println!("{}", table.trim_fmt());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `GET /config_dump` from the admin endpoint inside the namespace at `netns`, parsed.
fn fetch_dump(netns: std::path::PathBuf) -> anyhow::Result<Value> {
    let body = get(&netns, "/config_dump")?;
    serde_json::from_slice(&body).context("the config dump is not JSON")
}

/// A plain HTTP/1.1 GET over a blocking connection from a socket created inside the namespace at `netns` (the socket
/// keeps its namespace, whichever thread uses it); the body of a 200 reply. At most [`TIMEOUT`] per step.
fn get(netns: &std::path::Path, path: &str) -> anyhow::Result<Vec<u8>> {
    use std::io::{Read, Write};
    let socket = ambit_netns::connect_socket_in(netns, ADMIN, ambit_netns::ConnectOptions::default())
        .context("cannot connect")?;
    socket.set_nonblocking(false).context("cannot connect")?;
    socket
        .connect_timeout(&ADMIN.into(), TIMEOUT)
        .context("cannot connect")?;
    let mut stream = std::net::TcpStream::from(socket);
    stream.set_read_timeout(Some(TIMEOUT)).context("cannot connect")?;
    stream.set_write_timeout(Some(TIMEOUT)).context("cannot connect")?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {ADMIN}\r\nAccept: application/json\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .context("cannot send the request")?;
    let mut reply = Vec::new();
    stream
        .take(MAX_DUMP)
        .read_to_end(&mut reply)
        .map_err(|error| match error.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                anyhow::anyhow!("no reply within {} s", TIMEOUT.as_secs())
            }
            _ => anyhow::Error::new(error).context("cannot read the reply"),
        })?;
    let split = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("the reply is not HTTP")?;
    let head = String::from_utf8_lossy(&reply[..split]);
    let status_line = head.lines().next().unwrap_or_default();
    let status = status_line.split_whitespace().nth(1).unwrap_or_default();
    if status != "200" {
        anyhow::bail!("GET {path} answered {status_line:?}");
    }
    let body = reply[split + 4..].to_vec();
    if head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.eq_ignore_ascii_case("transfer-encoding") && v.trim().eq_ignore_ascii_case("chunked")
        })
    }) {
        return dechunk(&body);
    }
    Ok(body)
}

/// The body of a chunked reply.
fn dechunk(mut data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("a chunk has no size line")?;
        let line = std::str::from_utf8(&data[..end]).context("a chunk size is not text")?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).with_context(|| format!("{size:?} is not a chunk size"))?;
        data = &data[end + 2..];
        if size == 0 {
            return Ok(body);
        }
        anyhow::ensure!(data.len() >= size, "the reply ends inside a chunk");
        body.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or_default();
    }
}

fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_style(NOTHING);
    table.set_header(header);
    table
}

/// A string field, or `""`.
fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

/// A field shown as text: strings as they are, absent or null as `dash`, anything else as JSON.
fn show(v: &Value, dash: &str) -> String {
    match v {
        Value::Null => dash.to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A waypoint (`GatewayAddress`) as istioctl names it: the service's hostname or the address; `None` without one.
fn waypoint(v: &Value) -> String {
    let dest = &v["destination"];
    if let Some(key) = dest["hostname"].as_str() {
        // `<namespace>/<hostname>`: the service name is the hostname's first label.
        let host = key.split_once('/').map_or(key, |(_, h)| h);
        return host.split('.').next().unwrap_or(host).to_string();
    }
    match dest["address"]["address"].as_str() {
        Some(address) => address.to_string(),
        None => "None".into(),
    }
}

fn workloads_table(items: &[Value]) -> Table {
    let mut t = table(&["NAMESPACE", "POD/NAME", "ADDRESS", "NODE", "WAYPOINT", "PROTOCOL"]);
    for w in items {
        let addresses: Vec<&str> = w["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        t.add_row([
            text(w, "namespace").to_string(),
            text(w, "name").to_string(),
            addresses.join(","),
            text(w, "node").to_string(),
            waypoint(&w["waypoint"]),
            text(w, "tunnel_protocol").to_string(),
        ]);
    }
    t
}

fn services_table(items: &[Value], workloads: &[Value]) -> Table {
    let mut t = table(&["NAMESPACE", "SERVICE-NAME", "SERVICE-VIP", "WAYPOINT", "ENDPOINTS"]);
    for s in items {
        let key = format!("{}/{}", text(s, "namespace"), text(s, "hostname"));
        let endpoints = workloads.iter().filter(|w| w["services"].get(&key).is_some()).count();
        let vips: Vec<&str> = s["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["address"].as_str())
            .collect();
        t.add_row([
            text(s, "namespace").to_string(),
            text(s, "name").to_string(),
            vips.join(","),
            waypoint(&s["waypoint"]),
            endpoints.to_string(),
        ]);
    }
    t
}

fn policies_table(items: &[Value]) -> Table {
    let mut t = table(&["NAMESPACE", "POLICY-NAME", "ACTION", "SCOPE"]);
    for p in items {
        let mut action = text(p, "action").to_string();
        if p["dryRun"].as_bool() == Some(true) {
            action.push_str(" (dry run)");
        }
        t.add_row([
            text(p, "namespace").to_string(),
            text(p, "name").to_string(),
            action,
            text(p, "scope").to_string(),
        ]);
    }
    t
}

fn certs_table(items: &[Value]) -> Table {
    let mut t = table(&["CERTIFICATE-NAME", "TYPE", "STATUS", "VALID-CERT", "NOT-AFTER"]);
    for c in items {
        let state = text(c, "state");
        // Available and Rotating serve a valid certificate; Initializing and Failed have none.
        let valid = matches!(state, "Available" | "Rotating") && !c["not_after"].is_null();
        t.add_row([
            text(c, "identity").to_string(),
            "Leaf".into(),
            state.to_string(),
            valid.to_string(),
            show(&c["not_after"], "-"),
        ]);
    }
    t
}

fn pods_table(items: &[Value]) -> Table {
    let mut t = table(&["POD", "NETNS", "STATE", "IDENTITY", "INBOUND-CONNECTIONS", "ERROR"]);
    for p in items {
        t.add_row([
            text(p, "uid").to_string(),
            text(p, "netns").to_string(),
            text(p, "state").to_string(),
            show(&p["identity"], "-"),
            show(&p["inboundConnections"], "0"),
            show(&p["error"], "-"),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunk_joins_the_chunks() {
        let body = dechunk(b"3\r\n{\"a\r\n4;ext\r\n\": 1\r\n1\r\n}\r\n0\r\n\r\n").unwrap();
        assert_eq!(body, b"{\"a\": 1}");
        assert!(dechunk(b"zz\r\n").is_err());
        assert!(dechunk(b"9\r\nabc").is_err());
    }

    #[test]
    fn waypoints_show_the_service_name_or_the_address() {
        let by_name = serde_json::json!({"destination": {"hostname": "ns/wp.ns.svc.cluster.local"}});
        let by_addr = serde_json::json!({"destination": {"address": {"network": "", "address": "10.0.0.1"}}});
        assert_eq!(waypoint(&by_name), "wp");
        assert_eq!(waypoint(&by_addr), "10.0.0.1");
        assert_eq!(waypoint(&Value::Null), "None");
    }

    #[test]
    fn services_count_the_workloads_that_list_them() {
        let services = [serde_json::json!({
            "name": "echo", "namespace": "ns", "hostname": "echo.ns.svc.cluster.local",
            "addresses": [{"network": "", "address": "10.96.0.10"}],
        })];
        let workloads = [
            serde_json::json!({"services": {"ns/echo.ns.svc.cluster.local": []}}),
            serde_json::json!({"services": {}}),
        ];
        let out = services_table(&services, &workloads).trim_fmt();
        let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(row, ["ns", "echo", "10.96.0.10", "None", "1"]);
    }
}
