//! The simulator's clock: real time plus an offset that tests set through `/__clock` (or
//! `--clock-offset-ms`), so a client running on a simulated clock sees SID, payment and
//! ledger times that agree with its own.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, TimeDelta, Utc};

/// The largest offset accepted, either way (about 1,000 years): far beyond any simulated
/// calendar, and small enough that `real now + offset` can never leave chrono's range.
pub const MAX_OFFSET_MS: i64 = 1_000 * 366 * 24 * 3600 * 1000;

/// Real time shifted by an adjustable offset; it keeps running at real speed.
#[derive(Debug, Default)]
pub struct Clock {
    // An atomic rather than a mutex: every request reads it, only tests write it.
    offset_ms: AtomicI64,
}

impl Clock {
    pub fn new(offset_ms: i64) -> Result<Self, String> {
        check(offset_ms)?;
        Ok(Self {
            offset_ms: AtomicI64::new(offset_ms),
        })
    }

    /// The simulator's "now".
    pub fn now(&self) -> DateTime<Utc> {
        shifted(Utc::now(), self.offset_ms())
    }

    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }

    pub fn set_offset_ms(&self, offset_ms: i64) -> Result<(), String> {
        check(offset_ms)?;
        self.offset_ms.store(offset_ms, Ordering::Relaxed);
        Ok(())
    }

    /// Sets the offset so that "now" is `now` at this instant; returns the offset.
    pub fn set_now(&self, now: DateTime<Utc>) -> Result<i64, String> {
        let delta = now.signed_duration_since(Utc::now());
        // Rounded up, never down: a client that sets midnight and at once charges must see
        // the charge at midnight, not at 23:59:59.999 of the day before.
        let mut offset_ms = delta.num_milliseconds();
        if TimeDelta::try_milliseconds(offset_ms).is_some_and(|d| d < delta) {
            offset_ms = offset_ms.saturating_add(1);
        }
        self.set_offset_ms(offset_ms)?;
        Ok(offset_ms)
    }
}

fn check(offset_ms: i64) -> Result<(), String> {
    if offset_ms.checked_abs().is_some_and(|a| a <= MAX_OFFSET_MS) {
        Ok(())
    } else {
        Err(format!(
            "the clock offset must be within ±{MAX_OFFSET_MS} ms (got {offset_ms})"
        ))
    }
}

fn shifted(t: DateTime<Utc>, offset_ms: i64) -> DateTime<Utc> {
    // `check` keeps offsets far inside chrono's range; the fallback only guards the type.
    TimeDelta::try_milliseconds(offset_ms)
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_shift_and_are_bounded() {
        let c = Clock::new(0).unwrap();
        let real = Utc::now();
        assert!((c.now() - real).num_milliseconds().abs() < 1_000);

        c.set_offset_ms(-86_400_000).unwrap();
        let d = (real - c.now()).num_milliseconds();
        assert!((86_399_000..86_401_000).contains(&d), "{d}");

        let target = DateTime::parse_from_rfc3339("2031-02-03T04:05:06Z")
            .unwrap()
            .with_timezone(&Utc);
        let off = c.set_now(target).unwrap();
        assert_eq!(c.offset_ms(), off);
        let now = c.now();
        assert!(
            now >= target && now - target < TimeDelta::seconds(1),
            "{now}"
        );
        for _ in 0..100 {
            c.set_now(target).unwrap();
            assert!(c.now() >= target, "set_now never lands before the instant");
        }

        // Each set_now above computed its own offset from the moving real clock (they may
        // differ by a millisecond): compare against the one in force now.
        let off = c.offset_ms();
        assert!(c.set_offset_ms(MAX_OFFSET_MS + 1).is_err());
        assert!(c.set_offset_ms(i64::MIN).is_err());
        assert_eq!(c.offset_ms(), off, "a rejected offset changes nothing");
        assert!(Clock::new(-MAX_OFFSET_MS).is_ok());
        assert!(c.set_now(DateTime::<Utc>::MAX_UTC).is_err());
    }
}
