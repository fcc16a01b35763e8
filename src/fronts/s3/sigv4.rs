//! AWS Signature Version 4 as S3 checks it: header auth (`Authorization: AWS4-HMAC-SHA256 …`)
//! and presigned URLs (`X-Amz-Signature` in the query).
//!
//! [`verify`] rebuilds the canonical request from what arrived, signs it with the secret of the
//! access key it names and compares in constant time. It returns what the body still needs
//! checked ([`Payload`]): nothing, a sha256 to compare at the end, or the key and seed signature
//! that chain the signatures of an `aws-chunked` body (see [`super::chunked`]).
//!
//! S3's canonical URI is the path URI-encoded once (the path as sent is decoded, then encoded with
//! AWS's rules, `/` kept, no normalisation of `.`/`..` or `//`); the canonical query has every
//! parameter but `X-Amz-Signature`, encoded the same way and sorted.
//!
//! The path, the query and the `host` that are checked come from the request's
//! [`ParsedRequest`], the same value routing reads: a signature covers the bucket and key the
//! request is then routed to.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, Method};
use percent_encoding::{percent_decode_str, percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::{S3Error, S3ErrorCode};
use super::request::ParsedRequest;

/// The longest a presigned URL may be valid: seven days, as S3 allows.
pub const MAX_PRESIGNED_EXPIRES: Duration = Duration::from_secs(604_800);
/// How far a header-signed request's `x-amz-date` may be from our clock (S3: 15 minutes); also
/// how far in the future a presigned URL's `X-Amz-Date` may lie.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);
/// Longest `Authorization` header we parse; real ones are a few hundred bytes.
const MAX_AUTHORIZATION_LEN: usize = 4096;
/// Most signed headers we accept in one request; SDKs sign a dozen at most.
const MAX_SIGNED_HEADERS: usize = 64;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
pub(crate) const EMPTY_SHA256_HEX: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// AWS's URI encoding: everything but `A-Z a-z 0-9 - _ . ~` is `%XX` (uppercase hex).
const ENCODE_ALL: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
/// The same for paths, where `/` stays as it is.
pub(crate) const ENCODE_PATH: &AsciiSet = &ENCODE_ALL.remove(b'/');

/// A secret access key. Its `Debug` does not show it. Clones share the signing key last
/// derived from it ([`Self::signing_key`]).
#[derive(Clone)]
pub struct SecretKey(Arc<Secret>);

struct Secret {
    value: String,
    /// The signing key of the last date, region and service asked for: a client signs with the
    /// same scope all day, and deriving it costs four HMACs per request.
    last_derived: Mutex<Option<DerivedKey>>,
}

struct DerivedKey {
    scope: (String, String, String),
    key: SigningKey,
}

impl SecretKey {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(Arc::new(Secret {
            value: secret.into(),
            last_derived: Mutex::new(None),
        }))
    }

    /// The signing key for `date`, `region` and `service`: [`SigningKey::derive`], remembered
    /// for the next request of the same scope.
    pub fn signing_key(&self, date: &str, region: &str, service: &str) -> SigningKey {
        let mut last = self
            .0
            .last_derived
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(derived) = last.as_ref() {
            let (d, r, s) = &derived.scope;
            if d == date && r == region && s == service {
                return derived.key.clone();
            }
        }
        let key = SigningKey::derive(self, date, region, service);
        *last = Some(DerivedKey {
            scope: (date.to_owned(), region.to_owned(), service.to_owned()),
            key: key.clone(),
        });
        key
    }
}

impl PartialEq for SecretKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.value == other.0.value
    }
}

impl Eq for SecretKey {}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// Finds the secret of an access key and what the front should know about its holder (which
/// buckets it may read or write). Closures `Fn(&str) -> Option<(SecretKey, P)>` implement it.
pub trait CredentialLookup {
    type Principal;
    fn lookup(&self, access_key: &str) -> Option<(SecretKey, Self::Principal)>;
}

impl<P, F> CredentialLookup for F
where
    F: Fn(&str) -> Option<(SecretKey, P)>,
{
    type Principal = P;
    fn lookup(&self, access_key: &str) -> Option<(SecretKey, P)> {
        self(access_key)
    }
}

/// The key derived from a secret for one date, region and service: what signs requests and
/// chunks. Its `Debug` does not show it.
#[derive(Clone)]
pub struct SigningKey([u8; 32]);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

impl SigningKey {
    /// `HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")`.
    pub fn derive(secret: &SecretKey, date: &str, region: &str, service: &str) -> Self {
        let k_date = hmac_sha256(
            format!("AWS4{}", secret.0.value).as_bytes(),
            date.as_bytes(),
        );
        let k_region = hmac_sha256(&k_date, region.as_bytes());
        let k_service = hmac_sha256(&k_region, service.as_bytes());
        Self(hmac_sha256(&k_service, b"aws4_request"))
    }

    pub fn sign(&self, string_to_sign: &[u8]) -> [u8; 32] {
        hmac_sha256(&self.0, string_to_sign)
    }
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// What an `aws-chunked` body needs to check its chunk signatures: each chunk's signature signs
/// the previous one (the first chunk's, this seed), the chunk's sha256, the date and the scope.
#[derive(Debug, Clone)]
pub struct ChunkSigning {
    pub seed_signature: [u8; 32],
    pub key: SigningKey,
    /// `x-amz-date` of the request, `YYYYMMDDTHHMMSSZ`.
    pub amz_date: String,
    /// `<date>/<region>/<service>/aws4_request`.
    pub scope: String,
}

impl ChunkSigning {
    /// The signature a chunk whose data hashes to `chunk_sha256` must carry after `previous`.
    pub fn chunk_signature(&self, previous: &[u8; 32], chunk_sha256: &[u8; 32]) -> [u8; 32] {
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256-PAYLOAD\n{}\n{}\n{}\n{EMPTY_SHA256_HEX}\n{}",
            self.amz_date,
            self.scope,
            hex::encode(previous),
            hex::encode(chunk_sha256)
        );
        self.key.sign(string_to_sign.as_bytes())
    }

    /// The signature of the trailer block (`name:value\n` lines) after the final chunk's
    /// signature `previous`.
    pub fn trailer_signature(&self, previous: &[u8; 32], trailers_sha256: &[u8; 32]) -> [u8; 32] {
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256-TRAILER\n{}\n{}\n{}\n{}",
            self.amz_date,
            self.scope,
            hex::encode(previous),
            hex::encode(trailers_sha256)
        );
        self.key.sign(string_to_sign.as_bytes())
    }
}

/// How the request body is protected, from `x-amz-content-sha256`.
#[derive(Debug, Clone)]
pub enum Payload {
    /// `UNSIGNED-PAYLOAD`, and every presigned URL without a payload hash: nothing to check.
    Unsigned,
    /// A signed sha256 of the whole body: compare it before the write becomes visible.
    Sha256([u8; 32]),
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD` (`trailer: false`) or `…-PAYLOAD-TRAILER`: an
    /// `aws-chunked` body with signed chunks (and a signed trailer).
    SignedChunks {
        signing: ChunkSigning,
        trailer: bool,
    },
    /// `STREAMING-UNSIGNED-PAYLOAD-TRAILER`: an `aws-chunked` body with no chunk signatures and a
    /// checksum trailer.
    UnsignedChunksWithTrailer,
}

/// Which of the two SigV4 forms the request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    Header,
    Presigned,
    /// No signature, on a bucket that lets anyone read its objects (the front decides that;
    /// [`verify`] never returns it).
    Anonymous,
}

/// A request whose signature checked out.
#[derive(Debug, Clone)]
pub struct Verified<P> {
    pub principal: P,
    pub access_key: String,
    pub kind: AuthKind,
    /// The region of the credential scope (what the client thinks the bucket's region is).
    pub region: String,
    /// The signed header names, lowercase, as the client listed them.
    pub signed_headers: Vec<String>,
    pub payload: Payload,
}

impl<P> Verified<P> {
    /// Whether `name` (any case) was covered by the signature: the front should refuse to act on
    /// headers that change what a request does (`x-amz-copy-source`) unless they were.
    pub fn is_signed(&self, name: &str) -> bool {
        self.signed_headers
            .iter()
            .any(|signed| signed.eq_ignore_ascii_case(name))
    }
}

/// Why a request's signature was not accepted; each maps to the S3 error S3 would answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the request carries no signature")]
    Anonymous,
    #[error("unsupported authorization: {0}")]
    Unsupported(&'static str),
    #[error("both an Authorization header and X-Amz-Algorithm")]
    BothMechanisms,
    #[error("malformed Authorization header: {0}")]
    HeaderMalformed(String),
    #[error("malformed presigned query: {0}")]
    QueryMalformed(String),
    #[error("missing header {0}")]
    MissingSecurityHeader(&'static str),
    #[error("invalid x-amz-content-sha256")]
    InvalidPayloadHash,
    #[error("temporary credentials (X-Amz-Security-Token)")]
    TemporaryCredentials,
    #[error("unknown access key")]
    InvalidAccessKeyId,
    #[error("signature does not match")]
    SignatureDoesNotMatch,
    #[error("request time too far from the server's")]
    RequestTimeTooSkewed,
    #[error("presigned URL expired")]
    Expired,
    /// `X-Amz-Expires` that no presigned URL may carry: not a positive number of seconds, or
    /// more than a week.
    #[error("bad X-Amz-Expires: {0}")]
    BadExpiry(&'static str),
    #[error("presigned URL dated in the future")]
    NotYetValid,
}

impl From<AuthError> for S3Error {
    fn from(err: AuthError) -> Self {
        use S3ErrorCode as C;
        match err {
            AuthError::Anonymous => S3Error::new(C::AccessDenied, "Access Denied"),
            AuthError::Unsupported(what) => S3Error::new(
                C::InvalidRequest,
                format!("{what}: this endpoint only accepts AWS Signature Version 4 (AWS4-HMAC-SHA256)."),
            ),
            AuthError::BothMechanisms => S3Error::new(
                C::InvalidArgument,
                "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter or the Authorization header should be specified",
            ),
            AuthError::HeaderMalformed(why) => S3Error::new(
                C::AuthorizationHeaderMalformed,
                format!("The authorization header is malformed; {why}"),
            ),
            AuthError::QueryMalformed(why) => {
                S3Error::new(C::AuthorizationQueryParametersError, why)
            }
            AuthError::MissingSecurityHeader(name) => S3Error::new(
                C::MissingSecurityHeader,
                format!("Your request was missing a required header: {name}"),
            ),
            AuthError::InvalidPayloadHash => S3Error::new(
                C::InvalidArgument,
                "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER, STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER or a valid sha256 value.",
            ),
            AuthError::TemporaryCredentials => S3Error::new(
                C::InvalidToken,
                "This endpoint checks signatures itself and cannot verify temporary credentials (X-Amz-Security-Token). Configure the client with an access key of this endpoint's [[s3_api.credentials]] (GitLab Runner: AuthenticationType = \"access-key\"), or use the forward mode for this bucket.",
            ),
            AuthError::InvalidAccessKeyId => S3Error::new(
                C::InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records.",
            ),
            AuthError::SignatureDoesNotMatch => S3Error::new(
                C::SignatureDoesNotMatch,
                "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
            ),
            AuthError::RequestTimeTooSkewed => S3Error::new(
                C::RequestTimeTooSkewed,
                "The difference between the request time and the current time is too large.",
            ),
            AuthError::Expired => S3Error::new(C::AccessDenied, "Request has expired"),
            AuthError::BadExpiry(why) => S3Error::new(C::AccessDenied, format!("X-Amz-Expires {why}")),
            AuthError::NotYetValid => S3Error::new(C::AccessDenied, "Request is not valid yet"),
        }
    }
}

/// Checks the SigV4 signature of a request (header or presigned), as of `now`.
pub fn verify<C: CredentialLookup>(
    method: &Method,
    request: &ParsedRequest,
    headers: &HeaderMap,
    now: SystemTime,
    credentials: &C,
) -> Result<Verified<C::Principal>, AuthError> {
    let query = request.query();
    let presigned = query.iter().any(|(name, _)| name == "X-Amz-Algorithm");
    let authorization = headers.get(http::header::AUTHORIZATION);
    match (authorization, presigned) {
        (Some(_), true) => Err(AuthError::BothMechanisms),
        (Some(value), false) => verify_header(method, request, headers, value, now, credentials),
        (None, true) => verify_presigned(method, request, headers, now, credentials),
        (None, false) if query.iter().any(|(name, _)| name == "Signature") => {
            Err(AuthError::Unsupported("Signature Version 2 query auth"))
        }
        (None, false) => Err(AuthError::Anonymous),
    }
}

/// The parts of `Credential=AK/20130524/us-east-1/s3/aws4_request`.
#[derive(Debug, PartialEq, Eq)]
struct CredentialScope<'a> {
    access_key: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
}

impl<'a> CredentialScope<'a> {
    fn parse(value: &'a str) -> Result<Self, String> {
        let parts: Vec<&str> = value.split('/').collect();
        let [access_key, date, region, service, terminator] = parts[..] else {
            return Err(format!(
                "the Credential '{value}' is not <key>/<date>/<region>/s3/aws4_request"
            ));
        };
        if access_key.is_empty() || region.is_empty() {
            return Err("the Credential has an empty access key or region".into());
        }
        if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("the Credential date '{date}' is not YYYYMMDD"));
        }
        if service != "s3" {
            return Err(format!("the Credential service '{service}' is not s3"));
        }
        if terminator != "aws4_request" {
            return Err("the Credential does not end in aws4_request".into());
        }
        Ok(Self {
            access_key,
            date,
            region,
            service,
        })
    }

    fn scope(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.date, self.region, self.service
        )
    }
}

/// The three fields of an `Authorization: AWS4-HMAC-SHA256 …` header.
#[derive(Debug, PartialEq, Eq)]
pub struct AuthorizationHeader<'a> {
    credential: CredentialScope<'a>,
    signed_headers: Vec<&'a str>,
    signature: [u8; 32],
}

/// Read-only views of the parsed fields, for the `sigv4_header` fuzz target's checks.
impl<'a> AuthorizationHeader<'a> {
    #[doc(hidden)]
    pub fn access_key(&self) -> &'a str {
        self.credential.access_key
    }

    #[doc(hidden)]
    pub fn scope(&self) -> String {
        self.credential.scope()
    }

    #[doc(hidden)]
    pub fn signed_headers(&self) -> &[&'a str] {
        &self.signed_headers
    }

    #[doc(hidden)]
    pub fn signature(&self) -> [u8; 32] {
        self.signature
    }
}

/// Parses an `Authorization` header value. Public for the `sigv4_header` fuzz target; the front
/// calls [`verify`].
#[doc(hidden)]
pub fn parse_authorization(value: &str) -> Result<AuthorizationHeader<'_>, AuthError> {
    if value.len() > MAX_AUTHORIZATION_LEN {
        return Err(AuthError::HeaderMalformed("it is too long".into()));
    }
    let Some(rest) = value.strip_prefix(ALGORITHM) else {
        if value.starts_with("AWS ") {
            return Err(AuthError::Unsupported("Signature Version 2"));
        }
        return Err(AuthError::Unsupported(
            "an authorization scheme other than AWS4-HMAC-SHA256",
        ));
    };
    if !rest.starts_with(' ') {
        return Err(AuthError::HeaderMalformed(
            "no space after the algorithm".into(),
        ));
    }
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for field in rest.split(',') {
        let field = field.trim();
        let Some((name, value)) = field.split_once('=') else {
            return Err(AuthError::HeaderMalformed(format!(
                "'{field}' is not name=value"
            )));
        };
        let slot = match name {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => {
                return Err(AuthError::HeaderMalformed(format!(
                    "unknown field '{name}'"
                )));
            }
        };
        if slot.replace(value).is_some() {
            return Err(AuthError::HeaderMalformed(format!(
                "'{name}' appears twice"
            )));
        }
    }
    let missing = |name: &str| AuthError::HeaderMalformed(format!("'{name}' is missing"));
    let credential = CredentialScope::parse(credential.ok_or_else(|| missing("Credential"))?)
        .map_err(AuthError::HeaderMalformed)?;
    let signed_headers =
        parse_signed_headers(signed_headers.ok_or_else(|| missing("SignedHeaders"))?)
            .map_err(AuthError::HeaderMalformed)?;
    let signature = parse_signature(signature.ok_or_else(|| missing("Signature"))?)
        .ok_or_else(|| AuthError::HeaderMalformed("the Signature is not 64 hex digits".into()))?;
    Ok(AuthorizationHeader {
        credential,
        signed_headers,
        signature,
    })
}

fn parse_signed_headers(value: &str) -> Result<Vec<&str>, String> {
    let names: Vec<&str> = value.split(';').collect();
    if names.len() > MAX_SIGNED_HEADERS {
        return Err(format!("more than {MAX_SIGNED_HEADERS} signed headers"));
    }
    for name in &names {
        // Any lowercase HTTP header name: clients sign every header they send, and metadata
        // names such as `x-amz-meta-build.id` are tokens with more than letters, digits and `-`.
        let valid = !name.is_empty()
            && name.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
            });
        if !valid {
            return Err(format!(
                "signed header name '{name}' is not a lowercase header name"
            ));
        }
    }
    if !names.contains(&"host") {
        return Err("the host header must be signed".into());
    }
    Ok(names)
}

fn parse_signature(value: &str) -> Option<[u8; 32]> {
    let mut signature = [0u8; 32];
    (value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hex::decode_to_slice(value, &mut signature).ok())??;
    Some(signature)
}

/// Parses `YYYYMMDDTHHMMSSZ`.
fn parse_amz_date(value: &str) -> Option<SystemTime> {
    let bytes = value.as_bytes();
    if bytes.len() != 16
        || bytes[8] != b'T'
        || bytes[15] != b'Z'
        || !bytes[..8]
            .iter()
            .chain(&bytes[9..15])
            .all(u8::is_ascii_digit)
    {
        return None;
    }
    let number = |range: std::ops::Range<usize>| value[range].parse::<u32>().ok();
    let month = time::Month::try_from(u8::try_from(number(4..6)?).ok()?).ok()?;
    let date = time::Date::from_calendar_date(
        i32::try_from(number(0..4)?).ok()?,
        month,
        u8::try_from(number(6..8)?).ok()?,
    )
    .ok()?;
    let time = time::Time::from_hms(
        u8::try_from(number(9..11)?).ok()?,
        u8::try_from(number(11..13)?).ok()?,
        u8::try_from(number(13..15)?).ok()?,
    )
    .ok()?;
    let seconds = time::PrimitiveDateTime::new(date, time)
        .assume_utc()
        .unix_timestamp();
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).ok()?))
}

/// `a` is more than `limit` after `b`.
fn later_by_more_than(a: SystemTime, b: SystemTime, limit: Duration) -> bool {
    a.duration_since(b).is_ok_and(|ahead| ahead > limit)
}

/// The payload hash of `x-amz-content-sha256` and what it asks of the body.
enum PayloadHash {
    Unsigned,
    Sha256([u8; 32]),
    SignedChunks { trailer: bool },
    UnsignedChunksWithTrailer,
}

fn classify_payload_hash(value: &str) -> Result<PayloadHash, AuthError> {
    Ok(match value {
        "UNSIGNED-PAYLOAD" => PayloadHash::Unsigned,
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" => PayloadHash::SignedChunks { trailer: false },
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER" => PayloadHash::SignedChunks { trailer: true },
        "STREAMING-UNSIGNED-PAYLOAD-TRAILER" => PayloadHash::UnsignedChunksWithTrailer,
        "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD"
        | "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER" => {
            return Err(AuthError::Unsupported("Signature Version 4A (ECDSA)"))
        }
        hex_sha => {
            PayloadHash::Sha256(parse_signature(hex_sha).ok_or(AuthError::InvalidPayloadHash)?)
        }
    })
}

fn verify_header<C: CredentialLookup>(
    method: &Method,
    request: &ParsedRequest,
    headers: &HeaderMap,
    authorization: &http::HeaderValue,
    now: SystemTime,
    credentials: &C,
) -> Result<Verified<C::Principal>, AuthError> {
    if headers.contains_key("x-amz-security-token") {
        return Err(AuthError::TemporaryCredentials);
    }
    let authorization = authorization
        .to_str()
        .map_err(|_| AuthError::HeaderMalformed("it is not ASCII".into()))?;
    let auth = parse_authorization(authorization)?;
    let amz_date =
        header_str(headers, "x-amz-date").ok_or(AuthError::MissingSecurityHeader("x-amz-date"))?;
    let signed_at = parse_amz_date(amz_date).ok_or_else(|| {
        AuthError::HeaderMalformed(format!("x-amz-date '{amz_date}' is not YYYYMMDDTHHMMSSZ"))
    })?;
    if !amz_date.starts_with(auth.credential.date) {
        return Err(AuthError::HeaderMalformed(
            "the Credential date is not the date of x-amz-date".into(),
        ));
    }
    let payload_hash = header_str(headers, "x-amz-content-sha256")
        .ok_or(AuthError::MissingSecurityHeader("x-amz-content-sha256"))?;
    let payload = classify_payload_hash(payload_hash)?;
    if later_by_more_than(now, signed_at, MAX_CLOCK_SKEW)
        || later_by_more_than(signed_at, now, MAX_CLOCK_SKEW)
    {
        return Err(AuthError::RequestTimeTooSkewed);
    }
    let (secret, principal) = credentials
        .lookup(auth.credential.access_key)
        .ok_or(AuthError::InvalidAccessKeyId)?;
    let canonical = canonical_request(method, request, headers, &auth.signed_headers, payload_hash);
    let scope = auth.credential.scope();
    let key = secret.signing_key(
        auth.credential.date,
        auth.credential.region,
        auth.credential.service,
    );
    check_signature(&key, amz_date, &scope, &canonical, &auth.signature)?;
    let payload = match payload {
        PayloadHash::Unsigned => Payload::Unsigned,
        PayloadHash::Sha256(sha) => Payload::Sha256(sha),
        PayloadHash::SignedChunks { trailer } => Payload::SignedChunks {
            signing: ChunkSigning {
                seed_signature: auth.signature,
                key,
                amz_date: amz_date.to_owned(),
                scope,
            },
            trailer,
        },
        PayloadHash::UnsignedChunksWithTrailer => Payload::UnsignedChunksWithTrailer,
    };
    Ok(Verified {
        principal,
        access_key: auth.credential.access_key.to_owned(),
        kind: AuthKind::Header,
        region: auth.credential.region.to_owned(),
        signed_headers: auth
            .signed_headers
            .iter()
            .map(|name| (*name).to_owned())
            .collect(),
        payload,
    })
}

fn verify_presigned<C: CredentialLookup>(
    method: &Method,
    request: &ParsedRequest,
    headers: &HeaderMap,
    now: SystemTime,
    credentials: &C,
) -> Result<Verified<C::Principal>, AuthError> {
    let param = |name: &str| -> Result<Option<String>, AuthError> {
        let mut values = request.query().iter().filter(|(n, _)| n == name);
        let Some((_, value)) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(AuthError::QueryMalformed(format!(
                "{name} appears more than once"
            )));
        }
        Ok(Some(value.clone()))
    };
    if param("X-Amz-Security-Token")?.is_some() || headers.contains_key("x-amz-security-token") {
        return Err(AuthError::TemporaryCredentials);
    }
    let required = |name: &str| {
        param(name)?.ok_or_else(|| {
            AuthError::QueryMalformed(format!(
                "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters; {name} is missing."
            ))
        })
    };
    if required("X-Amz-Algorithm")? != ALGORITHM {
        return Err(AuthError::QueryMalformed(
            "X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"".into(),
        ));
    }
    let credential_param = required("X-Amz-Credential")?;
    let credential =
        CredentialScope::parse(&credential_param).map_err(AuthError::QueryMalformed)?;
    let amz_date = required("X-Amz-Date")?;
    let signed_at = parse_amz_date(&amz_date).ok_or_else(|| {
        AuthError::QueryMalformed(
            "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"".into(),
        )
    })?;
    if !amz_date.starts_with(credential.date) {
        return Err(AuthError::QueryMalformed(
            "the X-Amz-Credential date is not the date of X-Amz-Date".into(),
        ));
    }
    let expires = required("X-Amz-Expires")?;
    // As S3 does (and its conformance suites expect): an expiry no URL may have is refused
    // as access denied, with the reason, like an expired one.
    let expires = match expires.parse::<i64>() {
        Ok(secs) if secs > 0 => Duration::from_secs(secs as u64),
        Ok(_) => return Err(AuthError::BadExpiry("must be a positive number of seconds")),
        Err(_) => {
            return Err(AuthError::QueryMalformed(
                "X-Amz-Expires should be a number of seconds".into(),
            ))
        }
    };
    if expires > MAX_PRESIGNED_EXPIRES {
        return Err(AuthError::BadExpiry(
            "must be at most a week (604800 seconds)",
        ));
    }
    let signed_headers_param = required("X-Amz-SignedHeaders")?;
    let signed_headers =
        parse_signed_headers(&signed_headers_param).map_err(AuthError::QueryMalformed)?;
    let signature = parse_signature(&required("X-Amz-Signature")?)
        .ok_or_else(|| AuthError::QueryMalformed("X-Amz-Signature is not 64 hex digits".into()))?;
    // A presigned URL's body is unsigned unless the signer put a hash in the (signed) query.
    let payload_hash = param("X-Amz-Content-Sha256")?.unwrap_or_else(|| "UNSIGNED-PAYLOAD".into());
    let payload = match classify_payload_hash(&payload_hash)? {
        PayloadHash::Unsigned => Payload::Unsigned,
        PayloadHash::Sha256(sha) => Payload::Sha256(sha),
        PayloadHash::SignedChunks { .. } | PayloadHash::UnsignedChunksWithTrailer => {
            return Err(AuthError::QueryMalformed(
                "a presigned URL cannot carry a streaming payload".into(),
            ))
        }
    };
    if later_by_more_than(signed_at, now, MAX_CLOCK_SKEW) {
        return Err(AuthError::NotYetValid);
    }
    if later_by_more_than(now, signed_at, expires) {
        return Err(AuthError::Expired);
    }
    let (secret, principal) = credentials
        .lookup(credential.access_key)
        .ok_or(AuthError::InvalidAccessKeyId)?;
    let canonical = canonical_request(method, request, headers, &signed_headers, &payload_hash);
    let key = secret.signing_key(credential.date, credential.region, credential.service);
    check_signature(&key, &amz_date, &credential.scope(), &canonical, &signature)?;
    Ok(Verified {
        principal,
        access_key: credential.access_key.to_owned(),
        kind: AuthKind::Presigned,
        region: credential.region.to_owned(),
        signed_headers: signed_headers
            .iter()
            .map(|name| (*name).to_owned())
            .collect(),
        payload,
    })
}

fn check_signature(
    key: &SigningKey,
    amz_date: &str,
    scope: &str,
    canonical_request: &[u8],
    provided: &[u8; 32],
) -> Result<(), AuthError> {
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex::encode(sha256(canonical_request))
    );
    let expected = key.sign(string_to_sign.as_bytes());
    if bool::from(expected.ct_eq(provided)) {
        Ok(())
    } else {
        Err(AuthError::SignatureDoesNotMatch)
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name)?.to_str().ok()
}

/// The query's parameters as bytes, decoded as [`super::request::parse_query`] decodes them
/// (nothing where that refuses the query, which the front has then refused). For the forward
/// mode's readers of a raw query; the front reads [`ParsedRequest::query`].
pub(crate) fn parse_query(raw: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    super::request::parse_query(raw)
        .unwrap_or_default()
        .into_iter()
        .map(|(name, value)| (name.into_bytes(), value.into_bytes()))
        .collect()
}

/// The canonical URI of an S3 request: the path decoded once, then encoded with AWS's rules.
/// Public for the `s3_route` fuzz target, which checks that what is signed is what is routed.
#[doc(hidden)]
pub fn canonical_uri(raw_path: &str) -> String {
    let decoded: Vec<u8> = percent_decode_str(raw_path).collect();
    let encoded = percent_encode(&decoded, ENCODE_PATH).to_string();
    if encoded.is_empty() {
        "/".to_owned()
    } else {
        encoded
    }
}

fn canonical_query(query: &[(String, String)]) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .filter(|(name, _)| name != "X-Amz-Signature")
        .map(|(name, value)| {
            (
                percent_encode(name.as_bytes(), ENCODE_ALL).to_string(),
                percent_encode(value.as_bytes(), ENCODE_ALL).to_string(),
            )
        })
        .collect();
    pairs.sort();
    let mut out = String::new();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(name);
        out.push('=');
        out.push_str(value);
    }
    out
}

/// A header's canonical value: all its values trimmed, runs of spaces inside collapsed to one,
/// joined by `,`. `host` is the request's one authority as the client sent it (its `Host`, or
/// the absolute-form target's when an HTTP/1.0 request had no `Host`), the same that routing
/// took the bucket from.
fn canonical_header_value(
    headers: &HeaderMap,
    request: &ParsedRequest,
    name: &str,
    out: &mut Vec<u8>,
) {
    if name == "host" {
        if let Some(authority) = request.authority() {
            out.extend_from_slice(authority.as_sent().trim().as_bytes());
        }
        return;
    }
    for (i, value) in headers.get_all(name).iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let mut pending_space = false;
        for &byte in value.as_bytes().trim_ascii() {
            if byte == b' ' || byte == b'\t' {
                pending_space = true;
                continue;
            }
            if pending_space {
                out.push(b' ');
                pending_space = false;
            }
            out.push(byte);
        }
    }
}

fn canonical_request(
    method: &Method,
    request: &ParsedRequest,
    headers: &HeaderMap,
    signed_headers: &[&str],
    payload_hash: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(canonical_uri(request.path()).as_bytes());
    out.push(b'\n');
    out.extend_from_slice(canonical_query(request.query()).as_bytes());
    out.push(b'\n');
    for name in signed_headers {
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        canonical_header_value(headers, request, name, &mut out);
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(signed_headers.join(";").as_bytes());
    out.push(b'\n');
    out.extend_from_slice(payload_hash.as_bytes());
    out
}

#[cfg(test)]
mod tests;
