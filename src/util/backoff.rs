//! The one retry policy: capped exponential backoff with equal jitter. The API client, the PACS
//! client and a source's health all wait by it, each with its own base and cap.

use std::time::Duration;

use rand::Rng;

/// Waits `base`, `2·base`, `4·base`… up to `max`, half of each wait fixed and half random, so
/// that clients that failed together do not retry together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    pub const fn new(base: Duration, max: Duration) -> Backoff {
        Backoff { base, max }
    }

    /// The wait before retry number `attempt` (1 for the first retry).
    pub fn wait(&self, attempt: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max);
        let half = exp / 2;
        let jitter = rand::rng().random_range(0..=half.as_millis() as u64);
        half + Duration::from_millis(jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_to_the_cap_with_half_of_each_random() {
        let b = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
        for attempt in 1..20 {
            let exp = (200u64 << (attempt - 1).min(16)).min(2000);
            for _ in 0..50 {
                let w = b.wait(attempt).as_millis() as u64;
                assert!(w >= exp / 2 && w <= exp, "attempt {attempt}: {w} ms, {exp}");
            }
        }
    }
}
