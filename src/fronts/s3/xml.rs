//! S3's XML: the response documents this front sends and the two request bodies it reads
//! (CompleteMultipartUpload and Delete), with size and count limits. `quick-xml`'s serde support
//! writes and reads them, so escaping is the crate's, never ours.

use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize, Serializer};

use super::error::{S3Error, S3ErrorCode};
use crate::checksum::ChecksumAlgorithm;

const DECLARATION: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
const S3_NAMESPACE: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

/// Largest CompleteMultipartUpload body read: 10,000 parts of about 200 bytes each (number,
/// quoted ETag, a checksum, whitespace), doubled.
pub const MAX_COMPLETE_BODY: usize = 4 << 20;
/// Largest Delete body read: 1,000 keys of up to 1,024 bytes, with room for markup.
pub const MAX_DELETE_BODY: usize = 2 << 20;
/// S3's limit on the objects of one DeleteObjects request.
pub const MAX_DELETE_OBJECTS: usize = 1000;
/// S3's limit on the parts of one upload.
pub const MAX_PARTS: u32 = 10_000;

/// The S3 namespace attribute of a response's root element.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Namespace;

impl Serialize for Namespace {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(S3_NAMESPACE)
    }
}

/// Renders a response document with its XML declaration.
fn render<T: Serialize>(root: &str, value: &T) -> String {
    let body = quick_xml::se::to_string_with_root(root, value)
        .expect("the response types serialize to XML");
    format!("{DECLARATION}{body}")
}

/// S3's timestamp form in XML: `2009-10-12T17:50:30.000Z`.
pub fn timestamp(at: SystemTime) -> String {
    let at = time::OffsetDateTime::from(at);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorDocument<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource: Option<&'a str>,
    request_id: &'a str,
}

/// `<Error><Code/><Message/><Resource/><RequestId/></Error>`, the body of every error answer.
pub fn error_body(err: &S3Error, resource: Option<&str>, request_id: &str) -> String {
    render(
        "Error",
        &ErrorDocument {
            code: err.code.as_str(),
            message: &err.message,
            resource,
            request_id,
        },
    )
}

/// One object of a listing.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListedObject {
    pub key: String,
    pub last_modified: String,
    /// Quoted, as S3 writes it.
    #[serde(rename = "ETag")]
    pub etag: String,
    pub size: u64,
    /// ListObjects (v1) always, ListObjectsV2 with `fetch-owner=true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<ObjectOwner>,
    pub storage_class: &'static str,
}

/// Who owns a listed object. There are no accounts here: the owner is the access key that
/// lists, as in ListBuckets' answer.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectOwner {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "DisplayName")]
    pub display_name: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CommonPrefix {
    pub prefix: String,
}

/// ListObjectsV2's answer.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListObjectsV2Result {
    #[serde(rename = "@xmlns")]
    pub xmlns: Namespace,
    pub name: String,
    pub prefix: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<String>,
    pub max_keys: u32,
    pub key_count: u32,
    pub is_truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub continuation_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_continuation_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_after: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding_type: Option<String>,
    pub contents: Vec<ListedObject>,
    pub common_prefixes: Vec<CommonPrefix>,
}

impl ListObjectsV2Result {
    pub fn to_xml(&self) -> String {
        render("ListBucketResult", self)
    }
}

/// ListObjects (v1)'s answer.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListObjectsV1Result {
    #[serde(rename = "@xmlns")]
    pub xmlns: Namespace,
    pub name: String,
    pub prefix: String,
    pub marker: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
    pub max_keys: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<String>,
    pub is_truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding_type: Option<String>,
    pub contents: Vec<ListedObject>,
    pub common_prefixes: Vec<CommonPrefix>,
}

impl ListObjectsV1Result {
    pub fn to_xml(&self) -> String {
        render("ListBucketResult", self)
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListedBucket {
    pub name: String,
    pub creation_date: String,
}

#[derive(Debug, Clone, Serialize)]
struct Owner<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    #[serde(rename = "DisplayName")]
    display_name: &'a str,
}

#[derive(Serialize)]
struct BucketList<'a> {
    #[serde(rename = "Bucket")]
    bucket: &'a [ListedBucket],
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ListAllMyBucketsDocument<'a> {
    #[serde(rename = "@xmlns")]
    xmlns: Namespace,
    owner: Owner<'a>,
    buckets: BucketList<'a>,
}

/// ListBuckets' answer; `owner` is the access key's name (there are no accounts here).
pub fn list_buckets(owner: &str, buckets: &[ListedBucket]) -> String {
    render(
        "ListAllMyBucketsResult",
        &ListAllMyBucketsDocument {
            xmlns: Namespace,
            owner: Owner {
                id: owner,
                display_name: owner,
            },
            buckets: BucketList { bucket: buckets },
        },
    )
}

#[derive(Serialize)]
struct LocationDocument<'a> {
    #[serde(rename = "@xmlns")]
    xmlns: Namespace,
    #[serde(rename = "$text")]
    region: &'a str,
}

/// GetBucketLocation's answer: empty for us-east-1, as S3 answers.
pub fn location_constraint(region: &str) -> String {
    let region = if region == "us-east-1" { "" } else { region };
    render(
        "LocationConstraint",
        &LocationDocument {
            xmlns: Namespace,
            region,
        },
    )
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InitiateMultipartUploadResult {
    #[serde(rename = "@xmlns")]
    pub xmlns: Namespace,
    pub bucket: String,
    pub key: String,
    pub upload_id: String,
}

impl InitiateMultipartUploadResult {
    pub fn to_xml(&self) -> String {
        render("InitiateMultipartUploadResult", self)
    }
}

/// An object's or a part's checksum in S3's XML: one `Checksum<ALGORITHM>` element, for the
/// algorithm it has (none without one).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChecksumElements {
    #[serde(rename = "ChecksumCRC32", skip_serializing_if = "Option::is_none")]
    pub crc32: Option<String>,
    #[serde(rename = "ChecksumCRC32C", skip_serializing_if = "Option::is_none")]
    pub crc32c: Option<String>,
    #[serde(rename = "ChecksumCRC64NVME", skip_serializing_if = "Option::is_none")]
    pub crc64nvme: Option<String>,
    #[serde(rename = "ChecksumSHA1", skip_serializing_if = "Option::is_none")]
    pub sha1: Option<String>,
    #[serde(rename = "ChecksumSHA256", skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl ChecksumElements {
    /// The element of `algorithm` holding `value` (base64).
    pub fn of(algorithm: ChecksumAlgorithm, value: String) -> Self {
        let mut elements = ChecksumElements::default();
        let slot = match algorithm {
            ChecksumAlgorithm::Crc32 => &mut elements.crc32,
            ChecksumAlgorithm::Crc32c => &mut elements.crc32c,
            ChecksumAlgorithm::Crc64Nvme => &mut elements.crc64nvme,
            ChecksumAlgorithm::Sha1 => &mut elements.sha1,
            ChecksumAlgorithm::Sha256 => &mut elements.sha256,
        };
        *slot = Some(value);
        elements
    }

    /// Each element given, with its algorithm.
    fn given(self) -> impl Iterator<Item = (ChecksumAlgorithm, String)> {
        [
            (ChecksumAlgorithm::Crc32, self.crc32),
            (ChecksumAlgorithm::Crc32c, self.crc32c),
            (ChecksumAlgorithm::Crc64Nvme, self.crc64nvme),
            (ChecksumAlgorithm::Sha1, self.sha1),
            (ChecksumAlgorithm::Sha256, self.sha256),
        ]
        .into_iter()
        .filter_map(|(algorithm, value)| Some((algorithm, value?)))
    }
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CompleteMultipartUploadResult {
    #[serde(rename = "@xmlns")]
    pub xmlns: Namespace,
    pub location: String,
    pub bucket: String,
    pub key: String,
    /// Quoted, `"<md5 of the part md5s>-<parts>"`.
    #[serde(rename = "ETag")]
    pub etag: String,
    #[serde(flatten)]
    pub checksum: ChecksumElements,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum_type: Option<String>,
}

impl CompleteMultipartUploadResult {
    pub fn to_xml(&self) -> String {
        render("CompleteMultipartUploadResult", self)
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CopyObjectResult {
    #[serde(rename = "@xmlns")]
    pub xmlns: Namespace,
    #[serde(rename = "LastModified")]
    pub last_modified: String,
    #[serde(rename = "ETag")]
    pub etag: String,
}

impl CopyObjectResult {
    pub fn to_xml(&self) -> String {
        render("CopyObjectResult", self)
    }
}

/// UploadPartCopy's answer: the same two fields as CopyObject's, under another name.
pub type CopyPartResult = CopyObjectResult;

impl CopyObjectResult {
    /// As UploadPartCopy answers it.
    pub fn to_part_xml(&self) -> String {
        render("CopyPartResult", self)
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListedPart {
    pub part_number: u32,
    pub last_modified: String,
    #[serde(rename = "ETag")]
    pub etag: String,
    pub size: u64,
    #[serde(flatten)]
    pub checksum: ChecksumElements,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListPartsResult {
    #[serde(rename = "@xmlns")]
    pub xmlns: Namespace,
    pub bucket: String,
    pub key: String,
    pub upload_id: String,
    pub part_number_marker: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_part_number_marker: Option<u32>,
    pub max_parts: u32,
    pub is_truncated: bool,
    #[serde(rename = "Part")]
    pub parts: Vec<ListedPart>,
    pub storage_class: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum_algorithm: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum_type: Option<&'static str>,
}

impl ListPartsResult {
    pub fn to_xml(&self) -> String {
        render("ListPartsResult", self)
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListedUpload {
    pub key: String,
    pub upload_id: String,
    pub initiated: String,
    pub storage_class: &'static str,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListMultipartUploadsResult {
    #[serde(rename = "@xmlns")]
    pub xmlns: Namespace,
    pub bucket: String,
    pub key_marker: String,
    pub upload_id_marker: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_key_marker: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_upload_id_marker: Option<String>,
    pub prefix: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<String>,
    pub max_uploads: u32,
    pub is_truncated: bool,
    #[serde(rename = "Upload")]
    pub uploads: Vec<ListedUpload>,
    pub common_prefixes: Vec<CommonPrefix>,
}

impl ListMultipartUploadsResult {
    pub fn to_xml(&self) -> String {
        render("ListMultipartUploadsResult", self)
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeletedObject {
    pub key: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeleteError {
    pub key: String,
    pub code: &'static str,
    pub message: String,
}

/// DeleteObjects' answer; with `Quiet`, the front leaves `deleted` empty.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeleteResult {
    #[serde(rename = "@xmlns")]
    pub xmlns: Namespace,
    #[serde(rename = "Deleted")]
    pub deleted: Vec<DeletedObject>,
    #[serde(rename = "Error")]
    pub errors: Vec<DeleteError>,
}

impl DeleteResult {
    pub fn to_xml(&self) -> String {
        render("DeleteResult", self)
    }
}

/// Reads a request body of at most `limit` bytes (`MaxMessageLengthExceeded` past it).
pub async fn read_capped<S>(mut body: S, limit: usize) -> Result<Bytes, S3Error>
where
    S: Stream<Item = std::io::Result<Bytes>> + Unpin,
{
    let mut out = BytesMut::new();
    while let Some(piece) = body.next().await {
        let piece = piece.map_err(|err| {
            S3Error::from_body_error(&err).unwrap_or_else(|| {
                S3Error::new(
                    S3ErrorCode::IncompleteBody,
                    "The request body was not received in full.",
                )
            })
        })?;
        if out.len() + piece.len() > limit {
            return Err(too_big());
        }
        out.extend_from_slice(&piece);
    }
    Ok(out.freeze())
}

fn too_big() -> S3Error {
    S3Error::new(
        S3ErrorCode::MaxMessageLengthExceeded,
        "Your request was too big.",
    )
}

fn malformed() -> S3Error {
    S3Error::new(
        S3ErrorCode::MalformedXML,
        "The XML you provided was not well-formed or did not validate against our published schema.",
    )
}

fn parse<'de, T: Deserialize<'de>>(body: &'de [u8], limit: usize) -> Result<T, S3Error> {
    if body.len() > limit {
        return Err(too_big());
    }
    let text = std::str::from_utf8(body).map_err(|_| malformed())?;
    quick_xml::de::from_str(text).map_err(|_| malformed())
}

/// One part of a CompleteMultipartUpload request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedPart {
    pub part_number: u32,
    /// Without the quotes clients put around it.
    pub etag: String,
    /// The part's checksums the client lists (base64), by algorithm.
    pub checksums: Vec<(ChecksumAlgorithm, String)>,
}

#[derive(Deserialize)]
struct CompleteDocument {
    #[serde(rename = "Part", default)]
    parts: Vec<CompletePartDocument>,
}

#[derive(Deserialize)]
struct CompletePartDocument {
    #[serde(rename = "PartNumber")]
    part_number: u32,
    #[serde(rename = "ETag")]
    etag: String,
    #[serde(rename = "ChecksumCRC32")]
    crc32: Option<String>,
    #[serde(rename = "ChecksumCRC32C")]
    crc32c: Option<String>,
    #[serde(rename = "ChecksumCRC64NVME")]
    crc64nvme: Option<String>,
    #[serde(rename = "ChecksumSHA1")]
    sha1: Option<String>,
    #[serde(rename = "ChecksumSHA256")]
    sha256: Option<String>,
}

/// Parses a CompleteMultipartUpload body: 1 to 10,000 parts, numbers 1 to 10,000 in ascending
/// order; a number may be listed again right after itself (a retried part's two ETags: the
/// store uses the last).
pub fn parse_complete_multipart_upload(body: &[u8]) -> Result<Vec<CompletedPart>, S3Error> {
    let document: CompleteDocument = parse(body, MAX_COMPLETE_BODY)?;
    if document.parts.is_empty() {
        return Err(malformed());
    }
    let mut previous = 0;
    let mut parts = Vec::with_capacity(document.parts.len());
    for part in document.parts {
        if !(1..=MAX_PARTS).contains(&part.part_number) {
            return Err(S3Error::new(
                S3ErrorCode::InvalidArgument,
                "Part number must be an integer between 1 and 10000, inclusive",
            ));
        }
        if part.part_number < previous {
            return Err(S3Error::new(
                S3ErrorCode::InvalidPartOrder,
                "The list of parts was not in ascending order. Parts must be ordered by part number.",
            ));
        }
        previous = part.part_number;
        let etag = part.etag.trim();
        let etag = etag
            .strip_prefix('"')
            .and_then(|etag| etag.strip_suffix('"'))
            .unwrap_or(etag);
        let listed = ChecksumElements {
            crc32: part.crc32,
            crc32c: part.crc32c,
            crc64nvme: part.crc64nvme,
            sha1: part.sha1,
            sha256: part.sha256,
        };
        parts.push(CompletedPart {
            part_number: part.part_number,
            etag: etag.to_owned(),
            checksums: listed.given().collect(),
        });
    }
    Ok(parts)
}

/// A DeleteObjects request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteRequest {
    pub quiet: bool,
    pub keys: Vec<String>,
}

#[derive(Deserialize)]
struct DeleteDocument {
    #[serde(rename = "Quiet", default)]
    quiet: bool,
    #[serde(rename = "Object", default)]
    objects: Vec<DeleteObjectDocument>,
}

#[derive(Deserialize)]
struct DeleteObjectDocument {
    #[serde(rename = "Key")]
    key: String,
    #[serde(rename = "VersionId")]
    version_id: Option<String>,
}

/// Parses a Delete body: 1 to 1,000 objects, no versions (this front keeps none).
pub fn parse_delete(body: &[u8]) -> Result<DeleteRequest, S3Error> {
    let document: DeleteDocument = parse(body, MAX_DELETE_BODY)?;
    if document.objects.is_empty() || document.objects.len() > MAX_DELETE_OBJECTS {
        return Err(malformed());
    }
    let mut keys = Vec::with_capacity(document.objects.len());
    for object in document.objects {
        if object.version_id.is_some() {
            return Err(S3Error::new(
                S3ErrorCode::NotImplemented,
                "This endpoint keeps no object versions.",
            ));
        }
        if object.key.is_empty() {
            return Err(malformed());
        }
        keys.push(object.key);
    }
    Ok(DeleteRequest {
        quiet: document.quiet,
        keys,
    })
}

#[cfg(test)]
mod tests;
