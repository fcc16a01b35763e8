//! The node-local address: one IPv4 address, the same on every node (e.g. `169.254.20.11`),
//! that the daemon makes exist in the network namespace it runs in and binds `listen.s3` to,
//! so that build pods reach their own node's S3 listener under S3's host name (a host alias
//! maps the name to the address). NodeLocal DNSCache does the same for DNS.
//!
//! - **Where the address goes.** On a dummy link of its own (`node_local.interface`, `bcp0` by
//!   default), created through netlink. A kernel built without the dummy driver (some CI and
//!   sandbox kernels) refuses that link kind; the address then goes on `lo` as a /32, which
//!   Linux treats as a local address for traffic from any interface just the same. An address
//!   that is already a local address of some link is left where it is.
//! - **Idempotent.** Every step checks first: an existing dummy link is reused and set up, an
//!   address already there is kept. A restart or an upgrade finds everything in place.
//! - **Left in place on exit.** While the daemon restarts, the address stays, so a client gets
//!   an immediate "connection refused" from the node instead of waiting for a timeout on an
//!   address nobody answers. [`remove`] (`build-cache-proxy node-local down`) takes it away.
//! - **Least privilege.** Only this step and binding port 80 need `CAP_NET_ADMIN` and
//!   `CAP_NET_BIND_SERVICE`. Both happen before the runtime starts its threads; then
//!   [`drop_privileges`] switches the one thread there is to an unprivileged user, which
//!   clears every capability, and every thread started later inherits that.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::{Handle, LinkDummy, LinkUnspec};

use crate::config::Config;

/// Where the address is, once set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// On the dummy link of that name (made now or found).
    Dummy(String),
    /// On `lo`: the kernel has no dummy driver.
    Loopback,
    /// It was a local address of this link already (set up by something else).
    Existing(String),
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Placement::Dummy(name) => write!(f, "on {name} (dummy link)"),
            Placement::Loopback => write!(f, "on lo (this kernel has no dummy driver)"),
            Placement::Existing(name) => write!(f, "on {name} (found there)"),
        }
    }
}

/// What start-up made of `[node_local]`: shown on the status page and `/readyz`.
#[derive(Debug, Clone)]
pub enum NodeLocalState {
    /// The address exists and `listen.s3` is bound on it.
    Ready {
        listen: SocketAddr,
        placement: Placement,
    },
    /// It could not be set up (or bound); the pod stays unready.
    Failed { listen: String, reason: String },
}

impl NodeLocalState {
    pub fn is_ready(&self) -> bool {
        matches!(self, NodeLocalState::Ready { .. })
    }

    /// One line for the status page and `/readyz`.
    pub fn describe(&self) -> String {
        match self {
            NodeLocalState::Ready { listen, placement } => {
                format!("node-local address: {listen} (S3 listener), address {placement}\n")
            }
            NodeLocalState::Failed { listen, reason } => {
                format!("node-local address: {listen} NOT set up: {reason}\n")
            }
        }
    }
}

/// Why the address could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NodeLocalError {
    #[error("cannot open a netlink socket: {0}")]
    Socket(std::io::Error),
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        source: std::io::Error,
    },
    #[error("link {0} exists and is not a dummy link; choose another node_local.interface")]
    NotDummy(String),
    #[error("no link named lo")]
    NoLoopback,
}

/// The `errno` of a netlink answer, as an `io::Error` ("Operation not permitted (os error 1)").
fn io_error(e: rtnetlink::Error) -> std::io::Error {
    match e {
        rtnetlink::Error::NetlinkError(message) => message.to_io(),
        other => std::io::Error::other(other.to_string()),
    }
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(message) => message.code.map(|c| -c.get()),
        _ => None,
    }
}

const ENODEV: i32 = 19;
const EEXIST: i32 = 17;
const EOPNOTSUPP: i32 = 95;

fn netlink(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NodeLocalError {
    let what = what.into();
    move |e| NodeLocalError::Netlink {
        what,
        source: io_error(e),
    }
}

/// A netlink connection driven on the current runtime.
fn connect() -> Result<Handle, NodeLocalError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(NodeLocalError::Socket)?;
    tokio::spawn(connection);
    Ok(handle)
}

async fn link_by_name(handle: &Handle, name: &str) -> Result<Option<LinkMessage>, NodeLocalError> {
    match handle
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
    {
        Ok(link) => Ok(link),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
        Err(e) => Err(netlink(format!("looking up link {name}"))(e)),
    }
}

async fn link_name(handle: &Handle, index: u32) -> String {
    let found = handle
        .link()
        .get()
        .match_index(index)
        .execute()
        .try_next()
        .await;
    let name = found.ok().flatten().and_then(|link| {
        link.attributes.into_iter().find_map(|a| match a {
            LinkAttribute::IfName(name) => Some(name),
            _ => None,
        })
    });
    name.unwrap_or_else(|| format!("link #{index}"))
}

fn is_dummy(link: &LinkMessage) -> bool {
    link.attributes.iter().any(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos
            .iter()
            .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Dummy))),
        _ => false,
    })
}

/// The index of the link that holds `address` as a local address, if any.
async fn holder(handle: &Handle, address: Ipv4Addr) -> Result<Option<u32>, NodeLocalError> {
    let mut addresses = handle
        .address()
        .get()
        .set_address_filter(IpAddr::V4(address))
        .execute();
    while let Some(message) = addresses
        .try_next()
        .await
        .map_err(netlink("listing addresses"))?
    {
        let local = message.attributes.iter().any(|a| {
            matches!(a, AddressAttribute::Local(IpAddr::V4(a)) | AddressAttribute::Address(IpAddr::V4(a)) if *a == address)
        });
        if local {
            return Ok(Some(message.header.index));
        }
    }
    Ok(None)
}

async fn set_up(handle: &Handle, index: u32, name: &str) -> Result<(), NodeLocalError> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(netlink(format!("setting link {name} up")))
}

/// Makes `address` a local address of this network namespace: on the dummy link `interface`
/// (created if missing), or on `lo` when the kernel has no dummy driver. Safe to repeat.
pub async fn ensure(address: Ipv4Addr, interface: &str) -> Result<Placement, NodeLocalError> {
    let handle = connect()?;
    if let Some(index) = holder(&handle, address).await? {
        let name = link_name(&handle, index).await;
        // A dummy link that is down holds its address but routes nothing to it.
        set_up(&handle, index, &name).await?;
        return Ok(if name == interface {
            Placement::Dummy(name)
        } else if name == "lo" {
            Placement::Loopback
        } else {
            Placement::Existing(name)
        });
    }
    let (index, placement) = match link_by_name(&handle, interface).await? {
        Some(link) if is_dummy(&link) => (link.header.index, Placement::Dummy(interface.into())),
        Some(_) => return Err(NodeLocalError::NotDummy(interface.into())),
        None => {
            let made = handle
                .link()
                .add(LinkDummy::new(interface).up().build())
                .execute()
                .await;
            match made {
                // Made by a start that raced this one: use it.
                Ok(()) => {}
                Err(e) if errno(&e) == Some(EEXIST) => {}
                // "Unknown device type": no dummy driver in this kernel.
                Err(e) if errno(&e) == Some(EOPNOTSUPP) => {
                    let lo = link_by_name(&handle, "lo")
                        .await?
                        .ok_or(NodeLocalError::NoLoopback)?;
                    return add_address(&handle, lo.header.index, address, "lo")
                        .await
                        .map(|()| Placement::Loopback);
                }
                Err(e) => return Err(netlink(format!("creating dummy link {interface}"))(e)),
            }
            match link_by_name(&handle, interface).await? {
                Some(link) if is_dummy(&link) => {
                    (link.header.index, Placement::Dummy(interface.into()))
                }
                _ => return Err(NodeLocalError::NotDummy(interface.into())),
            }
        }
    };
    set_up(&handle, index, interface).await?;
    add_address(&handle, index, address, interface).await?;
    Ok(placement)
}

async fn add_address(
    handle: &Handle,
    index: u32,
    address: Ipv4Addr,
    name: &str,
) -> Result<(), NodeLocalError> {
    match handle
        .address()
        .add(index, IpAddr::V4(address), 32)
        .execute()
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(EEXIST) => Ok(()),
        Err(e) => Err(netlink(format!("adding {address}/32 to {name}"))(e)),
    }
}

/// Takes away what [`ensure`] made: the dummy link `interface` (and the address with it), or
/// the address on `lo`. Returns what was removed, `None` when there was nothing.
pub async fn remove(address: Ipv4Addr, interface: &str) -> Result<Option<String>, NodeLocalError> {
    let handle = connect()?;
    if let Some(link) = link_by_name(&handle, interface).await? {
        if !is_dummy(&link) {
            return Err(NodeLocalError::NotDummy(interface.into()));
        }
        handle
            .link()
            .del(link.header.index)
            .execute()
            .await
            .map_err(netlink(format!("deleting link {interface}")))?;
        return Ok(Some(format!("dummy link {interface}")));
    }
    let Some(lo) = link_by_name(&handle, "lo").await? else {
        return Ok(None);
    };
    let mut addresses = handle
        .address()
        .get()
        .set_link_index_filter(lo.header.index)
        .set_address_filter(IpAddr::V4(address))
        .execute();
    let Some(message) = addresses
        .try_next()
        .await
        .map_err(netlink("listing addresses on lo"))?
    else {
        return Ok(None);
    };
    handle
        .address()
        .del(message)
        .execute()
        .await
        .map_err(netlink(format!("deleting {address}/32 from lo")))?;
    Ok(Some(format!("{address}/32 on lo")))
}

/// What [`prepare`] hands to the daemon: the S3 listener bound on the address, and the state
/// to report.
pub struct Prepared {
    pub s3_listener: Option<std::net::TcpListener>,
    pub state: Option<NodeLocalState>,
}

/// Runs before the daemon's runtime exists: with `[node_local]`, sets up the address, binds
/// `listen.s3` on it and drops privileges. A failure to set up or bind is not an error here: it
/// is logged once and reported (unready, metric), so the pod says why instead of restarting.
/// Only a failure to drop privileges stops the daemon.
pub fn prepare(config: &Config) -> anyhow::Result<Prepared> {
    let node = &config.node_local;
    if node.address.is_empty() {
        return Ok(Prepared {
            s3_listener: None,
            state: None,
        });
    }
    // Validated with the config.
    let address: Ipv4Addr = node.address.parse()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let set_up = runtime.block_on(ensure(address, &node.interface));
    drop(runtime);
    let (listener, state) = match set_up {
        Ok(placement) => match std::net::TcpListener::bind(&config.listen.s3)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
        {
            Ok(listener) => {
                let listen = listener.local_addr()?;
                tracing::info!(
                    address = %address,
                    listen = %listen,
                    placement = %placement,
                    "node-local address ready"
                );
                (Some(listener), NodeLocalState::Ready { listen, placement })
            }
            Err(e) => (
                None,
                failed(config, format!("listen.s3: cannot listen on it: {e}")),
            ),
        },
        Err(e) => (None, failed(config, e.to_string())),
    };
    drop_privileges(node.run_as_user, node.run_as_group)?;
    Ok(Prepared {
        s3_listener: listener,
        state: Some(state),
    })
}

fn failed(config: &Config, reason: String) -> NodeLocalState {
    // The one line that says why the pod is not ready.
    tracing::error!(
        address = %config.node_local.address,
        interface = %config.node_local.interface,
        listen = %config.listen.s3,
        "node-local address not set up, the pod stays unready: {reason}"
    );
    NodeLocalState::Failed {
        listen: config.listen.s3.clone(),
        reason,
    }
}

/// Switches the process to `uid`:`gid` with no supplementary groups, which clears every
/// capability. 0 keeps the user it runs as. Must run while the process has one thread only
/// (the calls change the calling thread), which it checks.
pub fn drop_privileges(uid: u32, gid: u32) -> anyhow::Result<()> {
    use rustix::process::{Gid, Uid};
    if uid == 0 {
        return Ok(());
    }
    let threads = std::fs::read_dir("/proc/self/task")?.count();
    if threads != 1 {
        anyhow::bail!("node_local.run_as_user: cannot switch users with {threads} threads running");
    }
    let gid = Gid::from_raw(gid);
    let uid = Uid::from_raw(uid);
    let switch = || -> std::io::Result<()> {
        rustix::thread::set_thread_groups(&[])?;
        rustix::thread::set_thread_res_gid(gid, gid, gid)?;
        rustix::thread::set_thread_res_uid(uid, uid, uid)?;
        Ok(())
    };
    switch().map_err(|e| {
        anyhow::anyhow!("node_local.run_as_user: cannot switch to {uid:?}:{gid:?}: {e}")
    })?;
    tracing::info!(uid = uid.as_raw(), gid = gid.as_raw(), "privileges dropped");
    Ok(())
}
