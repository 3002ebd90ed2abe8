//! Scales (data value → pixel) and their ticks: linear with round steps, and base-10 log with a
//! tick per decade.

/// A round step (1, 2 or 5 × 10ⁿ) that cuts `span` into about `target_ticks` parts.
pub fn nice_step(span: f64, target_ticks: f64) -> f64 {
    let raw = span / target_ticks;
    let mag = 10f64.powf(raw.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * mag >= raw {
            return m * mag;
        }
    }
    10.0 * mag
}

/// A tick value written with as many decimals as `step` needs (at most three).
pub fn tick_label(t: f64, step: f64) -> String {
    if step >= 1.0 {
        format!("{t:.0}")
    } else {
        trim(format!("{t:.3}"))
    }
}

/// A value written short: whole numbers and large ones without decimals, else at most two.
pub fn num(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        trim(format!("{v:.2}"))
    }
}

fn trim(s: String) -> String {
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Maps data values onto `[0, 1]` along an axis (0 at the left or bottom).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scale {
    Linear {
        lo: f64,
        hi: f64,
    },
    /// Base 10, from decade `lo` (10^lo) to decade `hi`; values at or below zero sit at the
    /// bottom.
    Log {
        lo: i32,
        hi: i32,
    },
}

impl Scale {
    /// Linear from `lo` to `hi`; an empty or reversed range widens to one that can be drawn.
    pub fn linear(lo: f64, hi: f64) -> Scale {
        if lo > hi {
            Scale::Linear { lo: 0.0, hi: 1.0 }
        } else if hi - lo < 1e-9 {
            Scale::Linear {
                lo: lo - 1.0,
                hi: hi + 1.0,
            }
        } else {
            Scale::Linear { lo, hi }
        }
    }

    /// Linear from 0 to `max` (1 when nothing is above 0) rounded up to whole steps of about
    /// `target_ticks`.
    pub fn from_zero(max: f64, target_ticks: f64) -> Scale {
        let top = if max > 0.0 { max } else { 1.0 };
        let step = nice_step(top, target_ticks);
        Scale::Linear {
            lo: 0.0,
            hi: (top / step).ceil().max(1.0) * step,
        }
    }

    /// Log over whole decades covering the positive values of `values` (at least one decade;
    /// 0.1 to 10 with none).
    pub fn log_covering(values: impl IntoIterator<Item = f64>) -> Scale {
        let (lo, hi) = values
            .into_iter()
            .filter(|v| *v > 0.0)
            .fold((f64::INFINITY, 0.0f64), |(a, b), v| (a.min(v), b.max(v)));
        if lo > hi {
            return Scale::Log { lo: -1, hi: 1 };
        }
        let dlo = lo.log10().floor();
        let dhi = hi.log10().ceil().max(dlo + 1.0);
        Scale::Log {
            lo: dlo as i32,
            hi: dhi as i32,
        }
    }

    pub fn lo(&self) -> f64 {
        match *self {
            Scale::Linear { lo, .. } => lo,
            Scale::Log { lo, .. } => 10f64.powi(lo),
        }
    }
    pub fn hi(&self) -> f64 {
        match *self {
            Scale::Linear { hi, .. } => hi,
            Scale::Log { hi, .. } => 10f64.powi(hi),
        }
    }

    /// Where `v` falls, 0 at `lo` and 1 at `hi`; unclamped on a linear scale (a trend line may
    /// run out of the frame and be clipped), clamped on a log scale.
    pub fn frac(&self, v: f64) -> f64 {
        match *self {
            Scale::Linear { lo, hi } => (v - lo) / (hi - lo),
            Scale::Log { lo, hi } => {
                let (lo, hi) = (lo as f64, hi as f64);
                ((v.max(1e-300).log10() - lo) / (hi - lo)).clamp(0.0, 1.0)
            }
        }
    }

    /// A round step for about `target` ticks (linear), or one decade (log).
    pub fn step(&self, target: f64) -> f64 {
        match *self {
            Scale::Linear { lo, hi } => nice_step(hi - lo, target),
            Scale::Log { .. } => 10.0,
        }
    }

    /// Tick values: multiples of [`Scale::step`] within the range (linear), or each decade
    /// (log).
    pub fn ticks(&self, target: f64) -> Vec<f64> {
        match *self {
            Scale::Linear { lo, hi } => {
                let step = nice_step(hi - lo, target);
                let first = (lo / step - 1e-9).ceil();
                (0..)
                    .map(|i| (first + i as f64) * step)
                    .take_while(|t| *t <= hi + step * 1e-6)
                    .collect()
            }
            Scale::Log { lo, hi } => (lo..=hi).map(|d| 10f64.powi(d)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_steps_are_1_2_5() {
        assert_eq!(nice_step(60.0, 12.0), 5.0);
        assert_eq!(nice_step(119.0, 10.0), 20.0);
        assert_eq!(nice_step(0.9, 6.0), 0.2);
        assert_eq!(nice_step(1e6, 4.0), 5e5);
    }

    #[test]
    fn linear_ticks_cover_the_range_in_round_steps() {
        let s = Scale::linear(0.0, 60.0);
        let t = s.ticks(12.0);
        assert_eq!(tick_label(t[0], 5.0), "0", "not -0");
        assert_eq!(t.last(), Some(&60.0));
        assert_eq!(t.len(), 13);
        // Not starting at a multiple: the first tick is the next one.
        let t = Scale::linear(40.0, 200.0).ticks(10.0);
        assert_eq!(
            t,
            vec![40.0, 60.0, 80.0, 100.0, 120.0, 140.0, 160.0, 180.0, 200.0]
        );
        // Fractional steps do not drift.
        let t = Scale::linear(0.0, 1.0).ticks(10.0);
        assert_eq!(t.len(), 11);
        assert_eq!(
            t.iter().map(|v| tick_label(*v, 0.1)).collect::<Vec<_>>()[3],
            "0.3"
        );
    }

    #[test]
    fn from_zero_rounds_the_top_up_to_a_step() {
        assert_eq!(
            Scale::from_zero(37.0, 4.0),
            Scale::Linear { lo: 0.0, hi: 40.0 }
        );
        assert_eq!(
            Scale::from_zero(0.0, 4.0),
            Scale::Linear { lo: 0.0, hi: 1.0 }
        );
        assert_eq!(
            Scale::from_zero(896.0, 6.0),
            // 896 / 6 ≈ 149: steps of 200.
            Scale::Linear {
                lo: 0.0,
                hi: 1000.0
            }
        );
    }

    #[test]
    fn log_ticks_are_decades_covering_the_values() {
        let s = Scale::log_covering([0.12, 3.0, 300.0]);
        assert_eq!(s, Scale::Log { lo: -1, hi: 3 });
        assert_eq!(s.ticks(0.0), vec![0.1, 1.0, 10.0, 100.0, 1000.0]);
        assert!((s.frac(1.0) - 0.25).abs() < 1e-12);
        assert_eq!(s.frac(0.0), 0.0, "zero sits at the bottom");
        assert_eq!(s.frac(1e9), 1.0);
        // One value: one decade at least.
        assert_eq!(Scale::log_covering([1.0]), Scale::Log { lo: 0, hi: 1 });
        assert_eq!(Scale::log_covering([]), Scale::Log { lo: -1, hi: 1 });
    }

    #[test]
    fn labels_are_short() {
        assert_eq!(tick_label(2.5, 0.5), "2.5");
        assert_eq!(tick_label(20.0, 5.0), "20");
        assert_eq!(num(0.25), "0.25");
        assert_eq!(num(150.4), "150");
        assert_eq!(num(3.0), "3");
    }
}
