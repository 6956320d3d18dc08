//! `facegate-sync`: the store-and-forward MQTT sync agent (enrollments both ways,
//! revocations, audit logs, metrics). It talks to the daemon's API only, never its files.
//!
//! Status: a compiling skeleton; the agent is built in its own issue.

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "facegate-sync",
    version,
    about = "facegate terminal <-> hub sync agent (not implemented yet)"
)]
struct Cli {}

fn main() -> std::process::ExitCode {
    let _ = Cli::parse();
    #[allow(clippy::print_stderr)]
    {
        eprintln!("facegate-sync: not implemented yet (see the sync-agent issue)");
    }
    std::process::ExitCode::from(2)
}
