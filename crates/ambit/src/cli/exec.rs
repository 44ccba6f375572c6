//! `ambit exec [-n NS] POD -- CMD...`: runs a command inside the pod's network namespace with the container's
//! environment and the pod's resolv.conf and hosts, like `kubectl exec`.

use std::os::unix::process::CommandExt;
use std::process::ExitCode;

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
    let plan = super::load_plan(&layout)?;
    let (pod, container) = super::find_container(&plan, &args.namespace, &args.pod, args.container.as_deref())?;
    let home = layout.pod_home(&pod.namespace, &pod.name);
    let env = ambit_cluster::supervisor::container_env(layout.cluster(), pod, container, &home);
    let err = std::process::Command::new("ip")
        .args(["netns", "exec", &layout.pod_ns(&pod.namespace, &pod.name)])
        .args(&args.command)
        .env_clear()
        .envs(env)
        .exec();
    Err(err).context("cannot run ip netns exec")
}
