//! Pure policies passed in commands: the renewal window and the expiry thresholds.

use chrono::{DateTime, TimeDelta, Utc};

use crate::error::DomainError;
use crate::time::{day, days_before};

/// Days before expiry at which the renewal window opens by default.
pub const DEFAULT_RENEWAL_DAYS: u32 = 30;

/// Days before expiry at which `ExpiryApproaching` is announced by default.
pub const DEFAULT_EXPIRY_THRESHOLDS: [u32; 4] = [30, 14, 7, 1];

/// The longest expiry threshold accepted, in days.
pub const MAX_EXPIRY_THRESHOLD_DAYS: u32 = 400;

/// When a certificate may be renewed: from the window's opening until it expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewalWindow {
    /// From this many days before not-after.
    DaysBeforeExpiry(u32),
    /// Once `numerator/denominator` of the lifetime (not-before to not-after) has
    /// passed, e.g. 2/3.
    ShareOfLifetime {
        /// Share numerator.
        numerator: u32,
        /// Share denominator.
        denominator: u32,
    },
}

impl Default for RenewalWindow {
    fn default() -> Self {
        RenewalWindow::DaysBeforeExpiry(DEFAULT_RENEWAL_DAYS)
    }
}

impl RenewalWindow {
    /// Checks the policy: at least one day before expiry, or a share strictly between 0
    /// and 1. `field` names it in the error.
    pub fn validate(&self, field: &str) -> Result<(), DomainError> {
        match *self {
            RenewalWindow::DaysBeforeExpiry(0) => Err(DomainError::invalid(
                field,
                "the renewal window must open at least 1 day before expiry",
            )),
            RenewalWindow::DaysBeforeExpiry(_) => Ok(()),
            RenewalWindow::ShareOfLifetime {
                numerator,
                denominator,
            } => {
                if numerator == 0 || numerator >= denominator {
                    Err(DomainError::invalid(
                        field,
                        format!(
                            "a share of the lifetime must be between 0 and 1 (exclusive), got {numerator}/{denominator}"
                        ),
                    ))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// When the window opens for a certificate valid from `not_before` to `not_after`
    /// (never before `not_before`).
    pub fn opens_at(&self, not_before: DateTime<Utc>, not_after: DateTime<Utc>) -> DateTime<Utc> {
        let opens = match *self {
            RenewalWindow::DaysBeforeExpiry(n) => days_before(not_after, n),
            RenewalWindow::ShareOfLifetime {
                numerator,
                denominator,
            } => {
                let lifetime_ms = (not_after - not_before).num_milliseconds();
                let share_ms = if denominator == 0 {
                    lifetime_ms
                } else {
                    let ms =
                        i128::from(lifetime_ms) * i128::from(numerator) / i128::from(denominator);
                    i64::try_from(ms).unwrap_or(lifetime_ms)
                };
                TimeDelta::try_milliseconds(share_ms)
                    .and_then(|share| not_before.checked_add_signed(share))
                    .unwrap_or(not_after)
            }
        };
        opens.max(not_before)
    }

    /// A description for messages, e.g. "30 days before expiry".
    pub fn describe(&self) -> String {
        match *self {
            RenewalWindow::DaysBeforeExpiry(1) => "1 day before expiry".to_owned(),
            RenewalWindow::DaysBeforeExpiry(n) => format!("{n} days before expiry"),
            RenewalWindow::ShareOfLifetime {
                numerator,
                denominator,
            } => format!("once {numerator}/{denominator} of the lifetime has passed"),
        }
    }

    /// The message for a renewal asked for before the window opens.
    pub(crate) fn too_early(&self, opens: DateTime<Utc>, not_after: DateTime<Utc>) -> String {
        format!(
            "renewal window opens on {} ({}; the certificate expires on {}); renew then, or turn on auto-renew",
            day(opens),
            self.describe(),
            day(not_after)
        )
    }
}

/// Checks expiry thresholds: each between 1 and [`MAX_EXPIRY_THRESHOLD_DAYS`] days.
pub fn validate_thresholds(field: &str, thresholds: &[u32]) -> Result<(), DomainError> {
    for (i, t) in thresholds.iter().enumerate() {
        if *t == 0 || *t > MAX_EXPIRY_THRESHOLD_DAYS {
            return Err(DomainError::invalid(
                format!("{field}[{i}]"),
                format!(
                    "an expiry threshold must be between 1 and {MAX_EXPIRY_THRESHOLD_DAYS} days, got {t}"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn days_before_expiry() {
        let w = RenewalWindow::default();
        let nb = at("2026-11-01T00:00:00Z");
        let na = at("2027-11-01T00:00:00Z");
        assert_eq!(w.opens_at(nb, na), at("2027-10-02T00:00:00Z"));
        assert!(
            w.too_early(w.opens_at(nb, na), na)
                .starts_with("renewal window opens on 2027-10-02 (30 days before expiry")
        );
        // Longer than the lifetime: open from the start.
        assert_eq!(RenewalWindow::DaysBeforeExpiry(400).opens_at(nb, na), nb);
    }

    #[test]
    fn share_of_lifetime() {
        let w = RenewalWindow::ShareOfLifetime {
            numerator: 2,
            denominator: 3,
        };
        let nb = at("2026-01-01T00:00:00Z");
        let na = at("2026-04-01T00:00:00Z");
        // 90 days lifetime: opens after 60 days.
        assert_eq!(w.opens_at(nb, na), at("2026-03-02T00:00:00Z"));
        assert_eq!(w.describe(), "once 2/3 of the lifetime has passed");
    }

    #[test]
    fn validation() {
        assert!(RenewalWindow::DaysBeforeExpiry(0).validate("w").is_err());
        assert!(
            RenewalWindow::ShareOfLifetime {
                numerator: 3,
                denominator: 3
            }
            .validate("w")
            .is_err()
        );
        assert!(
            RenewalWindow::ShareOfLifetime {
                numerator: 0,
                denominator: 3
            }
            .validate("w")
            .is_err()
        );
        assert!(
            RenewalWindow::ShareOfLifetime {
                numerator: 1,
                denominator: 0
            }
            .validate("w")
            .is_err()
        );
        assert!(validate_thresholds("t", &DEFAULT_EXPIRY_THRESHOLDS).is_ok());
        assert_eq!(
            validate_thresholds("t", &[30, 0]).unwrap_err().field(),
            Some("t[1]")
        );
    }
}
