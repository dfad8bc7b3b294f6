//! TLS, both ways: the certificates the proxy trusts and presents when it calls a region
//! (`upstream.ca_file`, `cert_file`, `key_file`), the certificate its own listener serves
//! (`server.tls_cert_file`, `server.tls_key_file`, reloaded when they change), and telling a
//! TLS failure from other transport failures, so logs, metrics and clients say "TLS".

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Every certificate of a PEM file; none is an error.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            format!("{}: no PEM private key in it", path.display())
        }
        e => format!("{}: {e}", path.display()),
    })
}

/// How the proxy's calls to one region do TLS beyond the defaults (webpki's roots and the
/// system trust store): more trusted roots, and a client certificate.
#[derive(Clone, Default)]
pub struct RegionTls {
    roots: Vec<reqwest::Certificate>,
    identity: Option<reqwest::Identity>,
}

impl std::fmt::Debug for RegionTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionTls")
            .field("roots", &self.roots.len())
            .field("client_certificate", &self.identity.is_some())
            .finish()
    }
}

impl RegionTls {
    /// Reads and checks the files; an error names the key at fault and why.
    pub fn load(
        ca_file: Option<&Path>,
        cert_file: Option<&Path>,
        key_file: Option<&Path>,
    ) -> Result<RegionTls, (&'static str, String)> {
        let mut tls = RegionTls::default();
        if let Some(path) = ca_file {
            for cert in certificates(path).map_err(|e| ("ca_file", e))? {
                let cert = reqwest::Certificate::from_der(&cert)
                    .map_err(|e| ("ca_file", format!("{}: {e}", path.display())))?;
                tls.roots.push(cert);
            }
        }
        match (cert_file, key_file) {
            (None, None) => {}
            (Some(_), None) => return Err(("cert_file", "needs key_file as well".into())),
            (None, Some(_)) => return Err(("key_file", "needs cert_file as well".into())),
            (Some(cert_path), Some(key_path)) => {
                // Parsed here first for errors that name the file; reqwest wants one PEM.
                certificates(cert_path).map_err(|e| ("cert_file", e))?;
                private_key(key_path).map_err(|e| ("key_file", e))?;
                let mut pem = std::fs::read(cert_path)
                    .map_err(|e| ("cert_file", format!("{}: {e}", cert_path.display())))?;
                pem.push(b'\n');
                pem.extend(
                    std::fs::read(key_path)
                        .map_err(|e| ("key_file", format!("{}: {e}", key_path.display())))?,
                );
                let identity = reqwest::Identity::from_pem(&pem)
                    .map_err(|e| ("cert_file", format!("{}: {e}", cert_path.display())))?;
                tls.identity = Some(identity);
            }
        }
        // What reqwest only checks when it builds a client (a key that does not fit, say).
        tls.apply(reqwest::Client::builder())
            .build()
            .map_err(|e| ("cert_file", error_chain(&e)))?;
        Ok(tls)
    }

    pub fn apply(&self, mut builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        for root in &self.roots {
            builder = builder.add_root_certificate(root.clone());
        }
        if let Some(identity) = &self.identity {
            builder = builder.identity(identity.clone());
        }
        builder
    }
}

/// `e` and its causes, as one line.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The TLS error somewhere in `e`'s causes, if any: a certificate the proxy does not trust,
/// a handshake the peer refused, a peer that does not speak TLS. `std::io::Error` hides the
/// error it wraps from `source()` (it returns that error's own source), so each one is
/// opened by hand.
pub fn tls_failure<'e>(e: &'e (dyn std::error::Error + 'static)) -> Option<&'e rustls::Error> {
    let mut next = Some(e);
    while let Some(error) = next {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(inner) = error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(tls) = tls_failure(inner) {
                return Some(tls);
            }
        }
        next = error.source();
    }
    None
}

/// The rustls configuration of one certificate and key, for HTTP/1.1.
fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain = certificates(cert)?;
    let key = private_key(key)?;
    // ring explicitly: no process-wide default provider is installed.
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| format!("{}: {e}", cert.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The listener's certificate, replaced when its files change: a renewed certificate
/// (cert-manager rewriting a Secret, say) is served from the next connection on, without a
/// restart; connections already open keep theirs.
pub struct ServerTls {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<rustls::ServerConfig>>,
    /// The files' modification times when they were last loaded (or last failed to load, so
    /// that a broken pair is reported once, not at every check).
    seen: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

impl ServerTls {
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<ServerTls, String> {
        let seen = modified(cert_file, key_file);
        Ok(ServerTls {
            current: RwLock::new(server_config(cert_file, key_file)?),
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            seen: Mutex::new(seen),
        })
    }

    /// The acceptor for the next connection.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = self.current.read().unwrap_or_else(|p| p.into_inner());
        tokio_rustls::TlsAcceptor::from(config.clone())
    }

    /// Reads the files again when `forced` (SIGHUP) or when they changed since last looked at.
    /// A pair that does not load leaves the current certificate in place.
    pub fn reload(&self, forced: bool) -> Reload {
        let now = modified(&self.cert_file, &self.key_file);
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if !forced && *seen == now {
                return Reload::Unchanged;
            }
            *seen = now;
        }
        match server_config(&self.cert_file, &self.key_file) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = config;
                Reload::Loaded
            }
            Err(e) => Reload::Failed(e),
        }
    }
}

/// What [`ServerTls::reload`] did.
#[derive(Debug, PartialEq)]
pub enum Reload {
    Unchanged,
    Loaded,
    /// Kept the certificate it had; why the files did not load.
    Failed(String),
}

fn modified(cert: &Path, key: &Path) -> (Option<SystemTime>, Option<SystemTime>) {
    let at = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (at(cert), at(key))
}

/// Reloads `tls` on SIGHUP, and when its files change (checked every `every`); logs what it
/// did. Aborted with the listener.
pub fn spawn_reloader(
    tls: Arc<ServerTls>,
    every: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let forced = match hangup.as_mut() {
                Some(hangup) => tokio::select! {
                    _ = hangup.recv() => true,
                    _ = ticks.tick() => false,
                },
                None => {
                    ticks.tick().await;
                    false
                }
            };
            #[cfg(not(unix))]
            let forced = {
                ticks.tick().await;
                false
            };
            let (cert, key) = (tls.cert_file.display(), tls.key_file.display());
            match tls.reload(forced) {
                Reload::Unchanged => {}
                Reload::Loaded => tracing::info!(%cert, %key, forced, "TLS certificate reloaded"),
                Reload::Failed(error) => tracing::warn!(
                    %error,
                    "TLS certificate files did not load; still serving the previous certificate"
                ),
            }
        }
    })
}
