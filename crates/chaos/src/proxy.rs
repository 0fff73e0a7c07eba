//! Network partitions between members on one machine: every member is reached by the others
//! through a TCP proxy of its own (its connection string in the group names the proxy's
//! port), and a proxy knows which member connects to it from the connection's
//! `application_name` (`pg_paxos <node_id>`, set by the extension's peer connections).
//!
//! A link is one direction: the link from A to B carries A's requests to B and their
//! answers. A cut link blackholes A's new connections to B (accepted, never answered, closed
//! when the link heals) and drops the ones it had, while B may still reach A. A slow link
//! holds every chunk it carries, both ways, for its delay. Connections from anyone else
//! (clients, a member to itself) always pass at full speed.
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Default)]
struct Links {
    cut: HashSet<(usize, usize)>,
    delay: HashMap<(usize, usize), Duration>,
}

/// The state of the links between members, as (from member, to member), and a signal that
/// it changed.
#[derive(Clone)]
pub struct Partitions {
    links: Arc<Mutex<Links>>,
    changed: watch::Sender<u64>,
}

impl Default for Partitions {
    fn default() -> Self {
        Partitions {
            links: Arc::new(Mutex::new(Links::default())),
            changed: watch::channel(0).0,
        }
    }
}

impl Partitions {
    fn change(&self, f: impl FnOnce(&mut Links)) {
        f(&mut self.links.lock().expect("partitions lock"));
        self.changed.send_modify(|n| *n += 1);
    }

    /// Cuts both directions between every member of `side` and every other member.
    pub fn isolate(&self, side: &[usize], members: usize) {
        self.change(|links| {
            for &a in side {
                for b in (0..members).filter(|b| !side.contains(b)) {
                    links.cut.insert((a, b));
                    links.cut.insert((b, a));
                }
            }
        });
    }

    /// Cuts the links from `member` to every other member: it reaches no one, while the
    /// others still reach it.
    pub fn mute(&self, member: usize, members: usize) {
        self.change(|links| {
            for other in (0..members).filter(|&o| o != member) {
                links.cut.insert((member, other));
            }
        });
    }

    /// Cuts the links from every other member to `member`: no one reaches it, while it
    /// still reaches them.
    pub fn deafen(&self, member: usize, members: usize) {
        self.change(|links| {
            for other in (0..members).filter(|&o| o != member) {
                links.cut.insert((other, member));
            }
        });
    }

    /// Splits the members other than `bridge` into two halves (by index) that cannot reach
    /// each other, both ways; `bridge` still reaches, and is reached by, everyone.
    pub fn bridge(&self, bridge: usize, members: usize) {
        let others: Vec<usize> = (0..members).filter(|&m| m != bridge).collect();
        let (left, right) = others.split_at(others.len().div_ceil(2));
        self.change(|links| {
            for &a in left {
                for &b in right {
                    links.cut.insert((a, b));
                    links.cut.insert((b, a));
                }
            }
        });
    }

    /// Delays everything on the links to and from `member` by `delay`.
    pub fn slow(&self, member: usize, delay: Duration, members: usize) {
        self.change(|links| {
            for other in (0..members).filter(|&o| o != member) {
                links.delay.insert((member, other), delay);
                links.delay.insert((other, member), delay);
            }
        });
    }

    pub fn heal(&self) {
        self.change(|links| *links = Links::default());
    }

    fn is_cut(&self, from: usize, to: usize) -> bool {
        self.links
            .lock()
            .expect("partitions lock")
            .cut
            .contains(&(from, to))
    }

    fn delay(&self, from: usize, to: usize) -> Duration {
        self.links
            .lock()
            .expect("partitions lock")
            .delay
            .get(&(from, to))
            .copied()
            .unwrap_or_default()
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
    let delay = || from.map_or(Duration::ZERO, |f| partitions.delay(f, to));
    let (mut client_in, mut client_out) = client.split();
    let (mut server_in, mut server_out) = server.split();
    tokio::select! {
        _ = pump(&mut client_in, &mut server_out, delay) => {}
        _ = pump(&mut server_in, &mut client_out, delay) => {}
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

/// Copies `from` to `to` until either end closes, holding each chunk for `delay()` first.
async fn pump(
    from: &mut (impl AsyncRead + Unpin),
    to: &mut (impl AsyncWrite + Unpin),
    delay: impl Fn() -> Duration,
) -> std::io::Result<()> {
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let n = from.read(&mut buffer).await?;
        if n == 0 {
            return Ok(());
        }
        let held = delay();
        if !held.is_zero() {
            tokio::time::sleep(held).await;
        }
        to.write_all(&buffer[..n]).await?;
    }
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

    fn cut_links(partitions: &Partitions, members: usize) -> Vec<(usize, usize)> {
        let mut cut = Vec::new();
        for a in 0..members {
            for b in 0..members {
                if partitions.is_cut(a, b) {
                    cut.push((a, b));
                }
            }
        }
        cut
    }

    #[test]
    fn a_mute_member_reaches_no_one_and_a_deaf_one_is_reached_by_no_one() {
        let partitions = Partitions::default();
        partitions.mute(1, 3);
        assert_eq!(cut_links(&partitions, 3), [(1, 0), (1, 2)]);
        partitions.heal();
        partitions.deafen(1, 3);
        assert_eq!(cut_links(&partitions, 3), [(0, 1), (2, 1)]);
    }

    #[test]
    fn a_bridge_alone_joins_two_halves() {
        let partitions = Partitions::default();
        partitions.bridge(2, 5);
        assert_eq!(
            cut_links(&partitions, 5),
            [
                (0, 3),
                (0, 4),
                (1, 3),
                (1, 4),
                (3, 0),
                (3, 1),
                (4, 0),
                (4, 1)
            ]
        );
        partitions.heal();
        partitions.bridge(1, 3);
        assert_eq!(cut_links(&partitions, 3), [(0, 2), (2, 0)]);
    }

    #[test]
    fn a_slow_member_delays_its_links_both_ways_until_healed() {
        let partitions = Partitions::default();
        let delay = Duration::from_millis(80);
        partitions.slow(0, delay, 3);
        assert_eq!(partitions.delay(0, 2), delay);
        assert_eq!(partitions.delay(1, 0), delay);
        assert_eq!(partitions.delay(1, 2), Duration::ZERO);
        partitions.heal();
        assert_eq!(partitions.delay(0, 2), Duration::ZERO);
    }

    /// A startup packet from member `node`.
    fn startup(node: &str) -> Vec<u8> {
        let mut body = vec![0, 3, 0, 0];
        for field in ["application_name", &format!("pg_paxos {node}"), ""] {
            body.extend(field.as_bytes());
            body.push(0);
        }
        let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        packet.extend(body);
        packet
    }

    #[tokio::test]
    async fn a_slow_link_holds_what_it_carries_for_its_delay() {
        // An echo server stands in for the member.
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server_port = server.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut peer, _) = server.accept().await.unwrap();
            let (mut read, mut write) = peer.split();
            let _ = tokio::io::copy(&mut read, &mut write).await;
        });
        let members = HashMap::from([("a".to_owned(), 0), ("b".to_owned(), 1)]);
        let partitions = Partitions::default();
        let proxy = Proxy::start(1, server_port, members, partitions.clone())
            .await
            .unwrap();
        let delay = Duration::from_millis(150);
        partitions.slow(0, delay, 2);
        let mut client = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
        let packet = startup("a");
        client.write_all(&packet).await.unwrap();
        let mut echoed = vec![0; packet.len()];
        client.read_exact(&mut echoed).await.unwrap();
        assert_eq!(echoed, packet);
        let began = std::time::Instant::now();
        client.write_all(b"ping").await.unwrap();
        let mut pong = [0; 4];
        client.read_exact(&mut pong).await.unwrap();
        assert_eq!(&pong, b"ping");
        // Held once on the way there and once on the way back: a lower bound only.
        assert!(began.elapsed() >= delay * 2, "{:?}", began.elapsed());
    }
}
