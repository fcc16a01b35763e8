//! Running the real client programs the tests drive (the aws CLI, Python SDK scripts, the Java
//! SDK): with a deadline, their output on failure, and where their downloaded parts live.

use std::path::PathBuf;
use std::time::Duration;

/// How long one client command may take before the test gives up on it.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs a client command to completion within [`CLIENT_TIMEOUT`]; returns its stdout, panics
/// with its output if it fails.
pub async fn run(mut command: tokio::process::Command, what: &str) -> String {
    command.kill_on_drop(true);
    let output = tokio::time::timeout(CLIENT_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {CLIENT_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The AWS SDK for Java v1 bundle that `scripts/setup.sh` fetches (the `s3Upload` step's SDK),
/// or `BCP_TEST_AWS_JAVA_SDK_JAR`.
pub fn java_sdk_jar() -> PathBuf {
    let jar = match std::env::var_os("BCP_TEST_AWS_JAVA_SDK_JAR") {
        Some(path) => PathBuf::from(path),
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache"))
            .join("build-cache-proxy/aws-java-sdk-bundle-1.11.901.jar"),
    };
    assert!(
        jar.is_file(),
        "{} is missing: run scripts/setup.sh (or set BCP_TEST_AWS_JAVA_SDK_JAR)",
        jar.display()
    );
    jar
}
