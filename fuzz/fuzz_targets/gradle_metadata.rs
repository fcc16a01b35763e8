//! The Gradle METADATA reader, on any body cut into any chunks: it never panics, answers by
//! the time the body ends, answers the same however the body is cut, stops within its bounds,
//! and what it keeps is fit to be object metadata (no host or user name is ever a field of it).
//!
//! The first byte of the input chooses the chunk size; the rest is the body.

#![no_main]

use build_cache_proxy::gradle_meta::reader::MAX_COMPRESSED;
use build_cache_proxy::gradle_meta::{MetadataReader, Reading, TaskFacts};
use libfuzzer_sys::fuzz_target;

fn read(body: &[u8], chunk: usize) -> (Reading, usize) {
    let mut reader = MetadataReader::new();
    let mut fed = 0;
    for piece in body.chunks(chunk) {
        if reader.is_done() {
            break;
        }
        reader.feed(piece);
        fed += piece.len();
    }
    (reader.finish(), fed)
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(first).max(1) * 7;
    let (reading, fed) = read(body, chunk);
    let (whole, _) = read(body, body.len().max(1));
    assert_eq!(reading, whole, "the answer depends on how the body is cut");
    assert!(
        !matches!(reading, Reading::Pending),
        "no answer at the end of the body"
    );
    if fed > MAX_COMPRESSED + chunk {
        panic!("read {fed} bytes, past the bound of {MAX_COMPRESSED}");
    }
    if let Reading::Known(facts) = reading {
        let meta = facts.to_metadata();
        for (name, value) in &meta {
            assert!(name.starts_with("build-cache-proxy-gradle-"), "{name}");
            assert!(
                value.chars().all(|c| c.is_ascii_graphic() || c == ' '),
                "{value:?}"
            );
        }
        assert_eq!(TaskFacts::from_metadata(&meta), Some(facts));
    }
});
