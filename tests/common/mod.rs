//! Test harness: runs the real `build-cache-proxy` binary on 127.0.0.1:0 with its data under a
//! temp dir, and waits for the "ready" line it prints once every listener is bound.
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod clients;
pub mod gradle;
pub mod maven;
pub mod older_s3;
pub mod s3;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running daemon process; killed when dropped.
pub struct Daemon {
    child: Child,
    pub gradle: SocketAddr,
    pub admin: SocketAddr,
    /// The S3 front's listener.
    pub s3: SocketAddr,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
}

/// How to start a daemon: the config file text plus environment overrides.
pub struct DaemonSpec {
    pub config: String,
    pub env: Vec<(String, String)>,
    /// A command the daemon is started under, e.g. `prlimit --nofile=1024:1024 --`.
    pub wrapper: Vec<String>,
}

impl DaemonSpec {
    pub fn new(config: &str) -> Self {
        DaemonSpec {
            config: config.to_string(),
            env: Vec::new(),
            wrapper: Vec::new(),
        }
    }

    pub fn wrapped_in(mut self, command: &[&str]) -> Self {
        self.wrapper = command.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }
}

impl Daemon {
    /// Starts a daemon whose data lives in `work` (`work/data`), with `config` as its file.
    pub fn start(work: &Path, config: &str) -> Daemon {
        Self::start_spec(work, DaemonSpec::new(config))
    }

    pub fn start_spec(work: &Path, spec: DaemonSpec) -> Daemon {
        std::fs::create_dir_all(work).unwrap();
        let config_path = work.join("config.toml");
        std::fs::write(&config_path, &spec.config).unwrap();
        let data_dir = work.join("data");
        let log_path = work.join(format!("daemon-{}.log", unique()));
        let log = std::fs::File::create(&log_path).unwrap();
        let binary = env!("CARGO_BIN_EXE_build-cache-proxy");
        let mut cmd = match spec.wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(binary);
                cmd
            }
            None => Command::new(binary),
        };
        cmd.arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env("BUILD_CACHE_PROXY_LISTEN_GRADLE", "127.0.0.1:0")
            .env("BUILD_CACHE_PROXY_LISTEN_ADMIN", "127.0.0.1:0")
            .env("BUILD_CACHE_PROXY_LISTEN_S3", "127.0.0.1:0")
            .env("BUILD_CACHE_PROXY_DISK_DIR", &data_dir)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(log);
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start build-cache-proxy");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the daemon never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "daemon did not become ready; log:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
        };
        let addr = |name: &str| -> SocketAddr {
            let prefix = format!("{name}=");
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&prefix))
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no {name} address in ready line {line:?}"))
        };
        Daemon {
            gradle: addr("gradle"),
            admin: addr("admin"),
            s3: addr("s3"),
            child,
            data_dir,
            log_path,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://127.0.0.1:port/cache/` — the URL Gradle is configured with.
    pub fn cache_url(&self) -> String {
        format!("http://{}/cache/", self.gradle)
    }

    pub fn entry_url(&self, key: &str) -> String {
        format!("http://{}/cache/{key}", self.gradle)
    }

    /// The S3 front's endpoint URL.
    pub fn s3_url(&self) -> String {
        format!("http://{}", self.s3)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The daemon's peak resident set size (VmHWM) in bytes.
    pub fn peak_rss(&self) -> u64 {
        memory_of(self.pid(), "VmHWM")
    }

    /// SIGTERM, then wait for a clean exit; returns the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        signal(self.pid(), "TERM");
        let status = wait_with_deadline(&mut self.child, Duration::from_secs(60));
        std::mem::forget(self);
        status
    }

    /// SIGKILL: no chance to clean up, as after a node crash or OOM kill.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::forget(self);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill -{sig} {pid} failed");
}

fn wait_with_deadline(child: &mut Child, deadline: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            start.elapsed() < deadline,
            "daemon did not exit within {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Reads one sample from a Prometheus text exposition, e.g.
/// `metric_value(&text, "build_cache_proxy_lookups_total{result=\"hit\",tier=\"disk\"}")`.
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Fetches /metrics from the daemon's admin listener.
pub async fn metrics(daemon: &Daemon) -> String {
    reqwest::get(daemon.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Waits (polling, with a deadline) until `check` holds.
pub async fn eventually<F, Fut>(what: &str, deadline: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads an HTTP response head from a raw connection, up to and including the blank line
/// (or until the server closes or goes quiet past the stream's read timeout).
pub fn read_response_head(stream: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    while !out.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(0) | Err(_) => break,
            Ok(_) => out.push(byte[0]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends a PUT over a raw connection with its body written in 16 KiB pieces, as a client
/// streaming a large file does (a server that answered early and hung up makes these writes
/// fail with a broken pipe). Reads the answer and its body, then sends `follow_up` (a request
/// line such as `HEAD /cache/KEY`) on the same connection. Returns both response heads.
pub fn put_in_pieces(
    addr: std::net::SocketAddr,
    path: &str,
    extra_headers: &str,
    body: &[u8],
    follow_up: &str,
) -> (String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n{extra_headers}\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    for piece in body.chunks(16 * 1024) {
        stream
            .write_all(piece)
            .expect("the server hung up while the body was being sent");
    }
    let answer = read_response_head(&mut stream);
    let answer_len: usize = answer
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut answer_body = vec![0u8; answer_len];
    stream.read_exact(&mut answer_body).unwrap();
    stream
        .write_all(format!("{follow_up} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let next = read_response_head(&mut stream);
    (answer, next)
}

impl Daemon {
    /// The daemon's resident set size now (VmRSS) in bytes.
    pub fn rss(&self) -> u64 {
        rss_of(self.pid())
    }

    /// File descriptors the daemon holds open now.
    pub fn open_fds(&self) -> usize {
        open_fds_of(self.pid())
    }
}

/// A process's resident set size now (VmRSS) in bytes.
pub fn rss_of(pid: u32) -> u64 {
    memory_of(pid, "VmRSS")
}

/// File descriptors a process holds open now.
pub fn open_fds_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
        .count()
}

/// A memory figure (`VmRSS`, `VmHWM`, ...) of a process, from /proc/pid/status, in bytes.
fn memory_of(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
    kib * 1024
}

/// A TCP connection to `addr` from the loopback source address `from` (any of 127.0.0.0/8
/// works without setup), so that per-client caps see distinct clients. A port in TIME_WAIT may be
/// bound again: attackers in the soak reconnect thousands of times.
pub async fn connect_from(
    from: impl Into<std::net::Ipv4Addr>,
    addr: SocketAddr,
) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::new(from.into().into(), 0))?;
    socket.connect(addr).await
}
