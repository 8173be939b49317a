//! Reading a TOML document so that *every* problem is found, not only the first.
//!
//! serde stops at the first error. The daemon's configuration is read unit by unit (the daemon
//! table, each service, each backend), and each unit with [`Reader::take`]: on an error the
//! offending key is noted with its full path, removed, and the unit is read again, so an
//! unknown key, a wrong type and a bad value in the same table are all reported. The problems
//! are collected in idns-core's [`Problems`]; each is given the line it is on at the end, from
//! a second, span-keeping parse of the text.

use std::collections::BTreeMap;
use std::fmt;

use idns_core::{BackendSpec, ConfigError, Problems};
use serde::de::DeserializeOwned;
use serde_path_to_error::{Deserializer as Tracked, Track};
use toml::de::{DeTable, DeValue};

/// Keys whose values are secrets: an error about them never shows the value.
const SECRET_KEYS: [&str; 6] = ["token", "secret", "api_key", "password", "conninfo", "key"];

/// One problem of a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The field's path, e.g. `services[0].sites[1].probes[0].interval`.
    pub path: String,
    /// The offending value as written (empty when missing or secret).
    pub value: String,
    /// What is wrong.
    pub problem: String,
    /// The line of the file it is on, where known.
    pub line: Option<usize>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}: {}", self.path, self.problem)?;
        } else {
            write!(f, "{} = {}: {}", self.path, self.value, self.problem)?;
        }
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        Ok(())
    }
}

/// Where each field of the text is: path → line.
#[derive(Debug, Default)]
pub(crate) struct Lines {
    lines: BTreeMap<String, usize>,
}

impl Lines {
    /// The lines of every key of a document that parses (none for one that does not).
    pub(crate) fn of(text: &str) -> Lines {
        let mut lines = Lines::default();
        if let Ok(table) = DeTable::parse(text) {
            lines.walk_table(text, "", table.get_ref());
        }
        lines
    }

    fn walk_table(&mut self, text: &str, path: &str, table: &DeTable<'_>) {
        for (key, value) in table.iter() {
            let p = join(path, key.get_ref());
            self.lines
                .insert(p.clone(), line_of(text, key.span().start));
            self.walk_value(text, &p, value.get_ref(), value.span().start);
        }
    }

    fn walk_value(&mut self, text: &str, path: &str, value: &DeValue<'_>, start: usize) {
        match value {
            DeValue::Table(t) => self.walk_table(text, path, t),
            DeValue::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    let at = v.span().start;
                    self.lines
                        .entry(p.clone())
                        .or_insert_with(|| line_of(text, if at > 0 { at } else { start }));
                    self.walk_value(text, &p, v.get_ref(), at);
                }
            }
            _ => {}
        }
    }

    /// The line of `path`, or of its closest ancestor that has one.
    pub(crate) fn find(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(l) = self.lines.get(p) {
                return Some(*l);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// `parent.key`, or `key` at the top.
pub(crate) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// A step of a path inside a TOML value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

fn render(base: &str, segs: &[Seg]) -> String {
    let mut out = base.to_owned();
    for s in segs {
        match s {
            Seg::Key(k) => out = join(&out, k),
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Reads the units of one configuration file, collecting every problem.
#[derive(Debug, Default)]
pub(crate) struct Reader {
    problems: Problems,
    lines: Lines,
    /// Paths of keys that had a problem while being read (removed or given a placeholder).
    tainted: Vec<String>,
}

/// A deserialisation that keeps the path of the field that failed.
type Tracking<T> = Result<T, serde_path_to_error::Error<toml::de::Error>>;

impl Reader {
    pub(crate) fn new(lines: Lines) -> Self {
        Self {
            problems: Problems::new(),
            lines,
            tainted: Vec::new(),
        }
    }

    /// How many problems were found so far.
    pub(crate) fn count(&self) -> usize {
        self.problems.len()
    }

    /// Every problem found, each with its line, in the order found.
    pub(crate) fn finish(self) -> Vec<Problem> {
        let lines = self.lines;
        match self.problems.finish() {
            Ok(()) => Vec::new(),
            Err(e) => e
                .errors
                .into_iter()
                .map(|e| Problem {
                    line: lines.find(&e.path),
                    path: e.path,
                    value: e.value,
                    problem: e.problem,
                })
                .collect(),
        }
    }

    /// Records a problem at `path` (its value not shown when the key holds a secret).
    pub(crate) fn push(
        &mut self,
        path: impl Into<String>,
        value: impl fmt::Display,
        problem: impl Into<String>,
    ) {
        let path = path.into();
        if is_secret_path(&path) {
            self.problems.push(path, "", problem);
        } else {
            self.problems.push(path, value, problem);
        }
    }

    /// Records the problems a validator found, their paths under `prefix`; those about keys
    /// that already had a problem while being read are dropped (they would only repeat it,
    /// or complain about a placeholder).
    pub(crate) fn extend(&mut self, prefix: &str, errors: ConfigError) {
        for e in errors.errors {
            let path = if e.path.starts_with("line ") || e.path == "(document)" {
                prefix.to_owned()
            } else {
                join(prefix, &e.path)
            };
            if self.is_tainted(&path) {
                continue;
            }
            self.push(path, e.value, e.problem);
        }
    }

    /// Reads `value` as a `T`, recording every problem found under `path` (see
    /// [`take_with`](Self::take_with)).
    pub(crate) fn take<T: DeserializeOwned>(
        &mut self,
        value: toml::Value,
        path: &str,
    ) -> Option<T> {
        self.take_with(value, path, |v| serde_path_to_error::deserialize(v))
    }

    /// Reads the settings of the backend named `backend` (`value` is its table without the
    /// `backend` field) as a `T`, recording every problem found under `path`.
    pub(crate) fn take_backend<T: BackendSpec>(
        &mut self,
        backend: &str,
        value: toml::Value,
        path: &str,
    ) -> Option<T> {
        self.take_with(value, path, |v| {
            let mut track = Track::new();
            T::deserialize_backend(backend, Tracked::new(v, &mut track))
                .map_err(|e| serde_path_to_error::Error::new(track.path(), e))
        })
    }

    /// Reads `value` with `read`, recording every problem found under `path`.
    ///
    /// After each problem the offending key is removed (it takes its default) and the value is
    /// read again, so every problem of the unit is found. A required key that is missing or
    /// wrong gets a placeholder of whatever type fits, only to read on; its path is marked
    /// tainted, and validators' complaints about tainted paths are dropped (see
    /// [`extend`](Self::extend)). Returns `None` only when the unit cannot be read at all.
    fn take_with<T>(
        &mut self,
        mut value: toml::Value,
        path: &str,
        read: impl Fn(toml::Value) -> Tracking<T>,
    ) -> Option<T> {
        let mut removed: Vec<Vec<Seg>> = Vec::new();
        // The placeholder being tried for a required key, and the next candidate.
        let mut filling: Option<(Vec<Seg>, usize)> = None;
        // Each round removes a key or tries one of a few placeholders, so this ends; the
        // bound only guards against a bug.
        for _ in 0..1024 {
            let err = match read(value.clone()) {
                Ok(t) => return Some(t),
                Err(e) => e,
            };
            let mut segs = segments(err.path());
            let message = err.inner().message().trim().to_owned();
            let missing = quoted_after(&message, "missing field `");
            if let Some((key, next)) = &mut filling {
                let mut at = segs.clone();
                if let Some(field) = &missing
                    && at.last() != Some(&Seg::Key(field.clone()))
                {
                    at.push(Seg::Key(field.clone()));
                }
                if at.starts_with(key) {
                    let candidate = placeholder(*next)?;
                    *next += 1;
                    if !set(&mut value, key, candidate) {
                        return None;
                    }
                    continue;
                }
                filling = None;
            }
            if let Some(field) = missing {
                if segs.last() != Some(&Seg::Key(field.clone())) {
                    segs.push(Seg::Key(field));
                }
                if !removed.contains(&segs) {
                    self.push(render(path, &segs), "", "is missing");
                }
                self.tainted.push(render(path, &segs));
                let candidate = placeholder(0)?;
                if !set(&mut value, &segs, candidate) {
                    return None;
                }
                filling = Some((segs, 1));
                continue;
            }
            if let Some(field) = quoted_after(&message, "unknown field `") {
                // serde_path_to_error names the key itself here, serde only its parent.
                if segs.last() != Some(&Seg::Key(field.clone())) {
                    segs.push(Seg::Key(field));
                }
                let expected = message
                    .split_once(", expected ")
                    .map(|(_, e)| format!(" (expected {e})"))
                    .unwrap_or_default();
                self.push(render(path, &segs), "", format!("unknown key{expected}"));
            } else if let Some(variant) = quoted_after(&message, "unknown variant `") {
                let expected = message
                    .split_once(", expected ")
                    .map(|(_, e)| format!(": expected {e}"))
                    .unwrap_or_default();
                let full = render(path, &segs);
                let shown = if is_secret_path(&full) {
                    String::new()
                } else {
                    variant
                };
                self.push(full, shown, format!("unknown variant{expected}"));
            } else {
                let full = render(path, &segs);
                let problem = if is_secret_path(&full) {
                    "has a wrong type or value (not shown: it is secret)".to_owned()
                } else {
                    message
                };
                self.push(full, "", problem);
            }
            // Remove the innermost key that holds the problem, then read again.
            while matches!(segs.last(), Some(Seg::Index(_))) {
                segs.pop();
            }
            if segs.is_empty() || !remove(&mut value, &segs) {
                return None;
            }
            self.tainted.push(render(path, &segs));
            removed.push(segs);
        }
        None
    }

    /// Whether `path` is, or lies under, a key that had a problem.
    fn is_tainted(&self, path: &str) -> bool {
        self.tainted.iter().any(|t| {
            path == t
                || path
                    .strip_prefix(t.as_str())
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
        })
    }
}

/// Placeholders for a required key, tried in turn until one has a type that fits.
fn placeholder(i: usize) -> Option<toml::Value> {
    Some(match i {
        0 => toml::Value::String(String::new()),
        1 => toml::Value::Integer(0),
        2 => toml::Value::Boolean(false),
        3 => toml::Value::Array(Vec::new()),
        4 => toml::Value::Table(toml::Table::new()),
        _ => return None,
    })
}

/// Sets the key at `segs` (which ends with a key) in `value`.
fn set(value: &mut toml::Value, segs: &[Seg], v: toml::Value) -> bool {
    let Some((Seg::Key(last), parents)) = segs.split_last() else {
        return false;
    };
    match walk(value, parents) {
        Some(toml::Value::Table(t)) => {
            t.insert(last.clone(), v);
            true
        }
        _ => false,
    }
}

fn walk<'v>(value: &'v mut toml::Value, segs: &[Seg]) -> Option<&'v mut toml::Value> {
    let mut at = value;
    for s in segs {
        at = match (s, at) {
            (Seg::Key(k), toml::Value::Table(t)) => t.get_mut(k)?,
            (Seg::Index(i), toml::Value::Array(a)) => a.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(at)
}

fn is_secret_path(path: &str) -> bool {
    let last = path.rsplit(['.', '[']).next().unwrap_or(path);
    SECRET_KEYS.contains(&last)
        || path.contains(".tsig.secret")
        || last.ends_with("_password")
        || last.ends_with("_token")
}

fn segments(path: &serde_path_to_error::Path) -> Vec<Seg> {
    use serde_path_to_error::Segment;
    let mut out = Vec::new();
    for s in path.iter() {
        match s {
            Segment::Map { key } => out.push(Seg::Key(key.clone())),
            Segment::Seq { index } => out.push(Seg::Index(*index)),
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    out
}

fn quoted_after(message: &str, prefix: &str) -> Option<String> {
    let rest = message.split_once(prefix)?.1;
    Some(rest.split_once('`')?.0.to_owned())
}

/// Removes the key at `segs` (which ends with a key) from `value`.
fn remove(value: &mut toml::Value, segs: &[Seg]) -> bool {
    let Some((Seg::Key(last), parents)) = segs.split_last() else {
        return false;
    };
    match walk(value, parents) {
        Some(toml::Value::Table(t)) => t.remove(last).is_some(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        #[serde(default)]
        n: u32,
        #[serde(default)]
        s: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        #[serde(default)]
        items: Vec<Inner>,
        #[serde(default)]
        secret: String,
    }

    fn problems(text: &str) -> (Option<Outer>, Vec<String>) {
        let value: toml::Value = toml::from_str(text).unwrap();
        let mut p = Reader::new(Lines::of(text));
        let out = p.take::<Outer>(value, "");
        (out, p.finish().iter().map(ToString::to_string).collect())
    }

    #[test]
    fn every_problem_is_found_with_path_and_line() {
        let (out, list) = problems(
            "name = \"x\"\nbogus = 1\n[[items]]\nn = \"seven\"\n[[items]]\ns = 3\nextra = true\n",
        );
        let all = list.join("\n");
        assert!(out.is_some(), "{all}");
        assert!(all.contains("bogus: unknown key"), "{all}");
        assert!(all.contains("(line 2)"), "{all}");
        assert!(all.contains("items[0].n: invalid type"), "{all}");
        assert!(all.contains("(line 4)"), "{all}");
        assert!(all.contains("items[1].s: invalid type"), "{all}");
        assert!(all.contains("items[1].extra: unknown key"), "{all}");
        assert_eq!(list.len(), 4, "{all}");
    }

    #[test]
    fn a_bad_required_field_is_reported_once_and_reading_goes_on() {
        let (out, list) = problems("name = 5\nsecret = 1\n");
        assert!(out.is_some());
        assert_eq!(list.len(), 2, "{list:?}");
        assert!(list[0].starts_with("name: invalid type"), "{list:?}");
        assert!(list[1].starts_with("secret"), "{list:?}");
        let (_, list) = problems("items = [{ n = \"x\" }]\n");
        assert_eq!(list.len(), 2, "{list:?}");
        assert!(list.contains(&"name: is missing".to_owned()), "{list:?}");
        assert!(
            list.iter()
                .any(|l| l.starts_with("items[0].n: invalid type")),
            "{list:?}"
        );
    }

    #[test]
    fn secrets_are_not_shown() {
        let (_, list) = problems("name = \"x\"\nsecret = 123456789\n");
        assert_eq!(list.len(), 1, "{list:?}");
        assert!(!list[0].contains("123456789"), "{list:?}");
        assert!(list[0].contains("secret"), "{list:?}");
    }
}
