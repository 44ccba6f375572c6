//! `ambit app echo|load|grpc|relay`: the sample workloads.

use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum AppCommand {
    /// HTTP/1.1 + h2c and gRPC echo server, raw TCP echo and sink listeners.
    Echo(ambit_apps::echo::EchoArgs),
    /// HTTP/1.1 and TCP load generator with latency percentiles.
    Load(ambit_apps::load::LoadArgs),
    /// gRPC echo client: unary and server-streaming calls over one connection, answering pods counted (JSON).
    Grpc(ambit_apps::grpc::GrpcArgs),
    /// Plain TCP relay (LISTEN=TARGET routes): the baseline under any proxy, for benchmarks.
    Relay(ambit_apps::relay::RelayArgs),
}

pub fn run(cmd: AppCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AppCommand::Echo(args) => ambit_apps::echo::main(args)?,
        AppCommand::Load(args) => ambit_apps::load::main(args)?,
        AppCommand::Grpc(args) => ambit_apps::grpc::main(args)?,
        AppCommand::Relay(args) => ambit_apps::relay::main(args)?,
    }
    Ok(ExitCode::SUCCESS)
}
