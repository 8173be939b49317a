//! Matching an expected string or regex against the first bytes of a reply.

use regex::bytes::{Regex, RegexBuilder};

use idns_core::Problems;

/// The largest compiled regex accepted, so a hostile pattern cannot eat the controller's memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// An expected substring or regex, compiled once when the probe is built.
///
/// A substring is compiled as an escaped regex, so both kinds share one search that works on
/// bytes (a reply need not be UTF-8).
#[derive(Debug, Clone)]
pub(crate) struct Matcher {
    regex: Regex,
    shown: String,
}

impl Matcher {
    /// Builds the matcher of a check from its `expect` / `expect_regex` / `case_insensitive`
    /// fields, pushing a problem for each bad one. `None` when neither is set or one is bad.
    pub(crate) fn from_fields(
        p: &mut Problems,
        path: &str,
        expect: Option<&str>,
        expect_regex: Option<&str>,
        case_insensitive: bool,
    ) -> Option<Matcher> {
        let (pattern, shown, field) = match (expect, expect_regex) {
            (None, None) => return None,
            (Some(_), Some(r)) => {
                p.push(
                    format!("{path}.expect_regex"),
                    r,
                    "set either expect (a substring) or expect_regex, not both",
                );
                return None;
            }
            (Some(s), None) => {
                if s.is_empty() {
                    p.push(
                        format!("{path}.expect"),
                        "\"\"",
                        "must not be empty (leave it out to skip the search)",
                    );
                    return None;
                }
                (regex::escape(s), format!("{s:?}"), "expect")
            }
            (None, Some(r)) => (r.to_owned(), format!("/{r}/"), "expect_regex"),
        };
        match RegexBuilder::new(&pattern)
            .case_insensitive(case_insensitive)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
        {
            Ok(regex) => Some(Matcher { regex, shown }),
            Err(e) => {
                let problem = match e {
                    regex::Error::Syntax(s) => format!("is not a valid regex: {s}"),
                    other => format!("is not a usable regex: {other}"),
                };
                p.push(format!("{path}.{field}"), pattern, problem);
                None
            }
        }
    }

    /// Whether the expected text occurs in `haystack`.
    pub(crate) fn is_match(&self, haystack: &[u8]) -> bool {
        self.regex.is_match(haystack)
    }

    /// The expectation as a person wrote it, for reasons: `"OK"` or `/ok|fine/`.
    pub(crate) fn shown(&self) -> &str {
        &self.shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(expect: Option<&str>, re: Option<&str>, ci: bool) -> Result<Matcher, String> {
        let mut p = Problems::default();
        let m = Matcher::from_fields(&mut p, "check", expect, re, ci);
        p.finish().map_err(|e| e.to_string())?;
        m.ok_or_else(|| "no matcher".to_owned())
    }

    #[test]
    fn substrings_are_literal_and_may_ignore_case() {
        let m = build(Some("a.b"), None, false).unwrap();
        assert!(m.is_match(b"xx a.b yy"));
        assert!(!m.is_match(b"axb"));
        assert!(!m.is_match(b"A.B"));
        assert!(build(Some("a.b"), None, true).unwrap().is_match(b"A.B"));
        assert_eq!(m.shown(), "\"a.b\"");
    }

    #[test]
    fn regexes_match_bytes_that_are_not_utf8() {
        let m = build(None, Some("ok|fine"), false).unwrap();
        assert!(m.is_match(b"\xff\xfe fine"));
        assert_eq!(m.shown(), "/ok|fine/");
    }

    #[test]
    fn bad_patterns_and_both_fields_name_the_field() {
        let e = build(None, Some("(unclosed"), false).unwrap_err();
        assert!(e.contains("check.expect_regex = (unclosed"), "{e}");
        let e = build(Some("x"), Some("y"), false).unwrap_err();
        assert!(e.contains("check.expect_regex"), "{e}");
        let e = build(Some(""), None, false).unwrap_err();
        assert!(e.contains("check.expect"), "{e}");
    }
}
