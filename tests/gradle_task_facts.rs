//! What Gradle hits saved, read from the entries' METADATA: a real Gradle build (Debian's
//! `gradle` 4.4.1) on one node, then `clean` and the same build through a second node that
//! fills every entry from S3 (SeaweedFS, `BCP_TEST_S3_ENDPOINT`), so the task facts must have
//! travelled with the objects. The tasks: `compileJava`, `jar` and a custom cacheable task that
//! sleeps a known time (tests/fixtures/gradle-tasks.gradle).

mod common;

use std::path::Path;
use std::time::Duration;

use common::gradle::{task_outcome, Project, DISABLED};
use common::s3;
use common::{eventually, metric_value, metrics, Daemon};

/// What the sleeping task takes, as the fixture sets it.
const SLEEP_SECONDS: f64 = 2.5;
const TASKS: [&str; 3] = [":compileJava", ":jar", ":sleep"];
const COMPILE: &str = "org.gradle.api.tasks.compile.JavaCompile";
const JAR: &str = "org.gradle.api.tasks.bundling.Jar";
const SLEEP: &str = "SleepTask";
/// The user name Gradle records: set through `user.name` so it can be looked for.
const USER: &str = "facts-test-builder";

fn project(root: &Path, name: &str, cache_url: &str) -> Project {
    let project = Project::new(root, name, &root.join("gradle-home"));
    let extra = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/gradle-tasks.gradle"
    ))
    .unwrap();
    let build = project.dir.join("build.gradle");
    let mut text = std::fs::read_to_string(&build).unwrap();
    text.push_str(&extra);
    std::fs::write(&build, text).unwrap();
    project.configure_cache(cache_url, None);
    project
}

fn build(project: &Project, tasks: &[&str]) -> String {
    let opts = format!("-Duser.name={USER}");
    let output = project.build_with_env(tasks, &[("GRADLE_OPTS", &opts)]);
    assert!(
        !output.contains(DISABLED),
        "the remote cache was disabled:\n{output}"
    );
    output
}

fn series(name: &str, task_type: &str) -> String {
    format!("build_cache_proxy_gradle_{name}{{task_type=\"{task_type}\"}}")
}

async fn status_json(daemon: &Daemon) -> serde_json::Value {
    let text = reqwest::get(daemon.admin_url("/status.json"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Whether `word` stands in `text` as a word of its own (not inside a longer name).
fn has_word(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        let part = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '-' || c == '_');
        !part(before) && !part(after)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_knows_what_each_hit_saved() {
    let endpoint = s3::endpoint();
    let client = s3::client(&endpoint);
    let bucket = s3::fresh_bucket(&client, "gradle-facts").await;
    let work = tempfile::tempdir().unwrap();
    let config = s3::config(&bucket, &endpoint, "", "");
    let a = Daemon::start_spec(&work.path().join("node-a"), s3::spec(&config));
    let b = Daemon::start_spec(&work.path().join("node-b"), s3::spec(&config));

    let on_a = project(work.path(), "on-a", &a.cache_url());
    let first = tokio::task::block_in_place(|| build(&on_a, &["jar", "sleep"]));
    for task in TASKS {
        assert_eq!(
            task_outcome(&first, task).as_deref(),
            Some(""),
            "{task} ran on A"
        );
    }
    eventually("node A's uploads", Duration::from_secs(60), || async {
        metric_value(&metrics(&a).await, "build_cache_proxy_upload_queue_entries") == 0.0
    })
    .await;
    // Node A missed each task, then stored it: the misses carry the stored task's type.
    let on_a_metrics = metrics(&a).await;
    for task_type in [COMPILE, JAR, SLEEP] {
        assert_eq!(
            metric_value(&on_a_metrics, &series("misses_total", task_type)),
            1.0
        );
        assert_eq!(
            metric_value(&on_a_metrics, &series("stores_total", task_type)),
            1.0
        );
    }

    // The facts went to S3 with the objects, under the daemon's reserved metadata names.
    let listed = client
        .list_objects_v2()
        .bucket(&bucket)
        .prefix("gradle/")
        .send()
        .await
        .unwrap();
    let mut types = Vec::new();
    for object in listed.contents() {
        let meta = s3::object_metadata(&client, &bucket, object.key().unwrap()).await;
        types.push(
            meta.get("build-cache-proxy-gradle-type")
                .cloned()
                .unwrap_or_default(),
        );
        assert!(
            meta.values()
                .all(|v| !has_word(v, USER) && !v.contains("/on-a")),
            "{meta:?}"
        );
    }
    types.sort();
    let mut expected = vec![COMPILE.to_string(), JAR.to_string(), SLEEP.to_string()];
    expected.sort();
    assert_eq!(types, expected);

    // The same checkout, cleaned, built through node B: every task from the cache, which node
    // B filled from S3.
    on_a.configure_cache(&b.cache_url(), None);
    let second = tokio::task::block_in_place(|| build(&on_a, &["clean", "jar", "sleep"]));
    for task in TASKS {
        assert_eq!(
            task_outcome(&second, task).as_deref(),
            Some("FROM-CACHE"),
            "{task} on B"
        );
    }
    let on_b = metrics(&b).await;
    assert_eq!(
        metric_value(
            &on_b,
            "build_cache_proxy_reads_total{front=\"gradle\",result=\"hit\",tier=\"s3\"}"
        ),
        3.0
    );
    for task_type in [COMPILE, JAR, SLEEP] {
        assert_eq!(
            metric_value(&on_b, &series("hits_total", task_type)),
            1.0,
            "{task_type}"
        );
    }
    let saved_sleeping = metric_value(&on_b, &series("time_saved_seconds_total", SLEEP));
    assert!(saved_sleeping >= SLEEP_SECONDS, "saved {saved_sleeping} s");
    assert!(metric_value(&on_b, &series("time_saved_seconds_total", COMPILE)) > 0.0);

    let status = status_json(&b).await;
    let saved = status["gradle"]["saved_seconds_since_start"]
        .as_f64()
        .unwrap();
    assert!(saved >= SLEEP_SECONDS, "{status}");
    let top = &status["gradle"]["top_types_by_saved"][0];
    assert_eq!(top["name"], SLEEP, "{status}");
    let paths: Vec<&str> = status["gradle"]["top_paths_by_saved"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&":sleep") && paths.contains(&":compileJava"),
        "{paths:?}"
    );
    assert_eq!(status["fronts"][0]["since_start"]["s3_hits"], 3, "{status}");

    // Gradle recorded this machine's host name and our user name in every METADATA; neither is
    // kept, shown or logged, nor the project's directory.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let project_dir = on_a.dir.display().to_string();
    for daemon in [&a, &b] {
        let shown = [
            metrics(daemon).await,
            status_json(daemon).await.to_string(),
            reqwest::get(daemon.admin_url("/"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
            daemon.log(),
        ];
        for text in &shown {
            assert!(!has_word(text, USER), "user name in:\n{text}");
            assert!(!has_word(text, &host), "host name {host:?} in:\n{text}");
            assert!(
                !text.contains(&project_dir),
                "project directory in:\n{text}"
            );
        }
    }
    s3::remove_bucket(&client, &bucket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_whose_task_cannot_be_read_are_stored_unchanged_and_counted_as_unknown() {
    use build_cache_proxy::gradle_meta::sample;
    let work = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(work.path(), "");
    let http = reqwest::Client::new();
    let huge_metadata = format!("type=a.B\nfiller={}\n", "x".repeat(1 << 20));
    let mut tar_bomb = sample::header("PaxHeaders/x", 8192, b'x').to_vec();
    tar_bomb.extend(vec![b'1'; 8192]);
    tar_bomb.extend_from_slice(&sample::header("PaxHeaders/y", 8192, b'x'));
    tar_bomb.extend(vec![b'1'; 32 << 20]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not_gzip", b"this is not a gzip stream".to_vec()),
        ("not_tar", sample::gzip(&[b'z'; 10_000])),
        (
            "no_metadata",
            sample::gzip(&sample::tar(&[("property-out/a", b"data")])),
        ),
        (
            "too_large",
            sample::gzip(&sample::tar(&[("METADATA", huge_metadata.as_bytes())])),
        ),
        // 32 MiB behind 17 KiB of tar headers: inflated only as far as the reader's bound.
        ("too_large", sample::gzip(&tar_bomb)),
    ];
    for (i, (_, body)) in cases.iter().enumerate() {
        let url = daemon.entry_url(&format!("{:032x}", 0xbad0 + i));
        let put = http.put(&url).body(body.clone()).send().await.unwrap();
        assert_eq!(put.status(), 200);
        assert!(
            put.headers().get("x-build-cache-proxy-dropped").is_none(),
            "case {i} stored"
        );
        let got = http.get(&url).send().await.unwrap();
        assert_eq!(got.status(), 200);
        assert!(
            got.bytes().await.unwrap() == body[..],
            "case {i} served unchanged"
        );
    }
    let text = metrics(&daemon).await;
    let unknown = |reason: &str| {
        metric_value(
            &text,
            &format!("build_cache_proxy_gradle_unknown_entries_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(unknown("not_gzip"), 1.0);
    assert_eq!(unknown("not_tar"), 1.0);
    assert_eq!(unknown("no_metadata"), 1.0);
    assert_eq!(unknown("too_large"), 2.0);
    assert_eq!(metric_value(&text, &series("hits_total", "unknown")), 5.0);
    assert_eq!(metric_value(&text, &series("stores_total", "unknown")), 5.0);
    let saved: f64 = text
        .lines()
        .filter(|l| l.starts_with("build_cache_proxy_gradle_time_saved_seconds_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(saved, 0.0);
}
