//! Running the real Gradle client (Debian's `gradle` 4.4.1) on a copy of the fixture project in
//! `tests/fixtures/gradle-project`, pointed at a daemon, and reading what it printed.
//!
//! What Gradle 4.4.1 prints, as observed here (Java 17):
//! - with `--console=plain` a task outcome is a line `:compileJava FROM-CACHE` (newer Gradle
//!   prints `> Task :compileJava FROM-CACHE`; both forms are accepted);
//! - any non-2xx answer from the cache makes it print one `Could not load entry …` or
//!   `Could not store entry …` line, and then, after the build result,
//!   `The remote build cache was disabled during the build due to errors.` — exit code stays 0.
//!
//! `allowInsecureProtocol` does not exist in Gradle 4.4 (it came with 6.0, and 127.0.0.1 is
//! exempt there anyway), so the settings never set it. `--offline` would turn the remote cache
//! off, so it is never passed. Gradle runs are serialized (one JVM at a time) so that each run's
//! timeout measures Gradle, not the other tests competing for the CPU.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gradle-project");
pub const GRADLE_TIMEOUT: Duration = Duration::from_secs(300);
pub const DISABLED: &str = "The remote build cache was disabled during the build due to errors.";

/// One Gradle JVM at a time (the CI machines have two cores).
pub static GRADLE_LOCK: Mutex<()> = Mutex::new(());

/// A copy of the fixture project plus the Gradle user home it is built with.
pub struct Project {
    pub dir: PathBuf,
    pub gradle_home: PathBuf,
}

impl Project {
    /// Copies the fixture into `root/name`; `gradle_home` may be shared by several copies.
    pub fn new(root: &Path, name: &str, gradle_home: &Path) -> Project {
        let dir = root.join(name);
        copy_dir(Path::new(FIXTURE), &dir);
        Project {
            dir,
            gradle_home: gradle_home.to_path_buf(),
        }
    }

    /// (Re)writes settings.gradle: remote cache at `url`, local cache off, push on.
    pub fn configure_cache(&self, url: &str, credentials: Option<(&str, &str)>) {
        let credentials = credentials
            .map(|(user, password)| {
                format!("    credentials {{ username = '{user}'; password = '{password}' }}\n")
            })
            .unwrap_or_default();
        let settings = [
            "rootProject.name = 'demo'\n".to_string(),
            "buildCache {\n".to_string(),
            "  local { enabled = false }\n".to_string(),
            "  remote(HttpBuildCache) {\n".to_string(),
            format!("    url = '{url}'\n"),
            "    push = true\n".to_string(),
            credentials,
            "  }\n".to_string(),
            "}\n".to_string(),
        ]
        .concat();
        std::fs::write(self.dir.join("settings.gradle"), settings).unwrap();
    }

    /// Runs `gradle <tasks>` with the build cache on; returns stdout followed by stderr.
    /// Panics (with the output) unless Gradle exits 0 within the timeout.
    pub fn build(&self, tasks: &[&str]) -> String {
        self.build_with_env(tasks, &[])
    }

    /// [`Project::build`] with extra environment variables (e.g. `GRADLE_OPTS`).
    pub fn build_with_env(&self, tasks: &[&str], env: &[(&str, &str)]) -> String {
        let (success, text) = self.run(tasks, env);
        assert!(success, "gradle {tasks:?} failed:\n{text}");
        assert!(
            has_line(&text, "BUILD SUCCESSFUL"),
            "no BUILD SUCCESSFUL in:\n{text}"
        );
        text
    }

    /// Runs Gradle as [`Project::build_with_env`] does, but returns whether it succeeded
    /// instead of asserting it, with its output.
    pub fn run(&self, tasks: &[&str], env: &[(&str, &str)]) -> (bool, String) {
        let _serial = GRADLE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let started = Instant::now();
        let mut cmd = Command::new("gradle");
        cmd.args(["--no-daemon", "--build-cache", "--console=plain"])
            .arg("-g")
            .arg(&self.gradle_home)
            .args(tasks)
            .envs(env.iter().copied())
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Its own process group, so a timeout kills Gradle and anything it forked.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .expect("run `gradle` (Debian: apt-get install -y gradle)");
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let output = match rx.recv_timeout(GRADLE_TIMEOUT) {
            Ok(output) => output.expect("wait for gradle"),
            Err(_) => {
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{pid}")])
                    .status();
                let partial = rx.recv_timeout(Duration::from_secs(30));
                panic!(
                    "gradle {tasks:?} did not finish within {GRADLE_TIMEOUT:?}; output:\n{}",
                    partial
                        .ok()
                        .and_then(|o| o.ok())
                        .map(|o| combined(&o))
                        .unwrap_or_default()
                );
            }
        };
        let text = combined(&output);
        eprintln!(
            "--- gradle {tasks:?} in {} ({:.1} s, {}) ---\n{text}",
            self.dir.display(),
            started.elapsed().as_secs_f64(),
            output.status
        );
        (output.status.success(), text)
    }

    pub fn edit(&self, file: &str, from: &str, to: &str) {
        let path = self.dir.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{file} does not contain {from:?}");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    }
}

pub fn combined(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

pub fn copy_dir(from: &Path, to: &Path) {
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

/// A line that starts with `prefix` (Gradle's build result line carries the duration after it).
pub fn has_line(output: &str, prefix: &str) -> bool {
    output.lines().any(|l| l.trim().starts_with(prefix))
}

/// The outcome Gradle printed for `task`: "" when it ran, "FROM-CACHE", "UP-TO-DATE", … ;
/// `None` if the task does not appear. Accepts 4.4's `:task OUTCOME` and newer `> Task :task`.
pub fn task_outcome(output: &str, task: &str) -> Option<String> {
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

pub fn assert_outcome(output: &str, task: &str, expected: &str) {
    assert_eq!(
        task_outcome(output, task).as_deref(),
        Some(expected),
        "expected {task} {expected:?} in:\n{output}"
    );
}

/// The line Gradle prints when a cache request failed, e.g. `Could not load entry <key> for task
/// ':compileJava' from remote build cache: Loading entry from '<url>' response status 401: …`.
pub fn cache_error_line<'a>(output: &'a str, starts: &str) -> &'a str {
    output
        .lines()
        .find(|l| l.trim().starts_with(starts))
        .unwrap_or_else(|| panic!("no line starting with {starts:?} in:\n{output}"))
}
