//! The S3 tier driven by the real Gradle client (Debian's `gradle` 4.4.1) against a real S3 server
//! (SeaweedFS, `BCP_TEST_S3_ENDPOINT`, started by `scripts/test.sh`): two nodes sharing one
//! bucket, and a build that keeps its cache while S3 is down.
//!
//! The fixture project is `tests/fixtures/gradle-project`; each build gets its own copy and a
//! `settings.gradle` pointing at one daemon. Gradle runs one at a time (two-core machines).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use common::s3::{self, Forwarder};
use common::{eventually, metric_value, metrics, Daemon};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gradle-project");
const DISABLED: &str = "The remote build cache was disabled during the build due to errors.";
static GRADLE_LOCK: Mutex<()> = Mutex::new(());

struct Project {
    dir: PathBuf,
    gradle_home: PathBuf,
}

impl Project {
    fn new(root: &Path, name: &str, cache_url: &str) -> Project {
        let dir = root.join(name);
        copy_dir(Path::new(FIXTURE), &dir);
        std::fs::write(
            dir.join("settings.gradle"),
            format!(
                "rootProject.name = 'demo'\nbuildCache {{\n  local {{ enabled = false }}\n  remote(HttpBuildCache) {{\n    url = '{cache_url}'\n    push = true\n  }}\n}}\n"
            ),
        )
        .unwrap();
        Project {
            dir,
            gradle_home: root.join("gradle-home"),
        }
    }

    /// Runs Gradle with the build cache on; returns its output, asserting success.
    fn build(&self, tasks: &[&str]) -> String {
        let _serial = GRADLE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let output = Command::new("gradle")
            .args(["--no-daemon", "--build-cache", "--console=plain"])
            .arg("-g")
            .arg(&self.gradle_home)
            .args(tasks)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .expect("run `gradle` (Debian: apt-get install -y gradle)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        eprintln!("--- gradle {tasks:?} in {} ---\n{text}", self.dir.display());
        assert!(output.status.success(), "gradle {tasks:?} failed:\n{text}");
        assert!(
            !text.contains(DISABLED),
            "the remote cache was disabled:\n{text}"
        );
        text
    }

    fn edit(&self, file: &str, from: &str, to: &str) {
        let path = self.dir.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{file} does not contain {from:?}");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The outcome Gradle printed for `task` (`:compileJava FROM-CACHE` in 4.4, `> Task :…` later).
fn outcome(output: &str, task: &str) -> Option<String> {
    output.lines().find_map(|line| {
        let line = line.trim();
        let line = line.strip_prefix("> Task ").unwrap_or(line);
        let rest = line.strip_prefix(task)?;
        if rest.is_empty() {
            Some(String::new())
        } else {
            rest.strip_prefix(' ').map(|o| o.trim().to_string())
        }
    })
}

async fn metric(daemon: &Daemon, series: &str) -> f64 {
    metric_value(
        &metrics(daemon).await,
        &format!("build_cache_proxy_{series}"),
    )
}

async fn s3_get_ok(daemon: &Daemon) -> f64 {
    metric(daemon, "s3_requests_total{op=\"get\",result=\"ok\"}").await
}

async fn wait_queue_empty(daemon: &Daemon) {
    eventually(
        "the write-back queue to drain",
        Duration::from_secs(60),
        || async { metric(daemon, "upload_queue_entries").await == 0.0 },
    )
    .await;
}

async fn gradle_objects(client: &aws_sdk_s3::Client, bucket: &str) -> usize {
    let out = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix("gradle/")
        .send()
        .await
        .unwrap();
    out.contents().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_on_one_node_is_from_cache_on_another() {
    let endpoint = s3::endpoint();
    let client = s3::client(&endpoint);
    let bucket = s3::fresh_bucket(&client, "gradle-nodes").await;
    let work = tempfile::tempdir().unwrap();
    let config = s3::config(&bucket, &endpoint, "", "");
    let a = Daemon::start_spec(&work.path().join("node-a"), s3::spec(&config));
    let b = Daemon::start_spec(&work.path().join("node-b"), s3::spec(&config));

    let on_a = Project::new(work.path(), "on-a", &a.cache_url());
    let first = tokio::task::block_in_place(|| on_a.build(&["compileJava"]));
    assert_eq!(outcome(&first, ":compileJava").as_deref(), Some(""));
    wait_queue_empty(&a).await;
    assert!(
        gradle_objects(&client, &bucket).await >= 1,
        "node A uploaded"
    );

    // A fresh checkout built against node B: its cache comes from S3.
    let on_b = Project::new(work.path(), "on-b", &b.cache_url());
    let second = tokio::task::block_in_place(|| on_b.build(&["compileJava"]));
    assert_eq!(
        outcome(&second, ":compileJava").as_deref(),
        Some("FROM-CACHE")
    );
    let gets = s3_get_ok(&b).await;
    assert!(gets >= 1.0, "node B read through S3");

    // Again on node B: served from node B's own tiers.
    let third = tokio::task::block_in_place(|| on_b.build(&["clean", "compileJava"]));
    assert_eq!(
        outcome(&third, ":compileJava").as_deref(),
        Some("FROM-CACHE")
    );
    assert_eq!(s3_get_ok(&b).await, gets, "no S3 GET for the third build");
    s3::remove_bucket(&client, &bucket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_keep_their_cache_while_s3_is_down() {
    let endpoint = s3::endpoint();
    let client = s3::client(&endpoint);
    let bucket = s3::fresh_bucket(&client, "gradle-outage").await;
    let fwd = Forwarder::start(&endpoint).await;
    let work = tempfile::tempdir().unwrap();
    let config = s3::config(
        &bucket,
        &fwd.endpoint(),
        "read_timeout = \"2s\"\nbreaker_failures = 2\nbreaker_cooldown = \"1s\"\nretry_max_backoff = \"1s\"",
        "",
    );
    let daemon = Daemon::start_spec(work.path(), s3::spec(&config));
    let project = Project::new(work.path(), "project", &daemon.cache_url());
    tokio::task::block_in_place(|| project.build(&["compileJava"]));
    wait_queue_empty(&daemon).await;
    let uploaded = gradle_objects(&client, &bucket).await;

    fwd.stop().await;
    // Local hits: from cache, and the cache stays on.
    let out = tokio::task::block_in_place(|| project.build(&["clean", "compileJava"]));
    assert_eq!(outcome(&out, ":compileJava").as_deref(), Some("FROM-CACHE"));
    // A change: a miss (S3 unreachable), then a PUT that is acknowledged and queued.
    project.edit(
        "src/main/java/demo/Greeter.java",
        "class Greeter",
        "class Greeter /* changed while S3 was down */",
    );
    let out = tokio::task::block_in_place(|| project.build(&["compileJava"]));
    assert_eq!(outcome(&out, ":compileJava").as_deref(), Some(""));
    assert!(metric(&daemon, "upload_queue_entries").await >= 1.0);

    fwd.restart().await;
    wait_queue_empty(&daemon).await;
    assert!(
        gradle_objects(&client, &bucket).await > uploaded,
        "the entry stored while S3 was down reached the bucket"
    );
    s3::remove_bucket(&client, &bucket).await;
}
