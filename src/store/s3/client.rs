//! Building the `aws-sdk-s3` client from `[s3]`, with every setting that matters for streaming
//! chosen here on purpose rather than inherited from SDK defaults.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_s3::config::{
    RequestChecksumCalculation, ResponseChecksumValidation, StalledStreamProtectionConfig,
};
use aws_smithy_http_client::tls;

use crate::config::S3Config;

/// How long an S3 transfer may show no progress at all before the SDK fails it. Downloads are
/// drained at disk speed (readers tail the spool file, they never throttle the download) and
/// uploads are file-backed, so a stall here is S3's (or the network's), never a slow client's.
const STALL_GRACE: Duration = Duration::from_secs(20);

/// The SDK client for `config`. Credentials come from the AWS default chain (env, profile,
/// web identity / IRSA, EKS Pod Identity, IMDS), resolved lazily on first use, so a daemon starts
/// even while S3 or the credential source is unreachable.
pub async fn build(config: &S3Config) -> aws_sdk_s3::Client {
    // default-https-client is off (it pulls in aws-lc, a C build): rustls with ring instead.
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    // Only the connect timeout is an SDK setting. The SDK's "read timeout" spans the whole
    // request including an upload's body, which would fail every large upload; instead the S3
    // tier bounds the wait for response headers itself (`s3.read_timeout`) on reads, and
    // uploads get a deadline that grows with their size.
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(config.connect_timeout)
        .build();
    // Short backoffs: a read-through is on a client's critical path, and the circuit breaker,
    // not SDK retries, is what handles an S3 outage.
    let retries = RetryConfig::standard()
        .with_max_attempts(config.max_attempts.max(1))
        .with_initial_backoff(Duration::from_millis(100))
        .with_max_backoff(Duration::from_secs(2));
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .timeout_config(timeouts)
        .retry_config(retries)
        .stalled_stream_protection(
            StalledStreamProtectionConfig::enabled()
                .grace_period(STALL_GRACE)
                .build(),
        );
    if !config.region.is_empty() {
        loader = loader.region(aws_config::Region::new(config.region.clone()));
    }
    let shared = loader.load().await;
    let mut s3 = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(config.force_path_style)
        // Since 1.69 the SDK adds a CRC32 to every upload by default, which needs the body twice
        // or a trailer that some S3-compatible stores refuse. Our own CRC32C travels as user
        // metadata instead; the SDK adds checksums only where an operation requires one.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    if !config.endpoint.is_empty() {
        s3 = s3.endpoint_url(config.endpoint.clone());
    }
    if shared.region().is_none() {
        // Without any region the SDK refuses to sign; S3-compatible stores ignore it anyway.
        s3 = s3.region(aws_config::Region::new("us-east-1"));
    }
    aws_sdk_s3::Client::from_conf(s3.build())
}
