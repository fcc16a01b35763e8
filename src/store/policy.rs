//! What each namespace asks of the store: where its objects live in the backend, when a write
//! is acknowledged, whether a local hit must be confirmed against the backend, and how large
//! an object it caches.
//!
//! Gradle's namespace is content-addressed: an entry never changes, so a local hit is served as
//! it is. The S3 front's buckets hold mutable objects (a GitLab cache archive is overwritten by
//! every pipeline, from any node), so their hits are revalidated. [`Policies`] maps each
//! namespace to its [`NamespacePolicy`], with a default for namespaces not named.

use std::collections::HashMap;

use super::Namespace;

/// When a write is acknowledged, relative to the backend having it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Once durable on local disk; uploaded afterwards from the persistent queue.
    Back,
    /// Only once the backend has the object.
    Through,
    /// Never sent to the backend: the namespace is this node's alone.
    Local,
}

/// Whether a local copy may be served without asking the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// The key's bytes never change (content-addressed): a local hit is served as is.
    Immutable,
    /// The key may be overwritten elsewhere: a local hit is confirmed with a conditional
    /// request to the backend before it is served.
    Revalidate,
}

/// Where a namespace's objects live in the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendLocation {
    pub bucket: String,
    /// Prepended to the key's name (a `/` is added when missing, unless empty).
    pub prefix: String,
}

/// One namespace's policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespacePolicy {
    pub write: WriteMode,
    pub freshness: Freshness,
    /// Largest object kept in the local tiers; a larger one streams through from the backend.
    /// `None`: as large as the disk tier can hold.
    pub max_object_size: Option<u64>,
    /// `None`: the backend's default bucket, under `<prefix><namespace>/`.
    pub location: Option<BackendLocation>,
}

impl Default for NamespacePolicy {
    /// Gradle's: written back, immutable, any size, in the default bucket.
    fn default() -> Self {
        NamespacePolicy {
            write: WriteMode::Back,
            freshness: Freshness::Immutable,
            max_object_size: None,
            location: None,
        }
    }
}

/// The policy of every namespace.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    default: NamespacePolicy,
    namespaces: HashMap<Namespace, NamespacePolicy>,
}

impl Policies {
    /// Every namespace follows `default` unless given its own.
    pub fn new(default: NamespacePolicy) -> Policies {
        Policies {
            default,
            namespaces: HashMap::new(),
        }
    }

    pub fn with(mut self, namespace: Namespace, policy: NamespacePolicy) -> Policies {
        self.namespaces.insert(namespace, policy);
        self
    }

    /// The policy of `namespace`.
    pub fn of(&self, namespace: &Namespace) -> &NamespacePolicy {
        self.namespaces.get(namespace).unwrap_or(&self.default)
    }

    /// The namespaces with a policy of their own.
    pub fn named(&self) -> impl Iterator<Item = (&Namespace, &NamespacePolicy)> {
        self.namespaces.iter()
    }
}
