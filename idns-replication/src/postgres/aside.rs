//! Saving aside the rows only an old primary holds, before it is rewound.
//!
//! Each table is read at both servers ordered by a hash of the row's text (`md5(t::text)`,
//! sorted bytewise), the two streams are merged, and each row of the old primary that the new
//! primary lacks is written to the table's file as it comes, in COPY text format: memory stays
//! constant whatever the table's size. Both sessions use the same output settings, so equal
//! rows print equally.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Instant;

use futures::StreamExt;
use idns_core::BackendError;
use tokio::sync::mpsc;
use tokio_postgres::{Client, CopyOutStream};

use super::control::Stream;

/// Output settings both sides of a comparison use, so that a row prints the same at each.
pub(crate) const SESSION: &str = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; \
     SET IntervalStyle = 'postgres'; SET extra_float_digits = 1; SET bytea_output = 'hex'";

/// The user tables at a server with their size on disk: `schema-hex|name-hex|bytes` lines
/// (`psql -At`); hex keeps any name intact.
pub(crate) const LIST_TABLES: &str = "SELECT encode(convert_to(n.nspname::text, 'UTF8'), 'hex'), \
     encode(convert_to(c.relname::text, 'UTF8'), 'hex'), pg_relation_size(c.oid) \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind IN ('r', 'p') AND n.nspname <> 'information_schema' \
     AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1, 2";

/// Rows are handed to the file writer in batches of about this many bytes.
const BATCH: usize = 256 * 1024;

/// A table, by schema and name as PostgreSQL spells them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Table {
    pub schema: String,
    pub name: String,
    /// Its size on disk, in bytes (an estimate of how much there is to read).
    pub size: u64,
}

impl Table {
    /// `schema.name`, as reports and configurations name it.
    pub(crate) fn key(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// The name quoted for SQL.
    pub(crate) fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    /// A file name for its saved rows: schema and name with every byte other than letters,
    /// digits, `_` and `-` written as `%XX`, joined by `.`, then `.copy` (shortened with a
    /// hash when long). Never a path separator, never hidden, one name per table.
    pub(crate) fn file_name(&self) -> String {
        let mut stem = format!("{}.{}", file_part(&self.schema), file_part(&self.name));
        if stem.len() > 200 {
            let hash = blake3::hash(self.key().as_bytes()).to_hex();
            stem = format!("{}-{}", &stem[..150], &hash[..16]);
        }
        format!("{stem}.copy")
    }

    /// The query listing its rows: the row's hash first, then its columns.
    pub(crate) fn old_rows_sql(&self) -> String {
        format!(
            "COPY (SELECT md5(x::text) COLLATE \"C\" AS idns_row_hash, x.* FROM {} x \
             ORDER BY 1) TO STDOUT",
            self.quoted()
        )
    }

    /// The query listing its rows' hashes only.
    pub(crate) fn new_rows_sql(&self) -> String {
        format!(
            "COPY (SELECT md5(x::text) COLLATE \"C\" FROM {} x ORDER BY 1) TO STDOUT",
            self.quoted()
        )
    }
}

/// Quotes an identifier for SQL.
pub(crate) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn file_part(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn unhex(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    let raw: Option<Vec<u8>> = bytes
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
        .collect();
    String::from_utf8(raw?).ok()
}

/// Parses the output of [`LIST_TABLES`].
pub(crate) fn parse_tables(out: &str) -> Result<Vec<Table>, String> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut f = l.trim().split('|');
            let table = (|| {
                Some(Table {
                    schema: unhex(f.next()?)?,
                    name: unhex(f.next()?)?,
                    size: f.next()?.parse().ok()?,
                })
            })();
            table.ok_or_else(|| format!("a table listing line does not parse: {l:?}"))
        })
        .collect()
}

/// The lines of a `COPY … TO STDOUT` at the new primary, read as they come.
pub(crate) struct CopyLines {
    stream: Pin<Box<CopyOutStream>>,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
    deadline: Instant,
}

impl CopyLines {
    /// Starts `sql` on `client`; `None` when the server refuses it (e.g. the table is not
    /// there: then the new primary has none of its rows).
    pub(crate) async fn start(
        client: &Client,
        sql: &str,
        deadline: Instant,
    ) -> Result<Option<Self>, BackendError> {
        let started = tokio::time::timeout_at(deadline.into(), client.copy_out(sql))
            .await
            .map_err(|_| BackendError::Timeout("the new primary's COPY did not start".into()))?;
        match started {
            Ok(stream) => Ok(Some(Self {
                stream: Box::pin(stream),
                buf: Vec::new(),
                pos: 0,
                done: false,
                deadline,
            })),
            Err(e) if e.as_db_error().is_some() => {
                tracing::debug!(error = %e, "the new primary cannot list this table's rows");
                Ok(None)
            }
            Err(e) => Err(BackendError::Unavailable(format!(
                "COPY at the new primary: {e}"
            ))),
        }
    }

    /// Reads the next line into `line` (without its newline); `false` at the end.
    pub(crate) async fn next_line(&mut self, line: &mut Vec<u8>) -> Result<bool, BackendError> {
        line.clear();
        loop {
            if let Some(i) = self.buf[self.pos..].iter().position(|&b| b == b'\n') {
                line.extend_from_slice(&self.buf[self.pos..self.pos + i]);
                self.pos += i + 1;
                return Ok(true);
            }
            if self.done {
                if self.pos < self.buf.len() {
                    line.extend_from_slice(&self.buf[self.pos..]);
                    self.pos = self.buf.len();
                    return Ok(true);
                }
                return Ok(false);
            }
            self.buf.drain(..self.pos);
            self.pos = 0;
            let next = tokio::time::timeout_at(self.deadline.into(), self.stream.next())
                .await
                .map_err(|_| {
                    BackendError::Timeout(
                        "the new primary's COPY did not finish before the step's deadline".into(),
                    )
                })?;
            match next {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(e)) => {
                    return Err(BackendError::Unavailable(format!(
                        "COPY at the new primary: {e}"
                    )));
                }
                None => self.done = true,
            }
        }
    }
}

/// The channel to a file's writer task, and the task.
type Writer = (
    mpsc::Sender<Vec<u8>>,
    tokio::task::JoinHandle<std::io::Result<()>>,
);

/// One table's file of saved rows, written by a blocking task as batches come; created only
/// when the first row comes.
pub(crate) struct AsideFile {
    path: PathBuf,
    batch: Vec<u8>,
    writer: Option<Writer>,
    rows: u64,
}

impl AsideFile {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            path,
            batch: Vec::new(),
            writer: None,
            rows: 0,
        }
    }

    async fn push(&mut self, row: &[u8]) -> Result<(), BackendError> {
        self.batch.extend_from_slice(row);
        self.batch.push(b'\n');
        self.rows += 1;
        if self.batch.len() >= BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), BackendError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let (tx, _) = self.writer.get_or_insert_with(|| {
            let (tx, mut rx) = mpsc::channel::<Vec<u8>>(4);
            let path = self.path.clone();
            let task = tokio::task::spawn_blocking(move || {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let file = File::create(&path)?;
                let mut w = BufWriter::new(file);
                while let Some(b) = rx.blocking_recv() {
                    w.write_all(&b)?;
                }
                w.flush()?;
                w.get_ref().sync_all()
            });
            (tx, task)
        });
        if tx.send(std::mem::take(&mut self.batch)).await.is_err() {
            // The writer stopped: its error says why.
            return self.close().await.map(|_| ());
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<u64, BackendError> {
        let Some((tx, task)) = self.writer.take() else {
            return Ok(self.rows);
        };
        drop(tx);
        let written = task
            .await
            .map_err(|e| BackendError::Unavailable(format!("file writer failed: {e}")))?;
        match written {
            Ok(()) => Ok(self.rows),
            Err(e) => Err(crate::fsutil::io_err(self.path.display(), &e)),
        }
    }

    /// Writes what is left and syncs the file; the number of rows saved.
    pub(crate) async fn finish(mut self) -> Result<u64, BackendError> {
        self.flush().await?;
        self.close().await
    }
}

/// Merges the old primary's rows (`hash <tab> columns`, ordered by hash) with the new
/// primary's hashes (ordered the same way; `None`: it has none) and writes to `out` every row
/// of the old primary the new one lacks, counting duplicates. `progress` is told the bytes
/// read from the old primary so far.
pub(crate) async fn diff_table(
    old: &mut Stream,
    mut new: Option<CopyLines>,
    out: &mut AsideFile,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<(), BackendError> {
    let mut line = Vec::new();
    let mut theirs = Vec::new();
    let mut have_theirs = match &mut new {
        Some(n) => n.next_line(&mut theirs).await?,
        None => false,
    };
    let mut read = 0u64;
    while old.next_line(&mut line).await? {
        read += line.len() as u64 + 1;
        progress(read);
        let (hash, row) = match line.iter().position(|&b| b == b'\t') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (&line[..], &line[line.len()..]),
        };
        loop {
            if !have_theirs || theirs.as_slice() > hash {
                out.push(row).await?;
                break;
            }
            let matched = theirs.as_slice() == hash;
            have_theirs = match &mut new {
                Some(n) => n.next_line(&mut theirs).await?,
                None => false,
            };
            if matched {
                break;
            }
        }
    }
    Ok(())
}

/// Rows saved per table and the files holding them.
pub(crate) type Saved = BTreeMap<String, (u64, String)>;

#[cfg(test)]
mod tests {
    use super::*;

    fn table(schema: &str, name: &str) -> Table {
        Table {
            schema: schema.into(),
            name: name.into(),
            size: 0,
        }
    }

    #[test]
    fn odd_names_are_quoted_and_make_safe_file_names() {
        let t = table("we.ird", "odd \"name\"/x");
        assert_eq!(t.quoted(), r#""we.ird"."odd ""name""/x""#);
        assert_eq!(t.file_name(), "we%2Eird.odd%20%22name%22%2Fx.copy");
        assert_eq!(table("public", "items").file_name(), "public.items.copy");
        let dots = table("a.b", "c");
        assert_ne!(dots.file_name(), table("a", "b.c").file_name());
        let long = table(&"é".repeat(31), &"ü".repeat(31)).file_name();
        assert!(long.len() <= 200 && long.ends_with(".copy"), "{long}");
        assert!(!long.contains('/'));
    }

    #[test]
    fn table_listings_parse_and_bad_lines_are_named() {
        let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
        let out = format!("{}|{}|8192\n\n", hex("public"), hex("odd name/x"));
        assert_eq!(
            parse_tables(&out).unwrap(),
            [Table {
                schema: "public".into(),
                name: "odd name/x".into(),
                size: 8192
            }]
        );
        assert!(parse_tables("zz|00|1").unwrap_err().contains("zz|00|1"));
    }
}
