//! The S3 front answering as S3 does where SDKs and tools depend on it, driven with
//! `aws-sdk-s3` over a socket, SeaweedFS behind write-through and write-back buckets and a
//! local one beside them: a retried CompleteMultipartUpload, CopyObject's source conditions and
//! its refusal to copy an object onto itself unchanged, GetObject's `response-*` overrides,
//! ListObjects' owners, and presigned URLs whose expiry is out of range or past.

mod common;

use std::time::{Duration, SystemTime};

use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use common::s3::{self as s3t, client, client_as, endpoint, fresh_bucket, remove_bucket};
use common::Daemon;

const KEY: &str = "runner";
const SECRET: &str = "runner-secret-0123456789";
/// The front's buckets: one per write mode.
const BUCKETS: [&str; 3] = ["through", "back", "local"];

fn node_config(backend: &str) -> String {
    let buckets: String = BUCKETS
        .iter()
        .map(|name| {
            let backend_lines = if *name == "local" {
                String::new()
            } else {
                format!("backend_bucket = \"{backend}\"\nbackend_prefix = \"{name}/\"\n")
            };
            // Objects of "through" and "local" may be read without a signature; "back" not.
            let anonymous = if *name == "back" { "none" } else { "read" };
            format!("[[s3_api.buckets]]\nname = \"{name}\"\n{backend_lines}write = \"{name}\"\nfreshness = \"revalidate\"\nanonymous = \"{anonymous}\"\n\n")
        })
        .collect();
    let grants: Vec<String> = BUCKETS
        .iter()
        .map(|name| format!("\"{name}\" = \"readwrite\""))
        .collect();
    s3t::config(
        backend,
        &endpoint(),
        // A write-back retried after a transient SeaweedFS error comes soon, not in a minute.
        "retry_max_backoff = \"2s\"",
        &format!(
            "[limits]\nmax_unsized_upload = \"4MiB\"\n\n{buckets}[[s3_api.credentials]]\naccess_key = \"{KEY}\"\nsecret_key = \"{SECRET}\"\nbuckets = {{ {} }}\n",
            grants.join(", ")
        ),
    )
}

struct Node {
    _work: tempfile::TempDir,
    daemon: Daemon,
    backend: String,
}

impl Node {
    async fn start(test: &str) -> Node {
        let backend = fresh_bucket(&client(&endpoint()), test).await;
        let work = tempfile::tempdir().unwrap();
        let daemon = Daemon::start_spec(work.path(), s3t::spec(&node_config(&backend)));
        Node {
            _work: work,
            daemon,
            backend,
        }
    }

    fn front(&self) -> aws_sdk_s3::Client {
        client_as(&self.daemon.s3_url(), KEY, SECRET)
    }

    /// Waits until the write-back bucket's `key` is in S3.
    async fn uploaded(&self, key: &str) {
        let backend_key = format!("back/{key}");
        common::eventually("the write-back upload", Duration::from_secs(30), || async {
            s3t::object(&client(&endpoint()), &self.backend, &backend_key)
                .await
                .is_some()
        })
        .await;
    }

    async fn stop(self) {
        drop(self.daemon);
        remove_bucket(&client(&endpoint()), &self.backend).await;
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 10) as u8)
        .collect()
}

async fn put(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, data: Vec<u8>) -> String {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .content_type("application/zip")
        .body(ByteStream::from(data))
        .send()
        .await
        .unwrap()
        .e_tag()
        .unwrap()
        .to_string()
}

async fn read(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Vec<u8> {
    let out = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    out.body.collect().await.unwrap().into_bytes().to_vec()
}

fn status<T, E>(result: Result<T, aws_sdk_s3::error::SdkError<E>>) -> u16 {
    match result {
        Ok(_) => 200,
        Err(e) => e.raw_response().map(|r| r.status().as_u16()).unwrap_or(0),
    }
}

/// Starts a multipart upload of `key` and uploads `parts` (number and body; a number may come
/// again): the upload's id, and each part as a completion lists it.
async fn upload_parts(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    parts: &[(i32, &[u8])],
) -> (String, Vec<CompletedPart>) {
    let id = s3
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_string();
    let mut listed = Vec::new();
    for (number, data) in parts {
        let etag = s3
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(&id)
            .part_number(*number)
            .body(ByteStream::from(data.to_vec()))
            .send()
            .await
            .unwrap()
            .e_tag()
            .unwrap()
            .to_string();
        listed.push(
            CompletedPart::builder()
                .part_number(*number)
                .e_tag(etag)
                .build(),
        );
    }
    (id, listed)
}

/// A CompleteMultipartUpload of `parts`, to be sent (with conditions, if any).
fn completion(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    id: &str,
    parts: &[CompletedPart],
) -> aws_sdk_s3::operation::complete_multipart_upload::builders::CompleteMultipartUploadFluentBuilder
{
    s3.complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts.to_vec()))
                .build(),
        )
}

/// The SDK retries a completion whose answer it lost: the retry, on the node that completed
/// the upload, gets 200 and the same ETag, and the object is the parts' bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_complete_multipart_upload_gets_the_same_answer() {
    let node = Node::start("retried-complete").await;
    let s3 = node.front();
    let part1 = pattern(5 << 20, 1);
    let part2 = pattern(1000, 2);
    for bucket in BUCKETS {
        let key = "multi/retried.zip";
        let (id, parts) = upload_parts(&s3, bucket, key, &[(1, &part1), (2, &part2)]).await;
        let first = completion(&s3, bucket, key, &id, &parts)
            .send()
            .await
            .unwrap();
        let retried = completion(&s3, bucket, key, &id, &parts)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{bucket}: retried completion: {}",
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            });
        assert_eq!(first.e_tag(), retried.e_tag(), "{bucket}");
        assert!(first.e_tag().unwrap().ends_with("-2\""), "{bucket}");
        assert!(read(&s3, bucket, key).await == [part1.clone(), part2.clone()].concat());
        // Another key never learns of the upload.
        let other = completion(&s3, bucket, "multi/other.zip", &id, &parts)
            .send()
            .await;
        assert_eq!(status(other), 404, "{bucket}");
    }
    node.stop().await;
}

/// CopyObject's `x-amz-copy-source-if-*` conditions: any that fails is a 412 (a copy has no
/// 304); an object copied onto itself needs `x-amz-metadata-directive: REPLACE`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_conditions_and_copies_onto_themselves() {
    let node = Node::start("copy-conditions").await;
    let s3 = node.front();
    for bucket in BUCKETS {
        let etag = put(&s3, bucket, "copy/source.zip", pattern(3000, 3)).await;
        let source = format!("{bucket}/copy/source.zip");
        let copy = || {
            s3.copy_object()
                .bucket(bucket)
                .key("copy/target.zip")
                .copy_source(&source)
        };
        let past = DateTime::from(SystemTime::now() - Duration::from_secs(86400));
        let future = DateTime::from(SystemTime::now() + Duration::from_secs(86400));
        assert_eq!(
            status(copy().copy_source_if_match("\"0000\"").send().await),
            412
        );
        assert_eq!(
            status(copy().copy_source_if_none_match(&etag).send().await),
            412
        );
        assert_eq!(
            status(copy().copy_source_if_unmodified_since(past).send().await),
            412
        );
        assert_eq!(
            status(copy().copy_source_if_modified_since(future).send().await),
            412
        );
        assert_eq!(status(copy().copy_source_if_match(&etag).send().await), 200);
        assert_eq!(
            status(copy().copy_source_if_none_match("\"0000\"").send().await),
            200
        );
        assert!(read(&s3, bucket, "copy/target.zip").await == pattern(3000, 3));

        let onto_itself = || {
            s3.copy_object()
                .bucket(bucket)
                .key("copy/source.zip")
                .copy_source(&source)
        };
        match onto_itself().send().await {
            Err(e) => {
                let code = e
                    .as_service_error()
                    .and_then(|s| s.meta().code())
                    .map(str::to_string);
                assert_eq!(code.as_deref(), Some("InvalidRequest"), "{bucket}");
                assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(400));
            }
            Ok(_) => panic!("{bucket}: an unchanged copy onto itself was accepted"),
        }
        onto_itself()
            .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
            .content_type("text/plain")
            .send()
            .await
            .unwrap();
        let head = s3
            .head_object()
            .bucket(bucket)
            .key("copy/source.zip")
            .send()
            .await
            .unwrap();
        assert_eq!(head.content_type(), Some("text/plain"), "{bucket}");
    }
    node.stop().await;
}

/// GetObject and HeadObject apply the `response-*` overrides of a signed request; the object
/// keeps its own headers for everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_object_applies_response_overrides() {
    let node = Node::start("overrides").await;
    let s3 = node.front();
    for bucket in BUCKETS {
        put(&s3, bucket, "over/ride.zip", pattern(2000, 4)).await;
        let got = s3
            .get_object()
            .bucket(bucket)
            .key("over/ride.zip")
            .response_content_type("text/csv")
            .response_content_disposition("attachment; filename=\"r.csv\"")
            .response_content_encoding("identity")
            .response_content_language("de")
            .response_cache_control("no-store")
            .response_expires(DateTime::from_secs(4_102_444_800))
            .send()
            .await
            .unwrap();
        assert_eq!(got.content_type(), Some("text/csv"), "{bucket}");
        assert_eq!(
            got.content_disposition(),
            Some("attachment; filename=\"r.csv\"")
        );
        assert_eq!(got.content_encoding(), Some("identity"));
        assert_eq!(got.content_language(), Some("de"));
        assert_eq!(got.cache_control(), Some("no-store"));
        assert!(
            got.expires_string().unwrap().contains("2100"),
            "{:?}",
            got.expires_string()
        );
        assert!(got.body.collect().await.unwrap().into_bytes().to_vec() == pattern(2000, 4));
        let head = s3
            .head_object()
            .bucket(bucket)
            .key("over/ride.zip")
            .response_content_type("text/csv")
            .send()
            .await
            .unwrap();
        assert_eq!(head.content_type(), Some("text/csv"));
        let plain = s3
            .get_object()
            .bucket(bucket)
            .key("over/ride.zip")
            .send()
            .await
            .unwrap();
        assert_eq!(
            plain.content_type(),
            Some("application/zip"),
            "overrides are per request"
        );
    }
    node.stop().await;
}

/// ListObjects (v1) lists each object's owner; ListObjectsV2 only with `fetch-owner=true`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_name_owners_when_asked() {
    let node = Node::start("owners").await;
    let s3 = node.front();
    for bucket in BUCKETS {
        put(&s3, bucket, "owned/a.zip", pattern(10, 5)).await;
        let v2 = s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix("owned/")
            .send()
            .await
            .unwrap();
        assert!(v2.contents()[0].owner().is_none(), "{bucket}");
        let v2 = s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix("owned/")
            .fetch_owner(true)
            .send()
            .await
            .unwrap();
        assert_eq!(
            v2.contents()[0].owner().and_then(|o| o.id()),
            Some(KEY),
            "{bucket}"
        );
        let v1 = s3
            .list_objects()
            .bucket(bucket)
            .prefix("owned/")
            .send()
            .await
            .unwrap();
        assert_eq!(
            v1.contents()[0].owner().and_then(|o| o.display_name()),
            Some(KEY)
        );
    }
    node.stop().await;
}

/// A presigned URL past its expiry, or with an expiry no URL may have (0, negative, more than
/// a week), is refused 403 AccessDenied, with the reason in the message; a PUT stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_urls_out_of_their_time_are_access_denied() {
    let node = Node::start("presigned-expiry").await;
    let s3 = node.front();
    let bucket = "through";
    put(&s3, bucket, "signed/there.zip", pattern(100, 6)).await;
    let expired = PresigningConfig::builder()
        .start_time(SystemTime::now() - Duration::from_secs(3600))
        .expires_in(Duration::from_secs(60))
        .build()
        .unwrap();
    let http = reqwest::Client::new();
    let get = s3
        .get_object()
        .bucket(bucket)
        .key("signed/there.zip")
        .presigned(expired.clone())
        .await
        .unwrap();
    let put_url = s3
        .put_object()
        .bucket(bucket)
        .key("signed/new.zip")
        .presigned(expired)
        .await
        .unwrap();
    let answers = [
        http.get(get.uri()).send().await.unwrap(),
        http.put(put_url.uri())
            .body(vec![1u8; 100])
            .send()
            .await
            .unwrap(),
    ];
    for answer in answers {
        assert_eq!(answer.status(), 403);
        let text = answer.text().await.unwrap();
        assert!(
            text.contains("<Code>AccessDenied</Code>") && text.contains("expired"),
            "{text}"
        );
    }
    // Expiries no URL may have: the signature is never looked at.
    let valid = PresigningConfig::expires_in(Duration::from_secs(300)).unwrap();
    let url = s3
        .get_object()
        .bucket(bucket)
        .key("signed/there.zip")
        .presigned(valid)
        .await
        .unwrap()
        .uri()
        .to_string();
    assert_eq!(http.get(&url).send().await.unwrap().status(), 200);
    for bad in ["0", "-7", "604801"] {
        let url = url.replace("X-Amz-Expires=300", &format!("X-Amz-Expires={bad}"));
        let answer = http.get(&url).send().await.unwrap();
        assert_eq!(answer.status(), 403, "X-Amz-Expires={bad}");
        let text = answer.text().await.unwrap();
        assert!(
            text.contains("AccessDenied") && text.contains("X-Amz-Expires"),
            "{text}"
        );
    }
    let missing = s3
        .head_object()
        .bucket(bucket)
        .key("signed/new.zip")
        .send()
        .await;
    assert_eq!(status(missing), 404, "the expired PUT stored nothing");
    node.stop().await;
}

/// `Expires`, `Content-Disposition` and `Content-Language` given on PutObject are kept and
/// returned, by the node that took the PUT and, through S3, by another node that never saw it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_headers_travel_with_the_object() {
    let node = Node::start("kept-headers").await;
    let other_work = tempfile::tempdir().unwrap();
    let other = Daemon::start_spec(other_work.path(), s3t::spec(&node_config(&node.backend)));
    let (s3, s3_other) = (node.front(), client_as(&other.s3_url(), KEY, SECRET));
    let expires = DateTime::from_secs(4_102_444_800); // 2100-01-01
    for bucket in BUCKETS {
        s3.put_object()
            .bucket(bucket)
            .key("kept/report.csv")
            .content_disposition("attachment; filename=\"report.csv\"")
            .content_language("en-GB")
            .expires(expires)
            .body(ByteStream::from(pattern(500, 7)))
            .send()
            .await
            .unwrap();
        let mut readers = vec![("this node", &s3)];
        if bucket != "local" {
            readers.push(("another node", &s3_other));
        }
        if bucket == "back" {
            node.uploaded("kept/report.csv").await;
        }
        for (who, reader) in readers {
            let got = reader
                .get_object()
                .bucket(bucket)
                .key("kept/report.csv")
                .send()
                .await
                .unwrap();
            let case = format!("{bucket}, {who}");
            assert_eq!(
                got.content_disposition(),
                Some("attachment; filename=\"report.csv\""),
                "{case}"
            );
            assert_eq!(got.content_language(), Some("en-GB"), "{case}");
            assert_eq!(
                got.expires_string(),
                Some("Fri, 01 Jan 2100 00:00:00 GMT"),
                "{case}"
            );
            let head = reader
                .head_object()
                .bucket(bucket)
                .key("kept/report.csv")
                .send()
                .await
                .unwrap();
            assert_eq!(head.content_language(), Some("en-GB"), "{case}");
        }
    }
    drop(other);
    node.stop().await;
}

/// A single PUT larger than the backend's part size keeps, in S3, the ETag its client was given
/// (the body's MD5): the write-back uploads it as one PUT, where parts would have made S3's
/// ETag `<md5 of part md5s>-N`. (A write-through still streams such a body as parts; see
/// docs/s3-front.md.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_single_put_keeps_its_etag_in_s3() {
    let node = Node::start("bigetag").await;
    let s3 = node.front();
    use md5::Digest as _;
    let data = pattern(20 << 20, 9);
    let md5 = format!("\"{}\"", hex::encode(md5::Md5::digest(&data)));
    let etag = put(&s3, "back", "big/archive.zip", data).await;
    assert_eq!(etag, md5, "the PUT's ETag is the body's MD5");
    node.uploaded("big/archive.zip").await;
    let in_s3 = client(&endpoint())
        .head_object()
        .bucket(&node.backend)
        .key("back/big/archive.zip")
        .send()
        .await
        .unwrap();
    assert_eq!(in_s3.e_tag(), Some(md5.as_str()), "S3's ETag");
    node.stop().await;
}

/// A part uploaded twice (a retry whose first attempt finished last) and listed twice in the
/// completion, as the ceph suite's "resend, first finishes last" does: the object is the part
/// that finished last, whose listing comes last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_listed_twice_completes_with_the_last_one() {
    let node = Node::start("part-twice").await;
    let s3 = node.front();
    for bucket in BUCKETS {
        let key = "multi/twice.zip";
        let (id, parts) =
            upload_parts(&s3, bucket, key, &[(1, b"BBBBBBBB"), (1, b"AAAAAAAA")]).await;
        completion(&s3, bucket, key, &id, &parts)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{bucket}: {}", aws_sdk_s3::error::DisplayErrorContext(e)));
        assert_eq!(read(&s3, bucket, key).await, b"AAAAAAAA", "{bucket}");
    }
    node.stop().await;
}

/// A PutObject's `x-amz-checksum-*` (verified against the body) is kept: GET and HEAD with
/// `x-amz-checksum-mode: ENABLED` return it (the SDK then checks the body against it), and
/// nothing else does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_objects_checksum_is_returned_when_asked() {
    use base64::Engine;
    use sha2::Digest;
    let node = Node::start("checksums").await;
    let s3 = node.front();
    let other_work = tempfile::tempdir().unwrap();
    let other_node = Daemon::start_spec(other_work.path(), s3t::spec(&node_config(&node.backend)));
    let s3_other = client_as(&other_node.s3_url(), KEY, SECRET);
    let data = pattern(70_000, 8);
    let sha256 = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&data));
    for bucket in BUCKETS {
        let stored = s3
            .put_object()
            .bucket(bucket)
            .key("sum/checked.bin")
            .checksum_sha256(&sha256)
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .unwrap();
        assert_eq!(stored.checksum_sha256(), Some(sha256.as_str()), "{bucket}");
        let asked = s3
            .get_object()
            .bucket(bucket)
            .key("sum/checked.bin")
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
            .send()
            .await
            .unwrap();
        assert_eq!(asked.checksum_sha256(), Some(sha256.as_str()), "{bucket}");
        assert!(asked.body.collect().await.unwrap().into_bytes().to_vec() == data);
        let head = s3
            .head_object()
            .bucket(bucket)
            .key("sum/checked.bin")
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
            .send()
            .await
            .unwrap();
        assert_eq!(head.checksum_sha256(), Some(sha256.as_str()), "{bucket}");
        // The SDK asks for checksums on every GET; a plain client that does not gets none.
        let url = s3
            .get_object()
            .bucket(bucket)
            .key("sum/checked.bin")
            .presigned(PresigningConfig::expires_in(Duration::from_secs(60)).unwrap())
            .await
            .unwrap();
        let plain = reqwest::get(url.uri()).await.unwrap();
        assert_eq!(plain.status(), 200);
        assert!(
            plain.headers().get("x-amz-checksum-sha256").is_none(),
            "{bucket}: only when asked"
        );
        // Another node, which never saw the PUT, reads the checksum with the object from S3.
        if bucket != "local" {
            if bucket == "back" {
                node.uploaded("sum/checked.bin").await;
            }
            let other = s3_other
                .head_object()
                .bucket(bucket)
                .key("sum/checked.bin")
                .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
                .send()
                .await
                .unwrap();
            assert_eq!(
                other.checksum_sha256(),
                Some(sha256.as_str()),
                "{bucket}: other node"
            );
            assert!(
                other.metadata().is_none_or(|m| m.is_empty()),
                "{bucket}: the daemon's own metadata is not shown: {:?}",
                other.metadata()
            );
        }
        // The daemon's own metadata names are not a client's to set.
        let reserved = s3
            .put_object()
            .bucket(bucket)
            .key("sum/forged.bin")
            .metadata("build-cache-proxy-checksum-sha256", &sha256)
            .body(ByteStream::from(pattern(10, 9)))
            .send()
            .await;
        assert_eq!(status(reserved), 400, "{bucket}");
        // A wrong checksum stores nothing.
        let wrong = s3
            .put_object()
            .bucket(bucket)
            .key("sum/wrong.bin")
            .checksum_sha256(&sha256)
            .body(ByteStream::from(pattern(10, 9)))
            .send()
            .await;
        assert_eq!(status(wrong), 400, "{bucket}");
        let missing = s3
            .head_object()
            .bucket(bucket)
            .key("sum/wrong.bin")
            .send()
            .await;
        assert_eq!(status(missing), 404, "{bucket}");
    }
    node.stop().await;
}

/// Uploads `data` to a presigned PUT URL as `curl -T -` does: from a pipe, so in HTTP/1.1
/// chunked framing with no Content-Length. Returns the status and the answer's head and body.
fn curl_upload_from_pipe(url: &str, data: &[u8]) -> (u16, String) {
    use std::io::Write;
    let mut curl = std::process::Command::new("curl")
        .args(["-sS", "-i", "-T", "-", url])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("curl runs");
    let mut stdin = curl.stdin.take().unwrap();
    // curl may stop reading once it has the answer to a refused upload.
    let _ = stdin.write_all(data);
    drop(stdin);
    let out = curl.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .lines()
        .filter(|line| line.starts_with("HTTP/"))
        .filter_map(|line| line.split(' ').nth(1)?.parse().ok())
        .rfind(|code| *code != 100)
        .unwrap_or(0);
    (status, text)
}

/// A PUT whose body comes in chunked framing with no length (`curl -T -`) is stored like any
/// other, with its MD5 ETag, up to `limits.max_unsized_upload`; past that it is answered 400
/// EntityTooLarge and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_without_a_length_is_taken_up_to_its_cap() {
    use md5::Digest;
    let node = Node::start("unsized").await;
    let s3 = node.front();
    let presign = |key: &'static str, bucket: &'static str| {
        let s3 = s3.clone();
        async move {
            s3.put_object()
                .bucket(bucket)
                .key(key)
                .presigned(PresigningConfig::expires_in(Duration::from_secs(300)).unwrap())
                .await
                .unwrap()
                .uri()
                .to_string()
        }
    };
    let data = pattern(3 * 1024 * 1024 + 5, 10);
    let etag = format!("\"{}\"", hex::encode(md5::Md5::digest(&data)));
    for bucket in BUCKETS {
        let url = presign("piped/fits.bin", bucket).await;
        let (code, answer) = tokio::task::spawn_blocking(move || {
            curl_upload_from_pipe(&url, &pattern(3 * 1024 * 1024 + 5, 10))
        })
        .await
        .unwrap();
        assert_eq!(code, 200, "{bucket}: {answer}");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains(&format!("etag: {etag}")),
            "{bucket}: {answer}"
        );
        assert!(
            read(&s3, bucket, "piped/fits.bin").await == data,
            "{bucket}"
        );
        let url = presign("piped/too-big.bin", bucket).await;
        let (code, answer) = tokio::task::spawn_blocking(move || {
            curl_upload_from_pipe(&url, &pattern(5 * 1024 * 1024, 11))
        })
        .await
        .unwrap();
        assert_eq!(code, 400, "{bucket}: {answer}");
        assert!(answer.contains("<Code>EntityTooLarge</Code>"), "{answer}");
        let missing = s3
            .head_object()
            .bucket(bucket)
            .key("piped/too-big.bin")
            .send()
            .await;
        assert_eq!(status(missing), 404, "{bucket}: nothing stored");
    }
    node.stop().await;
}

/// Conditional writes (`If-None-Match`, `If-Match` on PutObject and CompleteMultipartUpload)
/// decide on the object the key has now: 412 when it fails, 404 for `If-Match` of a key with
/// no object, and nothing written either way. Through S3, a second node decides on what the
/// first one wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_writes_decide_on_the_current_object() {
    let node = Node::start("conditional-writes").await;
    let s3 = node.front();
    let other_work = tempfile::tempdir().unwrap();
    let other_node = Daemon::start_spec(other_work.path(), s3t::spec(&node_config(&node.backend)));
    let s3_other = client_as(&other_node.s3_url(), KEY, SECRET);
    let put_if = |s3: &aws_sdk_s3::Client, bucket: &str, data: &[u8]| {
        s3.put_object()
            .bucket(bucket)
            .key("cond/obj")
            .body(ByteStream::from(data.to_vec()))
    };
    for bucket in BUCKETS {
        let first = put_if(&s3, bucket, b"first")
            .if_none_match("*")
            .send()
            .await
            .unwrap();
        let etag = first.e_tag().unwrap().to_string();
        let refused = put_if(&s3, bucket, b"second")
            .if_none_match("*")
            .send()
            .await;
        assert_eq!(status(refused), 412, "{bucket}");
        let refused = put_if(&s3, bucket, b"second")
            .if_match("\"0123\"")
            .send()
            .await;
        assert_eq!(status(refused), 412, "{bucket}");
        assert_eq!(read(&s3, bucket, "cond/obj").await, b"first", "{bucket}");
        let replaced = put_if(&s3, bucket, b"third").if_match(&etag).send().await;
        assert_eq!(status(replaced), 200, "{bucket}");
        assert_eq!(read(&s3, bucket, "cond/obj").await, b"third", "{bucket}");

        // A completion: checked before its parts are assembled, so a refused one can be sent
        // again once its condition holds.
        let (id, parts) = upload_parts(&s3, bucket, "cond/obj", &[(1, b"parts")]).await;
        let refused = completion(&s3, bucket, "cond/obj", &id, &parts)
            .if_none_match("*")
            .send()
            .await;
        assert_eq!(status(refused), 412, "{bucket}");
        s3.delete_object()
            .bucket(bucket)
            .key("cond/obj")
            .send()
            .await
            .unwrap();
        let missing = put_if(&s3, bucket, b"fourth").if_match("*").send().await;
        assert_eq!(status(missing), 404, "{bucket}");
        let done = completion(&s3, bucket, "cond/obj", &id, &parts)
            .if_none_match("*")
            .send()
            .await;
        assert_eq!(status(done), 200, "{bucket}");
        assert_eq!(read(&s3, bucket, "cond/obj").await, b"parts", "{bucket}");

        // Another node sees the object through S3 and refuses to overwrite it.
        if bucket != "local" {
            if bucket == "back" {
                node.uploaded("cond/obj").await;
            }
            let refused = put_if(&s3_other, bucket, b"other")
                .if_none_match("*")
                .send()
                .await;
            assert_eq!(status(refused), 412, "{bucket}: other node");
        }
    }
    node.stop().await;
}

/// UploadPartCopy: parts copied from ranges of an object (of another bucket too) complete
/// into that object's bytes; a range not of the form `bytes=first-last` is 400
/// InvalidArgument, one past the source 416 InvalidRange, a failed copy-source condition 412
/// and a missing source 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_are_copied_from_ranges_of_objects() {
    let node = Node::start("part-copy").await;
    let s3 = node.front();
    let source = pattern((6 << 20) + 123, 12);
    let source_etag = put(&s3, "local", "copy/source.bin", source.clone()).await;
    for bucket in BUCKETS {
        let key = "copy/assembled.bin";
        let (id, _) = upload_parts(&s3, bucket, key, &[]).await;
        let copy = |number: i32, range: &str| {
            s3.upload_part_copy()
                .bucket(bucket)
                .key(key)
                .upload_id(&id)
                .part_number(number)
                .copy_source("local/copy/source.bin")
                .copy_source_range(range)
        };
        let mut parts = Vec::new();
        for (number, range) in [
            (1, format!("bytes=0-{}", (5 << 20) - 1)),
            (2, format!("bytes={}-{}", 5 << 20, source.len() - 1)),
        ] {
            let copied = copy(number, &range)
                .copy_source_if_match(&source_etag)
                .send()
                .await
                .unwrap_or_else(|e| {
                    panic!("{bucket}: {}", aws_sdk_s3::error::DisplayErrorContext(e))
                });
            let etag = copied.copy_part_result().unwrap().e_tag().unwrap();
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .e_tag(etag)
                    .build(),
            );
        }
        for improper in [
            "0-2",
            "bytes=0",
            "bytes=0-bar",
            "bytes=5-2",
            "bytes=0-2,3-5",
        ] {
            let refused = copy(3, improper).send().await;
            assert_eq!(status(refused), 400, "{bucket}: {improper}");
        }
        let past = copy(3, &format!("bytes=0-{}", source.len())).send().await;
        assert_eq!(status(past), 416, "{bucket}");
        let unmet = copy(3, "bytes=0-9")
            .copy_source_if_match("\"0123\"")
            .send()
            .await;
        assert_eq!(status(unmet), 412, "{bucket}");
        let missing = s3
            .upload_part_copy()
            .bucket(bucket)
            .key(key)
            .upload_id(&id)
            .part_number(3)
            .copy_source("local/copy/none.bin")
            .send()
            .await;
        assert_eq!(status(missing), 404, "{bucket}");
        completion(&s3, bucket, key, &id, &parts)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{bucket}: {}", aws_sdk_s3::error::DisplayErrorContext(e)));
        assert!(read(&s3, bucket, key).await == source, "{bucket}");
    }
    node.stop().await;
}

/// Listings under a prefix hold only names under it (a prefix of `/` lists nothing when no
/// name starts with one, whatever the backend makes of `//`), and a V1 listing's `Prefix` is
/// given back as it was asked, encoded or not, as the SDKs read it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_prefixes_select_names() {
    use aws_sdk_s3::types::EncodingType;
    let node = Node::start("list-prefixes").await;
    let s3 = node.front();
    for bucket in BUCKETS {
        for key in ["b/a/r", "b/a/c", "g", "a b/x"] {
            put(&s3, bucket, key, b"x".to_vec()).await;
        }
        if bucket == "back" {
            node.uploaded("g").await;
        }
        let v2 = s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix("/")
            .delimiter("d")
            .send()
            .await
            .unwrap();
        assert!(v2.contents().is_empty(), "{bucket}: {:?}", v2.contents());
        assert!(v2.common_prefixes().is_empty(), "{bucket}");
        let v1 = s3
            .list_objects()
            .bucket(bucket)
            .prefix("a b/")
            .encoding_type(EncodingType::Url)
            .send()
            .await
            .unwrap();
        assert_eq!(v1.prefix(), Some("a b/"), "{bucket}");
        let keys: Vec<&str> = v1.contents().iter().filter_map(|o| o.key()).collect();
        assert_eq!(keys, ["a%20b/x"], "{bucket}");
    }
    node.stop().await;
}

/// A multipart upload created with a checksum algorithm: each part's checksum is answered and
/// listed, the completion answers the object's (composite `<sum>-<parts>`, or a CRC of the
/// whole object) with its type, HEAD returns both when asked, on this node and, through S3,
/// on another; a whole-object checksum that differs fails the completion with BadDigest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_checksums_are_made_of_the_parts() {
    use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode, ChecksumType};
    let node = Node::start("multipart-checksums").await;
    let s3 = node.front();
    let other_work = tempfile::tempdir().unwrap();
    let other_node = Daemon::start_spec(other_work.path(), s3t::spec(&node_config(&node.backend)));
    let s3_other = client_as(&other_node.s3_url(), KEY, SECRET);
    let bodies = [pattern(5 << 20, 21), pattern(70_000, 22)];
    for bucket in BUCKETS {
        for (algorithm, kind) in [
            (ChecksumAlgorithm::Sha256, ChecksumType::Composite),
            (ChecksumAlgorithm::Crc32, ChecksumType::FullObject),
        ] {
            let key = format!("sums/{}.bin", algorithm.as_str());
            let created = s3
                .create_multipart_upload()
                .bucket(bucket)
                .key(&key)
                .checksum_algorithm(algorithm.clone())
                .checksum_type(kind.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(created.checksum_algorithm(), Some(&algorithm), "{bucket}");
            let id = created.upload_id().unwrap();
            let mut parts = Vec::new();
            for (i, data) in bodies.iter().enumerate() {
                let number = i as i32 + 1;
                let out = s3
                    .upload_part()
                    .bucket(bucket)
                    .key(&key)
                    .upload_id(id)
                    .part_number(number)
                    .checksum_algorithm(algorithm.clone())
                    .body(ByteStream::from(data.clone()))
                    .send()
                    .await
                    .unwrap();
                let part = CompletedPart::builder()
                    .part_number(number)
                    .e_tag(out.e_tag().unwrap())
                    .set_checksum_sha256(out.checksum_sha256().map(str::to_string))
                    .set_checksum_crc32(out.checksum_crc32().map(str::to_string))
                    .build();
                assert!(
                    part.checksum_sha256().or(part.checksum_crc32()).is_some(),
                    "{bucket}: the part's checksum is answered"
                );
                parts.push(part);
            }
            let listed = s3
                .list_parts()
                .bucket(bucket)
                .key(&key)
                .upload_id(id)
                .send()
                .await
                .unwrap();
            assert_eq!(listed.checksum_algorithm(), Some(&algorithm), "{bucket}");
            for (shown, sent) in listed.parts().iter().zip(&parts) {
                assert_eq!(shown.checksum_sha256(), sent.checksum_sha256());
                assert_eq!(shown.checksum_crc32(), sent.checksum_crc32());
            }
            let wrong = completion(&s3, bucket, &key, id, &parts)
                .checksum_sha256("AAAA")
                .send()
                .await;
            if algorithm == ChecksumAlgorithm::Sha256 {
                assert_eq!(
                    status(wrong),
                    400,
                    "{bucket}: the whole object's checksum differs"
                );
            }
            let mut completing = completion(&s3, bucket, &key, id, &parts);
            if algorithm == ChecksumAlgorithm::Sha256 {
                // The header is the whole object's checksum (the parts' checksums' sha256, and
                // their count), not the checksum of the XML the completion sends.
                use base64::Engine;
                use sha2::Digest;
                let b64 = base64::engine::general_purpose::STANDARD;
                let mut of_parts = sha2::Sha256::new();
                for part in &parts {
                    of_parts.update(b64.decode(part.checksum_sha256().unwrap()).unwrap());
                }
                let composite = format!("{}-{}", b64.encode(of_parts.finalize()), parts.len());
                completing = completing.checksum_sha256(composite);
            }
            let done = completing.send().await;
            let done = done.unwrap_or_else(|e| {
                panic!("{bucket}: {}", aws_sdk_s3::error::DisplayErrorContext(e))
            });
            assert_eq!(done.checksum_type(), Some(&kind), "{bucket}");
            let value = done
                .checksum_sha256()
                .or(done.checksum_crc32())
                .unwrap()
                .to_string();
            if kind == ChecksumType::Composite {
                assert!(value.ends_with("-2"), "{bucket}: {value}");
            } else {
                let mut crc = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32IsoHdlc);
                crc.update(&bodies.concat());
                let whole = (crc.finalize() as u32).to_be_bytes();
                use base64::Engine;
                assert_eq!(
                    value,
                    base64::engine::general_purpose::STANDARD.encode(whole)
                );
            }
            let mut heads = vec![(s3.clone(), "this node")];
            if bucket != "local" {
                if bucket == "back" {
                    node.uploaded(&key).await;
                }
                heads.push((s3_other.clone(), "another node"));
            }
            for (client, which) in heads {
                let head = client
                    .head_object()
                    .bucket(bucket)
                    .key(&key)
                    .checksum_mode(ChecksumMode::Enabled)
                    .send()
                    .await
                    .unwrap();
                let shown = head.checksum_sha256().or(head.checksum_crc32());
                assert_eq!(shown, Some(value.as_str()), "{bucket}: {which}");
                assert_eq!(head.checksum_type(), Some(&kind), "{bucket}: {which}");
            }
        }
    }
    node.stop().await;
}

/// A checksum sent after the body (an aws-chunked trailer, as the SDKs send one for a streamed
/// body) is kept like one sent as a header: HEAD returns it when asked, here and, through S3,
/// on another node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trailer_checksum_is_kept() {
    use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode};
    let node = Node::start("trailer-checksum").await;
    // The SDK sends a streamed body's checksum as an aws-chunked trailer when it computes
    // checksums for every request it can (its default), not only where S3 requires them.
    let s3 = aws_sdk_s3::Client::from_conf(
        node.front()
            .config()
            .to_builder()
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenSupported,
            )
            .build(),
    );
    let other_work = tempfile::tempdir().unwrap();
    let other_node = Daemon::start_spec(other_work.path(), s3t::spec(&node_config(&node.backend)));
    let s3_other = client_as(&other_node.s3_url(), KEY, SECRET);
    let data = pattern(300_000, 31);
    let file = other_work.path().join("streamed.bin");
    std::fs::write(&file, &data).unwrap();
    let mut crc = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi);
    crc.update(&data);
    let expected = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode((crc.finalize() as u32).to_be_bytes())
    };
    for bucket in BUCKETS {
        let stored = s3
            .put_object()
            .bucket(bucket)
            .key("trailer/streamed.bin")
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .body(ByteStream::from_path(&file).await.unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(
            stored.checksum_crc32_c(),
            Some(expected.as_str()),
            "{bucket}: {}",
            node.daemon.log()
        );
        let mut heads = vec![(s3.clone(), "this node")];
        if bucket != "local" {
            if bucket == "back" {
                node.uploaded("trailer/streamed.bin").await;
            }
            heads.push((s3_other.clone(), "another node"));
        }
        for (client, which) in heads {
            let head = client
                .head_object()
                .bucket(bucket)
                .key("trailer/streamed.bin")
                .checksum_mode(ChecksumMode::Enabled)
                .send()
                .await
                .unwrap();
            assert_eq!(
                head.checksum_crc32_c(),
                Some(expected.as_str()),
                "{bucket}: {which}"
            );
        }
        assert!(read(&s3, bucket, "trailer/streamed.bin").await == data);
    }
    node.stop().await;
}

/// An answer `curl` got: status, the whole answer as text (for messages), the body's length.
type CurlAnswer = (u16, String, usize);

/// `curl` with `args` and then `url`.
fn curl(args: &[&str], url: &str) -> CurlAnswer {
    let out = std::process::Command::new("curl")
        .args(["-sS", "-i"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl runs");
    let raw = out.stdout;
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(raw.len(), |at| at + 4);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .lines()
        .find(|line| line.starts_with("HTTP/"))
        .and_then(|line| line.split(' ').nth(1)?.parse().ok())
        .unwrap_or(0);
    (status, text, raw.len() - head_end)
}

/// A request without a signature reads the objects of a bucket configured `anonymous = "read"`
/// (GET, HEAD; NoSuchKey for a missing one) and nothing else: not the objects of another
/// bucket, not a listing, not a write or a delete, not the `response-*` overrides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_requests_read_only_public_buckets() {
    let node = Node::start("anonymous").await;
    let s3 = node.front();
    let base = node.daemon.s3_url();
    let data = pattern(70_000, 5);
    for bucket in BUCKETS {
        put(&s3, bucket, "public/object.bin", data.clone()).await;
    }
    let base_for = base.clone();
    let answers = tokio::task::spawn_blocking(move || {
        let url = |bucket: &str, rest: &str| format!("{base_for}/{bucket}/{rest}");
        let mut answers = Vec::new();
        for bucket in BUCKETS {
            answers.push((bucket, "get", curl(&[], &url(bucket, "public/object.bin"))));
            answers.push((
                bucket,
                "head",
                curl(&["-I"], &url(bucket, "public/object.bin")),
            ));
            answers.push((
                bucket,
                "missing",
                curl(&[], &url(bucket, "public/none.bin")),
            ));
            answers.push((
                bucket,
                "list",
                curl(&[], &format!("{base_for}/{bucket}?list-type=2")),
            ));
            answers.push((
                bucket,
                "put",
                curl(
                    &["-X", "PUT", "--data-binary", "x"],
                    &url(bucket, "public/object.bin"),
                ),
            ));
            answers.push((
                bucket,
                "delete",
                curl(&["-X", "DELETE"], &url(bucket, "public/object.bin")),
            ));
            answers.push((
                bucket,
                "override",
                curl(
                    &[],
                    &url(bucket, "public/object.bin?response-content-type=text/html"),
                ),
            ));
        }
        answers
    })
    .await
    .unwrap();
    for (bucket, what, (code, answer, body_len)) in answers {
        let public = bucket != "back";
        let (want, error) = match what {
            "get" | "head" if public => (200, None),
            "missing" if public => (404, Some("NoSuchKey")),
            "override" if public => (400, Some("InvalidRequest")),
            _ => (403, Some("AccessDenied")),
        };
        assert_eq!(code, want, "{bucket} {what}: {answer}");
        if let (Some(error), false) = (error, what == "head") {
            assert!(
                answer.contains(&format!("<Code>{error}</Code>")),
                "{bucket} {what}: {answer}"
            );
        }
        if what == "get" && public {
            assert_eq!(body_len, data.len(), "{bucket}: the whole object");
        }
    }
    // Nothing an unsigned request tried changed an object.
    for bucket in BUCKETS {
        assert!(
            read(&s3, bucket, "public/object.bin").await == data,
            "{bucket}"
        );
    }
    node.stop().await;
}
