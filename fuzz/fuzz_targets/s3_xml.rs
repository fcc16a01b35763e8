//! The two S3 request bodies this front reads: CompleteMultipartUpload and Delete.
//!
//! The input is tried as each body. An accepted CompleteMultipartUpload has 1 to 10,000 parts,
//! numbered within 1..=10000 in ascending order (a number may repeat: a retried part), each with
//! the checksums it lists; an accepted Delete 1 to 1,000 non-empty keys. Refusals are the S3
//! errors S3 gives for these bodies (MalformedXML and the like), never a panic. What was
//! accepted, written back as a client writes it (escaped), parses to the same parts, checksums
//! and keys: the parser neither loses nor invents characters.
//!
//! With a first byte of 0xff, the rest is instead a list of keys (NUL-separated) that a client
//! sends in a Delete body: every key without control characters must come back exactly, leading
//! and trailing spaces included, since those are part of S3 keys.

#![no_main]

use build_cache_proxy::fronts::s3::error::S3ErrorCode;
use build_cache_proxy::fronts::s3::xml::{
    parse_complete_multipart_upload, parse_delete, CompletedPart, MAX_DELETE_OBJECTS, MAX_PARTS,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((&0xff, keys)) = data.split_first() {
        if let Ok(text) = std::str::from_utf8(keys) {
            check_client_keys(text);
        }
    }

    match parse_complete_multipart_upload(data) {
        Ok(parts) => {
            assert!((1..=MAX_PARTS as usize).contains(&parts.len()));
            let mut previous = 0;
            for part in &parts {
                // A number may come again right after itself (a retried part's two ETags).
                assert!(
                    (1..=MAX_PARTS).contains(&part.part_number) && part.part_number >= previous,
                    "part {} after {previous}",
                    part.part_number
                );
                previous = part.part_number;
            }
            assert_eq!(
                parse_complete_multipart_upload(complete_document(&parts).as_bytes()).as_ref(),
                Ok(&parts),
                "the parts written back parse differently"
            );
        }
        Err(err) => assert!(
            matches!(
                err.code,
                S3ErrorCode::MalformedXML
                    | S3ErrorCode::InvalidArgument
                    | S3ErrorCode::InvalidPartOrder
                    | S3ErrorCode::MaxMessageLengthExceeded
            ),
            "CompleteMultipartUpload refused with {err}"
        ),
    }

    match parse_delete(data) {
        Ok(request) => {
            assert!((1..=MAX_DELETE_OBJECTS).contains(&request.keys.len()));
            assert!(request.keys.iter().all(|key| !key.is_empty()));
            let again = parse_delete(delete_document(request.quiet, &request.keys).as_bytes())
                .expect("the keys written back parse");
            assert_eq!(again, request, "the keys written back parse differently");
        }
        Err(err) => assert!(
            matches!(
                err.code,
                S3ErrorCode::MalformedXML
                    | S3ErrorCode::NotImplemented
                    | S3ErrorCode::MaxMessageLengthExceeded
            ),
            "Delete refused with {err}"
        ),
    }
});

fn check_client_keys(text: &str) {
    let keys: Vec<String> = text
        .split('\0')
        .filter(|key| !key.is_empty() && !key.chars().any(char::is_control))
        .take(MAX_DELETE_OBJECTS)
        .map(str::to_owned)
        .collect();
    if keys.is_empty() {
        return;
    }
    let parsed = parse_delete(delete_document(true, &keys).as_bytes())
        .unwrap_or_else(|err| panic!("a client's Delete of {keys:?} was refused: {err}"));
    assert!(parsed.quiet);
    assert_eq!(
        parsed.keys, keys,
        "keys changed on their way through the XML"
    );
}

/// XML text as clients escape it.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

fn complete_document(parts: &[CompletedPart]) -> String {
    let mut doc = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">",
    );
    for part in parts {
        let checksums: String = part
            .checksums
            .iter()
            .map(|(algorithm, value)| {
                let element = format!("Checksum{}", algorithm.name());
                format!("<{element}>{}</{element}>", escape(value))
            })
            .collect();
        doc.push_str(&format!(
            "<Part><ETag>\"{}\"</ETag>{checksums}<PartNumber>{}</PartNumber></Part>",
            escape(&part.etag),
            part.part_number
        ));
    }
    doc.push_str("</CompleteMultipartUpload>");
    doc
}

fn delete_document(quiet: bool, keys: &[String]) -> String {
    let mut doc = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">",
    );
    for key in keys {
        doc.push_str(&format!("<Object><Key>{}</Key></Object>", escape(key)));
    }
    doc.push_str(&format!("<Quiet>{quiet}</Quiet></Delete>"));
    doc
}
