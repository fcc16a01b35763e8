//! What every front does with a response besides its protocol's body: the outcome recorded for
//! the access log, the connection's fate, and answering a request whose body is still coming.
//!
//! A client that sends its body without waiting for `100 Continue` (Gradle, GitLab's helper)
//! reads an early answer as a broken pipe, retries, and finally reports an unrelated error. So a
//! refused request's body is read and thrown away first, and the client sees the real status;
//! but only up to `limits.max_refused_body`: a larger one (declared or sent) gets the answer at
//! once and the connection is closed. With `Expect: 100-continue` the answer goes out before
//! any body byte is sent.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode};
use hyper::body::Incoming;
use hyper::Request;

use crate::metrics::Metrics;
use crate::server::access::Outcome;
use crate::server::body::{self, BodyLimits, Received, ResponseBody};
use crate::store::Tier;

/// A response with the outcome its access-log line will carry.
pub fn respond(
    status: StatusCode,
    outcome: &'static str,
    body: ResponseBody,
) -> Response<ResponseBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.extensions_mut().insert(Outcome::new(outcome));
    response
}

/// A 405 that says which methods the path takes.
pub fn method_not_allowed(allow: &'static str) -> Response<ResponseBody> {
    let mut response = respond(StatusCode::METHOD_NOT_ALLOWED, "bad_method", body::empty());
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// Records which tier served the response.
pub fn with_tier(mut response: Response<ResponseBody>, tier: Tier) -> Response<ResponseBody> {
    if let Some(outcome) = response.extensions_mut().get_mut::<Outcome>() {
        outcome.tier = Some(tier);
    }
    response
}

/// Records the request body bytes received.
pub fn received(mut response: Response<ResponseBody>, bytes: u64) -> Response<ResponseBody> {
    if let Some(outcome) = response.extensions_mut().get_mut::<Outcome>() {
        outcome.received = bytes;
    }
    response
}

/// Records the namespace a request was about.
pub fn in_namespace(response: &mut Response<ResponseBody>, namespace: &str) {
    if let Some(outcome) = response.extensions_mut().get_mut::<Outcome>() {
        outcome.namespace = Some(namespace.to_string());
    }
}

/// Marks a response as the connection's last: hyper closes the connection after sending it.
pub fn close_after(mut response: Response<ResponseBody>) -> Response<ResponseBody> {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

pub fn set_length(headers: &mut HeaderMap, len: u64) {
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
}

pub fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// How a front answers requests whose bodies it reads: its name (for metrics), the body
/// limits, and its protocol's answer to a body that came too slowly.
#[derive(Clone)]
pub struct BodyAnswers {
    pub front: &'static str,
    pub limits: BodyLimits,
    pub metrics: Arc<Metrics>,
    /// The front's response to a body cut off for being too slow.
    pub too_slow: fn() -> Response<ResponseBody>,
}

impl BodyAnswers {
    /// Answers a request that will not be served as asked, after reading (a bounded part of)
    /// the body that is already on its way (see the module's documentation).
    pub async fn refuse(
        &self,
        req: Request<Incoming>,
        response: Response<ResponseBody>,
    ) -> Response<ResponseBody> {
        let has_body = req.method() == Method::PUT || req.method() == Method::POST;
        if !has_body || expects_continue(req.headers()) {
            return response;
        }
        if content_length(req.headers()).is_some_and(|len| len > self.limits.max_discard) {
            return close_after(response);
        }
        let drained = body::drain(req.into_body(), self.limits).await;
        self.answer_received(response, drained)
    }

    /// Settles the answer to a request whose body was read: a body cut off for being too slow
    /// gets the front's timeout answer, and a body not read to its end leaves a connection that
    /// must close.
    pub fn answer_received(
        &self,
        response: Response<ResponseBody>,
        got: Received,
    ) -> Response<ResponseBody> {
        let response = if got.too_slow {
            self.metrics
                .request_timeouts
                .with_label_values(&[self.front, "body"])
                .inc();
            (self.too_slow)()
        } else {
            response
        };
        let response = received(response, got.bytes);
        if got.complete {
            response
        } else {
            close_after(response)
        }
    }
}
