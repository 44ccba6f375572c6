//! `ambit cluster up|down|list|supervise`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use ambit_cluster::layout::{Layout, clusters};
use ambit_cluster::{manifest, runtime};
use anyhow::Context;

#[derive(clap::Subcommand, Debug)]
pub enum ClusterCommand {
    /// Validate the manifests, then create the cluster and start its pods.
    Up {
        /// A manifest file or a directory of them (repeatable).
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// Use this name instead of the Cluster document's.
        #[arg(long)]
        name: Option<String>,
        /// How long to wait for every pod to be ready (0: do not wait).
        #[arg(long, default_value = "120", value_name = "SECONDS")]
        wait: u64,
    },
    /// Remove a cluster: every namespace, link, rule, file and process it made.
    Down {
        /// The cluster; by default the only one running.
        #[arg(long)]
        name: Option<String>,
        /// Remove every ambit cluster on this host.
        #[arg(long, conflicts_with = "name")]
        all: bool,
    },
    /// List the clusters on this host.
    List,
    /// Run a cluster's supervisor in the foreground (started by `up`).
    #[command(hide = true)]
    Supervise {
        #[arg(long)]
        name: String,
    },
}

pub fn run(cmd: ClusterCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ClusterCommand::Up { files, name, wait } => up(&files, name, wait),
        ClusterCommand::Down { name, all } => down(name, all),
        ClusterCommand::List => {
            for name in clusters() {
                println!("{name}");
            }
            Ok(ExitCode::SUCCESS)
        }
        ClusterCommand::Supervise { name } => {
            ambit_cluster::supervisor::run(&name)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn up(files: &[PathBuf], name: Option<String>, wait: u64) -> anyhow::Result<ExitCode> {
    let mut sources = Vec::new();
    for f in files {
        sources.extend(manifest::read_sources(f)?);
    }
    let loaded = match manifest::load(&sources) {
        Ok(mut loaded) => {
            if let Some(name) = name {
                anyhow::ensure!(valid_cluster_name(&name), "--name {name:?}: {CLUSTER_NAME_RULE}");
                loaded.plan.name = name;
            }
            loaded
        }
        Err(e) => {
            eprintln!("{e}");
            eprintln!("nothing was created");
            return Ok(ExitCode::FAILURE);
        }
    };
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    let plan = loaded.plan;
    runtime::preflight()?;
    if clusters().contains(&plan.name) {
        eprintln!("cluster {} exists already; removing it first", plan.name);
        runtime::down(&plan.name)?;
    }
    let layout = runtime::up(&plan)?;
    println!(
        "cluster {} created: {} nodes, {} pods, {} services",
        plan.name,
        plan.nodes.len(),
        plan.pods.len(),
        plan.services.len()
    );
    if wait > 0 {
        runtime::wait_ready(&layout, &plan, Duration::from_secs(wait))
            .with_context(|| format!("cluster {} is up but not ready; see `ambit get pods -A`", plan.name))?;
        println!("all pods ready");
    }
    Ok(ExitCode::SUCCESS)
}

const CLUSTER_NAME_RULE: &str =
    "a cluster name is 1 to 20 lowercase letters, digits or '-', starting and ending with a letter or digit";

fn valid_cluster_name(name: &str) -> bool {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ends = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
    ok_chars && (1..=20).contains(&name.len()) && ends(name.as_bytes().first()) && ends(name.as_bytes().last())
}

fn down(name: Option<String>, all: bool) -> anyhow::Result<ExitCode> {
    let names = if all {
        clusters()
    } else {
        let sel = super::ClusterSelector { cluster: name };
        vec![sel.resolve()?.cluster().to_string()]
    };
    runtime::preflight()?;
    for name in names {
        let report = runtime::down(&name)?;
        println!(
            "cluster {name} removed ({} namespaces, {} leftover processes{})",
            report.namespaces,
            report.processes,
            if report.supervisor_stopped {
                ", supervisor stopped"
            } else {
                ""
            }
        );
        debug_assert!(!Layout::new(&name).dir().exists());
    }
    Ok(ExitCode::SUCCESS)
}
