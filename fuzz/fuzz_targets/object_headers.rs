//! The S3 front's object headers: `Range`, the four conditional headers and the metadata
//! headers of a PUT, as `object_headers::get_options` and `put_options` read them.
//!
//! Input: lines of `name: value`, each one request header (lines that are not a valid header
//! are skipped, as hyper would refuse them).
//!
//! What must hold:
//! - no panic, whatever the headers;
//! - a `Range` that parses is one byte range that prints back as a header that parses to the
//!   same range; resolved against any length it selects a non-empty span inside the object, or
//!   nothing (a 416), and a suffix longer than the object selects all of it;
//! - a PUT's user metadata is within S3's 2 KB or refused; each name is a metadata header's
//!   name without its `x-amz-meta-` prefix, sorted, once; `aws-chunked` never survives in Content-Encoding;
//! - dates that parse are whole seconds after the epoch (HTTP dates have no fractions).

#![no_main]

use build_cache_proxy::fronts::s3::object_headers::{
    get_options, put_options, HeaderError, MAX_USER_METADATA,
};
use build_cache_proxy::store::backend::ByteRange;
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

fn headers(text: &str) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in text.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.trim()),
            HeaderValue::from_str(value.trim()),
        ) else {
            continue;
        };
        map.append(name, value);
    }
    map
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let map = headers(text);
    let options = get_options(&map);
    if let Some(range) = options.range {
        assert_eq!(ByteRange::parse(&range.header_value()), Some(range));
        for len in [0u64, 1, 2, 7, 1000, u64::MAX] {
            if let Some(span) = range.resolve(len) {
                assert!(
                    span.start < span.end && span.end <= len,
                    "{range:?} {len} {span:?}"
                );
            }
            if let ByteRange::Suffix(n) = range {
                if n >= len && len > 0 {
                    assert_eq!(range.resolve(len), Some(0..len));
                }
            }
        }
    }
    for date in [
        options.conditions.if_modified_since,
        options.conditions.if_unmodified_since,
    ]
    .into_iter()
    .flatten()
    {
        let since = date.duration_since(std::time::UNIX_EPOCH).unwrap();
        assert_eq!(since.subsec_nanos(), 0);
    }
    match put_options(&map) {
        Ok(put) => {
            let user = &put.attrs.user;
            let size: usize = user.iter().map(|(n, v)| n.len() + v.len()).sum();
            // Repeated names are joined with commas, which adds at most one byte per repeat.
            assert!(size <= MAX_USER_METADATA + map.len(), "{size}");
            assert!(user.windows(2).all(|w| w[0].0 < w[1].0), "{user:?}");
            // Each name is a metadata header's name without its prefix (which a name may
            // itself repeat: `x-amz-meta-x-amz-meta-a` is the name `x-amz-meta-a`).
            assert!(user
                .iter()
                .all(|(n, _)| map.contains_key(format!("x-amz-meta-{n}").as_str())));
            if let Some(encoding) = &put.attrs.content_encoding {
                assert!(!encoding
                    .split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("aws-chunked")));
            }
        }
        Err(HeaderError::MetadataTooLarge(size)) => assert!(size > MAX_USER_METADATA),
        Err(HeaderError::NotText(_)) => {}
        // Only a client's write through the front refuses the daemon's own metadata names.
        Err(HeaderError::Reserved(name)) => panic!("put_options refused {name}"),
    }
});
