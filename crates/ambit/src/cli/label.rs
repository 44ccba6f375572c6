//! `ambit label` and `ambit annotate`: set or remove labels and annotations of a pod or namespace, as kubectl does.
//! The control plane keeps the change over the cluster's own object (a metadata patch) until the object goes; a
//! label such as `istio.io/dataplane-mode=ambient` takes effect in the mesh as if the object had always carried it.

use std::collections::BTreeMap;
use std::process::ExitCode;

use serde_json::{Value, json};

use super::api::{self, ApiError, Client};

#[derive(clap::Args, Debug)]
pub struct LabelArgs {
    /// `pod` or `namespace` (also `pods`, `po`, `namespaces`, `ns`), or `TYPE/NAME`.
    #[arg(value_name = "TYPE[/NAME]")]
    target: String,
    /// The object's name (unless given as TYPE/NAME), then `key=value` to set a key and `key-` to remove one.
    #[arg(value_name = "NAME|KEY=VALUE|KEY-", required = true)]
    args: Vec<String>,
    /// The pod's namespace.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    #[command(flatten)]
    cluster: super::ClusterSelector,
}

/// Which metadata map a command changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Labels,
    Annotations,
}

/// The kinds whose labels and annotations can be changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Pod,
    Namespace,
}

/// One parsed command: what to change on which object.
#[derive(Debug, PartialEq)]
struct Request {
    target: Target,
    name: String,
    /// Each key to its new value, or `None` to remove it.
    changes: BTreeMap<String, Option<String>>,
}

pub fn run(args: LabelArgs, field: Field) -> anyhow::Result<ExitCode> {
    let request = parse(&args.target, &args.args)?;
    let body = body(&request, field, &args.namespace);
    let client = Client::new(args.cluster.resolve()?.control_socket());
    match api::block_on(client.patch(&body))? {
        Ok(_) => {
            println!("{}", done_line(&request, field));
            Ok(ExitCode::SUCCESS)
        }
        Err(ApiError::Rejected { diagnostics, .. }) if !diagnostics.is_empty() => {
            eprint!("{}", super::apply::diagnostic_lines(&diagnostics));
            Ok(ExitCode::FAILURE)
        }
        Err(error) => Err(error.into()),
    }
}

/// Reads `TYPE NAME CHANGE...` or `TYPE/NAME CHANGE...`.
fn parse(target: &str, args: &[String]) -> anyhow::Result<Request> {
    let (kind, rest) = match target.split_once('/') {
        Some((kind, name)) => (
            kind,
            std::iter::once(name).chain(args.iter().map(String::as_str)).collect(),
        ),
        None => (target, args.iter().map(String::as_str).collect::<Vec<_>>()),
    };
    let target = match kind.to_ascii_lowercase().as_str() {
        "pod" | "pods" | "po" => Target::Pod,
        "namespace" | "namespaces" | "ns" => Target::Namespace,
        _ => anyhow::bail!("{kind:?}: only pods and namespaces are labelled and annotated here"),
    };
    let Some((name, changes)) = rest.split_first().filter(|(name, _)| !name.is_empty()) else {
        anyhow::bail!("give the {} name", target.noun());
    };
    anyhow::ensure!(
        !changes.is_empty(),
        "give at least one key=value to set or key- to remove"
    );
    Ok(Request {
        target,
        name: name.to_string(),
        changes: parse_changes(changes)?,
    })
}

/// `key=value` sets the key (the value may itself hold `=`); `key-` removes it. A key given twice is an error, as
/// the order would decide silently.
fn parse_changes(args: &[&str]) -> anyhow::Result<BTreeMap<String, Option<String>>> {
    let mut changes = BTreeMap::new();
    for arg in args {
        let (key, value) = match (arg.split_once('='), arg.strip_suffix('-')) {
            (Some((key, value)), _) => (key, Some(value.to_string())),
            (None, Some(key)) => (key, None),
            (None, None) => anyhow::bail!("{arg:?}: write key=value to set the key {arg:?}, or {arg}- to remove it"),
        };
        anyhow::ensure!(!key.is_empty(), "{arg:?}: the key is empty");
        let previous = changes.insert(key.to_string(), value);
        anyhow::ensure!(previous.is_none(), "the key {key:?} is given more than once");
    }
    Ok(changes)
}

/// The body of `POST /v1/patch`.
fn body(request: &Request, field: Field, namespace: &str) -> Value {
    let (kind, namespace) = match request.target {
        Target::Pod => ("Pod", namespace),
        Target::Namespace => ("Namespace", ""),
    };
    let map = match field {
        Field::Labels => "labels",
        Field::Annotations => "annotations",
    };
    json!({"kind": kind, "namespace": namespace, "name": request.name, "metadata": {map: request.changes}})
}

/// `pod/echo labeled`, `namespace/web annotated`, as kubectl prints them.
fn done_line(request: &Request, field: Field) -> String {
    let verb = match field {
        Field::Labels => "labeled",
        Field::Annotations => "annotated",
    };
    format!("{}/{} {verb}", request.target.noun(), request.name)
}

// === impl Target ===

impl Target {
    fn noun(self) -> &'static str {
        match self {
            Target::Pod => "pod",
            Target::Namespace => "namespace",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    /// The request for `target`'s object `name` with `changes` (a value, or None to remove the key).
    fn request(target: Target, name: &str, changes: &[(&str, Option<&str>)]) -> Request {
        let changes = changes.iter().map(|(k, v)| (k.to_string(), v.map(str::to_string)));
        Request {
            target,
            name: name.to_string(),
            changes: changes.collect(),
        }
    }

    #[test]
    fn commands_read_as_kubectl_writes_them() {
        let cases: &[(&str, &[&str], Request)] = &[
            (
                "pod",
                &["echo", "app=web"],
                request(Target::Pod, "echo", &[("app", Some("web"))]),
            ),
            (
                "pods",
                &["echo", "app-"],
                request(Target::Pod, "echo", &[("app", None)]),
            ),
            (
                "po/echo",
                &["a=1", "b-"],
                request(Target::Pod, "echo", &[("a", Some("1")), ("b", None)]),
            ),
            (
                "Namespace",
                &["web", "istio.io/dataplane-mode=ambient"],
                request(
                    Target::Namespace,
                    "web",
                    &[("istio.io/dataplane-mode", Some("ambient"))],
                ),
            ),
            (
                "ns/web",
                &["note=a=b", "empty="],
                request(Target::Namespace, "web", &[("empty", Some("")), ("note", Some("a=b"))]),
            ),
            (
                "pod",
                &["echo", "trailing-dash=x-"],
                request(Target::Pod, "echo", &[("trailing-dash", Some("x-"))]),
            ),
        ];
        for (target, args, expected) in cases {
            let parsed = parse(target, &strings(args)).unwrap_or_else(|e| panic!("{target} {args:?}: {e}"));
            assert_eq!(&parsed, expected, "{target} {args:?}");
        }
    }

    #[test]
    fn errors_name_the_bad_argument() {
        let cases: &[(&str, &[&str], &str)] = &[
            (
                "deployment",
                &["web", "a=b"],
                "\"deployment\": only pods and namespaces",
            ),
            ("pod", &["echo"], "give at least one key=value"),
            ("pod/", &["a=b"], "give the pod name"),
            (
                "pod",
                &["echo", "justakey"],
                "\"justakey\": write key=value to set the key \"justakey\"",
            ),
            ("pod", &["echo", "=v"], "\"=v\": the key is empty"),
            ("pod", &["echo", "a=1", "a-"], "the key \"a\" is given more than once"),
        ];
        for (target, args, expected) in cases {
            let error = parse(target, &strings(args)).unwrap_err().to_string();
            assert!(error.contains(expected), "{target} {args:?}: {error}");
        }
    }

    #[test]
    fn the_patch_body_and_the_answer_line() {
        let request = parse("pod", &strings(&["echo", "app=web", "old-"])).unwrap();
        assert_eq!(
            body(&request, Field::Labels, "demo"),
            json!({"kind": "Pod", "namespace": "demo", "name": "echo",
                   "metadata": {"labels": {"app": "web", "old": null}}})
        );
        assert_eq!(done_line(&request, Field::Labels), "pod/echo labeled");
        let request = parse("ns", &strings(&["web", "ambient.istio.io/redirection-"])).unwrap();
        assert_eq!(
            body(&request, Field::Annotations, "demo"),
            json!({"kind": "Namespace", "namespace": "", "name": "web",
                   "metadata": {"annotations": {"ambient.istio.io/redirection": null}}})
        );
        assert_eq!(done_line(&request, Field::Annotations), "namespace/web annotated");
    }
}
