//! A build pod is hostile: each test here is one attack a pod on the node can make over a real
//! socket, against the real binary, and what the daemon must do about it. Connection counts and
//! times are bounded; every wait polls with a deadline.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{connect_from, eventually, metric_value, metrics, Daemon, DaemonSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: usize = 1024 * 1024;

fn key(n: u32) -> String {
    format!("{n:032x}")
}

fn body(n: u32, len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(31) ^ n) as u8)
        .collect()
}

async fn put(daemon: &Daemon, n: u32, len: usize) -> reqwest::Response {
    reqwest::Client::new()
        .put(daemon.entry_url(&key(n)))
        .body(body(n, len))
        .send()
        .await
        .unwrap()
}

async fn stored(daemon: &Daemon, n: u32, len: usize) {
    let response = put(daemon, n, len).await;
    assert_eq!(response.status(), 200);
    assert!(
        response
            .headers()
            .get("x-build-cache-proxy-dropped")
            .is_none(),
        "entry {n} was dropped: {:?}",
        response.headers()
    );
}

async fn is_hit(daemon: &Daemon, n: u32, len: usize) -> bool {
    let response = reqwest::get(daemon.entry_url(&key(n))).await.unwrap();
    response.status() == 200 && response.bytes().await.unwrap() == body(n, len)
}

async fn metric(daemon: &Daemon, series: &str) -> f64 {
    metric_value(&metrics(daemon).await, series)
}

/// Sends a PUT head declaring `declared` bytes, then `sent` bytes of its body.
async fn start_put(
    from: [u8; 4],
    addr: SocketAddr,
    n: u32,
    declared: u64,
    sent: usize,
) -> TcpStream {
    let mut stream = connect_from(from, addr).await.unwrap();
    let head = format!(
        "PUT /cache/{} HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n\r\n",
        key(n)
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&vec![1u8; sent]).await.unwrap();
    stream
}

/// Reads what the server sends until it closes (or `limit` passes); returns it as text.
async fn read_until_close(stream: &mut TcpStream, limit: Duration) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Two uploads that declare large bodies and trickle them must not cost the cache a single
/// entry, nor other clients their writes; they are cut off with 408 once below the minimum rate.
#[tokio::test]
async fn trickled_uploads_cannot_empty_the_cache() {
    let work = tempfile::tempdir().unwrap();
    let config = "[disk]\nmax_size = \"64MiB\"\nmin_free = \"0\"\n[memory]\nmax_size = \"0\"\n[gradle]\nmax_entry_size = \"32MiB\"\n[limits]\nbody_stall_timeout = \"2s\"\nbody_min_rate = \"64KiB\"\n";
    let daemon = Daemon::start(work.path(), config);
    for n in 0..12 {
        stored(&daemon, n, 4 * MIB).await;
    }
    // 48 MiB stored; the attackers declare 16 MiB each and send one byte at a time.
    let mut attackers = Vec::new();
    for i in 0..2u8 {
        let stream = start_put(
            [127, 0, 0, 2 + i],
            daemon.gradle,
            100 + u32::from(i),
            16 << 20,
            1,
        )
        .await;
        attackers.push(tokio::spawn(async move {
            let mut stream = stream;
            // Trickle until the server gives up on us.
            for _ in 0..30 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if stream.write_all(b"x").await.is_err() {
                    break;
                }
                let mut peek = [0u8; 1];
                if let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_millis(1), stream.peek(&mut peek)).await
                {
                    if n > 0 {
                        break;
                    }
                }
            }
            read_until_close(&mut stream, Duration::from_secs(10)).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    // While they trickle, other clients keep writing, and nothing was evicted for the promises.
    stored(&daemon, 50, 4 * MIB).await;
    assert_eq!(
        metric(&daemon, "build_cache_proxy_disk_evictions_total").await,
        0.0
    );
    for attacker in attackers {
        let answer = attacker.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    }
    for n in 0..12 {
        assert!(is_hit(&daemon, n, 4 * MIB).await, "entry {n} lost");
    }
    assert!(is_hit(&daemon, 50, 4 * MIB).await);
}

/// A write that could never fit beside a write in progress is refused before anything is
/// evicted for it (answered 2xx and dropped, as Gradle needs).
#[tokio::test]
async fn a_write_that_cannot_fit_evicts_nothing() {
    let work = tempfile::tempdir().unwrap();
    let config = "[disk]\nmax_size = \"64MiB\"\nmin_free = \"0\"\n[memory]\nmax_size = \"0\"\n[gradle]\nmax_entry_size = \"40MiB\"\n";
    let daemon = Daemon::start(work.path(), config);
    for n in 0..7 {
        stored(&daemon, n, 4 * MIB).await;
    }
    // A 32 MiB upload in progress (a first piece sent, the rest on its way).
    let _in_progress = start_put([127, 0, 0, 2], daemon.gradle, 99, 32 << 20, 64 * 1024).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let response = put(&daemon, 98, 32 * MIB).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-build-cache-proxy-dropped"],
        "store-error"
    );
    assert_eq!(
        metric(&daemon, "build_cache_proxy_disk_evictions_total").await,
        0.0
    );
    for n in 0..7 {
        assert!(is_hit(&daemon, n, 4 * MIB).await, "entry {n} evicted");
    }
}

/// A refused upload is read only up to `limits.max_refused_body`: one declaring 100 GiB gets
/// its 401 at once, and a chunked one that never ends is cut off at the bound.
#[tokio::test]
async fn refused_bodies_are_read_only_up_to_a_bound() {
    let work = tempfile::tempdir().unwrap();
    let config = "[gradle]\nanonymous = \"none\"\n[limits]\nmax_refused_body = \"8MiB\"\n";
    let daemon = Daemon::start(work.path(), config);

    // The answer may come (and the connection close) while the first MiB is still being sent.
    let mut declared = start_put([127, 0, 0, 2], daemon.gradle, 1, 100 << 30, 0).await;
    let _ = declared.write_all(&vec![1u8; MIB]).await;
    let answer = read_until_close(&mut declared, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer:?}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer:?}"
    );

    // No Content-Length: a chunked body that would go on for ever.
    let mut endless = connect_from([127, 0, 0, 3], daemon.gradle).await.unwrap();
    endless
        .write_all(b"PUT /cache/00000000000000000000000000000002 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    let (mut reader, mut writer) = endless.into_split();
    let sender = tokio::spawn(async move {
        let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "y".repeat(64 * 1024));
        let mut sent = 0u64;
        // Bounded: 1 GiB at most, far above what the daemon may read.
        while sent < 1 << 30 {
            if writer.write_all(chunk.as_bytes()).await.is_err() {
                break;
            }
            sent += chunk.len() as u64;
        }
        sent
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), reader.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer:?}");
    let sent = sender.await.unwrap();
    assert!(sent < 1 << 30, "the daemon read the whole endless body");
    let read = metric(
        &daemon,
        "build_cache_proxy_received_bytes_total{front=\"gradle\"}",
    )
    .await;
    assert!(
        read <= (8 * MIB + MIB) as f64,
        "the daemon read {read} bytes of refused bodies"
    );
}

/// Thousands of connections that never finish their heads, under a 1024 descriptor limit:
/// probes and clients from other addresses are still served, the flood is refused with 503 and
/// cut off at the head deadline, and accept never spins.
#[tokio::test]
async fn slow_header_floods_leave_probes_and_other_clients_served() {
    build_cache_proxy::server::limits::raise_fd_limit();
    let work = tempfile::tempdir().unwrap();
    let config = "[limits]\nheader_timeout = \"3s\"\nmax_connections_per_ip = 100\n";
    let spec = DaemonSpec::new(config).wrapped_in(&["prlimit", "--nofile=1024:1024", "--"]);
    let daemon = Daemon::start_spec(work.path(), spec);
    stored(&daemon, 1, 1000).await;

    let mut flood = Vec::new();
    for i in 0..2000u32 {
        let from = [127, 0, 0, 2 + (i % 20) as u8];
        if let Ok(mut stream) = connect_from(from, daemon.gradle).await {
            let _ = stream.write_all(b"GET /cache/").await;
            flood.push(stream);
        }
    }
    // With every slot the flood can take held, the probes and a client elsewhere get through.
    for _ in 0..5 {
        let live = reqwest::get(daemon.admin_url("/healthz")).await.unwrap();
        assert_eq!(live.status(), 200);
        let ready = reqwest::get(daemon.admin_url("/readyz")).await.unwrap();
        assert_eq!(ready.status(), 200);
    }
    let text = metrics(&daemon).await;
    let refused = metric_value(
        &text,
        "build_cache_proxy_connections_refused_total{listener=\"gradle\",reason=\"max_connections\"}",
    ) + metric_value(
        &text,
        "build_cache_proxy_connections_refused_total{listener=\"gradle\",reason=\"overloaded\"}",
    );
    assert!(refused > 1000.0, "refused {refused}");
    let accept_errors = metric_value(
        &text,
        "build_cache_proxy_accept_errors_total{listener=\"gradle\"}",
    );
    assert!(accept_errors < 50.0, "accept failed {accept_errors} times");
    // The flood's heads never complete: cut off at the deadline with 408, slots given back.
    let mut timed_out = 0;
    for stream in flood.iter_mut().take(50) {
        let answer = read_until_close(stream, Duration::from_secs(10)).await;
        if answer.starts_with("HTTP/1.1 408") {
            timed_out += 1;
        } else {
            assert!(
                answer.starts_with("HTTP/1.1 503") || answer.is_empty(),
                "{answer:?}"
            );
        }
    }
    drop(flood);
    eventually(
        "the flood's connections are gone",
        Duration::from_secs(20),
        || async {
            metric(
                &daemon,
                "build_cache_proxy_connections{listener=\"gradle\"}",
            )
            .await
                <= 1.0
        },
    )
    .await;
    assert!(
        metric(
            &daemon,
            "build_cache_proxy_request_timeouts_total{listener=\"gradle\",phase=\"header\"}"
        )
        .await
            > 0.0
    );
    assert!(timed_out > 0, "no flood connection got its 408");
    assert!(is_hit(&daemon, 1, 1000).await);
}

/// Heads of hundreds of KiB are refused at `limits.max_header_bytes` with 431, and hundreds of
/// them at once cost the daemon little memory.
#[tokio::test]
async fn fat_headers_get_431_and_hold_no_memory() {
    let work = tempfile::tempdir().unwrap();
    let config = "[limits]\nmax_connections_per_ip = 1000\n";
    let daemon = Daemon::start(work.path(), config);
    let before = daemon.rss();
    let header_line = format!("X-Filler: {}\r\n", "a".repeat(1000));
    let mut tasks = Vec::new();
    for i in 0..500u32 {
        let addr = daemon.gradle;
        let header_line = header_line.clone();
        tasks.push(tokio::spawn(async move {
            let mut stream = connect_from([127, 0, 1, (i % 200) as u8 + 1], addr)
                .await
                .unwrap();
            let _ = stream
                .write_all(b"GET /cache/00000000000000000000000000000001 HTTP/1.1\r\n")
                .await;
            for _ in 0..380 {
                if stream.write_all(header_line.as_bytes()).await.is_err() {
                    break;
                }
            }
            read_until_close(&mut stream, Duration::from_secs(15)).await
        }));
    }
    let mut too_large = 0;
    for task in tasks {
        let answer = task.await.unwrap();
        if answer.starts_with("HTTP/1.1 431") {
            too_large += 1;
        }
    }
    assert!(too_large > 400, "only {too_large} of 500 got 431");
    let peak = daemon.peak_rss();
    assert!(
        peak < before + 64 * MIB as u64,
        "fat headers took {} MiB",
        (peak - before) / MIB as u64
    );
}

/// Hundreds of uploads stalled one byte short of 1 MiB hold a small, bounded amount of memory
/// each (the figure in the README comes from this test's output).
#[tokio::test]
async fn stalled_uploads_hold_little_memory() {
    let work = tempfile::tempdir().unwrap();
    let config = "[memory]\nmax_size = \"64MiB\"\n[limits]\nbody_stall_timeout = \"120s\"\nbody_min_rate = \"1KiB\"\nmax_uploads = 400\nmax_uploads_per_ip = 400\nmax_connections_per_ip = 400\n";
    let daemon = Daemon::start(work.path(), config);
    // Warm up the daemon's own allocations with a few complete uploads first.
    for n in 0..5 {
        stored(&daemon, n, MIB).await;
    }
    let before = daemon.rss();
    let mut stalled = Vec::new();
    for n in 0..300u32 {
        stalled.push(start_put([127, 0, 0, 2], daemon.gradle, 1000 + n, MIB as u64, MIB - 1).await);
    }
    eventually(
        "all 300 uploads are in progress",
        Duration::from_secs(60),
        || async { metric(&daemon, "build_cache_proxy_uploads_in_progress").await == 300.0 },
    )
    .await;
    // Let the daemon take in every byte that was sent.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = daemon.rss().saturating_sub(before);
    let per_upload = held / 300;
    println!(
        "300 uploads stalled 1 byte short of 1 MiB: RSS {} MiB -> {} MiB, {} KiB per upload",
        before / MIB as u64,
        daemon.rss() / MIB as u64,
        per_upload / 1024
    );
    assert!(
        per_upload < 256 * 1024,
        "each stalled upload holds {} KiB",
        per_upload / 1024
    );
    // Each holds its socket and its temp file: two descriptors, not more.
    assert!(
        daemon.open_fds() < 300 * 2 + 64,
        "{} fds",
        daemon.open_fds()
    );
}

/// Responses whose clients stopped reading are cut off after `limits.send_stall_timeout`:
/// their connections, files and descriptors are given back.
#[tokio::test]
async fn clients_that_stop_reading_are_cut_off() {
    let work = tempfile::tempdir().unwrap();
    let config = "[memory]\nmax_size = \"0\"\n[gradle]\nmax_entry_size = \"100MiB\"\n[limits]\nsend_stall_timeout = \"2s\"\n";
    let daemon = Daemon::start(work.path(), config);
    stored(&daemon, 7, 64 * MIB).await;
    let baseline = daemon.open_fds();
    let mut readers = Vec::new();
    for _ in 0..50 {
        let mut stream = connect_from([127, 0, 0, 2], daemon.gradle).await.unwrap();
        let request = format!("GET /cache/{} HTTP/1.1\r\nHost: x\r\n\r\n", key(7));
        stream.write_all(request.as_bytes()).await.unwrap();
        readers.push(stream); // never read
    }
    eventually(
        "the stalled responses are cut off",
        Duration::from_secs(60),
        || async {
            metric(
                &daemon,
                "build_cache_proxy_request_timeouts_total{listener=\"gradle\",phase=\"send\"}",
            )
            .await
                >= 50.0
        },
    )
    .await;
    eventually(
        "their descriptors are closed",
        Duration::from_secs(20),
        || async { daemon.open_fds() <= baseline + 2 },
    )
    .await;
    assert_eq!(
        metric(
            &daemon,
            "build_cache_proxy_connections{listener=\"gradle\"}"
        )
        .await,
        0.0
    );
    drop(readers);
    assert!(is_hit(&daemon, 7, 64 * MIB).await);
}

/// A burst of readiness probes all agree that the disk takes writes.
#[tokio::test]
async fn concurrent_readiness_probes_all_pass() {
    let work = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(work.path(), "[limits]\nadmin_max_connections = 300\n");
    let url = daemon.admin_url("/readyz");
    let probes: Vec<_> = (0..250u8)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                // One client (one connection) per probe, as kubelet and scripts make them, from
                // ten addresses: one address gets an eighth of the admin listener's connections.
                let from = std::net::IpAddr::from([127, 0, 2, 1 + i % 10]);
                let client = reqwest::Client::builder()
                    .local_address(from)
                    .build()
                    .unwrap();
                client.get(url).send().await.unwrap().status()
            })
        })
        .collect();
    for probe in probes {
        assert_eq!(probe.await.unwrap(), 200);
    }
}

/// A `disk.dir` pointed at a directory that is not ours is refused at start, untouched.
#[test]
fn a_data_dir_with_foreign_files_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("project/src")).unwrap();
    std::fs::write(dir.path().join("project/src/Main.java"), "class Main {}").unwrap();
    std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
    std::fs::write(dir.path().join("tmp/keep.txt"), "keep").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_build-cache-proxy"))
        .arg("serve")
        .env("BUILD_CACHE_PROXY_DISK_DIR", dir.path())
        .env("BUILD_CACHE_PROXY_LISTEN_GRADLE", "127.0.0.1:0")
        .env("BUILD_CACHE_PROXY_LISTEN_ADMIN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("disk.dir") && stderr.contains(".build-cache-proxy"),
        "{stderr}"
    );
    assert!(dir.path().join("project/src/Main.java").exists());
    assert!(dir.path().join("tmp/keep.txt").exists());
}

/// Zero and absurd timeouts and limits fail `check-config`, naming the key.
#[test]
fn zero_and_absurd_limits_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    for (text, key) in [
        ("[listen]\nidle_timeout = \"0s\"\n", "listen.idle_timeout"),
        (
            "[listen]\nidle_timeout = \"3days\"\n",
            "listen.idle_timeout",
        ),
        (
            "[limits]\nheader_timeout = \"0s\"\n",
            "limits.header_timeout",
        ),
        (
            "[limits]\nsend_stall_timeout = \"0s\"\n",
            "limits.send_stall_timeout",
        ),
        ("[limits]\nbody_min_rate = \"0\"\n", "limits.body_min_rate"),
        ("[limits]\nmax_connections = 0\n", "limits.max_connections"),
        ("[limits]\nmax_uploads = 0\n", "limits.max_uploads"),
        (
            "[limits]\nmax_header_bytes = \"100\"\n",
            "limits.max_header_bytes",
        ),
        (
            "[s3]\nbucket = \"b\"\nread_timeout = \"0s\"\n",
            "s3.read_timeout",
        ),
    ] {
        let file = dir.path().join("c.toml");
        std::fs::write(&file, text).unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_build-cache-proxy"))
            .arg("check-config")
            .arg(&file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{text:?} was accepted");
        assert!(stderr.contains(key), "{text:?}: {stderr}");
    }
}

/// A client that sends a complete PUT and half-closes its side gets its answer, and the
/// request is stored, logged and counted.
#[tokio::test]
async fn a_half_closed_complete_put_is_answered_logged_and_counted() {
    let work = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(work.path(), "");
    let mut stream = TcpStream::connect(daemon.gradle).await.unwrap();
    let data = body(3, 200_000);
    let head = format!(
        "PUT /cache/{} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        key(3),
        data.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&data).await.unwrap();
    stream.shutdown().await.unwrap();
    let answer = read_until_close(&mut stream, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(is_hit(&daemon, 3, 200_000).await);
    eventually(
        "the access line is written",
        Duration::from_secs(5),
        || async {
            daemon.log().lines().any(|l| {
                l.contains("method=\"PUT\"")
                    && l.contains("status=200")
                    && l.contains("outcome=\"stored\"")
            })
        },
    )
    .await;
    assert_eq!(
        metric(
            &daemon,
            "build_cache_proxy_requests_total{front=\"gradle\",method=\"PUT\",status=\"200\"}"
        )
        .await,
        1.0
    );
}

/// What held before stays held: a request with both Content-Length and chunked framing is
/// refused, pipelined requests are answered in order, and `Expect: 100-continue` with a wrong
/// password gets its 401 before any body is sent.
#[tokio::test]
async fn request_framing_cannot_be_confused() {
    let work = tempfile::tempdir().unwrap();
    let config = "[gradle]\nanonymous = \"read\"\n[[gradle.users]]\nname = \"ci\"\npassword = \"secret\"\naccess = \"readwrite\"\n";
    let daemon = Daemon::start(work.path(), config);

    let mut smuggler = TcpStream::connect(daemon.gradle).await.unwrap();
    smuggler
        .write_all(b"PUT /cache/00000000000000000000000000000001 HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /cache/00000000000000000000000000000001 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_close(&mut smuggler, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer:?}");
    assert_eq!(answer.matches("HTTP/1.1").count(), 1, "{answer:?}");

    let mut pipelined = TcpStream::connect(daemon.gradle).await.unwrap();
    pipelined
        .write_all(b"GET /cache/00000000000000000000000000000001 HTTP/1.1\r\nHost: x\r\n\r\nHEAD /cache/00000000000000000000000000000002 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_close(&mut pipelined, Duration::from_secs(5)).await;
    assert_eq!(answer.matches("HTTP/1.1 404").count(), 2, "{answer:?}");

    let mut expecting = TcpStream::connect(daemon.gradle).await.unwrap();
    expecting
        .write_all(b"PUT /cache/00000000000000000000000000000003 HTTP/1.1\r\nHost: x\r\nAuthorization: Basic Y2k6d3Jvbmc=\r\nContent-Length: 1000000\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let mut head = vec![0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), expecting.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 401");
}

/// One address that reaches the admin port cannot hold all of it: the liveness probe from
/// elsewhere still answers while it tries.
#[tokio::test]
async fn one_address_cannot_hold_the_admin_listener() {
    let work = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(work.path(), "[limits]\nheader_timeout = \"30s\"\n");
    let mut held = Vec::new();
    for _ in 0..70 {
        if let Ok(mut stream) = connect_from([127, 0, 0, 9], daemon.admin).await {
            let _ = stream.write_all(b"G").await;
            held.push(stream);
        }
    }
    for _ in 0..3 {
        let live = reqwest::get(daemon.admin_url("/healthz")).await.unwrap();
        assert_eq!(live.status(), 200);
    }
    // Over its share: answered 503, or closed unanswered once 32 refusals are in progress.
    let text = metrics(&daemon).await;
    let refused = ["max_connections_per_ip", "overloaded"]
        .iter()
        .map(|reason| {
            metric_value(
                &text,
                &format!("build_cache_proxy_connections_refused_total{{listener=\"admin\",reason=\"{reason}\"}}"),
            )
        })
        .sum::<f64>();
    assert!(refused >= 60.0, "refused {refused}");
    drop(held);
}

/// What one address's uploads declare is capped (`limits.max_upload_bytes_per_ip`): a pod
/// declaring large bodies cannot promise the disk away from everyone else's writes.
#[tokio::test]
async fn one_address_cannot_declare_the_disk_away() {
    let work = tempfile::tempdir().unwrap();
    let config =
        "[gradle]\nmax_entry_size = \"8MiB\"\n[limits]\nmax_upload_bytes_per_ip = \"10MiB\"\n";
    let daemon = Daemon::start(work.path(), config);
    let _declared = start_put([127, 0, 0, 2], daemon.gradle, 1, 8 << 20, 1024).await;
    eventually(
        "the first upload to be admitted",
        Duration::from_secs(10),
        || async { metric(&daemon, "build_cache_proxy_uploads_in_progress").await == 1.0 },
    )
    .await;
    let same_pod = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let response = same_pod
        .put(daemon.entry_url(&key(2)))
        .body(body(2, 4 * MIB))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-build-cache-proxy-dropped"],
        "max_upload_bytes_per_ip"
    );
    // Another pod's write is stored.
    stored(&daemon, 3, 4 * MIB).await;
    assert_eq!(
        metric(&daemon, "build_cache_proxy_dropped_puts_total{front=\"gradle\",reason=\"max_upload_bytes_per_ip\"}").await,
        1.0
    );
}

/// The S3 listener has the cache listeners' limits: an unsigned upload declaring 100 GiB is
/// answered at once (403 in S3 XML) and its connection closed instead of being read, and a
/// request head that does not arrive in time gets a 408.
#[tokio::test]
async fn the_s3_listener_has_the_same_limits() {
    let work = tempfile::tempdir().unwrap();
    let config = "[limits]\nmax_refused_body = \"8MiB\"\nheader_timeout = \"2s\"\n[[s3_api.buckets]]\nname = \"cache\"\nwrite = \"local\"\n";
    let daemon = Daemon::start(work.path(), config);

    let mut declared = connect_from([127, 0, 0, 2], daemon.s3).await.unwrap();
    declared
        .write_all(
            b"PUT /cache/archive.zip HTTP/1.1\r\nHost: x\r\nContent-Length: 107374182400\r\n\r\n",
        )
        .await
        .unwrap();
    let _ = declared.write_all(&vec![1u8; MIB]).await;
    let answer = read_until_close(&mut declared, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer:?}");
    assert!(answer.contains("<Code>AccessDenied</Code>"), "{answer:?}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer:?}"
    );

    let mut slow = connect_from([127, 0, 0, 3], daemon.s3).await.unwrap();
    slow.write_all(b"GET /cache/archive.zip HTTP/1.1\r\nHost:")
        .await
        .unwrap();
    let answer = read_until_close(&mut slow, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    let read = metric(
        &daemon,
        "build_cache_proxy_received_bytes_total{front=\"s3\"}",
    )
    .await;
    assert!(
        read <= (8 * MIB) as f64,
        "read {read} bytes of refused bodies"
    );
}

/// Sends `GET path` from `from` and reads until the daemon closes: `None` if it has not closed
/// within 10 s, else what it answered (empty when it closed without a word).
async fn get_from(from: [u8; 4], addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = connect_from(from, addr).await.ok()?;
    let head = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    // A refused connection may already be closed; the answer (none) is what counts.
    let _ = stream.write_all(head.as_bytes()).await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&out).into_owned())
}

/// On the host network no NetworkPolicy stands in front of the daemon: `listen.*_allow_from`
/// closes connections from any other source at once, unanswered and counted, on the cache and
/// admin listeners alike, while listed sources and the node itself (a connection from the
/// address it reaches: the kubelet's probes) are served.
#[tokio::test]
async fn connections_from_unlisted_sources_are_closed_unanswered() {
    let work = tempfile::tempdir().unwrap();
    let config =
        "[listen]\ncache_allow_from = [\"127.0.0.3\"]\nadmin_allow_from = [\"127.0.0.4/32\"]\n";
    let daemon = Daemon::start(work.path(), config);
    // From the node itself (127.0.0.1 to 127.0.0.1).
    stored(&daemon, 1, 1000).await;
    let entry = format!("/cache/{}", key(1));
    let cases = [
        ([127, 0, 0, 2], daemon.gradle, entry.as_str(), false),
        ([127, 0, 0, 4], daemon.gradle, entry.as_str(), false),
        ([127, 0, 0, 3], daemon.gradle, entry.as_str(), true),
        ([127, 0, 0, 1], daemon.gradle, entry.as_str(), true),
        ([127, 0, 0, 3], daemon.admin, "/healthz", false),
        ([127, 0, 0, 4], daemon.admin, "/healthz", true),
        ([127, 0, 0, 1], daemon.admin, "/readyz", true),
    ];
    for (from, addr, path, served) in cases {
        let answer = get_from(from, addr, path)
            .await
            .unwrap_or_else(|| panic!("{from:?} -> {path}: the daemon kept the connection"));
        if served {
            assert!(
                answer.starts_with("HTTP/1.1 200"),
                "{from:?} -> {path}: {answer}"
            );
        } else {
            assert_eq!(answer, "", "{from:?} -> {path}: closed without a word");
        }
    }
    let text = metrics(&daemon).await;
    for (listener, refused) in [("gradle", 2.0), ("admin", 1.0)] {
        let series = format!(
            "build_cache_proxy_connections_refused_total{{listener=\"{listener}\",reason=\"source\"}}"
        );
        assert_eq!(metric_value(&text, &series), refused, "{listener}");
    }
    // Nothing a refused client sent reached the cache.
    assert!(is_hit(&daemon, 1, 1000).await);
}
