//! Reads `METADATA` from the head of a Gradle cache entry as its body passes, within bounds.
//!
//! The body is fed chunk by chunk ([`MetadataReader::feed`]) as it streams to the store; the
//! reader inflates into a small buffer and walks the tar headers there (512-byte blocks: a
//! header parser this size needs no tar crate, and `tar`'s reader wants a `Read` it can pull
//! from, not a buffer we push into). It stops as soon as it has an answer, and gives up — the
//! entry is then of unknown task — past [`MAX_COMPRESSED`] bytes of body, [`MAX_HEAD`] bytes
//! inflated, or a `METADATA` above [`MAX_METADATA`]: a gzip bomb or a huge `METADATA` costs a
//! few KiB and a little CPU. Whatever it finds, the body is stored as it came.

use std::io::{self, Write};

use flate2::write::GzDecoder;

use super::{properties, TaskFacts};

/// Body bytes inflated at most; Gradle's `METADATA` is in the first few hundred.
pub const MAX_COMPRESSED: usize = 64 * 1024;
/// Inflated bytes kept at most: tar headers (a PAX header comes first in Gradle 4) and
/// `METADATA`.
pub const MAX_HEAD: usize = 16 * 1024;
/// Largest `METADATA` read; Gradle's are about 400 bytes.
pub const MAX_METADATA: u64 = 8 * 1024;
const BLOCK: usize = 512;

/// What the reader knows so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    /// Not enough of the body seen yet.
    Pending,
    Known(TaskFacts),
    Unknown(Unknown),
}

/// Why an entry's task is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unknown {
    /// The body is not gzip.
    NotGzip,
    /// The gzip stream is corrupt.
    Corrupt,
    /// What it inflates to is not a tar archive.
    NotTar,
    /// The archive's first file is not `METADATA`.
    NoMetadata,
    /// `METADATA` names no usable task type.
    NoTaskType,
    /// A bound was reached before `METADATA` was read.
    TooLarge,
    /// The body ended first.
    Truncated,
}

impl Unknown {
    pub fn as_str(self) -> &'static str {
        match self {
            Unknown::NotGzip => "not_gzip",
            Unknown::Corrupt => "corrupt",
            Unknown::NotTar => "not_tar",
            Unknown::NoMetadata => "no_metadata",
            Unknown::NoTaskType => "no_task_type",
            Unknown::TooLarge => "too_large",
            Unknown::Truncated => "truncated",
        }
    }
}

/// Feeds on a body's chunks until it knows the entry's task or that it cannot.
pub struct MetadataReader {
    state: State,
    fed: usize,
}

enum State {
    /// Before the two gzip magic bytes have been seen (the decoder is made only after them).
    Start {
        first: Option<u8>,
    },
    Inflating(Box<GzDecoder<Head>>),
    Done(Reading),
}

impl Default for MetadataReader {
    fn default() -> Self {
        Self::new()
    }
}

impl MetadataReader {
    pub fn new() -> Self {
        MetadataReader {
            state: State::Start { first: None },
            fed: 0,
        }
    }

    /// Whether the answer is known: further chunks need not be fed.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done(_))
    }

    /// The next chunk of the body.
    pub fn feed(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() {
            match &mut self.state {
                State::Done(_) => return,
                State::Start { first } => {
                    let byte = chunk[0];
                    chunk = &chunk[1..];
                    self.fed += 1;
                    match (*first, byte) {
                        (None, 0x1f) => *first = Some(byte),
                        (Some(_), 0x8b) => {
                            let mut decoder = GzDecoder::new(Head::default());
                            // The magic again, now to the decoder that checks the whole header.
                            self.state = match decoder.write_all(&[0x1f, 0x8b]) {
                                Ok(()) => State::Inflating(Box::new(decoder)),
                                Err(_) => State::Done(Reading::Unknown(Unknown::NotGzip)),
                            };
                        }
                        _ => self.state = State::Done(Reading::Unknown(Unknown::NotGzip)),
                    }
                }
                State::Inflating(decoder) => {
                    let take = chunk.len().min(MAX_COMPRESSED.saturating_sub(self.fed));
                    self.fed += take;
                    // Flushed even after an error: what was inflated before a corrupt byte
                    // is in the decoder's buffer, and the answer must not depend on where the
                    // body's chunks were cut.
                    let wrote = decoder.write_all(&chunk[..take]);
                    let flushed = decoder.flush();
                    let wrote = wrote.and(flushed);
                    chunk = &chunk[take..];
                    let reading = match scan(&decoder.get_ref().data) {
                        Reading::Pending => match wrote {
                            Err(_) if decoder.get_ref().full => Reading::Unknown(Unknown::TooLarge),
                            Err(_) => Reading::Unknown(Unknown::Corrupt),
                            Ok(()) if self.fed >= MAX_COMPRESSED => {
                                Reading::Unknown(Unknown::TooLarge)
                            }
                            Ok(()) => Reading::Pending,
                        },
                        answer => answer,
                    };
                    if reading != Reading::Pending {
                        self.state = State::Done(reading);
                    }
                }
            }
        }
    }

    /// The answer, once the body has ended (or the reader is done).
    pub fn finish(self) -> Reading {
        match self.state {
            State::Done(reading) => reading,
            State::Start { first: None } => Reading::Unknown(Unknown::Truncated),
            State::Start { first: Some(_) } => Reading::Unknown(Unknown::NotGzip),
            State::Inflating(_) => Reading::Unknown(Unknown::Truncated),
        }
    }
}

/// The inflated head of the archive, up to [`MAX_HEAD`] bytes; a write past it fails, which
/// stops the decoder.
#[derive(Default)]
struct Head {
    data: Vec<u8>,
    full: bool,
}

impl Write for Head {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = MAX_HEAD - self.data.len();
        if room == 0 && !buf.is_empty() {
            self.full = true;
            return Err(io::Error::other("enough of the archive's head"));
        }
        let n = buf.len().min(room);
        self.data.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Walks the tar headers in `head` to the first file: `METADATA`'s facts, or why not, or
/// `Pending` when `head` ends before the answer.
fn scan(head: &[u8]) -> Reading {
    let mut pos = 0;
    // A name given by a PAX (`x`) or GNU long-name (`L`) header for the next file.
    let mut next_name: Option<Vec<u8>> = None;
    loop {
        let Some(block) = head.get(pos..pos + BLOCK) else {
            return Reading::Pending;
        };
        if block.iter().all(|&b| b == 0) {
            return Reading::Unknown(Unknown::NoMetadata); // the end of an archive
        }
        let Some(size) = header_checksum_ok(block)
            .then(|| octal(&block[124..136]))
            .flatten()
        else {
            return Reading::Unknown(Unknown::NotTar);
        };
        let data_at = pos + BLOCK;
        let data = |size: u64| head.get(data_at..data_at + size as usize);
        match block[156] {
            flag @ (b'x' | b'g' | b'L') => {
                if size > MAX_METADATA {
                    return Reading::Unknown(Unknown::TooLarge);
                }
                let Some(bytes) = data(size) else {
                    return Reading::Pending;
                };
                match flag {
                    b'L' => next_name = Some(until_nul(bytes).to_vec()),
                    b'x' => next_name = pax_path(bytes).or(next_name),
                    _ => {}
                }
                pos = data_at + (size as usize).div_ceil(BLOCK) * BLOCK;
            }
            b'0' | 0 => {
                let name = next_name.take().unwrap_or_else(|| header_name(block));
                let name = name.strip_prefix(b"./").unwrap_or(&name);
                if name != b"METADATA" {
                    return Reading::Unknown(Unknown::NoMetadata);
                }
                if size > MAX_METADATA {
                    return Reading::Unknown(Unknown::TooLarge);
                }
                let Some(text) = data(size) else {
                    return Reading::Pending;
                };
                return match TaskFacts::from_properties(&properties::parse(text)) {
                    Some(facts) => Reading::Known(facts),
                    None => Reading::Unknown(Unknown::NoTaskType),
                };
            }
            _ => return Reading::Unknown(Unknown::NoMetadata),
        }
    }
}

/// The header's checksum: the sum of its bytes, the checksum field counted as spaces.
fn header_checksum_ok(block: &[u8]) -> bool {
    let sum: u64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum();
    octal(&block[148..156]) == Some(sum)
}

/// A NUL- or space-terminated octal field; `None` for anything else (a base-256 size, which
/// only a file above 8 GiB needs, included).
fn octal(field: &[u8]) -> Option<u64> {
    let text = until_nul(field);
    let digits = std::str::from_utf8(text).ok()?.trim_matches(' ');
    if digits.is_empty() {
        return None;
    }
    u64::from_str_radix(digits, 8).ok()
}

fn until_nul(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

/// The file name of a ustar header: its prefix field and name field.
fn header_name(block: &[u8]) -> Vec<u8> {
    let name = until_nul(&block[0..100]);
    let prefix = until_nul(&block[345..500]);
    if &block[257..262] == b"ustar" && !prefix.is_empty() {
        [prefix, b"/", name].concat()
    } else {
        name.to_vec()
    }
}

/// The `path` record of a PAX extended header (`<len> path=<value>\n` records).
fn pax_path(mut records: &[u8]) -> Option<Vec<u8>> {
    let mut path = None;
    while !records.is_empty() {
        let space = records.iter().position(|&b| b == b' ')?;
        let len: usize = std::str::from_utf8(&records[..space]).ok()?.parse().ok()?;
        if len <= space || len > records.len() {
            return path;
        }
        let record = &records[space + 1..len];
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(value) = record.strip_prefix(b"path=") {
            path = Some(value.to_vec());
        }
        records = &records[len..];
    }
    path
}

#[cfg(test)]
mod tests;
