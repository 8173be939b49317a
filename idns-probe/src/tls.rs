//! TLS client settings of the HTTP probe, shared between probes.
//!
//! Loading the system's CA store costs a few hundred kilobytes and a directory scan; doing it
//! for each of thousands of probes would cost more memory than everything else together. So
//! the configuration that trusts the system's CAs is built once per process and shared, and
//! only probes with their own CA bundle get a configuration of their own.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use idns_core::tls::AcceptAnyCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

fn finish(
    builder: rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>,
) -> ClientConfig {
    let mut cfg = builder.with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    cfg
}

fn builder(
    provider: Arc<CryptoProvider>,
) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, String> {
    ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("no usable TLS versions: {e}"))
}

/// The shared configuration that verifies servers against the system's CAs; an error when the
/// system has none.
pub(crate) fn system() -> Result<ClientConfig, String> {
    static SYSTEM: OnceLock<Result<ClientConfig, String>> = OnceLock::new();
    SYSTEM
        .get_or_init(|| {
            let provider = provider();
            let verifier = rustls_platform_verifier::Verifier::new(provider.clone())
                .map_err(|e| format!("cannot load the system's CA certificates: {e}"))?;
            Ok(finish(
                builder(provider)?
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(verifier)),
            ))
        })
        .clone()
}

/// A configuration that trusts only the CAs of a PEM bundle.
pub(crate) fn with_ca_file(file: &Path) -> Result<ClientConfig, String> {
    let pem = std::fs::read(file).map_err(|e| format!("cannot be read: {e}"))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("is not a PEM bundle: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("holds a certificate that cannot be a trust anchor: {e}"))?;
    }
    if roots.is_empty() {
        return Err("holds no PEM certificate".to_owned());
    }
    Ok(finish(builder(provider())?.with_root_certificates(roots)))
}

/// The shared configuration that accepts any certificate (the explicit, dangerous opt-out).
pub(crate) fn insecure() -> Result<ClientConfig, String> {
    static INSECURE: OnceLock<Result<ClientConfig, String>> = OnceLock::new();
    INSECURE
        .get_or_init(|| {
            let provider = provider();
            let verifier = AcceptAnyCert(provider.clone());
            Ok(finish(
                builder(provider)?
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(verifier)),
            ))
        })
        .clone()
}

/// The shared configuration for a plain-HTTP probe on a machine without system CAs: it never
/// needs TLS, and refuses every certificate if a server ever offers one.
pub(crate) fn refuse_all() -> Result<ClientConfig, String> {
    static REFUSE: OnceLock<Result<ClientConfig, String>> = OnceLock::new();
    REFUSE
        .get_or_init(|| {
            let provider = provider();
            let verifier = RefuseAll(provider.clone());
            Ok(finish(
                builder(provider)?
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(verifier)),
            ))
        })
        .clone()
}

/// Refuses every certificate.
#[derive(Debug)]
struct RefuseAll(Arc<CryptoProvider>);

impl ServerCertVerifier for RefuseAll {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Err(rustls::Error::General(
            "no CA certificates are available on this machine".to_owned(),
        ))
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("refused".to_owned()))
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("refused".to_owned()))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
