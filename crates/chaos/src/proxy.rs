//! Network partitions between members on one machine: every member is reached by the others
//! through a TCP proxy of its own (its connection string in the group names the proxy's
//! port), and a proxy knows which member connects to it from the connection's
//! `application_name` (`pg_paxos <node_id>`, set by the extension's peer connections). A cut
//! link from A to B blackholes A's new connections to B (accepted, never answered, closed
//! when the link heals) and drops the ones it had. Connections from anyone else (clients,
//! a member to itself) always pass.
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The links currently cut, as (from member, to member), and a signal that they changed.
#[derive(Clone)]
pub struct Partitions {
    cut: Arc<Mutex<HashSet<(usize, usize)>>>,
    changed: watch::Sender<u64>,
}

impl Default for Partitions {
    fn default() -> Self {
        Partitions {
            cut: Arc::new(Mutex::new(HashSet::new())),
            changed: watch::channel(0).0,
        }
    }
}

impl Partitions {
    /// Cuts both directions between every member of `side` and every other member.
    pub fn isolate(&self, side: &[usize], members: usize) {
        let mut cut = self.cut.lock().expect("partitions lock");
        for &a in side {
            for b in (0..members).filter(|b| !side.contains(b)) {
                cut.insert((a, b));
                cut.insert((b, a));
            }
        }
        drop(cut);
        self.changed.send_modify(|n| *n += 1);
    }

    pub fn heal(&self) {
        self.cut.lock().expect("partitions lock").clear();
        self.changed.send_modify(|n| *n += 1);
    }

    fn is_cut(&self, from: usize, to: usize) -> bool {
        self.cut
            .lock()
            .expect("partitions lock")
            .contains(&(from, to))
    }
}

/// A running proxy in front of member `to`.
pub struct Proxy {
    pub port: u16,
    task: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `target_port`; `members` maps each
    /// member's node id to its index.
    pub async fn start(
        to: usize,
        target_port: u16,
        members: HashMap<String, usize>,
        partitions: Partitions,
    ) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let members = Arc::new(members);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (members, partitions) = (members.clone(), partitions.clone());
                tokio::spawn(async move {
                    let _ = forward(client, to, target_port, &members, &partitions).await;
                });
            }
        });
        Ok(Proxy { port, task })
    }
}

/// Reads the client's startup packet, learns who it is, then either pipes it to the member
/// until its link is cut, or holds it unanswered while the link is cut.
async fn forward(
    mut client: TcpStream,
    to: usize,
    target_port: u16,
    members: &HashMap<String, usize>,
    partitions: &Partitions,
) -> std::io::Result<()> {
    let startup = read_startup(&mut client).await?;
    let from = application_name(&startup)
        .and_then(|name| name.strip_prefix("pg_paxos ").map(str::to_owned))
        .and_then(|node| members.get(&node).copied())
        .filter(|&from| from != to);
    let mut changed = partitions.changed.subscribe();
    let link_cut = |partitions: &Partitions| from.is_some_and(|f| partitions.is_cut(f, to));
    while link_cut(partitions) {
        // Blackholed: no answer until the link heals (the client times out first).
        if changed.changed().await.is_err() {
            return Ok(());
        }
    }
    let mut server = TcpStream::connect(("127.0.0.1", target_port)).await?;
    server.write_all(&startup).await?;
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = async {
            loop {
                if changed.changed().await.is_err() || link_cut(partitions) {
                    break;
                }
            }
        } => {}
    }
    Ok(())
}

/// The startup packet, after declining an SSL or GSS encryption request if one comes first.
async fn read_startup(client: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    const SSL_REQUEST: u32 = 80_877_103;
    const GSS_REQUEST: u32 = 80_877_104;
    loop {
        let length = client.read_u32().await?;
        if !(8..=10_000).contains(&length) {
            return Err(std::io::Error::other("not a PostgreSQL startup packet"));
        }
        let mut body = vec![0; length as usize - 4];
        client.read_exact(&mut body).await?;
        let code = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        if length == 8 && (code == SSL_REQUEST || code == GSS_REQUEST) {
            client.write_all(b"N").await?;
            continue;
        }
        let mut packet = length.to_be_bytes().to_vec();
        packet.extend(body);
        return Ok(packet);
    }
}

/// The `application_name` parameter of a startup packet.
fn application_name(packet: &[u8]) -> Option<String> {
    let fields: Vec<&[u8]> = packet.get(8..)?.split(|b| *b == 0).collect();
    fields
        .chunks(2)
        .find(|pair| pair[0] == b"application_name")
        .and_then(|pair| pair.get(1))
        .map(|value| String::from_utf8_lossy(value).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_application_name_is_read_from_a_startup_packet() {
        let mut packet = vec![0, 0, 0, 0, 0, 3, 0, 0];
        for field in ["user", "postgres", "application_name", "pg_paxos n1", ""] {
            packet.extend(field.as_bytes());
            packet.push(0);
        }
        assert_eq!(application_name(&packet).as_deref(), Some("pg_paxos n1"));
        assert_eq!(application_name(&packet[..8]), None);
    }

    #[test]
    fn isolating_a_side_cuts_both_directions_to_everyone_else() {
        let partitions = Partitions::default();
        partitions.isolate(&[0], 3);
        assert!(partitions.is_cut(0, 1) && partitions.is_cut(2, 0));
        assert!(!partitions.is_cut(1, 2));
        partitions.heal();
        assert!(!partitions.is_cut(0, 1));
    }
}
