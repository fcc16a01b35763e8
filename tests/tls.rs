//! TLS on the listeners, against the real daemon binary: real Gradle over https, certificate
//! rotation the way Kubernetes updates a mounted Secret, refused TLS 1.1 and plain HTTP, broken
//! reloads, handshake deadlines and start-up errors.
//!
//! Certificates come from the `openssl` command line (a test CA and leaves signed by it, with
//! `subjectAltName` 127.0.0.1 and localhost): the same tool an operator uses, and no extra crate
//! to compile. The leaves use every key format the daemon reads: PKCS#8, SEC1 (EC) and PKCS#1
//! (RSA). The test's own TLS client is tokio-rustls with ring, trusting only the test CA.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::gradle::{assert_outcome, Project, DISABLED};
use common::{eventually, metric_value, metrics, Daemon};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, version, ClientConfig, RootCertStore};

const KEY: &str = "0123456789abcdef0123456789abcdef";
const FAILURES_GRADLE: &str = "build_cache_proxy_tls_handshake_failures_total{listener=\"gradle\"}";
const RELOADS_OK: &str = "build_cache_proxy_tls_certificate_reloads_total{result=\"ok\"}";
const RELOADS_ERROR: &str = "build_cache_proxy_tls_certificate_reloads_total{result=\"error\"}";

fn openssl(args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("run `openssl` (Debian: apt-get install -y openssl)");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Private key formats of the test leaves.
#[derive(Clone, Copy)]
enum KeyFormat {
    /// `BEGIN PRIVATE KEY` (EC P-256)
    Pkcs8,
    /// `BEGIN EC PRIVATE KEY`
    Sec1,
    /// `BEGIN RSA PRIVATE KEY` (2048 bits)
    RsaPkcs1,
}

/// A test certificate authority in `dir`, and the leaves it signs.
struct Pki {
    dir: PathBuf,
}

/// A server certificate and its key, as files.
struct Leaf {
    cert: PathBuf,
    key: PathBuf,
}

impl Leaf {
    /// The DER of the certificate, as a client sees it in the handshake.
    fn der(&self) -> Vec<u8> {
        CertificateDer::from_pem_file(&self.cert)
            .unwrap()
            .as_ref()
            .to_vec()
    }
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        let pki = Pki {
            dir: dir.to_path_buf(),
        };
        openssl(&[
            "req",
            "-x509",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=build-cache-proxy test CA",
            "-days",
            "2",
            "-keyout",
            pki.path("ca.key").to_str().unwrap(),
            "-out",
            pki.ca().to_str().unwrap(),
        ]);
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn ca(&self) -> PathBuf {
        self.path("ca.crt")
    }

    /// A leaf for 127.0.0.1 and localhost signed by the CA, as `<name>.crt` and `<name>.key`.
    fn leaf(&self, name: &str, format: KeyFormat) -> Leaf {
        let key = self.path(&format!("{name}.key"));
        let cert = self.path(&format!("{name}.crt"));
        let csr = self.path(&format!("{name}.csr"));
        let ext = self.path(&format!("{name}.ext"));
        let key_arg = key.to_str().unwrap();
        match format {
            KeyFormat::Pkcs8 => openssl(&[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                key_arg,
            ]),
            KeyFormat::Sec1 => openssl(&[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                key_arg,
            ]),
            KeyFormat::RsaPkcs1 => openssl(&["genrsa", "-traditional", "-out", key_arg, "2048"]),
        }
        let expected_header = match format {
            KeyFormat::Pkcs8 => "-----BEGIN PRIVATE KEY-----",
            KeyFormat::Sec1 => "-----BEGIN EC PRIVATE KEY-----",
            KeyFormat::RsaPkcs1 => "-----BEGIN RSA PRIVATE KEY-----",
        };
        let key_text = std::fs::read_to_string(&key).unwrap();
        assert!(key_text.starts_with(expected_header), "{key_text}");
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n\
             basicConstraints=critical,CA:FALSE\n\
             extendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "req",
            "-new",
            "-key",
            key_arg,
            "-subj",
            &format!("/CN={name}"),
            "-out",
            csr.to_str().unwrap(),
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            csr.to_str().unwrap(),
            "-CA",
            self.ca().to_str().unwrap(),
            "-CAkey",
            self.path("ca.key").to_str().unwrap(),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            ext.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ]);
        Leaf { cert, key }
    }
}

/// Config text for a daemon serving `leaf` on the Gradle listener.
/// A test CA, a server certificate from it, and a daemon serving TLS with that certificate
/// (`extra` adds lines to `[tls]`).
fn serving_tls(tmp: &Path, extra: &str) -> (Pki, Leaf, Daemon) {
    let pki = Pki::new(&tmp.join("pki"));
    let leaf = pki.leaf("server", KeyFormat::Pkcs8);
    let daemon = Daemon::start(
        &tmp.join("daemon"),
        &tls_config(&leaf.cert, &leaf.key, extra),
    );
    (pki, leaf, daemon)
}

fn tls_config(cert: &Path, key: &Path, extra: &str) -> String {
    format!(
        "[tls]\ncert_file = {:?}\nkey_file = {:?}\nreload_interval = \"100ms\"\n{extra}",
        cert.to_str().unwrap(),
        key.to_str().unwrap()
    )
}

/// A TLS client trusting only the test CA, limited to `versions`.
fn connector(
    pki: &Pki,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> tokio_rustls::TlsConnector {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.ca()).unwrap())
        .unwrap();
    let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

type Conn = BufReader<TlsStream<TcpStream>>;

async fn connect(connector: &tokio_rustls::TlsConnector, addr: SocketAddr) -> Conn {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::IpAddress(addr.ip().into());
    BufReader::new(connector.connect(name, tcp).await.unwrap())
}

/// The certificate the server presented on this connection.
fn served_cert(conn: &Conn) -> Vec<u8> {
    conn.get_ref().get_ref().1.peer_certificates().unwrap()[0]
        .as_ref()
        .to_vec()
}

/// One HTTP/1.1 request on a kept-alive connection; returns the status code.
async fn request(conn: &mut Conn, method: &str, path: &str, body: &[u8]) -> u16 {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let stream = conn.get_mut();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    stream.flush().await.unwrap();
    let mut status_line = String::new();
    conn.read_line(&mut status_line).await.unwrap();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP status line: {status_line:?}"));
    let mut content_length = 0;
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).await.unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0; content_length];
    if method != "HEAD" {
        conn.read_exact(&mut body).await.unwrap();
    }
    status
}

/// Replaces `target`'s contents in one step: write a sibling, then rename over it.
fn replace_file(target: &Path, contents: &[u8]) {
    let tmp = target.with_extension("new");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, target).unwrap();
}

async fn metric(daemon: &Daemon, series: &str) -> f64 {
    metric_value(&metrics(daemon).await, series)
}

/// A mounted Kubernetes Secret: `tls.crt` and `tls.key` are symlinks through `..data` to a
/// timestamped directory, and an update swaps `..data` in one rename. The paths never change.
struct SecretVolume {
    dir: PathBuf,
    version: u32,
}

impl SecretVolume {
    fn new(dir: &Path, leaf: &Leaf) -> SecretVolume {
        std::fs::create_dir_all(dir).unwrap();
        let mut volume = SecretVolume {
            dir: dir.to_path_buf(),
            version: 0,
        };
        volume.update(leaf);
        for name in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name)).unwrap();
        }
        volume
    }

    fn cert(&self) -> PathBuf {
        self.dir.join("tls.crt")
    }

    fn key(&self) -> PathBuf {
        self.dir.join("tls.key")
    }

    /// Writes the new pair into a fresh directory and points `..data` at it atomically.
    fn update(&mut self, leaf: &Leaf) {
        self.version += 1;
        let versioned = format!("..v{}", self.version);
        let target = self.dir.join(&versioned);
        std::fs::create_dir(&target).unwrap();
        std::fs::copy(&leaf.cert, target.join("tls.crt")).unwrap();
        std::fs::copy(&leaf.key, target.join("tls.key")).unwrap();
        let staged = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&versioned, &staged).unwrap();
        std::fs::rename(&staged, self.dir.join("..data")).unwrap();
    }
}

#[test]
fn gradle_builds_over_https_and_the_second_build_is_from_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let (pki, _leaf, daemon) = serving_tls(tmp.path(), "");

    // The JVM trusts the test CA through a PKCS12 trust store, set as build system properties
    // in the project's gradle.properties, as a user would.
    let trust_store = tmp.path().join("truststore.p12");
    let keytool = Command::new("keytool")
        .args([
            "-importcert",
            "-noprompt",
            "-alias",
            "build-cache-proxy-test-ca",
        ])
        .arg("-file")
        .arg(pki.ca())
        .arg("-keystore")
        .arg(&trust_store)
        .args(["-storetype", "PKCS12", "-storepass", "changeit"])
        .output()
        .expect("run keytool (comes with the JDK that Gradle runs on)");
    assert!(
        keytool.status.success(),
        "keytool: {}",
        String::from_utf8_lossy(&keytool.stderr)
    );
    let project = Project::new(tmp.path(), "project", &tmp.path().join("gradle-home"));
    std::fs::write(
        project.dir.join("gradle.properties"),
        format!(
            "systemProp.javax.net.ssl.trustStore={}\n\
             systemProp.javax.net.ssl.trustStorePassword=changeit\n\
             systemProp.javax.net.ssl.trustStoreType=PKCS12\n",
            trust_store.display()
        ),
    )
    .unwrap();
    let url = format!("https://{}/cache/", daemon.gradle);
    project.configure_cache(&url, None);

    let first = project.build(&["compileJava"]);
    assert_outcome(&first, ":compileJava", "");
    assert!(!first.contains(DISABLED), "cache disabled:\n{first}");
    let second = project.build(&["clean", "compileJava"]);
    assert_outcome(&second, ":compileJava", "FROM-CACHE");
    assert!(!second.contains(DISABLED), "cache disabled:\n{second}");

    let text = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(metrics(&daemon));
    let stored = "build_cache_proxy_requests_total{front=\"gradle\",method=\"PUT\",status=\"200\"}";
    assert_eq!(metric_value(&text, stored), 1.0, "metrics:\n{text}");
    assert_eq!(
        metric_value(&text, FAILURES_GRADLE),
        0.0,
        "metrics:\n{text}"
    );
}

#[tokio::test]
async fn a_rotated_secret_reaches_new_connections_and_open_ones_keep_working() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(&tmp.path().join("pki"));
    let old = pki.leaf("old", KeyFormat::Sec1);
    let new = pki.leaf("new", KeyFormat::RsaPkcs1);
    let mut secret = SecretVolume::new(&tmp.path().join("secret"), &old);
    let daemon = Daemon::start(
        &tmp.path().join("daemon"),
        &tls_config(&secret.cert(), &secret.key(), ""),
    );
    let client = connector(&pki, &[&version::TLS13, &version::TLS12]);

    let mut kept = connect(&client, daemon.gradle).await;
    assert!(served_cert(&kept) == old.der(), "not the first certificate");
    assert_eq!(
        request(&mut kept, "PUT", &format!("/cache/{KEY}"), b"before").await,
        200
    );

    secret.update(&new);
    eventually(
        "a new connection gets the rotated certificate",
        Duration::from_secs(20),
        || async { served_cert(&connect(&client, daemon.gradle).await) == new.der() },
    )
    .await;

    // The connection opened before the rotation is still the same session, and still serves.
    assert!(served_cert(&kept) == old.der());
    assert_eq!(
        request(&mut kept, "GET", &format!("/cache/{KEY}"), b"").await,
        200
    );
    assert_eq!(
        request(
            &mut kept,
            "HEAD",
            "/cache/ffffffffffffffffffffffffffffffff",
            b""
        )
        .await,
        404
    );
    assert_eq!(metric(&daemon, RELOADS_OK).await, 1.0);
    assert_eq!(metric(&daemon, RELOADS_ERROR).await, 0.0);
    assert_eq!(metric(&daemon, FAILURES_GRADLE).await, 0.0);
}

#[tokio::test]
async fn a_broken_reload_keeps_the_old_certificate_and_is_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(&tmp.path().join("pki"));
    let first = pki.leaf("first", KeyFormat::Pkcs8);
    let second = pki.leaf("second", KeyFormat::Pkcs8);
    // The daemon reads copies, so the test can break and fix them one file at a time.
    let cert = tmp.path().join("served.crt");
    let key = tmp.path().join("served.key");
    std::fs::copy(&first.cert, &cert).unwrap();
    std::fs::copy(&first.key, &key).unwrap();
    let daemon = Daemon::start(&tmp.path().join("daemon"), &tls_config(&cert, &key, ""));
    let client = connector(&pki, &[&version::TLS13, &version::TLS12]);
    let served = || async { served_cert(&connect(&client, daemon.gradle).await) };

    replace_file(
        &cert,
        b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n",
    );
    eventually(
        "the garbage certificate is refused",
        Duration::from_secs(20),
        || async { metric(&daemon, RELOADS_ERROR).await == 1.0 },
    )
    .await;
    assert!(
        served().await == first.der(),
        "the old certificate is no longer served"
    );

    // Half of a rotation: the new certificate next to the old key does not load either.
    replace_file(&cert, &std::fs::read(&second.cert).unwrap());
    eventually(
        "the mismatched pair is refused",
        Duration::from_secs(20),
        || async { metric(&daemon, RELOADS_ERROR).await == 2.0 },
    )
    .await;
    assert!(served().await == first.der());

    // The other half arrives: now the new pair loads.
    replace_file(&key, &std::fs::read(&second.key).unwrap());
    eventually(
        "the completed pair is served",
        Duration::from_secs(20),
        || async { served().await == second.der() },
    )
    .await;
    assert_eq!(metric(&daemon, RELOADS_OK).await, 1.0);
    // Each broken state was reported once, not at every poll.
    assert_eq!(metric(&daemon, RELOADS_ERROR).await, 2.0);
    let log = daemon.log();
    assert!(
        log.contains("tls.cert_file") && log.contains("tls.key_file"),
        "log:\n{log}"
    );
}

/// A TLS ClientHello record for `version` (0x0302 = TLS 1.1, 0x0303 = TLS 1.2) offering ECDHE
/// suites of both eras (CBC for 1.1, GCM for 1.2); only the version differs between the two.
fn client_hello(version: u16) -> Vec<u8> {
    fn extension(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
        out.extend(kind.to_be_bytes());
        out.extend((data.len() as u16).to_be_bytes());
        out.extend(data);
    }
    let mut extensions = Vec::new();
    extension(&mut extensions, 0x000a, &[0, 4, 0x00, 0x1d, 0x00, 0x17]); // groups: x25519, P-256
    extension(&mut extensions, 0x000b, &[1, 0]); // EC point formats: uncompressed
    extension(&mut extensions, 0x000d, &[0, 6, 4, 3, 8, 4, 4, 1]); // signature algorithms
    let mut hello = Vec::new();
    hello.extend(version.to_be_bytes());
    hello.extend([0x5a; 32]); // client random
    hello.push(0); // no session id
    let suites: [u16; 4] = [0xc009, 0xc013, 0xc02b, 0xc02f];
    hello.extend(((suites.len() * 2) as u16).to_be_bytes());
    suites.iter().for_each(|s| hello.extend(s.to_be_bytes()));
    hello.extend([1, 0]); // compression: null
    hello.extend((extensions.len() as u16).to_be_bytes());
    hello.extend(extensions);
    let mut handshake = vec![1]; // ClientHello
    handshake.extend(&(hello.len() as u32).to_be_bytes()[1..]);
    handshake.extend(hello);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend((handshake.len() as u16).to_be_bytes());
    record.extend(handshake);
    record
}

/// Sends a raw ClientHello; returns the content type of the server's first record and the
/// first two bytes of its body (for an alert: level and description).
async fn first_answer(addr: SocketAddr, hello: &[u8]) -> (u8, [u8; 2]) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(hello).await.unwrap();
    let mut header = [0u8; 7];
    tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut header))
        .await
        .expect("the server answered")
        .expect("a whole record header");
    (header[0], [header[5], header[6]])
}

#[tokio::test]
async fn tls_1_1_is_refused_and_tls_1_2_and_1_3_are_served() {
    let tmp = tempfile::tempdir().unwrap();
    let (pki, _leaf, daemon) = serving_tls(tmp.path(), "");

    // The same hello as TLS 1.2 gets a ServerHello: the hand-made record is a valid hello.
    let (kind, body) = first_answer(daemon.gradle, &client_hello(0x0303)).await;
    assert_eq!((kind, body[0]), (0x16, 2), "expected a ServerHello");
    // As TLS 1.1 it gets a fatal protocol_version alert and nothing else.
    let (kind, alert) = first_answer(daemon.gradle, &client_hello(0x0302)).await;
    assert_eq!(
        (kind, alert),
        (0x15, [2, 70]),
        "expected a protocol_version alert"
    );
    eventually(
        "the refused 1.1 handshake is counted",
        Duration::from_secs(10),
        || async { metric(&daemon, FAILURES_GRADLE).await >= 1.0 },
    )
    .await;

    for (only, expected) in [
        (&version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let mut conn = connect(&connector(&pki, &[only]), daemon.gradle).await;
        let session = conn.get_ref().get_ref().1;
        assert_eq!(session.protocol_version(), Some(expected));
        assert_eq!(
            session.alpn_protocol(),
            None,
            "no ALPN offered, none chosen"
        );
        assert_eq!(
            request(&mut conn, "GET", &format!("/cache/{KEY}"), b"").await,
            404
        );
    }
}

#[tokio::test]
async fn alpn_offers_get_http_1_1() {
    let tmp = tempfile::tempdir().unwrap();
    let (pki, _leaf, daemon) = serving_tls(tmp.path(), "");
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.ca()).unwrap())
        .unwrap();
    let mut config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let client = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut conn = connect(&client, daemon.gradle).await;
    assert_eq!(
        conn.get_ref().get_ref().1.alpn_protocol(),
        Some(&b"http/1.1"[..])
    );
    assert_eq!(
        request(&mut conn, "GET", &format!("/cache/{KEY}"), b"").await,
        404
    );
}

/// The dependency proxy is on the Gradle listener, so it speaks TLS where that does: the index
/// over TLS, and a file whose upstream is down is the proxy's 502, not a handshake failure.
#[tokio::test]
async fn dependencies_are_served_over_tls_on_the_gradle_listener() {
    let tmp = tempfile::tempdir().unwrap();
    let downloads = "\n[[downloads]]\nname = \"gradle\"\nurl = \"http://127.0.0.1:9/\"\n";
    let (pki, _leaf, daemon) = serving_tls(tmp.path(), downloads);
    let client = connector(&pki, &[&version::TLS13, &version::TLS12]);
    let mut conn = connect(&client, daemon.gradle).await;
    assert_eq!(request(&mut conn, "GET", "/downloads/", b"").await, 200);
    let mut conn = connect(&client, daemon.gradle).await;
    assert_eq!(
        request(
            &mut conn,
            "GET",
            "/downloads/gradle/gradle-8.10-bin.zip",
            b""
        )
        .await,
        502
    );
}

#[tokio::test]
async fn plain_http_and_silent_clients_fail_the_handshake_and_are_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let (_pki, _leaf, daemon) = serving_tls(tmp.path(), "handshake_timeout = \"1s\"\n");

    // Plain HTTP on the TLS port: no HTTP answer, the connection ends, the failure is counted.
    let mut tcp = TcpStream::connect(daemon.gradle).await.unwrap();
    tcp.write_all(format!("GET /cache/{KEY} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection")
        .ok();
    assert!(
        !answer.starts_with(b"HTTP/"),
        "answered in plain HTTP: {answer:?}"
    );
    eventually(
        "the plain-HTTP handshake failure is counted",
        Duration::from_secs(10),
        || async { metric(&daemon, FAILURES_GRADLE).await == 1.0 },
    )
    .await;

    // A client that connects and never sends a ClientHello is closed at the handshake deadline.
    let mut silent = TcpStream::connect(daemon.gradle).await.unwrap();
    let started = std::time::Instant::now();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut byte))
        .await
        .expect("closed within the handshake deadline");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed too early"
    );
    assert_eq!(metric(&daemon, FAILURES_GRADLE).await, 2.0);

    // The admin listener is not in tls.listeners: still plain HTTP for probes.
    let health = reqwest::get(daemon.admin_url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn the_admin_listener_serves_tls_when_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let (pki, _leaf, daemon) = serving_tls(tmp.path(), "listeners = [\"gradle\", \"admin\"]\n");
    let client = connector(&pki, &[&version::TLS13, &version::TLS12]);
    let mut admin = connect(&client, daemon.admin).await;
    assert_eq!(request(&mut admin, "GET", "/healthz", b"").await, 200);
    let mut gradle = connect(&client, daemon.gradle).await;
    assert_eq!(
        request(&mut gradle, "GET", &format!("/cache/{KEY}"), b"").await,
        404
    );
}

/// Runs `serve` with `config` and returns its exit status and stderr (it must not start).
fn failed_start(work: &Path, config: &str) -> (std::process::ExitStatus, String) {
    std::fs::create_dir_all(work).unwrap();
    let path = work.join("config.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_build-cache-proxy"))
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .env("BUILD_CACHE_PROXY_LISTEN_GRADLE", "127.0.0.1:0")
        .env("BUILD_CACHE_PROXY_LISTEN_ADMIN", "127.0.0.1:0")
        .env("BUILD_CACHE_PROXY_DISK_DIR", work.join("data"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the daemon started with a broken certificate");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_missing_or_mismatched_certificate_fails_the_start_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(&tmp.path().join("pki"));
    let one = pki.leaf("one", KeyFormat::Pkcs8);
    let other = pki.leaf("other", KeyFormat::Sec1);
    let work = tmp.path().join("daemon");

    let missing = tmp.path().join("absent.crt");
    let (status, stderr) = failed_start(&work, &tls_config(&missing, &one.key, ""));
    assert!(!status.success());
    assert!(stderr.contains("tls.cert_file: cannot read"), "{stderr}");

    let (status, stderr) = failed_start(&work, &tls_config(&one.cert, &other.key, ""));
    assert!(!status.success());
    assert!(
        stderr.contains("tls.key_file:") && stderr.contains("does not belong"),
        "{stderr}"
    );

    let (status, stderr) = failed_start(&work, &tls_config(&one.cert, &one.cert, ""));
    assert!(!status.success());
    assert!(stderr.contains("tls.key_file:"), "{stderr}");
}
