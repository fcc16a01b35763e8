//! GetObject and HeadObject. A GET for which the node has a copy goes to S3 with
//! `If-None-Match: <the copy's ETag>` added: S3 checks the client's signature and answers 304
//! only when it allows the read and the copy is current, and the node then serves its copy
//! (the client's `Range` applied locally). Any other answer is S3's, passed back as it is; a
//! 200 for the whole object also refills the copy, a 404 drops it, and a 206 for a key the
//! node does not hold starts a background fill of the whole object.
//!
//! A GET of a key whose fill is running (another request's 200 being written to a copy) goes
//! to S3 with `If-None-Match: <that fill's ETag>`, and S3's 304 lets it read the fill's bytes
//! as they arrive instead of the whole object from S3 again; GETs that arrive together wait for
//! the first one's answer head to know ([`super::flight`]).
//!
//! A request with conditional headers of its own is passed through without the node's: its
//! preconditions are S3's to evaluate, and adding one would change their meaning. So is one
//! whose answer is not the object as stored (query overrides such as `response-*`,
//! `partNumber`, `versionId`) or that gives an SSE-C key, and S3's answer to it makes no copy;
//! answers for SSE-KMS objects make one only where the entry allows it ([`super::cacheable`]).
//! A HEAD is passed through too: it has no body to save, and S3's headers are the exact answer.

use http::header;
use http::{Response, StatusCode};
use hyper::body::Incoming;
use hyper::Request;

use std::sync::Arc;

use super::cacheable::{changes_the_answer, names_customer_key, Sealed, StoredEtag};
use super::fill::tee_into_copy;
use super::flight::{Follower, Leader, Role, Source};
use super::prefetch::Prefetch;
use super::upstream::{body_stream, header_str, quoted, unquoted_etag};
use super::{Forward, Target};
use crate::fronts::reply::{content_length, with_tier};
use crate::fronts::s3::object_headers::{get_options, put_options};
use crate::fronts::s3::objects::found;
use crate::server::body::{self, ResponseBody};
use crate::store::backend::{Backend, GetOptions};
use crate::store::disk::spool::{EntryMeta, EtagSource};
use crate::store::{Key, Object, ObjectMeta, Read, Tier};

/// Headers with which a client states its own preconditions.
const CONDITIONAL: [header::HeaderName; 4] = [
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
];

impl<B: Backend> Forward<B> {
    pub(super) async fn get(
        &self,
        req: Request<Incoming>,
        target: &Target<'_>,
    ) -> Response<ResponseBody> {
        let Some(key) = target.key.clone() else {
            return self.pass(req, target, false).await;
        };
        // A GET with a body is no object read we know how to answer locally.
        if super::pass::has_body(&req) {
            return self.pass(req, target, false).await;
        }
        let conditional = CONDITIONAL.iter().any(|h| req.headers().contains_key(h));
        let options = get_options(req.headers());
        let cache_kms = target.endpoint.cache_kms;
        // The answer is the object as stored, and S3's 304 all it takes to read it: no query
        // parameter changes it (decided from the names as S3 decodes them), and no SSE-C key is
        // needed to read it.
        let as_stored = !changes_the_answer(&target.query) && !names_customer_key(req.headers());
        let (parts, _) = req.into_parts();
        let ticket = self.store.begin_copy();
        // Only a request that states no preconditions of its own may be given the node's.
        let ours_to_ask = !conditional && as_stored;
        // A running fill is the newest object the node knows of: asked about before the copy.
        let mut role = match ours_to_ask {
            true => self.flights.running(&key).map(Role::Follow),
            false => None,
        };
        let local = match ours_to_ask && role.is_none() {
            false => None,
            true => self
                .store
                .local_copy_meta(&key)
                .await
                .ok()
                .flatten()
                .and_then(|meta| meta.etag)
                // A copy of an SSE-KMS object the entry no longer caches is none to offer.
                .filter(|stored| StoredEtag::parse(stored).usable(cache_kms)),
        };
        if ours_to_ask && role.is_none() && local.is_none() {
            let may_lead = options.range.is_none();
            let patience = target.endpoint.response_timeout;
            role = Some(self.flights.role(&key, may_lead, patience).await);
        }
        let role = role.unwrap_or(Role::Alone);
        // `local` is the copy's ETag as stored; S3 is asked about the ETag alone.
        let asked = match &role {
            Role::Follow(follower) => Some(follower.source.etag().to_string()),
            Role::Alone | Role::Lead(_) => local.as_deref().map(|s| StoredEtag::parse(s).etag),
        };
        let extra = asked
            .as_deref()
            .and_then(quoted)
            .map(|etag| (header::IF_NONE_MATCH, etag));
        let answer = match self.send_bodiless(&parts, target, extra).await {
            Ok(answer) => answer,
            Err(e) => return self.failed(&parts.method, parts.uri.path(), target.operation, &e),
        };
        let status = answer.status();
        self.answered(target, status);
        let (leader, follower) = match role {
            Role::Lead(leader) => (Some(leader), None),
            Role::Follow(follower) => (None, Some(follower)),
            Role::Alone => (None, None),
        };
        match status {
            StatusCode::NOT_MODIFIED if asked.is_some() => {
                // A 304 that says the object needs a key the entry does not trust S3's 304 for
                // is no leave to serve the node's bytes, whatever the copy remembers.
                let allowed = Sealed::of_answer(answer.headers()).may_keep(cache_kms);
                let served = match follower {
                    _ if !allowed => None,
                    Some(follower) => self.serve_fill(follower, &options),
                    None => {
                        let vouched = local.as_deref().unwrap_or_default();
                        self.serve_copy(&key, &options, vouched).await
                    }
                };
                if let Some(response) = served {
                    return response;
                }
                // The copy went away (or was replaced, or the fill failed) after S3's answer:
                // S3's answer is needed after all. The request is re-sent as the client made it
                // (its signature still holds within its expiry); rare enough not to be worth more.
                tracing::debug!(key = %key, "S3 forward: local copy gone after a 304; asking again");
                return match self.send_bodiless(&parts, target, None).await {
                    Ok(answer) => {
                        self.answered(target, answer.status());
                        self.relay(answer, target, true)
                    }
                    Err(e) => self.failed(&parts.method, parts.uri.path(), target.operation, &e),
                };
            }
            StatusCode::OK if options.range.is_none() && as_stored => {
                let stale = local.is_some();
                self.relay_and_fill(answer, target, key, ticket, stale, leader)
                    .await
            }
            StatusCode::NOT_FOUND => {
                self.drop_copy(&key, &ticket).await;
                self.relay(answer, target, false)
            }
            // 206 despite our If-None-Match: the object changed; the copy is stale.
            StatusCode::PARTIAL_CONTENT | StatusCode::OK if local.is_some() => {
                self.drop_copy(&key, &ticket).await;
                self.relay(answer, target, true)
            }
            StatusCode::PARTIAL_CONTENT if !conditional && as_stored => {
                self.prefetch(target).start(&self.prefetches, &parts, key);
                self.relay(answer, target, true)
            }
            _ => self.relay(answer, target, status.is_success()),
        }
    }

    /// A background fill of the endpoint's object (see [`super::prefetch`]).
    fn prefetch(&self, target: &Target<'_>) -> Prefetch<B> {
        Prefetch {
            upstream: self.upstream.clone(),
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            endpoint: target.endpoint.uri.clone(),
            timeout: target.endpoint.response_timeout,
            cache_kms: target.endpoint.cache_kms,
        }
    }

    pub(super) async fn head(
        &self,
        req: Request<Incoming>,
        target: &Target<'_>,
    ) -> Response<ResponseBody> {
        let Some(key) = target.key.clone() else {
            return self.pass(req, target, false).await;
        };
        let ticket = self.store.begin_copy();
        let (parts, _) = req.into_parts();
        match self.send_bodiless(&parts, target, None).await {
            Ok(answer) => {
                self.answered(target, answer.status());
                if answer.status() == StatusCode::NOT_FOUND {
                    self.drop_copy(&key, &ticket).await;
                }
                self.relay(answer, target, false)
            }
            Err(e) => self.failed(&parts.method, parts.uri.path(), target.operation, &e),
        }
    }

    /// The local copy, as S3 would have served it (the client's range applied); `None` when
    /// there is no copy any more, or it is no longer the one S3 `vouched` for (its ETag as
    /// stored, see [`StoredEtag`]).
    async fn serve_copy(
        &self,
        key: &Key,
        options: &GetOptions,
        vouched: &str,
    ) -> Option<Response<ResponseBody>> {
        let read = match self.store.read_local_copy(key, options).await {
            Ok(read) => read?,
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "S3 forward: local copy unreadable");
                return None;
            }
        };
        match read {
            Read::Found { object, .. } if object.meta.etag.as_deref() != Some(vouched) => None,
            Read::Found { object, span } => {
                let Object {
                    mut meta,
                    body,
                    tier,
                } = object;
                let stored = StoredEtag::parse(vouched);
                meta.etag = Some(stored.etag);
                self.metrics
                    .forward_bytes
                    .with_label_values(&["local"])
                    .inc_by(span.end - span.start);
                let response = found(&meta, span, options.range.is_some(), body::stream(body));
                let mut response = with_sealed(with_tier(response, tier), stored.kms.as_deref());
                set_outcome(&mut response, "hit");
                Some(response)
            }
            // No copy any more, or a range it cannot satisfy (S3 gives the 416 with the length
            // of the object it holds); no preconditions were asked of the copy.
            Read::RangeNotSatisfiable(_)
            | Read::Missing
            | Read::NotModified(_)
            | Read::PreconditionFailed => None,
        }
    }

    /// The running fill's object, as S3 would have served it (the client's range applied to
    /// the growing file); `None` when the fill already failed or the range is S3's to refuse.
    fn serve_fill(
        &self,
        follower: Follower,
        options: &GetOptions,
    ) -> Option<Response<ResponseBody>> {
        if follower.failed() {
            return None;
        }
        let meta = follower.source.meta.clone();
        let span = match options.range {
            None => 0..meta.len,
            Some(range) => range.resolve(meta.len)?,
        };
        let kms = follower.source.kms.clone();
        let from_fill = follower.tail(span.clone(), self.metrics.clone());
        let counter = self.metrics.forward_bytes.with_label_values(&["local"]);
        let counted: crate::store::ByteStream =
            Box::pin(futures_util::StreamExt::inspect(from_fill, move |chunk| {
                if let Ok(chunk) = chunk {
                    counter.inc_by(chunk.len() as u64);
                }
            }));
        let response = found(&meta, span, options.range.is_some(), body::stream(counted));
        let mut response = with_sealed(with_tier(response, Tier::Disk), kms.as_deref());
        set_outcome(&mut response, "hit");
        Some(response)
    }

    /// S3's 200 for a whole object, streamed to the client and into a new local copy (when it
    /// has a length and an ETag, fits the disk tier, and is encrypted in no way that keeps
    /// copies out, see [`Sealed`]). A `stale` copy that cannot be
    /// replaced is dropped: it would only cost a 200 on every read. The fill is announced to
    /// other GETs of the key through `leader` (or a leader taken now, when the key has none).
    async fn relay_and_fill(
        &self,
        answer: Response<Incoming>,
        target: &Target<'_>,
        key: Key,
        ticket: crate::store::disk::FillTicket,
        stale: bool,
        leader: Option<Leader>,
    ) -> Response<ResponseBody> {
        let headers = answer.headers();
        let len = content_length(headers);
        let etag = unquoted_etag(headers);
        let fits = len.is_some_and(|len| len <= self.store.disk().settings().max_size);
        let sealed = Sealed::of_answer(headers);
        let keep = sealed.may_keep(target.endpoint.cache_kms);
        let (Some(len), Some(etag), true, true) = (len, etag, fits, keep) else {
            if stale {
                self.drop_copy(&key, &ticket).await;
            }
            return self.relay(answer, target, true);
        };
        let stored = StoredEtag::new(etag.clone(), &sealed);
        let meta = EntryMeta {
            attrs: put_options(headers).map(|o| o.attrs).unwrap_or_default(),
            etag: EtagSource::Known(stored.to_stored()),
            modified: header_str(headers, "last-modified")
                .and_then(|date| httpdate::parse_http_date(date).ok()),
        };
        let object = ObjectMeta {
            len,
            modified: meta.modified.unwrap_or_else(std::time::SystemTime::now),
            crc32c: None,
            etag: Some(etag),
            attrs: meta.attrs.clone(),
        };
        let copy = match self.store.start_copy(&key, len, meta).await {
            Ok(copy) => copy,
            Err(e) => {
                tracing::debug!(key = %key, error = %e, "S3 forward: no room for a local copy");
                if stale {
                    self.drop_copy(&key, &ticket).await;
                }
                return self.relay(answer, target, true);
            }
        };
        let leader = leader.or_else(|| self.flights.lead_if_free(&key));
        if let Some(leader) = &leader {
            leader.filling(Arc::new(Source {
                meta: object,
                file: copy.file(),
                body_offset: copy.body_offset(),
                kms: stored.kms,
            }));
        }
        let (parts, incoming) = answer.into_parts();
        let from_s3 = body_stream(incoming, target.endpoint.response_timeout);
        let to_client = tee_into_copy(self.store.clone(), key, ticket, copy, leader, from_s3);
        self.respond_as_s3(
            parts.status,
            &parts.headers,
            body::stream(self.counted_from_s3(to_client)),
        )
    }
}

/// A response served from the node for an SSE-KMS object says so, as S3's would (the key's
/// id is not kept with the copy).
fn with_sealed(mut response: Response<ResponseBody>, kms: Option<&str>) -> Response<ResponseBody> {
    if let Some(value) = kms.and_then(|v| http::HeaderValue::from_str(v).ok()) {
        response
            .headers_mut()
            .insert("x-amz-server-side-encryption", value);
    }
    response
}

fn set_outcome(response: &mut Response<ResponseBody>, outcome: &'static str) {
    if let Some(o) = response
        .extensions_mut()
        .get_mut::<crate::server::access::Outcome>()
    {
        o.outcome = outcome;
    }
}
