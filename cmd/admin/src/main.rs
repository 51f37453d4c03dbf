//! `admin`: inspects, verifies, triggers and restores checkpoints of a running processor, or
//! of a checkpoint directory offline. The commands arrive with the checkpoint and admin issues;
//! until then it says so and exits non-zero rather than pretend.

use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "admin",
    version,
    about = "Administers dataflow checkpoints (not available yet)"
)]
struct Cli {}

fn main() -> ExitCode {
    let _ = Cli::parse();
    eprintln!("error: no admin command exists yet: checkpoints arrive in a later version");
    ExitCode::from(2)
}
