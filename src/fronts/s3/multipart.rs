//! The multipart operations of the S3 front: CreateMultipartUpload, UploadPart,
//! CompleteMultipartUpload, AbortMultipartUpload, ListParts and ListMultipartUploads, over the
//! store's [`Multipart`] uploads (parts kept on disk until the completion assembles them).

use http::{HeaderValue, Response, StatusCode};
use hyper::body::Incoming;
use hyper::Request;
use std::time::SystemTime;

use super::buckets::ChecksumHeaders;
use super::error::{S3Error, S3ErrorCode};
use super::front::{store_error, xml_response, Authorized, S3Front};
use super::object_headers::{client_put_options, write_conditions};
use super::objects::{header_error, missing_content_length, quoted};
use super::xml;
use crate::checksum::{to_base64, ChecksumAlgorithm, ChecksumType};
use crate::fronts::reply::respond;
use crate::server::body::{self, ResponseBody};
use crate::store::backend::{Backend, ByteRange};
use crate::store::multipart::{ListedChecksums, MultipartError, UploadChecksum, MAX_PART_NUMBER};
use crate::store::{BodyLen, CHECKSUM_TYPE_HEADER};

/// Most parts one ListParts page holds (S3's default and cap).
const MAX_LISTED_PARTS: usize = 1000;
/// Most uploads one ListMultipartUploads page holds.
const MAX_LISTED_UPLOADS: usize = 1000;

impl<B: Backend> S3Front<B> {
    pub(super) async fn create_multipart(
        &self,
        req: &Request<Incoming>,
        auth: &Authorized,
    ) -> Result<Response<ResponseBody>, S3Error> {
        let key = auth.key(&self.namespace(auth))?;
        let options = client_put_options(req.headers()).map_err(header_error)?;
        let checksum = upload_checksum(req.headers())?;
        let upload_id = self
            .multipart
            .create(&key, options.attrs, checksum)
            .await
            .map_err(multipart_error)?;
        let result = xml::InitiateMultipartUploadResult {
            bucket: auth.route.bucket.clone().unwrap_or_default(),
            key: key.name().to_string(),
            upload_id,
            ..Default::default()
        };
        let mut response = xml_response(result.to_xml());
        if let Some(checksum) = checksum {
            let headers = response.headers_mut();
            headers.insert(
                "x-amz-checksum-algorithm",
                HeaderValue::from_static(checksum.algorithm.name()),
            );
            headers.insert(
                CHECKSUM_TYPE_HEADER,
                HeaderValue::from_static(checksum.kind.name()),
            );
        }
        Ok(response)
    }

    /// UploadPart: the part's body is received like a PutObject's (decoded, checked, bounded)
    /// into a part file of the upload.
    pub(super) async fn upload_part(
        &self,
        req: Request<Incoming>,
        auth: &Authorized,
        upload_id: &str,
        part_number: u32,
    ) -> Response<ResponseBody> {
        let max_part = self.multipart.settings().max_part_size;
        let prepared = auth
            .key(&self.namespace(auth))
            .and_then(|key| Ok((key, self.body_plan(&req, auth, max_part)?)))
            .and_then(|(key, plan)| match plan.len {
                // A part's length is part of the upload's layout: it is declared.
                BodyLen::Exact(len) => Ok((key, plan, len)),
                BodyLen::AtMost(_) => Err(missing_content_length()),
            });
        let (key, plan, len) = match prepared {
            Ok(prepared) => prepared,
            Err(e) => return self.refuse(req, auth, &e).await,
        };
        self.receive(req, auth, plan, |stream, _| async move {
            let receipt = self
                .multipart
                .put_part(&key, upload_id, part_number, len, stream)
                .await
                .map_err(multipart_error)?;
            let mut response = respond(StatusCode::OK, "stored", body::empty());
            let headers = response.headers_mut();
            if let Ok(value) = HeaderValue::from_str(&quoted(&receipt.etag)) {
                headers.insert(http::header::ETAG, value);
            }
            if let Some((algorithm, raw)) = &receipt.checksum {
                if let Ok(value) = HeaderValue::from_str(&to_base64(raw)) {
                    headers.insert(algorithm.header_name(), value);
                }
            }
            Ok(response)
        })
        .await
    }

    /// UploadPartCopy: the part's body is (a range of) an object of the front's buckets,
    /// streamed from whichever tier holds it into a part file of the upload.
    pub(super) async fn upload_part_copy(
        &self,
        req: &Request<Incoming>,
        auth: &Authorized,
        upload_id: &str,
        part_number: u32,
        (source_bucket, source_key): (&str, &str),
    ) -> Result<Response<ResponseBody>, S3Error> {
        let key = auth.key(&self.namespace(auth))?;
        let source = self.copy_source_key(source_bucket, source_key)?;
        let range = copy_source_range(req.headers())?;
        let (object, span) = self.read_copy_source(req.headers(), &source, range).await?;
        // Unlike a GET's range, a copy's is not cut to the object: it must lie inside it.
        if let Some(ByteRange::Bounded { last, .. }) = range {
            if last >= object.meta.len {
                return Err(S3Error::new(
                    S3ErrorCode::InvalidRange,
                    format!(
                        "The x-amz-copy-source-range goes past the source, which has {} bytes",
                        object.meta.len
                    ),
                ));
            }
        }
        let receipt = self
            .multipart
            .put_part(
                &key,
                upload_id,
                part_number,
                span.end - span.start,
                object.body,
            )
            .await
            .map_err(multipart_error)?;
        let result = xml::CopyPartResult {
            last_modified: xml::timestamp(SystemTime::now()),
            etag: quoted(&receipt.etag),
            ..Default::default()
        };
        Ok(xml_response(result.to_part_xml()))
    }

    /// CompleteMultipartUpload: the part list (an XML body read under a cap, its digests
    /// checked) is checked as S3 checks it, then the parts become one object, written as the
    /// bucket's policy says.
    pub(super) async fn complete_multipart(
        &self,
        req: Request<Incoming>,
        auth: &Authorized,
        upload_id: &str,
    ) -> Response<ResponseBody> {
        let conditions = write_conditions(req.headers());
        // The whole object's checksum, if the client gives it.
        let whole = ChecksumAlgorithm::ALL.into_iter().find_map(|algorithm| {
            let value = req.headers().get(algorithm.header_name())?.to_str().ok()?;
            Some((algorithm, value.to_string()))
        });
        let (read, got) = match self
            .read_small_body(
                req,
                auth,
                xml::MAX_COMPLETE_BODY,
                ChecksumHeaders::OfTheObject,
            )
            .await
        {
            Ok(read) => read,
            Err(refused) => return refused,
        };
        let completed = async {
            let parts = xml::parse_complete_multipart_upload(&read?)?;
            let checksums = ListedChecksums {
                parts: parts
                    .iter()
                    .flat_map(|part| {
                        let number = part.part_number;
                        let listed = part.checksums.iter().cloned();
                        listed.map(move |(algorithm, value)| (number, algorithm, value))
                    })
                    .collect(),
                whole,
            };
            let listed: Vec<(u32, String)> = parts
                .into_iter()
                .map(|part| (part.part_number, part.etag))
                .collect();
            let key = auth.key(&self.namespace(auth))?;
            let meta = self
                .store
                .complete_multipart(
                    &self.multipart,
                    &key,
                    upload_id,
                    &listed,
                    &checksums,
                    &conditions,
                )
                .await
                .map_err(multipart_error)?;
            let bucket = auth.route.bucket.clone().unwrap_or_default();
            let result = xml::CompleteMultipartUploadResult {
                location: format!("/{bucket}/{}", key.name()),
                bucket,
                key: key.name().to_string(),
                etag: quoted(meta.etag.as_deref().unwrap_or_default()),
                checksum: kept_checksum(&meta),
                checksum_type: meta.attrs.kept(CHECKSUM_TYPE_HEADER).map(str::to_string),
                ..Default::default()
            };
            Ok::<_, S3Error>(xml_response(result.to_xml()))
        }
        .await;
        let response = completed.unwrap_or_else(|e| {
            self.error(&e, Some(&auth.route.resource()), &auth.request_id, false)
        });
        self.answers.answer_received(response, got)
    }

    pub(super) async fn abort_multipart(
        &self,
        auth: &Authorized,
        upload_id: &str,
    ) -> Result<Response<ResponseBody>, S3Error> {
        let key = auth.key(&self.namespace(auth))?;
        self.multipart
            .abort(&key, upload_id)
            .await
            .map_err(multipart_error)?;
        Ok(respond(StatusCode::NO_CONTENT, "aborted", body::empty()))
    }

    pub(super) fn list_parts(
        &self,
        auth: &Authorized,
        upload_id: &str,
    ) -> Result<Response<ResponseBody>, S3Error> {
        let key = auth.key(&self.namespace(auth))?;
        let marker: u32 = number_param(auth, "part-number-marker")?.unwrap_or(0);
        let max_parts = number_param(auth, "max-parts")?
            .unwrap_or(MAX_LISTED_PARTS as u32)
            .min(MAX_LISTED_PARTS as u32);
        let parts = self
            .multipart
            .list_parts(&key, upload_id)
            .map_err(multipart_error)?;
        let checksum = self
            .multipart
            .upload_checksum(&key, upload_id)
            .map_err(multipart_error)?;
        let mut after: Vec<_> = parts
            .into_iter()
            .filter(|p| p.part_number > marker)
            .collect();
        let truncated = after.len() > max_parts as usize;
        after.truncate(max_parts as usize);
        let result = xml::ListPartsResult {
            bucket: auth.route.bucket.clone().unwrap_or_default(),
            key: key.name().to_string(),
            upload_id: upload_id.to_string(),
            part_number_marker: marker,
            next_part_number_marker: after.last().map(|p| p.part_number),
            max_parts,
            is_truncated: truncated,
            parts: after
                .iter()
                .map(|p| xml::ListedPart {
                    part_number: p.part_number,
                    last_modified: xml::timestamp(p.modified),
                    etag: quoted(&p.etag),
                    size: p.size,
                    checksum: checksum
                        .zip(p.checksum.as_deref())
                        .map(|(c, raw)| xml::ChecksumElements::of(c.algorithm, to_base64(raw)))
                        .unwrap_or_default(),
                })
                .collect(),
            storage_class: "STANDARD",
            checksum_algorithm: checksum.map(|c| c.algorithm.name()),
            checksum_type: checksum.map(|c| c.kind.name()),
            ..Default::default()
        };
        Ok(xml_response(result.to_xml()))
    }

    pub(super) fn list_multipart_uploads(
        &self,
        auth: &Authorized,
    ) -> Result<Response<ResponseBody>, S3Error> {
        let prefix = auth.route.param("prefix").unwrap_or_default();
        let key_marker = auth.route.param("key-marker").unwrap_or_default();
        let id_marker = auth.route.param("upload-id-marker").unwrap_or_default();
        let max_uploads = number_param(auth, "max-uploads")?
            .unwrap_or(MAX_LISTED_UPLOADS as u32)
            .min(MAX_LISTED_UPLOADS as u32);
        let mut uploads: Vec<_> = self
            .multipart
            .list_uploads(&self.namespace(auth), prefix)
            .into_iter()
            .filter(|u| {
                let name = u.key.name();
                name > key_marker
                    || (name == key_marker
                        && !id_marker.is_empty()
                        && u.upload_id.as_str() > id_marker)
            })
            .collect();
        let truncated = uploads.len() > max_uploads as usize;
        uploads.truncate(max_uploads as usize);
        let last = uploads.last().filter(|_| truncated);
        let result = xml::ListMultipartUploadsResult {
            bucket: auth.route.bucket.clone().unwrap_or_default(),
            key_marker: key_marker.to_string(),
            upload_id_marker: id_marker.to_string(),
            next_key_marker: last.map(|u| u.key.name().to_string()),
            next_upload_id_marker: last.map(|u| u.upload_id.clone()),
            prefix: prefix.to_string(),
            max_uploads,
            is_truncated: truncated,
            uploads: uploads
                .iter()
                .map(|u| xml::ListedUpload {
                    key: u.key.name().to_string(),
                    upload_id: u.upload_id.clone(),
                    initiated: xml::timestamp(u.initiated),
                    storage_class: "STANDARD",
                })
                .collect(),
            ..Default::default()
        };
        Ok(xml_response(result.to_xml()))
    }
}

fn number_param(auth: &Authorized, name: &str) -> Result<Option<u32>, S3Error> {
    auth.route
        .param(name)
        .map(|text| {
            text.parse::<u32>().map_err(|_| {
                S3Error::new(
                    S3ErrorCode::InvalidArgument,
                    format!("{name} must be a non-negative integer"),
                )
            })
        })
        .transpose()
}

/// What a multipart failure means to an S3 client.
/// `x-amz-copy-source-range`: `bytes=first-last`, both given, `first <= last`; nothing else.
fn copy_source_range(headers: &http::HeaderMap) -> Result<Option<ByteRange>, S3Error> {
    let Some(value) = headers.get("x-amz-copy-source-range") else {
        return Ok(None);
    };
    let number = |text: &str| -> Option<u64> {
        (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse().ok())
            .flatten()
    };
    let parsed = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split_once('-'))
        .and_then(|(first, last)| Some((number(first)?, number(last)?)))
        .filter(|(first, last)| first <= last);
    match parsed {
        Some((first, last)) => Ok(Some(ByteRange::Bounded { first, last })),
        None => Err(S3Error::new(
            S3ErrorCode::InvalidArgument,
            "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy",
        )),
    }
}

/// The checksum a CreateMultipartUpload asks for: `x-amz-checksum-algorithm`, and
/// `x-amz-checksum-type` (S3's default for the algorithm without it).
fn upload_checksum(headers: &http::HeaderMap) -> Result<Option<UploadChecksum>, S3Error> {
    let text = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or("?"));
    let invalid = |what: &str| {
        S3Error::new(
            S3ErrorCode::InvalidRequest,
            format!("Value for {what} header is invalid."),
        )
    };
    let kind = match text(CHECKSUM_TYPE_HEADER) {
        None => None,
        Some(name) => {
            Some(ChecksumType::from_name(name).ok_or_else(|| invalid(CHECKSUM_TYPE_HEADER))?)
        }
    };
    let Some(name) = text("x-amz-checksum-algorithm") else {
        return match kind {
            None => Ok(None),
            Some(_) => Err(S3Error::new(
                S3ErrorCode::InvalidRequest,
                "x-amz-checksum-type needs x-amz-checksum-algorithm.",
            )),
        };
    };
    let algorithm =
        ChecksumAlgorithm::from_name(name).ok_or_else(|| invalid("x-amz-checksum-algorithm"))?;
    let kind = ChecksumType::for_upload(algorithm, kind).ok_or_else(|| {
        S3Error::new(
            S3ErrorCode::InvalidRequest,
            format!(
                "The {} checksum algorithm does not support this checksum type.",
                algorithm.name()
            ),
        )
    })?;
    Ok(Some(UploadChecksum { algorithm, kind }))
}

/// An object's kept checksum as XML elements.
fn kept_checksum(meta: &crate::store::ObjectMeta) -> xml::ChecksumElements {
    ChecksumAlgorithm::ALL
        .into_iter()
        .find_map(|algorithm| {
            let value = meta.attrs.kept(algorithm.header_name())?;
            Some(xml::ChecksumElements::of(algorithm, value.to_string()))
        })
        .unwrap_or_default()
}

fn multipart_error(err: MultipartError) -> S3Error {
    use S3ErrorCode as C;
    let message = err.to_string();
    match err {
        MultipartError::NoSuchUpload => S3Error::new(
            C::NoSuchUpload,
            "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.",
        ),
        MultipartError::Busy => S3Error::new(C::OperationAborted, message),
        MultipartError::InvalidPartNumber(_) => S3Error::new(
            C::InvalidArgument,
            format!("Part number must be an integer between 1 and {MAX_PART_NUMBER}, inclusive"),
        ),
        MultipartError::EntityTooLarge { .. } => S3Error::new(C::EntityTooLarge, message),
        MultipartError::TooManyUploads(_) => S3Error::new(C::SlowDown, message),
        MultipartError::NoParts => S3Error::new(C::MalformedXML, message),
        MultipartError::InvalidPartOrder => S3Error::new(C::InvalidPartOrder, message),
        MultipartError::InvalidPart(_) => S3Error::new(C::InvalidPart, message),
        MultipartError::BadDigest => S3Error::new(C::BadDigest, message),
        MultipartError::EntityTooSmall { .. } => S3Error::new(C::EntityTooSmall, message),
        MultipartError::Store(e) => store_error(e),
    }
}
