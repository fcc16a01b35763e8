//! End-to-end tests with the real Gradle client (Debian's `gradle` 4.4.1, `apt-get install -y
//! gradle`) against the real daemon: a small Java project under `tests/fixtures/gradle-project`
//! is copied to a temp dir, given a `settings.gradle` whose `buildCache` points at the daemon,
//! and built with `--build-cache`. The assertions are on Gradle's own output.
//! (`tests/common/gradle.rs` runs Gradle and reads its output.) Gradle sends credentials
//! preemptively: the daemon counts a wrong password as `bad_credentials`, not a missing one.

mod common;

use common::gradle::{assert_outcome, cache_error_line, has_line, Project, DISABLED};
use common::{metric_value, Daemon};

const AUTH_USERS: &str = r#"
[gradle]
anonymous = "none"
[[gradle.users]]
name = "writer"
password = "write-secret"
access = "readwrite"
[[gradle.users]]
name = "reader"
password = "read-secret"
access = "read"
"#;

fn metrics(daemon: &Daemon) -> String {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(common::metrics(daemon))
}

fn disk_entries(daemon: &Daemon) -> f64 {
    metric_value(&metrics(daemon), "build_cache_proxy_disk_entries")
}

#[test]
fn second_build_is_from_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("daemon");
    let gradle_home = tmp.path().join("gradle-home");
    let daemon = Daemon::start(&work, "");
    let project = Project::new(tmp.path(), "project", &gradle_home);
    project.configure_cache(&daemon.cache_url(), None);

    // Empty cache: compileJava runs and its output is pushed.
    let first = project.build(&["compileJava"]);
    assert_outcome(&first, ":compileJava", "");
    assert!(!first.contains(DISABLED), "cache disabled:\n{first}");
    assert_eq!(disk_entries(&daemon), 1.0, "daemon log:\n{}", daemon.log());

    // Same inputs after clean: the output is loaded from the cache.
    let second = project.build(&["clean", "compileJava"]);
    assert_outcome(&second, ":compileJava", "FROM-CACHE");
    assert!(!second.contains(DISABLED), "cache disabled:\n{second}");

    // A new daemon on the same data dir (memory tier empty) still has the entry on disk.
    let status = daemon.stop();
    assert!(status.success(), "daemon exited with {status} on SIGTERM");
    let daemon = Daemon::start(&work, "");
    assert_eq!(
        disk_entries(&daemon),
        1.0,
        "index not rebuilt; log:\n{}",
        daemon.log()
    );
    project.configure_cache(&daemon.cache_url(), None);
    let third = project.build(&["clean", "compileJava"]);
    assert_outcome(&third, ":compileJava", "FROM-CACHE");
    assert!(!third.contains(DISABLED), "cache disabled:\n{third}");
    let text = metrics(&daemon);
    assert_eq!(
        metric_value(
            &text,
            "build_cache_proxy_lookups_total{result=\"hit\",tier=\"disk\"}"
        ),
        1.0,
        "metrics:\n{text}"
    );
}

#[test]
fn wrong_password_warns_and_build_passes() {
    let tmp = tempfile::tempdir().unwrap();
    let config = "[gradle]\nanonymous = \"none\"\n[[gradle.users]]\nname = \"ci\"\n\
                  password = \"right\"\naccess = \"readwrite\"\n";
    let daemon = Daemon::start(&tmp.path().join("daemon"), config);
    let project = Project::new(tmp.path(), "project", &tmp.path().join("gradle-home"));
    project.configure_cache(&daemon.cache_url(), Some(("ci", "wrong")));

    // The first GET is answered 401; Gradle warns, disables the remote cache, builds anyway.
    let out = project.build(&["compileJava"]);
    assert_outcome(&out, ":compileJava", "");
    let error = cache_error_line(&out, "Could not load entry ");
    assert!(
        error.contains("for task ':compileJava' from remote build cache")
            && error.contains("response status 401"),
        "unexpected load error line: {error}"
    );
    assert!(has_line(&out, DISABLED), "no {DISABLED:?} in:\n{out}");

    let text = metrics(&daemon);
    assert!(
        metric_value(
            &text,
            "build_cache_proxy_auth_failures_total{front=\"gradle\",reason=\"bad_credentials\"}"
        ) >= 1.0,
        "no auth failure counted; metrics:\n{text}"
    );
    assert_eq!(
        metric_value(&text, "build_cache_proxy_disk_entries"),
        0.0,
        "metrics:\n{text}"
    );
}

#[test]
fn read_only_user_gets_hits_but_stores_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let gradle_home = tmp.path().join("gradle-home");
    let daemon = Daemon::start(&tmp.path().join("daemon"), AUTH_USERS);

    // The writer fills the cache.
    let writer = Project::new(tmp.path(), "writer", &gradle_home);
    writer.configure_cache(&daemon.cache_url(), Some(("writer", "write-secret")));
    let out = writer.build(&["compileJava"]);
    assert_outcome(&out, ":compileJava", "");
    assert!(!out.contains(DISABLED), "cache disabled:\n{out}");
    let stored = disk_entries(&daemon);
    assert_eq!(stored, 1.0, "writer stored nothing; log:\n{}", daemon.log());

    // A fresh clone built by the reader is served from the cache.
    let reader = Project::new(tmp.path(), "reader", &gradle_home);
    reader.configure_cache(&daemon.cache_url(), Some(("reader", "read-secret")));
    let out = reader.build(&["clean", "compileJava"]);
    assert_outcome(&out, ":compileJava", "FROM-CACHE");
    assert!(!out.contains(DISABLED), "cache disabled:\n{out}");

    // New inputs: a miss, then the reader's PUT is refused with 403. Gradle 4.4.1 treats that
    // like any other non-2xx answer — it prints "Could not store entry … response status 403:
    // Forbidden", disables the remote cache and the build still passes. That is the client's
    // behaviour, not the daemon's choice; what matters is that nothing was stored.
    reader.edit(
        "src/main/java/demo/Main.java",
        "new Greeter(\"Hello\")",
        "new Greeter(\"Hi\")",
    );
    let out = reader.build(&["compileJava"]);
    assert_outcome(&out, ":compileJava", "");
    let error = cache_error_line(&out, "Could not store entry ");
    assert!(
        error.contains("for task ':compileJava' in remote build cache")
            && error.contains("response status 403"),
        "unexpected store error line: {error}"
    );
    assert!(has_line(&out, DISABLED), "no {DISABLED:?} in:\n{out}");

    let text = metrics(&daemon);
    assert_eq!(
        metric_value(&text, "build_cache_proxy_disk_entries"),
        stored,
        "the read-only user stored an entry; metrics:\n{text}"
    );
    assert_eq!(
        metric_value(
            &text,
            "build_cache_proxy_requests_total{front=\"gradle\",method=\"PUT\",status=\"403\"}"
        ),
        1.0,
        "metrics:\n{text}"
    );
    assert!(
        metric_value(
            &text,
            "build_cache_proxy_auth_failures_total{front=\"gradle\",reason=\"access_denied\"}"
        ) >= 1.0,
        "metrics:\n{text}"
    );
}

/// Writes `classes` Java classes into the project, each holding `per_class` bytes of random
/// base64 in string constants, so the compileJava cache entry is about that large even gzip'd.
fn add_incompressible_classes(project: &Project, classes: usize, per_class: usize) {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const CONSTANT: usize = 16_000; // well under the class file's 65535-byte constant limit
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ALPHABET[(state % 64) as usize] as char
    };
    let dir = project.dir.join("src/main/java/demo");
    for c in 0..classes {
        let mut source = format!("package demo;\n\npublic class Payload{c} {{\n");
        for k in 0..per_class.div_ceil(CONSTANT) {
            let text: String = (0..CONSTANT).map(|_| next()).collect();
            source.push_str(&format!(
                "    public static final String P{k} = \"{text}\";\n"
            ));
        }
        source.push_str("}\n");
        std::fs::write(dir.join(format!("Payload{c}.java")), source).unwrap();
    }
}

/// A read-only user pushing a large (≈16 MiB) entry must also see "403: Forbidden".
///
/// FAILS with the daemon at commit 8da1f22 (src/fronts/gradle.rs): the front answers 403 right
/// after the request headers without reading the body (access log `bytes_in=0`), and the
/// connection is closed with the body still arriving. Gradle's HTTP client (Apache HttpClient,
/// no `Expect: 100-continue`) is still writing, gets `java.net.SocketException: Broken pipe`
/// and never reads the 403; `RetryExec` retries the PUT on a new connection, the same happens,
/// and Gradle prints the misleading `Could not store entry <key> for task ':compileJava' in
/// remote build cache: Build cache entry has already been stored` (its one-shot entry writer was
/// asked to write twice). The build passes and nothing is stored, but the user never learns
/// that it was a 403. It is a race: the 1.3 KB entries of the other tests are read with the
/// headers and always see the 403, a 2.6 MB entry failed 1 run in 3 here, 16 MiB (far more than
/// the loopback socket buffers hold) failed 3 runs in 3. Reading (draining) the body before
/// answering a refused PUT, as `oversize = "drop"` already does, makes Gradle print
/// `response status 403: Forbidden` (checked by hand with a patched build). The same applies
/// to 401 on a PUT and to `oversize = "reject"` (413) without `Expect: 100-continue`.
#[test]
fn read_only_user_large_entry_is_refused_with_403() {
    let tmp = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&tmp.path().join("daemon"), AUTH_USERS);
    let project = Project::new(tmp.path(), "project", &tmp.path().join("gradle-home"));
    add_incompressible_classes(&project, 64, 256_000);
    project.configure_cache(&daemon.cache_url(), Some(("reader", "read-secret")));

    let out = project.build(&["compileJava"]);
    assert_outcome(&out, ":compileJava", "");
    let error = cache_error_line(&out, "Could not store entry ");
    assert!(
        error.contains("for task ':compileJava' in remote build cache")
            && error.contains("response status 403"),
        "Gradle did not see the 403 for its PUT: {error}\ndaemon log:\n{}",
        daemon.log()
    );
    assert!(has_line(&out, DISABLED), "no {DISABLED:?} in:\n{out}");
    let text = metrics(&daemon);
    assert_eq!(
        metric_value(&text, "build_cache_proxy_disk_entries"),
        0.0,
        "metrics:\n{text}"
    );
}
