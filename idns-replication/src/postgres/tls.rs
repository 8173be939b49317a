//! `sslmode` and `sslrootcert` of the backend's own connections, with rustls
//! (`tokio-postgres-rustls`, on the aws-lc-rs provider the workspace uses).
//!
//! tokio-postgres knows `sslmode` `disable`, `prefer` and `require` only, and no `sslrootcert`:
//! so the two are taken out of a site's conninfo here (libpq syntax) and applied by choosing
//! the rustls configuration, with libpq's meanings:
//!
//! - `disable`: no TLS (also what a conninfo without `sslmode` gets, as before);
//! - `prefer`: TLS when the server offers it, without checking its certificate;
//! - `require`: TLS or no connection, without checking the certificate (checked as
//!   `verify-ca` when `sslrootcert` is given, as libpq does);
//! - `verify-ca`: TLS with a certificate signed by a CA of `sslrootcert`;
//! - `verify-full`: that, and the certificate names the host connected to.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use idns_core::tls::{AcceptAnyCert, AnyName};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{CertificateError, ClientConfig, RootCertStore};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<SslMode, String> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            // `allow` tries without TLS first, which is what `prefer` guards against.
            other => {
                return Err(format!(
                    "sslmode {:?} is not one of disable, prefer, require, verify-ca, verify-full",
                    other.chars().take(40).collect::<String>()
                ));
            }
        })
    }

    fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// The TLS part of a site's conninfo, and the rest of it for tokio-postgres.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnTls {
    /// `sslmode` as given (`None`: not given, no TLS as before).
    pub(crate) mode: Option<SslMode>,
    /// `sslrootcert`.
    pub(crate) root_cert: Option<PathBuf>,
    /// The other parameters, quoted again for tokio-postgres.
    pub(crate) rest: String,
}

/// Splits libpq `key=value` conninfo into words (`'quoted values'`, `\` escapes).
fn conninfo_pairs(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut it = s.chars().peekable();
    loop {
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        if it.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(c) = it.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        if it.next() != Some('=') {
            return Err(format!("{key:?} has no \"=value\""));
        }
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if it.next_if_eq(&'\'').is_some() {
            loop {
                match it.next() {
                    None => return Err(format!("the value of {key:?} lacks its closing quote")),
                    Some('\'') => break,
                    Some('\\') => value.extend(it.next()),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = it.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(it.next());
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
}

fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A libpq conninfo string of `key=value` words, each value quoted (so a user or database
/// name with a space or a quote stays one value), for `pg_rewind --source-server`,
/// `pg_basebackup -d` and a standby's `primary_conninfo`.
pub(crate) fn conninfo(words: &[(&str, &str)]) -> String {
    words
        .iter()
        .map(|(k, v)| format!("{k}={}", quote(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

impl ConnTls {
    /// Parses a site's conninfo; the error names the problem, never a value but `sslmode`'s.
    pub(crate) fn parse(conninfo: Option<&str>) -> Result<ConnTls, String> {
        let mut tls = ConnTls {
            mode: None,
            root_cert: None,
            rest: String::new(),
        };
        let Some(s) = conninfo else {
            return Ok(tls);
        };
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            // URLs go to tokio-postgres whole (its sslmode values only).
            tls.rest = s.to_owned();
            return Ok(tls);
        }
        let mut rest = Vec::new();
        for (k, v) in conninfo_pairs(s)? {
            match k.as_str() {
                "sslmode" => tls.mode = Some(SslMode::parse(&v)?),
                "sslrootcert" => tls.root_cert = Some(PathBuf::from(v)),
                _ => rest.push(format!("{k}={}", quote(&v))),
            }
        }
        tls.rest = rest.join(" ");
        if matches!(tls.mode, Some(SslMode::VerifyCa | SslMode::VerifyFull))
            && tls.root_cert.is_none()
        {
            return Err(format!(
                "sslmode {} needs sslrootcert (a PEM file of the CAs to trust)",
                tls.mode.map_or("", SslMode::name)
            ));
        }
        if tls.root_cert.as_deref().is_some_and(Path::is_relative) {
            return Err("sslrootcert must be an absolute path".into());
        }
        Ok(tls)
    }

    /// `sslmode` and `sslrootcert` as libpq conninfo words to append to the conninfo of a
    /// command (`pg_rewind`, `pg_basebackup`) or of a standby; empty when not given.
    pub(crate) fn libpq_words(&self) -> String {
        let mut s = String::new();
        if let Some(m) = self.mode {
            s.push_str(&format!(" sslmode={}", m.name()));
        }
        if let Some(r) = &self.root_cert {
            s.push_str(&format!(" sslrootcert={}", quote(&r.to_string_lossy())));
        }
        s
    }

    /// How the mode is named in errors.
    pub(crate) fn shown(&self) -> String {
        match self.mode {
            Some(m) => format!(" with sslmode={}", m.name()),
            None => String::new(),
        }
    }

    /// The rustls connector and tokio-postgres' own mode; `None`: no TLS.
    pub(crate) fn connector(
        &self,
    ) -> Result<
        Option<(
            tokio_postgres_rustls::MakeRustlsConnect,
            tokio_postgres::config::SslMode,
        )>,
        String,
    > {
        use tokio_postgres::config::SslMode as Tp;
        let (verify, tp) = match self.mode {
            None | Some(SslMode::Disable) => return Ok(None),
            Some(SslMode::Prefer) => (None, Tp::Prefer),
            Some(SslMode::Require) => (self.root_cert.as_ref().map(|_| false), Tp::Require),
            Some(SslMode::VerifyCa) => (Some(false), Tp::Require),
            Some(SslMode::VerifyFull) => (Some(true), Tp::Require),
        };
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("no usable TLS versions: {e}"))?;
        let verifier: Arc<dyn ServerCertVerifier> = match (verify, &self.root_cert) {
            (Some(full), Some(file)) => {
                let webpki = WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots(file)?),
                    provider.clone(),
                )
                .build()
                .map_err(|e| format!("sslrootcert {}: {e}", file.display()))?;
                if full {
                    webpki
                } else {
                    Arc::new(AnyName(webpki))
                }
            }
            _ => Arc::new(AcceptAnyCert(provider)),
        };
        let cfg = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Some((
            tokio_postgres_rustls::MakeRustlsConnect::new(cfg),
            tp,
        )))
    }

    /// Words to add to a connection error: why TLS failed, and what was not trusted when
    /// that is why.
    pub(crate) fn explain(&self, e: &tokio_postgres::Error) -> String {
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            // rustls' error comes wrapped in an `io::Error`, whose `source` skips it.
            let inner = s
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .map_or(s, |i| i as &(dyn std::error::Error + 'static));
            if let Some(rustls::Error::InvalidCertificate(c)) =
                inner.downcast_ref::<rustls::Error>()
            {
                let why = match c {
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. } => {
                        "the server's certificate does not name this host"
                    }
                    _ => {
                        "the server's certificate is not trusted (not signed by a CA of \
                         sslrootcert, or expired)"
                    }
                };
                return format!(": {s}: {why}");
            }
            if s.to_string().contains("server does not support TLS") {
                return ": the server does not speak TLS (ssl = off)".to_owned();
            }
            if std::error::Error::source(s).is_none() {
                return format!(": {s}");
            }
            src = std::error::Error::source(s);
        }
        String::new()
    }
}

fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

fn roots(file: &Path) -> Result<RootCertStore, String> {
    let shown = file.display();
    let pem =
        std::fs::read(file).map_err(|e| format!("sslrootcert {shown} cannot be read: {e}"))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("sslrootcert {shown} is not PEM: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("sslrootcert {shown} holds a bad certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("sslrootcert {shown} holds no certificate"));
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_spaces_and_quotes_stay_one_conninfo_value() {
        let s = conninfo(&[
            ("host", "127.0.0.1"),
            ("port", "5432"),
            ("user", "dr admin"),
            ("dbname", "it's a \\ db"),
        ]);
        // Unquoted, libpq reads `user=dr` and a stray word `admin` (an error).
        let cfg: tokio_postgres::Config = s.parse().unwrap();
        assert_eq!(cfg.get_user(), Some("dr admin"));
        assert_eq!(cfg.get_dbname(), Some("it's a \\ db"));
        assert_eq!(cfg.get_ports(), [5432]);
    }

    #[test]
    fn conninfo_splits_into_tls_and_the_rest() {
        let t = ConnTls::parse(Some(
            "password='a b\\'c' sslmode = verify-full sslrootcert=/etc/ca.pem connect_timeout=5",
        ))
        .unwrap();
        assert_eq!(t.mode, Some(SslMode::VerifyFull));
        assert_eq!(t.root_cert.as_deref(), Some(Path::new("/etc/ca.pem")));
        assert_eq!(t.rest, "password='a b\\'c' connect_timeout='5'");
        let cfg: tokio_postgres::Config = t.rest.parse().unwrap();
        assert_eq!(cfg.get_password(), Some(&b"a b'c"[..]));
        assert_eq!(
            t.libpq_words(),
            " sslmode=verify-full sslrootcert='/etc/ca.pem'"
        );
        assert_eq!(ConnTls::parse(None).unwrap().mode, None);
    }

    #[test]
    fn bad_tls_settings_are_named() {
        let e = ConnTls::parse(Some("sslmode=verify-ca")).unwrap_err();
        assert!(e.contains("needs sslrootcert"), "{e}");
        let e = ConnTls::parse(Some("sslmode=allow")).unwrap_err();
        assert!(e.contains("\"allow\" is not one of"), "{e}");
        let e = ConnTls::parse(Some("password='open")).unwrap_err();
        assert!(e.contains("closing quote") && !e.contains("open"), "{e}");
        let e = ConnTls::parse(Some("sslmode=require sslrootcert=ca.pem")).unwrap_err();
        assert!(e.contains("absolute"), "{e}");
    }
}
