//! Listings of the tiered store: the backend's pages merged with what the write-back queue
//! still owes it, or the disk tier's own entries for a namespace that never reaches a backend.

use std::collections::BTreeMap;

use super::{Remote, Route, TieredStore};
use crate::store::backend::{Backend, ListRequest, Listed, Listing};
use crate::store::listing::Line;
use crate::store::write_back::Op;
use crate::store::{Key, Namespace, ObjectMeta, Store, StoreError};

impl<B: Backend> TieredStore<B> {
    /// One page of a namespace's objects: the backend's listing merged with what the write-back
    /// queue still owes it (objects written here and not uploaded yet are listed with their
    /// local size, ETag and date; objects deleted here and not yet in the backend are not
    /// listed), or the disk tier's own entries for a namespace that never reaches a backend.
    ///
    /// [`Listing::next`] is the page's last line (a name or a common prefix); passed back as
    /// the continuation, the next page starts after it.
    pub async fn list(&self, request: &ListRequest) -> Result<Listing, StoreError> {
        if request.max_keys == 0 {
            return Ok(Listing::default());
        }
        match (&self.remote, self.route(&request.namespace)) {
            (Some(remote), Route::Through(_) | Route::Back(_)) => {
                self.list_merged(remote, request).await
            }
            _ => self.list_local(request).await,
        }
    }

    async fn list_local(&self, request: &ListRequest) -> Result<Listing, StoreError> {
        let disk = self.disk.clone();
        let req = request.clone();
        let (lines, more) = tokio::task::spawn_blocking(move || disk.list_names(&req))
            .await
            .map_err(std::io::Error::other)?;
        let mut page = Listing::default();
        for line in lines {
            match line {
                Line::Prefix(common) => page.common_prefixes.push(common),
                Line::Name(name) => {
                    let Some(key) = stored_key(&request.namespace, &name) else {
                        continue;
                    };
                    // Removed since the names were read: not listed.
                    if let Some(meta) = self.disk.head(&key).await? {
                        page.objects.push(listed(name, &meta));
                    }
                }
            }
        }
        let last = page_last(&page);
        page.next = last.filter(|_| more);
        Ok(page)
    }

    async fn list_merged(
        &self,
        remote: &Remote<B>,
        request: &ListRequest,
    ) -> Result<Listing, StoreError> {
        let backend = remote.backend();
        let delimiter = request.delimiter.as_deref().filter(|d| !d.is_empty());
        let pending = match &remote.queue {
            Some(queue) => queue.pending_under(&request.namespace, &request.prefix),
            None => Vec::new(),
        };
        let line_of = |key: &Key| Line::of(key.name(), &request.prefix, delimiter);
        // Everything up to `last` is listed (or was, on an earlier page).
        let mut last: Option<String> = request
            .continuation
            .clone()
            .or_else(|| request.start_after.clone());
        let mut page = Listing::default();
        let mut lines = 0usize;
        let mut next_pending = 0usize;
        let mut backend_token: Option<String> = None;
        loop {
            let backend_page = backend
                .list(&ListRequest {
                    namespace: request.namespace.clone(),
                    prefix: request.prefix.clone(),
                    delimiter: request.delimiter.clone(),
                    continuation: backend_token.take(),
                    start_after: last.clone(),
                    max_keys: (request.max_keys + 1).min(1000),
                })
                .await?;
            // This batch: the backend's lines, then what the queue says about them.
            let mut batch: BTreeMap<String, Merged> = BTreeMap::new();
            for object in backend_page.objects {
                batch.insert(object.name.clone(), Merged::Backend(object));
            }
            for common in backend_page.common_prefixes {
                batch.insert(common, Merged::Prefix { confirmed: false });
            }
            let more_in_backend = backend_page.next.is_some();
            // The backend's next page starts after its last line: queued ops up to there
            // belong to this batch.
            let horizon = if more_in_backend {
                batch.keys().next_back().cloned().or_else(|| last.clone())
            } else {
                None
            };
            while let Some((key, op)) = pending.get(next_pending) {
                let line = line_of(key);
                if horizon.as_deref().is_some_and(|h| line.key() > h) {
                    break;
                }
                next_pending += 1;
                match (line, op) {
                    (Line::Prefix(common), Op::Put { .. }) => {
                        batch.insert(common, Merged::Prefix { confirmed: true });
                    }
                    (Line::Name(name), Op::Put { .. }) => {
                        batch.insert(name, Merged::Local(key.clone()));
                    }
                    (Line::Name(name), Op::Delete) => {
                        batch.remove(&name);
                    }
                    // Whether anything else is left under it is decided below, if listed.
                    (Line::Prefix(_), Op::Delete) => {}
                }
            }
            for (line_key, merged) in batch {
                if last.as_deref().is_some_and(|l| line_key.as_str() <= l) {
                    continue;
                }
                let shown = match merged {
                    Merged::Backend(object) => Some(Shown::Object(object)),
                    Merged::Local(key) => self
                        .disk
                        .head(&key)
                        .await?
                        .map(|meta| Shown::Object(listed(key.name().to_string(), &meta))),
                    Merged::Prefix { confirmed } => {
                        let holds = confirmed
                            || self
                                .holds_undeleted(backend, &request.namespace, &line_key, &pending)
                                .await?;
                        holds.then(|| Shown::Prefix(line_key.clone()))
                    }
                };
                let Some(shown) = shown else {
                    continue;
                };
                if lines == request.max_keys {
                    page.next = page_last(&page);
                    return Ok(page);
                }
                lines += 1;
                last = Some(line_key);
                match shown {
                    Shown::Object(object) => page.objects.push(object),
                    Shown::Prefix(common) => page.common_prefixes.push(common),
                }
            }
            match backend_page.next {
                Some(token) => backend_token = Some(token),
                None => return Ok(page),
            }
        }
    }

    /// Whether the backend holds a name under `common` that has no delete queued: a common
    /// prefix of the backend's listing is shown only then.
    async fn holds_undeleted(
        &self,
        backend: &B,
        namespace: &Namespace,
        common: &str,
        pending: &[(Key, Op)],
    ) -> Result<bool, StoreError> {
        let deleted = |name: &str| {
            pending
                .binary_search_by(|(key, _)| key.name().cmp(name))
                .is_ok_and(|at| pending[at].1 == Op::Delete)
        };
        if !pending
            .iter()
            .any(|(key, op)| *op == Op::Delete && key.name().starts_with(common))
        {
            return Ok(true);
        }
        let mut token = None;
        loop {
            let page = backend
                .list(&ListRequest {
                    namespace: namespace.clone(),
                    prefix: common.to_string(),
                    delimiter: None,
                    continuation: token.take(),
                    start_after: None,
                    max_keys: 1000,
                })
                .await?;
            if page.objects.iter().any(|o| !deleted(&o.name)) {
                return Ok(true);
            }
            match page.next {
                Some(next) => token = Some(next),
                None => return Ok(false),
            }
        }
    }
}

/// A line of a merged listing, before it is decided.
enum Merged {
    /// The backend's object, as it lists it.
    Backend(Listed),
    /// Written here and not uploaded yet: listed as the local entry is.
    Local(Key),
    /// A common prefix; `confirmed` when a queued upload is under it (else it is shown only if
    /// the backend has a name under it without a queued delete).
    Prefix { confirmed: bool },
}

enum Shown {
    Object(Listed),
    Prefix(String),
}

fn listed(name: String, meta: &ObjectMeta) -> Listed {
    Listed {
        name,
        len: meta.len,
        etag: meta.etag.clone(),
        modified: meta.modified,
    }
}

/// The last line of a page (its objects and common prefixes are each in order).
fn page_last(page: &Listing) -> Option<String> {
    let object = page.objects.last().map(|o| o.name.as_str());
    let common = page.common_prefixes.last().map(String::as_str);
    object.max(common).map(str::to_string)
}

/// The key of a stored name (Gradle's names are validated as Gradle's).
fn stored_key(namespace: &Namespace, name: &str) -> Option<Key> {
    if *namespace == Namespace::gradle() {
        Key::gradle(name).ok()
    } else {
        Key::object(namespace.clone(), name).ok()
    }
}
