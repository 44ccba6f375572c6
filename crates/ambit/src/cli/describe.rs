//! `ambit describe pod NAME`: a pod as the mesh sees it (identity, enrolment, waypoint, services, the policies that
//! apply in evaluation order) and what its node proxy would decide about one sample connection, from the control
//! plane's config API.

use std::fmt::Write;
use std::process::ExitCode;

use ambit_types::Identity;

use super::api::{self, ApiError, Client, PodDescription, PolicySummary};

#[derive(clap::Subcommand, Debug)]
pub enum DescribeCommand {
    /// A pod: identity, mesh enrolment, waypoint, services, the policies that apply, and the verdict on a sample
    /// connection to it.
    #[command(alias = "pods", alias = "po")]
    Pod(PodArgs),
}

#[derive(clap::Args, Debug)]
pub struct PodArgs {
    /// The pod's name.
    name: String,
    /// The pod's namespace.
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// The sample connection's peer (default: the default service account of the pod's namespace).
    #[arg(long, value_name = "SPIFFE_ID", value_parser = parse_identity)]
    peer: Option<Identity>,
    /// The sample connection's port (default: the pod's first service target port, else 80).
    #[arg(long)]
    port: Option<u16>,
    #[command(flatten)]
    cluster: super::ClusterSelector,
}

/// Width of the labels column (`Namespace:` and its padding), as kubectl describe aligns it.
const LABEL_WIDTH: usize = 14;
/// Shown for an empty value, as kubectl describe does.
const NONE: &str = "<none>";

fn parse_identity(s: &str) -> Result<Identity, String> {
    s.parse().map_err(|e: ambit_types::IdentityError| e.to_string())
}

pub fn run(cmd: DescribeCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DescribeCommand::Pod(args) => run_pod(args),
    }
}

fn run_pod(args: PodArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(args.cluster.resolve()?.control_socket());
    let peer = args.peer.as_ref().map(Identity::to_string);
    let reply = api::block_on(client.describe_pod(&args.namespace, &args.name, peer.as_deref(), args.port))?;
    match reply {
        Ok(description) => {
            print!("{}", render_pod(&description));
            Ok(ExitCode::SUCCESS)
        }
        Err(ApiError::Rejected { status: 404, .. }) => {
            eprintln!("Error from server (NotFound): pods \"{}\" not found", args.name);
            Ok(ExitCode::FAILURE)
        }
        Err(ApiError::Rejected { diagnostics, .. }) if !diagnostics.is_empty() => {
            eprint!("{}", super::apply::diagnostic_lines(&diagnostics));
            Ok(ExitCode::FAILURE)
        }
        Err(error) => Err(error.into()),
    }
}

/// The description as kubectl describe lays one out: labelled lines, then the policies, then the sample verdict.
fn render_pod(d: &PodDescription) -> String {
    let mesh = if d.enrolled {
        "enrolled (HBONE)"
    } else {
        "not enrolled (plaintext)"
    };
    let fields = [
        ("Name", d.name.clone()),
        ("Namespace", d.namespace.clone()),
        ("Node", d.node.clone()),
        ("IP", list(&d.addresses)),
        ("Identity", or_none(&d.identity)),
        ("Mesh", mesh.into()),
        ("Ready", d.healthy.to_string()),
        ("Waypoint", or_none(d.waypoint.as_deref().unwrap_or_default())),
        ("Services", list(&d.services)),
    ];
    let mut out = String::new();
    for (label, value) in fields {
        labelled(&mut out, label, &value);
    }
    if d.policies.is_empty() {
        labelled(&mut out, "Policies", NONE);
    } else {
        out.push_str("Policies (evaluation order):\n");
        out.push_str(&policy_lines(&d.policies));
    }
    let s = &d.sample;
    let verdict = if s.allowed { "ALLOWED" } else { "DENIED" };
    let _ = write!(out, "Sample connection from {} to port {}: {verdict}", s.peer, s.port);
    if !s.reason.is_empty() {
        let _ = write!(out, " ({})", s.reason);
    }
    out.push('\n');
    out
}

/// `Label:` padded to the values column, the value, a newline.
fn labelled(out: &mut String, label: &str, value: &str) {
    let _ = writeln!(out, "{:<LABEL_WIDTH$}{value}", format!("{label}:"));
}

/// One indented line per policy, in columns: action, namespace/name, (scope), and whether it matches the sample.
fn policy_lines(policies: &[PolicySummary]) -> String {
    let names: Vec<String> = policies.iter().map(|p| format!("{}/{}", p.namespace, p.name)).collect();
    let action_width = policies.iter().map(|p| p.action.len()).max().unwrap_or(0);
    let name_width = names.iter().map(String::len).max().unwrap_or(0);
    let scope_width = policies.iter().map(|p| p.scope.len() + 2).max().unwrap_or(0);
    let mut out = String::new();
    for (p, name) in policies.iter().zip(&names) {
        let scope = format!("({})", p.scope);
        let line = if p.matches {
            format!(
                "  {:<action_width$}  {name:<name_width$}  {scope:<scope_width$}  matches sample",
                p.action
            )
        } else {
            format!("  {:<action_width$}  {name:<name_width$}  {scope}", p.action)
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Values joined by `, `, or `<none>`.
fn list(values: &[String]) -> String {
    if values.is_empty() {
        NONE.into()
    } else {
        values.join(", ")
    }
}

fn or_none(value: &str) -> String {
    if value.is_empty() {
        NONE.into()
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::api::SampleVerdict;
    use crate::cli::{Cli, Command};

    fn policy(action: &str, name: &str, scope: &str, matches: bool) -> PolicySummary {
        PolicySummary {
            name: name.into(),
            namespace: "web".into(),
            scope: scope.into(),
            action: action.into(),
            matches,
        }
    }

    fn description() -> PodDescription {
        PodDescription {
            name: "echo-5d8f-abcde".into(),
            namespace: "web".into(),
            uid: "u-1".into(),
            identity: "spiffe://cluster.local/ns/web/sa/echo".into(),
            node: "node-1".into(),
            addresses: vec!["10.244.1.3".into()],
            enrolled: true,
            healthy: true,
            waypoint: None,
            services: vec!["echo.web.svc.cluster.local".into()],
            policies: vec![
                policy("DENY", "deny-curl", "WORKLOAD_SELECTOR", true),
                policy("ALLOW", "allow-frontend", "NAMESPACE", false),
            ],
            sample: SampleVerdict {
                peer: "spiffe://cluster.local/ns/web/sa/default".into(),
                port: 8080,
                allowed: false,
                reason: "denied by web/deny-curl".into(),
            },
        }
    }

    #[test]
    fn an_enrolled_pod_lists_its_policies_in_order() {
        let expected = "\
Name:         echo-5d8f-abcde
Namespace:    web
Node:         node-1
IP:           10.244.1.3
Identity:     spiffe://cluster.local/ns/web/sa/echo
Mesh:         enrolled (HBONE)
Ready:        true
Waypoint:     <none>
Services:     echo.web.svc.cluster.local
Policies (evaluation order):
  DENY   web/deny-curl       (WORKLOAD_SELECTOR)  matches sample
  ALLOW  web/allow-frontend  (NAMESPACE)
Sample connection from spiffe://cluster.local/ns/web/sa/default to port 8080: DENIED (denied by web/deny-curl)
";
        assert_eq!(render_pod(&description()), expected);
    }

    #[test]
    fn lines_change_with_the_description() {
        type Change = fn(&mut PodDescription);
        let cases: Vec<(&str, Change, &str)> = vec![
            (
                "plaintext",
                |d| d.enrolled = false,
                "Mesh:         not enrolled (plaintext)\n",
            ),
            ("not ready", |d| d.healthy = false, "Ready:        false\n"),
            (
                "waypoint",
                |d| d.waypoint = Some("waypoint.web.svc.cluster.local".into()),
                "Waypoint:     waypoint.web.svc.cluster.local\n",
            ),
            (
                "two addresses",
                |d| d.addresses.push("fd00::3".into()),
                "IP:           10.244.1.3, fd00::3\n",
            ),
            ("no address", |d| d.addresses.clear(), "IP:           <none>\n"),
            ("no service", |d| d.services.clear(), "Services:     <none>\n"),
            ("no identity", |d| d.identity.clear(), "Identity:     <none>\n"),
            (
                "no policy",
                |d| d.policies.clear(),
                "Services:     echo.web.svc.cluster.local\nPolicies:     <none>\nSample",
            ),
            (
                "allowed without reason",
                |d| {
                    d.sample.allowed = true;
                    d.sample.reason.clear();
                },
                "to port 8080: ALLOWED\n",
            ),
        ];
        for (case, change, expected) in cases {
            let mut d = description();
            change(&mut d);
            let out = render_pod(&d);
            assert!(out.contains(expected), "{case}: {out}");
        }
    }

    #[test]
    fn policy_columns_fit_the_widest_entry() {
        let policies = [
            policy("AUDIT", "a", "GLOBAL", false),
            policy("CUSTOM", "long-policy-name", "WORKLOAD_SELECTOR", true),
        ];
        let expected = "  AUDIT   web/a                 (GLOBAL)\n  \
                          CUSTOM  web/long-policy-name  (WORKLOAD_SELECTOR)  matches sample\n";
        assert_eq!(policy_lines(&policies), expected);
    }

    #[test]
    fn describe_pod_parses_the_sample() {
        let argv = [
            "ambit",
            "describe",
            "pod",
            "echo",
            "-n",
            "web",
            "--peer",
            "spiffe://td/ns/web/sa/curl",
            "--port",
            "8080",
        ];
        let Command::Describe(DescribeCommand::Pod(args)) = Cli::try_parse_from(argv).unwrap().command else {
            panic!("not describe pod")
        };
        assert_eq!((args.name.as_str(), args.namespace.as_str()), ("echo", "web"));
        assert_eq!(
            args.peer.map(|p| p.to_string()).as_deref(),
            Some("spiffe://td/ns/web/sa/curl")
        );
        assert_eq!(args.port, Some(8080));

        let Command::Describe(DescribeCommand::Pod(args)) = Cli::try_parse_from(["ambit", "describe", "po", "echo"])
            .unwrap()
            .command
        else {
            panic!("not describe pod")
        };
        assert_eq!((args.namespace.as_str(), args.peer, args.port), ("default", None, None));

        let rejected: [&[&str]; 4] = [
            &["ambit", "describe", "pod"],
            &["ambit", "describe", "pod", "echo", "--peer", "web/curl"],
            &["ambit", "describe", "pod", "echo", "--port", "70000"],
            &["ambit", "describe", "service", "echo"],
        ];
        for argv in rejected {
            assert!(Cli::try_parse_from(argv).is_err(), "{argv:?}");
        }
    }
}
