//! Reference generations (ADR 49): which blobs are old enough to be collected.
//!
//! A blob written during generation `g` may still gain references while `g` is current, and a
//! writer whose clock lags may still be in `g` during `g + 1`. So only generations `<= n - 2`
//! of the configured family are eligible; other families (older generation durations) and
//! family 0 (ids from before generations existed) are eligible too.

use crate::blob_id::{BlobId, MalformedId};
use crate::error::{Error, Result};
use chrono::{DateTime, Utc};

/// The James default generation duration.
pub const DEFAULT_DURATION_SECONDS: u64 = 30 * 86_400;
pub const DEFAULT_FAMILY: u32 = 1;

/// What the generation rule says of a listed id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum IdClass {
    /// Current or previous generation of the configured family: never deleted.
    Active = 0,
    /// May be deleted if nothing references it.
    Eligible = 1,
    /// Does not parse: never deleted, and by default aborts the run.
    Malformed = 2,
    /// A generation of the configured family newer than the current one: never deleted, and
    /// counted, since either this run's clock is behind or a writer's is ahead.
    Future = 3,
}

/// The configured family and the generation in force at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenerationRule {
    pub family: u32,
    pub current_generation: u64,
}

impl GenerationRule {
    pub fn new(family: u32, duration_seconds: u64, now: DateTime<Utc>) -> Result<Self> {
        if family == 0 {
            return Err(Error::usage(
                "family must be >= 1 (family 0 is the legacy, ungenerational family)",
            ));
        }
        Ok(GenerationRule {
            family,
            current_generation: current_generation(now, duration_seconds)?,
        })
    }

    pub fn is_active(&self, id: &BlobId<'_>) -> bool {
        id.family == self.family && id.generation.saturating_add(1) >= self.current_generation
    }

    pub fn classify(&self, text: &str) -> IdClass {
        match BlobId::parse(text) {
            Ok(id) if id.family == self.family && id.generation > self.current_generation => {
                IdClass::Future
            }
            Ok(id) if self.is_active(&id) => IdClass::Active,
            Ok(_) => IdClass::Eligible,
            Err(
                MalformedId::Empty
                | MalformedId::Nested
                | MalformedId::Unaddressable
                | MalformedId::BadNumber(_),
            ) => IdClass::Malformed,
        }
    }
}

/// `floor(now_epoch_seconds / duration_seconds)`; a clock before 1970 is refused.
pub fn current_generation(now: DateTime<Utc>, duration_seconds: u64) -> Result<u64> {
    if duration_seconds == 0 {
        return Err(Error::usage("generation duration must be > 0"));
    }
    let secs = u64::try_from(now.timestamp())
        .map_err(|_| Error::usage(format!("now ({now}) is before 1970-01-01")))?;
    Ok(secs / duration_seconds)
}

/// Parses a duration as James's `DurationParser` does: `30d`, `12h`, `15day`, `90s`,
/// `2 weeks`; a bare number is days. Returns seconds.
pub fn parse_duration(text: &str) -> Result<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let bad = || {
        Error::usage(format!(
            "invalid duration {text:?}: expected a number and a unit, e.g. 30d, 12h, 15day"
        ))
    };
    let n: u64 = number.parse().map_err(|_| bad())?;
    let unit_seconds = match unit.trim().to_ascii_lowercase().as_str() {
        "s" | "sec" | "second" | "seconds" => 1,
        "m" | "min" | "minute" | "minutes" => 60,
        "h" | "hour" | "hours" => 3_600,
        "" | "d" | "day" | "days" => 86_400,
        "w" | "week" | "weeks" => 7 * 86_400,
        "month" | "months" => 30 * 86_400,
        "y" | "year" | "years" => 365 * 86_400,
        _ => return Err(bad()),
    };
    let seconds = n.checked_mul(unit_seconds).ok_or_else(bad)?;
    if seconds == 0 {
        return Err(Error::usage(format!(
            "invalid duration {text:?}: must be > 0"
        )));
    }
    Ok(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn generations_after_the_current_one_are_future_and_kept() {
        let rule = GenerationRule {
            family: 1,
            current_generation: 10,
        };
        for (id, class) in [
            ("1_11_x", IdClass::Future),
            ("1_10_x", IdClass::Active),
            ("1_9_x", IdClass::Active),
            ("1_8_x", IdClass::Eligible),
            ("2_11_x", IdClass::Eligible),
        ] {
            assert_eq!(rule.classify(id), class, "{id}");
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn rule(now: DateTime<Utc>) -> GenerationRule {
        GenerationRule::new(1, DEFAULT_DURATION_SECONDS, now).unwrap()
    }

    #[test]
    fn james_example_1_628_x() {
        let t = at("2021-08-19T10:15:30Z");
        assert_eq!(
            current_generation(t, DEFAULT_DURATION_SECONDS).unwrap(),
            628
        );
        let id = BlobId::parse("1_628_x").unwrap();
        assert!(rule(t).is_active(&id));
        assert!(
            rule(t - Duration::days(60)).is_active(&id),
            "future generations are active"
        );
        assert!(
            rule(t + Duration::days(30)).is_active(&id),
            "previous generation is active"
        );
        assert!(
            !rule(t + Duration::days(60)).is_active(&id),
            "n-2 is eligible"
        );
    }

    #[test]
    fn other_family_and_family_zero_are_eligible() {
        let r = rule(at("2021-08-19T10:15:30Z"));
        assert_eq!(r.classify("2_628_x"), IdClass::Eligible);
        assert_eq!(r.classify("2_9999_x"), IdClass::Eligible);
        assert_eq!(r.classify("abc"), IdClass::Eligible);
        assert_eq!(r.classify("0_628_x"), IdClass::Eligible);
        assert_eq!(r.classify("1_628_x"), IdClass::Active);
        assert_eq!(r.classify("1_627_x"), IdClass::Active);
        assert_eq!(r.classify("1_626_x"), IdClass::Eligible);
        assert_eq!(r.classify("1__x"), IdClass::Malformed);
    }

    #[test]
    fn family_zero_and_duration_zero_are_refused() {
        assert!(GenerationRule::new(0, 10, at("2021-08-19T10:15:30Z")).is_err());
        assert!(current_generation(at("2021-08-19T10:15:30Z"), 0).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d").unwrap(), 30 * 86_400);
        assert_eq!(parse_duration("12h").unwrap(), 12 * 3_600);
        assert_eq!(parse_duration("15day").unwrap(), 15 * 86_400);
        assert_eq!(parse_duration("15 days").unwrap(), 15 * 86_400);
        assert_eq!(parse_duration("7").unwrap(), 7 * 86_400);
        assert_eq!(parse_duration("1w").unwrap(), 7 * 86_400);
        for bad in ["", "0", "0d", "d", "-1d", "3 fortnights", "1.5d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
