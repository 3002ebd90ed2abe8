//! `imsprobe`: argument parsing and one call into the library. See `docs/imsprobe.md`.

use clap::Parser;
use imsload::probe::{app, args::Cli};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    imsload::logging::init(imsload::logging::Verbosity(cli.verbose));
    let tool = cli.tool();
    imsload::exit::code(tool, app::main(cli))
}
