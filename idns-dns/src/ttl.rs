//! The TTL of a DNS record, validated once.

use std::fmt;
use std::time::Duration;

use idns_core::BackendError;

/// A DNS TTL: whole seconds from 0 to 2^31 - 1 (RFC 2181, section 8).
///
/// Every backend turns the `Duration` of a [`DnsChange`](idns_core::DnsChange) into one with
/// `Ttl::try_from` before it sends or serves anything, and the embedded server's
/// configuration holds its TTLs as `Ttl`s.
///
/// ```
/// use std::time::Duration;
/// use idns_dns::Ttl;
///
/// assert_eq!(Ttl::try_from(Duration::from_secs(30))?.as_secs(), 30);
/// assert!(Ttl::try_from(Duration::from_millis(1500)).is_err());
/// assert!(Ttl::try_from(Duration::from_secs(1 << 31)).is_err());
/// # Ok::<(), idns_dns::InvalidTtl>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ttl(u32);

impl Ttl {
    /// The longest TTL, 2^31 - 1 seconds.
    pub const MAX: Ttl = Ttl(0x7fff_ffff);

    /// A TTL of `secs` seconds, when it is at most [`MAX`](Self::MAX).
    pub const fn from_secs(secs: u32) -> Option<Ttl> {
        if secs <= Self::MAX.0 {
            Some(Ttl(secs))
        } else {
            None
        }
    }

    /// The TTL in seconds, as it goes on the wire.
    pub const fn as_secs(self) -> u32 {
        self.0
    }
}

impl TryFrom<Duration> for Ttl {
    type Error = InvalidTtl;

    fn try_from(d: Duration) -> Result<Ttl, InvalidTtl> {
        if d.subsec_nanos() != 0 {
            return Err(InvalidTtl(d));
        }
        u32::try_from(d.as_secs())
            .ok()
            .and_then(Ttl::from_secs)
            .ok_or(InvalidTtl(d))
    }
}

impl From<Ttl> for Duration {
    fn from(ttl: Ttl) -> Duration {
        Duration::from_secs(u64::from(ttl.0))
    }
}

impl fmt::Display for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(Duration::from(*self)))
    }
}

/// A duration that is not a DNS TTL: not whole seconds, or longer than 2^31 - 1 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("TTL {} is not a whole number of seconds up to 2^31 - 1", humantime::format_duration(*.0))]
pub struct InvalidTtl(pub Duration);

/// A change asking for an invalid TTL is an invalid request.
impl From<InvalidTtl> for BackendError {
    fn from(e: InvalidTtl) -> BackendError {
        BackendError::Invalid(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_seconds_up_to_2_31_minus_1() {
        assert_eq!(Ttl::try_from(Duration::ZERO), Ok(Ttl(0)));
        assert_eq!(
            Ttl::try_from(Duration::from_secs(0x7fff_ffff)),
            Ok(Ttl::MAX)
        );
        assert!(Ttl::try_from(Duration::from_secs(0x8000_0000)).is_err());
        assert!(Ttl::try_from(Duration::from_secs(u64::MAX)).is_err());
        let err = Ttl::try_from(Duration::from_millis(1500)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "TTL 1s 500ms is not a whole number of seconds up to 2^31 - 1"
        );
        assert!(matches!(BackendError::from(err), BackendError::Invalid(_)));
        assert_eq!(Duration::from(Ttl(30)), Duration::from_secs(30));
        assert_eq!(Ttl(90).to_string(), "1m 30s");
        assert_eq!(Ttl::from_secs(u32::MAX), None);
    }
}
