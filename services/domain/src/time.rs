//! Conversions between `chrono` instants (the domain's time) and protobuf timestamps
//! (the events' time), plus the calendar-day format used in messages.

use chrono::{DateTime, TimeDelta, Utc};
use prost_types::Timestamp;

/// A domain instant as a protobuf timestamp.
pub fn to_timestamp(at: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// A protobuf timestamp as a domain instant; `None` when it is outside chrono's range
/// or its nanos are not in `0..1_000_000_000`.
pub fn from_timestamp(ts: &Timestamp) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(ts.nanos).ok()?;
    DateTime::from_timestamp(ts.seconds, nanos)
}

/// An optional protobuf timestamp (as found in events) as a domain instant. A missing or
/// out-of-range timestamp reads as the Unix epoch, so that folding never fails.
pub(crate) fn from_event_timestamp(ts: Option<&Timestamp>) -> DateTime<Utc> {
    ts.and_then(from_timestamp).unwrap_or(DateTime::UNIX_EPOCH)
}

/// `n` whole days.
pub(crate) fn days(n: u32) -> TimeDelta {
    TimeDelta::days(i64::from(n))
}

/// `at` minus `n` days, saturating at the earliest representable instant (never panics).
pub(crate) fn days_before(at: DateTime<Utc>, n: u32) -> DateTime<Utc> {
    at.checked_sub_signed(days(n))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The calendar day (UTC) of an instant, e.g. `2027-10-02`, as used in messages.
pub fn day(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d").to_string()
}

/// An instant in RFC 3339 form with second precision, e.g. `2027-10-02T12:00:00Z`.
pub fn instant(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        let at = DateTime::from_timestamp(1_800_000_000, 123_456_789).unwrap();
        assert_eq!(from_timestamp(&to_timestamp(at)), Some(at));
        assert_eq!(
            from_timestamp(&Timestamp {
                seconds: 0,
                nanos: -1
            }),
            None
        );
        assert_eq!(from_event_timestamp(None), DateTime::UNIX_EPOCH);
        assert_eq!(day(at), "2027-01-15");
        assert_eq!(instant(at), "2027-01-15T08:00:00Z");
    }
}
