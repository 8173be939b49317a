//! Secrets (passwords, TSIG keys, API keys, tokens): kept out of `Debug`, `Display` and logs.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Whether a setting, header or environment variable called `name` holds a secret, in any case:
/// its name contains `password`, `passwd`, `secret`, `token`, `key`, `credential`,
/// `authorization`, `cookie` or `auth`. A name ending in `_env` names a variable and is not
/// itself a secret.
///
/// ```
/// use idns_core::is_secret_name;
///
/// for name in ["SRM_PASSWORD", "Authorization", "cookie", "X-Api-Key", "PGPASSWD", "db_token"] {
///     assert!(is_secret_name(name), "{name}");
/// }
/// for name in ["user", "Accept", "password_env", "PGHOST"] {
///     assert!(!is_secret_name(name), "{name}");
/// }
/// ```
pub fn is_secret_name(name: &str) -> bool {
    // `auth` covers `authorization` and `x-auth-token`.
    const WORDS: [&str; 8] = [
        "password",
        "passwd",
        "secret",
        "token",
        "key",
        "credential",
        "cookie",
        "auth",
    ];
    let lower = name.to_ascii_lowercase();
    !lower.ends_with("_env") && WORDS.iter().any(|w| lower.contains(w))
}

/// Shows a map of names to values (HTTP headers, a hook's environment) with the value of every
/// [secret name](is_secret_name) replaced by `<redacted>`: the `Debug` of a configuration
/// that holds such a map goes through it.
///
/// ```
/// use std::collections::BTreeMap;
/// use idns_core::RedactedMap;
///
/// let env = BTreeMap::from([("SRM_PASSWORD".to_owned(), "hunter2".to_owned()),
///                           ("SRM_HOST".to_owned(), "vc1".to_owned())]);
/// assert_eq!(
///     format!("{:?}", RedactedMap(&env)),
///     r#"{"SRM_HOST": "vc1", "SRM_PASSWORD": <redacted>}"#
/// );
/// ```
pub struct RedactedMap<'a>(pub &'a BTreeMap<String, String>);

impl fmt::Debug for RedactedMap<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (k, v) in self.0 {
            if is_secret_name(k) {
                m.entry(k, &format_args!("<redacted>"));
            } else {
                m.entry(k, v);
            }
        }
        m.finish()
    }
}

/// A secret string: a password, a TSIG key (base64), an API key or a token.
///
/// Its `Debug` and `Display` print `<redacted>`; only [`expose`](Self::expose) gives the
/// value. It deserialises from a string (an error about a value of another type does not show
/// that value either) and serialises as the plain value, so a configuration can be written
/// back.
///
/// ```
/// use idns_core::Secret;
///
/// let key: Secret = serde_json::from_str("\"c2VjcmV0\"")?;
/// assert_eq!(format!("{key:?} {key}"), "<redacted> <redacted>");
/// assert_eq!(key.expose(), "c2VjcmV0");
/// let wrong = serde_json::from_str::<Secret>("123456789").unwrap_err().to_string();
/// assert!(!wrong.contains("123456789"), "{wrong}");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value, for the one place that sends it. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // `any`, not `string`: a format then hands a value of another type to the visitor,
        // which refuses it without quoting it, instead of quoting it in its own error.
        deserializer.deserialize_any(SecretVisitor)
    }
}

/// Takes strings; refuses anything else without quoting it.
struct SecretVisitor;

impl SecretVisitor {
    fn refuse<E: de::Error>(what: &str) -> Result<Secret, E> {
        Err(E::custom(format!(
            "invalid type: {what} (not shown), expected a string"
        )))
    }
}

impl Visitor<'_> for SecretVisitor {
    type Value = Secret;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Secret, E> {
        Ok(Secret(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Secret, E> {
        Ok(Secret(v))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Secret, E> {
        Self::refuse("a boolean")
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Secret, E> {
        Self::refuse("an integer")
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Secret, E> {
        Self::refuse("an integer")
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Secret, E> {
        Self::refuse("a number")
    }

    fn visit_char<E: de::Error>(self, _: char) -> Result<Secret, E> {
        Self::refuse("a character")
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Secret, E> {
        Self::refuse("bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_stay_out_of_debug_display_and_errors() {
        let s = Secret::new("c2VjcmV0");
        assert_eq!(format!("{s:?} {s}"), "<redacted> <redacted>");
        assert_eq!(s.expose(), "c2VjcmV0");
        assert!(!s.is_empty());
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"c2VjcmV0\"");
        let back: Secret = serde_json::from_str("\"c2VjcmV0\"").unwrap();
        assert_eq!(back, s);
        for wrong in ["123456789", "true", "1.5e300"] {
            let err = serde_json::from_str::<Secret>(wrong)
                .unwrap_err()
                .to_string();
            assert!(!err.contains(wrong), "{err}");
            assert!(err.contains("expected a string"), "{err}");
        }
    }
}
