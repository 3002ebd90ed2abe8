//! `imsprobe`: argument parsing and one call into the library. See `docs/imsprobe.md`.

use clap::Parser;
use imsload::probe::args::{Cli, Cmd};
use imsload::{exit, logging, probe, trials};

fn main() -> std::process::ExitCode {
    let mut cli = Cli::parse();
    logging::init(logging::Verbosity(cli.verbose));
    // Trials sit above the probe (they run it), so the dispatch is here, not in `probe`.
    match cli.command.take() {
        Some(Cmd::Trials(a)) => exit::code("imsprobe trials", trials::app::main(*a)),
        None => exit::code("imsprobe", probe::app::main(cli)),
    }
}
