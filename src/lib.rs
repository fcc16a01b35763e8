//! build-cache-proxy: a node-local cache daemon for CI builds.
//!
//! ```text
//! listener (hyper) → front (gradle | admin) → Store → tiers: memory (moka) → disk → S3
//! ```
//!
//! - [`server`] accepts connections, serves HTTP/1.1, writes one access log line per request and
//!   drains on SIGTERM. It knows nothing of any protocol.
//! - [`fronts`] translate a protocol into store operations and store outcomes back into that
//!   protocol's status codes; they own authentication and protocol quirks.
//! - [`store`] is one narrow streaming interface ([`store::Store`]) and its tiers; the
//!   composition in [`store::tiered`] is what the fronts use.
//! - [`config`] is the typed configuration tree; [`metrics`] defines every exported metric;
//!   [`daemon`] wires it all together; [`node_local`] makes the node-local address the S3
//!   listener binds to on a host-network DaemonSet.
//! - [`gradle_meta`] reads the task facts (type, path, execution time) from the head of each
//!   Gradle entry as it is stored, and tallies what hits saved, for the metrics and the admin
//!   front's status page.
//! - [`deps`] is the dependency proxy: Maven repositories and Gradle distributions pulled
//!   through the node into the store's `deps` namespace, served on the Gradle listener.

pub mod checksum;
pub mod config;
pub mod daemon;
pub mod deps;
pub mod fronts;
pub mod gradle_meta;
pub mod logging;
pub mod metrics;
pub mod node_local;
pub mod server;
pub mod store;
