//! The S3 tier driven by the real Gradle client (Debian's `gradle` 4.4.1) against a real S3 server
//! (SeaweedFS, `BCP_TEST_S3_ENDPOINT`, started by `scripts/test.sh`): two nodes sharing one
//! bucket, and a build that keeps its cache while S3 is down.
//!
//! The fixture project is `tests/fixtures/gradle-project`; each build gets its own copy and a
//! `settings.gradle` pointing at one daemon (`tests/common/gradle.rs`).

mod common;

use std::path::Path;
use std::time::Duration;

use common::gradle::{task_outcome, Project, DISABLED};
use common::s3::{self, Forwarder};
use common::{eventually, metric_value, metrics, Daemon};

/// A copy of the fixture project whose remote cache is `cache_url`.
fn project(root: &Path, name: &str, cache_url: &str) -> Project {
    let project = Project::new(root, name, &root.join("gradle-home"));
    project.configure_cache(cache_url, None);
    project
}

/// Builds, and checks that the remote cache stayed on for the whole build.
fn build(project: &Project, tasks: &[&str]) -> String {
    let output = project.build(tasks);
    assert!(
        !output.contains(DISABLED),
        "the remote cache was disabled:\n{output}"
    );
    output
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

    let on_a = project(work.path(), "on-a", &a.cache_url());
    let first = tokio::task::block_in_place(|| build(&on_a, &["compileJava"]));
    assert_eq!(task_outcome(&first, ":compileJava").as_deref(), Some(""));
    wait_queue_empty(&a).await;
    assert!(
        gradle_objects(&client, &bucket).await >= 1,
        "node A uploaded"
    );

    // A fresh checkout built against node B: its cache comes from S3.
    let on_b = project(work.path(), "on-b", &b.cache_url());
    let second = tokio::task::block_in_place(|| build(&on_b, &["compileJava"]));
    assert_eq!(
        task_outcome(&second, ":compileJava").as_deref(),
        Some("FROM-CACHE")
    );
    let gets = s3_get_ok(&b).await;
    assert!(gets >= 1.0, "node B read through S3");

    // Again on node B: served from node B's own tiers.
    let third = tokio::task::block_in_place(|| build(&on_b, &["clean", "compileJava"]));
    assert_eq!(
        task_outcome(&third, ":compileJava").as_deref(),
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
    let project = project(work.path(), "project", &daemon.cache_url());
    tokio::task::block_in_place(|| build(&project, &["compileJava"]));
    wait_queue_empty(&daemon).await;
    let uploaded = gradle_objects(&client, &bucket).await;

    fwd.stop().await;
    // Local hits: from cache, and the cache stays on.
    let out = tokio::task::block_in_place(|| build(&project, &["clean", "compileJava"]));
    assert_eq!(
        task_outcome(&out, ":compileJava").as_deref(),
        Some("FROM-CACHE")
    );
    // A change: a miss (S3 unreachable), then a PUT that is acknowledged and queued.
    project.edit(
        "src/main/java/demo/Greeter.java",
        "class Greeter",
        "class Greeter /* changed while S3 was down */",
    );
    let out = tokio::task::block_in_place(|| build(&project, &["compileJava"]));
    assert_eq!(task_outcome(&out, ":compileJava").as_deref(), Some(""));
    assert!(metric(&daemon, "upload_queue_entries").await >= 1.0);

    fwd.restart().await;
    wait_queue_empty(&daemon).await;
    assert!(
        gradle_objects(&client, &bucket).await > uploaded,
        "the entry stored while S3 was down reached the bucket"
    );
    s3::remove_bucket(&client, &bucket).await;
}
