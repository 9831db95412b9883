//! Which stored series to read now. `OnStoredInstance` fires once per instance; a series is read
//! once it has been quiet for [`Debounce::quiet`] (so the instances of a series stored together
//! make one read and one notify entry, not one per instance). Series stored together are read
//! together (one scan, one notify call), waiting until all of them are quiet, but none waits
//! more than [`Debounce::hold`] for the others: past that, each is read once it is quiet itself.
//! Pure: time is passed in, so the rules are tested without a clock.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long after the last stored instance of a series it is read.
pub const QUIET: Duration = Duration::from_millis(250);
/// The longest a quiet series waits for others still receiving instances.
pub const HOLD: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Pending {
    first: Instant,
    last: Instant,
    order: u64,
}

#[derive(Debug)]
pub struct Debounce {
    quiet: Duration,
    hold: Duration,
    pending: HashMap<String, Pending>,
    noted: u64,
}

impl Default for Debounce {
    fn default() -> Self {
        Debounce::new(QUIET, HOLD)
    }
}

impl Debounce {
    pub fn new(quiet: Duration, hold: Duration) -> Debounce {
        Debounce {
            quiet,
            hold,
            pending: HashMap::new(),
            noted: 0,
        }
    }

    /// An instance of series `key` was stored at `now`.
    pub fn note(&mut self, key: &str, now: Instant) {
        self.noted += 1;
        match self.pending.get_mut(key) {
            Some(p) => p.last = p.last.max(now),
            None => {
                self.pending.insert(
                    key.to_string(),
                    Pending {
                        first: now,
                        last: now,
                        order: self.noted,
                    },
                );
            }
        }
    }

    /// When [`Debounce::take_due`] will next return something (`None`: nothing is pending).
    pub fn next_due(&self) -> Option<Instant> {
        let all_quiet = self.pending.values().map(|p| p.last).max()? + self.quiet;
        let held_out = self.pending.values().map(|p| p.first).min()? + self.hold;
        let first_quiet = self.pending.values().map(|p| p.last).min()? + self.quiet;
        Some(all_quiet.min(held_out.max(first_quiet)))
    }

    /// The series to read at `now`, in the order they were first stored: all of them once all
    /// are quiet; past the hold, those quiet themselves.
    pub fn take_due(&mut self, now: Instant) -> Vec<String> {
        let Some(due) = self.next_due() else {
            return Vec::new();
        };
        if now < due {
            return Vec::new();
        }
        let quiet = self.quiet;
        let all = self.pending.values().all(|p| p.last + quiet <= now);
        let mut taken: Vec<(u64, String)> = self
            .pending
            .iter()
            .filter(|(_, p)| all || p.last + quiet <= now)
            .map(|(k, p)| (p.order, k.clone()))
            .collect();
        taken.sort();
        for (_, k) in &taken {
            self.pending.remove(k);
        }
        taken.into_iter().map(|(_, k)| k).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_series_is_read_once_quiet_and_its_instances_make_one_read() {
        let t = Instant::now();
        let mut d = Debounce::new(ms(250), ms(1000));
        assert_eq!(d.next_due(), None);
        d.note("a", t);
        d.note("a", t + ms(30)); // a second instance, back to back
        assert_eq!(d.next_due(), Some(t + ms(280)));
        assert!(d.take_due(t + ms(279)).is_empty());
        assert_eq!(d.take_due(t + ms(280)), vec!["a"]);
        assert!(d.pending.is_empty() && d.next_due().is_none());
        // a later instance is a new read (the ledger makes it an update)
        d.note("a", t + ms(5000));
        assert_eq!(d.take_due(t + ms(5250)), vec!["a"]);
    }

    #[test]
    fn series_stored_together_are_read_together() {
        let t = Instant::now();
        let mut d = Debounce::new(ms(250), ms(1000));
        for (i, k) in ["a", "b", "c"].iter().enumerate() {
            d.note(k, t + ms(20 * i as u64));
        }
        assert_eq!(d.next_due(), Some(t + ms(290)));
        assert!(d.take_due(t + ms(289)).is_empty()); // "a" is quiet, but waits for the others
        assert_eq!(d.take_due(t + ms(290)), vec!["a", "b", "c"]);
    }

    #[test]
    fn a_series_that_keeps_growing_holds_back_the_others_for_the_hold_only() {
        let t = Instant::now();
        let mut d = Debounce::new(ms(250), ms(1000));
        d.note("quiet", t);
        for i in 0..30 {
            d.note("busy", t + ms(100 * i)); // an instance every 100 ms for 3 s
        }
        // quiet since 250 ms, held until 1 s for the busy one, then read alone
        assert_eq!(d.next_due(), Some(t + ms(1000)));
        assert_eq!(d.take_due(t + ms(1000)), vec!["quiet"]);
        assert_eq!(d.next_due(), Some(t + ms(2900 + 250)));
        assert!(d.take_due(t + ms(3000)).is_empty());
        assert_eq!(d.take_due(t + ms(3150)), vec!["busy"]);
    }

    #[test]
    fn after_the_hold_each_series_goes_when_quiet_without_spinning() {
        let t = Instant::now();
        let mut d = Debounce::new(ms(250), ms(1000));
        d.note("a", t);
        d.note("b", t + ms(900));
        d.note("b", t + ms(1100));
        // "a" went at the hold; "b" (first seen before it) then waits only for itself
        assert_eq!(d.take_due(t + ms(1000)), vec!["a"]);
        let next = d.next_due().unwrap();
        assert_eq!(next, t + ms(1350));
        assert!(d.take_due(t + ms(1349)).is_empty());
        assert_eq!(d.take_due(next), vec!["b"]);
    }
}
