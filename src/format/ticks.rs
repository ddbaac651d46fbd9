//! [`TickConverter`]: raw tick counts of a process to nanoseconds since the Unix epoch.
//!
//! Event `time` fields are absolute tick counts; block `begin_ticks`/`end_ticks` are relative to
//! the process's `start_ticks`. One converter per process and query, so that all blocks agree:
//! `ns = start_ns + round((ticks - start_ticks) * 1e9 / frequency)`.
//!
//! When the process reported no tick frequency (`tsc_frequency = 0`, common on virtual machines),
//! the frequency is estimated from the process's latest block over all its streams:
//! `round(max(end_ticks) / seconds(max(end_time) - start_time))`.

use super::error::{FormatError, FormatResult};

/// Converts a process's tick counts to nanoseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TickConverter {
    start_ticks: i64,
    start_ns: i64,
    frequency: i64,
    ns_per_tick: f64,
}

/// The latest block of a process: `max(end_ticks)` (relative to `start_ticks`) and
/// `max(end_time)` (ns since the epoch), over every stream of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatestTiming {
    /// Largest `blocks.end_ticks` of the process.
    pub end_ticks: i64,
    /// Largest `blocks.end_time` of the process, in ns since the epoch.
    pub end_time_ns: i64,
}

impl TickConverter {
    /// Builds the converter of a process.
    ///
    /// `start_ns` is `processes.start_time` in ns since the epoch; `latest` is only needed when
    /// `tsc_frequency` is 0 or negative.
    pub fn new(
        start_ticks: i64,
        start_ns: i64,
        tsc_frequency: i64,
        latest: Option<LatestTiming>,
    ) -> FormatResult<Self> {
        let frequency = if tsc_frequency > 0 {
            tsc_frequency
        } else {
            let latest = latest.ok_or_else(|| {
                FormatError::InvalidFrequency(
                    "tsc_frequency is 0 and the process has no block to estimate it from".into(),
                )
            })?;
            let secs = latest.end_time_ns.saturating_sub(start_ns) as f64 / 1e9;
            let estimate = (latest.end_ticks as f64 / secs).round();
            if !estimate.is_finite() || estimate <= 0.0 || estimate > i64::MAX as f64 {
                return Err(FormatError::InvalidFrequency(format!(
                    "tsc_frequency is 0 and the estimate from the latest block \
                     ({} ticks in {secs} s) is {estimate}",
                    latest.end_ticks
                )));
            }
            estimate as i64
        };
        Ok(Self {
            start_ticks,
            start_ns,
            frequency,
            ns_per_tick: 1e9 / frequency as f64,
        })
    }

    /// Ticks per second, as given or estimated.
    pub fn frequency(&self) -> i64 {
        self.frequency
    }

    /// The process's `start_ticks`, the origin of block tick bounds.
    pub fn start_ticks(&self) -> i64 {
        self.start_ticks
    }

    /// The process's `start_time`, in ns since the epoch.
    pub fn start_ns(&self) -> i64 {
        self.start_ns
    }

    /// Converts an absolute tick count (an event's `time`).
    #[inline]
    pub fn ticks_to_ns(&self, ticks: i64) -> i64 {
        self.delta_to_ns(ticks.wrapping_sub(self.start_ticks))
    }

    /// Converts a tick count relative to the process start (a block's `begin_ticks`/`end_ticks`).
    #[inline]
    pub fn delta_to_ns(&self, delta_ticks: i64) -> i64 {
        // `as` saturates on overflow: garbage ticks give a clamped time, never a panic.
        self.start_ns
            .saturating_add(round_to_i64(delta_ticks as f64 * self.ns_per_tick))
    }

    /// The relative tick count nearest to a time, for pruning (not exact: rounding).
    pub fn ns_to_delta(&self, ns: i64) -> i64 {
        (ns.saturating_sub(self.start_ns) as f64 / self.ns_per_tick).round() as i64
    }
}

/// `x.round() as i64` (half away from zero, saturating) without the libm call, which is not
/// inlined on baseline x86_64: the integer part and the fraction of `x` are exact in f64 for
/// |x| < 2^52, and beyond that `x` has no fraction.
#[inline(always)]
fn round_to_i64(x: f64) -> i64 {
    let t = x as i64;
    let fraction = x - t as f64;
    if fraction >= 0.5 {
        t.saturating_add(1)
    } else if fraction <= -0.5 {
        t.saturating_sub(1)
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_matches_f64_round() {
        let mut values = vec![
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -1.5,
            2.5,
            -2.5,
            0.49999999999999994,
            -0.49999999999999994,
            4503599627370495.5,
            -4503599627370495.5,
            9007199254740993.0,
            1e300,
            -1e300,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            9.3e18,
            -9.3e18,
        ];
        let mut x = 0x1234_5678_9abc_def0u64;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values.push((x as i64) as f64 / ((x >> 40) as f64 + 1.0));
            values.push(((x >> 11) as f64) * 0.25 - 1e15);
        }
        for v in values {
            assert_eq!(round_to_i64(v), v.round() as i64, "{v}");
        }
    }

    #[test]
    fn given_frequency() {
        let c = TickConverter::new(1_000, 5_000_000_000, 2_000_000_000, None).unwrap();
        assert_eq!(c.ticks_to_ns(1_000), 5_000_000_000);
        assert_eq!(c.ticks_to_ns(3_000), 5_000_001_000);
        assert_eq!(
            c.ticks_to_ns(1_001),
            5_000_000_001,
            "0.5 ns rounds away from zero"
        );
        assert_eq!(
            c.ticks_to_ns(999),
            4_999_999_999,
            "-0.5 ns rounds away from zero"
        );
        assert_eq!(c.delta_to_ns(2_000), 5_000_001_000);
        assert_eq!(c.ns_to_delta(5_000_001_000), 2_000);
    }

    #[test]
    fn estimated_frequency_matches_the_documented_example() {
        // tsc_frequency = 0, max(end_ticks) = 26 711 438, end_time - start_time = 0.010289 s.
        let start = 1_700_000_000_000_000_000;
        let latest = LatestTiming {
            end_ticks: 26_711_438,
            end_time_ns: start + 10_289_000,
        };
        let c = TickConverter::new(77, start, 0, Some(latest)).unwrap();
        assert_eq!(c.frequency(), (26_711_438f64 / 0.010289).round() as i64);
        assert_eq!(c.delta_to_ns(26_711_438), start + 10_289_000);
    }

    #[test]
    fn unusable_clocks_are_errors() {
        assert!(TickConverter::new(0, 0, 0, None).is_err());
        let zero_span = LatestTiming {
            end_ticks: 10,
            end_time_ns: 0,
        };
        assert!(TickConverter::new(0, 0, 0, Some(zero_span)).is_err());
        let backwards = LatestTiming {
            end_ticks: 10,
            end_time_ns: -5,
        };
        assert!(TickConverter::new(0, 0, -1, Some(backwards)).is_err());
    }

    #[test]
    fn garbage_ticks_do_not_panic() {
        let c = TickConverter::new(i64::MIN, i64::MAX, 1, None).unwrap();
        let _ = c.ticks_to_ns(i64::MAX);
        let _ = c.delta_to_ns(i64::MIN);
        let _ = c.ns_to_delta(i64::MIN);
    }
}
