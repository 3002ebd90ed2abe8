//! `imsload`: argument parsing and one call into the library.

use clap::Parser;
use imsload::load::{app, args::Cli};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    imsload::logging::init(imsload::logging::Verbosity(cli.verbose));
    imsload::exit::code("imsload", app::main(cli))
}
