//! Exponential backoff for failed reconciles: retry soon after a blip, rarely while the
//! cluster keeps refusing, and at once again after a success.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            base,
            max,
            failures: 0,
        }
    }

    /// The delay before the next retry after one more failure: base, 2×base, 4×base, …
    /// up to max.
    pub fn fail(&mut self) -> Duration {
        let factor = 2u32.saturating_pow(self.failures.min(20));
        self.failures = self.failures.saturating_add(1);
        self.base.saturating_mul(factor).min(self.max)
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
        let delays: Vec<u64> = (0..6).map(|_| b.fail().as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
        b.reset();
        assert_eq!(b.fail(), Duration::from_secs(1));
    }
}
