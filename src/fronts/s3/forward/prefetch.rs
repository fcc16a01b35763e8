//! The whole object behind a ranged GET of a key the node does not hold: GitLab Runner's
//! parallel download (`FF_USE_PARALLEL_CACHE_TRANSFER`) and the aws CLI read large objects in
//! ranges, which cannot make a copy. When the client's signature does not cover `Range`, the
//! same request without it is one S3 authorizes just the same (the client could have sent it),
//! so the node sends it once in the background and keeps the answer as its copy; the client's
//! ranges are passed through meanwhile. One such fill per key at a time, and a few at most.
//! The answer is kept on the terms of any other fill ([`super::cacheable`]): not for an SSE-C
//! object, and for an SSE-KMS one only where the entry caches them.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use http::header;
use http::StatusCode;

use super::cacheable::{Sealed, StoredEtag};
use super::upstream::{body_stream, header_str, outgoing, unquoted_etag, Upstream};
use crate::fronts::reply::content_length;
use crate::fronts::s3::object_headers::put_options;
use crate::fronts::s3::sigv4::parse_query;
use crate::metrics::Metrics;
use crate::server::body;
use crate::store::backend::Backend;
use crate::store::disk::spool::{EntryMeta, EtagSource};
use crate::store::tiered::TieredStore;
use crate::store::Key;

/// Background fills running at once, at most: each is one object's download.
const MAX_PREFETCHES: usize = 4;

/// The keys being fetched in the background.
#[derive(Clone, Default)]
pub(super) struct Prefetches {
    running: Arc<Mutex<HashSet<Key>>>,
}

/// Holds a key's place in [`Prefetches`] until the fill ends.
struct Running {
    prefetches: Prefetches,
    key: Key,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.prefetches.lock().remove(&self.key);
    }
}

impl Prefetches {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<Key>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The key's place, unless it is being fetched already or the limit is reached.
    fn claim(&self, key: &Key) -> Option<Running> {
        let mut running = self.lock();
        if running.len() >= MAX_PREFETCHES || !running.insert(key.clone()) {
            return None;
        }
        Some(Running {
            prefetches: self.clone(),
            key: key.clone(),
        })
    }
}

/// What a background fill needs, owned (it outlives the request).
pub(super) struct Prefetch<B: Backend> {
    pub upstream: Upstream,
    pub store: Arc<TieredStore<B>>,
    pub metrics: Arc<Metrics>,
    pub endpoint: http::Uri,
    pub timeout: Duration,
    /// The entry's `cache_kms`.
    pub cache_kms: bool,
}

impl<B: Backend> Prefetch<B> {
    /// Starts fetching the whole object of `parts` (a ranged GET) into `key`'s copy, if the
    /// client's signature leaves `Range` out and no fill of the key runs already.
    pub fn start(self, prefetches: &Prefetches, parts: &http::request::Parts, key: Key) {
        if signs_range(parts) {
            return;
        }
        let Some(running) = prefetches.claim(&key) else {
            return;
        };
        let mut whole = parts.clone();
        whole.headers.remove(header::RANGE);
        let Ok(request) = outgoing(&self.endpoint, &whole, body::empty()) else {
            return;
        };
        tokio::spawn(async move {
            let _running = running;
            let ticket = self.store.begin_copy();
            let answer = match self.upstream.send_within(request, self.timeout).await {
                Ok(answer) => answer,
                Err(e) => {
                    tracing::debug!(key = %key, error = %e, "S3 forward: background fill got no answer");
                    return;
                }
            };
            self.metrics
                .forward_requests
                .with_label_values(&["GetObjectFill", answer.status().as_str()])
                .inc();
            let headers = answer.headers();
            let (Some(len), Some(etag)) = (content_length(headers), unquoted_etag(headers)) else {
                return;
            };
            if answer.status() != StatusCode::OK || len > self.store.disk().settings().max_size {
                return;
            }
            let sealed = Sealed::of_answer(headers);
            if !sealed.may_keep(self.cache_kms) {
                return;
            }
            let meta = EntryMeta {
                attrs: put_options(headers).map(|o| o.attrs).unwrap_or_default(),
                etag: EtagSource::Known(StoredEtag::new(etag, &sealed).to_stored()),
                modified: header_str(headers, "last-modified")
                    .and_then(|date| httpdate::parse_http_date(date).ok()),
            };
            let Ok(mut copy) = self.store.start_copy(&key, len, meta).await else {
                return;
            };
            let mut from_s3 = body_stream(answer.into_body(), self.timeout);
            while let Some(chunk) = from_s3.next().await {
                let written = match chunk {
                    Ok(chunk) => copy.write(chunk).await.is_ok(),
                    Err(_) => false,
                };
                if !written {
                    return; // the copy is dropped: an aborted write
                }
            }
            if let Err(e) = self.store.commit_copy(copy, &ticket).await {
                tracing::debug!(key = %key, error = %e, "S3 forward: background fill not committed");
            }
        });
    }
}

/// Whether the request's signature covers `Range` (then a request without it is another
/// request, one the client never made). Unknown schemes count as covering it.
pub(super) fn signs_range(parts: &http::request::Parts) -> bool {
    let listed = |list: &str| list.split(';').any(|h| h.eq_ignore_ascii_case("range"));
    let query = parts.uri.query().unwrap_or("");
    if let Some((_, value)) = parse_query(query)
        .into_iter()
        .find(|(name, _)| name.as_slice() == b"X-Amz-SignedHeaders")
    {
        return listed(&String::from_utf8_lossy(&value));
    }
    match parts
        .headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or(""))
    {
        // Anonymous: anyone may read the whole object if they may read a range of it.
        None => false,
        Some(auth) => match auth.strip_prefix("AWS4-HMAC-SHA256 ") {
            Some(fields) => fields
                .split(',')
                .filter_map(|f| f.trim().strip_prefix("SignedHeaders="))
                .next()
                .is_none_or(listed),
            None => true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, authorization: Option<&str>) -> http::request::Parts {
        let mut builder = http::Request::builder().uri(uri);
        if let Some(auth) = authorization {
            builder = builder.header("authorization", auth);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn range_is_signed_only_when_the_signature_lists_it() {
        let presigned =
            "/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-SignedHeaders=host&X-Amz-Signature=ab";
        assert!(!signs_range(&parts(presigned, None)));
        let with_range = "/b/k?X-Amz-SignedHeaders=host%3Brange&X-Amz-Signature=ab";
        assert!(signs_range(&parts(with_range, None)));
        let header = |signed: &str| {
            format!("AWS4-HMAC-SHA256 Credential=AK/20260101/us-east-1/s3/aws4_request, SignedHeaders={signed}, Signature=ab")
        };
        assert!(signs_range(&parts(
            "/b/k",
            Some(&header("host;range;x-amz-content-sha256;x-amz-date"))
        )));
        assert!(!signs_range(&parts(
            "/b/k",
            Some(&header("host;x-amz-content-sha256;x-amz-date"))
        )));
        assert!(!signs_range(&parts("/b/k", None)));
        assert!(signs_range(&parts("/b/k", Some("AWS AK:c2lnbmF0dXJl"))));
    }
}
