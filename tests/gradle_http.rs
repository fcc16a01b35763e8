//! The Gradle front over real HTTP against the daemon binary: hits, misses, keys, auth,
//! oversize handling, durability, corruption, concurrency, shutdown and logs.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{metric_value, metrics, read_response_head, Daemon, DaemonSpec};

const KEY: &str = "0123456789abcdef0123456789abcdef";

fn key(n: u32) -> String {
    format!("{n:032x}")
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

async fn put(daemon: &Daemon, key: &str, body: Vec<u8>) -> reqwest::StatusCode {
    reqwest::Client::new()
        .put(daemon.entry_url(key))
        .header(
            "Content-Type",
            "application/vnd.gradle.build-cache-artifact.v1",
        )
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
}

async fn get(daemon: &Daemon, key: &str) -> (reqwest::StatusCode, Vec<u8>) {
    let response = reqwest::get(daemon.entry_url(key)).await.unwrap();
    let status = response.status();
    (status, response.bytes().await.unwrap().to_vec())
}

/// Sends raw bytes and returns everything the server answers until it closes or goes quiet.
fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    read_response_head(&mut stream)
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(files_under(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

fn entry_files(daemon: &Daemon) -> Vec<PathBuf> {
    files_under(&daemon.data_dir.join("gradle"))
}

#[tokio::test]
async fn put_get_head_hit_and_miss() {
    let work = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(work.path(), "");
    let (status, _) = get(&daemon, KEY).await;
    assert_eq!(status, 404);
    let data = pattern(10_000, 3);
    assert_eq!(put(&daemon, KEY, data.clone()).await, 200);
    let (status, body) = get(&daemon, KEY).await;
    assert_eq!(status, 200);
    assert_eq!(body, data);
    let head = reqwest::Client::new()
        .head(daemon.entry_url(KEY))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "10000");
    let head = reqwest::Client::new()
        .head(daemon.entry_url(&key(9)))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 404);

    let text = metrics(&daemon).await;
    assert_eq!(
        metric_value(
            &text,
            "build_cache_proxy_lookups_total{result=\"hit\",tier=\"memory\"}"
        ),
        1.0
    );
    assert_eq!(
        metric_value(
            &text,
            "build_cache_proxy_requests_total{front=\"gradle\",method=\"PUT\",status=\"200\"}"
        ),
        1.0
    );
    assert!(
        metric_value(
            &text,
            "build_cache_proxy_received_bytes_total{front=\"gradle\"}"
        ) >= 10_000.0
    );
    assert!(
        metric_value(
            &text,
            "build_cache_proxy_sent_bytes_total{front=\"gradle\"}"
        ) >= 10_000.0
    );
    assert_eq!(metric_value(&text, "build_cache_proxy_disk_entries"), 1.0);
    assert!(text.contains(
        "build_cache_proxy_request_duration_seconds_bucket{front=\"gradle\",method=\"GET\""
    ));
    assert_eq!(
        reqwest::get(daemon.admin_url("/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        reqwest::get(daemon.admin_url("/readyz"))
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn bad_keys_are_rejected_without_touching_the_filesystem() {
    let work = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(work.path(), "");
    let before = files_under(work.path());
    let long = "a".repeat(129);
    for bad in [
        "..",
        "../../etc/passwd",
        "ab/cd",
        "%2e%2e",
        "XYZ",
        "ABCDEF",
        "abc%00",
        long.as_str(),
        "",
    ] {
        let request = format!(
            "PUT /cache/{bad} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
        );
        let head = raw_exchange(daemon.gradle, request.as_bytes());
        assert!(
            head.starts_with("HTTP/1.1 400"),
            "PUT {bad:?} answered {head:?}"
        );
        let request = format!("GET /cache/{bad} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let head = raw_exchange(daemon.gradle, request.as_bytes());
        assert!(
            head.starts_with("HTTP/1.1 400"),
            "GET {bad:?} answered {head:?}"
        );
    }
    assert_eq!(
        files_under(work.path()),
        before,
        "a bad key touched the filesystem"
    );
}

#[tokio::test]
async fn credentials_and_access_levels() {
    let work = tempfile::tempdir().unwrap();
    let config = r#"
[gradle]
anonymous = "read"
[[gradle.users]]
name = "writer"
password = "w-pass"
access = "readwrite"
[[gradle.users]]
name = "reader"
password = "r-pass"
access = "read"
"#;
    let daemon = Daemon::start(work.path(), config);
    let client = reqwest::Client::new();
    let put_as = |user: &'static str, pass: &'static str| {
        client
            .put(daemon.entry_url(KEY))
            .basic_auth(user, Some(pass))
            .body("data")
            .send()
    };
    assert_eq!(put_as("writer", "w-pass").await.unwrap().status(), 200);
    let wrong = put_as("writer", "nope").await.unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Basic"));
    assert_eq!(put_as("reader", "r-pass").await.unwrap().status(), 403);
    assert_eq!(put_as("nobody", "x").await.unwrap().status(), 401);
    // Anonymous may read, not write.
    assert_eq!(get(&daemon, KEY).await.0, 200);
    assert_eq!(put(&daemon, KEY, b"anon".to_vec()).await, 401);
    let as_reader = client
        .get(daemon.entry_url(KEY))
        .basic_auth("reader", Some("r-pass"))
        .send()
        .await
        .unwrap();
    assert_eq!(as_reader.status(), 200);
    assert_eq!(as_reader.text().await.unwrap(), "data");
    let text = metrics(&daemon).await;
    assert!(
        metric_value(
            &text,
            "build_cache_proxy_auth_failures_total{front=\"gradle\",reason=\"bad_credentials\"}"
        ) >= 2.0
    );
}

#[tokio::test]
async fn oversize_is_dropped_by_default_with_and_without_expect_continue() {
    let work = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(work.path(), "[gradle]\nmax_entry_size = \"1KiB\"\n");
    let body = vec![b'x'; 4096];

    // Without Expect: the body is read and thrown away; 2xx keeps Gradle's cache on.
    let mut request = format!(
        "PUT /cache/{} HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\n\r\n",
        key(1)
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let mut stream = TcpStream::connect(daemon.gradle).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(&request).unwrap();
    let head = read_response_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.contains("x-build-cache-proxy-dropped: oversize"),
        "{head}"
    );
    // The connection stays usable: the body was consumed.
    stream
        .write_all(format!("GET /cache/{} HTTP/1.1\r\nHost: x\r\n\r\n", key(1)).as_bytes())
        .unwrap();
    assert!(read_response_head(&mut stream).starts_with("HTTP/1.1 404"));

    // With Expect: 100-continue the answer comes before any body byte is sent.
    let head = raw_exchange(
        daemon.gradle,
        format!("PUT /cache/{} HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\nExpect: 100-continue\r\n\r\n", key(2)).as_bytes(),
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    // At the limit is stored.
    assert_eq!(put(&daemon, &key(3), vec![b'y'; 1024]).await, 200);
    assert_eq!(get(&daemon, &key(1)).await.0, 404);
    assert_eq!(get(&daemon, &key(2)).await.0, 404);
    assert_eq!(get(&daemon, &key(3)).await.0, 200);
    let text = metrics(&daemon).await;
    assert_eq!(
        metric_value(
            &text,
            "build_cache_proxy_dropped_puts_total{front=\"gradle\",reason=\"oversize\"}"
        ),
        2.0
    );
}

#[tokio::test]
async fn oversize_is_413_when_configured_with_and_without_expect_continue() {
    let work = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        work.path(),
        "[gradle]\nmax_entry_size = \"1KiB\"\noversize = \"reject\"\n",
    );
    let head = raw_exchange(
        daemon.gradle,
        format!("PUT /cache/{} HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\nExpect: 100-continue\r\n\r\n", key(1)).as_bytes(),
    );
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(
        !head.contains("100 Continue"),
        "asked for the body it then refused: {head}"
    );

    assert_eq!(put(&daemon, &key(2), vec![b'x'; 4096]).await, 413);
    assert_eq!(get(&daemon, &key(1)).await.0, 404);
    assert_eq!(get(&daemon, &key(2)).await.0, 404);
}

#[tokio::test]
async fn eviction_keeps_the_disk_tier_under_its_bound() {
    let work = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(work.path(), "[disk]\nmax_size = \"2MiB\"\n[memory]\nmax_size = \"0\"\n[gradle]\nmax_entry_size = \"1MiB\"\n");
    for n in 0..30 {
        assert_eq!(put(&daemon, &key(n), pattern(200_000, n as u8)).await, 200);
        let on_disk: u64 = entry_files(&daemon)
            .iter()
            .map(|p| p.metadata().unwrap().len())
            .sum();
        assert!(
            on_disk <= 2 << 20,
            "disk tier holds {on_disk} bytes, above its 2MiB bound"
        );
    }
    assert_eq!(get(&daemon, &key(29)).await.1, pattern(200_000, 29));
    assert_eq!(get(&daemon, &key(0)).await.0, 404);
    let text = metrics(&daemon).await;
    assert!(metric_value(&text, "build_cache_proxy_disk_evictions_total") >= 20.0);
    assert!(metric_value(&text, "build_cache_proxy_disk_bytes") <= (2 << 20) as f64);
}

#[tokio::test]
async fn entries_survive_a_restart() {
    let work = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(work.path(), "");
    for n in 0..5 {
        assert_eq!(
            put(&daemon, &key(n), pattern(5000 * (n as usize + 1), n as u8)).await,
            200
        );
    }
    assert!(daemon.stop().success());
    let daemon = Daemon::start(work.path(), "");
    for n in 0..5 {
        let (status, body) = get(&daemon, &key(n)).await;
        assert_eq!(status, 200);
        assert_eq!(body, pattern(5000 * (n as usize + 1), n as u8));
    }
    assert_eq!(
        metric_value(&metrics(&daemon).await, "build_cache_proxy_disk_entries"),
        5.0
    );
}

#[tokio::test]
async fn a_put_cut_off_half_way_leaves_no_entry() {
    let work = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(work.path(), "");
    {
        let mut stream = TcpStream::connect(daemon.gradle).unwrap();
        stream
            .write_all(
                format!("PUT /cache/{KEY} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
                    .as_bytes(),
            )
            .unwrap();
        stream.write_all(&pattern(400_000, 1)).unwrap();
        // Dropped here: the client disconnects with 600000 bytes unsent.
    }
    common::eventually(
        "the aborted PUT is logged",
        Duration::from_secs(10),
        || async {
            daemon.log().contains("outcome=\"aborted\"") || daemon.log().contains("status=400")
        },
    )
    .await;
    assert_eq!(get(&daemon, KEY).await.0, 404);
    assert!(entry_files(&daemon).is_empty());
    assert!(
        files_under(&daemon.data_dir.join("tmp")).is_empty(),
        "temp file left behind"
    );
}

#[tokio::test]
async fn a_corrupted_file_on_disk_is_a_miss_not_bad_bytes() {
    let work = tempfile::tempdir().unwrap();
    // No memory tier, so the read goes to disk.
    let daemon = Daemon::start(work.path(), "[memory]\nmax_size = \"0\"\n");
    let data = pattern(300_000, 5);
    assert_eq!(put(&daemon, KEY, data.clone()).await, 200);
    let files = entry_files(&daemon);
    assert_eq!(files.len(), 1);
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let at = bytes.len() - 1000;
    bytes[at] ^= 0x55;
    std::fs::write(&files[0], bytes).unwrap();

    assert_eq!(get(&daemon, KEY).await.0, 404);
    assert!(
        entry_files(&daemon).is_empty(),
        "the corrupt file was not removed"
    );
    // The next PUT stores a good copy again.
    assert_eq!(put(&daemon, KEY, data.clone()).await, 200);
    assert_eq!(get(&daemon, KEY).await.1, data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_puts_and_gets_of_one_key_never_mix_bodies() {
    let work = tempfile::tempdir().unwrap();
    let daemon = std::sync::Arc::new(Daemon::start(
        work.path(),
        "[memory]\nmax_entry_size = \"64KiB\"\n",
    ));
    let bodies: Vec<Vec<u8>> = (0..4).map(|seed| pattern(700_000, seed)).collect();
    let mut tasks = Vec::new();
    for round in 0..24 {
        let d = daemon.clone();
        let data = bodies[round % 4].clone();
        tasks.push(tokio::spawn(async move {
            assert_eq!(put(&d, KEY, data).await, 200);
        }));
        let d = daemon.clone();
        let bodies = bodies.clone();
        tasks.push(tokio::spawn(async move {
            let (status, body) = get(&d, KEY).await;
            if status == 200 {
                assert!(bodies.contains(&body), "a mixed or partial body was served");
            } else {
                assert_eq!(status, 404);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert!(bodies.contains(&get(&daemon, KEY).await.1));
}

#[tokio::test]
async fn idle_keep_alive_connections_close_after_the_idle_timeout() {
    let work = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(work.path(), "[listen]\nidle_timeout = \"1s\"\n");
    let mut stream = TcpStream::connect(daemon.gradle).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
        .write_all(format!("GET /cache/{KEY} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    assert!(read_response_head(&mut stream).starts_with("HTTP/1.1 404"));
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = stream.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "expected the server to close the idle connection");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed before the idle timeout"
    );
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_download_finish() {
    let work = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(work.path(), "");
    let data = pattern(64 << 20, 9);
    assert_eq!(put(&daemon, KEY, data.clone()).await, 200);
    let mut response = reqwest::get(daemon.entry_url(KEY)).await.unwrap();
    let mut received = response.chunk().await.unwrap().unwrap().to_vec();
    let pid = daemon.pid();
    common::signal(pid, "TERM");
    // New connections are refused soon; the download in flight continues to its end.
    while let Some(chunk) = response.chunk().await.unwrap() {
        received.extend_from_slice(&chunk);
    }
    assert_eq!(received.len(), data.len());
    assert!(received == data);
    assert!(daemon.stop().success());
}

#[tokio::test]
async fn json_logs_have_one_line_per_request() {
    let work = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_spec(work.path(), DaemonSpec::new("[log]\nformat = \"json\"\n"));
    assert_eq!(put(&daemon, KEY, b"abc".to_vec()).await, 200);
    assert_eq!(get(&daemon, KEY).await.0, 200);
    assert_eq!(get(&daemon, &key(1)).await.0, 404);
    common::eventually("three access lines", Duration::from_secs(5), || async {
        daemon
            .log()
            .lines()
            .filter(|l| l.contains("\"target\":\"access\""))
            .count()
            >= 3
    })
    .await;
    let log = daemon.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"target\":\"access\""))
        .collect();
    for line in &lines {
        assert!(
            line.starts_with('{') && line.ends_with('}'),
            "not a JSON line: {line}"
        );
        for field in [
            "\"front\":\"gradle\"",
            "\"outcome\":",
            "\"tier\":",
            "\"bytes_out\":",
            "\"duration_ms\":",
        ] {
            assert!(line.contains(field), "{field} missing in {line}");
        }
    }
    assert!(lines[0].contains("\"outcome\":\"stored\"") && lines[0].contains("\"bytes_in\":3"));
    assert!(lines[1].contains("\"outcome\":\"hit\"") && lines[1].contains("\"tier\":\"memory\""));
    assert!(lines[2].contains("\"outcome\":\"miss\""));
}

#[test]
fn check_config_names_the_bad_key() {
    let work = tempfile::tempdir().unwrap();
    let good = work.path().join("good.toml");
    std::fs::write(&good, "[disk]\nmax_size = \"5GiB\"\n").unwrap();
    let bad = work.path().join("bad.toml");
    std::fs::write(&bad, "[disk]\nmax_size = \"5 apples\"\n").unwrap();
    let run = |file: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_build-cache-proxy"))
            .arg("check-config")
            .arg(file)
            .env_remove("BUILD_CACHE_PROXY_DISK_MAX_SIZE")
            .output()
            .unwrap()
    };
    assert!(run(&good).status.success());
    let out = run(&bad);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("disk.max_size"));
    let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/build-cache-proxy.toml");
    assert!(run(&reference).status.success());
}

/// A refused PUT whose whole body is sent; a GET on the same connection then shows the server
/// read the whole body and kept the connection.
fn refused_put_on_a_kept_connection(
    addr: SocketAddr,
    path: &str,
    extra_headers: &str,
    len: usize,
) -> String {
    let follow_up = format!("GET /cache/{KEY}");
    let (answer, next) =
        common::put_in_pieces(addr, path, extra_headers, &pattern(len, 1), &follow_up);
    assert!(
        next.starts_with("HTTP/1.1 "),
        "connection not reusable after {answer:?}: {next:?}"
    );
    answer
}

#[tokio::test]
async fn refused_puts_are_answered_after_their_body_so_the_client_sees_the_status() {
    let work = tempfile::tempdir().unwrap();
    let config = r#"
[gradle]
anonymous = "read"
max_entry_size = "1MiB"
oversize = "reject"
[[gradle.users]]
name = "reader"
password = "r-pass"
access = "read"
"#;
    let daemon = Daemon::start(work.path(), config);
    let len = 8 << 20;
    let cases = [
        (
            format!("/cache/{KEY}"),
            "Authorization: Basic cmVhZGVyOnItcGFzcw==\r\n",
            "403",
            4 << 20,
        ),
        (
            format!("/cache/{KEY}"),
            "Authorization: Basic cmVhZGVyOndyb25n\r\n",
            "401",
            4 << 20,
        ),
        (format!("/cache/{KEY}"), "", "401", 4 << 20),
        (
            "/cache/NOT-HEX".to_string(),
            "Authorization: Basic cmVhZGVyOnItcGFzcw==\r\n",
            "403",
            1 << 20,
        ),
    ];
    for (path, headers, status, size) in cases {
        let answer = refused_put_on_a_kept_connection(daemon.gradle, &path, headers, size);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{path} {headers:?}: {answer}"
        );
    }

    let writer = Daemon::start(
        &work.path().join("w"),
        "[gradle]\nmax_entry_size = \"1MiB\"\noversize = \"reject\"\n",
    );
    let answer = refused_put_on_a_kept_connection(writer.gradle, &format!("/cache/{KEY}"), "", len);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let answer = refused_put_on_a_kept_connection(writer.gradle, "/cache/..", "", 1 << 20);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
}
