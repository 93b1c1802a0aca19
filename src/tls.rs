//! TLS on the public listener, for deployments without a terminating proxy: the certificate
//! chain and key of `[tls]`, checked at start (parsable, the key matching the certificate, valid
//! now) and read again every `tls.reload` and on SIGHUP. A changed pair that passes the same
//! checks is served from the next handshake on; one that does not is refused with a warning and
//! the current pair stays. Open connections keep the certificate they were accepted with.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::config::{TlsConfig, setting_label};

/// Certificate and key files larger than this are refused (a chain is a few kilobytes).
const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// A certificate this close to its end is loaded with a warning.
const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86_400);

/// Why a certificate and key were refused. Each names the setting (and its variable) and the
/// file, never the key's contents.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{setting}: cannot read {path}: {source}")]
    Read {
        setting: String,
        path: String,
        source: std::io::Error,
    },
    #[error("{setting}: {path} is larger than {MAX_FILE_BYTES} bytes; is it the right file?")]
    TooLarge { setting: String, path: String },
    #[error("{setting}: {path} holds no PEM {what}")]
    Missing {
        setting: String,
        path: String,
        what: &'static str,
    },
    #[error("{setting}: {path} is not valid PEM: {reason}")]
    Pem {
        setting: String,
        path: String,
        reason: String,
    },
    #[error("{setting}: the certificate in {path} cannot be parsed: {reason}")]
    Certificate {
        setting: String,
        path: String,
        reason: String,
    },
    #[error("{setting}: the key in {path} cannot be used: {reason}")]
    Key {
        setting: String,
        path: String,
        reason: String,
    },
    #[error("{key_setting}: the key in {key} does not match the certificate in {cert}")]
    Mismatch {
        key_setting: String,
        key: String,
        cert: String,
    },
    #[error("{setting}: the certificate in {path} expired at {at} (Unix time {unix})")]
    Expired {
        setting: String,
        path: String,
        at: String,
        unix: i64,
    },
    #[error("{setting}: the certificate in {path} is not valid before {at} (Unix time {unix})")]
    NotYetValid {
        setting: String,
        path: String,
        at: String,
        unix: i64,
    },
}

/// A checked certificate chain with its key.
struct Loaded {
    key: Arc<CertifiedKey>,
    /// The files' bytes it was made from, to tell a change.
    source: (Vec<u8>, Vec<u8>),
    /// The leaf's `notAfter`, Unix seconds.
    not_after: i64,
}

/// The node's TLS: an acceptor whose certificate follows the files.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
    resolver: Arc<Resolver>,
    cert: PathBuf,
    key: PathBuf,
    reload: Duration,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Hands every handshake the current certificate.
#[derive(Debug)]
struct Resolver {
    current: RwLock<Arc<CertifiedKey>>,
    source: RwLock<(Vec<u8>, Vec<u8>)>,
    /// The current leaf's `notAfter`, Unix seconds.
    not_after: AtomicI64,
    /// The files' bytes last refused.
    refused: Mutex<Option<(Vec<u8>, Vec<u8>)>>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Tls {
    /// Loads and checks `[tls]`'s files; `None` when TLS is off.
    pub fn load(config: &TlsConfig) -> Result<Option<Self>, TlsError> {
        let (Some(cert), Some(key)) = (&config.cert, &config.key) else {
            return Ok(None);
        };
        let loaded = load_pair(cert, key, crate::auth::unix_seconds())?;
        warn_if_ending(&loaded, cert);
        let resolver = Arc::new(Resolver {
            current: RwLock::new(loaded.key),
            source: RwLock::new(loaded.source),
            not_after: AtomicI64::new(loaded.not_after),
            refused: Mutex::new(None),
        });
        let mut server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Key {
                setting: setting_label("tls.key"),
                path: key.display().to_string(),
                reason: e.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        // The listener speaks HTTP/1.1 only (WebSocket upgrades).
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(Self {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            resolver,
            cert: cert.clone(),
            key: key.clone(),
            reload: config.reload,
        }))
    }

    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Reads the files again; serves them from the next handshake on if they changed and pass
    /// the checks. Returns whether the certificate changed.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let cert = read_limited(&self.cert, "tls.cert")?;
        let key = read_limited(&self.key, "tls.key")?;
        if *self
            .resolver
            .source
            .read()
            .unwrap_or_else(|e| e.into_inner())
            == (cert.clone(), key.clone())
        {
            return Ok(false);
        }
        let pair = (cert.clone(), key.clone());
        let loaded = match check_pair(
            &self.cert,
            &self.key,
            cert,
            key,
            crate::auth::unix_seconds(),
        ) {
            Ok(loaded) => loaded,
            Err(e) => {
                // Each refused pair of files counts once, however often it is read again.
                let mut refused = self
                    .resolver
                    .refused
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if refused.as_ref() != Some(&pair) {
                    metrics::counter!(crate::metrics::TLS_RELOADS, "result" => "refused")
                        .increment(1);
                    *refused = Some(pair);
                }
                return Err(e);
            }
        };
        warn_if_ending(&loaded, &self.cert);
        self.resolver
            .not_after
            .store(loaded.not_after, Ordering::Relaxed);
        record_loaded(loaded.not_after);
        *self
            .resolver
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner()) = loaded.key;
        *self
            .resolver
            .source
            .write()
            .unwrap_or_else(|e| e.into_inner()) = loaded.source;
        Ok(true)
    }

    /// Records the certificate loaded at start in the metrics, then reloads every
    /// `tls.reload` and on SIGHUP, until the returned task is aborted.
    pub fn spawn_reloader(&self) -> tokio::task::JoinHandle<()> {
        let tls = self.clone();
        crate::metrics::install();
        metrics::counter!(crate::metrics::TLS_HANDSHAKE_ERRORS).increment(0);
        metrics::counter!(crate::metrics::TLS_RELOADS, "result" => "refused").increment(0);
        record_loaded(self.resolver.not_after.load(Ordering::Relaxed));
        tokio::spawn(async move {
            let mut hangup = hangup();
            let mut every = tokio::time::interval(tls.reload);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            every.tick().await;
            // A refusal is logged once until the files change again.
            let mut refused: Option<String> = None;
            loop {
                let why = tokio::select! {
                    _ = every.tick() => "interval",
                    () = next_hangup(&mut hangup) => "sighup",
                };
                match tls.reload() {
                    Ok(true) => {
                        refused = None;
                        tracing::info!(trigger = why, cert = %tls.cert.display(), "TLS certificate reloaded");
                    }
                    Ok(false) => {}
                    Err(e) => {
                        let error = e.to_string();
                        if refused.as_deref() != Some(&error) {
                            tracing::warn!(trigger = why, %error, "TLS certificate files refused; still serving the previous certificate");
                            refused = Some(error);
                        }
                    }
                }
            }
        })
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = ();

#[cfg(unix)]
fn hangup() -> Hangup {
    use tokio::signal::unix::{SignalKind, signal};
    signal(SignalKind::hangup())
        .inspect_err(|e| tracing::debug!(error = %e, "no SIGHUP handler"))
        .ok()
}

#[cfg(not(unix))]
fn hangup() -> Hangup {}

#[cfg(unix)]
async fn next_hangup(hangup: &mut Hangup) {
    match hangup {
        Some(signal) => {
            if signal.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangup) {
    std::future::pending().await
}

fn record_loaded(not_after: i64) {
    metrics::counter!(crate::metrics::TLS_RELOADS, "result" => "loaded").increment(1);
    metrics::gauge!(crate::metrics::TLS_CERT_EXPIRY).set(not_after as f64);
}

fn warn_if_ending(loaded: &Loaded, cert: &Path) {
    let left = loaded.not_after - crate::auth::unix_seconds();
    if left < EXPIRY_WARNING.as_secs() as i64 {
        tracing::warn!(
            cert = %cert.display(),
            days_left = left / 86_400,
            "the TLS certificate expires soon"
        );
    }
}

/// Reads at most [`MAX_FILE_BYTES`] of `path`.
fn read_limited(path: &Path, setting: &str) -> Result<Vec<u8>, TlsError> {
    use std::io::Read;
    let read_error = |source| TlsError::Read {
        setting: setting_label(setting),
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(TlsError::TooLarge {
            setting: setting_label(setting),
            path: path.display().to_string(),
        });
    }
    Ok(bytes)
}

fn load_pair(cert: &Path, key: &Path, now: i64) -> Result<Loaded, TlsError> {
    let cert_bytes = read_limited(cert, "tls.cert")?;
    let key_bytes = read_limited(key, "tls.key")?;
    check_pair(cert, key, cert_bytes, key_bytes, now)
}

/// Parses and checks a chain and key: PEM, a parsable leaf valid at `now`, a usable key that
/// matches the leaf.
fn check_pair(
    cert_path: &Path,
    key_path: &Path,
    cert_bytes: Vec<u8>,
    key_bytes: Vec<u8>,
    now: i64,
) -> Result<Loaded, TlsError> {
    let cert_setting = || setting_label("tls.cert");
    let key_setting = || setting_label("tls.key");
    let cert_shown = cert_path.display().to_string();
    let key_shown = key_path.display().to_string();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            setting: cert_setting(),
            path: cert_shown.clone(),
            reason: e.to_string(),
        })?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::Missing {
            setting: cert_setting(),
            path: cert_shown,
            what: "certificate (-----BEGIN CERTIFICATE-----)",
        });
    };
    let (not_before, not_after) = validity(leaf).map_err(|reason| TlsError::Certificate {
        setting: cert_setting(),
        path: cert_shown.clone(),
        reason,
    })?;
    if now > not_after {
        return Err(TlsError::Expired {
            setting: cert_setting(),
            path: cert_shown,
            at: format_unix(not_after),
            unix: not_after,
        });
    }
    if now < not_before {
        return Err(TlsError::NotYetValid {
            setting: cert_setting(),
            path: cert_shown,
            at: format_unix(not_before),
            unix: not_before,
        });
    }
    let key = match PrivateKeyDer::from_pem_slice(&key_bytes) {
        Ok(key) => key,
        Err(rustls::pki_types::pem::Error::NoItemsFound) => {
            return Err(TlsError::Missing {
                setting: key_setting(),
                path: key_shown,
                what: "private key (-----BEGIN PRIVATE KEY-----, RSA or EC)",
            });
        }
        Err(e) => {
            return Err(TlsError::Pem {
                setting: key_setting(),
                path: key_shown,
                reason: e.to_string(),
            });
        }
    };
    let provider = provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::Key {
            setting: key_setting(),
            path: key_shown.clone(),
            reason: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(TlsError::Mismatch {
                key_setting: key_setting(),
                key: key_shown,
                cert: cert_shown,
            });
        }
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(e) => {
            return Err(TlsError::Certificate {
                setting: cert_setting(),
                path: cert_shown,
                reason: e.to_string(),
            });
        }
    }
    Ok(Loaded {
        key: Arc::new(certified),
        source: (cert_bytes, key_bytes),
        not_after,
    })
}

/// The leaf's `notBefore` and `notAfter`, Unix seconds.
fn validity(leaf: &CertificateDer<'_>) -> Result<(i64, i64), String> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| e.to_string())?;
    let validity = cert.validity();
    Ok((
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    ))
}

/// `2026-12-05T07:00:00Z`.
fn format_unix(unix: i64) -> String {
    match u64::try_from(unix) {
        Ok(secs) => {
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(secs))
                .to_string()
        }
        Err(_) => format!("Unix time {unix}"),
    }
}
