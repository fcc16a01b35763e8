//! Soak: the real daemon under a few minutes of Gradle-like traffic while hostile clients, each
//! from its own loopback address, try the attacks of issue 6 at once: slow request heads,
//! stalled uploads, clients that never read their response, fat headers. It checks that the
//! probes never fail, that every legitimate request is served correctly, that the daemon's
//! memory and descriptors stay under stated bounds, that the attackers were cut off, and that
//! descriptors and connections come back to their baseline once the attack stops.
//!
//! Runs for `BCP_SOAK_SECS` seconds (default 120) of attack. Latencies are printed, never
//! asserted: the machine is shared and its speed says nothing about the daemon.

mod common;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

use common::{connect_from, eventually, metric_value, metrics, open_fds_of, rss_of, Daemon};

/// Limits short enough that every attack is cut off many times within a few minutes. The
/// memory tier is made small so that it cannot hide a leak behind its own (legitimate) growth.
const CONFIG: &str = r#"
[limits]
header_timeout = "3s"
body_stall_timeout = "3s"
send_stall_timeout = "3s"
body_min_rate = "64KiB"
max_connections_per_ip = 64

[memory]
max_size = "32MiB"

[disk]
max_size = "2GiB"

[gradle]
max_entry_size = "100MiB"
"#;

/// `limits.max_connections_per_ip` in [`CONFIG`].
const PER_IP_CAP: usize = 64;

/// Peak resident memory allowed. Measured peaks are 110-125 MiB (debug build, 2 minutes; see
/// the summary): about 40 MiB at rest with the legitimate load, the 32 MiB memory tier filling,
/// and under 200 KiB for each of the ~330 attacking connections held at once. The bound leaves
/// twice that, and a leak of 10 KiB per attacking connection (the soak opens ~17,000 of them
/// in 2 minutes) would cross it.
const RSS_BOUND: u64 = 256 << 20;

/// Attacking client addresses, each its own per-IP share: 127.0.0.2 onwards.
const SLOW_HEADER_IPS: u8 = 4;
const STALLED_UPLOAD_IPS: u8 = 2;
const NON_READING_IPS: u8 = 2;
const FAT_HEADER_IPS: u8 = 2;
const ATTACKER_IPS: usize =
    (SLOW_HEADER_IPS + STALLED_UPLOAD_IPS + NON_READING_IPS + FAT_HEADER_IPS) as usize;

/// Slow-header connections per address: more than the per-IP cap, so some are refused.
const SLOW_HEADERS_PER_IP: usize = 80;
/// A slow-header client sends one byte this often.
const TRICKLE: Duration = Duration::from_millis(1500);
/// Stalled uploads per address. Each declares [`STALLED_DECLARED`] bytes, which the disk
/// tier admits against its bound (docs/security.md): eight of them promise 400 MiB of the
/// 2 GiB, leaving room for the legitimate writes that must not be dropped.
const STALLED_PER_IP: usize = 4;
const STALLED_DECLARED: u64 = 50 << 20;
/// What a stalled upload sends before it stops.
const STALLED_SENT: usize = 64 << 10;
/// Non-reading GETs of the large entry per address.
const NON_READING_PER_IP: usize = 4;
/// How long a non-reading client sits on its response before it looks at what arrived.
const NON_READING_HOLD: Duration = Duration::from_secs(8);
/// Fat-header senders per address, and the header bytes each request carries.
const FAT_PER_IP: usize = 2;
const FAT_HEADER_BYTES: usize = 64 << 10;

/// Descriptors allowed at the peak: what the caps let the attackers hold, [`PER_IP_CAP`]
/// connections per attacking address, plus 128 for the daemon's own (about 20 at rest), the
/// legitimate clients, the entry file of each non-reading GET and the temp file of each
/// stalled upload, and the 32 refused connections that may be held while answered 503.
/// Measured peaks are about 345: these attackers hold at most 4 × 64 + 8 + 8 + 4 connections.
const FD_BOUND: usize = PER_IP_CAP * ATTACKER_IPS + 128;

/// After the attack, descriptors must come back to within this many of the baseline (the
/// legitimate clients may hold an entry file or a pooled connection more or fewer).
const FD_RECOVERY_SLACK: usize = 8;

const LARGE_KEY: &str = "64646464646464646464646464646464";
const LARGE_SIZE: usize = 64 << 20;
/// Concurrent legitimate writers (each: PUT, GET, HEAD of a fresh key, in a loop).
const WRITERS: usize = 3;
const SMALL_MIN: usize = 1 << 10;
const SMALL_MAX: usize = 2 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_under_mixed_load_and_attacks() {
    let soak = Duration::from_secs(
        std::env::var("BCP_SOAK_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(120),
    );
    let work = tempfile::tempdir().unwrap();
    let daemon = Arc::new(Daemon::start(work.path(), CONFIG));
    let pid = daemon.pid();
    let gradle = daemon.gradle;

    let large = Arc::new(pattern(LARGE_SIZE, 7));
    {
        let client = reqwest::Client::new();
        let response = put(&client, &daemon.entry_url(LARGE_KEY), large.to_vec()).await;
        assert_eq!(response.status(), 200, "PUT of the large entry");
        assert!(response.headers().get(DROPPED).is_none());
    }

    let stats = Arc::new(Stats::default());
    let stop_legit = Arc::new(AtomicBool::new(false));
    let mut legit = JoinSet::new();
    legit.spawn(probe(daemon.clone(), stats.clone(), stop_legit.clone()));
    legit.spawn(sample(
        pid,
        daemon.clone(),
        stats.clone(),
        stop_legit.clone(),
    ));
    for writer in 0..WRITERS {
        legit.spawn(write_and_read(
            daemon.clone(),
            writer as u64,
            stats.clone(),
            stop_legit.clone(),
        ));
    }
    legit.spawn(read_large(
        daemon.clone(),
        large.clone(),
        stats.clone(),
        stop_legit.clone(),
    ));

    // Let the legitimate load settle, then take the baseline it runs at.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let baseline = Levels::now(&daemon).await;

    stats.attacking.store(true, Ordering::Release);
    let mut attackers = JoinSet::new();
    // Each class of attacker from addresses of its own: 127.0.0.2, .3, ...
    let mut next_ip = 2u8;
    let mut from_own_addresses = |ips: u8, per_ip: usize, attack: Attack| {
        for _ in 0..ips {
            let ip = Ipv4Addr::new(127, 0, 0, next_ip);
            next_ip += 1;
            for _ in 0..per_ip {
                attackers.spawn(attack(ip, gradle, stats.clone()));
            }
        }
    };
    from_own_addresses(SLOW_HEADER_IPS, SLOW_HEADERS_PER_IP, |ip, to, stats| {
        Box::pin(slow_header(ip, to, stats))
    });
    from_own_addresses(STALLED_UPLOAD_IPS, STALLED_PER_IP, |ip, to, stats| {
        Box::pin(stalled_upload(ip, to, stats))
    });
    from_own_addresses(NON_READING_IPS, NON_READING_PER_IP, |ip, to, stats| {
        Box::pin(non_reading(ip, to, stats))
    });
    from_own_addresses(FAT_HEADER_IPS, FAT_PER_IP, |ip, to, stats| {
        Box::pin(fat_headers(ip, to, stats))
    });

    tokio::time::sleep(soak).await;
    // The attack ends: every attacking socket is closed when its task is dropped.
    attackers.abort_all();
    while attackers.join_next().await.is_some() {}
    stats.attacking.store(false, Ordering::Release);
    let attack_metrics = metrics(&daemon).await;

    // Legitimate load goes on while the daemon lets go of what the attackers held.
    eventually(
        "descriptors and connections back near their baseline after the attack",
        Duration::from_secs(60),
        || {
            let daemon = daemon.clone();
            async move {
                open_fds_of(pid) <= baseline.fds + FD_RECOVERY_SLACK
                    && gradle_connections(&daemon).await <= baseline.connections + 4
            }
        },
    )
    .await;
    let recovered = Levels::now(&daemon).await;

    stop_legit.store(true, Ordering::Release);
    while let Some(done) = legit.join_next().await {
        done.unwrap();
    }

    let summary = stats.summary(soak, &baseline, &recovered, &attack_metrics);
    println!("{summary}");

    let failures = stats.legit_failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} legitimate requests failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let probe_failures = stats.probe_failures.lock().unwrap();
    assert!(
        probe_failures.is_empty(),
        "{} probes failed, e.g. {:?}",
        probe_failures.len(),
        &probe_failures[..probe_failures.len().min(5)]
    );
    // The load really ran: without these, the checks above would pass on an idle daemon.
    assert!(stats.puts.load(Ordering::Relaxed) >= 10, "{summary}");
    assert!(stats.large_gets.load(Ordering::Relaxed) >= 3, "{summary}");
    assert!(stats.probes.load(Ordering::Relaxed) >= 10, "{summary}");

    let peak_rss = stats.peak_rss.load(Ordering::Relaxed);
    assert!(
        peak_rss < RSS_BOUND,
        "peak RSS {} MiB is not under {} MiB",
        peak_rss >> 20,
        RSS_BOUND >> 20
    );
    let peak_fds = stats.peak_fds.load(Ordering::Relaxed) as usize;
    assert!(
        peak_fds < FD_BOUND,
        "peak descriptors {peak_fds} not under {FD_BOUND}"
    );

    // The attackers were cut off by the daemon, as the daemon counts it and as they saw it.
    let count = |series: &str| metric_value(&attack_metrics, series);
    assert!(
        count(r#"build_cache_proxy_request_timeouts_total{listener="gradle",phase="header"}"#)
            > 0.0,
        "no head deadline fired"
    );
    assert!(
        count(r#"build_cache_proxy_request_timeouts_total{listener="gradle",phase="body"}"#) > 0.0,
        "no body was cut off for being too slow"
    );
    assert!(
        count(r#"build_cache_proxy_request_timeouts_total{listener="gradle",phase="send"}"#) > 0.0,
        "no send deadline fired"
    );
    assert!(
        count(
            r#"build_cache_proxy_connections_refused_total{listener="gradle",reason="max_connections_per_ip"}"#
        ) > 0.0,
        "no connection was refused at the per-IP cap"
    );
    let seen = |n: &AtomicU64| n.load(Ordering::Relaxed);
    assert!(seen(&stats.slow_header.timed_out) > 0, "{summary}");
    assert!(seen(&stats.stalled.timed_out) > 0, "{summary}");
    assert!(seen(&stats.non_reading.cut) > 0, "{summary}");
    assert_eq!(
        seen(&stats.non_reading.completed),
        0,
        "a client that never read got its whole response: {summary}"
    );
    assert!(seen(&stats.fat.refused) > 0, "{summary}");
    assert_eq!(
        seen(&stats.fat.served),
        0,
        "a 64 KiB request head was served: {summary}"
    );

    Arc::into_inner(daemon)
        .expect("every task holding the daemon has ended")
        .stop();
}

const DROPPED: &str = "x-build-cache-proxy-dropped";

/// Bytes that differ with their position and the seed, cheap to make and to compare.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut data = vec![0u8; len];
    rng.fill(&mut data);
    data
}

async fn put(client: &reqwest::Client, url: &str, body: Vec<u8>) -> reqwest::Response {
    client
        .put(url)
        .header(
            "content-type",
            "application/vnd.gradle.build-cache-artifact.v1",
        )
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("PUT {url}: {e}"))
}

/// The daemon's resident memory, descriptors and Gradle connections at one moment.
struct Levels {
    rss: u64,
    fds: usize,
    connections: u64,
}

impl Levels {
    async fn now(daemon: &Daemon) -> Levels {
        Levels {
            rss: rss_of(daemon.pid()),
            fds: open_fds_of(daemon.pid()),
            connections: gradle_connections(daemon).await,
        }
    }
}

/// What every task reports.
#[derive(Default)]
struct Stats {
    /// Set while the attackers run; latencies are recorded under attack only.
    attacking: AtomicBool,
    puts: AtomicU64,
    small_gets: AtomicU64,
    heads: AtomicU64,
    large_gets: AtomicU64,
    probes: AtomicU64,
    small_latency: Mutex<Vec<Duration>>,
    large_latency: Mutex<Vec<Duration>>,
    legit_failures: Mutex<Vec<String>>,
    probe_failures: Mutex<Vec<String>>,
    probe_slowest: Mutex<Duration>,
    peak_rss: AtomicU64,
    peak_fds: AtomicU64,
    peak_connections: AtomicU64,
    /// RSS every ten seconds, to show whether it levels off or keeps growing.
    rss_every_10s: Mutex<Vec<u64>>,
    slow_header: Endings,
    stalled: Endings,
    non_reading: Endings,
    fat: Endings,
}

/// How attacking connections ended, as the attacker saw it.
#[derive(Default)]
struct Endings {
    opened: AtomicU64,
    /// Answered 408.
    timed_out: AtomicU64,
    /// Answered 503 at the connection cap.
    refused_503: AtomicU64,
    /// Answered 431 (fat headers).
    refused: AtomicU64,
    /// A response cut off before its end (non-reading GETs).
    cut: AtomicU64,
    /// A response that arrived whole: the attack was not stopped.
    completed: AtomicU64,
    /// A request that was served (fat headers): the attack was not stopped.
    served: AtomicU64,
    /// Closed or reset with no answer.
    closed: AtomicU64,
    /// Any other answer.
    other: AtomicU64,
    connect_errors: AtomicU64,
}

impl Endings {
    fn count(&self, field: impl Fn(&Endings) -> &AtomicU64) {
        field(self).fetch_add(1, Ordering::Relaxed);
    }

    /// Sorts an answer's status line.
    fn answered(&self, head: &str) {
        let field = match status_of(head) {
            Some(408) => &self.timed_out,
            Some(503) => &self.refused_503,
            Some(431) => &self.refused,
            Some(_) => &self.other,
            None => &self.closed,
        };
        field.fetch_add(1, Ordering::Relaxed);
    }

    fn line(&self, name: &str) -> String {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "  {name:<14} opened {:>6}  408 {:>5}  503 {:>5}  431 {:>5}  cut {:>4}  whole {:>3}  served {:>3}  closed unanswered {:>5}  other {:>3}  connect errors {}",
            n(&self.opened),
            n(&self.timed_out),
            n(&self.refused_503),
            n(&self.refused),
            n(&self.cut),
            n(&self.completed),
            n(&self.served),
            n(&self.closed),
            n(&self.other),
            n(&self.connect_errors),
        )
    }
}

impl Stats {
    fn legit_failed(&self, what: String) {
        self.legit_failures.lock().unwrap().push(what);
    }

    fn summary(
        &self,
        soak: Duration,
        baseline: &Levels,
        recovered: &Levels,
        attack_metrics: &str,
    ) -> String {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let metric = |series: &str| metric_value(attack_metrics, series) as u64;
        let timeouts = |phase: &str| {
            metric(&format!(
                "build_cache_proxy_request_timeouts_total{{listener=\"gradle\",phase=\"{phase}\"}}"
            ))
        };
        let refused = |reason: &str| {
            metric(&format!(
                "build_cache_proxy_connections_refused_total{{listener=\"gradle\",reason=\"{reason}\"}}"
            ))
        };
        [
            format!("soak: {} s of attack", soak.as_secs()),
            format!(
                "legit: {} PUT, {} GET, {} HEAD of 1 KiB-2 MiB entries, {} GET of the 64 MiB entry; failures {}",
                n(&self.puts),
                n(&self.small_gets),
                n(&self.heads),
                n(&self.large_gets),
                self.legit_failures.lock().unwrap().len()
            ),
            latency_line("GET 1 KiB-2 MiB under attack", &self.small_latency),
            latency_line("GET 64 MiB under attack", &self.large_latency),
            format!(
                "probes: {} rounds of /healthz + /readyz, failures {}, slowest {} ms",
                n(&self.probes),
                self.probe_failures.lock().unwrap().len(),
                self.probe_slowest.lock().unwrap().as_millis()
            ),
            format!(
                "daemon RSS: baseline {} MiB, peak {} MiB (bound {} MiB), after the attack {} MiB",
                baseline.rss >> 20,
                n(&self.peak_rss) >> 20,
                RSS_BOUND >> 20,
                recovered.rss >> 20
            ),
            format!(
                "daemon RSS every 10 s from the start of the load (MiB): {:?}",
                self.rss_every_10s
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|b| b >> 20)
                    .collect::<Vec<_>>()
            ),
            format!(
                "daemon fds: baseline {}, peak {} (bound {FD_BOUND}), after the attack {}",
                baseline.fds,
                n(&self.peak_fds),
                recovered.fds
            ),
            format!(
                "gradle connections: peak {}, after the attack {}",
                n(&self.peak_connections),
                recovered.connections
            ),
            format!(
                "daemon counted: head timeouts {}, body timeouts {}, send timeouts {}, refused per-IP {}, refused total cap {}, closed unanswered (overloaded) {}, accept errors {}",
                timeouts("header"),
                timeouts("body"),
                timeouts("send"),
                refused("max_connections_per_ip"),
                refused("max_connections"),
                refused("overloaded"),
                metric(r#"build_cache_proxy_accept_errors_total{listener="gradle"}"#),
            ),
            "attacks, as the attackers saw them:".to_string(),
            self.slow_header.line("slow headers"),
            self.stalled.line("stalled PUTs"),
            self.non_reading.line("non-reading"),
            self.fat.line("fat headers"),
        ]
        .join("\n")
    }
}

fn latency_line(name: &str, samples: &Mutex<Vec<Duration>>) -> String {
    let mut samples = samples.lock().unwrap().clone();
    if samples.is_empty() {
        return format!("{name}: no samples");
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    format!(
        "{name}: n {}  p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        samples.len(),
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        samples.last().unwrap().as_secs_f64() * 1e3
    )
}

fn status_of(head: &str) -> Option<u16> {
    head.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

// ----- legitimate clients -----------------------------------------------------------------

/// A generous bound on one legitimate request, so that a hang fails the soak instead of
/// stalling it; never reached on a working daemon.
const LEGIT_TIMEOUT: Duration = Duration::from_secs(60);

/// PUT a fresh entry, GET it back, HEAD it: the requests of a Gradle build, with bodies from
/// 1 KiB to 2 MiB.
async fn write_and_read(
    daemon: Arc<Daemon>,
    writer: u64,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) {
    let client = reqwest::Client::builder()
        .timeout(LEGIT_TIMEOUT)
        .build()
        .unwrap();
    let mut rng = fastrand::Rng::with_seed(writer);
    let mut round = 0u64;
    while !stop.load(Ordering::Acquire) {
        round += 1;
        let key = format!("{:016x}{:016x}", writer + 1, round);
        let url = daemon.entry_url(&key);
        let len = rng.usize(SMALL_MIN..=SMALL_MAX);
        let body = pattern(len, writer << 32 | round);
        match client
            .put(&url)
            .header(
                "content-type",
                "application/vnd.gradle.build-cache-artifact.v1",
            )
            .body(body.clone())
            .send()
            .await
        {
            Ok(r) if r.status() == 200 && r.headers().get(DROPPED).is_none() => {}
            Ok(r) => {
                stats.legit_failed(format!(
                    "PUT {key} ({len} B): {} dropped={:?}",
                    r.status(),
                    r.headers().get(DROPPED)
                ));
                continue;
            }
            Err(e) => {
                stats.legit_failed(format!("PUT {key} ({len} B): {e}"));
                continue;
            }
        }
        stats.puts.fetch_add(1, Ordering::Relaxed);

        let started = Instant::now();
        match get_all(&client, &url).await {
            Ok((200, got)) if got == body => {
                if stats.attacking.load(Ordering::Acquire) {
                    stats.small_latency.lock().unwrap().push(started.elapsed());
                }
                stats.small_gets.fetch_add(1, Ordering::Relaxed);
            }
            Ok((status, got)) => stats.legit_failed(format!(
                "GET {key} ({len} B): {status}, {} bytes, same bytes: {}",
                got.len(),
                got == body
            )),
            Err(e) => stats.legit_failed(format!("GET {key} ({len} B): {e}")),
        }

        // A HEAD answer's length is in its header (reqwest's `content_length` is the body's).
        let declared = |r: &reqwest::Response| {
            r.headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        };
        match client.head(&url).send().await {
            Ok(r) if r.status() == 200 && declared(&r) == Some(len) => {
                stats.heads.fetch_add(1, Ordering::Relaxed);
            }
            Ok(r) => stats.legit_failed(format!(
                "HEAD {key}: {} length {:?}",
                r.status(),
                declared(&r)
            )),
            Err(e) => stats.legit_failed(format!("HEAD {key}: {e}")),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// GETs of the 64 MiB entry, read at full speed and compared byte for byte.
async fn read_large(
    daemon: Arc<Daemon>,
    large: Arc<Vec<u8>>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) {
    let client = reqwest::Client::builder()
        .timeout(LEGIT_TIMEOUT)
        .build()
        .unwrap();
    let url = daemon.entry_url(LARGE_KEY);
    while !stop.load(Ordering::Acquire) {
        let started = Instant::now();
        match get_all(&client, &url).await {
            Ok((200, got)) if got[..] == large[..] => {
                if stats.attacking.load(Ordering::Acquire) {
                    stats.large_latency.lock().unwrap().push(started.elapsed());
                }
                stats.large_gets.fetch_add(1, Ordering::Relaxed);
            }
            Ok((status, got)) => stats.legit_failed(format!(
                "GET large: {status}, {} bytes, same bytes: {}",
                got.len(),
                got[..] == large[..]
            )),
            Err(e) => stats.legit_failed(format!("GET large: {e}")),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn get_all(client: &reqwest::Client, url: &str) -> reqwest::Result<(u16, Vec<u8>)> {
    let response = client.get(url).send().await?;
    let status = response.status().as_u16();
    let body = response.bytes().await?;
    Ok((status, body.to_vec()))
}

/// How long a probe may take, as a kubelet probe with `timeoutSeconds: 2` allows.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `/healthz` and `/readyz` every 200 ms, as kubelet probes would (more often).
async fn probe(daemon: Arc<Daemon>, stats: Arc<Stats>, stop: Arc<AtomicBool>) {
    let client = reqwest::Client::builder()
        .timeout(PROBE_TIMEOUT)
        .build()
        .unwrap();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Acquire) {
        tick.tick().await;
        for path in ["/healthz", "/readyz"] {
            let started = Instant::now();
            let outcome = client.get(daemon.admin_url(path)).send().await;
            let took = started.elapsed();
            {
                let mut slowest = stats.probe_slowest.lock().unwrap();
                *slowest = (*slowest).max(took);
            }
            match outcome {
                Ok(r) if r.status() == 200 => {}
                Ok(r) => stats
                    .probe_failures
                    .lock()
                    .unwrap()
                    .push(format!("{path}: {} after {took:?}", r.status())),
                Err(e) => stats
                    .probe_failures
                    .lock()
                    .unwrap()
                    .push(format!("{path}: {e} after {took:?}")),
            }
        }
        stats.probes.fetch_add(1, Ordering::Relaxed);
    }
}

/// Every second: the daemon's resident memory, open descriptors and Gradle connections.
async fn sample(pid: u32, daemon: Arc<Daemon>, stats: Arc<Stats>, stop: Arc<AtomicBool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut seconds = 0u64;
    while !stop.load(Ordering::Acquire) {
        tick.tick().await;
        let now = rss_of(pid);
        stats.peak_rss.fetch_max(now, Ordering::Relaxed);
        if seconds % 10 == 0 {
            stats.rss_every_10s.lock().unwrap().push(now);
        }
        seconds += 1;
        stats
            .peak_fds
            .fetch_max(open_fds_of(pid) as u64, Ordering::Relaxed);
        stats
            .peak_connections
            .fetch_max(gradle_connections(&daemon).await, Ordering::Relaxed);
    }
}

async fn gradle_connections(daemon: &Daemon) -> u64 {
    let text = metrics(daemon).await;
    metric_value(&text, r#"build_cache_proxy_connections{listener="gradle"}"#) as u64
}

// ----- attackers --------------------------------------------------------------------------

/// One attacker: from an address, against the Gradle listener, reporting how it ended.
type Attack =
    fn(Ipv4Addr, SocketAddr, Arc<Stats>) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Reads whatever answer comes, up to the end of its head or the connection's end.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 << 10 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Opens a connection and sends its request head one byte every [`TRICKLE`], never finishing
/// it; when the daemon answers or hangs up, opens the next one.
async fn slow_header(ip: Ipv4Addr, to: SocketAddr, stats: Arc<Stats>) {
    let endings = &stats.slow_header;
    let head = format!(
        "GET /cache/{LARGE_KEY} HTTP/1.1\r\nHost: x\r\nUser-Agent: {}\r\n\r\n",
        "s".repeat(200)
    );
    loop {
        let Ok(mut stream) = connect_from(ip, to).await else {
            endings.count(|e| &e.connect_errors);
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        endings.count(|e| &e.opened);
        let mut sent = 0;
        let answer = loop {
            let mut byte = [0u8; 1];
            tokio::select! {
                read = stream.peek(&mut byte) => match read {
                    Ok(0) | Err(_) => break String::new(),
                    Ok(_) => break read_head(&mut stream).await,
                },
                _ = tokio::time::sleep(TRICKLE) => {
                    // Stop one byte short of the blank line that ends the head.
                    if sent + 1 < head.len() && stream.write_all(&head.as_bytes()[sent..sent + 1]).await.is_ok() {
                        sent += 1;
                    }
                }
            }
        };
        endings.answered(&answer);
        drop(stream);
        // A refused client backs off a little longer, as a retrying one would.
        let pause = if status_of(&answer) == Some(503) || answer.is_empty() {
            1000
        } else {
            200
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// PUTs that declare [`STALLED_DECLARED`] bytes, send [`STALLED_SENT`] and stop.
async fn stalled_upload(ip: Ipv4Addr, to: SocketAddr, stats: Arc<Stats>) {
    let endings = &stats.stalled;
    let mut round = 0u64;
    loop {
        round += 1;
        let Ok(mut stream) = connect_from(ip, to).await else {
            endings.count(|e| &e.connect_errors);
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        endings.count(|e| &e.opened);
        let key = format!("5a5a5a5a{:08x}{:016x}", u32::from(ip), round);
        let head = format!(
            "PUT /cache/{key} HTTP/1.1\r\nHost: x\r\nContent-Type: application/vnd.gradle.build-cache-artifact.v1\r\nContent-Length: {STALLED_DECLARED}\r\n\r\n"
        );
        let sent = async {
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(&vec![0x5a; STALLED_SENT]).await
        }
        .await;
        let answer = match sent {
            Ok(()) => read_head(&mut stream).await,
            Err(_) => String::new(),
        };
        endings.answered(&answer);
        drop(stream);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// GETs of the 64 MiB entry whose client reads nothing for [`NON_READING_HOLD`], then looks
/// at how much of the response had arrived before the daemon gave up on it.
async fn non_reading(ip: Ipv4Addr, to: SocketAddr, stats: Arc<Stats>) {
    let endings = &stats.non_reading;
    loop {
        let Ok(mut stream) = connect_from(ip, to).await else {
            endings.count(|e| &e.connect_errors);
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        endings.count(|e| &e.opened);
        let request = format!("GET /cache/{LARGE_KEY} HTTP/1.1\r\nHost: x\r\n\r\n");
        if stream.write_all(request.as_bytes()).await.is_err() {
            endings.count(|e| &e.closed);
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        tokio::time::sleep(NON_READING_HOLD).await;
        // Now read what the kernel buffered, up to the end the daemon made.
        let mut received = 0usize;
        let mut first = Vec::new();
        let mut buf = vec![0u8; 256 << 10];
        let drained = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if first.len() < 64 {
                            first.extend_from_slice(&buf[..n.min(64)]);
                        }
                        received += n;
                    }
                }
            }
        })
        .await;
        let head = String::from_utf8_lossy(&first).into_owned();
        match status_of(&head) {
            // A whole response is its head (under 1 KiB) plus the entry.
            Some(200) if received >= LARGE_SIZE => endings.count(|e| &e.completed),
            Some(200) if drained.is_ok() => endings.count(|e| &e.cut),
            _ => endings.answered(&head),
        }
        drop(stream);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Requests with [`FAT_HEADER_BYTES`] of header lines, one after another.
async fn fat_headers(ip: Ipv4Addr, to: SocketAddr, stats: Arc<Stats>) {
    let endings = &stats.fat;
    let mut request = format!("GET /cache/{LARGE_KEY} HTTP/1.1\r\nHost: x\r\n");
    let mut line = 0;
    while request.len() < FAT_HEADER_BYTES {
        request.push_str(&format!("X-Fill-{line}: {}\r\n", "f".repeat(100)));
        line += 1;
    }
    request.push_str("\r\n");
    loop {
        let Ok(mut stream) = connect_from(ip, to).await else {
            endings.count(|e| &e.connect_errors);
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        endings.count(|e| &e.opened);
        // The daemon may answer and hang up before the head is all sent.
        let _ = stream.write_all(request.as_bytes()).await;
        let answer = read_head(&mut stream).await;
        match status_of(&answer) {
            Some(200) => endings.count(|e| &e.served),
            _ => endings.answered(&answer),
        }
        drop(stream);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
