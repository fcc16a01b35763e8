//! A full filesystem under the disk tier: writes are dropped (2xx, counted), nothing stored is
//! lost or damaged, no temp files stay behind, and `/readyz` says when the disk takes no writes.
//! With `disk.min_free`, eviction keeps the floor free instead.
//!
//! The filesystem is a small tmpfs mounted for the test (the tests run as root, as in CI).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{metric_value, metrics, Daemon, DaemonSpec};

/// A tmpfs of `size` mounted at a fresh directory; unmounted on drop.
struct SmallFs {
    dir: PathBuf,
    _parent: tempfile::TempDir,
}

impl SmallFs {
    fn mount(size: &str) -> SmallFs {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("fs");
        std::fs::create_dir(&dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs failed: these tests need root (as CI runs them)"
        );
        SmallFs {
            dir,
            _parent: parent,
        }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

fn key(n: u32) -> String {
    format!("{n:032x}")
}

fn body(n: u32) -> Vec<u8> {
    (0..512 * 1024u32)
        .map(|i| (i.wrapping_mul(7) ^ n) as u8)
        .collect()
}

fn temp_files(data_dir: &Path) -> usize {
    std::fs::read_dir(data_dir.join("tmp"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A PUT written in pieces over one connection, then a HEAD on the same connection.
/// Returns the PUT's response head.
fn put_in_pieces(addr: std::net::SocketAddr, key: &str, body: &[u8]) -> String {
    let path = format!("/cache/{key}");
    let (answer, next) = common::put_in_pieces(addr, &path, "", body, &format!("HEAD {path}"));
    assert!(
        next.starts_with("HTTP/1.1 404"),
        "connection not reusable: {next:?}"
    );
    answer
}

async fn put(daemon: &Daemon, n: u32) -> reqwest::Response {
    reqwest::Client::new()
        .put(daemon.entry_url(&key(n)))
        .body(body(n))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_full_filesystem_drops_writes_and_keeps_what_is_stored() {
    let fs = SmallFs::mount("6m");
    let config = "[disk]\nmax_size = \"64MiB\"\nmin_free = \"0\"\n[memory]\nmax_size = \"0\"\n[gradle]\nmax_entry_size = \"1MiB\"\n";
    let daemon = Daemon::start(&fs.dir, config);
    let mut stored = Vec::new();
    let mut dropped = 0;
    for n in 0..20 {
        let response = put(&daemon, n).await;
        assert_eq!(
            response.status(),
            200,
            "a full disk must not disable Gradle's cache"
        );
        match response.headers().get("x-build-cache-proxy-dropped") {
            None => stored.push(n),
            Some(reason) => {
                assert_eq!(reason, "store-error");
                dropped += 1;
            }
        }
    }
    assert!(dropped > 0, "6 MiB can't hold 20 entries of 512 KiB");
    assert!(stored.len() >= 5, "only {} entries fit", stored.len());
    assert_eq!(
        temp_files(&daemon.data_dir),
        0,
        "a failed write left its temp file"
    );
    for &n in &stored {
        let response = reqwest::get(daemon.entry_url(&key(n))).await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            response.bytes().await.unwrap() == body(n),
            "entry {n} damaged"
        );
    }
    let text = metrics(&daemon).await;
    assert_eq!(
        metric_value(
            &text,
            "build_cache_proxy_dropped_puts_total{front=\"gradle\",reason=\"store_error\"}"
        ),
        dropped as f64
    );
    // Readiness means "the disk takes writes": fill the last bytes, and it says no.
    let filler = fs.dir.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    while std::io::Write::write_all(&mut file, &[0u8; 4096]).is_ok() {}
    drop(file);
    let ready = reqwest::get(daemon.admin_url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503, "a full disk can't take writes");
    // A client streaming its body into a full disk still gets to send all of it and sees the
    // 2xx drop, on a connection it can keep using.
    let answer = put_in_pieces(daemon.gradle, &key(99), &body(99));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("x-build-cache-proxy-dropped: store-error"),
        "{answer}"
    );
    assert!(ready.text().await.unwrap().contains("disk not writable"));
    // Liveness never fails for a full disk: restarting the pod would not free anything.
    let live = reqwest::get(daemon.admin_url("/healthz")).await.unwrap();
    assert_eq!(live.status(), 200);
    std::fs::remove_file(&filler).unwrap();
    let ready = reqwest::get(daemon.admin_url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
}

/// The daemon's log on a full disk: every write to stderr fails (`/dev/full` answers ENOSPC).
/// Each request still gets its answer; the lines it would have logged are dropped.
#[tokio::test]
async fn a_log_that_cannot_be_written_costs_no_request() {
    let work = tempfile::tempdir().unwrap();
    let spec = DaemonSpec::new("[memory]\nmax_size = \"0\"\n")
        .env("RUST_LOG", "debug")
        .wrapped_in(&["sh", "-c", "exec \"$0\" \"$@\" 2>/dev/full"]);
    let daemon = Daemon::start_spec(work.path(), spec);
    for n in 0..5 {
        let response = put(&daemon, n).await;
        assert_eq!(response.status(), 200);
        assert!(response
            .headers()
            .get("x-build-cache-proxy-dropped")
            .is_none());
        let response = reqwest::get(daemon.entry_url(&key(n))).await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.bytes().await.unwrap() == body(n));
        let missing = reqwest::get(daemon.entry_url(&key(100 + n))).await.unwrap();
        assert_eq!(missing.status(), 404);
        for path in ["/healthz", "/readyz", "/metrics", "/"] {
            let answer = reqwest::get(daemon.admin_url(path)).await.unwrap();
            assert_eq!(answer.status(), 200, "{path}");
        }
    }
}

#[tokio::test]
async fn min_free_evicts_to_keep_the_floor() {
    let fs = SmallFs::mount("8m");
    let config = "[disk]\nmax_size = \"64MiB\"\nmin_free = \"3MiB\"\n[memory]\nmax_size = \"0\"\n[gradle]\nmax_entry_size = \"1MiB\"\n";
    let daemon = Daemon::start(&fs.dir, config);
    for n in 0..20 {
        let response = put(&daemon, n).await;
        assert_eq!(response.status(), 200);
        assert!(
            response
                .headers()
                .get("x-build-cache-proxy-dropped")
                .is_none(),
            "write {n} was dropped instead of evicting older entries"
        );
        let stat = rustix::fs::statvfs(&fs.dir).unwrap();
        let free = stat.f_bavail * stat.f_frsize;
        assert!(free >= 3 << 20, "only {free} bytes free after write {n}");
    }
    let newest = reqwest::get(daemon.entry_url(&key(19))).await.unwrap();
    assert!(newest.bytes().await.unwrap() == body(19));
    assert!(
        metric_value(
            &metrics(&daemon).await,
            "build_cache_proxy_disk_evictions_total"
        ) > 0.0
    );
    assert_eq!(
        reqwest::get(daemon.admin_url("/readyz"))
            .await
            .unwrap()
            .status(),
        200
    );
}

/// The dependency proxy on a full disk: a file it cannot keep is passed through from the
/// upstream, whole and still checked against the upstream's `.sha1` (a tampered one is cut short,
/// never complete), and a full disk leaves nothing half written behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependencies_pass_through_a_full_disk_checked() {
    use common::maven::{Repo, Upstream};
    let fs = SmallFs::mount("4m");
    let upstream_root = tempfile::tempdir().unwrap();
    let repo = Repo::new(&upstream_root.path().join("maven2"));
    let jar: Vec<u8> = (0..1_500_000u32).map(|i| (i % 253) as u8).collect();
    repo.publish(("org.example", "big", "1.0"), &[], &jar);
    repo.publish(("org.example", "bad", "1.0"), &[], &jar);
    let mut tampered = jar.clone();
    tampered[700_000] ^= 1;
    repo.write_raw("org/example/bad/1.0/bad-1.0.jar", &tampered);
    let upstream = Upstream::start(upstream_root.path(), std::time::Duration::ZERO);
    let config = format!(
        "[disk]\nmax_size = \"64MiB\"\nmin_free = \"0\"\n[memory]\nmax_size = \"0\"\n[gradle]\nmax_entry_size = \"1MiB\"\n\
         [[maven.repositories]]\nname = \"test\"\nurl = \"{}\"\n",
        upstream.url("maven2")
    );
    let daemon = Daemon::start(&fs.dir, &config);
    let filler = fs.dir.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    while std::io::Write::write_all(&mut file, &[0u8; 4096]).is_ok() {}
    drop(file);

    let base = format!("http://{}/maven/test/org/example", daemon.gradle);
    let response = reqwest::get(format!("{base}/big/1.0/big-1.0.jar"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.bytes().await.unwrap() == jar,
        "the passed-through jar differs"
    );
    let text = metrics(&daemon).await;
    assert!(
        metric_value(
            &text,
            "build_cache_proxy_dependency_requests_total{repository=\"maven/test\",result=\"passed_through\"}"
        ) >= 1.0,
        "{text}"
    );
    let response = reqwest::get(format!("{base}/bad/1.0/bad-1.0.jar"))
        .await
        .unwrap();
    let whole = response.bytes().await;
    assert!(
        whole.is_err() || whole.unwrap().len() < jar.len(),
        "a jar that does not match its .sha1 arrived complete"
    );
    assert_eq!(
        temp_files(&daemon.data_dir),
        0,
        "a failed write left its temp file"
    );
    std::fs::remove_file(&filler).unwrap();
}
