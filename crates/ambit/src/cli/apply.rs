//! `ambit apply -f` and `ambit delete -f`: manifests sent to the control plane's config store as one batch (all
//! applied or none), and what it did to each object, one line per object as kubectl prints them.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use super::api::{self, ApiError, Client, Diagnostic, ObjectResult, Source};

#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    #[command(flatten)]
    files: Files,
    /// Validate the manifests and say what would change, without changing anything.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    cluster: super::ClusterSelector,
}

#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    #[command(flatten)]
    files: Files,
    /// Skip the objects that do not exist instead of failing the whole batch.
    #[arg(long)]
    ignore_not_found: bool,
    #[command(flatten)]
    cluster: super::ClusterSelector,
}

/// Where the manifests come from.
#[derive(clap::Args, Debug)]
struct Files {
    /// A manifest (YAML, multi-document, or JSON), a directory of them (its *.yaml, *.yml and *.json files, not
    /// recursive), or - for stdin. Repeatable; all files form one batch.
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-", required = true)]
    paths: Vec<PathBuf>,
}

/// The extensions of the manifests taken from a directory.
const MANIFEST_EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

pub fn run_apply(args: ApplyArgs) -> anyhow::Result<ExitCode> {
    let sources = read_sources(&args.files.paths, &mut std::io::stdin().lock())?;
    let client = Client::new(args.cluster.resolve()?.control_socket());
    let reply = api::block_on(client.apply(&sources, args.dry_run))?;
    finish(reply, args.dry_run)
}

pub fn run_delete(args: DeleteArgs) -> anyhow::Result<ExitCode> {
    let sources = read_sources(&args.files.paths, &mut std::io::stdin().lock())?;
    let client = Client::new(args.cluster.resolve()?.control_socket());
    let reply = api::block_on(client.delete(&sources, args.ignore_not_found))?;
    finish(reply, false)
}

/// Prints the results, or the diagnostics of a rejected batch (exit 1).
fn finish(reply: Result<Vec<ObjectResult>, ApiError>, dry_run: bool) -> anyhow::Result<ExitCode> {
    match reply {
        Ok(results) => {
            for result in &results {
                println!("{}", result_line(result, dry_run));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(ApiError::Rejected { diagnostics, .. }) if !diagnostics.is_empty() => {
            eprint!("{}", diagnostic_lines(&diagnostics));
            Ok(ExitCode::FAILURE)
        }
        Err(error) => Err(error.into()),
    }
}

/// `authorizationpolicy.security.istio.io/deny-all created`, with ` (dry run)` when nothing was changed.
fn result_line(result: &ObjectResult, dry_run: bool) -> String {
    let dry = if dry_run { " (dry run)" } else { "" };
    let kind = super::get::qualified(&result.kind.to_lowercase(), super::get::group_of(&result.kind));
    format!("{kind}/{} {}{dry}", result.name, result.outcome)
}

/// One `error: <diagnostic>` line per diagnostic, for stderr.
pub fn diagnostic_lines(diagnostics: &[Diagnostic]) -> String {
    diagnostics.iter().map(|d| format!("error: {d}\n")).collect()
}

/// The sources named by `-f` arguments, in order: files as given, directories as their manifests sorted by name,
/// and `-` as what `stdin` holds.
fn read_sources(paths: &[PathBuf], stdin: &mut dyn Read) -> anyhow::Result<Vec<Source>> {
    let dash = Path::new("-");
    anyhow::ensure!(
        paths.iter().filter(|p| *p == dash).count() <= 1,
        "-f - is given more than once: stdin can be read only once"
    );
    let mut sources = Vec::new();
    for path in paths {
        if path == dash {
            let mut text = String::new();
            stdin
                .read_to_string(&mut text)
                .context("cannot read the manifests on stdin")?;
            sources.push(Source { name: "-".into(), text });
        } else if path.is_dir() {
            let files = manifest_files(directory_files(path)?);
            anyhow::ensure!(
                !files.is_empty(),
                "{} holds no manifests (*.yaml, *.yml or *.json files)",
                path.display()
            );
            for file in &files {
                sources.push(read_source(file)?);
            }
        } else {
            sources.push(read_source(path)?);
        }
    }
    Ok(sources)
}

/// The regular files (or links to them) directly in `dir`.
fn directory_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let context = || format!("cannot list the directory {}", dir.display());
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(context)? {
        let path = entry.with_context(context)?.path();
        if path.is_file() {
            files.push(path);
        }
    }
    Ok(files)
}

/// The manifests among a directory's files, sorted by name, as kubectl takes them.
fn manifest_files(mut files: Vec<PathBuf>) -> Vec<PathBuf> {
    files.retain(|f| {
        f.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| MANIFEST_EXTENSIONS.contains(&e))
    });
    files.sort();
    files
}

/// A manifest file, named as the path reads.
fn read_source(path: &Path) -> anyhow::Result<Source> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Source {
        name: path.display().to_string(),
        text,
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn result(kind: &str, name: &str, outcome: &str) -> ObjectResult {
        ObjectResult {
            kind: kind.into(),
            namespace: Some("web".into()),
            name: name.into(),
            outcome: outcome.into(),
        }
    }

    #[test]
    fn result_lines_name_the_resource_as_kubectl_does() {
        let cases = [
            (
                result("AuthorizationPolicy", "deny-all", "created"),
                false,
                "authorizationpolicy.security.istio.io/deny-all created",
            ),
            (
                result("PeerAuthentication", "strict", "configured"),
                true,
                "peerauthentication.security.istio.io/strict configured (dry run)",
            ),
            (
                result("Gateway", "waypoint", "unchanged"),
                false,
                "gateway.gateway.networking.k8s.io/waypoint unchanged",
            ),
            (
                result("HTTPRoute", "r", "deleted"),
                false,
                "httproute.gateway.networking.k8s.io/r deleted",
            ),
            (
                result("GRPCRoute", "g", "created"),
                false,
                "grpcroute.gateway.networking.k8s.io/g created",
            ),
            (
                result("Namespace", "web", "unchanged"),
                false,
                "namespace/web unchanged",
            ),
            (
                result("ServiceAccount", "echo", "created"),
                true,
                "serviceaccount/echo created (dry run)",
            ),
        ];
        for (result, dry_run, expected) in cases {
            assert_eq!(result_line(&result, dry_run), expected);
        }
    }

    #[test]
    fn diagnostics_print_one_error_line_each() {
        let diagnostics = [
            Diagnostic {
                file: "p.yaml".into(),
                document: 1,
                object: Some("AuthorizationPolicy web/deny".into()),
                field: "spec.rules[0].from[0].source.principals[1]".into(),
                message: "not a SPIFFE ID".into(),
            },
            Diagnostic {
                message: "the batch is empty".into(),
                ..Default::default()
            },
        ];
        let expected = "error: p.yaml: document 1: AuthorizationPolicy web/deny: \
                        spec.rules[0].from[0].source.principals[1]: not a SPIFFE ID\n\
                        error: the batch is empty\n";
        assert_eq!(diagnostic_lines(&diagnostics), expected);
        assert_eq!(diagnostic_lines(&[]), "");
    }

    #[test]
    fn directories_give_their_manifests_sorted() {
        let cases: &[(&[&str], &[&str])] = &[
            (
                &["d/b.yaml", "d/a.json", "d/c.yml"],
                &["d/a.json", "d/b.yaml", "d/c.yml"],
            ),
            (&["d/README.md", "d/x.yaml.bak", "d/noext", "d/p.yaml"], &["d/p.yaml"]),
            (&["d/UPPER.YAML"], &[]),
            (&[], &[]),
        ];
        for (files, expected) in cases {
            let files = files.iter().map(PathBuf::from).collect();
            let expected: Vec<PathBuf> = expected.iter().map(PathBuf::from).collect();
            assert_eq!(manifest_files(files), expected);
        }
    }

    #[test]
    fn sources_come_from_files_directories_and_stdin_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let manifests = dir.path().join("manifests");
        std::fs::create_dir(&manifests).unwrap();
        std::fs::create_dir(manifests.join("nested.yaml")).unwrap();
        for (name, text) in [("b.yaml", "b"), ("a.json", "a"), ("notes.txt", "n")] {
            std::fs::write(manifests.join(name), text).unwrap();
        }
        let single = dir.path().join("one.yml");
        std::fs::write(&single, "one").unwrap();
        let paths = [single.clone(), PathBuf::from("-"), manifests.clone()];
        let sources = read_sources(&paths, &mut "from stdin".as_bytes()).unwrap();
        let got: Vec<(String, &str)> = sources.iter().map(|s| (s.name.clone(), s.text.as_str())).collect();
        let name = |p: PathBuf| p.display().to_string();
        assert_eq!(
            got,
            [
                (name(single), "one"),
                ("-".to_string(), "from stdin"),
                (name(manifests.join("a.json")), "a"),
                (name(manifests.join("b.yaml")), "b"),
            ]
        );
    }

    #[test]
    fn unreadable_sources_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let missing = dir.path().join("missing.yaml");
        let dash = PathBuf::from("-");
        let cases = [
            (
                vec![empty.clone()],
                format!("{} holds no manifests (*.yaml, *.yml or *.json files)", empty.display()),
            ),
            (vec![missing.clone()], format!("cannot read {}", missing.display())),
            (
                vec![dash.clone(), dash],
                "-f - is given more than once: stdin can be read only once".to_string(),
            ),
        ];
        for (paths, expected) in cases {
            let error = read_sources(&paths, &mut "".as_bytes()).unwrap_err();
            assert_eq!(error.to_string(), expected);
        }
    }

    #[test]
    fn apply_and_delete_parse_kubectl_flags() {
        let cli = Cli::try_parse_from([
            "ambit",
            "apply",
            "-f",
            "a.yaml",
            "--filename",
            "dir",
            "-f",
            "-",
            "--dry-run",
        ]);
        let Command::Apply(args) = cli.unwrap().command else {
            panic!("not apply")
        };
        assert_eq!(
            args.files.paths,
            [PathBuf::from("a.yaml"), PathBuf::from("dir"), PathBuf::from("-")]
        );
        assert!(args.dry_run);

        let cli = Cli::try_parse_from([
            "ambit",
            "delete",
            "-f",
            "a.yaml",
            "--ignore-not-found",
            "--cluster",
            "c1",
        ]);
        let Command::Delete(args) = cli.unwrap().command else {
            panic!("not delete")
        };
        assert!(args.ignore_not_found);
        assert_eq!(args.cluster.cluster.as_deref(), Some("c1"));

        for missing_file in [&["ambit", "apply"][..], &["ambit", "delete", "--ignore-not-found"]] {
            assert!(Cli::try_parse_from(missing_file).is_err(), "{missing_file:?}");
        }
        assert!(Cli::try_parse_from(["ambit", "delete", "-f", "a", "--dry-run"]).is_err());
    }
}
