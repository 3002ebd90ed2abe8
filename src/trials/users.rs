//! What the users lost while each element moved. The load's report gives a trial's totals; its
//! per-second series (`load-series.csv`) says when, so each step gets the seconds from its
//! migration's start to `after` past its end (where the next step starts): the element that was
//! moving then is the one the users felt.
//!
//! A request that timed out is counted in the second it expired, 64·T1 after it was sent (Timer
//! B for an INVITE, F for a REGISTER): 32 s at the default T1, well past the window of the
//! element it was sent into. It is put back in the second it was sent. Everything else (a
//! failure answered, a retransmission, a media gap) is counted in the second it happened.
//! Pure functions (unit-tested); the runner reads the file.

use super::record::{MediaSilence, UsersOut};
use super::step::wall_us_to_probe_s;
use anyhow::{ensure, Context as _};
use chrono::{DateTime, Utc};

/// One second of the load's series, on the probe timeline.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Second {
    /// Where the second ends (s on the probe timeline).
    pub end_s: f64,
    /// Failed registrations (initial and re-registrations) answered with an error.
    pub reg_failed: u64,
    /// Initial registrations that timed out (counted at expiry).
    pub reg_timeouts: u64,
    pub calls_failed: u64,
    /// Calls whose INVITE timed out (counted at expiry).
    pub calls_timeout: u64,
    pub retransmits: u64,
    /// `None` when the series has no media columns (a run without `--media`).
    pub media_gaps: Option<u64>,
}

/// The columns read, by name (the series is written with a header, in any order).
const REQUIRED: [&str; 6] = [
    "reg_failed",
    "reg_timeouts",
    "rereg_failed",
    "calls_failed",
    "calls_timeout",
    "retransmits",
];

/// Reads imsload's CSV series; `wall0` is the probe timeline's origin. A record that cannot be
/// read (a field count other than the header's, a value that is not a count) is skipped and
/// counted in the second value.
pub fn parse_series(text: &str, wall0: DateTime<Utc>) -> anyhow::Result<(Vec<Second>, usize)> {
    let mut rd = csv::Reader::from_reader(text.as_bytes());
    let header = rd.headers().context("the series' header")?.clone();
    ensure!(!header.is_empty(), "the series is empty");
    let col = |name: &str| header.iter().position(|h| h == name);
    let utc = col("utc").context("the series has no utc column")?;
    let mut idx = [0usize; REQUIRED.len()];
    for (i, name) in REQUIRED.iter().enumerate() {
        idx[i] = col(name).with_context(|| {
            format!("the series has no {name} column (an imsload older than this imsprobe?)")
        })?;
    }
    let media = col("media_gaps");
    let second = |r: &csv::StringRecord| -> Option<Second> {
        let n = |i: usize| r.get(i)?.parse::<u64>().ok();
        let end = DateTime::parse_from_rfc3339(r.get(utc)?).ok()?;
        let v: Vec<u64> = idx.iter().map(|&i| n(i)).collect::<Option<_>>()?;
        Some(Second {
            end_s: wall_us_to_probe_s(wall0, end.timestamp_micros()),
            reg_failed: v[0] + v[2],
            reg_timeouts: v[1],
            calls_failed: v[3],
            calls_timeout: v[4],
            retransmits: v[5],
            media_gaps: media.and_then(n),
        })
    };
    let (mut out, mut skipped) = (Vec::new(), 0);
    for r in rd.records() {
        match r.ok().as_ref().and_then(second) {
            Some(s) => out.push(s),
            None => skipped += 1,
        }
    }
    Ok((out, skipped))
}

/// One call leg's stream from the load's `--media-log`, on the probe timeline.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stream {
    pub started_s: f64,
    pub ended_s: f64,
    /// Its longest silence: when it began, and how long; its packet time.
    pub gap_at_s: f64,
    pub gap_ms: f64,
    pub ptime_ms: f64,
}

#[derive(serde::Deserialize)]
struct MediaLogLine {
    started_utc: String,
    ended_utc: String,
    ptime_ms: f64,
    longest_gap_ms: f64,
    longest_gap_at_utc: String,
}

/// Reads imsload's `--media-log` (CSV, by column name); `wall0` is the probe timeline's origin.
/// A line that cannot be read is skipped and counted in the second value.
pub fn parse_media_log(text: &str, wall0: DateTime<Utc>) -> anyhow::Result<(Vec<Stream>, usize)> {
    let mut rd = csv::Reader::from_reader(text.as_bytes());
    let header = rd.headers().context("the media log's header")?;
    ensure!(
        header.iter().any(|h| h == "longest_gap_at_utc"),
        "the media log has no longest_gap_at_utc column (not imsload's --media-log?)"
    );
    let at = |label: &str| {
        DateTime::parse_from_rfc3339(label)
            .ok()
            .map(|t| wall_us_to_probe_s(wall0, t.timestamp_micros()))
    };
    let (mut out, mut skipped) = (Vec::new(), 0);
    for line in rd.deserialize::<MediaLogLine>() {
        let stream = line.ok().and_then(|l| {
            Some(Stream {
                started_s: at(&l.started_utc)?,
                ended_s: at(&l.ended_utc)?,
                gap_at_s: at(&l.longest_gap_at_utc)?,
                gap_ms: l.longest_gap_ms,
                ptime_ms: l.ptime_ms,
            })
        });
        match stream {
            Some(s) => out.push(s),
            None => skipped += 1,
        }
    }
    Ok((out, skipped))
}

/// The streams' silences in `[from_s, to_s)`: longest silences of over three packet times, what
/// the series counts as `media_gaps` (a clean stream's longest gap is a packet time or so,
/// whenever it fell), whose middle is in the window. Not their start: a silence begins at the
/// last packet before the pause, up to a packet time before the command that paused; and
/// adjacent windows never share one. A stream's longest silence is the one a migration makes
/// when it is longer than any other the call had (a stream that heard two pauses shows only
/// the longer).
pub fn media_in_window(streams: &[Stream], from_s: f64, to_s: f64) -> MediaSilence {
    let up = streams
        .iter()
        .filter(|s| s.started_s < from_s && s.ended_s > from_s)
        .count() as u64;
    let mut hit: Vec<&Stream> = streams
        .iter()
        .filter(|s| {
            let mid = s.gap_at_s + s.gap_ms / 2e3;
            mid >= from_s && mid < to_s && s.gap_ms > 3.0 * s.ptime_ms
        })
        .collect();
    let mut m = MediaSilence {
        streams_up: up,
        streams_hit: hit.len() as u64,
        ..MediaSilence::default()
    };
    if hit.is_empty() {
        return m;
    }
    hit.sort_by(|a, b| a.gap_ms.total_cmp(&b.gap_ms));
    m.gap_max_ms = hit[hit.len() - 1].gap_ms;
    m.gap_median_ms = match hit.len() % 2 {
        1 => hit[hit.len() / 2].gap_ms,
        _ => (hit[hit.len() / 2 - 1].gap_ms + hit[hit.len() / 2].gap_ms) / 2.0,
    };
    m.first_at_s = hit.iter().map(|s| s.gap_at_s).fold(f64::INFINITY, f64::min);
    m.last_at_s = hit
        .iter()
        .map(|s| s.gap_at_s)
        .fold(f64::NEG_INFINITY, f64::max);
    m
}

/// What the users lost in `[from_s, to_s)`; `timeout_s` is the transactions' timeout (64·T1).
/// A second belongs to the window holding its middle, so adjacent windows never share one.
pub fn in_window(series: &[Second], from_s: f64, to_s: f64, timeout_s: f64) -> UsersOut {
    let mut u = UsersOut {
        from_s,
        to_s,
        ..UsersOut::default()
    };
    // A series' first second may be shorter; every other is one interval long.
    let len = series
        .windows(2)
        .map(|w| w[1].end_s - w[0].end_s)
        .find(|d| *d > 0.0)
        .unwrap_or(1.0);
    let inside = |t: f64| t >= from_s && t < to_s;
    for s in series {
        let mid = s.end_s - len / 2.0;
        if inside(mid) {
            u.reg_failed += s.reg_failed;
            u.calls_failed += s.calls_failed;
            u.late_requests += s.retransmits;
            if let Some(g) = s.media_gaps {
                *u.media_gaps.get_or_insert(0) += g;
            }
        }
        if inside(mid - timeout_s) {
            u.reg_failed += s.reg_timeouts;
            u.calls_failed += s.calls_timeout;
        }
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wall0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-05T03:39:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    const HEADER: &str = "calls_failed,calls_timeout,media_gaps,phase,reg_failed,reg_timeouts,rereg_failed,retransmits,utc";

    #[test]
    fn columns_are_read_by_name_and_bad_lines_counted() {
        let text = format!(
            "{HEADER}\n\
             1,0,2,calls,3,0,4,5,2026-12-05T03:39:10.5Z\n\
             0,0,0,a,phase,with,commas,0,0,2026-12-05T03:39:11.5Z\n\
             0,0,0,\"a phase, quoted\",0,0,0,1,2026-12-05T03:39:11.9Z\n\
             0,1,0,calls,0,2,0,0,2026-12-05T03:39:12.5Z\n"
        );
        let (s, skipped) = parse_series(&text, wall0()).unwrap();
        assert_eq!(skipped, 1);
        assert_eq!(s.len(), 3);
        assert_eq!(
            s[0],
            Second {
                end_s: 10.5,
                reg_failed: 7,
                reg_timeouts: 0,
                calls_failed: 1,
                calls_timeout: 0,
                retransmits: 5,
                media_gaps: Some(2),
            }
        );
        assert_eq!(s[1].retransmits, 1);
        assert_eq!((s[2].calls_timeout, s[2].reg_timeouts), (1, 2));
    }

    #[test]
    fn a_missing_column_is_named() {
        let e = parse_series("utc,reg_failed\n", wall0())
            .unwrap_err()
            .to_string();
        assert!(e.contains("reg_timeouts"), "{e}");
        assert!(parse_series("", wall0()).is_err());
    }

    #[test]
    fn without_media_columns_media_gaps_is_none() {
        let text =
            "calls_failed,calls_timeout,reg_failed,reg_timeouts,rereg_failed,retransmits,utc\n\
                    0,0,0,0,0,3,2026-12-05T03:39:01Z\n";
        let (s, _) = parse_series(text, wall0()).unwrap();
        assert_eq!(s[0].media_gaps, None);
        assert_eq!(in_window(&s, 0.0, 2.0, 32.0).media_gaps, None);
    }

    fn second(end_s: f64, retransmits: u64, timeouts: u64) -> Second {
        Second {
            end_s,
            retransmits,
            reg_timeouts: timeouts,
            calls_timeout: timeouts,
            media_gaps: Some(1),
            ..Second::default()
        }
    }

    #[test]
    fn each_second_lands_in_one_window_and_timeouts_at_their_send_time() {
        // Seconds ending at 1..=60 s, one retransmission each; timeouts expire at 40 s for
        // requests sent in the second ending at 8 s (32 s earlier).
        let s: Vec<Second> = (1..=60)
            .map(|t| second(t as f64, 1, u64::from(t == 40)))
            .collect();
        let a = in_window(&s, 5.0, 10.0, 32.0);
        let b = in_window(&s, 10.0, 15.0, 32.0);
        // Seconds whose middles are 5.5..9.5 (5 of them) belong to the first window only.
        assert_eq!((a.late_requests, b.late_requests), (5, 5));
        assert_eq!(a.media_gaps, Some(5));
        assert_eq!((a.reg_failed, a.calls_failed), (1, 1), "{a:?}");
        assert_eq!((b.reg_failed, b.calls_failed), (0, 0), "{b:?}");
        // At expiry (39.5 s) it is not counted again.
        let at_expiry = in_window(&s, 35.0, 45.0, 32.0);
        assert_eq!(at_expiry.reg_failed, 0);
        assert_eq!((a.from_s, a.to_s), (5.0, 10.0));
    }

    #[test]
    fn media_log_silences_are_placed_in_the_window_where_they_began() {
        // Four legs up from 1 s: two silenced at 10.2 s (500 and 480 ms), one from 8.99 s
        // (490 ms: it began before the window, its middle is in it), one whose longest gap is
        // an ordinary 22 ms at 10.4 s; a leg that started at 12 s; a bad line.
        let text = "ssrc,leg,started_utc,ended_utc,ptime_ms,sent,longest_gap_ms,longest_gap_at_utc,mos\n\
            0x2,caller,2026-12-05T03:39:01Z,2026-12-05T03:39:20Z,20,950,500.0,2026-12-05T03:39:10.2Z,4.3\n\
            0x3,callee,2026-12-05T03:39:01Z,2026-12-05T03:39:20Z,20,950,480.0,2026-12-05T03:39:10.25Z,4.3\n\
            0x4,caller,2026-12-05T03:39:01Z,2026-12-05T03:39:20Z,20,950,22.0,2026-12-05T03:39:10.4Z,4.4\n\
            0x5,callee,2026-12-05T03:39:01Z,2026-12-05T03:39:20Z,20,950,490.0,2026-12-05T03:39:08.99Z,4.3\n\
            0x6,caller,2026-12-05T03:39:12Z,2026-12-05T03:39:20Z,20,400,21.0,2026-12-05T03:39:13Z,4.4\n\
            0x8,caller,yesterday,2026-12-05T03:39:20Z,20,1,1.0,2026-12-05T03:39:13Z,4.4\n";
        let (streams, skipped) = parse_media_log(text, wall0()).unwrap();
        assert_eq!((streams.len(), skipped), (5, 1));
        assert_eq!(streams[0].gap_at_s, 10.2);
        let m = media_in_window(&streams, 9.0, 14.0);
        assert_eq!((m.streams_up, m.streams_hit), (4, 3), "{m:?}");
        assert_eq!((m.gap_max_ms, m.gap_median_ms), (500.0, 490.0));
        assert_eq!((m.first_at_s, m.last_at_s), (8.99, 10.25));
        // A window before it: legs up, no silence began.
        let before = media_in_window(&streams, 5.0, 9.0);
        assert_eq!(
            (before.streams_up, before.streams_hit, before.gap_max_ms),
            (4, 0, 0.0)
        );
        assert!(parse_media_log("utc,reg_failed\n", wall0())
            .unwrap_err()
            .to_string()
            .contains("longest_gap_at_utc"));
    }
}
