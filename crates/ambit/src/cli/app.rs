//! `ambit app echo|load`: the sample workloads.

use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum AppCommand {
    /// HTTP/1.1 + h2c echo server, raw TCP echo and sink listeners.
    Echo(ambit_apps::echo::EchoArgs),
    /// HTTP/1.1 and TCP load generator with latency percentiles.
    Load(ambit_apps::load::LoadArgs),
}

pub fn run(cmd: AppCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AppCommand::Echo(args) => ambit_apps::echo::main(args)?,
        AppCommand::Load(args) => ambit_apps::load::main(args)?,
    }
    Ok(ExitCode::SUCCESS)
}
