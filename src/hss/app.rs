//! `imshss`'s arguments and its one call: load the subscribers, serve Cx until Ctrl-C or
//! SIGTERM.

// The doc comments of the arguments are their --help text, in clap's form (`[default: …]`,
// `<realm>`), not rustdoc's.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

use std::net::SocketAddr;
use std::path::PathBuf;

use super::{server, Hss, HssConfig, Subscribers};
use crate::exit::Outcome;
use anyhow::Context as _;

#[derive(clap::Parser, Debug)]
#[command(
    name = "imshss",
    version,
    about = "Diameter Cx HSS (UAR, MAR with Milenage AKAv1-MD5 vectors, SAR, LIR) for a lab IMS core"
)]
pub struct Args {
    /// Address for Diameter over TCP.
    #[arg(long, default_value = "127.0.0.20:3868")]
    pub listen: SocketAddr,
    /// Our Origin-Realm (the IMS home domain).
    #[arg(long, default_value = "ims.mnc001.mcc001.3gppnetwork.org")]
    pub realm: String,
    /// Our Origin-Host [default: hss.<realm>].
    #[arg(long)]
    pub origin_host: Option<String>,
    /// CSV with header impu,impi,password,k,opc,amf,sqn[,tel] (hex k, opc, amf, sqn; tel: a tel: IMPU).
    #[arg(long)]
    pub subscribers: PathBuf,
    /// Seed for RAND (reproducible runs); by default from the OS.
    #[arg(long)]
    pub seed: Option<u64>,
    /// More diagnostics on stderr (-v: debug, -vv: everything); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// Serves until Ctrl-C or SIGTERM; an error (subscribers unreadable, address not bound) is a
/// setup error.
pub fn main(args: Args) -> anyhow::Result<Outcome> {
    let subs = Subscribers::load(&args.subscribers)?;
    let mut cfg = HssConfig::for_realm(&args.realm);
    if let Some(h) = args.origin_host {
        cfg.origin_host = h;
    }
    let hss = Hss::new(cfg, subs, args.seed);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(async {
        tokio::select! {
            r = server::serve(args.listen, hss) => r,
            _ = tokio::signal::ctrl_c() => Ok(()),
            _ = sigterm() => Ok(()),
        }
    })?;
    tracing::info!("stopped");
    Ok(Outcome::Ok)
}

async fn sigterm() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}
