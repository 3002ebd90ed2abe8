//! Prometheus metrics while a run goes on: a page in the text exposition format
//! ([`text::Page`]) and a small HTTP server that hands out the latest one ([`Server`]).
//!
//! Pages are built from the run's own statistics once a second (the load's aggregator tick,
//! the probe's report tick), never on the hot path: the cost of `--metrics` is one page per
//! second, whatever the message rate. Histograms are the HdrHistograms the reports use, binned
//! into Prometheus buckets when the page is written, so `histogram_quantile` over a scrape and
//! the report's percentiles come from the same samples.
//!
//! Why not the `prometheus` or `prometheus-client` crates: both keep live metric objects that
//! the hot path updates (an atomic add per event, a registry per process). Our counts already
//! exist, per worker and merged once a second; copying them into a second set of counters
//! would put work back on the hot path for nothing. What remains is writing text, which the
//! format makes small; `promtool check metrics` checks it in the tests.
//! Knows nothing of load or probes.

pub mod server;
pub mod text;

pub use server::Server;
pub use text::{Kind, Page};

/// Histogram bucket bounds (seconds) for SIP delays: sub-millisecond answers on a LAN up to
/// Timer B/F (64·T1 = 32 s), roughly ×2 apart.
pub const SIP_DELAY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0,
];

/// Keeps a process (and its endpoint) up for `d` after its run, so that a scraper sees the
/// final page, or until Ctrl-C/SIGTERM.
pub async fn linger(d: std::time::Duration) {
    use tokio::signal::unix::{signal, SignalKind};
    if d.is_zero() {
        return;
    }
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// [`linger`] for programs without a tokio runtime of their own.
pub fn linger_blocking(d: std::time::Duration) {
    if d.is_zero() {
        return;
    }
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(linger(d)),
        Err(_) => std::thread::sleep(d),
    }
}
