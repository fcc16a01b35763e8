//! The node-local address, end to end, in network namespaces this test makes and removes:
//!
//! - a "node" namespace where the daemon runs as on a host-network DaemonSet, with
//!   `[node_local] address = "169.254.20.11"` and `listen.s3` on port 80, and where SeaweedFS
//!   plays S3 (on the node's own loopback, so nothing outside the namespaces is used);
//! - a "pod" namespace joined to it by a veth pair, with a default route to the node, as a
//!   build pod has.
//!
//! The daemon's own start-up makes the address (a dummy link, or `lo` on kernels without the
//! dummy driver, as on our test machines); curl in the pod namespace resolves S3's name to the
//! address by its own mapping (`--resolve`, what a host alias does) and uses presigned URLs
//! signed for that name: the forward mode's answers come back, the second GET from the node's
//! copy. A restart finds the address in place; with `node_local.run_as_user` the daemon serves
//! as that user with no capability left; `node-local down` leaves the node namespace as it was; a link of the configured name that is not a dummy keeps the pod unready, says why in one
//! log line and the metric. Needs root (CI runs as root); skipped otherwise.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use aws_sdk_s3::presigning::PresigningConfig;
use common::metric_value;
use common::s3::{client_as, ACCESS_KEY, SECRET_KEY};

const ADDRESS: &str = "169.254.20.11";
const S3_HOST: &str = "s3.node-local.test";
const BUCKET: &str = "node-local";
/// SeaweedFS inside the node namespace (its own loopback: no clash with anyone's 8333).
const WEED_PORT: u16 = 8433;
const NODE_VETH: &str = "bcpn0";
const POD_VETH: &str = "bcpp0";
const LOCAL_BYTES: &str = "build_cache_proxy_forward_served_bytes_total{source=\"local\"}";
const READY: &str = "build_cache_proxy_node_local_address_ready{listen=\"169.254.20.11:80\"}";

fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// Runs a command that must succeed; its stdout.
fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The links and addresses of a namespace (`None`: the test's own), as `ip` lists them, less
/// the `tentative` flag of an IPv6 address still in duplicate address detection.
fn snapshot(ns: Option<&str>) -> String {
    let mut out = String::new();
    for what in ["link", "addr"] {
        let mut args = vec!["ip"];
        if let Some(ns) = ns {
            args.extend(["-n", ns]);
        }
        args.extend(["-o", what, "show"]);
        out += &ok(&args);
    }
    out.replace(" tentative", "")
}

/// The two namespaces and SeaweedFS in the node one; all removed when dropped.
struct Namespaces {
    node: String,
    pod: String,
    weed: PathBuf,
}

impl Namespaces {
    fn create(work: &Path) -> Namespaces {
        let id = std::process::id();
        let ns = Namespaces {
            node: format!("bcp-node-{id}"),
            pod: format!("bcp-pod-{id}"),
            weed: work.join("weed"),
        };
        let (node, pod) = (ns.node.as_str(), ns.pod.as_str());
        ok(&["ip", "netns", "add", node]);
        ok(&["ip", "netns", "add", pod]);
        for n in [node, pod] {
            ok(&["ip", "-n", n, "link", "set", "lo", "up"]);
        }
        ok(&[
            "ip", "-n", node, "link", "add", NODE_VETH, "type", "veth", "peer", "name", POD_VETH,
            "netns", pod,
        ]);
        ok(&[
            "ip",
            "-n",
            node,
            "addr",
            "add",
            "10.254.77.1/30",
            "dev",
            NODE_VETH,
        ]);
        ok(&[
            "ip",
            "-n",
            pod,
            "addr",
            "add",
            "10.254.77.2/30",
            "dev",
            POD_VETH,
        ]);
        ok(&["ip", "-n", node, "link", "set", NODE_VETH, "up"]);
        ok(&["ip", "-n", pod, "link", "set", POD_VETH, "up"]);
        // A build pod's only way out is its node.
        ok(&[
            "ip",
            "-n",
            pod,
            "route",
            "add",
            "default",
            "via",
            "10.254.77.1",
        ]);
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/seaweedfs.sh");
        let weed = ns.weed.to_str().unwrap();
        let out = Command::new("ip")
            .args(["netns", "exec", node, script, "start", weed])
            .env("BCP_SEAWEEDFS_PORT", WEED_PORT.to_string())
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(out.status.success(), "SeaweedFS did not start in {node}");
        ns
    }

    /// Runs a command inside namespace `ns`.
    fn exec<'a>(&self, ns: &'a str, args: &[&'a str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", ns];
        full.extend_from_slice(args);
        run(&full)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/seaweedfs.sh");
        let _ = Command::new(script)
            .args(["stop", self.weed.to_str().unwrap()])
            .status();
        for ns in [&self.node, &self.pod] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// The daemon in the node namespace, as the DaemonSet runs it.
struct NodeDaemon {
    child: Child,
    admin: String,
    s3: String,
    log: PathBuf,
}

impl NodeDaemon {
    fn start(ns: &Namespaces, work: &Path, env: &[(&str, &str)]) -> NodeDaemon {
        std::fs::create_dir_all(work).unwrap();
        let config = work.join("config.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[listen]
gradle = "127.0.0.1:0"
admin = "127.0.0.1:0"
s3 = "{ADDRESS}:80"
drain_timeout = "2s"
[disk]
dir = "{data}"
[node_local]
address = "{ADDRESS}"
interface = "bcp0"
[[s3_api.forward]]
namespace = "s3-node-local"
hosts = ["{S3_HOST}"]
endpoint = "http://127.0.0.1:{WEED_PORT}"
"#,
                data = work.join("data").display()
            ),
        )
        .unwrap();
        let log = work.join(format!("daemon-{}.log", fastrand::u32(..)));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.node])
            .arg(env!("CARGO_BIN_EXE_build-cache-proxy"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            panic!(
                "the daemon did not start; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name} in {line:?}"))
                .to_string()
        };
        NodeDaemon {
            admin: field("admin"),
            s3: field("s3"),
            child,
            log,
        }
    }

    /// An admin page, fetched inside the node namespace: (status, body).
    fn admin(&self, ns: &Namespaces, path: &str) -> (String, String) {
        let url = format!("http://{}{path}", self.admin);
        let out = ns.exec(
            &ns.node,
            &["curl", "-s", "-w", "\n%{http_code}", url.as_str()],
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let (body, status) = text.rsplit_once('\n').unwrap();
        (status.to_string(), body.to_string())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM; the exit must be clean.
    fn stop(mut self) {
        common::signal(self.child.id(), "TERM");
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the daemon exited with {status}");
    }
}

impl Drop for NodeDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// curl in the pod namespace, S3's name resolved to the node-local address by curl's own
/// mapping: (status, body).
fn from_pod(ns: &Namespaces, method: &str, url: &str, upload: Option<&Path>) -> (String, Vec<u8>) {
    let resolve = format!("{S3_HOST}:80:{ADDRESS}");
    let mut args = vec![
        "curl",
        "-s",
        "--max-time",
        "20",
        "--resolve",
        resolve.as_str(),
        "-w",
        "\n%{http_code}",
        "-X",
        method,
    ];
    let file;
    if let Some(path) = upload {
        file = path.to_str().unwrap().to_string();
        args.extend(["-T", file.as_str()]);
    }
    args.push(url);
    let out = ns.exec(&ns.pod, &args);
    let text = out.stdout;
    let split = text.iter().rposition(|b| *b == b'\n').unwrap();
    (
        String::from_utf8_lossy(&text[split + 1..]).to_string(),
        text[..split].to_vec(),
    )
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[tokio::test]
async fn build_pods_reach_the_forward_mode_on_the_node_local_address() {
    if !is_root() {
        eprintln!("skipped: network namespaces need root (CI runs as root)");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let host_before = snapshot(None);
    let ns = Namespaces::create(work.path());
    let node_before = snapshot(Some(&ns.node));
    // The bucket, made in "S3" directly.
    ok(&[
        "ip",
        "netns",
        "exec",
        &ns.node,
        "curl",
        "-sf",
        "--aws-sigv4",
        "aws:amz:us-east-1:s3",
        "--user",
        &format!("{ACCESS_KEY}:{SECRET_KEY}"),
        "-X",
        "PUT",
        &format!("http://127.0.0.1:{WEED_PORT}/{BUCKET}"),
    ]);

    // Signed for S3's name with keys only "S3" has, as the runner signs.
    let signer = client_as(&format!("http://{S3_HOST}"), ACCESS_KEY, SECRET_KEY);
    let presign = || PresigningConfig::expires_in(Duration::from_secs(600)).unwrap();
    let key = "runner/project/1/cache.zip";
    let put = signer
        .put_object()
        .bucket(BUCKET)
        .key(key)
        .presigned(presign())
        .await
        .unwrap();
    let get = signer
        .get_object()
        .bucket(BUCKET)
        .key(key)
        .presigned(presign())
        .await
        .unwrap();
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let upload = work.path().join("cache.zip");
    std::fs::write(&upload, &body).unwrap();

    let daemon = NodeDaemon::start(&ns, &work.path().join("run"), &[]);
    assert_eq!(daemon.s3, format!("{ADDRESS}:80"), "{}", daemon.log());
    let addrs = ok(&["ip", "-n", &ns.node, "-o", "addr", "show"]);
    assert_eq!(
        addrs.matches(&format!("inet {ADDRESS}/32")).count(),
        1,
        "{addrs}"
    );
    let (status, readyz) = daemon.admin(&ns, "/readyz");
    assert_eq!(status, "200", "{readyz}");
    let (_, page) = daemon.admin(&ns, "/");
    assert!(
        page.contains(&format!("node-local address: {ADDRESS}:80")),
        "{page}"
    );

    let (status, answer) = from_pod(&ns, "PUT", put.uri(), Some(&upload));
    assert_eq!(
        status,
        "200",
        "{}\n{}",
        String::from_utf8_lossy(&answer),
        daemon.log()
    );
    let (status, first) = from_pod(&ns, "GET", get.uri(), None);
    assert_eq!(status, "200");
    assert!(first == body, "the first GET's body differs");
    let (status, second) = from_pod(&ns, "GET", get.uri(), None);
    assert_eq!(status, "200");
    assert!(second == body, "the second GET's body differs");
    let (_, metrics) = daemon.admin(&ns, "/metrics");
    assert!(
        metric_value(&metrics, LOCAL_BYTES) >= body.len() as f64,
        "a GET after S3's 304 is served from the node's copy:\n{metrics}"
    );
    assert_eq!(metric_value(&metrics, READY), 1.0, "{metrics}");
    // S3 still decides: a tampered signature of a cached object is S3's 403.
    let mut tampered = get.uri().to_string();
    let last = tampered.pop().unwrap();
    tampered.push(if last == '0' { '1' } else { '0' });
    let (status, _) = from_pod(&ns, "GET", &tampered, None);
    assert_eq!(status, "403");
    daemon.stop();

    // A restart (or an upgrade) finds the address in place and serves again.
    let daemon = NodeDaemon::start(&ns, &work.path().join("run"), &[]);
    assert_eq!(daemon.admin(&ns, "/readyz").0, "200", "{}", daemon.log());
    let addrs = ok(&["ip", "-n", &ns.node, "-o", "addr", "show"]);
    assert_eq!(
        addrs.matches(&format!("inet {ADDRESS}/32")).count(),
        1,
        "{addrs}"
    );
    let (status, again) = from_pod(&ns, "GET", get.uri(), None);
    assert_eq!(status, "200");
    assert!(again == body);
    assert!(!daemon.log().contains("ERROR"), "{}", daemon.log());
    daemon.stop();

    // As the chart runs it: root with the capabilities the set-up needs, then the pod's user
    // with none at all, before the cache is opened or a request taken.
    let dropped = work.path().join("dropped");
    std::fs::create_dir_all(dropped.join("data")).unwrap();
    for dir in [work.path(), dropped.as_path()] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    ok(&[
        "chown",
        "65534:65534",
        dropped.join("data").to_str().unwrap(),
    ]);
    let daemon = NodeDaemon::start(
        &ns,
        &dropped,
        &[
            ("BUILD_CACHE_PROXY_NODE_LOCAL_RUN_AS_USER", "65534"),
            ("BUILD_CACHE_PROXY_NODE_LOCAL_RUN_AS_GROUP", "65534"),
        ],
    );
    assert_eq!(daemon.admin(&ns, "/readyz").0, "200", "{}", daemon.log());
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.child.id())).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(field("Uid:"), ["65534"; 4], "{status}");
    assert_eq!(field("Gid:"), ["65534"; 4], "{status}");
    for caps in ["CapEff:", "CapPrm:"] {
        assert_eq!(field(caps), ["0000000000000000"], "{status}");
    }
    let (status, again) = from_pod(&ns, "GET", get.uri(), None);
    assert_eq!(status, "200", "{}", daemon.log());
    assert!(again == body);
    daemon.stop();

    // Taken away on request: the node namespace is as it was before the daemon ran.
    let config = work.path().join("run/config.toml");
    let down = ns.exec(
        &ns.node,
        &[
            env!("CARGO_BIN_EXE_build-cache-proxy"),
            "node-local",
            "down",
            "--config",
            config.to_str().unwrap(),
        ],
    );
    assert!(down.status.success(), "{down:?}");
    assert_eq!(snapshot(Some(&ns.node)), node_before);

    // A link of the configured name that is someone else's: not touched, the pod stays unready.
    let daemon = NodeDaemon::start(
        &ns,
        &work.path().join("failed"),
        &[("BUILD_CACHE_PROXY_NODE_LOCAL_INTERFACE", NODE_VETH)],
    );
    assert_eq!(daemon.s3, "off");
    let (status, readyz) = daemon.admin(&ns, "/readyz");
    assert_eq!(status, "503");
    assert!(readyz.contains("is not a dummy link"), "{readyz}");
    let (_, metrics) = daemon.admin(&ns, "/metrics");
    assert_eq!(metric_value(&metrics, READY), 0.0, "{metrics}");
    let log = daemon.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("node-local address not set up"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains("ERROR"), "{log}");
    daemon.stop();
    assert_eq!(snapshot(Some(&ns.node)), node_before);

    drop(ns);
    assert_eq!(
        snapshot(None),
        host_before,
        "the test's own namespace changed"
    );
}
