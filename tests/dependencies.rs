//! The dependency proxy with real Gradle (Debian's 4.4.1): a project whose build declares the
//! test's own Maven repository (generated poms, jars and `.sha1` files, served by
//! `common::maven::Upstream` on loopback), a `-SNAPSHOT` and a plugin through
//! `pluginManagement`, resolved through the node by the Gradle init script the chart ships,
//! unchanged. Nodes share one SeaweedFS bucket. And the proxy's HTTP semantics, over a socket:
//! one upstream request for concurrent misses, remembered 404s, 5xx never remembered, bad
//! paths and methods, a download checked against its `.sha256`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::gradle::{has_line, Project};
use common::maven::{plugin_jar, Repo, Upstream};
use common::{metric_value, Daemon};

const INIT_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/chart/build-cache-proxy/files/build-cache-proxy.init.gradle"
);
const SNAPSHOT_DIR: &str = "org/example/snap/2.0-SNAPSHOT";

/// The repository every test serves: app → lib → util, a snapshot, a jar that does not match
/// its `.sha1`, and the `bcp.hello` plugin with its marker.
fn build_repository(root: &Path, work: &Path) -> Repo {
    let repo = Repo::new(&root.join("maven2"));
    repo.publish(("org.example", "util", "1.0"), &[], b"util jar bytes");
    repo.publish(
        ("org.example", "lib", "1.0"),
        &[("org.example", "util", "1.0")],
        b"lib jar bytes",
    );
    repo.publish(
        ("org.example", "app", "1.0"),
        &[("org.example", "lib", "1.0")],
        b"app jar bytes",
    );
    repo.publish_snapshot(
        ("org.example", "snap", "2.0-SNAPSHOT"),
        1,
        b"snapshot build 1",
    );
    repo.publish(
        ("org.example", "tampered", "1.0"),
        &[],
        b"the jar as published",
    );
    // The jar replaced upstream after publication; its .sha1 still the original's.
    repo.write_raw(
        "org/example/tampered/1.0/tampered-1.0.jar",
        b"the jar as tampered with",
    );
    let plugins = Repo::new(&root.join("plugins"));
    plugins.publish(
        ("org.example", "hello-plugin", "1.0"),
        &[],
        &plugin_jar(work),
    );
    plugins.publish_plugin_marker("bcp.hello", "1.0", ("org.example", "hello-plugin", "1.0"));
    repo
}

fn node_config(upstream: &Upstream, s3: Option<(&str, &str)>) -> String {
    let deps = format!(
        "[maven]\nnot_found_ttl = \"10m\"\n\
         [[maven.repositories]]\nname = \"test\"\nurl = \"{}\"\nmetadata_max_age = \"2s\"\n\
         [[maven.repositories]]\nname = \"plugins\"\nurl = \"{}\"\n\
         [[downloads]]\nname = \"gradle\"\nurl = \"{}\"\n",
        upstream.url("maven2"),
        upstream.url("plugins"),
        upstream.url("distributions"),
    );
    match s3 {
        Some((bucket, endpoint)) => common::s3::config(bucket, endpoint, "", &deps),
        None => deps,
    }
}

/// A Gradle project that knows nothing of the node: its repositories are the upstream's.
fn project(root: &Path, name: &str, upstream: &Upstream) -> Project {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("settings.gradle"),
        format!(
            "pluginManagement {{ repositories {{ maven {{ url '{}' }} }} }}\nrootProject.name = 'deps'\n",
            upstream.url("plugins")
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("build.gradle"),
        format!(
            "plugins {{ id 'bcp.hello' version '1.0' }}\n\
             apply plugin: 'java'\n\
             repositories {{ maven {{ url '{}' }} }}\n\
             configurations {{ tampered }}\n\
             configurations.all {{ resolutionStrategy.cacheChangingModulesFor 0, 'seconds' }}\n\
             dependencies {{\n  compile 'org.example:app:1.0'\n  compile 'org.example:snap:2.0-SNAPSHOT'\n  \
             tampered 'org.example:tampered:1.0'\n}}\n\
             task resolve {{ doLast {{\n  \
               configurations.compileClasspath.files.collect {{ it.name }}.sort().each {{ println \"RESOLVED $it\" }}\n  \
               configurations.compileClasspath.files.findAll {{ it.name.startsWith('snap') }}.each {{ println \"SNAPSHOT ${{it.text}}\" }}\n  \
               println \"PLUGIN ${{project.bcpPlugin}}\"\n}} }}\n\
             task resolveTampered {{ doLast {{ configurations.tampered.files.each {{ println \"RESOLVED ${{it.name}}\" }} }} }}\n",
            upstream.url("maven2")
        ),
    )
    .unwrap();
    Project {
        dir,
        gradle_home: root.join(format!("{name}-gradle-home")),
    }
}

/// Runs `task` through `node` with the init script and a Gradle home of its own.
fn resolve_through(project: &Project, node: &Daemon, task: &str) -> (bool, String) {
    let url = format!("http://{}", node.gradle);
    project.run(
        &["--init-script", INIT_SCRIPT, task],
        &[("BUILD_CACHE_PROXY_URL", url.as_str())],
    )
}

fn assert_resolved(output: &str, snapshot_build: u32) {
    for jar in [
        "app-1.0.jar".to_string(),
        "lib-1.0.jar".to_string(),
        "util-1.0.jar".to_string(),
        "snap-2.0-SNAPSHOT.jar".to_string(),
    ] {
        assert!(
            has_line(output, &format!("RESOLVED {jar}")),
            "{jar} not resolved:\n{output}"
        );
    }
    assert!(
        has_line(output, &format!("SNAPSHOT snapshot build {snapshot_build}")),
        "snapshot build {snapshot_build} not resolved:\n{output}"
    );
    assert!(
        has_line(output, "PLUGIN applied"),
        "plugin not applied:\n{output}"
    );
}

async fn metrics_of(node: &Daemon) -> String {
    common::metrics(node).await
}

async fn deps_metric(node: &Daemon, name: &str, labels: &str) -> f64 {
    let text = metrics_of(node).await;
    metric_value(&text, &format!("build_cache_proxy_{name}{{{labels}}}"))
}

async fn get(url: &str) -> (u16, Vec<u8>) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

async fn wait_uploaded(node: &Daemon) {
    common::eventually(
        "the write-back queue to drain",
        Duration::from_secs(60),
        || async {
            metric_value(
                &metrics_of(node).await,
                "build_cache_proxy_upload_queue_entries",
            ) == 0.0
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gradle_resolves_through_the_node_and_a_second_node_from_s3() {
    let tmp = tempfile::tempdir().unwrap();
    let endpoint = common::s3::endpoint();
    let s3 = common::s3::client(&endpoint);
    let bucket = common::s3::fresh_bucket(&s3, "deps").await;
    let repo = build_repository(&tmp.path().join("upstream"), tmp.path());
    let upstream = Upstream::start(&tmp.path().join("upstream"), Duration::ZERO);
    let config = node_config(&upstream, Some((&bucket, &endpoint)));
    let node = |name: &str| Daemon::start_spec(&tmp.path().join(name), common::s3::spec(&config));

    // Node A, cold: every file from the upstream, through the init script's redirection.
    let a = node("a");
    let project_a = project(tmp.path(), "project-a", &upstream);
    let (ok, output) = tokio::task::block_in_place(|| resolve_through(&project_a, &a, "resolve"));
    assert!(ok, "resolution through node A failed:\n{output}");
    assert_resolved(&output, 1);
    // The build's repositories were the upstream's; it went to the node for all of them.
    let app_jar = "org/example/app/1.0/app-1.0.jar";
    assert_eq!(upstream.count(&format!("/maven2/{app_jar}")), 1);
    assert!(
        deps_metric(
            &a,
            "dependency_requests_total",
            "repository=\"maven/test\",result=\"fetched\""
        )
        .await
            >= 5.0,
        "{}",
        metrics_of(&a).await
    );

    // A new snapshot upstream: not seen within metadata_max_age (2 s), seen after it.
    let metadata_url = format!(
        "http://{}/maven/test/{SNAPSHOT_DIR}/maven-metadata.xml",
        a.gradle
    );
    let (status, _) = get(&metadata_url).await; // revalidated now, whatever its age was
    assert_eq!(status, 200);
    repo.publish_snapshot(
        ("org.example", "snap", "2.0-SNAPSHOT"),
        2,
        b"snapshot build 2",
    );
    let (_, body) = get(&metadata_url).await;
    assert!(
        String::from_utf8_lossy(&body).contains("<buildNumber>1</buildNumber>"),
        "a new snapshot seen before metadata_max_age"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, body) = get(&metadata_url).await;
    assert!(
        String::from_utf8_lossy(&body).contains("<buildNumber>2</buildNumber>"),
        "the new snapshot not seen after metadata_max_age"
    );
    let project_a2 = project(tmp.path(), "project-a2", &upstream);
    let (ok, output) = tokio::task::block_in_place(|| resolve_through(&project_a2, &a, "resolve"));
    assert!(ok, "{output}");
    assert_resolved(&output, 2);

    // A jar that does not match its upstream .sha1: the dependency fails, clearly, and nothing
    // of it is kept.
    let (ok, output) =
        tokio::task::block_in_place(|| resolve_through(&project_a2, &a, "resolveTampered"));
    assert!(!ok, "a tampered jar resolved:\n{output}");
    assert!(
        output.contains("tampered-1.0.jar") && output.contains("502"),
        "no clear error for the tampered jar:\n{output}"
    );
    let tampered = "org/example/tampered/1.0/tampered-1.0.jar";
    let (status, body) = get(&format!("http://{}/maven/test/{tampered}", a.gradle)).await;
    assert_eq!(status, 502);
    assert!(
        String::from_utf8_lossy(&body).contains("sha1 mismatch"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(
        deps_metric(
            &a,
            "dependency_checksum_failures_total",
            "repository=\"maven/test\""
        )
        .await
            >= 2.0
    );
    let fetches = upstream.count(&format!("/maven2/{tampered}"));
    assert!(
        fetches >= 2,
        "a refused jar was served again without a fetch"
    );
    wait_uploaded(&a).await;
    let object = |path: &str| format!("deps/maven/test/{path}");
    assert!(common::s3::object(&s3, &bucket, &object(app_jar))
        .await
        .is_some());
    assert!(common::s3::object(&s3, &bucket, &object(tampered))
        .await
        .is_none());

    // Node B, empty, same bucket: release files come from S3, not from the upstream.
    upstream.reset_counts();
    let b = node("b");
    let project_b = project(tmp.path(), "project-b", &upstream);
    let (ok, output) = tokio::task::block_in_place(|| resolve_through(&project_b, &b, "resolve"));
    assert!(ok, "resolution through node B failed:\n{output}");
    assert_resolved(&output, 2);
    for base in ["maven2", "plugins"] {
        for (path, count) in upstream.requests(base) {
            let changing = path.contains("-SNAPSHOT/") || path.contains("maven-metadata");
            assert!(
                changing,
                "node B asked the upstream for the release file {base}/{path} ({count}×)"
            );
        }
    }
    assert!(
        deps_metric(
            &b,
            "dependency_served_bytes_total",
            "from=\"s3\",repository=\"maven/test\""
        )
        .await
            > 0.0
    );
    assert!(
        deps_metric(
            &b,
            "dependency_hits_total",
            "repository=\"maven/test\",tier=\"s3\""
        )
        .await
            >= 4.0
    );
    // The status page's split: node B's bytes came from the bucket, not the internet.
    let (_, status) = get(&b.admin_url("/status.json")).await;
    let status: serde_json::Value = serde_json::from_slice(&status).unwrap();
    let test_repo = status["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["repository"] == "maven/test")
        .unwrap_or_else(|| panic!("no maven/test in {status}"));
    assert!(test_repo["s3_bytes"].as_u64().unwrap() > 0, "{test_repo}");
    let (_, page) = get(&b.admin_url("/")).await;
    assert!(String::from_utf8_lossy(&page).contains("Dependencies served"));
    // Node B does not have the tampered jar either: it checks the upstream's bytes itself.
    let (status, _) = get(&format!("http://{}/maven/test/{tampered}", b.gradle)).await;
    assert_eq!(status, 502);
    assert_eq!(upstream.count(&format!("/maven2/{tampered}")), 1);

    // The upstream stopped: node C, empty, resolves the whole graph from S3, the snapshot's
    // metadata served stale.
    upstream.stop();
    let c = node("c");
    let project_c = project(tmp.path(), "project-c", &upstream);
    let (ok, output) = tokio::task::block_in_place(|| resolve_through(&project_c, &c, "resolve"));
    assert!(ok, "resolution with the upstream stopped failed:\n{output}");
    assert_resolved(&output, 2);
    assert!(
        deps_metric(
            &c,
            "dependency_requests_total",
            "repository=\"maven/test\",result=\"stale\""
        )
        .await
            >= 1.0,
        "{}",
        metrics_of(&c).await
    );
    common::s3::remove_bucket(&s3, &bucket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_upstream_request_per_miss_remembered_404s_and_refusals() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("upstream");
    let repo = Repo::new(&root.join("maven2"));
    repo.publish(("org.example", "big", "1.0"), &[], &vec![7u8; 256 * 1024]);
    let dists = Repo::new(&root.join("distributions"));
    dists.write_raw("gradle-9.9-bin.zip", b"a distribution");
    dists.write_raw(
        "gradle-9.9-bin.zip.sha256",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"a distribution")).as_bytes(),
    );
    dists.write_raw("gradle-9.8-bin.zip", b"a distribution, altered");
    dists.write_raw(
        "gradle-9.8-bin.zip.sha256",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"a distribution")).as_bytes(),
    );
    // Every answer takes 300 ms, so concurrent requests overlap.
    let upstream = Upstream::start(&root, Duration::from_millis(300));
    let node = Daemon::start(&tmp.path().join("node"), &node_config(&upstream, None));
    let base = format!("http://{}", node.gradle);

    // Eight clients miss the same jar at once: one upstream request for it (and one for its
    // .sha1), and every client gets the whole jar.
    let jar = "org/example/big/1.0/big-1.0.jar";
    let url = format!("{base}/maven/test/{jar}");
    let clients: Vec<_> = (0..8)
        .map(|_| tokio::spawn(get_owned(url.clone())))
        .collect();
    for client in clients {
        let (status, body) = client.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(body.len(), 256 * 1024);
    }
    assert_eq!(upstream.count(&format!("/maven2/{jar}")), 1);
    assert_eq!(upstream.count(&format!("/maven2/{jar}.sha1")), 1);

    // A 404 is remembered: Gradle's probes of a repository cost one round trip each.
    let missing = format!("{base}/maven/test/org/example/none/1.0/none-1.0.pom");
    assert_eq!(get(&missing).await.0, 404);
    assert_eq!(get(&missing).await.0, 404);
    assert_eq!(
        upstream.count("/maven2/org/example/none/1.0/none-1.0.pom"),
        1
    );
    assert!(
        deps_metric(
            &node,
            "dependency_requests_total",
            "repository=\"maven/test\",result=\"not_found_cached\""
        )
        .await
            >= 1.0
    );

    // A download checked against its .sha256; one that does not match is refused.
    let (status, body) = get(&format!("{base}/downloads/gradle/gradle-9.9-bin.zip")).await;
    assert_eq!((status, body.as_slice()), (200, &b"a distribution"[..]));
    assert_eq!(
        upstream.count("/distributions/gradle-9.9-bin.zip.sha256"),
        1
    );
    assert_eq!(
        get(&format!("{base}/downloads/gradle/gradle-9.8-bin.zip"))
            .await
            .0,
        502
    );

    // The index the init script reads.
    let (status, body) = get(&format!("{base}/maven/")).await;
    assert_eq!(status, 200);
    let index = String::from_utf8(body).unwrap();
    assert!(
        index.contains(&format!("test {}", upstream.url("maven2"))),
        "{index}"
    );

    // Refusals, without asking the upstream.
    let before = upstream.requests("maven2").values().sum::<u32>();
    for (path, status) in [
        ("/maven/nope/org/x.pom", 404),
        ("/maven/test/org/../../etc/passwd", 404),
        ("/maven/test/org/%2e%2e/x.pom", 404),
        ("/maven/test/org/example/", 404),
    ] {
        assert_eq!(raw_get(node.gradle, path), status, "{path}");
    }
    // A path longer than any key may be (900 bytes after the repository's name).
    let long = format!("/maven/test/{}x.pom", "segment/".repeat(120));
    assert_eq!(raw_get(node.gradle, &long), 404);
    let put = reqwest::Client::new()
        .put(&url)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 405);
    assert_eq!(upstream.requests("maven2").values().sum::<u32>(), before);

    // The upstream gone: a file never fetched is a 502 (not a 404, which would send Gradle to
    // the next repository as if the file did not exist), and it is not remembered as missing.
    upstream.stop();
    let never = format!("{base}/maven/test/org/example/other/1.0/other-1.0.pom");
    assert_eq!(get(&never).await.0, 502);
    // A cached file is still served.
    assert_eq!(get(&url).await.0, 200);
}

/// A GET of `path` exactly as written (an HTTP client would resolve its dot segments first).
fn raw_get(addr: std::net::SocketAddr, path: &str) -> u16 {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let head = common::read_response_head(&mut stream);
    head.split_whitespace().nth(1).unwrap().parse().unwrap()
}

async fn get_owned(url: String) -> (u16, Vec<u8>) {
    get(&url).await
}
