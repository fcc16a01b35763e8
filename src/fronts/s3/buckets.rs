//! The bucket operations of the S3 front that touch objects: ListObjectsV2, ListObjects (v1)
//! and DeleteObjects.

use base64::Engine;
use bytes::Bytes;
use http::Response;
use hyper::body::Incoming;
use hyper::Request;
use percent_encoding::utf8_percent_encode;

use super::digest::{ExpectedDigests, VerifyDigests};
use super::error::{S3Error, S3ErrorCode};
use super::front::{store_error, xml_response, Authorized, S3Front};
use super::sigv4::ENCODE_PATH;
use super::xml;
use crate::server::body::{self, Received, ResponseBody};
use crate::store::backend::{Backend, ListRequest, Listing};
use crate::store::Store;

/// Most keys one listing page holds (S3's cap, and its default).
const MAX_KEYS: usize = 1000;

impl<B: Backend> S3Front<B> {
    /// ListObjectsV2 (`v2`) or ListObjects: one page of the bucket's objects and common
    /// prefixes, as the store merges the backend's listing with what this node has not
    /// uploaded or deleted there yet.
    pub(super) async fn list_objects(
        &self,
        auth: &Authorized,
        v2: bool,
    ) -> Result<Response<ResponseBody>, S3Error> {
        let route = &auth.route;
        let prefix = route.param("prefix").unwrap_or_default().to_string();
        let delimiter = route
            .param("delimiter")
            .filter(|d| !d.is_empty())
            .map(str::to_string);
        let max_keys = match route.param("max-keys") {
            None => MAX_KEYS,
            Some(text) => text.parse::<usize>().map_err(|_| {
                S3Error::new(
                    S3ErrorCode::InvalidArgument,
                    "Provided max-keys not an integer or within integer range",
                )
            })?,
        }
        .min(MAX_KEYS);
        let url_encoded = match route.param("encoding-type") {
            None => false,
            Some("url") => true,
            Some(_) => {
                return Err(S3Error::new(
                    S3ErrorCode::InvalidArgument,
                    "Invalid Encoding Method specified in Request",
                ))
            }
        };
        let token = if v2 {
            route
                .param("continuation-token")
                .map(decode_token)
                .transpose()?
        } else {
            None
        };
        let start_after = if v2 {
            route.param("start-after")
        } else {
            route.param("marker")
        }
        .filter(|s| !s.is_empty())
        .map(str::to_string);
        let listing = if max_keys == 0 {
            Listing::default()
        } else {
            let request = ListRequest {
                namespace: self.namespace(auth),
                prefix: prefix.clone(),
                delimiter: delimiter.clone(),
                continuation: token.clone(),
                start_after: start_after.clone(),
                max_keys,
            };
            self.store.list(&request).await.map_err(store_error)?
        };
        let encode = |text: &str| -> String {
            if url_encoded {
                utf8_percent_encode(text, ENCODE_PATH).to_string()
            } else {
                text.to_string()
            }
        };
        let fetch_owner = !v2 || route.param("fetch-owner") == Some("true");
        let owner = fetch_owner.then(|| xml::ObjectOwner {
            id: auth.verified.access_key.clone(),
            display_name: auth.verified.access_key.clone(),
        });
        let contents: Vec<xml::ListedObject> = listing
            .objects
            .iter()
            .map(|o| xml::ListedObject {
                key: encode(&o.name),
                last_modified: xml::timestamp(o.modified),
                etag: format!("\"{}\"", o.etag.as_deref().unwrap_or_default()),
                size: o.len,
                owner: owner.clone(),
                storage_class: "STANDARD",
            })
            .collect();
        let common_prefixes: Vec<xml::CommonPrefix> = listing
            .common_prefixes
            .iter()
            .map(|p| xml::CommonPrefix { prefix: encode(p) })
            .collect();
        let truncated = listing.next.is_some();
        let bucket = route.bucket.clone().unwrap_or_default();
        let encoding_type = url_encoded.then(|| "url".to_string());
        let document = if v2 {
            xml::ListObjectsV2Result {
                name: bucket,
                prefix: encode(&prefix),
                delimiter: delimiter.as_deref().map(encode),
                max_keys: max_keys as u32,
                key_count: (contents.len() + common_prefixes.len()) as u32,
                is_truncated: truncated,
                continuation_token: route.param("continuation-token").map(str::to_string),
                next_continuation_token: listing.next.as_deref().map(encode_token),
                start_after: start_after.as_deref().map(encode),
                encoding_type,
                contents,
                common_prefixes,
                ..Default::default()
            }
            .to_xml()
        } else {
            xml::ListObjectsV1Result {
                name: bucket,
                // Not encoded in a V1 listing, unlike every other name in it (the SDKs decode
                // V1's Marker, NextMarker, Delimiter, keys and common prefixes, but not its
                // Prefix).
                prefix,
                marker: start_after.as_deref().map(encode).unwrap_or_default(),
                next_marker: listing.next.as_deref().map(encode),
                max_keys: max_keys as u32,
                delimiter: delimiter.as_deref().map(encode),
                is_truncated: truncated,
                encoding_type,
                contents,
                common_prefixes,
                ..Default::default()
            }
            .to_xml()
        };
        Ok(xml_response(document))
    }

    /// DeleteObjects: up to 1000 keys from an XML body (read under a cap, its digests checked),
    /// each deleted as DeleteObject would; per-key failures are listed in the answer.
    pub(super) async fn delete_objects(
        &self,
        req: Request<Incoming>,
        auth: &Authorized,
    ) -> Response<ResponseBody> {
        let (read, got) = match self
            .read_small_body(req, auth, xml::MAX_DELETE_BODY, ChecksumHeaders::OfTheBody)
            .await
        {
            Ok(read) => read,
            Err(refused) => return refused,
        };
        let response = match read.and_then(|body| xml::parse_delete(&body)) {
            Ok(request) => self.delete_each(auth, request).await,
            Err(e) => self.error(&e, Some(&auth.route.resource()), &auth.request_id, false),
        };
        self.answers.answer_received(response, got)
    }

    async fn delete_each(
        &self,
        auth: &Authorized,
        request: xml::DeleteRequest,
    ) -> Response<ResponseBody> {
        let namespace = self.namespace(auth);
        let mut result = xml::DeleteResult::default();
        for name in request.keys {
            let outcome = match crate::store::Key::object(namespace.clone(), &name) {
                Ok(key) => self.store.delete(&key).await.map_err(store_error),
                Err(e) => Err(S3Error::new(S3ErrorCode::InvalidArgument, e.to_string())),
            };
            match outcome {
                Ok(_) if request.quiet => {}
                Ok(_) => result.deleted.push(xml::DeletedObject { key: name }),
                Err(e) => result.errors.push(xml::DeleteError {
                    key: name,
                    code: e.code.as_str(),
                    message: e.message.to_string(),
                }),
            }
        }
        xml_response(result.to_xml())
    }
}

impl<B: Backend> S3Front<B> {
    /// A small request body (the XML of DeleteObjects or CompleteMultipartUpload) read whole,
    /// at most `limit` bytes, with every digest it declared checked; and what was received of
    /// it. `Err`: the request was refused before its body was read, and this is the answer.
    pub(super) async fn read_small_body(
        &self,
        req: Request<Incoming>,
        auth: &Authorized,
        limit: usize,
        checksum_headers: ChecksumHeaders,
    ) -> Result<(Result<Bytes, S3Error>, Received), Response<ResponseBody>> {
        let (payload, headers) = (&auth.verified.payload, req.headers());
        let digests = match checksum_headers {
            ChecksumHeaders::OfTheBody => ExpectedDigests::for_request(payload, headers),
            ChecksumHeaders::OfTheObject => {
                ExpectedDigests::without_checksum_headers(payload, headers)
            }
        };
        let digests = match digests {
            Ok(digests) => digests,
            Err(e) => return Err(self.refuse(req, auth, &e).await),
        };
        let (stream, upload) = body::upload(req.into_body(), self.uploads.body);
        let read = xml::read_capped(VerifyDigests::new(stream, digests), limit).await;
        Ok((read, upload.finish().await))
    }
}

/// What a request's `x-amz-checksum-*` header is the checksum of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChecksumHeaders {
    /// The request's body (DeleteObjects).
    OfTheBody,
    /// The object the request makes (CompleteMultipartUpload: the whole object's checksum,
    /// checked by the store against its parts'), not the XML it sends.
    OfTheObject,
}

/// A continuation token: where the page stopped, opaque to the client as S3's are.
fn encode_token(next: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(next)
}

fn decode_token(token: &str) -> Result<String, S3Error> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|raw| String::from_utf8(raw).ok())
        .ok_or_else(|| {
            S3Error::new(
                S3ErrorCode::InvalidArgument,
                "The continuation token provided is incorrect",
            )
        })
}
