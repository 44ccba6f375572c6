//! `ambit logs [-n NS] POD [-c CONTAINER] [-f]`: prints what a container wrote to stdout and stderr.

use std::io::{Read, Seek, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// The container (default: the first).
    #[arg(short, long)]
    container: Option<String>,
    /// Keep printing what is appended.
    #[arg(short, long)]
    follow: bool,
    pod: String,
    #[command(flatten)]
    cluster: super::ClusterSelector,
}

pub fn run(args: LogsArgs) -> anyhow::Result<ExitCode> {
    let layout = args.cluster.resolve()?;
    let plan = super::load_plan(&layout)?;
    let (pod, container) = super::find_container(&plan, &args.namespace, &args.pod, args.container.as_deref())?;
    let container = &container.name;
    let path = layout.container_log(&pod.namespace, &pod.name, container);
    let mut file = std::fs::File::open(&path).with_context(|| format!("no log yet for container {container}"))?;
    let mut out = std::io::stdout().lock();
    std::io::copy(&mut file, &mut out)?;
    if !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        out.flush()?;
        std::thread::sleep(Duration::from_millis(200));
        let pos = file.stream_position()?;
        if std::fs::metadata(&path).map(|m| m.len() < pos).unwrap_or(true) {
            return Ok(ExitCode::SUCCESS);
        }
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        out.write_all(&buf)?;
    }
}
