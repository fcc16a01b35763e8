//! `/status.json` on a node with S3 behind it and the S3 front open: the S3 front's reads count
//! per tier beside Gradle's, and the S3 and write-back sections are there. SeaweedFS
//! (`BCP_TEST_S3_ENDPOINT`) is the backend; aws-sdk-s3 is the S3 front's client.

mod common;

use aws_sdk_s3::primitives::ByteStream;
use common::s3::{self as s3t, client, client_as, endpoint, fresh_bucket, remove_bucket};
use common::{metric_value, metrics, Daemon};

const KEY: &str = "status";
const SECRET: &str = "status-secret-0123456789";
const BUCKET: &str = "ci-cache";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_front_reads_count_by_tier_and_s3_health_shows() {
    let backend = fresh_bucket(&client(&endpoint()), "status-json").await;
    let config = s3t::config(
        &backend,
        &endpoint(),
        "",
        &format!(
            "[[s3_api.buckets]]\nname = \"{BUCKET}\"\nbackend_bucket = \"{backend}\"\n\
             backend_prefix = \"cache/\"\nwrite = \"back\"\nfreshness = \"immutable\"\n\n\
             [[s3_api.credentials]]\naccess_key = \"{KEY}\"\nsecret_key = \"{SECRET}\"\n\
             buckets = {{ \"{BUCKET}\" = \"readwrite\" }}\n"
        ),
    );
    let work = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_spec(work.path(), s3t::spec(&config));
    let front = client_as(&daemon.s3_url(), KEY, SECRET);
    let body = vec![7u8; 300_000];
    front
        .put_object()
        .bucket(BUCKET)
        .key("runner/cache.zip")
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .unwrap();
    for _ in 0..2 {
        let out = front
            .get_object()
            .bucket(BUCKET)
            .key("runner/cache.zip")
            .send()
            .await
            .unwrap();
        assert_eq!(
            out.body.collect().await.unwrap().into_bytes().len(),
            body.len()
        );
    }
    let missing = front
        .get_object()
        .bucket(BUCKET)
        .key("runner/none.zip")
        .send()
        .await;
    assert!(missing.is_err());

    let text = metrics(&daemon).await;
    let reads = |result: &str, tier: &str| {
        metric_value(
            &text,
            &format!(
                "build_cache_proxy_reads_total{{front=\"s3\",result=\"{result}\",tier=\"{tier}\"}}"
            ),
        )
    };
    // 300 KB is below memory.max_entry_size: both hits from memory.
    assert_eq!(reads("hit", "memory"), 2.0);
    assert_eq!(reads("miss", "none"), 1.0);
    assert_eq!(
        metric_value(
            &text,
            "build_cache_proxy_served_bytes_total{front=\"s3\",tier=\"memory\"}"
        ),
        2.0 * body.len() as f64
    );

    let status: serde_json::Value = serde_json::from_str(
        &reqwest::get(daemon.admin_url("/status.json"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    let s3_front = &status["fronts"][1];
    assert_eq!(s3_front["front"], "s3", "{status}");
    assert_eq!(s3_front["since_start"]["memory_hits"], 2, "{status}");
    assert_eq!(s3_front["since_start"]["misses"], 1, "{status}");
    assert_eq!(s3_front["last_hour"]["memory_hits"], 2, "{status}");
    let ratio = s3_front["since_start"]["hit_ratio"].as_f64().unwrap();
    assert!((ratio - 2.0 / 3.0).abs() < 1e-9, "{status}");
    assert_eq!(
        status["bytes"]["local_since_start"],
        2 * body.len(),
        "{status}"
    );
    assert_eq!(status["s3"]["bucket"], backend.as_str(), "{status}");
    assert_eq!(status["s3"]["breaker"], "closed", "{status}");
    assert!(status["write_back"]["entries"].is_u64(), "{status}");
    assert_eq!(status["memory"]["max_bytes"], 512 << 20, "{status}");
    let html = reqwest::get(daemon.admin_url("/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("id=\"s3-state\""), "{html}");
    assert!(html.contains(&format!("<b>{backend}</b>")), "{html}");
    remove_bucket(&client(&endpoint()), &backend).await;
}
