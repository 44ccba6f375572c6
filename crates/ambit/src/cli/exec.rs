//! `ambit exec [-n NS] POD -- CMD...`: runs a command inside the pod's network namespace with the container's
//! environment and the pod's resolv.conf and hosts, like `kubectl exec`.

use std::os::unix::process::CommandExt;
use std::process::ExitCode;

use ambit_cluster::model::ClusterPlan;
use anyhow::Context;

#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// The container whose environment to use (default: the first).
    #[arg(short, long)]
    container: Option<String>,
    pod: String,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
    #[command(flatten)]
    cluster: super::ClusterSelector,
}

pub fn run(args: ExecArgs) -> anyhow::Result<ExitCode> {
    let layout = args.cluster.resolve()?;
    let plan: ClusterPlan = serde_json::from_slice(
        &std::fs::read(layout.plan_file()).with_context(|| format!("cluster {} has no plan", layout.cluster()))?,
    )?;
    let pod = plan
        .pod(&args.namespace, &args.pod)
        .with_context(|| format!("pod {}/{} not found in cluster {}", args.namespace, args.pod, plan.name))?;
    let container = match &args.container {
        Some(name) => pod
            .containers
            .iter()
            .find(|c| &c.name == name)
            .with_context(|| format!("pod {} has no container {name}", pod.name))?,
        None => pod.containers.first().context("pod has no containers")?,
    };
    let home = layout
        .dir()
        .join("pods")
        .join(format!("{}_{}", pod.namespace, pod.name));
    let env = ambit_cluster::supervisor::container_env(pod, container, &home);
    let err = std::process::Command::new("ip")
        .args(["netns", "exec", &layout.pod_ns(&pod.namespace, &pod.name)])
        .args(&args.command)
        .env_clear()
        .envs(env)
        .exec();
    Err(err).context("cannot run ip netns exec")
}
