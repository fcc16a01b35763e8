//! Which answers the node may keep a copy of, and which requests it may serve from one. A copy
//! is the object as S3 stores it, served to whoever S3 answers 304 for; so it may be made only
//! from an answer that is exactly that object, and served only where S3's 304 is all it takes
//! to be allowed to read the bytes:
//!
//! - Query parameters that change the answer (`response-content-type`, `partNumber`,
//!   `versionId`, and any S3 may add later) make it no copy of the object as stored, and a
//!   request that names them wants something no copy holds. They are told from the decoded
//!   parameter names, as S3 reads them (`response%2Dcontent-encoding` is
//!   `response-content-encoding` to S3), and by an allowlist: only the parameters of a presigned
//!   URL's signature are known to leave the answer as it is.
//! - SSE-C: reading the object needs the customer's key, which S3 checks on a 200 but not
//!   necessarily before a 304 (SeaweedFS answers a keyless `If-None-Match` with 304). Neither
//!   a request carrying `x-amz-server-side-encryption-customer-*` nor an answer saying SSE-C
//!   ever makes or uses a copy.
//! - SSE-KMS: reading needs `kms:Decrypt` on the key as well as `s3:GetObject`, and a 304 may
//!   be S3's answer to a principal with only the latter. Such objects are kept only where the
//!   forward entry says so (`cache_kms`), and a copy remembers it was one (see [`StoredEtag`]),
//!   so that it is not served once the entry no longer says so.

use http::HeaderMap;

/// The query parameters that leave a GetObject's answer as it is: those of a presigned URL's
/// signature (SigV4 and SigV2) and the SDKs' `x-id`. Compared ignoring case.
const NEUTRAL_PARAMS: [&str; 13] = [
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
    "X-Amz-Content-Sha256",
    "X-Amz-User-Agent",
    "x-id",
    "AWSAccessKeyId",
    "Signature",
    "Expires",
];

/// The request headers of SSE-C (`-algorithm`, `-key`, `-key-MD5`).
const CUSTOMER_KEY_PREFIX: &str = "x-amz-server-side-encryption-customer-";

/// Whether any of the (decoded) query parameters may change the answer, so that it is no
/// copy of the object as stored.
pub(super) fn changes_the_answer(query: &[(String, String)]) -> bool {
    query.iter().any(|(name, _)| {
        !NEUTRAL_PARAMS
            .iter()
            .any(|neutral| neutral.eq_ignore_ascii_case(name))
    })
}

/// Whether the headers carry SSE-C's (a request giving a customer key, or an answer saying the
/// object is encrypted with one).
pub(super) fn names_customer_key(headers: &HeaderMap) -> bool {
    headers
        .keys()
        .any(|name| name.as_str().starts_with(CUSTOMER_KEY_PREFIX))
}

/// What S3's answer says about how the object is encrypted, as far as a copy is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Sealed {
    /// Not encrypted, or with S3's own keys (SSE-S3, `AES256`): whoever S3 lets read the
    /// object may read the copy.
    Open,
    /// SSE-KMS (`aws:kms`, `aws:kms:dsse`, as S3 said it): reading also takes the KMS key.
    Kms(String),
    /// SSE-C, or an encryption this node does not know: never kept, never served.
    Closed,
}

impl Sealed {
    /// From the headers of S3's answer (a 200, or a 304 that says).
    pub fn of_answer(headers: &HeaderMap) -> Sealed {
        if names_customer_key(headers) {
            return Sealed::Closed;
        }
        let Some(value) = headers.get("x-amz-server-side-encryption") else {
            return Sealed::Open;
        };
        let Ok(value) = value.to_str() else {
            return Sealed::Closed;
        };
        let value = value.trim().to_ascii_lowercase();
        match value.as_str() {
            "aes256" => Sealed::Open,
            "aws:kms" | "aws:kms:dsse" => Sealed::Kms(value),
            _ => Sealed::Closed,
        }
    }

    /// Whether a copy of such an object may be kept and served, with `cache_kms` the forward
    /// entry's choice for SSE-KMS.
    pub fn may_keep(&self, cache_kms: bool) -> bool {
        match self {
            Sealed::Open => true,
            Sealed::Kms(_) => cache_kms,
            Sealed::Closed => false,
        }
    }
}

/// A copy's ETag as the store keeps it: S3's ETag, followed for an SSE-KMS object by a space
/// and S3's `x-amz-server-side-encryption` value. An ETag never contains a space (RFC 9110
/// `etagc`), so the two cannot be confused; a copy made before the entry stopped caching
/// SSE-KMS objects is thereby still known as one (the disk tier outlives restarts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StoredEtag {
    /// S3's ETag, unquoted, as `If-None-Match` asks about it.
    pub etag: String,
    /// The SSE-KMS algorithm the object was stored with, if it was.
    pub kms: Option<String>,
}

impl StoredEtag {
    /// For a copy of S3's answer with `etag`, sealed as `sealed` (which may be kept).
    pub fn new(etag: String, sealed: &Sealed) -> StoredEtag {
        let kms = match sealed {
            Sealed::Kms(algorithm) => Some(algorithm.clone()),
            Sealed::Open | Sealed::Closed => None,
        };
        StoredEtag { etag, kms }
    }

    /// What the store keeps.
    pub fn to_stored(&self) -> String {
        match &self.kms {
            Some(algorithm) => format!("{} {algorithm}", self.etag),
            None => self.etag.clone(),
        }
    }

    /// Reads what the store kept.
    pub fn parse(stored: &str) -> StoredEtag {
        match stored.rsplit_once(' ') {
            Some((etag, algorithm)) => StoredEtag {
                etag: etag.to_string(),
                kms: Some(algorithm.to_string()),
            },
            None => StoredEtag {
                etag: stored.to_string(),
                kms: None,
            },
        }
    }

    /// Whether the copy may be served under the entry's `cache_kms`.
    pub fn usable(&self, cache_kms: bool) -> bool {
        self.kms.is_none() || cache_kms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    use super::super::test_headers as headers;

    #[test]
    fn only_a_signatures_parameters_leave_the_answer_as_stored() {
        let presigned = query(&[
            ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
            ("X-Amz-Credential", "AK/20260101/us-east-1/s3/aws4_request"),
            ("X-Amz-Date", "20260101T000000Z"),
            ("X-Amz-Expires", "600"),
            ("X-Amz-SignedHeaders", "host"),
            ("X-Amz-Security-Token", "token"),
            ("X-Amz-Signature", "ab"),
            ("x-id", "GetObject"),
        ]);
        assert!(!changes_the_answer(&presigned));
        assert!(!changes_the_answer(&query(&[
            ("AWSAccessKeyId", "AK"),
            ("Expires", "1"),
            ("Signature", "x")
        ])));
        assert!(!changes_the_answer(&[]));
        // The names as the router decoded them: `response%2Dcontent-encoding` arrives here as
        // `response-content-encoding`.
        for name in [
            "response-content-encoding",
            "response-content-type",
            "response-cache-control",
            "partNumber",
            "versionId",
            "Response-Content-Type",
            "x-amz-server-side-encryption-customer-key",
            "",
            "something-s3-adds-later",
        ] {
            let mut with = presigned.clone();
            with.push((name.to_string(), "v".to_string()));
            assert!(changes_the_answer(&with), "{name:?}");
        }
    }

    #[test]
    fn customer_keys_close_kms_needs_the_entrys_consent_and_s3_keys_are_open() {
        assert_eq!(Sealed::of_answer(&headers(&[])), Sealed::Open);
        assert_eq!(
            Sealed::of_answer(&headers(&[("x-amz-server-side-encryption", "AES256")])),
            Sealed::Open
        );
        let kms = Sealed::of_answer(&headers(&[
            ("x-amz-server-side-encryption", "aws:kms"),
            (
                "x-amz-server-side-encryption-aws-kms-key-id",
                "arn:aws:kms:k",
            ),
        ]));
        assert_eq!(kms, Sealed::Kms("aws:kms".into()));
        assert!(!kms.may_keep(false));
        assert!(kms.may_keep(true));
        assert_eq!(
            Sealed::of_answer(&headers(&[(
                "x-amz-server-side-encryption",
                "aws:kms:dsse"
            )])),
            Sealed::Kms("aws:kms:dsse".into())
        );
        let customer = Sealed::of_answer(&headers(&[
            ("x-amz-server-side-encryption-customer-algorithm", "AES256"),
            (
                "x-amz-server-side-encryption-customer-key-md5",
                "p+dx1GFfXuA1yK8AoMpQkA==",
            ),
        ]));
        assert_eq!(customer, Sealed::Closed);
        assert!(!customer.may_keep(true));
        assert_eq!(
            Sealed::of_answer(&headers(&[("x-amz-server-side-encryption", "aws:fsx")])),
            Sealed::Closed
        );
        assert!(Sealed::Open.may_keep(false));
        assert!(names_customer_key(&headers(&[(
            "x-amz-server-side-encryption-customer-key",
            "a2V5"
        )])));
        assert!(!names_customer_key(&headers(&[(
            "x-amz-server-side-encryption",
            "aws:kms"
        )])));
    }

    #[test]
    fn a_kms_copy_is_remembered_as_one_in_its_stored_etag() {
        let open = StoredEtag::new("9bb58f26192e4ba00f01e2e7b136bbd8-3".into(), &Sealed::Open);
        assert_eq!(open.to_stored(), "9bb58f26192e4ba00f01e2e7b136bbd8-3");
        assert_eq!(StoredEtag::parse(&open.to_stored()), open);
        assert!(open.usable(false));

        let kms = StoredEtag::new(
            "9bb58f26192e4ba00f01e2e7b136bbd8-3".into(),
            &Sealed::Kms("aws:kms:dsse".into()),
        );
        let stored = kms.to_stored();
        assert_eq!(stored, "9bb58f26192e4ba00f01e2e7b136bbd8-3 aws:kms:dsse");
        // Fits the entry header's 63 bytes, with a multipart ETag's longest part count.
        assert!("9bb58f26192e4ba00f01e2e7b136bbd8-10000 aws:kms:dsse".len() <= 63);
        let read = StoredEtag::parse(&stored);
        assert_eq!(read.etag, "9bb58f26192e4ba00f01e2e7b136bbd8-3");
        assert_eq!(read, kms);
        assert!(!read.usable(false));
        assert!(read.usable(true));
    }
}
