//! Native HTTPS through tokio-rustls: PEM loading with clear errors, ALPN
//! (h2, http/1.1), and certificate reload on SIGHUP.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::TlsConfig;

/// Why a certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

/// Load a certificate chain and key from PEM files into a signing key.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| TlsError(format!("server.tls.cert {}: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError(format!("server.tls.cert {}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(TlsError(format!(
            "server.tls.cert {}: no PEM certificate found",
            cert.display()
        )));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        TlsError(format!("server.tls.key {}: no usable private key: {e}", key.display()))
    })?;
    let signing = any_supported_type(&key_der)
        .map_err(|e| TlsError(format!("server.tls.key {}: unsupported key: {e}", key.display())))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| {
        TlsError(format!(
            "server.tls.key {} does not belong to server.tls.cert {}: {e}",
            key.display(),
            cert.display()
        ))
    })?;
    Ok(certified)
}

/// A certificate resolver whose key can be swapped while serving.
pub struct ReloadableCert {
    paths: (PathBuf, PathBuf),
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for ReloadableCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadableCert").field("cert", &self.paths.0).finish_non_exhaustive()
    }
}

impl ReloadableCert {
    /// Load the files once; fails with a message naming the bad file.
    pub fn load(cfg: &TlsConfig) -> Result<Self, TlsError> {
        let key = load_certified_key(&cfg.cert, &cfg.key)?;
        Ok(Self { paths: (cfg.cert.clone(), cfg.key.clone()), current: RwLock::new(Arc::new(key)) })
    }

    /// Re-read the files; on failure the old certificate stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let key = load_certified_key(&self.paths.0, &self.paths.1)?;
        let mut slot = self.current.write().unwrap_or_else(|p| p.into_inner());
        *slot = Arc::new(key);
        Ok(())
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// A rustls server config over `certs` that offers h2 and http/1.1 by ALPN.
pub fn server_config(certs: Arc<ReloadableCert>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("tls: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Handle SIGHUP: reload `certs` when serving TLS, else log that there is
/// nothing to reload. The handler is installed before this returns, so a
/// HUP (`systemctl reload`) never kills the process (unix only).
pub fn reload_on_sighup(certs: Option<Arc<ReloadableCert>>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; certificate reload disabled");
                return;
            }
        };
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                let Some(certs) = &certs else {
                    tracing::info!("SIGHUP: nothing to reload (no [server.tls])");
                    continue;
                };
                match certs.reload() {
                    Ok(()) => tracing::info!("TLS certificate reloaded"),
                    Err(e) => {
                        tracing::error!(error = %e, "TLS certificate reload failed; keeping the old one")
                    }
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = certs;
}
