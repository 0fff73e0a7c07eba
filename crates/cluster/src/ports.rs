//! Free loopback ports for servers.
//!
//! Ports are drawn below the kernel's ephemeral range: a port from that range can be taken
//! as the local end of some outgoing connection while its node is killed, and the node could
//! then not restart on it. Ports held by live clusters of this process are never handed out
//! twice. Another process can still take a port between the check and the server's bind;
//! [`Cluster::start`](crate::Cluster::start) retries that case with a new port.

use std::collections::BTreeSet;
use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::Error;

/// Ports owned by clusters alive in this process.
static HELD: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// Lowest port drawn; below it live well-known services.
const LOWEST: u16 = 10_000;

/// Reserves a port nobody listens on now; give it back with [`release`].
pub(crate) fn take() -> Result<u16, Error> {
    let (low, high) = ephemeral_range();
    let (from, to) = if low > LOWEST + 1_000 {
        (LOWEST, low - 1)
    } else {
        (high.saturating_add(1), u16::MAX)
    };
    let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
    let span = u64::from(to.saturating_sub(from)) + 1;
    for _ in 0..500 {
        let port = from + u16::try_from(random() % span).unwrap_or(0);
        if !held.contains(&port) && TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            held.insert(port);
            return Ok(port);
        }
    }
    // A crowded machine: let the kernel choose, from the ephemeral range after all.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|source| Error::Io {
        context: "finding a free port on 127.0.0.1".into(),
        source,
    })?;
    let port = listener
        .local_addr()
        .map_err(|source| Error::Io {
            context: "finding a free port on 127.0.0.1".into(),
            source,
        })?
        .port();
    held.insert(port);
    Ok(port)
}

/// Gives back ports from [`take`].
pub(crate) fn release(ports: impl IntoIterator<Item = u16>) {
    let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
    for port in ports {
        held.remove(&port);
    }
}

/// The kernel's range for local ports of outgoing connections.
fn ephemeral_range() -> (u16, u16) {
    fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut it = text.split_whitespace().map(|v| v.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32_768, 60_999))
}

/// A splitmix64 step over time, pid and a counter: spreads concurrent test processes over the
/// port range without a dependency on a random-number crate.
fn random() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut z = nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ COUNTER
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_mul(3);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
