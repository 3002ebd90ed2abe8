//! `imsload`: argument parsing and one call into the library.

use clap::Parser;
use imsload::load::{app, args::Cli};

fn main() -> std::process::ExitCode {
    imsload::exit::code("imsload", app::main(Cli::parse()))
}
