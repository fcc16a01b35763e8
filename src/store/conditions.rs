//! What a read may ask besides the key: a byte range and preconditions, with S3's semantics
//! (which follow RFC 7232 and RFC 7233 for a single range).
//!
//! Both are decided against an entry's [`ObjectMeta`] alone, so every tier (and the fronts, for
//! what they answer) decides them the same way.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::ObjectMeta;

/// A byte range as a client asked for it (`Range: bytes=...`), before the length is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=first-last` (inclusive), or `bytes=first-` when `last` is `None`.
    From { first: u64, last: Option<u64> },
    /// `bytes=-n`: the last `n` bytes.
    Suffix(u64),
}

/// A range resolved against an object's length: `start..end`, end exclusive, never empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: u64,
    pub end: u64,
}

impl Span {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// The `Content-Range` value for this span of an object of `total` bytes.
    pub fn content_range(&self, total: u64) -> String {
        format!("bytes {}-{}/{total}", self.start, self.end - 1)
    }
}

impl ByteRange {
    /// Parses a `Range` header value. `None` for anything that is not one byte range: S3
    /// serves the whole object then, as RFC 7233 allows for a range it does not support.
    pub fn parse(value: &str) -> Option<ByteRange> {
        let spec = value.trim().strip_prefix("bytes=")?.trim();
        if spec.contains(',') {
            return None;
        }
        let (first, last) = spec.split_once('-')?;
        let number = |s: &str| -> Option<u64> {
            let s = s.trim();
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse().ok())
                .flatten()
        };
        if first.trim().is_empty() {
            return number(last).map(ByteRange::Suffix);
        }
        let first = number(first)?;
        let last = match last.trim() {
            "" => None,
            text => Some(number(text)?),
        };
        if last.is_some_and(|last| last < first) {
            return None;
        }
        Some(ByteRange::From { first, last })
    }

    /// The span of an object of `len` bytes this range selects; `None` when it selects nothing
    /// (answered 416 with `Content-Range: bytes */len`).
    pub fn resolve(self, len: u64) -> Option<Span> {
        let (start, end) = match self {
            ByteRange::From { first, last } => {
                let end = last.map_or(len, |last| last.saturating_add(1).min(len));
                (first, end)
            }
            ByteRange::Suffix(n) => (len.saturating_sub(n), len),
        };
        (start < end).then_some(Span { start, end })
    }
}

/// The conditional headers of a read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preconditions {
    /// `If-Match`: ETags (unquoted) or `*`.
    pub if_match: Option<Vec<String>>,
    /// `If-None-Match`: ETags (unquoted) or `*`.
    pub if_none_match: Option<Vec<String>>,
    pub if_modified_since: Option<SystemTime>,
    pub if_unmodified_since: Option<SystemTime>,
}

/// What the preconditions say about serving an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Serve,
    /// 304 (a read of an object the client has).
    NotModified,
    /// 412.
    PreconditionFailed,
}

impl Preconditions {
    pub fn is_empty(&self) -> bool {
        *self == Preconditions::default()
    }

    /// Parses an ETag list header value: `"a", "b"`, `W/"c"`, or `*`.
    pub fn etag_list(value: &str) -> Vec<String> {
        value
            .split(',')
            .map(|tag| {
                let tag = tag.trim();
                let tag = tag.strip_prefix("W/").unwrap_or(tag);
                tag.trim_matches('"').to_string()
            })
            .filter(|tag| !tag.is_empty())
            .collect()
    }

    /// Decides a read (GET or HEAD) of an existing object, in RFC 7232's order, which is also
    /// S3's: `If-Match` (412), else `If-Unmodified-Since` (412); then `If-None-Match` (304),
    /// else `If-Modified-Since` (304). An object without an ETag matches no ETag but `*`.
    /// Dates compare at whole seconds, the resolution of HTTP dates.
    pub fn evaluate(&self, meta: &ObjectMeta) -> Verdict {
        let matches = |tags: &[String]| {
            tags.iter()
                .any(|tag| tag == "*" || meta.etag.as_deref() == Some(tag.as_str()))
        };
        let modified = whole_seconds(meta.modified);
        if let Some(tags) = &self.if_match {
            if !matches(tags) {
                return Verdict::PreconditionFailed;
            }
        } else if let Some(since) = self.if_unmodified_since {
            if modified > whole_seconds(since) {
                return Verdict::PreconditionFailed;
            }
        }
        if let Some(tags) = &self.if_none_match {
            if matches(tags) {
                return Verdict::NotModified;
            }
        } else if let Some(since) = self.if_modified_since {
            if modified <= whole_seconds(since) {
                return Verdict::NotModified;
            }
        }
        Verdict::Serve
    }
}

fn whole_seconds(time: SystemTime) -> Duration {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    Duration::from_secs(since_epoch.as_secs())
}

/// What a read asks for besides the key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetOptions {
    pub range: Option<ByteRange>,
    pub conditions: Preconditions,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_resolve_as_rfc_7233_says() {
        let r = |s| ByteRange::parse(s);
        assert_eq!(
            r("bytes=0-0").unwrap().resolve(10),
            Some(Span { start: 0, end: 1 })
        );
        assert_eq!(
            r("bytes=2-").unwrap().resolve(10),
            Some(Span { start: 2, end: 10 })
        );
        assert_eq!(
            r("bytes=-3").unwrap().resolve(10),
            Some(Span { start: 7, end: 10 })
        );
        assert_eq!(
            r("bytes=-30").unwrap().resolve(10),
            Some(Span { start: 0, end: 10 })
        );
        assert_eq!(
            r("bytes=5-100").unwrap().resolve(10),
            Some(Span { start: 5, end: 10 })
        );
        assert_eq!(r("bytes=10-").unwrap().resolve(10), None);
        assert_eq!(r("bytes=0-0").unwrap().resolve(0), None);
        assert_eq!(r("bytes=-0").unwrap().resolve(10), None);
        for ignored in [
            "bytes=3-1",
            "bytes=0-1,4-5",
            "items=0-1",
            "bytes=a-b",
            "bytes=-",
            "bytes=+1-2",
        ] {
            assert_eq!(r(ignored), None, "{ignored}");
        }
        let span = r("bytes=0-0").unwrap().resolve(1234).unwrap();
        assert_eq!(span.content_range(1234), "bytes 0-0/1234");
    }

    fn meta(etag: &str, secs: u64) -> ObjectMeta {
        ObjectMeta {
            etag: Some(etag.to_string()),
            ..ObjectMeta::new(
                1,
                UNIX_EPOCH + Duration::from_millis(secs * 1000 + 400),
                None,
            )
        }
    }

    fn at(secs: u64) -> Option<SystemTime> {
        Some(UNIX_EPOCH + Duration::from_secs(secs))
    }

    #[test]
    fn preconditions_follow_s3s_order() {
        let m = meta("abc", 1000);
        let tags = |s: &str| Some(Preconditions::etag_list(s));
        let check = |p: Preconditions| p.evaluate(&m);
        assert_eq!(check(Preconditions::default()), Verdict::Serve);
        assert_eq!(
            check(Preconditions {
                if_none_match: tags("\"abc\""),
                ..Default::default()
            }),
            Verdict::NotModified
        );
        assert_eq!(
            check(Preconditions {
                if_none_match: tags("\"x\", W/\"abc\""),
                ..Default::default()
            }),
            Verdict::NotModified
        );
        assert_eq!(
            check(Preconditions {
                if_none_match: tags("\"x\""),
                ..Default::default()
            }),
            Verdict::Serve
        );
        assert_eq!(
            check(Preconditions {
                if_match: tags("\"x\""),
                ..Default::default()
            }),
            Verdict::PreconditionFailed
        );
        assert_eq!(
            check(Preconditions {
                if_match: tags("*"),
                ..Default::default()
            }),
            Verdict::Serve
        );
        // Same second as the object's date: not modified since (HTTP dates have no fractions).
        assert_eq!(
            check(Preconditions {
                if_modified_since: at(1000),
                ..Default::default()
            }),
            Verdict::NotModified
        );
        assert_eq!(
            check(Preconditions {
                if_modified_since: at(999),
                ..Default::default()
            }),
            Verdict::Serve
        );
        assert_eq!(
            check(Preconditions {
                if_unmodified_since: at(999),
                ..Default::default()
            }),
            Verdict::PreconditionFailed
        );
        assert_eq!(
            check(Preconditions {
                if_unmodified_since: at(1000),
                ..Default::default()
            }),
            Verdict::Serve
        );
        // If-None-Match decides over If-Modified-Since, If-Match over If-Unmodified-Since.
        assert_eq!(
            check(Preconditions {
                if_none_match: tags("\"abc\""),
                if_modified_since: at(1),
                ..Default::default()
            }),
            Verdict::NotModified
        );
        assert_eq!(
            check(Preconditions {
                if_none_match: tags("\"x\""),
                if_modified_since: at(5000),
                ..Default::default()
            }),
            Verdict::Serve
        );
        assert_eq!(
            check(Preconditions {
                if_match: tags("\"abc\""),
                if_unmodified_since: at(1),
                ..Default::default()
            }),
            Verdict::Serve
        );
        // 412 goes before 304.
        assert_eq!(
            check(Preconditions {
                if_match: tags("\"x\""),
                if_none_match: tags("\"abc\""),
                ..Default::default()
            }),
            Verdict::PreconditionFailed
        );
        // An object without an ETag matches only `*`.
        let untagged = ObjectMeta::new(1, UNIX_EPOCH, None);
        assert_eq!(
            Preconditions {
                if_match: tags("\"\""),
                ..Default::default()
            }
            .evaluate(&untagged),
            Verdict::PreconditionFailed
        );
        assert_eq!(
            Preconditions {
                if_none_match: tags("*"),
                ..Default::default()
            }
            .evaluate(&untagged),
            Verdict::NotModified
        );
    }
}
