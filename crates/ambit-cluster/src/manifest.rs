//! Loading manifests: Kubernetes YAML plus one `Cluster` document, validated and planned into a `ClusterPlan`.
//!
//! [`read_sources`] does the only IO; [`load`] is a pure function from sources to a fully allocated
//! [`ClusterPlan`], or to every problem found, each located by file, document, object and field path. Nothing is
//! created on the host before this succeeds, so every check the runtime relies on happens here.
//!
//! The stages, each in its own submodule:
//! - `document`: split files into YAML documents, parse them, dispatch on `apiVersion` + `kind` and deserialize
//!   into the Kubernetes API types (unknown fields ignored) or the strict `Cluster` document (`cluster`).
//! - `cluster`, `namespace`, `workload` (with `pod`, `container`, `probe`, `deployment`) and `service`: check
//!   every object, cross-check references, expand Deployments into pods.
//! - `policy`: check Istio AuthorizationPolicies and PeerAuthentications by translating them.
//! - `gateway_api`: check Gateways, HTTPRoutes and GRPCRoutes as the control plane's config store does; `waypoint`:
//!   plan the ServiceAccount, Pod and Service of every waypoint Gateway (`gatewayClassName: istio-waypoint`).
//! - `schedule` and `service`: place pods on nodes, hand out pod IPs and ClusterIPs.
//! - `plan`: run the stages and assemble the [`ClusterPlan`] (with `env` resolving each container's environment).
//!
//! Everything is deterministic: the same sources always give the same plan. The rules that decide names and
//! addresses are documented where they are implemented: node ranges in `cluster`, pod names in `deployment`,
//! placement and pod IPs in `schedule`, ClusterIPs in `service`, environment and argv in `env`, waypoints' objects
//! in `waypoint`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use crate::model::ClusterPlan;

mod cluster;
mod container;
mod deployment;
mod document;
mod env;
mod gateway_api;
pub(crate) mod hash;
mod meta;
mod namespace;
mod plan;
mod pod;
mod policy;
mod probe;
mod schedule;
mod service;
mod syntax;
#[cfg(test)]
mod tests;
pub(crate) mod waypoint;
mod workload;

/// File name extensions [`read_sources`] picks up in a directory.
const MANIFEST_EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];
const NO_MANIFESTS: &str = "no *.yaml, *.yml or *.json file in this directory";
const UNPLANNED: &str = "the manifests passed every check but could not be planned (a bug in ambit)";

/// Labels, annotations, selectors.
type Labels = BTreeMap<String, String>;

/// One manifest file's contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// The file path as given, for messages.
    pub name: String,
    pub text: String,
}

/// A successful load: the plan, and findings that do not prevent running it.
#[derive(Clone, Debug, PartialEq)]
pub struct Loaded {
    pub plan: ClusterPlan,
    pub warnings: Vec<Diagnostic>,
}

/// One finding, located exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file, as named in its [`Source`]; empty for findings about the manifests as a whole.
    pub file: String,
    /// 1-based index of the YAML document within the file (empty documents count); 0 when not about a document.
    pub document: usize,
    /// The object, e.g. "Service default/echo" or "Namespace web", when known.
    pub object: Option<String>,
    /// The field path, e.g. `spec.ports[0].port`; empty when about the whole document.
    pub field: String,
    pub message: String,
}

/// Loading failed: every error found, sorted by file and document.
#[derive(Debug, thiserror::Error)]
pub struct LoadError {
    pub diagnostics: Vec<Diagnostic>,
}

/// Reads FILE, or every `*.yaml` / `*.yml` / `*.json` file of DIR (sorted by name, not recursive), into sources.
/// IO errors name the path.
pub fn read_sources(path: &Path) -> Result<Vec<Source>, LoadError> {
    let metadata = fs::metadata(path).map_err(|error| io_error(path, &error))?;
    if !metadata.is_dir() {
        return Ok(vec![read_source(path)?]);
    }
    let paths = manifest_paths(path)?;
    if paths.is_empty() {
        return Err(file_error(path, NO_MANIFESTS.to_string()));
    }
    paths.iter().map(|path| read_source(path)).collect()
}

/// Parses, validates and plans. Pure: no IO.
pub fn load(sources: &[Source]) -> Result<Loaded, LoadError> {
    let mut report = Report::default();
    let objects = document::parse(sources, &mut report);
    let plan = plan::build(&objects, &mut report);
    report.finish(sources, plan)
}

fn read_source(path: &Path) -> Result<Source, LoadError> {
    let text = fs::read_to_string(path);
    let text = text.map_err(|error| io_error(path, &error))?;
    let name = path.display().to_string();
    Ok(Source { name, text })
}

/// The manifest files directly inside `dir`, sorted.
fn manifest_paths(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let mut paths = Vec::new();
    for entry in fs::read_dir(dir).map_err(|error| io_error(dir, &error))? {
        let path = entry.map_err(|error| io_error(dir, &error))?.path();
        paths.extend(is_manifest(&path).then_some(path));
    }
    paths.sort();
    Ok(paths)
}

fn is_manifest(path: &Path) -> bool {
    let extension = path.extension().unwrap_or_default();
    let known = MANIFEST_EXTENSIONS.iter().any(|ext| extension == *ext);
    known && path.is_file()
}

fn io_error(path: &Path, error: &std::io::Error) -> LoadError {
    file_error(path, format!("cannot read: {error}"))
}

fn file_error(path: &Path, message: String) -> LoadError {
    let file = path.display().to_string();
    let diagnostic = Diagnostic {
        file,
        ..Diagnostic::global(message)
    };
    LoadError::single(diagnostic)
}

/// Stable sort by the file's position among the sources (findings about no file first), then by document.
fn sort_by_position(sources: &[Source], diagnostics: &mut [Diagnostic]) {
    let names = sources.iter().map(|source| source.name.as_str());
    let rank: HashMap<&str, usize> = names.zip(1..).collect();
    let file_rank = |file: &str| match file {
        "" => 0,
        file => rank.get(file).copied().unwrap_or(usize::MAX),
    };
    diagnostics.sort_by_key(|d| (file_rank(&d.file), d.document));
}

/// Whether an optional list has items.
fn has_items<T>(list: &Option<Vec<T>>) -> bool {
    list.as_ref().is_some_and(|list| !list.is_empty())
}

/// Joins field paths: `spec` + `ports[0]` is `spec.ports[0]`, `ports` + `[0]` is `ports[0]`.
fn join(path: &str, field: &str) -> String {
    match (path, field) {
        (path, "") => path.to_string(),
        ("", field) => field.to_string(),
        (path, field) if field.starts_with('[') => format!("{path}{field}"),
        (path, field) => format!("{path}.{field}"),
    }
}

// === impl Diagnostic ===

impl Diagnostic {
    /// A finding about the manifests as a whole, e.g. a missing Cluster document.
    fn global(message: impl Into<String>) -> Self {
        let (file, field) = (String::new(), String::new());
        Self::new(file, 0, None, field, message.into())
    }

    fn new(file: String, document: usize, object: Option<String>, field: String, message: String) -> Self {
        Self {
            file,
            document,
            object,
            field,
            message,
        }
    }

    /// "document N (object)", or the parts of it that are known.
    fn place(&self) -> String {
        let document = (self.document > 0).then(|| format!("document {}", self.document));
        let object = self.object.as_ref().map(|object| format!("({object})"));
        let parts: Vec<String> = [document, object].into_iter().flatten().collect();
        parts.join(" ")
    }
}

impl fmt::Display for Diagnostic {
    /// `{file}: document {document} ({object}): {field}: {message}`, leaving out the parts that are empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let place = self.place();
        let parts = [&self.file, &place, &self.field];
        for part in parts.into_iter().filter(|part| !part.is_empty()) {
            write!(f, "{part}: ")?;
        }
        f.write_str(&self.message)
    }
}

// === impl LoadError ===

impl LoadError {
    fn single(diagnostic: Diagnostic) -> Self {
        let diagnostics = vec![diagnostic];
        Self { diagnostics }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.diagnostics.len();
        let noun = if count == 1 { "error" } else { "errors" };
        write!(f, "{count} {noun} in the manifests:")?;
        let mut lines = self.diagnostics.iter();
        lines.try_for_each(|diagnostic| write!(f, "\n{diagnostic}"))
    }
}

// === findings ===

/// Where an object comes from: what every diagnostic about it names.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Origin {
    file: String,
    document: usize,
    /// Prepended to field paths: empty, or e.g. `items[2]` for an item of a `kind: List`.
    prefix: String,
    /// E.g. "Pod default/web"; None before the kind is known.
    object: Option<String>,
    /// Position of the object among all objects of the load (document order, list items in order).
    seq: usize,
}

impl Origin {
    fn diagnostic(&self, field: &str, message: impl Into<String>) -> Diagnostic {
        let (file, object) = (self.file.clone(), self.object.clone());
        let field = join(&self.prefix, field);
        Diagnostic::new(file, self.document, object, field, message.into())
    }

    /// "FILE document N", plus the list item if any: where a duplicate was first defined.
    fn location(&self) -> String {
        let location = format!("{} document {}", self.file, self.document);
        let item = [location, self.prefix.clone()];
        item.join(" ").trim_end().to_string()
    }
}

/// Everything found so far.
#[derive(Debug, Default)]
struct Report {
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl Report {
    /// Checking an object: findings name its origin.
    fn scope<'a>(&'a mut self, origin: &'a Origin) -> Scope<'a> {
        let path = String::new();
        Scope {
            origin,
            report: self,
            path,
        }
    }

    fn global(&mut self, message: impl Into<String>) {
        self.errors.push(Diagnostic::global(message));
    }

    /// The outcome of the load: the plan if there are no errors, else every error (both sorted by position).
    fn finish(mut self, sources: &[Source], plan: Option<ClusterPlan>) -> Result<Loaded, LoadError> {
        if plan.is_none() && self.errors.is_empty() {
            self.global(UNPLANNED);
        }
        sort_by_position(sources, &mut self.errors);
        sort_by_position(sources, &mut self.warnings);
        let (diagnostics, warnings) = (self.errors, self.warnings);
        match plan {
            Some(plan) if diagnostics.is_empty() => Ok(Loaded { plan, warnings }),
            _ => Err(LoadError { diagnostics }),
        }
    }
}

/// The report while checking one object, at a field path within it.
struct Scope<'a> {
    origin: &'a Origin,
    report: &'a mut Report,
    /// Prepended to the fields of findings, e.g. `spec.containers[0]`.
    path: String,
}

impl Scope<'_> {
    fn error(&mut self, field: &str, message: impl Into<String>) {
        let field = join(&self.path, field);
        let diagnostic = self.origin.diagnostic(&field, message);
        self.report.errors.push(diagnostic);
    }

    fn warn(&mut self, field: &str, message: impl Into<String>) {
        let field = join(&self.path, field);
        let diagnostic = self.origin.diagnostic(&field, message);
        self.report.warnings.push(diagnostic);
    }

    /// Reports an error and gives nothing, for `return scope.fail(..)`.
    fn fail<T>(&mut self, field: &str, message: impl Into<String>) -> Option<T> {
        self.error(field, message);
        None
    }

    /// Checks `value` against a syntax rule, reporting "`what` VALUE REASON"; whether it passed.
    fn valid(&mut self, field: &str, value: &str, what: &str, rule: syntax::Rule) -> bool {
        let verdict = rule(value);
        let report = |reason| self.error(field, format!("{what} {value:?} {reason}"));
        verdict.map_err(report).is_ok()
    }

    /// Reports every name seen before, at its field: "duplicate `what` NAME (also FIELD)".
    fn unique<'n>(&mut self, entries: impl IntoIterator<Item = (String, &'n str)>, what: &str) {
        let mut first: HashMap<&str, String> = HashMap::new();
        for (field, name) in entries {
            match first.get(name) {
                Some(earlier) => self.error(&field, format!("duplicate {what} {name:?} (also {earlier})")),
                None => self.remember(&mut first, name, &field),
            }
        }
    }

    fn remember<'n>(&self, first: &mut HashMap<&'n str, String>, name: &'n str, field: &str) {
        first.insert(name, join(&self.path, field));
    }

    /// The same report at `field` below this scope's path.
    fn at(&mut self, field: impl fmt::Display) -> Scope<'_> {
        let path = join(&self.path, &field.to_string());
        let (origin, report) = (self.origin, &mut *self.report);
        Scope { origin, report, path }
    }

    /// The number of errors so far (of the whole load), to tell whether a check added any.
    fn errors(&self) -> usize {
        self.report.errors.len()
    }
}
