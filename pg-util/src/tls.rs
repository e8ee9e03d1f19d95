//! TLS for PostgreSQL connections: rustls, with the server's certificate chain and host name
//! always verified (what libpq calls `verify-full`) against the CA certificates of
//! `postgres.tls_root_cert`, or the system's roots when it is unset.
//!
//! There is deliberately no "encrypt but trust anyone" mode: it would stop only an eavesdropper
//! who cannot also intercept, and a password sent over it is as exposed as over plain TCP.

use std::path::Path;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::PgError;

/// A connector verifying servers against the CA certificates (PEM) in `root_cert`, or the
/// system's roots without one.
pub fn connector(root_cert: Option<&Path>) -> Result<MakeRustlsConnect, PgError> {
    let mut roots = RootCertStore::empty();
    match root_cert {
        Some(path) => {
            let fail = |reason: String| PgError::Tls(format!("{}: {reason}", path.display()));
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| fail(e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| fail(e.to_string()))?;
            if certs.is_empty() {
                return Err(fail("holds no PEM certificate".into()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| fail(e.to_string()))?;
            }
        }
        None => {
            // Unreadable entries are skipped: a server whose CA is missing fails verification
            // with a message naming the certificate problem.
            let (added, _) =
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            tracing::debug!(added, "system CA certificates loaded for PostgreSQL TLS");
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PgError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}
