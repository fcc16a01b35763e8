//! TLS on the listeners: a rustls acceptor (ring, TLS 1.2 and 1.3, ALPN `http/1.1`) whose
//! certificate is re-read from its files while the daemon runs.
//!
//! Kubernetes updates a mounted Secret in place (it swaps a `..data` symlink), so the paths stay
//! the same while their contents change. The reloader reads both files every
//! `tls.reload_interval` and compares them with what it saw last; on a change it builds a new
//! [`CertifiedKey`] and swaps it into the resolver. Each handshake asks the resolver once, so
//! new connections get the new certificate and established ones keep the session they have.
//! A pair that does not load (a half-written file, a key that does not match the certificate)
//! leaves the old certificate in place, logs a warning and is counted, once per distinct pair.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio_rustls::rustls::crypto::{ring, CryptoProvider};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, version, ServerConfig};
pub use tokio_rustls::server::TlsStream;

use crate::config::TlsConfig;
use crate::metrics::Metrics;

/// Why a certificate and key could not be loaded. The message names the config key at fault.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct LoadError {
    pub key: &'static str,
    pub message: String,
}

impl LoadError {
    fn new(key: &'static str, message: impl Into<String>) -> Self {
        LoadError {
            key,
            message: message.into(),
        }
    }
}

/// Accepts TLS connections with the certificate currently loaded from `tls.cert_file` and
/// `tls.key_file`. One acceptor serves every TLS listener.
pub struct TlsAcceptor {
    acceptor: tokio_rustls::TlsAcceptor,
    resolver: Arc<CurrentCert>,
    source: CertSource,
    /// The file contents the current certificate was built from, where the reloader starts.
    loaded: PemPair,
    reload_interval: Duration,
    handshake_timeout: Duration,
    metrics: Arc<Metrics>,
}

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("cert_file", &self.source.cert_file)
            .field("key_file", &self.source.key_file)
            .finish_non_exhaustive()
    }
}

impl TlsAcceptor {
    /// Reads and checks the certificate and key; an error names `tls.cert_file` or
    /// `tls.key_file`, so a daemon with a broken certificate refuses to start.
    pub fn load(config: &TlsConfig, metrics: Arc<Metrics>) -> Result<TlsAcceptor, LoadError> {
        let provider = Arc::new(ring::default_provider());
        let source = CertSource {
            cert_file: config.cert_file.clone(),
            key_file: config.key_file.clone(),
            provider: provider.clone(),
        };
        let loaded = source.read_blocking()?;
        let resolver = Arc::new(CurrentCert {
            current: RwLock::new(Arc::new(source.build(&loaded)?)),
        });
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&version::TLS13, &version::TLS12])
            .map_err(|e| LoadError::new("tls", e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        // Only HTTP/1.1 is served; a client that offers ALPN learns that in the handshake.
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            resolver,
            source,
            loaded,
            reload_interval: config.reload_interval,
            handshake_timeout: config.handshake_timeout,
            metrics,
        })
    }

    /// Starts the task that re-reads the files every `reload_interval` until shutdown.
    pub fn spawn_reloader(&self, mut shutdown: watch::Receiver<bool>) {
        let mut reloader = Reloader {
            source: self.source.clone(),
            resolver: self.resolver.clone(),
            metrics: self.metrics.clone(),
            last_seen: Some(self.loaded.clone()),
        };
        let period = self.reload_interval;
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let stopping = tokio::select! {
                    _ = ticks.tick() => false,
                    _ = shutdown.wait_for(|stop| *stop) => true,
                };
                if stopping {
                    return;
                }
                reloader.check().await;
            }
        });
    }

    /// Runs the server side of the handshake on `io` within `handshake_timeout`. A failure or
    /// timeout is counted for `listener`; the caller then drops the connection.
    pub async fn accept<IO>(&self, io: IO, listener: &'static str) -> io::Result<TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let result =
            match tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(io)).await {
                Ok(result) => result,
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TLS handshake not completed in time",
                )),
            };
        if result.is_err() {
            self.metrics
                .tls_handshake_failures
                .with_label_values(&[listener])
                .inc();
        }
        result
    }
}

/// The certificate every new handshake gets; replaced as a whole on reload.
#[derive(Debug)]
struct CurrentCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CurrentCert {
    fn replace(&self, key: CertifiedKey) {
        // The lock only guards an Arc swap, so a panic elsewhere cannot leave it half-written.
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
    }
}

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

/// The raw contents of the certificate and key files.
#[derive(Clone, PartialEq, Eq)]
struct PemPair {
    cert: Vec<u8>,
    key: Vec<u8>,
}

/// Where the certificate comes from and how it is turned into a signing key.
#[derive(Clone)]
struct CertSource {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
}

impl CertSource {
    fn read_blocking(&self) -> Result<PemPair, LoadError> {
        let read = |key: &'static str, path: &Path| {
            std::fs::read(path)
                .map_err(|e| LoadError::new(key, format!("cannot read {}: {e}", path.display())))
        };
        Ok(PemPair {
            cert: read("tls.cert_file", &self.cert_file)?,
            key: read("tls.key_file", &self.key_file)?,
        })
    }

    async fn read(&self) -> Result<PemPair, LoadError> {
        let source = self.clone();
        tokio::task::spawn_blocking(move || source.read_blocking())
            .await
            .unwrap_or_else(|e| Err(LoadError::new("tls", format!("reader task failed: {e}"))))
    }

    /// Parses the PEM pair and checks that the key belongs to the first certificate.
    fn build(&self, pem: &PemPair) -> Result<CertifiedKey, LoadError> {
        let cert_err = |message: String| LoadError::new("tls.cert_file", message);
        let key_err = |message: String| LoadError::new("tls.key_file", message);
        let chain = CertificateDer::pem_slice_iter(&pem.cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| cert_err(format!("{}: not PEM: {e}", self.cert_file.display())))?;
        if chain.is_empty() {
            return Err(cert_err(format!(
                "{} holds no CERTIFICATE section",
                self.cert_file.display()
            )));
        }
        let key = PrivateKeyDer::from_pem_slice(&pem.key).map_err(|e| {
            key_err(format!(
                "{}: no PKCS#8, RSA or EC private key in PEM: {e}",
                self.key_file.display()
            ))
        })?;
        let signing_key = self
            .provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| {
                key_err(format!(
                    "{}: unusable private key: {e}",
                    self.key_file.display()
                ))
            })?;
        let certified = CertifiedKey::new(chain, signing_key);
        match certified.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
                Ok(certified)
            }
            Err(rustls::Error::InconsistentKeys(_)) => Err(key_err(format!(
                "{} does not belong to the certificate in {}",
                self.key_file.display(),
                self.cert_file.display()
            ))),
            Err(e) => Err(cert_err(format!(
                "{}: not a usable certificate: {e}",
                self.cert_file.display()
            ))),
        }
    }
}

/// The reloader task's state.
struct Reloader {
    source: CertSource,
    resolver: Arc<CurrentCert>,
    metrics: Arc<Metrics>,
    /// The pair read last time, whether it loaded or not (`None`: the files could not be read),
    /// so an unchanged broken pair is reported once, not every interval.
    last_seen: Option<PemPair>,
}

impl Reloader {
    async fn check(&mut self) {
        let seen = match self.source.read().await {
            Ok(pair) => Some(pair),
            Err(e) => {
                if self.last_seen.is_some() {
                    self.failed(&e);
                }
                None
            }
        };
        if seen == self.last_seen {
            return;
        }
        self.last_seen = seen;
        let Some(pair) = &self.last_seen else {
            return;
        };
        match self.source.build(pair) {
            Ok(key) => {
                self.resolver.replace(key);
                self.metrics
                    .tls_certificate_reloads
                    .with_label_values(&["ok"])
                    .inc();
                tracing::info!(
                    cert_file = %self.source.cert_file.display(),
                    "TLS certificate reloaded; new connections use it"
                );
            }
            Err(e) => self.failed(&e),
        }
    }

    fn failed(&self, error: &LoadError) {
        self.metrics
            .tls_certificate_reloads
            .with_label_values(&["error"])
            .inc();
        tracing::warn!(%error, "TLS certificate not reloaded; still serving the previous one");
    }
}
