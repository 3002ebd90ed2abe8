//! imshss: a small Diameter Cx HSS for the lab IMS core (see docs/ims-lab.md).
//!
//! imshss --listen 127.0.0.20:3868 --realm ims.mnc001.mcc001.3gppnetwork.org --subscribers FILE

use clap::Parser;
use imsload::hss::app::{self, Args};

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    imsload::logging::init(imsload::logging::Verbosity(args.verbose));
    imsload::exit::code("imshss", app::main(args))
}
