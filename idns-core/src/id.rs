//! Identities: sites, probes, observers, replicated resources, and DNS names.
//!
//! Each is a cheap-to-clone newtype over a shared string, validated once by
//! [`TryFrom`], so the rest of the crate never sees an empty or hostile name.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::InvalidId;

macro_rules! ident {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Eq, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(Arc<str>);

        impl std::hash::Hash for $name {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                // The text, as equality compares it.
                self.0.hash(state);
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                // Ids handed out from one configuration share their text: compare the pointer
                // first, the bytes only when it differs.
                Arc::ptr_eq(&self.0, &other.0) || *self.0 == *other.0
            }
        }

        impl $name {
            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Where `self` is among `items`: by pointer first (ids handed out by one
            /// configuration share their text, so lookups rarely compare bytes), by text when
            /// no pointer matches.
            pub(crate) fn index_in<T>(&self, items: &[T], id: impl Fn(&T) -> &Self) -> Option<usize> {
                items
                    .iter()
                    .position(|t| Arc::ptr_eq(&id(t).0, &self.0))
                    .or_else(|| items.iter().position(|t| *id(t).0 == *self.0))
            }
        }

        impl TryFrom<&str> for $name {
            type Error = InvalidId;
            fn try_from(value: &str) -> Result<Self, InvalidId> {
                check_ident($what, value)?;
                Ok(Self(Arc::from(value)))
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(value: String) -> Result<Self, InvalidId> {
                check_ident($what, &value)?;
                Ok(Self(Arc::from(value)))
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0.to_string()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", &*self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, InvalidId> {
                Self::try_from(s)
            }
        }
    };
}

ident!(
    /// A site of a service (a data centre, region or cloud): `primary`, `recovery`, …
    SiteId,
    "site id"
);
ident!(
    /// A probe of a site, unique within that site: `http`, `db`, …
    ProbeId,
    "probe id"
);
ident!(
    /// A vantage point that runs probes and reports what it saw.
    ObserverId,
    "observer id"
);
ident!(
    /// A replicated resource of the consistency group: a database, a VM image, a volume.
    ResourceId,
    "resource id"
);

/// The longest identifier accepted, in bytes.
pub(crate) const MAX_ID_LEN: usize = 63;

fn check_ident(what: &'static str, value: &str) -> Result<(), InvalidId> {
    let bad = |problem: &'static str| InvalidId {
        what,
        value: value.chars().take(80).collect(),
        problem,
    };
    if value.is_empty() {
        return Err(bad("is empty"));
    }
    if value.len() > MAX_ID_LEN {
        return Err(bad("is longer than 63 bytes"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(bad("may only hold ASCII letters, digits, '-', '_' and '.'"));
    }
    Ok(())
}

/// A fully qualified DNS name, stored in lower case without the trailing dot.
///
/// Accepts `www.example.com` and `www.example.com.`; labels are 1–63 bytes of letters,
/// digits, `-` and `_`, the whole name at most 253 bytes.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DnsName(Arc<str>);

impl DnsName {
    /// The name without its trailing dot, in lower case.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name with its trailing dot, as zone files and DNS libraries spell it.
    pub fn to_fqdn(&self) -> String {
        format!("{}.", self.0)
    }

    /// Whether this name is `zone` itself or lies below it.
    pub fn is_within(&self, zone: &DnsName) -> bool {
        self.0.len() == zone.0.len() && *self.0 == *zone.0
            || self.0.len() > zone.0.len()
                && self.0.ends_with(&*zone.0)
                && self.0.as_bytes()[self.0.len() - zone.0.len() - 1] == b'.'
    }

    /// `label.self`: a name one level below this one.
    pub fn prepend(&self, label: &str) -> Result<DnsName, InvalidId> {
        DnsName::try_from(format!("{label}.{}", self.0))
    }
}

impl TryFrom<&str> for DnsName {
    type Error = InvalidId;
    fn try_from(value: &str) -> Result<Self, InvalidId> {
        let bad = |problem: &'static str| InvalidId {
            what: "DNS name",
            value: value.chars().take(80).collect(),
            problem,
        };
        let name = value.strip_suffix('.').unwrap_or(value);
        if name.is_empty() {
            return Err(bad("is empty (the root is not a service name)"));
        }
        if name.len() > 253 {
            return Err(bad("is longer than 253 bytes"));
        }
        for label in name.split('.') {
            if label.is_empty() {
                return Err(bad("has an empty label"));
            }
            if label.len() > 63 {
                return Err(bad("has a label longer than 63 bytes"));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(bad(
                    "may only hold ASCII letters, digits, '-' and '_' in its labels",
                ));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(bad("has a label that starts or ends with '-'"));
            }
        }
        Ok(Self(Arc::from(name.to_ascii_lowercase())))
    }
}

impl TryFrom<String> for DnsName {
    type Error = InvalidId;
    fn try_from(value: String) -> Result<Self, InvalidId> {
        Self::try_from(value.as_str())
    }
}

impl From<DnsName> for String {
    fn from(value: DnsName) -> String {
        value.0.to_string()
    }
}

impl std::str::FromStr for DnsName {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, InvalidId> {
        Self::try_from(s)
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_reject_empty_long_and_odd_characters() {
        assert!(SiteId::try_from("primary").is_ok());
        assert!(SiteId::try_from("").is_err());
        assert!(SiteId::try_from("a b").is_err());
        assert!(SiteId::try_from("x".repeat(64)).is_err());
        let err = ProbeId::try_from("http/1").unwrap_err();
        assert!(err.to_string().contains("probe id"), "{err}");
        assert!(err.to_string().contains("http/1"), "{err}");
    }

    #[test]
    fn dns_names_are_normalised_and_checked() {
        let n = DnsName::try_from("WWW.Example.COM.").unwrap();
        assert_eq!(n.as_str(), "www.example.com");
        assert_eq!(n.to_fqdn(), "www.example.com.");
        let zone = DnsName::try_from("example.com").unwrap();
        assert!(n.is_within(&zone));
        assert!(zone.is_within(&zone));
        assert!(
            !DnsName::try_from("notexample.com")
                .unwrap()
                .is_within(&zone)
        );
        assert!(DnsName::try_from("a..b").is_err());
        assert!(DnsName::try_from("-a.b").is_err());
        assert!(DnsName::try_from(".").is_err());
        assert!(DnsName::try_from(format!("{}.com", "a".repeat(64))).is_err());
    }
}
