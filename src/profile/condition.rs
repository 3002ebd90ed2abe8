//! Threshold expressions such as `cpu > 90%` or `mem >= 2048`, checked against monitor samples.

#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    /// The monitor's name.
    pub metric: String,
    pub op: Op,
    pub value: f64,
}

/// Why text is not a threshold expression; each quotes the expression and shows the form.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConditionError {
    #[error("{0:?}: expected <monitor> <op> <number>, e.g. \"cpu > 90%\"")]
    NoOperator(String),
    #[error("{text:?}: {metric:?} is not a monitor name")]
    BadMonitor { text: String, metric: String },
    #[error("{text:?}: {value:?} is not a number")]
    BadNumber { text: String, value: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Gt,
    Ge,
    Lt,
    Le,
}

impl Condition {
    /// Parses `<monitor> <op> <number>[%]`; `%` is decorative (CPU is in % of one core).
    pub fn parse(s: &str) -> Result<Condition, ConditionError> {
        let s = s.trim();
        let (pos, op, len) = [">=", "<=", ">", "<"]
            .iter()
            .filter_map(|o| s.find(o).map(|p| (p, *o)))
            .min_by_key(|(p, o)| (*p, std::cmp::Reverse(o.len())))
            .map(|(p, o)| (p, o, o.len()))
            .ok_or_else(|| ConditionError::NoOperator(s.into()))?;
        let metric = s[..pos].trim();
        let rest = s[pos + len..].trim().trim_end_matches('%').trim();
        if metric.is_empty()
            || !metric
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(ConditionError::BadMonitor {
                text: s.into(),
                metric: metric.into(),
            });
        }
        let value: f64 = rest.parse().map_err(|_| ConditionError::BadNumber {
            text: s.into(),
            value: rest.into(),
        })?;
        let op = match op {
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "<" => Op::Lt,
            _ => Op::Le,
        };
        Ok(Condition {
            metric: metric.to_string(),
            op,
            value,
        })
    }

    pub fn holds(&self, sample: f64) -> bool {
        match self.op {
            Op::Gt => sample > self.value,
            Op::Ge => sample >= self.value,
            Op::Lt => sample < self.value,
            Op::Le => sample <= self.value,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_evaluates() {
        let c = Condition::parse("cpu > 90%").unwrap();
        assert_eq!((c.metric.as_str(), c.op, c.value), ("cpu", Op::Gt, 90.0));
        assert!(c.holds(90.5) && !c.holds(90.0));
        let c = Condition::parse("mem>=2048").unwrap();
        assert_eq!(c.op, Op::Ge);
        assert!(c.holds(2048.0));
        assert!(Condition::parse("cpu >> 9").is_err());
        assert!(Condition::parse("> 9").is_err());
        assert!(Condition::parse("cpu = 9").is_err());
    }
}
