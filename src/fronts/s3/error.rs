//! The S3 error every piece of the S3 front returns: an S3 error code (which fixes the HTTP status
//! through one exhaustive match) and a message for the client. Rendered as S3 XML by
//! [`super::xml::error_body`], with the resource and request id the front knows.

use std::borrow::Cow;

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::xml;
use crate::fronts::reply::respond;
use crate::server::body::{self, ResponseBody};

/// The S3 error codes this front answers with. The HTTP status of each is the one S3 uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3ErrorCode {
    AccessDenied,
    /// A CORS request this front does not allow (it has no CORS configuration).
    AccessForbidden,
    AuthorizationHeaderMalformed,
    AuthorizationQueryParametersError,
    BadDigest,
    /// S3's code for an OPTIONS request without an `Origin`.
    BadRequest,
    EntityTooLarge,
    EntityTooSmall,
    IncompleteBody,
    InternalError,
    InvalidAccessKeyId,
    InvalidArgument,
    InvalidBucketName,
    InvalidDigest,
    InvalidPart,
    InvalidPartOrder,
    InvalidRange,
    InvalidRequest,
    /// Temporary credentials (`X-Amz-Security-Token`) that this front cannot check.
    InvalidToken,
    InvalidURI,
    KeyTooLongError,
    MalformedXML,
    MaxMessageLengthExceeded,
    MetadataTooLarge,
    MethodNotAllowed,
    MissingContentLength,
    MissingSecurityHeader,
    NoSuchBucket,
    NoSuchKey,
    NoSuchUpload,
    NotImplemented,
    OperationAborted,
    PreconditionFailed,
    RequestTimeTooSkewed,
    RequestTimeout,
    ServiceUnavailable,
    SignatureDoesNotMatch,
    SlowDown,
    XAmzContentSHA256Mismatch,
}

impl S3ErrorCode {
    /// The code as it appears in `<Code>`.
    pub fn as_str(self) -> &'static str {
        use S3ErrorCode::*;
        match self {
            AccessDenied => "AccessDenied",
            AccessForbidden => "AccessForbidden",
            AuthorizationHeaderMalformed => "AuthorizationHeaderMalformed",
            AuthorizationQueryParametersError => "AuthorizationQueryParametersError",
            BadDigest => "BadDigest",
            BadRequest => "BadRequest",
            EntityTooLarge => "EntityTooLarge",
            EntityTooSmall => "EntityTooSmall",
            IncompleteBody => "IncompleteBody",
            InternalError => "InternalError",
            InvalidAccessKeyId => "InvalidAccessKeyId",
            InvalidArgument => "InvalidArgument",
            InvalidBucketName => "InvalidBucketName",
            InvalidDigest => "InvalidDigest",
            InvalidPart => "InvalidPart",
            InvalidPartOrder => "InvalidPartOrder",
            InvalidRange => "InvalidRange",
            InvalidRequest => "InvalidRequest",
            InvalidToken => "InvalidToken",
            InvalidURI => "InvalidURI",
            KeyTooLongError => "KeyTooLongError",
            MalformedXML => "MalformedXML",
            MaxMessageLengthExceeded => "MaxMessageLengthExceeded",
            MetadataTooLarge => "MetadataTooLarge",
            MethodNotAllowed => "MethodNotAllowed",
            MissingContentLength => "MissingContentLength",
            MissingSecurityHeader => "MissingSecurityHeader",
            NoSuchBucket => "NoSuchBucket",
            NoSuchKey => "NoSuchKey",
            NoSuchUpload => "NoSuchUpload",
            NotImplemented => "NotImplemented",
            OperationAborted => "OperationAborted",
            PreconditionFailed => "PreconditionFailed",
            RequestTimeTooSkewed => "RequestTimeTooSkewed",
            RequestTimeout => "RequestTimeout",
            ServiceUnavailable => "ServiceUnavailable",
            SignatureDoesNotMatch => "SignatureDoesNotMatch",
            SlowDown => "SlowDown",
            XAmzContentSHA256Mismatch => "XAmzContentSHA256Mismatch",
        }
    }

    /// The HTTP status S3 answers this code with.
    pub fn status(self) -> StatusCode {
        use S3ErrorCode::*;
        match self {
            AccessDenied
            | AccessForbidden
            | InvalidAccessKeyId
            | RequestTimeTooSkewed
            | SignatureDoesNotMatch => StatusCode::FORBIDDEN,
            AuthorizationHeaderMalformed
            | AuthorizationQueryParametersError
            | BadDigest
            | BadRequest
            | EntityTooLarge
            | EntityTooSmall
            | IncompleteBody
            | InvalidArgument
            | InvalidBucketName
            | InvalidDigest
            | InvalidPart
            | InvalidPartOrder
            | InvalidRequest
            | InvalidToken
            | InvalidURI
            | KeyTooLongError
            | MalformedXML
            | MaxMessageLengthExceeded
            | MetadataTooLarge
            | MissingSecurityHeader
            | RequestTimeout
            | XAmzContentSHA256Mismatch => StatusCode::BAD_REQUEST,
            NoSuchBucket | NoSuchKey | NoSuchUpload => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            MissingContentLength => StatusCode::LENGTH_REQUIRED,
            PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            InvalidRange => StatusCode::RANGE_NOT_SATISFIABLE,
            InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            NotImplemented => StatusCode::NOT_IMPLEMENTED,
            OperationAborted => StatusCode::CONFLICT,
            ServiceUnavailable | SlowDown => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// An S3 error answer: its code and the message the client sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct S3Error {
    pub code: S3ErrorCode,
    pub message: Cow<'static, str>,
}

impl S3Error {
    pub fn new(code: S3ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    /// The error a body stream carried, when a stream adapter of this module failed it (the
    /// store sees an `io::Error`; the front turns it back into S3 XML with this).
    pub fn from_body_error(err: &std::io::Error) -> Option<S3Error> {
        err.get_ref()?.downcast_ref::<S3Error>().cloned()
    }

    /// Wraps this error in an `io::Error` for a body stream, recoverable with
    /// [`S3Error::from_body_error`].
    pub fn into_body_error(self) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, self)
    }
}

/// A fresh request id: 16 hex digits, as S3's are.
pub fn request_id() -> String {
    format!("{:016X}", fastrand::u64(..))
}

/// An S3 error: the XML document (none for HEAD, as S3 answers HEAD errors with the status
/// alone), with the code as the access log's outcome.
pub fn error_response(
    err: &S3Error,
    resource: Option<&str>,
    request_id: &str,
    head_only: bool,
) -> Response<ResponseBody> {
    let body = if head_only {
        body::empty()
    } else {
        body::full(xml::error_body(err, resource, request_id))
    };
    let mut response = respond(err.status(), err.code.as_str(), body);
    if !head_only {
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/xml"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_s3() {
        assert_eq!(S3ErrorCode::NoSuchKey.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            S3ErrorCode::SignatureDoesNotMatch.status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            S3ErrorCode::NotImplemented.status(),
            StatusCode::NOT_IMPLEMENTED
        );
        assert_eq!(
            S3ErrorCode::InvalidRange.status(),
            StatusCode::RANGE_NOT_SATISFIABLE
        );
        assert_eq!(
            S3ErrorCode::SlowDown.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn body_errors_round_trip() {
        let err = S3Error::new(S3ErrorCode::BadDigest, "md5 differs");
        let io = err.clone().into_body_error();
        assert_eq!(S3Error::from_body_error(&io), Some(err));
        let other = std::io::Error::other("socket closed");
        assert_eq!(S3Error::from_body_error(&other), None);
    }
}
