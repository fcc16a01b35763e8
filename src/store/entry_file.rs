//! The on-disk format of one entry: a small header followed by the body bytes.
//!
//! ```text
//! magic "BCPE" | version u16 | header_len u32 | body_len u64 | crc32c u32 | modified_ms u64
//! | namespace_len u16 | namespace | name_len u16 | name | body...
//! ```
//! All integers little-endian. The header names its own key, so the index can be rebuilt from
//! the directory alone, and carries the body's CRC32C, verified whenever the entry is served.
//! A file is written with `body_len = u64::MAX` first and sealed with the real values only after
//! the whole body is on disk, so a header that was never sealed is recognisably incomplete.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Key, Namespace};

const MAGIC: &[u8; 4] = b"BCPE";
const VERSION: u16 = 1;
/// Bytes before the variable-length key.
const FIXED_LEN: usize = 4 + 2 + 4 + 8 + 4 + 8;
const UNSEALED: u64 = u64::MAX;

/// The decoded header of an entry file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryHeader {
    pub key: Key,
    pub header_len: u64,
    pub body_len: u64,
    pub crc32c: u32,
    pub modified: SystemTime,
}

impl EntryHeader {
    /// The header of a file about to be written: unsealed, its body length unknown yet.
    pub fn unsealed(key: &Key) -> Self {
        let header_len =
            (FIXED_LEN + 2 + key.namespace().as_str().len() + 2 + key.name().len()) as u64;
        EntryHeader {
            key: key.clone(),
            header_len,
            body_len: UNSEALED,
            crc32c: 0,
            modified: UNIX_EPOCH,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.header_len as usize);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(self.header_len as u32).to_le_bytes());
        out.extend_from_slice(&self.body_len.to_le_bytes());
        out.extend_from_slice(&self.crc32c.to_le_bytes());
        let millis = self
            .modified
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        out.extend_from_slice(&millis.to_le_bytes());
        for part in [self.key.namespace().as_str(), self.key.name()] {
            out.extend_from_slice(&(part.len() as u16).to_le_bytes());
            out.extend_from_slice(part.as_bytes());
        }
        debug_assert_eq!(out.len() as u64, self.header_len);
        out
    }

    /// Reads and checks a header from the start of `file`, leaving the cursor after it.
    pub fn read_from(file: &mut (impl Read + Seek)) -> io::Result<EntryHeader> {
        file.seek(SeekFrom::Start(0))?;
        let mut fixed = [0u8; FIXED_LEN];
        file.read_exact(&mut fixed)?;
        if &fixed[0..4] != MAGIC {
            return Err(invalid("not an entry file (bad magic)"));
        }
        let version = u16::from_le_bytes([fixed[4], fixed[5]]);
        if version != VERSION {
            return Err(invalid("unknown entry file version"));
        }
        let header_len = u64::from(u32::from_le_bytes(fixed[6..10].try_into().unwrap()));
        let body_len = u64::from_le_bytes(fixed[10..18].try_into().unwrap());
        let crc32c = u32::from_le_bytes(fixed[18..22].try_into().unwrap());
        let millis = u64::from_le_bytes(fixed[22..30].try_into().unwrap());
        if body_len == UNSEALED {
            return Err(invalid("entry file was never sealed"));
        }
        let ns = read_str(file)?;
        let name = read_str(file)?;
        let ns = Namespace::parse(&ns).map_err(|_| invalid("bad namespace in entry header"))?;
        let key = if ns == Namespace::gradle() {
            Key::gradle(&name)
        } else {
            Key::object(ns, &name)
        }
        .map_err(|_| invalid("bad key in entry header"))?;
        let header = EntryHeader {
            key,
            header_len,
            body_len,
            crc32c,
            modified: UNIX_EPOCH + Duration::from_millis(millis),
        };
        if header.header_len != EntryHeader::unsealed(&header.key).header_len {
            return Err(invalid("entry header length is inconsistent"));
        }
        Ok(header)
    }

    /// Rewrites the fixed part of the header in place with the final length and checksum.
    pub fn seal(&self, file: &mut (impl Write + Seek)) -> io::Result<()> {
        let bytes = self.encode();
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&bytes[..FIXED_LEN])
    }
}

fn read_str(file: &mut impl Read) -> io::Result<String> {
    let mut len = [0u8; 2];
    file.read_exact(&mut len)?;
    let mut buf = vec![0u8; u16::from_le_bytes(len) as usize];
    file.read_exact(&mut buf)?;
    String::from_utf8(buf).map_err(|_| invalid("entry header key is not UTF-8"))
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn header_round_trips_and_unsealed_is_refused() {
        let key = Key::gradle("abcdef0123").unwrap();
        let unsealed = EntryHeader::unsealed(&key);
        let mut file = Cursor::new(unsealed.encode());
        assert!(EntryHeader::read_from(&mut file).is_err());

        let sealed = EntryHeader {
            body_len: 42,
            crc32c: 7,
            modified: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            ..unsealed
        };
        sealed.seal(&mut file).unwrap();
        assert_eq!(EntryHeader::read_from(&mut file).unwrap(), sealed);
        assert_eq!(file.position(), sealed.header_len);
    }
}
