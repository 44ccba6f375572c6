//! Splitting sources into YAML documents, parsing them, and dispatching on `apiVersion` + `kind` into typed
//! objects.
//!
//! A file is split at lines that are `---` (alone or followed by a space, tab or comment), which YAML reserves as
//! document markers even inside block scalars, so a syntax error in one document does not hide the others; a
//! `...` end marker ends a document too. The text before the first marker is a document only if it holds more
//! than comments and directives. Each document is parsed into a `serde_json::Value` (empty ones are skipped but
//! keep their number), then deserialized through `serde_path_to_error`, so that a type error carries its field
//! path. Files named `*.json` are one JSON document. A `kind: List` (v1) stands for its `items`. Splitting,
//! parsing and the header fields are read as the control plane's config store reads them
//! ([`ambit_config::documents`]), with the same messages. The Gateway API kinds are kept as parsed, to be validated
//! by the config store's own rules (`gateway_api`).

use ambit_config::Kind as ConfigKind;
use ambit_config::documents::{self, Problem, list_items, required_string, type_name};
use ambit_policy::istio::{AuthorizationPolicy, PeerAuthentication};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service, ServiceAccount};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::cluster::ClusterDoc;
use super::{Diagnostic, Origin, Report, Source, join};

/// An object of the manifests and where it comes from.
#[derive(Debug)]
pub(super) struct Doc<T> {
    pub origin: Origin,
    pub value: T,
}

/// Every object of the manifests that deserialized, by kind, each in document order.
#[derive(Debug, Default)]
pub(super) struct Objects {
    /// Every `Cluster` document, also those that did not deserialize (None): there must be exactly one.
    pub clusters: Vec<Doc<Option<ClusterDoc>>>,
    pub namespaces: Vec<Doc<Namespace>>,
    pub service_accounts: Vec<Doc<ServiceAccount>>,
    pub pods: Vec<Doc<Pod>>,
    pub deployments: Vec<Doc<Deployment>>,
    pub services: Vec<Doc<Service>>,
    pub authorization_policies: Vec<Doc<AuthorizationPolicy>>,
    pub peer_authentications: Vec<Doc<PeerAuthentication>>,
    /// Gateways, HTTPRoutes and GRPCRoutes in document order, as parsed (`apiVersion` and `kind` included).
    pub gateway_api: Vec<Doc<GatewayApiDoc>>,
    /// Objects seen so far, valid or not: the next [`Origin::seq`].
    seen: usize,
}

/// A Gateway API document: its kind, and the document as parsed.
#[derive(Debug)]
pub(super) struct GatewayApiDoc {
    pub kind: ConfigKind,
    pub value: Value,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Namespace,
    ServiceAccount,
    Pod,
    Service,
    Deployment,
    AuthorizationPolicy,
    PeerAuthentication,
    GatewayApi(ConfigKind),
    Cluster,
}

/// A supported kind: its name, accepted apiVersions (the first is the preferred one), and whether it lives in a
/// namespace.
struct KindInfo {
    kind: Kind,
    name: &'static str,
    api_versions: &'static [&'static str],
    namespaced: bool,
}

/// The apiVersions of Istio's security kinds: `v1beta1` is still widely written and has the same schema.
const ISTIO_SECURITY: &[&str] = &["security.istio.io/v1", "security.istio.io/v1beta1"];

/// The apiVersions of Gateway and HTTPRoute (as the config store accepts them: the CRDs still serve v1beta1).
pub(super) const GATEWAY_API_BETA: &[&str] = &["gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1beta1"];
/// The apiVersion of GRPCRoute.
pub(super) const GATEWAY_API: &[&str] = &["gateway.networking.k8s.io/v1"];

const KINDS: [KindInfo; 11] = [
    KindInfo::new(Kind::Namespace, "Namespace", &["v1"], false),
    KindInfo::new(Kind::ServiceAccount, "ServiceAccount", &["v1"], true),
    KindInfo::new(Kind::Pod, "Pod", &["v1"], true),
    KindInfo::new(Kind::Service, "Service", &["v1"], true),
    KindInfo::new(Kind::Deployment, "Deployment", &["apps/v1"], true),
    KindInfo::new(Kind::AuthorizationPolicy, "AuthorizationPolicy", ISTIO_SECURITY, true),
    KindInfo::new(Kind::PeerAuthentication, "PeerAuthentication", ISTIO_SECURITY, true),
    KindInfo::new(Kind::GatewayApi(ConfigKind::Gateway), "Gateway", GATEWAY_API_BETA, true),
    KindInfo::new(
        Kind::GatewayApi(ConfigKind::HttpRoute),
        "HTTPRoute",
        GATEWAY_API_BETA,
        true,
    ),
    KindInfo::new(Kind::GatewayApi(ConfigKind::GrpcRoute), "GRPCRoute", GATEWAY_API, true),
    KindInfo::new(Kind::Cluster, "Cluster", &["ambit.dev/v1alpha1"], false),
];

const SUPPORTED: &str = "Namespace, ServiceAccount, Pod, Service, List (v1), Deployment (apps/v1), \
                         AuthorizationPolicy, PeerAuthentication (security.istio.io/v1 or v1beta1), \
                         Gateway, HTTPRoute (gateway.networking.k8s.io/v1 or v1beta1), \
                         GRPCRoute (gateway.networking.k8s.io/v1), Cluster (ambit.dev/v1alpha1)";

/// The namespace of namespaced objects that name none.
pub(super) const DEFAULT_NAMESPACE: &str = "default";

/// What a document turned out to be.
enum Identified {
    Object(&'static KindInfo),
    List,
}

/// The file and document an object comes from.
#[derive(Clone, Copy)]
struct Position<'a> {
    file: &'a str,
    document: usize,
}

/// Parses every source; problems go to the report, the objects that deserialized are returned.
pub(super) fn parse(sources: &[Source], report: &mut Report) -> Objects {
    let mut objects = Objects::default();
    for source in sources {
        for (document, value) in document_values(source, report) {
            let at = Position::new(&source.name, document);
            objects.add(value, at, String::new(), report);
        }
    }
    objects
}

/// The non-empty documents of a source that parse, with their 1-based numbers.
fn document_values(source: &Source, report: &mut Report) -> Vec<(usize, Value)> {
    if source.name.to_ascii_lowercase().ends_with(".json") {
        return json_document(source, report);
    }
    let text = source.text.strip_prefix('\u{feff}').unwrap_or(&source.text);
    let mut values = Vec::new();
    for ((lines_before, text), number) in documents::split(text).into_iter().zip(1..) {
        let at = Position::new(&source.name, number);
        let value = documents::parse_yaml(text, lines_before).unwrap_or_else(|message| at.fail(report, message));
        values.extend(value.map(|value| (number, value)));
    }
    values
}

fn json_document(source: &Source, report: &mut Report) -> Vec<(usize, Value)> {
    let at = Position::new(&source.name, 1);
    let value = match documents::parse_json(&source.text) {
        _ if source.text.trim().is_empty() => None,
        Ok(value) => Some((1, value)),
        Err(message) => at.fail(report, message),
    };
    value.into_iter().collect()
}

// === impl Objects ===

impl Objects {
    /// Adds one document, or list item (`prefix` is then e.g. `items[2]`).
    fn add(&mut self, value: Value, at: Position<'_>, prefix: String, report: &mut Report) {
        let mut origin = at.origin(prefix, self.seen);
        self.seen += 1;
        match identify(&value) {
            Err((field, message)) => report.errors.push(origin.diagnostic(field, message)),
            Ok(Identified::List) => self.add_items(value, at, &origin, report),
            Ok(Identified::Object(info)) => {
                origin.object = Some(label(info, &value));
                self.add_object(info.kind, value, origin, report);
            }
        }
    }

    /// Adds the items of a `kind: List`.
    fn add_items(&mut self, value: Value, at: Position<'_>, origin: &Origin, report: &mut Report) {
        let Some(items) = list_items(value) else {
            let diagnostic = origin.diagnostic("items", "must be a list of objects");
            return report.errors.push(diagnostic);
        };
        for (item, index) in items.into_iter().zip(0..) {
            let prefix = join(&origin.prefix, &format!("items[{index}]"));
            self.add(item, at, prefix, report);
        }
    }

    fn add_object(&mut self, kind: Kind, value: Value, origin: Origin, report: &mut Report) {
        match kind {
            Kind::Namespace => push(&mut self.namespaces, value, origin, report),
            Kind::ServiceAccount => push(&mut self.service_accounts, value, origin, report),
            Kind::Pod => push(&mut self.pods, value, origin, report),
            Kind::Service => push(&mut self.services, value, origin, report),
            Kind::Deployment => push(&mut self.deployments, value, origin, report),
            Kind::AuthorizationPolicy => push(&mut self.authorization_policies, value, origin, report),
            Kind::PeerAuthentication => push(&mut self.peer_authentications, value, origin, report),
            Kind::GatewayApi(kind) => {
                let value = GatewayApiDoc { kind, value };
                self.gateway_api.push(Doc { origin, value });
            }
            Kind::Cluster => {
                let value = deserialize(value, &origin, report);
                self.clusters.push(Doc { origin, value });
            }
        }
    }
}

/// Deserializes `value` (already identified) into `T` and adds it to `docs`, or reports the first type error.
fn push<T: DeserializeOwned>(docs: &mut Vec<Doc<T>>, value: Value, origin: Origin, report: &mut Report) {
    if let Some(value) = deserialize(value, &origin, report) {
        docs.push(Doc { origin, value });
    }
}

/// Deserializes an identified document, reporting the first type error with its field path.
fn deserialize<T: DeserializeOwned>(mut value: Value, origin: &Origin, report: &mut Report) -> Option<T> {
    if let Value::Object(map) = &mut value {
        // Checked by `identify`; the Cluster document does not declare them as fields.
        map.remove("apiVersion");
        map.remove("kind");
    }
    let result = serde_path_to_error::deserialize(value);
    let report = |error| report.errors.push(type_error(origin, &error));
    result.map_err(report).ok()
}

fn type_error(origin: &Origin, error: &serde_path_to_error::Error<serde_json::Error>) -> Diagnostic {
    let path = error.path().to_string();
    let field = if path == "." { "" } else { path.as_str() };
    origin.diagnostic(field, error.inner().to_string())
}

/// Finds the kind of a document.
fn identify(value: &Value) -> Result<Identified, Problem> {
    let Value::Object(map) = value else {
        let found = type_name(value);
        let message = format!("a manifest must be a mapping with apiVersion and kind, not {found}");
        return Err(("", message));
    };
    let kind = required_string(map, "kind")?;
    let api_version = required_string(map, "apiVersion")?;
    match kind {
        "List" => list(api_version),
        kind => lookup(kind, api_version).map(Identified::Object),
    }
}

fn list(api_version: &str) -> Result<Identified, Problem> {
    match api_version {
        "v1" => Ok(Identified::List),
        _ => Err(("apiVersion", format!("List is apiVersion \"v1\", not {api_version:?}"))),
    }
}

fn lookup(kind: &str, api_version: &str) -> Result<&'static KindInfo, Problem> {
    let Some(info) = KINDS.iter().find(|info| info.name == kind) else {
        let message = format!("unknown kind {kind:?} (apiVersion {api_version:?}); supported: {SUPPORTED}");
        return Err(("kind", message));
    };
    if !info.api_versions.contains(&api_version) {
        let expected = quoted_alternatives(info.api_versions);
        let message = format!("{kind} is apiVersion {expected}, not {api_version:?}");
        return Err(("apiVersion", message));
    }
    Ok(info)
}

/// `"a"`, or `"a" or "b"`.
fn quoted_alternatives(values: &[&str]) -> String {
    let quoted: Vec<String> = values.iter().map(|value| format!("{value:?}")).collect();
    quoted.join(" or ")
}

/// "Pod default/web", "Namespace web"; just the kind when the name is missing.
fn label(info: &KindInfo, value: &Value) -> String {
    let metadata = |key| {
        value
            .get("metadata")?
            .get(key)?
            .as_str()
            .filter(|text| !text.is_empty())
    };
    let namespace = metadata("namespace").unwrap_or(DEFAULT_NAMESPACE);
    match (metadata("name"), info.namespaced) {
        (None, _) => info.name.to_string(),
        (Some(name), false) => format!("{} {name}", info.name),
        (Some(name), true) => format!("{} {namespace}/{name}", info.name),
    }
}

// === impl KindInfo ===

impl KindInfo {
    const fn new(kind: Kind, name: &'static str, api_versions: &'static [&'static str], namespaced: bool) -> Self {
        Self {
            kind,
            name,
            api_versions,
            namespaced,
        }
    }
}

// === impl Position ===

impl<'a> Position<'a> {
    const fn new(file: &'a str, document: usize) -> Self {
        Self { file, document }
    }

    /// The origin of an object found here (its kind not known yet).
    fn origin(&self, prefix: String, seq: usize) -> Origin {
        let (file, document) = (self.file.to_string(), self.document);
        Origin {
            file,
            document,
            prefix,
            object: None,
            seq,
        }
    }

    /// Reports a problem with the whole document and gives nothing.
    fn fail<T>(&self, report: &mut Report, message: String) -> Option<T> {
        let file = self.file.to_string();
        let diagnostic = Diagnostic::new(file, self.document, None, String::new(), message);
        report.errors.push(diagnostic);
        None
    }
}
