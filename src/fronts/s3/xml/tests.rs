use std::time::Duration;

use super::*;

#[test]
fn error_documents_escape_what_they_carry() {
    // Quotes need no escaping in XML text; `<` and `&` do.
    let err = S3Error::new(S3ErrorCode::NoSuchKey, "no key <a&b> \"here\"");
    let xml = error_body(&err, Some("/cache/a&b"), "req-1");
    assert_eq!(
        xml,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchKey</Code><Message>no key &lt;a&amp;b&gt; \"here\"</Message><Resource>/cache/a&amp;b</Resource><RequestId>req-1</RequestId></Error>"
    );
    assert!(!error_body(&err, None, "r").contains("Resource"));
}

#[test]
fn timestamps_have_milliseconds() {
    let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_255_369_830_123);
    assert_eq!(timestamp(at), "2009-10-12T17:50:30.123Z");
}

#[test]
fn list_objects_v2() {
    let result = ListObjectsV2Result {
        name: "cache".into(),
        prefix: "project/".into(),
        delimiter: Some("/".into()),
        max_keys: 1000,
        key_count: 2,
        is_truncated: true,
        next_continuation_token: Some("tok&en".into()),
        contents: vec![
            ListedObject {
                key: "project/a<b".into(),
                last_modified: "2024-03-01T12:00:00.000Z".into(),
                etag: "\"0123\"".into(),
                size: 42,
                owner: None,
                storage_class: "STANDARD",
            },
            ListedObject {
                key: "project/c".into(),
                last_modified: "2024-03-01T12:00:00.000Z".into(),
                etag: "\"4567\"".into(),
                size: 7,
                owner: Some(ObjectOwner {
                    id: "runner".into(),
                    display_name: "runner".into(),
                }),
                storage_class: "STANDARD",
            },
        ],
        common_prefixes: vec![CommonPrefix {
            prefix: "project/1/".into(),
        }],
        ..Default::default()
    };
    let xml = result.to_xml();
    for part in [
        "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">",
        "<Name>cache</Name><Prefix>project/</Prefix><Delimiter>/</Delimiter><MaxKeys>1000</MaxKeys><KeyCount>2</KeyCount><IsTruncated>true</IsTruncated>",
        "<NextContinuationToken>tok&amp;en</NextContinuationToken>",
        "<Contents><Key>project/a&lt;b</Key><LastModified>2024-03-01T12:00:00.000Z</LastModified><ETag>\"0123\"</ETag><Size>42</Size><StorageClass>STANDARD</StorageClass></Contents>",
        "<Size>7</Size><Owner><ID>runner</ID><DisplayName>runner</DisplayName></Owner><StorageClass>STANDARD</StorageClass>",
        "<CommonPrefixes><Prefix>project/1/</Prefix></CommonPrefixes>",
    ] {
        assert!(xml.contains(part), "{part} in {xml}");
    }
    assert!(
        !xml.contains("<ContinuationToken>"),
        "absent when the request had none"
    );
    assert!(!xml.contains("<StartAfter>"));
}

#[test]
fn the_other_documents() {
    let v1 = ListObjectsV1Result {
        name: "cache".into(),
        max_keys: 1000,
        ..Default::default()
    }
    .to_xml();
    assert!(v1.contains("<Name>cache</Name><Prefix></Prefix><Marker></Marker><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>") || v1.contains("<Prefix/><Marker/>"), "{v1}");
    let buckets = list_buckets(
        "ci",
        &[ListedBucket {
            name: "cache".into(),
            creation_date: "2024-03-01T12:00:00.000Z".into(),
        }],
    );
    assert!(buckets.contains("<Owner><ID>ci</ID><DisplayName>ci</DisplayName></Owner><Buckets><Bucket><Name>cache</Name><CreationDate>2024-03-01T12:00:00.000Z</CreationDate></Bucket></Buckets>"), "{buckets}");
    assert!(location_constraint("us-east-1")
        .ends_with("<LocationConstraint xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"/>"));
    assert!(location_constraint("eu-west-1").ends_with(">eu-west-1</LocationConstraint>"));
    let initiate = InitiateMultipartUploadResult {
        bucket: "cache".into(),
        key: "big".into(),
        upload_id: "u1".into(),
        ..Default::default()
    }
    .to_xml();
    assert!(initiate.contains("<Bucket>cache</Bucket><Key>big</Key><UploadId>u1</UploadId>"));
    let complete = CompleteMultipartUploadResult {
        location: "http://127.0.0.1:9000/cache/big".into(),
        bucket: "cache".into(),
        key: "big".into(),
        etag: "\"abc-2\"".into(),
        ..Default::default()
    }
    .to_xml();
    assert!(complete.contains("<ETag>\"abc-2\"</ETag>"));
    let copy = CopyObjectResult {
        last_modified: "2024-03-01T12:00:00.000Z".into(),
        etag: "\"abc\"".into(),
        ..Default::default()
    }
    .to_xml();
    assert!(copy.contains("<CopyObjectResult xmlns="));
    // A checksum is one element named after its algorithm, among the others.
    let completed = CompleteMultipartUploadResult {
        etag: "\"e-3\"".into(),
        checksum: ChecksumElements::of(ChecksumAlgorithm::Sha256, "c2hh-3".into()),
        checksum_type: Some("COMPOSITE".into()),
        ..Default::default()
    }
    .to_xml();
    assert!(
        completed.contains(
            "<ETag>\"e-3\"</ETag><ChecksumSHA256>c2hh-3</ChecksumSHA256><ChecksumType>COMPOSITE</ChecksumType>"
        ),
        "{completed}"
    );
    let parts = ListPartsResult {
        bucket: "cache".into(),
        key: "big".into(),
        upload_id: "u1".into(),
        max_parts: 1000,
        parts: vec![ListedPart {
            part_number: 1,
            last_modified: "t".into(),
            etag: "\"e\"".into(),
            size: 5,
            checksum: ChecksumElements::default(),
        }],
        storage_class: "STANDARD",
        ..Default::default()
    }
    .to_xml();
    assert!(parts.contains("<Part><PartNumber>1</PartNumber><LastModified>t</LastModified><ETag>\"e\"</ETag><Size>5</Size></Part>"), "{parts}");
    let uploads = ListMultipartUploadsResult {
        bucket: "cache".into(),
        max_uploads: 1000,
        uploads: vec![ListedUpload {
            key: "big".into(),
            upload_id: "u1".into(),
            initiated: "t".into(),
            storage_class: "STANDARD",
        }],
        ..Default::default()
    }
    .to_xml();
    assert!(uploads.contains("<Upload><Key>big</Key><UploadId>u1</UploadId><Initiated>t</Initiated><StorageClass>STANDARD</StorageClass></Upload>"), "{uploads}");
    let deleted = DeleteResult {
        deleted: vec![DeletedObject { key: "a".into() }],
        errors: vec![DeleteError {
            key: "b".into(),
            code: "AccessDenied",
            message: "Access Denied".into(),
        }],
        ..Default::default()
    }
    .to_xml();
    assert!(deleted.contains("<Deleted><Key>a</Key></Deleted><Error><Key>b</Key><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"), "{deleted}");
}

/// What botocore sends for `complete_multipart_upload` (namespace, quoted ETags, checksums).
const BOTOCORE_COMPLETE: &str = r#"<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Part><ETag>"7778aef83f66abc1fa1e8477f296d394"</ETag><PartNumber>1</PartNumber><ChecksumCRC32>AAAAAA==</ChecksumCRC32></Part><Part><ETag>&quot;8234979a3fa7e2a8c54b3b7dc8b80a1e&quot;</ETag><PartNumber>2</PartNumber></Part></CompleteMultipartUpload>"#;

#[test]
fn complete_multipart_upload_bodies() {
    let parts = parse_complete_multipart_upload(BOTOCORE_COMPLETE.as_bytes()).unwrap();
    assert_eq!(
        parts,
        [
            CompletedPart {
                part_number: 1,
                etag: "7778aef83f66abc1fa1e8477f296d394".into(),
                checksums: vec![(ChecksumAlgorithm::Crc32, "AAAAAA==".into())],
            },
            CompletedPart {
                part_number: 2,
                etag: "8234979a3fa7e2a8c54b3b7dc8b80a1e".into(),
                checksums: vec![],
            },
        ]
    );
    let code = |body: &str| {
        parse_complete_multipart_upload(body.as_bytes())
            .unwrap_err()
            .code
    };
    let part = |n: u32| format!("<Part><PartNumber>{n}</PartNumber><ETag>\"e\"</ETag></Part>");
    let doc = |parts: &[u32]| {
        let inner: String = parts.iter().map(|n| part(*n)).collect();
        format!("<CompleteMultipartUpload>{inner}</CompleteMultipartUpload>")
    };
    assert_eq!(code(&doc(&[2, 1])), S3ErrorCode::InvalidPartOrder);
    assert_eq!(code(&doc(&[1, 2, 1])), S3ErrorCode::InvalidPartOrder);
    assert_eq!(
        parse_complete_multipart_upload(doc(&[1, 1, 2]).as_bytes())
            .unwrap()
            .len(),
        3,
        "a retried part may be listed twice"
    );
    assert_eq!(code(&doc(&[0])), S3ErrorCode::InvalidArgument);
    assert_eq!(code(&doc(&[10_001])), S3ErrorCode::InvalidArgument);
    assert_eq!(code(&doc(&[])), S3ErrorCode::MalformedXML);
    assert_eq!(
        code("<CompleteMultipartUpload><Part>"),
        S3ErrorCode::MalformedXML
    );
    assert_eq!(code("<CompleteMultipartUpload><Part><PartNumber>x</PartNumber><ETag>e</ETag></Part></CompleteMultipartUpload>"), S3ErrorCode::MalformedXML);
    assert_eq!(code("not xml at all"), S3ErrorCode::MalformedXML);
    let all: Vec<u32> = (1..=MAX_PARTS).collect();
    assert_eq!(
        parse_complete_multipart_upload(doc(&all).as_bytes())
            .unwrap()
            .len(),
        10_000
    );
    let huge = format!(
        "<CompleteMultipartUpload>{}</CompleteMultipartUpload>",
        " ".repeat(MAX_COMPLETE_BODY)
    );
    assert_eq!(code(&huge), S3ErrorCode::MaxMessageLengthExceeded);
}

#[test]
fn delete_bodies() {
    let body = r#"<?xml version="1.0" encoding="UTF-8"?><Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Object><Key>a&amp;b</Key></Object><Object><Key>dir/c</Key></Object><Quiet>true</Quiet></Delete>"#;
    assert_eq!(
        parse_delete(body.as_bytes()).unwrap(),
        DeleteRequest {
            quiet: true,
            keys: vec!["a&b".into(), "dir/c".into()]
        }
    );
    let objects = |n: usize| -> String {
        let inner: String = (0..n)
            .map(|i| format!("<Object><Key>k{i}</Key></Object>"))
            .collect();
        format!("<Delete>{inner}</Delete>")
    };
    let parsed = parse_delete(objects(1000).as_bytes()).unwrap();
    assert_eq!((parsed.quiet, parsed.keys.len()), (false, 1000));
    let code = |body: &str| parse_delete(body.as_bytes()).unwrap_err().code;
    assert_eq!(code(&objects(1001)), S3ErrorCode::MalformedXML);
    assert_eq!(code(&objects(0)), S3ErrorCode::MalformedXML);
    assert_eq!(
        code("<Delete><Object><Key>a</Key><VersionId>v</VersionId></Object></Delete>"),
        S3ErrorCode::NotImplemented
    );
    assert_eq!(
        code("<Delete><Object><Key></Key></Object></Delete>"),
        S3ErrorCode::MalformedXML
    );
    assert_eq!(
        code("<Delete><Object><Key>a</Key></Object>"),
        S3ErrorCode::MalformedXML
    );
    let huge = format!(
        "<Delete>{}</Delete>",
        "<!-- -->".repeat(MAX_DELETE_BODY / 8 + 1)
    );
    assert_eq!(code(&huge), S3ErrorCode::MaxMessageLengthExceeded);
}

#[tokio::test]
async fn bodies_are_read_up_to_a_limit() {
    let pieces = || {
        futures_util::stream::iter(vec![
            Ok(Bytes::from_static(b"0123")),
            Ok(Bytes::from_static(b"4567")),
        ])
    };
    assert_eq!(
        read_capped(pieces(), 8).await.unwrap(),
        Bytes::from_static(b"01234567")
    );
    assert_eq!(
        read_capped(pieces(), 7).await.unwrap_err().code,
        S3ErrorCode::MaxMessageLengthExceeded
    );
    let failing = futures_util::stream::iter(vec![
        Ok(Bytes::from_static(b"01")),
        Err(std::io::Error::other("reset")),
    ]);
    assert_eq!(
        read_capped(failing, 8).await.unwrap_err().code,
        S3ErrorCode::IncompleteBody
    );
}

/// Hostile bodies of up to the largest size read, nested as deep as they go: the parsers must
/// answer them without overflowing the stack (a test thread has 2 MiB of it, a tokio worker as
/// much), with an S3 error where the document is not one of theirs.
#[test]
fn deeply_nested_bodies_do_not_overflow_the_stack() {
    let nested = |root: &str, limit: usize| {
        let (open, close) = (format!("<{root}>"), format!("</{root}>"));
        let depth = (limit - open.len() - close.len()) / "<a></a>".len();
        format!(
            "{open}{}{}{close}",
            "<a>".repeat(depth),
            "</a>".repeat(depth)
        )
    };
    let complete = nested("CompleteMultipartUpload", 1 << 20);
    assert!(((1 << 20) - 7..=1 << 20).contains(&complete.len()));
    let err = parse_complete_multipart_upload(complete.as_bytes()).unwrap_err();
    assert_eq!(err.code, S3ErrorCode::MalformedXML, "{err}");
    let delete = nested("Delete", 1 << 20);
    let err = parse_delete(delete.as_bytes()).unwrap_err();
    assert_eq!(err.code, S3ErrorCode::MalformedXML, "{err}");
    // Well-formed depth inside the elements the parsers descend into is skipped as an unknown
    // field: a valid document.
    let deep = |depth: usize| format!("{}{}", "<x>".repeat(depth), "</x>".repeat(depth));
    let depth = (MAX_COMPLETE_BODY - 200) / 7;
    let part = format!("<CompleteMultipartUpload><Part><PartNumber>1</PartNumber>{}<ETag>\"e\"</ETag></Part></CompleteMultipartUpload>", deep(depth));
    assert_eq!(
        parse_complete_multipart_upload(part.as_bytes())
            .unwrap()
            .len(),
        1
    );
    let depth = (MAX_DELETE_BODY - 200) / 7;
    let object = format!(
        "<Delete><Object>{}<Key>k</Key></Object></Delete>",
        deep(depth)
    );
    assert_eq!(parse_delete(object.as_bytes()).unwrap().keys, ["k"]);
    // The same depth, unclosed.
    let inside_part = format!(
        "<CompleteMultipartUpload><Part>{}",
        "<Part>".repeat(MAX_COMPLETE_BODY / 8)
    );
    let err = parse_complete_multipart_upload(inside_part.as_bytes()).unwrap_err();
    assert_eq!(err.code, S3ErrorCode::MalformedXML, "{err}");
    let inside_key = format!(
        "<Delete><Object><Key>{}",
        "<Key>".repeat(MAX_DELETE_BODY / 8)
    );
    let err = parse_delete(inside_key.as_bytes()).unwrap_err();
    assert_eq!(err.code, S3ErrorCode::MalformedXML, "{err}");
}
