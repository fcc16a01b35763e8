//! The on-disk format of one entry: a small header followed by the body bytes.
//!
//! ```text
//! version 3 (written now): as version 2, with the attrs' kept headers (below).
//! version 2 (still read):
//!   magic "BCPE" | version u16 | header_len u32 | body_len u64 | crc32c u32 | modified_ms u64
//!   | etag_len u8 | etag [63 bytes, zero-padded]
//!   | namespace_len u16 | namespace | name_len u16 | name
//!   | attrs_len u32 | attrs
//!   | body...
//!   | block_crcs: one CRC32C (u32) per BLOCK bytes of body, the last block possibly shorter
//! attrs: content_type, content_encoding, cache_control (each u16 length, 0xFFFF = absent,
//!   then the bytes) | user_count u16 | user_count × (name u16+bytes, value u16+bytes)
//!   | version 3: kept_count u16 | kept_count × (name u16+bytes, value u16+bytes)
//! version 1 (still read): the first six fields, then namespace and name, then the body; no
//!   ETag, no attributes, no block checksums.
//! ```
//! All integers little-endian. The header names its own key, so the index can be rebuilt from
//! the directory alone, and carries the body's CRC32C, verified whenever the entry is served,
//! and the object's metadata, so that a hit reads the same from every tier. A file is written
//! with `body_len = u64::MAX` first and sealed with the real length, checksum, date and ETag
//! only after the whole body is on disk, so a header that was never sealed is recognisably
//! incomplete. The block checksums let a range be verified without reading the whole body.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Key, Namespace, ObjectAttrs, ObjectMeta};

const MAGIC: &[u8; 4] = b"BCPE";
const VERSION: u16 = 3;
/// The first version with an ETag, attributes and block checksums.
const WITH_ATTRS: u16 = 2;
/// Bytes before the ETag in every version.
const FIXED_V1: usize = 4 + 2 + 4 + 8 + 4 + 8;
/// Room for the ETag: S3's are 32 hex digits, or 32 + "-" + part count for multipart.
pub const MAX_ETAG_LEN: usize = 63;
/// Bytes before the variable-length key in version 2: what `seal` rewrites.
const FIXED_V2: usize = FIXED_V1 + 1 + MAX_ETAG_LEN;
const UNSEALED: u64 = u64::MAX;
/// The body bytes each block checksum covers: a ranged read verifies whole blocks, so this is
/// also what one ranged reader holds in memory at a time.
pub const BLOCK: u64 = 256 * 1024;
const ABSENT: u16 = u16::MAX;

/// The decoded header of an entry file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryHeader {
    pub key: Key,
    pub header_len: u64,
    pub body_len: u64,
    pub crc32c: u32,
    pub modified: SystemTime,
    /// The object's ETag; `None` for Gradle entries and entries of format version 1.
    pub etag: Option<String>,
    pub attrs: ObjectAttrs,
    /// Whether block checksums follow the body (format 2).
    pub block_crcs: bool,
}

impl EntryHeader {
    /// The header of a file about to be written: unsealed, its body length unknown yet.
    pub fn unsealed(key: &Key, attrs: ObjectAttrs) -> Self {
        let header_len = (FIXED_V2 + key_len(key) + 4 + encode_attrs(&attrs).len()) as u64;
        EntryHeader {
            key: key.clone(),
            header_len,
            body_len: UNSEALED,
            crc32c: 0,
            modified: UNIX_EPOCH,
            etag: None,
            attrs,
            block_crcs: true,
        }
    }

    /// Bytes of block checksums after the body.
    pub fn table_len(&self) -> u64 {
        if self.block_crcs {
            table_len(self.body_len)
        } else {
            0
        }
    }

    /// The whole file's length: header, body and block checksums.
    pub fn file_len(&self) -> u64 {
        self.header_len + self.body_len + self.table_len()
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
        let etag = self
            .etag
            .as_deref()
            .filter(|e| e.len() <= MAX_ETAG_LEN)
            .unwrap_or("");
        out.push(etag.len() as u8);
        let mut slot = [0u8; MAX_ETAG_LEN];
        slot[..etag.len()].copy_from_slice(etag.as_bytes());
        out.extend_from_slice(&slot);
        for part in [self.key.namespace().as_str(), self.key.name()] {
            put_str(&mut out, part);
        }
        let attrs = encode_attrs(&self.attrs);
        out.extend_from_slice(&(attrs.len() as u32).to_le_bytes());
        out.extend_from_slice(&attrs);
        debug_assert_eq!(out.len() as u64, self.header_len);
        out
    }

    /// Reads and checks a header (of either version) from the start of `file`, leaving the
    /// cursor after it.
    pub fn read_from(file: &mut (impl Read + Seek)) -> io::Result<EntryHeader> {
        file.seek(SeekFrom::Start(0))?;
        let mut fixed = [0u8; FIXED_V1];
        file.read_exact(&mut fixed)?;
        if &fixed[0..4] != MAGIC {
            return Err(invalid("not an entry file (bad magic)"));
        }
        let version = u16::from_le_bytes([fixed[4], fixed[5]]);
        if !(1..=VERSION).contains(&version) {
            return Err(invalid("unknown entry file version"));
        }
        let header_len = u64::from(u32::from_le_bytes(fixed[6..10].try_into().unwrap()));
        let body_len = u64::from_le_bytes(fixed[10..18].try_into().unwrap());
        let crc32c = u32::from_le_bytes(fixed[18..22].try_into().unwrap());
        let millis = u64::from_le_bytes(fixed[22..30].try_into().unwrap());
        if body_len == UNSEALED {
            return Err(invalid("entry file was never sealed"));
        }
        let mut etag = None;
        if version >= WITH_ATTRS {
            let mut slot = [0u8; 1 + MAX_ETAG_LEN];
            file.read_exact(&mut slot)?;
            let len = slot[0] as usize;
            if len > MAX_ETAG_LEN {
                return Err(invalid("entry header ETag is too long"));
            }
            if len > 0 {
                let text = std::str::from_utf8(&slot[1..1 + len])
                    .map_err(|_| invalid("entry header ETag is not UTF-8"))?;
                etag = Some(text.to_string());
            }
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
        let (attrs, expected_len) = if version >= WITH_ATTRS {
            let mut len = [0u8; 4];
            file.read_exact(&mut len)?;
            let len = u32::from_le_bytes(len) as usize;
            if len as u64 > header_len {
                return Err(invalid("entry header attributes overrun the header"));
            }
            let mut raw = vec![0u8; len];
            file.read_exact(&mut raw)?;
            let attrs = decode_attrs(&raw, version)?;
            (attrs, (FIXED_V2 + key_len(&key) + 4 + len) as u64)
        } else {
            (ObjectAttrs::default(), (FIXED_V1 + key_len(&key)) as u64)
        };
        if header_len != expected_len {
            return Err(invalid("entry header length is inconsistent"));
        }
        Ok(EntryHeader {
            key,
            header_len,
            body_len,
            crc32c,
            modified: UNIX_EPOCH + Duration::from_millis(millis),
            etag,
            attrs,
            block_crcs: version >= WITH_ATTRS,
        })
    }

    /// What readers learn about the entry.
    pub fn meta(&self) -> ObjectMeta {
        ObjectMeta {
            etag: self.etag.clone(),
            attrs: self.attrs.clone(),
            ..ObjectMeta::new(self.body_len, self.modified, Some(self.crc32c))
        }
    }

    /// Rewrites the header in place with the final length, checksum, date and ETag (and the
    /// attributes, which may have had a value filled in at the end, at the same length).
    pub fn seal(&self, file: &mut (impl Write + Seek)) -> io::Result<()> {
        let bytes = self.encode();
        if bytes.len() as u64 != self.header_len {
            return Err(io::Error::other(
                "the header's attributes changed length after the body was written",
            ));
        }
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&bytes)
    }
}

/// Bytes of block checksums for a body of `body_len` bytes.
pub fn table_len(body_len: u64) -> u64 {
    body_len.div_ceil(BLOCK) * 4
}

/// Bytes the key takes in a header.
fn key_len(key: &Key) -> usize {
    2 + key.namespace().as_str().len() + 2 + key.name().len()
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u16).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

fn encode_attrs(attrs: &ObjectAttrs) -> Vec<u8> {
    let mut out = Vec::new();
    for field in [
        &attrs.content_type,
        &attrs.content_encoding,
        &attrs.cache_control,
    ] {
        match field {
            Some(text) => put_str(&mut out, text),
            None => out.extend_from_slice(&ABSENT.to_le_bytes()),
        }
    }
    for list in [&attrs.user, &attrs.kept] {
        out.extend_from_slice(&(list.len() as u16).to_le_bytes());
        for (name, value) in list {
            put_str(&mut out, name);
            put_str(&mut out, value);
        }
    }
    out
}

fn decode_attrs(mut raw: &[u8], version: u16) -> io::Result<ObjectAttrs> {
    let mut optional = || -> io::Result<Option<String>> {
        let mut len = [0u8; 2];
        raw.read_exact(&mut len)?;
        let len = u16::from_le_bytes(len);
        if len == ABSENT {
            return Ok(None);
        }
        let mut buf = vec![0u8; len as usize];
        raw.read_exact(&mut buf)?;
        String::from_utf8(buf)
            .map(Some)
            .map_err(|_| invalid("entry attribute is not UTF-8"))
    };
    let content_type = optional()?;
    let content_encoding = optional()?;
    let cache_control = optional()?;
    let pairs = |raw: &mut &[u8]| -> io::Result<Vec<(String, String)>> {
        let mut count = [0u8; 2];
        raw.read_exact(&mut count)?;
        (0..u16::from_le_bytes(count))
            .map(|_| Ok((read_str(raw)?, read_str(raw)?)))
            .collect()
    };
    let user = pairs(&mut raw)?;
    let kept = if version > WITH_ATTRS {
        pairs(&mut raw)?
    } else {
        Vec::new()
    };
    if !raw.is_empty() {
        return Err(invalid("entry attributes have trailing bytes"));
    }
    Ok(ObjectAttrs {
        content_type,
        content_encoding,
        cache_control,
        user,
        kept,
    })
}

fn read_str(file: &mut impl Read) -> io::Result<String> {
    let mut len = [0u8; 2];
    file.read_exact(&mut len)?;
    let mut buf = vec![0u8; u16::from_le_bytes(len) as usize];
    file.read_exact(&mut buf)?;
    String::from_utf8(buf).map_err(|_| invalid("entry header string is not UTF-8"))
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
        let unsealed = EntryHeader::unsealed(&key, ObjectAttrs::default());
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

    #[test]
    fn etag_and_attributes_round_trip() {
        let ns = Namespace::new("runner-cache").unwrap();
        let key = Key::object(ns, "runner/abc/project/1/default-protected").unwrap();
        let attrs = ObjectAttrs {
            content_type: Some("application/zip".into()),
            content_encoding: None,
            cache_control: Some("no-cache".into()),
            user: vec![("cachekey".into(), "default-protected".into())],
            kept: vec![
                ("content-disposition".into(), "attachment".into()),
                ("expires".into(), "Thu, 01 Jan 2099 00:00:00 GMT".into()),
            ],
        };
        let unsealed = EntryHeader::unsealed(&key, attrs);
        let mut file = Cursor::new(unsealed.encode());
        let sealed = EntryHeader {
            body_len: 0,
            crc32c: 0,
            modified: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            etag: Some("9bb58f26192e4ba00f01e2e7b136bbd8-3".into()),
            ..unsealed
        };
        sealed.seal(&mut file).unwrap();
        assert_eq!(EntryHeader::read_from(&mut file).unwrap(), sealed);
    }

    /// Entries written by the first release (format 1: no ETag, no attributes) are still read.
    #[test]
    fn version_1_headers_are_still_read() {
        let key = Key::gradle("abcdef0123").unwrap();
        let mut v1 = Vec::new();
        v1.extend_from_slice(MAGIC);
        v1.extend_from_slice(&1u16.to_le_bytes());
        v1.extend_from_slice(&((FIXED_V1 + key_len(&key)) as u32).to_le_bytes());
        v1.extend_from_slice(&5u64.to_le_bytes());
        v1.extend_from_slice(&crc32c::crc32c(b"hello").to_le_bytes());
        v1.extend_from_slice(&1_700_000_000_000u64.to_le_bytes());
        put_str(&mut v1, "gradle");
        put_str(&mut v1, "abcdef0123");
        v1.extend_from_slice(b"hello");
        let header = EntryHeader::read_from(&mut Cursor::new(v1)).unwrap();
        assert_eq!(header.key, key);
        assert_eq!(header.body_len, 5);
        assert_eq!(header.header_len, (FIXED_V1 + key_len(&key)) as u64);
        assert_eq!(header.etag, None);
        assert_eq!(header.attrs, ObjectAttrs::default());
        assert_eq!(header.file_len(), header.header_len + 5);
    }

    /// Entries of format 2 (attributes without kept headers) are still read.
    #[test]
    fn version_2_headers_are_still_read() {
        let ns = Namespace::new("runner-cache").unwrap();
        let key = Key::object(ns, "k").unwrap();
        let attrs = ObjectAttrs {
            content_type: Some("application/zip".into()),
            user: vec![("a".into(), "b".into())],
            ..ObjectAttrs::default()
        };
        let header = EntryHeader {
            body_len: 0,
            etag: Some("0123".into()),
            ..EntryHeader::unsealed(&key, attrs)
        };
        // Format 3 ends its attributes with the kept headers' count (0 here): without it, and
        // with the lengths and the version adjusted, it is format 2.
        let mut v2 = header.encode();
        v2.truncate(v2.len() - 2);
        let attrs_len_at = v2.len() - encode_attrs(&header.attrs).len() + 2 - 4;
        let attrs_len = u32::from_le_bytes(v2[attrs_len_at..attrs_len_at + 4].try_into().unwrap());
        v2[attrs_len_at..attrs_len_at + 4].copy_from_slice(&(attrs_len - 2).to_le_bytes());
        v2[4..6].copy_from_slice(&2u16.to_le_bytes());
        let header_len = v2.len() as u32;
        v2[6..10].copy_from_slice(&header_len.to_le_bytes());
        let read = EntryHeader::read_from(&mut Cursor::new(v2.clone())).unwrap();
        assert_eq!(read.attrs, header.attrs);
        assert_eq!(read.etag, header.etag);
        assert_eq!(read.header_len, v2.len() as u64);
    }

    #[test]
    fn damaged_headers_are_refused_not_misread() {
        let key = Key::gradle("abcdef0123").unwrap();
        let sealed = EntryHeader {
            body_len: 1,
            ..EntryHeader::unsealed(&key, ObjectAttrs::default())
        };
        let good = sealed.encode();
        for (at, value) in [(4, 9u8), (6, 1), (FIXED_V1, 200), (good.len() - 3, 7)] {
            let mut bad = good.clone();
            bad[at] = value;
            assert!(
                EntryHeader::read_from(&mut Cursor::new(bad)).is_err(),
                "byte {at} = {value} was accepted"
            );
        }
    }
}
