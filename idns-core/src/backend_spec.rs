//! Configuration enums of backends, tagged by `backend`, read so that field paths survive.

use serde::Deserializer;

/// A configuration enum whose variants are backends, told apart by a `backend` field:
/// `idns-dns`'s `DnsSpec` (`embedded`, `rfc2136`, `powerdns`) and `idns-replication`'s
/// `ReplicationSpec` (`image`, `postgres`, `command`).
///
/// Such an enum deserialises from one table, `{ backend = "…", <the backend's settings> }`,
/// as serde's internally tagged enums do. But serde buffers such a table before it reads the
/// backend's settings, and the buffer loses the path of a bad field. A reader that reports
/// field paths (the daemon's configuration reader, with `serde_path_to_error`) takes the
/// `backend` field off the table itself and calls
/// [`deserialize_backend`](Self::deserialize_backend) with the rest, so that a problem is
/// named down to the field (`dns.tsig.secret`). A program that holds several such enums reads
/// them all the same way through this trait, without naming any backend.
pub trait BackendSpec: Sized {
    /// What the backends are, for messages: `DNS backend`.
    const KIND: &'static str;

    /// The values the `backend` field takes, one per variant.
    const BACKENDS: &'static [&'static str];

    /// Reads the settings of the backend named `backend` (one of [`BACKENDS`](Self::BACKENDS))
    /// from `settings`, the table without its `backend` field.
    fn deserialize_backend<'de, D: Deserializer<'de>>(
        backend: &str,
        settings: D,
    ) -> Result<Self, D::Error>;
}
