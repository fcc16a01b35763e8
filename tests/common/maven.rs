//! A Maven repository the tests serve themselves: files generated into a directory (poms, jars,
//! checksum files, snapshot metadata) and a small HTTP server over it that answers GET with
//! ETag and Last-Modified, honours If-None-Match, counts every request by path, can add latency
//! to each answer, and can be stopped for real (connections refused).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use sha1::Digest;

/// A coordinate: group, artifact, version.
pub type Gav<'a> = (&'a str, &'a str, &'a str);

/// The files of a repository, under `root`.
pub struct Repo {
    pub root: PathBuf,
}

impl Repo {
    pub fn new(root: &Path) -> Repo {
        std::fs::create_dir_all(root).unwrap();
        Repo {
            root: root.to_path_buf(),
        }
    }

    /// The directory of a module's version: `org/example/lib/1.0`.
    pub fn dir_of(group: &str, artifact: &str, version: &str) -> String {
        format!("{}/{artifact}/{version}", group.replace('.', "/"))
    }

    /// Writes `path` and its `.sha1`.
    pub fn write(&self, path: &str, bytes: &[u8]) {
        self.write_raw(path, bytes);
        self.write_raw(&format!("{path}.sha1"), sha1_hex(bytes).as_bytes());
    }

    /// Writes `path` alone (a checksum file, or a file made to disagree with its checksum).
    pub fn write_raw(&self, path: &str, bytes: &[u8]) {
        let file = self.root.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, bytes).unwrap();
    }

    /// A release: its pom (with `dependencies`) and its jar, each with a `.sha1`.
    pub fn publish(&self, (group, artifact, version): Gav, dependencies: &[Gav], jar: &[u8]) {
        let dir = Self::dir_of(group, artifact, version);
        let base = format!("{dir}/{artifact}-{version}");
        self.write(
            &format!("{base}.pom"),
            pom((group, artifact, version), dependencies, "jar").as_bytes(),
        );
        self.write(&format!("{base}.jar"), jar);
    }

    /// A unique snapshot build of `version` (`2.0-SNAPSHOT`): its pom and jar under the
    /// timestamped name, and the version's `maven-metadata.xml` naming it as the latest.
    pub fn publish_snapshot(&self, (group, artifact, version): Gav, build: u32, jar: &[u8]) {
        let dir = Self::dir_of(group, artifact, version);
        let timestamp = format!("20261206.1200{build:02}");
        let release = version.trim_end_matches("-SNAPSHOT");
        let unique = format!("{release}-{timestamp}-{build}");
        let base = format!("{dir}/{artifact}-{unique}");
        self.write(
            &format!("{base}.pom"),
            pom((group, artifact, version), &[], "jar").as_bytes(),
        );
        self.write(&format!("{base}.jar"), jar);
        let metadata = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<metadata>\n  <groupId>{group}</groupId>\n  \
             <artifactId>{artifact}</artifactId>\n  <version>{version}</version>\n  <versioning>\n    \
             <snapshot>\n      <timestamp>{timestamp}</timestamp>\n      <buildNumber>{build}</buildNumber>\n    \
             </snapshot>\n    <lastUpdated>{}</lastUpdated>\n    <snapshotVersions>\n      \
             <snapshotVersion><extension>jar</extension><value>{unique}</value><updated>{0}</updated></snapshotVersion>\n      \
             <snapshotVersion><extension>pom</extension><value>{unique}</value><updated>{0}</updated></snapshotVersion>\n    \
             </snapshotVersions>\n  </versioning>\n</metadata>\n",
            timestamp.replace('.', "")
        );
        self.write(&format!("{dir}/maven-metadata.xml"), metadata.as_bytes());
    }

    /// A Gradle plugin marker (`<id>:<id>.gradle.plugin:<version>`, a pom that depends on the
    /// plugin's implementation), as the Plugin Portal publishes them.
    pub fn publish_plugin_marker(&self, id: &str, version: &str, implementation: Gav) {
        let marker = format!("{id}.gradle.plugin");
        let dir = Self::dir_of(id, &marker, version);
        self.write(
            &format!("{dir}/{marker}-{version}.pom"),
            pom((id, &marker, version), &[implementation], "pom").as_bytes(),
        );
    }
}

fn pom((group, artifact, version): Gav, dependencies: &[Gav], packaging: &str) -> String {
    let deps: String = dependencies
        .iter()
        .map(|(g, a, v)| {
            format!(
                "    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version></dependency>\n"
            )
        })
        .collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<project xmlns=\"http://maven.apache.org/POM/4.0.0\">\n  \
         <modelVersion>4.0.0</modelVersion>\n  <groupId>{group}</groupId>\n  <artifactId>{artifact}</artifactId>\n  \
         <version>{version}</version>\n  <packaging>{packaging}</packaging>\n  <dependencies>\n{deps}  </dependencies>\n</project>\n"
    )
}

pub fn sha1_hex(bytes: &[u8]) -> String {
    hex::encode(sha1::Sha1::digest(bytes))
}

/// A jar with one compiled Gradle plugin class (`bcp.HelloPlugin`, id `bcp.hello`) that sets
/// the project property `bcpPlugin` to "applied"; built with the JDK's `javac` and `jar`
/// against the Gradle API Debian's `gradle` ships.
pub fn plugin_jar(work: &Path) -> Vec<u8> {
    let src = work.join("plugin-src");
    std::fs::create_dir_all(src.join("bcp")).unwrap();
    std::fs::create_dir_all(src.join("META-INF/gradle-plugins")).unwrap();
    std::fs::write(
        src.join("bcp/HelloPlugin.java"),
        "package bcp;\n\
         public class HelloPlugin implements org.gradle.api.Plugin<org.gradle.api.Project> {\n  \
           public void apply(org.gradle.api.Project project) {\n    \
             project.getExtensions().getExtraProperties().set(\"bcpPlugin\", \"applied\");\n  }\n}\n",
    )
    .unwrap();
    std::fs::write(
        src.join("META-INF/gradle-plugins/bcp.hello.properties"),
        "implementation-class=bcp.HelloPlugin\n",
    )
    .unwrap();
    let classpath = std::fs::read_dir("/usr/share/gradle/lib")
        .expect("Debian's gradle in /usr/share/gradle")
        .filter_map(|e| e.ok())
        .map(|e| e.path().display().to_string())
        .filter(|p| p.ends_with(".jar"))
        .collect::<Vec<_>>()
        .join(":");
    let run = |cmd: &mut std::process::Command| {
        let out = cmd.current_dir(&src).output().expect("run the JDK's tools");
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(std::process::Command::new("javac")
        .args(["--release", "8", "-cp", &classpath])
        .arg("bcp/HelloPlugin.java"));
    let jar = work.join("hello-plugin.jar");
    run(std::process::Command::new("jar")
        .arg("cf")
        .arg(&jar)
        .args(["bcp/HelloPlugin.class", "META-INF"]));
    std::fs::read(jar).unwrap()
}

/// The HTTP server over a repository's directory, on its own thread and runtime (so blocking
/// Gradle runs in the test do not stall it).
pub struct Upstream {
    pub addr: SocketAddr,
    counts: Arc<Mutex<HashMap<String, u32>>>,
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Upstream {
    /// Serves `root`; every answer waits `latency` first.
    pub fn start(root: &Path, latency: Duration) -> Upstream {
        let counts = Arc::new(Mutex::new(HashMap::new()));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (root, served) = (root.to_path_buf(), counts.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(serve(root, served, latency, addr_tx, stop_rx));
            // Dropping the runtime ends every connection task: the server is gone.
        });
        Upstream {
            addr: addr_rx.recv().unwrap(),
            counts,
            stop: Mutex::new(Some(stop_tx)),
            thread: Mutex::new(Some(thread)),
        }
    }

    /// `http://127.0.0.1:port/<base>/`.
    pub fn url(&self, base: &str) -> String {
        format!("http://{}/{base}/", self.addr)
    }

    /// Requests for paths under `base` so far, by path below it.
    pub fn requests(&self, base: &str) -> HashMap<String, u32> {
        let prefix = format!("/{base}/");
        self.counts
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(p, n)| p.strip_prefix(&prefix).map(|p| (p.to_string(), *n)))
            .collect()
    }

    pub fn count(&self, path: &str) -> u32 {
        self.counts.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    pub fn reset_counts(&self) {
        self.counts.lock().unwrap().clear();
    }

    /// Stops serving: the listener closes and later connections are refused.
    pub fn stop(&self) {
        if let Some(stop) = self.stop.lock().unwrap().take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.lock().unwrap().take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve(
    root: PathBuf,
    counts: Arc<Mutex<HashMap<String, u32>>>,
    latency: Duration,
    addr_tx: std::sync::mpsc::Sender<SocketAddr>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    addr_tx.send(listener.local_addr().unwrap()).unwrap();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            _ = &mut stop => return,
        };
        let (root, counts) = (root.clone(), counts.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let (root, counts) = (root.clone(), counts.clone());
                async move {
                    tokio::time::sleep(latency).await;
                    Ok::<_, std::convert::Infallible>(answer(&root, &counts, req))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(
    root: &Path,
    counts: &Mutex<HashMap<String, u32>>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    *counts.lock().unwrap().entry(path.clone()).or_default() += 1;
    let reply = |status: StatusCode| {
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = status;
        response
    };
    let file = root.join(path.trim_start_matches('/'));
    if path.contains("..") || !file.is_file() {
        return reply(StatusCode::NOT_FOUND);
    }
    let bytes = std::fs::read(&file).unwrap();
    let modified = std::fs::metadata(&file).unwrap().modified().unwrap();
    // The content's digest, so a rewritten file with new bytes has a new ETag at once.
    let etag = format!("\"{}\"", &sha1_hex(&bytes)[..16]);
    let since_epoch = modified.duration_since(UNIX_EPOCH).unwrap();
    let last_modified =
        httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(since_epoch.as_secs()));
    if req
        .headers()
        .get("if-none-match")
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        let mut response = reply(StatusCode::NOT_MODIFIED);
        response.headers_mut().insert("etag", etag.parse().unwrap());
        return response;
    }
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    let headers = response.headers_mut();
    headers.insert("etag", etag.parse().unwrap());
    headers.insert("last-modified", last_modified.parse().unwrap());
    response
}
