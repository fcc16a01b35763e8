//! The status page as a person sees it: Debian's Chromium, headless, loads `/` from the admin
//! listener, and the test reads the rendered page through the DevTools protocol (hit ratio,
//! build time saved, the top task types, the inline SVG trends). With `BCP_STATUS_SCREENSHOT`
//! set to a path it also saves a screenshot there (docs/status-page.png is one).
//!
//! Chromium is installed by scripts/setup.sh; without it the test says so loudly and passes,
//! since a machine that cannot install it cannot run it.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use build_cache_proxy::gradle_meta::sample;
use common::Daemon;
use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

const TEST: &str = "org.gradle.api.tasks.testing.Test";
const COMPILE: &str = "org.gradle.api.tasks.compile.JavaCompile";
const JAR: &str = "org.gradle.api.tasks.bundling.Jar";

/// The tasks whose entries the page is shown with: type, path, execution time, hits.
const TASKS: [(&str, &str, u64, usize); 4] = [
    (TEST, ":app:test", 61_000, 2),
    (COMPILE, ":app:compileJava", 4_200, 3),
    (COMPILE, ":lib:compileJava", 2_900, 1),
    (JAR, ":lib:jar", 300, 1),
];

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"].into_iter().find(|name| {
        Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Headless Chromium showing one page, driven over the DevTools protocol.
struct Browser {
    child: Child,
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn open(program: &str, url: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut command = Command::new(program);
        // Its own process group: Chromium forks helpers that must go with it.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--window-size=1280,1700",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        // It says where its DevTools endpoint listens on stderr.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("ws://") {
                    let _ = tx.send(line[at..].trim().to_string());
                }
            }
        });
        let browser_ws = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("chromium printed its DevTools address");
        let port = browser_ws
            .trim_start_matches("ws://")
            .split(['/', ':'])
            .nth(1)
            .unwrap()
            .to_string();
        let list: Value =
            serde_json::from_str(&http_get(&format!("127.0.0.1:{port}"), "/json/list")).unwrap();
        let page_ws = list
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a page target")
            .to_string();
        let (socket, _) = tungstenite::connect(page_ws).expect("connect to the page");
        Browser {
            child,
            socket,
            next_id: 1,
            _profile: profile,
        }
    }

    /// Sends one DevTools command and returns its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let message = json!({"id": id, "method": method, "params": params}).to_string();
        self.socket.send(Message::text(message)).unwrap();
        loop {
            let Message::Text(text) = self.socket.read().unwrap() else {
                continue;
            };
            let reply: Value = serde_json::from_str(&text).unwrap();
            if reply["id"] == id {
                assert!(reply.get("error").is_none(), "{method}: {reply}");
                return reply["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression in the page.
    fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        );
        result["result"]["value"].clone()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

/// A GET of a small answer from Chromium's DevTools endpoint, from a blocking section.
fn http_get(host: &str, path: &str) -> String {
    tokio::runtime::Handle::current().block_on(async {
        reqwest::get(format!("http://{host}{path}"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    })
}

/// What the test reads off the rendered page.
const READ_PAGE: &str = r#"(() => {
  const text = id => { const e = document.getElementById(id); return e ? e.innerText : null; };
  const visible = e => !!e && e.getBoundingClientRect().height > 0;
  const rows = [...document.querySelectorAll('#top-types-saved tr')].slice(1)
    .map(r => r.cells[0].innerText);
  const sparks = [...document.querySelectorAll('svg.spark')];
  return {
    ready: document.readyState,
    hitRatio: text('gradle-hit-ratio'),
    saved: text('saved-since-start'),
    topTypes: rows,
    sparks: sparks.length,
    sparksVisible: sparks.filter(visible).length,
    polylines: document.querySelectorAll('svg.spark polyline').length,
    ratioVisible: visible(document.getElementById('gradle-hit-ratio')),
    refresh: document.querySelector('meta[http-equiv=refresh]') !== null,
  };
})()"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_shows_hit_ratio_time_saved_and_top_task_types() {
    let Some(program) = chromium() else {
        eprintln!(
            "\n*** SKIPPED: no chromium on this machine (scripts/setup.sh installs Debian's); \
             the status page was not checked in a browser ***\n"
        );
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(work.path(), "");
    let http = reqwest::Client::new();
    let mut hits = 0;
    for (i, (task_type, path, ms, reads)) in TASKS.iter().enumerate() {
        let url = daemon.entry_url(&format!("{:032x}", 0xa11 + i));
        // Missed first, as Gradle does before it runs a task and stores its outputs.
        assert_eq!(http.get(&url).send().await.unwrap().status(), 404);
        let entry = sample::entry(task_type, path, *ms, 40_000 + i * 10_000);
        assert_eq!(
            http.put(&url).body(entry).send().await.unwrap().status(),
            200
        );
        for _ in 0..*reads {
            let got = http.get(&url).send().await.unwrap();
            assert_eq!(got.status(), 200);
            got.bytes().await.unwrap();
            hits += 1;
        }
    }
    let misses = TASKS.len();
    let ratio = format!("{:.1} %", 100.0 * hits as f64 / (hits + misses) as f64);

    let page = daemon.admin_url("/");
    let shot = std::env::var_os("BCP_STATUS_SCREENSHOT");
    tokio::task::block_in_place(|| {
        let mut browser = Browser::open(program, &page);
        let deadline = Instant::now() + Duration::from_secs(60);
        let seen = loop {
            let seen = browser.eval(READ_PAGE);
            if seen["ready"] == "complete" && seen["hitRatio"].is_string() {
                break seen;
            }
            assert!(Instant::now() < deadline, "the page never loaded: {seen}");
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(seen["hitRatio"], ratio.as_str(), "{seen}");
        assert!(seen["ratioVisible"].as_bool().unwrap(), "{seen}");
        // 2 × 61 s + 3 × 4.2 s + 2.9 s + 0.3 s.
        assert_eq!(seen["saved"], "2 min 18 s", "{seen}");
        let top: Vec<&str> = seen["topTypes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(top, [TEST, COMPILE, JAR], "{seen}");
        let sparks = seen["sparks"].as_u64().unwrap();
        assert!(sparks >= 5, "{seen}");
        assert_eq!(seen["sparksVisible"].as_u64(), Some(sparks), "{seen}");
        assert_eq!(seen["polylines"].as_u64(), Some(sparks), "{seen}");
        assert_eq!(seen["refresh"], true, "{seen}");
        if let Some(path) = shot {
            let png = browser.call(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
            );
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(png["data"].as_str().unwrap())
                .unwrap();
            std::fs::write(&path, bytes).unwrap();
        }
    });
}
