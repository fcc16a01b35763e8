use std::time::Duration;

use super::*;

const REFERENCE: &str = include_str!("../../config/build-cache-proxy.toml");

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_with_env("test", text, Vec::new())
}

fn parse_env(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let vars = vars.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    Config::from_toml_with_env("test", text, vars)
}

fn as_toml(config: &Config) -> String {
    toml::to_string(config).unwrap()
}

#[test]
fn reference_file_parses_and_shows_the_defaults() {
    let config = parse(REFERENCE).expect("reference config parses");
    assert_eq!(as_toml(&config), as_toml(&Config::default()));
}

#[test]
fn reference_file_commented_examples_are_valid() {
    // Uncomment every commented key and table: the examples must be valid config too.
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("pw");
    std::fs::write(&secret, "from-file\n").unwrap();
    let uncommented: String = REFERENCE
        .lines()
        .map(|line| {
            let looks_like_setting = line.starts_with("#[")
                || line
                    .strip_prefix('#')
                    .and_then(|rest| rest.split_once(" = "))
                    .is_some_and(|(k, _)| !k.is_empty() && !k.contains(' '));
            if looks_like_setting {
                line[1..]
                    .replace(
                        "/etc/build-cache-proxy/secrets/ci-password",
                        secret.to_str().unwrap(),
                    )
                    .replace(
                        "/etc/build-cache-proxy/secrets/s3-secret-key",
                        secret.to_str().unwrap(),
                    )
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let config =
        parse(&uncommented.replace("bucket = \"my-build-cache\"", "bucket = \"b\"")).unwrap();
    let s3 = config.s3.expect("[s3] example uncommented");
    assert_eq!(s3.bucket, "b");
    assert_eq!(config.gradle.users.len(), 2);
    assert_eq!(
        config.gradle.users[0].password.as_deref(),
        Some("from-file")
    );
    assert!(config.tls.serves("gradle"), "[tls] example uncommented");
    assert!(!config.tls.serves("admin"));
    let credential = &config.s3_api.credentials[0];
    assert_eq!(credential.secret_key.as_deref(), Some("from-file"));
    assert_eq!(credential.buckets["runner-cache"], Access::Readwrite);
}

#[test]
fn s3_api_credentials_are_checked() {
    let bucket = "[[s3_api.buckets]]\nname = \"cache\"\nwrite = \"local\"\n";
    let credential =
        |extra: &str| format!("{bucket}[[s3_api.credentials]]\naccess_key = \"k\"\n{extra}\n");
    let ok = parse(&credential(
        "secret_key = \"s\"\nbuckets = { cache = \"read\" }",
    ))
    .unwrap();
    assert_eq!(ok.s3_api.credentials[0].buckets["cache"], Access::Read);
    for (extra, key, says) in [
        (
            "buckets = { cache = \"read\" }",
            "s3_api.credentials[0].secret_key",
            "set secret_key or secret_key_file",
        ),
        (
            "secret_key = \"s\"\nbuckets = { other = \"read\" }",
            "s3_api.credentials[0].buckets",
            "no [[s3_api.buckets]] defines",
        ),
    ] {
        let err = parse(&credential(extra)).unwrap_err().to_string();
        assert!(err.contains(key) && err.contains(says), "{err}");
    }
    let twice = format!(
        "{}[[s3_api.credentials]]\naccess_key = \"k\"\nsecret_key = \"t\"\nbuckets = {{}}\n",
        credential("secret_key = \"s\"\nbuckets = {}")
    );
    let err = parse(&twice).unwrap_err().to_string();
    assert!(err.contains("listed twice"), "{err}");
    let debug = format!("{:?}", ok.s3_api.credentials[0]);
    assert!(!debug.contains("\"s\""), "the secret shows in {debug}");
}

#[test]
fn empty_config_is_the_embedded_default() {
    let config = parse("").unwrap();
    assert_eq!(config.listen.gradle, "127.0.0.1:5071");
    assert_eq!(config.listen.admin, "127.0.0.1:9091");
    assert_eq!(config.disk.dir, std::path::PathBuf::from("./data"));
    assert_eq!(config.gradle.anonymous, Access::Readwrite);
    assert!(config.s3.is_none());
}

#[test]
fn idle_timeout_outlives_gradles_connection_pool() {
    assert!(Config::default().listen.idle_timeout > Duration::from_secs(180));
}

#[test]
fn human_sizes_and_durations() {
    let config = parse("[disk]\nmax_size = \"50GiB\"\n[memory]\nmax_size = \"64MiB\"\nmax_entry_size = 4096\n[listen]\nidle_timeout = \"4m 30s\"").unwrap();
    assert_eq!(config.disk.max_size.as_u64(), 50 << 30);
    assert_eq!(config.memory.max_size.as_u64(), 64 << 20);
    assert_eq!(config.memory.max_entry_size.as_u64(), 4096);
    assert_eq!(config.listen.idle_timeout, Duration::from_secs(270));
}

#[test]
fn unknown_keys_are_rejected_by_name() {
    let err = parse("[disk]\nmax_sizee = \"1GiB\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_sizee"), "{err}");
    let err = parse("[disks]\nmax_size = \"1GiB\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("disks"), "{err}");
}

#[test]
fn bad_values_name_their_key() {
    let err = parse("[disk]\nmax_size = \"lots\"")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("disk.max_size:"), "{err}");
    let err = parse("[gradle]\noversize = \"ignore\"")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("gradle.oversize:"), "{err}");
    let err = parse("[listen]\ngradle = \"localhost\"")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("listen.gradle:"), "{err}");
    let err = parse("[memory]\nmax_size = \"1MiB\"\nmax_entry_size = \"2MiB\"")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("memory.max_entry_size:"), "{err}");
    let err = parse("[[gradle.users]]\nname = \"a\"\naccess = \"read\"")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("gradle.users[0].password:"), "{err}");
    let err = parse("[s3]\nprefix = \"x\"").unwrap_err().to_string();
    assert!(err.starts_with("s3.bucket:"), "{err}");
}

#[test]
fn durations_that_would_overflow_a_deadline_are_rejected() {
    // Found by the config fuzz target: accepted, this cooldown panicked the daemon the first
    // time the S3 breaker opened (`Instant::now() + cooldown` overflows).
    let err = parse("[s3]\nbucket = \"b\"\nbreaker_cooldown = \"500000000000y\"")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("s3.breaker_cooldown:"), "{err}");
    let err = parse("[listen]\ndrain_timeout = \"25h\"")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("listen.drain_timeout:"), "{err}");
    let config = parse("[s3]\nbucket = \"b\"\nretry_max_backoff = \"24h\"").unwrap();
    assert_eq!(
        config.s3.unwrap().retry_max_backoff,
        Duration::from_secs(86_400)
    );
}

#[test]
fn environment_overrides_the_file() {
    let config = parse_env(
        "[disk]\nmax_size = \"1GiB\"",
        &[
            ("BUILD_CACHE_PROXY_DISK_MAX_SIZE", "50GiB"),
            ("BUILD_CACHE_PROXY_LISTEN_GRADLE", "0.0.0.0:5071"),
            ("BUILD_CACHE_PROXY_GRADLE_OVERSIZE", "reject"),
            ("BUILD_CACHE_PROXY_S3_BUCKET", "shared"),
            ("BUILD_CACHE_PROXY_S3_PREFIX", "2024"),
            ("BUILD_CACHE_PROXY_S3_MAX_ATTEMPTS", "5"),
            ("BUILD_CACHE_PROXY_S3_FORCE_PATH_STYLE", "true"),
            ("UNRELATED", "x"),
        ],
    )
    .unwrap();
    assert_eq!(config.disk.max_size.as_u64(), 50 << 30);
    assert_eq!(config.listen.gradle, "0.0.0.0:5071");
    assert_eq!(config.gradle.oversize, Oversize::Reject);
    let s3 = config.s3.unwrap();
    assert_eq!(s3.bucket, "shared");
    assert_eq!(s3.prefix, "2024");
    assert_eq!(s3.max_attempts, 5);
    assert!(s3.force_path_style);
}

#[test]
fn bad_environment_overrides_name_the_variable() {
    let err = parse_env("", &[("BUILD_CACHE_PROXY_DISK_MAX_SIZ", "1GiB")])
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("BUILD_CACHE_PROXY_DISK_MAX_SIZ:"), "{err}");
    let err = parse_env("", &[("BUILD_CACHE_PROXY_S3_MAX_ATTEMPTS", "many")])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("BUILD_CACHE_PROXY_S3_MAX_ATTEMPTS:"),
        "{err}"
    );
    let err = parse_env("", &[("BUILD_CACHE_PROXY_DISK_MAX_SIZE", "huge")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("disk.max_size"), "{err}");
}

#[test]
fn secrets_come_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, "hunter2\n").unwrap();
    let text = format!(
        "[[gradle.users]]\nname = \"ci\"\npassword_file = {:?}\naccess = \"readwrite\"",
        file.to_str().unwrap()
    );
    let config = parse(&text).unwrap();
    assert_eq!(config.gradle.users[0].password.as_deref(), Some("hunter2"));
    assert!(
        !format!("{config:?}").contains("hunter2"),
        "secrets must not appear in debug output"
    );

    let missing = text.replace("password\"", "nope\"");
    let err = parse(&missing).unwrap_err().to_string();
    assert!(err.starts_with("gradle.users[0].password_file:"), "{err}");
}

#[test]
fn tls_is_off_by_default_and_both_files_are_needed() {
    let config = parse("").unwrap();
    assert!(!config.tls.enabled());
    assert!(!config.tls.serves("gradle"));

    let err = parse("[tls]\ncert_file = \"/c.pem\"")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("tls.key_file:"), "{err}");
    let err = parse("[tls]\nkey_file = \"/k.pem\"")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("tls.cert_file:"), "{err}");

    let config = parse(
        "[tls]\ncert_file = \"/c.pem\"\nkey_file = \"/k.pem\"\nlisteners = [\"gradle\", \"admin\"]",
    )
    .unwrap();
    assert!(config.tls.serves("gradle") && config.tls.serves("admin"));
}

#[test]
fn tls_rejects_unknown_listeners_and_absurd_durations() {
    let err = parse("[tls]\nlisteners = [\"gradle\", \"grdle\"]")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("tls.listeners[1]:"), "{err}");
    for (text, key) in [
        ("reload_interval = \"0s\"", "tls.reload_interval:"),
        ("reload_interval = \"2h\"", "tls.reload_interval:"),
        ("handshake_timeout = \"0s\"", "tls.handshake_timeout:"),
        ("handshake_timeout = \"10m\"", "tls.handshake_timeout:"),
    ] {
        let err = parse(&format!("[tls]\n{text}")).unwrap_err().to_string();
        assert!(err.starts_with(key), "{text}: {err}");
    }
}

#[test]
fn tls_files_and_durations_come_from_the_environment() {
    let config = parse_env(
        "",
        &[
            ("BUILD_CACHE_PROXY_TLS_CERT_FILE", "/tls/tls.crt"),
            ("BUILD_CACHE_PROXY_TLS_KEY_FILE", "/tls/tls.key"),
            ("BUILD_CACHE_PROXY_TLS_RELOAD_INTERVAL", "1m"),
        ],
    )
    .unwrap();
    assert_eq!(
        config.tls.cert_file,
        std::path::PathBuf::from("/tls/tls.crt")
    );
    assert_eq!(
        config.tls.key_file,
        std::path::PathBuf::from("/tls/tls.key")
    );
    assert_eq!(config.tls.reload_interval, Duration::from_secs(60));
    // Lists are not scalars: the variable is refused by name rather than half-applied.
    let err = parse_env("", &[("BUILD_CACHE_PROXY_TLS_LISTENERS", "admin")])
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("BUILD_CACHE_PROXY_TLS_LISTENERS:"), "{err}");
}

const S3: &str = "[s3]\nbucket = \"shared\"\nprefix = \"ci\"\n";

#[test]
fn buckets_take_their_defaults_from_s3() {
    let config = parse(&format!(
        "{S3}[gradle]\nwrite = \"local\"\n[[s3_api.buckets]]\nname = \"runner-cache\"\n\
         [[s3_api.buckets]]\nname = \"artifacts\"\nbackend_bucket = \"jars\"\nbackend_prefix = \"\"\n\
         write = \"through\"\nfreshness = \"immutable\"\nmax_object_size = \"2GiB\"\n"
    ))
    .unwrap();
    assert_eq!(config.gradle.write, WritePolicy::Local);
    let [cache, jars] = &config.s3_api.buckets[..] else {
        panic!("two buckets");
    };
    assert_eq!(cache.write, WritePolicy::Back);
    assert_eq!(cache.freshness, FreshnessPolicy::Revalidate);
    assert_eq!(cache.backend_bucket, None);
    assert_eq!(jars.max_object_size.unwrap().as_u64(), 2 << 30);

    use crate::store::policy::{BackendLocation, Freshness, WriteMode};
    use crate::store::Namespace;
    let policies = crate::daemon::policies(&config);
    let cache = policies.of(&Namespace::new("runner-cache").unwrap());
    assert_eq!(cache.write, WriteMode::Back);
    assert_eq!(cache.freshness, Freshness::Revalidate);
    assert_eq!(
        cache.location,
        Some(BackendLocation {
            bucket: "shared".into(),
            prefix: "ci/runner-cache/".into(),
        }),
        "today's layout: <s3.prefix><name>/"
    );
    let jars = policies.of(&Namespace::new("artifacts").unwrap());
    assert_eq!(jars.write, WriteMode::Through);
    assert_eq!(jars.freshness, Freshness::Immutable);
    assert_eq!(jars.max_object_size, Some(2 << 30));
    assert_eq!(
        jars.location,
        Some(BackendLocation {
            bucket: "jars".into(),
            prefix: String::new(),
        })
    );
    let gradle = policies.of(&Namespace::gradle());
    assert_eq!(gradle.write, WriteMode::Local);
    assert_eq!(gradle.freshness, Freshness::Immutable);
}

#[test]
fn reserved_bucket_names_are_refused_as_reserved() {
    for name in ["tmp", "gradle", ".queue"] {
        let err = parse(&format!("{S3}[[s3_api.buckets]]\nname = \"{name}\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("s3_api.buckets[0].name:"), "{err}");
        assert!(err.contains("reserved"), "{name}: {err}");
    }
    for name in ["UPPER", "ab", "-lead", "a..b", ""] {
        let err = parse(&format!("{S3}[[s3_api.buckets]]\nname = \"{name}\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("s3_api.buckets[0].name:"), "{err}");
        assert!(err.contains("not a bucket name"), "{name}: {err}");
    }
}

#[test]
fn bucket_contradictions_name_their_key() {
    let err = |text: &str| parse(text).unwrap_err().to_string();
    let twice = err(&format!(
        "{S3}[[s3_api.buckets]]\nname = \"abc\"\n[[s3_api.buckets]]\nname = \"abc\"\n"
    ));
    assert!(
        twice.starts_with("s3_api.buckets[1].name:") && twice.contains("twice"),
        "{twice}"
    );
    // Without [s3], only a local bucket makes sense.
    for write in ["back", "through"] {
        let e = err(&format!(
            "[[s3_api.buckets]]\nname = \"abc\"\nwrite = \"{write}\"\n"
        ));
        assert!(e.starts_with("s3_api.buckets[0].write:"), "{e}");
        assert!(e.contains("[s3]"), "{e}");
    }
    let e = err("[[s3_api.buckets]]\nname = \"abc\"\n");
    assert!(
        e.starts_with("s3_api.buckets[0].write:"),
        "the default is back: {e}"
    );
    let e = err("[[s3_api.buckets]]\nname = \"abc\"\nwrite = \"local\"\nbackend_bucket = \"x\"\n");
    assert!(e.starts_with("s3_api.buckets[0].backend_bucket:"), "{e}");
    assert!(parse("[[s3_api.buckets]]\nname = \"abc\"\nwrite = \"local\"\n").is_ok());
    let e = err(&format!(
        "{S3}[[s3_api.buckets]]\nname = \"abc\"\nbackend_prefix = \"/x\"\n"
    ));
    assert!(e.starts_with("s3_api.buckets[0].backend_prefix:"), "{e}");
    let e = err(&format!(
        "{S3}[[s3_api.buckets]]\nname = \"abc\"\nmax_object_size = 0\n"
    ));
    assert!(e.starts_with("s3_api.buckets[0].max_object_size:"), "{e}");
    let e = err(&format!(
        "{S3}[[s3_api.buckets]]\nname = \"abc\"\nanonymous = \"readwrite\"\n"
    ));
    assert!(e.starts_with("s3_api.buckets[0].anonymous:"), "{e}");
    assert!(parse(&format!(
        "{S3}[[s3_api.buckets]]\nname = \"abc\"\nanonymous = \"read\"\n"
    ))
    .is_ok());
    let e = err(&format!(
        "{S3}[[s3_api.buckets]]\nname = \"abc\"\nwrite = \"sometimes\"\n"
    ));
    assert!(e.starts_with("s3_api.buckets[0].write:"), "{e}");
    let e = err(&format!(
        "{S3}[[s3_api.buckets]]\nname = \"abc\"\nbucket = \"x\"\n"
    ));
    assert!(e.contains("bucket"), "unknown keys are refused: {e}");
}

#[test]
fn forward_entries_need_their_own_namespace_hosts_and_an_http_endpoint() {
    let entry = |namespace: &str, hosts: &str, endpoint: &str| {
        format!(
            "[[s3_api.buckets]]\nname = \"runner-cache\"\nwrite = \"local\"\n\n[[s3_api.forward]]\nnamespace = \"{namespace}\"\nhosts = {hosts}\nendpoint = \"{endpoint}\"\n"
        )
    };
    let good = entry(
        "s3-eu-west-1",
        r#"["s3.eu-west-1.amazonaws.com"]"#,
        "https://s3.eu-west-1.amazonaws.com",
    );
    let config = parse(&good).unwrap();
    let forward = &config.s3_api.forward[0];
    assert_eq!(forward.hosts, ["s3.eu-west-1.amazonaws.com"]);
    assert_eq!(forward.response_timeout, Duration::from_secs(60));
    // SSE-KMS objects are passed through unless the entry opts in.
    assert!(!forward.cache_kms);
    let opted_in = parse(&format!("{good}cache_kms = true\n")).unwrap();
    assert!(opted_in.s3_api.forward[0].cache_kms);
    for (text, field) in [
        (
            entry("runner-cache", r#"["s3.test"]"#, "http://127.0.0.1:8333"),
            "s3_api.forward[0].namespace",
        ),
        (
            entry("gradle", r#"["s3.test"]"#, "http://127.0.0.1:8333"),
            "s3_api.forward[0].namespace",
        ),
        (
            entry("fwd", "[]", "http://127.0.0.1:8333"),
            "s3_api.forward[0].hosts",
        ),
        (
            entry("fwd", r#"["s3.test:8333"]"#, "http://127.0.0.1:8333"),
            "s3_api.forward[0].hosts",
        ),
        (
            entry("fwd", r#"["s3.test"]"#, "ftp://127.0.0.1:8333"),
            "s3_api.forward[0].endpoint",
        ),
        (
            entry("fwd", r#"["s3.test"]"#, "https://s3.test/bucket"),
            "s3_api.forward[0].endpoint",
        ),
    ] {
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains(field), "{field}: {err}");
    }
}

#[test]
fn forward_entries_need_the_s3_listener() {
    let text = "[listen]\ns3 = \"\"\n\n[[s3_api.forward]]\nnamespace = \"fwd\"\nhosts = [\"s3.test\"]\nendpoint = \"https://s3.test\"\n";
    let err = parse(text).unwrap_err().to_string();
    assert!(err.contains("listen.s3"), "{err}");
}

#[test]
fn node_local_address_must_be_link_local_or_loopback() {
    let with = |address: &str, extra: &str| {
        parse(&format!(
            "[listen]\ns3 = \"{address}:80\"\n[node_local]\naddress = \"{address}\"\n{extra}"
        ))
    };
    let config = with("169.254.20.11", "").unwrap();
    assert_eq!(config.node_local.interface, "bcp0");
    with("127.0.0.53", "").unwrap();
    let err = with("10.0.0.5", "").unwrap_err().to_string();
    assert!(err.starts_with("node_local.address:"), "{err}");
    assert!(err.contains("allow_routable_address"), "{err}");
    with("10.0.0.5", "allow_routable_address = true").unwrap();
    // AWS's own link-local services, whatever the override says.
    for aws in ["169.254.169.254", "169.254.170.23"] {
        let err = with(aws, "allow_routable_address = true").unwrap_err();
        assert!(err.to_string().contains("on AWS"), "{err}");
    }
    let err =
        parse("[listen]\ns3 = \"169.254.20.11:80\"\n[node_local]\naddress = \"169.254.20.1x\"\n")
            .unwrap_err()
            .to_string();
    assert!(err.contains("not an IPv4 address"), "{err}");
    let err = with("169.254.20.11", "interface = \"lo\"").unwrap_err();
    assert!(
        err.to_string().starts_with("node_local.interface:"),
        "{err}"
    );
    let err = with("169.254.20.11", "interface = \"a-very-long-link-name\"").unwrap_err();
    assert!(
        err.to_string().starts_with("node_local.interface:"),
        "{err}"
    );
}

#[test]
fn node_local_address_is_where_the_s3_listener_is() {
    let err = parse("[node_local]\naddress = \"169.254.20.11\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("listen.s3:"), "{err}");
    let err = parse("[node_local]\nrun_as_user = 65532\n").unwrap_err();
    assert!(
        err.to_string().starts_with("node_local.run_as_user:"),
        "{err}"
    );
    // The chart sets the address through the environment too.
    let config = parse_env(
        "",
        &[
            ("BUILD_CACHE_PROXY_NODE_LOCAL_ADDRESS", "169.254.20.11"),
            ("BUILD_CACHE_PROXY_LISTEN_S3", "169.254.20.11:80"),
        ],
    )
    .unwrap();
    assert_eq!(config.node_local.address, "169.254.20.11");
}

#[test]
fn allow_from_lists_are_networks_or_addresses() {
    let err = |text: &str| parse(text).unwrap_err().to_string();
    let config = parse(
        "[listen]\ncache_allow_from = [\"10.1.2.3/16\", \" 10.9.9.9 \", \"fd00::/8\"]\nadmin_allow_from = [\"10.7.0.0/24\"]\n",
    )
    .unwrap();
    let shown: Vec<String> = config
        .listen
        .cache_networks()
        .unwrap()
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(shown, ["10.1.0.0/16", "10.9.9.9/32", "fd00::/8"]);
    assert_eq!(config.listen.admin_networks().unwrap().len(), 1);
    for bad in ["10.1.2.3/33", "ten", ""] {
        let e = err(&format!("[listen]\ncache_allow_from = [\"{bad}\"]\n"));
        assert!(e.starts_with("listen.cache_allow_from:"), "{e}");
    }
    let e = err("[listen]\nadmin_allow_from = [\"x\"]\n");
    assert!(e.starts_with("listen.admin_allow_from:"), "{e}");
}

#[test]
fn dependency_upstreams_are_named_once_with_base_urls() {
    let repo = |name: &str, url: &str| {
        format!("[[maven.repositories]]\nname = \"{name}\"\nurl = \"{url}\"\n")
    };
    let ok = parse(&format!(
        "{}{}[[downloads]]\nname = \"central\"\nurl = \"https://services.gradle.org/distributions/\"\n",
        repo("central", "https://repo.maven.apache.org/maven2/"),
        repo("company", "http://nexus.internal:8081/repository/maven-public"),
    ))
    .unwrap();
    assert_eq!(ok.maven.repositories.len(), 2);
    assert_eq!(ok.downloads.len(), 1);
    for (text, key) in [
        (repo("a/b", "https://x/"), "maven.repositories[0].name"),
        (repo("", "https://x/"), "maven.repositories[0].name"),
        (repo("a", "ftp://x/"), "maven.repositories[0].url"),
        (repo("a", "https://x/?token=1"), "maven.repositories[0].url"),
        (repo("a", "x"), "maven.repositories[0].url"),
        (
            format!("{}{}", repo("a", "https://x/"), repo("a", "https://y/")),
            "maven.repositories[1].name",
        ),
        (
            format!(
                "{}username_file = \"/nonexistent\"\n",
                repo("a", "https://x/")
            ),
            "maven.repositories[0].username_file",
        ),
    ] {
        match parse(&text) {
            Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
            other => panic!("{text}: {other:?}"),
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (user, password) = (dir.path().join("user"), dir.path().join("password"));
    std::fs::write(&user, "ci\n").unwrap();
    std::fs::write(&password, "s3cret\n").unwrap();
    let config = parse(&format!(
        "{}username_file = \"{}\"\npassword_file = \"{}\"\n",
        repo("company", "https://nexus/"),
        user.display(),
        password.display()
    ))
    .unwrap();
    let repository = &config.maven.repositories[0];
    assert_eq!(
        repository.credentials,
        Some(("ci".to_string(), "s3cret".to_string()))
    );
    assert!(!format!("{repository:?}").contains("s3cret"));
}
