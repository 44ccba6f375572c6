//! Injected failures: the share of requests the echo server fails on purpose (`--fail-percent`, gRPC
//! `fail_percent`), so that tests can exercise retries and outlier detection against a known error rate.

use std::fmt;
use std::str::FromStr;

/// Resolution of a [`FailRate`]: one part in a million (a percentage with four decimals).
const PARTS: u32 = 1_000_000;
/// Parts per million in one percent.
const PARTS_PER_PERCENT: f64 = 10_000.0;

/// The probability that a request is failed on purpose, decided independently per request.
///
/// Stored in parts per million so that 0 % never fails and 100 % always fails, exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FailRate {
    parts_per_million: u32,
}

impl FailRate {
    /// Never fail.
    pub const NEVER: Self = Self { parts_per_million: 0 };
    /// Always fail.
    pub const ALWAYS: Self = Self {
        parts_per_million: PARTS,
    };

    /// The rate of `percent` (0 to 100, decimals allowed); `None` outside that range or for NaN.
    pub fn from_percent(percent: f64) -> Option<Self> {
        (0.0..=100.0).contains(&percent).then(|| Self {
            // In range, so the product is in 0..=PARTS and the cast is exact after rounding.
            parts_per_million: (percent * PARTS_PER_PERCENT).round() as u32,
        })
    }

    /// The rate of a whole percentage, where values above 100 mean 100 (the gRPC `fail_percent` field).
    pub fn from_whole_percent(percent: u32) -> Self {
        Self {
            parts_per_million: percent.min(100) * (PARTS / 100),
        }
    }

    /// The rate as a percentage.
    pub fn percent(self) -> f64 {
        f64::from(self.parts_per_million) / PARTS_PER_PERCENT
    }

    /// Whether this rate ever fails a request.
    pub fn is_never(self) -> bool {
        self.parts_per_million == 0
    }

    /// Decide one request with `rng`: true means fail it.
    pub fn decide(self, rng: &mut fastrand::Rng) -> bool {
        self.fails(rng.u32(0..PARTS))
    }

    /// Decide one request with the thread's random generator.
    pub fn roll(self) -> bool {
        // Skip the generator entirely in the common case of no injected failures.
        !self.is_never() && self.fails(fastrand::u32(0..PARTS))
    }

    /// Whether a uniform draw from `0..PARTS` falls in the failing share.
    fn fails(self, draw: u32) -> bool {
        draw < self.parts_per_million
    }
}

impl fmt::Display for FailRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.percent())
    }
}

impl FromStr for FailRate {
    type Err = String;

    /// Parses a percentage from 0 to 100, decimals allowed (`12.5`).
    fn from_str(s: &str) -> Result<Self, String> {
        s.trim()
            .parse::<f64>()
            .ok()
            .and_then(Self::from_percent)
            .ok_or_else(|| format!("invalid fail percentage {s:?}: expected a number from 0 to 100"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_percentages() {
        let cases: &[(&str, Option<f64>)] = &[
            ("0", Some(0.0)),
            ("100", Some(100.0)),
            ("12.5", Some(12.5)),
            (" 50 ", Some(50.0)),
            ("0.0001", Some(0.0001)),
            ("-1", None),
            ("100.01", None),
            ("NaN", None),
            ("inf", None),
            ("abc", None),
            ("", None),
        ];
        for (input, want) in cases {
            let got = input.parse::<FailRate>();
            match want {
                Some(percent) => assert_eq!(got.map(FailRate::percent), Ok(*percent), "{input:?}"),
                None => {
                    let error = got.expect_err(input);
                    assert!(error.contains("expected a number from 0 to 100"), "{error}");
                    assert!(error.contains(&format!("{input:?}")), "{error}");
                }
            }
        }
    }

    #[test]
    fn whole_percentages_saturate() {
        let cases = [(0, FailRate::NEVER), (100, FailRate::ALWAYS), (250, FailRate::ALWAYS)];
        for (percent, want) in cases {
            assert_eq!(FailRate::from_whole_percent(percent), want, "{percent}");
        }
        assert_eq!(FailRate::from_whole_percent(25).percent(), 25.0);
    }

    /// How many of `n` requests `rate` fails with a fixed seed.
    fn failures(rate: FailRate, n: usize) -> usize {
        let mut rng = fastrand::Rng::with_seed(7);
        (0..n).filter(|_| rate.decide(&mut rng)).count()
    }

    #[test]
    fn zero_and_hundred_are_exact() {
        assert_eq!(failures(FailRate::NEVER, 10_000), 0);
        assert_eq!(failures("0".parse().unwrap(), 10_000), 0);
        assert_eq!(failures(FailRate::ALWAYS, 10_000), 10_000);
        assert_eq!(failures("100".parse().unwrap(), 10_000), 10_000);
        assert!(!FailRate::NEVER.roll());
        assert!(FailRate::ALWAYS.roll());
    }

    #[test]
    fn fractions_fail_about_their_share() {
        // Wide bounds: more than 6 standard deviations for 2000 draws, so only a broken generator fails them.
        let cases: &[(&str, std::ops::RangeInclusive<usize>)] = &[
            ("50", 850..=1150),
            ("10", 120..=280),
            ("0.5", 0..=30),
            ("99.5", 1970..=2000),
        ];
        for (percent, bounds) in cases {
            let n = failures(percent.parse().unwrap(), 2000);
            assert!(bounds.contains(&n), "{percent}%: {n} of 2000 failed");
        }
        // Independent per request: the failures of a 50 % rate are not all at one end.
        let mut rng = fastrand::Rng::with_seed(11);
        let half: FailRate = "50".parse().unwrap();
        let first: usize = (0..1000).filter(|_| half.decide(&mut rng)).count();
        let second: usize = (0..1000).filter(|_| half.decide(&mut rng)).count();
        assert!(
            (400..=600).contains(&first) && (400..=600).contains(&second),
            "{first} {second}"
        );
    }
}
