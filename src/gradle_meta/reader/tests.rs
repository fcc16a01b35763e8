use super::*;
use crate::gradle_meta::sample;

const REAL: &[u8] = include_bytes!("../../../tests/fixtures/gradle-4.4.1-compileJava.entry");

/// Reads `body` fed in chunks of `size` bytes.
fn read(body: &[u8], size: usize) -> Reading {
    let mut reader = MetadataReader::new();
    for chunk in body.chunks(size.max(1)) {
        if reader.is_done() {
            break;
        }
        reader.feed(chunk);
    }
    reader.finish()
}

fn known(reading: Reading) -> TaskFacts {
    match reading {
        Reading::Known(facts) => facts,
        other => panic!("expected facts, got {other:?}"),
    }
}

#[test]
fn reads_an_entry_gradle_4_4_1_wrote() {
    // A PAX header (mtime) comes before METADATA in what Gradle 4.4.1 writes.
    for size in [1, 7, 512, 100_000] {
        let facts = known(read(REAL, size));
        assert_eq!(facts.task_type, "org.gradle.api.tasks.compile.JavaCompile");
        assert_eq!(facts.task_path.as_deref(), Some(":compileJava"));
        assert_eq!(facts.execution_ms, Some(1161));
        assert_eq!(facts.created_ms, Some(1796537833107));
    }
}

#[test]
fn stops_reading_once_it_knows() {
    let body = sample::entry("demo.Slow", ":sleep", 3000, 200_000);
    let mut reader = MetadataReader::new();
    reader.feed(&body[..2048.min(body.len())]);
    assert!(reader.is_done());
    assert_eq!(known(reader.finish()).execution_ms, Some(3000));
}

#[test]
fn names_from_pax_and_gnu_headers() {
    let pax_record = b"19 path=./METADATA\n";
    let mut archive = Vec::new();
    archive.extend_from_slice(&sample::header(
        "PaxHeaders/x",
        pax_record.len() as u64,
        b'x',
    ));
    archive.extend_from_slice(pax_record);
    archive.resize(1024, 0);
    let meta = sample::metadata("a.B", ":b", 5);
    archive.extend_from_slice(&sample::tar(&[("some-long-name", meta.as_bytes())]));
    assert_eq!(known(read(&sample::gzip(&archive), 64)).task_type, "a.B");

    let mut gnu = Vec::new();
    gnu.extend_from_slice(&sample::header("././@LongLink", 9, b'L'));
    gnu.extend_from_slice(b"METADATA\0");
    gnu.resize(1024, 0);
    gnu.extend_from_slice(&sample::tar(&[("x", meta.as_bytes())]));
    assert_eq!(known(read(&sample::gzip(&gnu), 64)).task_type, "a.B");
}

#[test]
fn malformed_entries_are_unknown() {
    let unknown = |body: &[u8]| match read(body, 300) {
        Reading::Unknown(why) => why,
        other => panic!("expected unknown, got {other:?}"),
    };
    assert_eq!(unknown(b"plain text, not gzip"), Unknown::NotGzip);
    assert_eq!(unknown(b""), Unknown::Truncated);
    assert_eq!(unknown(&[0x1f]), Unknown::NotGzip);
    assert_eq!(unknown(&sample::gzip(&[b'z'; 4000])), Unknown::NotTar);
    let no_meta = sample::tar(&[("property-x/out", b"data")]);
    assert_eq!(unknown(&sample::gzip(&no_meta)), Unknown::NoMetadata);
    assert_eq!(unknown(&sample::gzip(&[0u8; 2048])), Unknown::NoMetadata);
    let untyped = sample::tar(&[("METADATA", b"path=\\:x\nexecutionTime=3\n")]);
    assert_eq!(unknown(&sample::gzip(&untyped)), Unknown::NoTaskType);
    // METADATA of 1 MiB: refused from its header, never inflated whole.
    let huge = format!("type=a.B\nfiller={}\n", "x".repeat(1 << 20));
    let big = sample::tar(&[("METADATA", huge.as_bytes())]);
    assert_eq!(unknown(&sample::gzip(&big)), Unknown::TooLarge);
    // A gzip bomb: 16 MiB of zeros in a tar header's place inflates only to MAX_HEAD.
    let bomb = sample::gzip(&vec![b'A'; 16 << 20]);
    assert_eq!(unknown(&bomb), Unknown::NotTar);
    // Extension headers as large as allowed, then a bomb: the head fills up first.
    let mut headless_bomb = sample::header("PaxHeaders/x", MAX_METADATA, b'x').to_vec();
    headless_bomb.extend(vec![b'1'; MAX_METADATA as usize]);
    headless_bomb.extend_from_slice(&sample::header("PaxHeaders/y", MAX_METADATA, b'x'));
    headless_bomb.extend(vec![b'1'; 16 << 20]);
    assert_eq!(unknown(&sample::gzip(&headless_bomb)), Unknown::TooLarge);
    // Cut in the middle of the gzip stream; corrupt deflate data.
    let entry = sample::entry("a.B", ":b", 1, 10);
    assert_eq!(unknown(&entry[..20]), Unknown::Truncated);
    let mut corrupt = entry.clone();
    for b in &mut corrupt[10..40] {
        *b = 0xff;
    }
    assert_eq!(unknown(&corrupt), Unknown::Corrupt);
}

#[test]
fn a_bomb_costs_bounded_input() {
    // Past MAX_COMPRESSED bytes of body without an answer, the reader gives up.
    let mut reader = MetadataReader::new();
    let padding = sample::header("PaxHeaders/x", MAX_METADATA, b'x');
    let mut body = sample::gzip(&padding);
    body.truncate(body.len() - 8); // no trailer: an endless stream
    reader.feed(&body);
    let junk = vec![0u8; 8192];
    let mut fed = body.len();
    while !reader.is_done() {
        reader.feed(&junk);
        fed += junk.len();
        assert!(fed <= MAX_COMPRESSED + 2 * junk.len(), "never gave up");
    }
}

#[test]
fn the_answer_does_not_depend_on_where_the_body_is_cut() {
    // Damaged copies of real and sample entries: flipped bytes, cut short, grown.
    let mut rng = fastrand::Rng::with_seed(17);
    let originals = [REAL.to_vec(), sample::entry("a.B", ":x:y", 12, 30_000)];
    for round in 0..400 {
        let mut body = originals[round % 2].clone();
        match round % 4 {
            0 => {
                for _ in 0..rng.usize(1..4) {
                    let at = rng.usize(..body.len());
                    body[at] = rng.u8(..);
                }
            }
            1 => body.truncate(rng.usize(..body.len())),
            2 => body.extend((0..rng.usize(..5000)).map(|_| rng.u8(..))),
            _ => {
                let at = rng.usize(10..200.min(body.len()));
                body[at] ^= 1 << rng.u32(..8);
            }
        }
        let whole = read(&body, body.len());
        for size in [1, 3, 64, 511, 4096] {
            assert_eq!(read(&body, size), whole, "round {round}, chunks of {size}");
        }
        assert_ne!(whole, Reading::Pending);
    }
}
