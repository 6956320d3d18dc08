//! `facegate`: parse the command line, hand over to `app::run`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = facegate_daemon::cli::Cli::parse();
    match facegate_daemon::app::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // Logging may not be initialised (bad config): the error goes to stderr directly.
            #[allow(clippy::print_stderr)]
            {
                eprintln!("facegate: error: {error:#}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}
