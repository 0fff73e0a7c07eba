//! Local PostgreSQL clusters for pg_paxos: the one harness behind the integration tests, the
//! demo and the benchmark, so the cluster a user runs is the one the tests trust.
//!
//! What it guarantees:
//! - servers listen on 127.0.0.1 only (and on a Unix socket in the cluster's directory);
//! - when this process is root, servers run as the OS user `postgres` (PostgreSQL refuses to
//!   run as root), always without `RUST_BACKTRACE`, which would make every error slow;
//! - every wait (server ready, processes gone, a command) is bounded and fails with an
//!   [`Error`] that quotes the command output and the server log, instead of hanging;
//! - dropping a [`Cluster`] (also while a test panics) resumes paused nodes, stops every
//!   server and deletes the cluster directory. Set `PG_PAXOS_KEEP_CLUSTER=1` to keep the
//!   directory (data and logs) for a post-mortem; on a panic the log tails are printed.
//!
//! PostgreSQL binaries are taken from `/usr/lib/postgresql/15/bin`, or from the directory in
//! `PG_PAXOS_PG_BIN`.

mod error;
pub mod group;
mod ports;
mod process;

use std::fmt;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

pub use error::Error;
/// The tokio-postgres the harness connects with, so callers name the same `Client` type.
pub use tokio_postgres;

use process::{node_processes, postmaster, run, section, tail, ProcId};

/// Where Debian's PostgreSQL 15 keeps its server binaries.
const DEFAULT_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
/// Bound of every wait for a server: ready, stopped, processes gone.
const WAIT: Duration = Duration::from_secs(30);
/// Extra time a pg_ctl process gets beyond its own `-t` wait before it is killed.
const SLACK: Duration = Duration::from_secs(15);
/// initdb of several nodes at once on two busy cores can be slow.
const INITDB_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound of one `psql` call, connection included.
const PSQL_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound of [`Node::connect`]; callers wanting less wrap it in their own timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Fresh ports tried per node when another process took the one chosen.
const START_ATTEMPTS: usize = 8;
/// Largest Unix socket path (`sun_path` is 108 bytes with its terminating NUL).
const MAX_SOCKET_PATH: usize = 107;

/// What cluster to build.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Number of servers.
    pub nodes: usize,
    /// Preload the extension and give each node its `pg_paxos.node_id`. Off for tests of
    /// plain PostgreSQL (they then do not need the extension installed).
    pub preload_pg_paxos: bool,
    /// Lines appended to every node's configuration; they override the harness's own.
    pub extra_conf: Vec<String>,
    /// Names the nodes (`<name>-node<index>`) and the cluster directory: ASCII letters,
    /// digits, `-` and `_`.
    pub name: String,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            nodes: 3,
            preload_pg_paxos: true,
            extra_conf: Vec::new(),
            name: "pg_paxos".into(),
        }
    }
}

/// One server of a [`Cluster`].
#[derive(Debug)]
pub struct Node {
    /// Position in [`Cluster::nodes`].
    pub index: usize,
    /// TCP port on 127.0.0.1; a restart keeps it.
    pub port: u16,
    /// `<name>-node<index>`, also the node's `pg_paxos.node_id`.
    pub node_id: String,
    data_dir: PathBuf,
    log_path: PathBuf,
    psql: PathBuf,
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "node {} ({}, 127.0.0.1:{})",
            self.index, self.node_id, self.port
        )
    }
}

impl Node {
    /// A libpq/tokio-postgres connection string. An IP literal, never a host name: a name
    /// makes tokio resolve it on a helper thread, which a PostgreSQL backend must not have.
    pub fn connstr(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    /// Opens a tokio-postgres connection and drives it on a task of the current Tokio
    /// runtime, which must have IO and time enabled (`#[tokio::test]` does). Gives up after
    /// 30 s; a node that is paused answers nothing, so wrap the call in a shorter timeout
    /// where that is expected.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, Error> {
        self.connect_with(&self.connstr()).await
    }

    /// `connect`, as role `user` (the harness's servers trust loopback connections).
    pub async fn connect_as(&self, user: &str) -> Result<tokio_postgres::Client, Error> {
        let connstr = format!(
            "host=127.0.0.1 port={} user='{}' dbname=postgres",
            self.port,
            user.replace('\\', "\\\\").replace('\'', "\\'")
        );
        self.connect_with(&connstr).await
    }

    async fn connect_with(&self, connstr: &str) -> Result<tokio_postgres::Client, Error> {
        let connecting = tokio_postgres::connect(connstr, tokio_postgres::NoTls);
        let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| Error::Timeout {
                what: format!("connecting to {self}"),
                after: CONNECT_TIMEOUT,
                detail: String::new(),
            })?
            .map_err(|source| Error::Connect {
                node: self.to_string(),
                source,
            })?;
        tokio::spawn(async move {
            // A broken connection is reported by the client's next call; nothing to do here.
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Runs `sql` with `psql -X -A -t -v ON_ERROR_STOP=1` over TCP and returns its output
    /// without the trailing newline: one line per row, columns separated by `|`.
    /// Fails with psql's stderr on any error, and after 60 s (10 s to connect). Blocks the
    /// calling thread: in async code it stalls a runtime worker, so prefer
    /// [`connect`](Self::connect) there for anything but setup and checks.
    pub fn psql(&self, sql: &str) -> Result<String, Error> {
        let target = format!("{} connect_timeout=10", self.connstr());
        let mut cmd = Command::new(&self.psql);
        cmd.args([
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &target,
            "-c",
            sql,
        ]);
        let what = format!("psql on {self}");
        let out = run(&mut cmd, &what, PSQL_TIMEOUT)?;
        if !out.status.success() {
            return Err(Error::CommandFailed {
                what: format!("{what} running {sql:?}"),
                status: out.status.to_string(),
                detail: section("stderr", &out.stderr),
            });
        }
        Ok(out.stdout.trim_end_matches('\n').to_string())
    }

    /// The server log (written through `pg_ctl -l`, appended to across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.log_path.clone()
    }

    /// The data directory (canonical path).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

/// N local PostgreSQL servers in one temporary directory, stopped and deleted on drop.
///
/// Every method blocks the calling thread (processes are run and waited for), as does the
/// drop (about 0.2 s, up to 1–2 s when zombies must be reaped).
///
/// Methods taking a node index panic if it is out of range, like slice indexing.
#[derive(Debug)]
pub struct Cluster {
    base_dir: PathBuf,
    nodes: Vec<Node>,
    bin_dir: PathBuf,
    /// Uid and gid of `postgres` when servers must run as that user (we are root).
    owner: Option<(u32, u32)>,
    preload_pg_paxos: bool,
    extra_conf: Vec<String>,
    /// Keep the directory (data and logs) when dropped, as `PG_PAXOS_KEEP_CLUSTER` does.
    keep: std::sync::atomic::AtomicBool,
}

impl Cluster {
    /// Creates, configures and starts every node, returning once each accepts connections.
    /// On failure everything already made is stopped and deleted.
    pub fn start(opts: ClusterOptions) -> Result<Cluster, Error> {
        validate(&opts)?;
        let bin_dir = std::env::var_os("PG_PAXOS_PG_BIN")
            .map_or_else(|| PathBuf::from(DEFAULT_BIN_DIR), PathBuf::from);
        for tool in ["initdb", "pg_ctl", "postgres", "psql"] {
            if !bin_dir.join(tool).is_file() {
                return Err(Error::Environment(format!(
                    "{} not found (install PostgreSQL 15, or set PG_PAXOS_PG_BIN to its bin directory)",
                    bin_dir.join(tool).display()
                )));
            }
        }
        let owner = if process::is_root() {
            let ids = process::lookup_user("postgres").map_err(|e| {
                Error::Environment(format!(
                    "PostgreSQL refuses to run as root and the OS user postgres is unusable: {e}"
                ))
            })?;
            Some(ids)
        } else {
            None
        };
        let base_dir = create_base_dir(&opts.name, owner)?;
        // From here on, an early return drops `cluster`, which cleans up.
        let mut cluster = Cluster {
            base_dir,
            nodes: Vec::new(),
            bin_dir,
            owner,
            preload_pg_paxos: opts.preload_pg_paxos,
            extra_conf: opts.extra_conf,
            keep: std::sync::atomic::AtomicBool::new(false),
        };
        let socket = cluster.base_dir.join(".s.PGSQL.65535");
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(Error::Environment(format!(
                "Unix socket path {} is too long; use a shorter TMPDIR or cluster name",
                socket.display()
            )));
        }
        for index in 0..opts.nodes {
            let port = ports::take()?;
            cluster.nodes.push(Node {
                index,
                port,
                node_id: format!("{}-node{index}", opts.name),
                data_dir: cluster.base_dir.join(format!("node{index}")),
                log_path: cluster.base_dir.join(format!("node{index}.log")),
                psql: cluster.bin_dir.join("psql"),
            });
        }
        let started = thread::scope(|s| {
            let cluster = &cluster;
            let workers: Vec<_> = (0..opts.nodes)
                .map(|i| s.spawn(move || cluster.create_and_start(i)))
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect::<Vec<_>>()
        });
        let mut first_error = None;
        for (i, result) in started.into_iter().enumerate() {
            match result {
                Ok(port) => cluster.nodes[i].port = port,
                Err((port, e)) => {
                    cluster.nodes[i].port = port;
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(cluster),
        }
    }

    /// All nodes, in index order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// Keeps the cluster's directory (data and logs, servers stopped) when it is dropped,
    /// for a post-mortem of a failed check.
    pub fn keep_on_drop(&self) {
        self.keep.store(true, Ordering::Relaxed);
    }

    /// The directory holding every node's data directory, log and socket.
    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }

    /// Whether node `i`'s postmaster is alive (a paused node is).
    pub fn is_running(&self, i: usize) -> bool {
        postmaster(&self.nodes[i].data_dir).is_some()
    }

    /// Clean shutdown (`pg_ctl stop -m fast`) of node `i`, waiting until its processes are
    /// gone. A paused node is resumed first; a node that is not running is left as it is.
    pub fn stop(&self, i: usize) -> Result<(), Error> {
        let node = &self.nodes[i];
        let procs = node_processes(&node.data_dir);
        for p in &procs {
            // A stopped process cannot shut down.
            p.signal(libc::SIGCONT);
        }
        if postmaster(&node.data_dir).is_some() {
            self.pg_ctl(i, &["stop", "-m", "fast"])?;
        }
        self.wait_dead(i, &procs, false)
    }

    /// Crash of node `i`: SIGKILL to its postmaster and every child, then waits until all of
    /// them are gone, zombies reaped (a restart before that fails on `postmaster.pid`).
    /// Killing a node that is not running only removes leftover processes.
    pub fn kill(&self, i: usize) -> Result<(), Error> {
        let node = &self.nodes[i];
        let pm = postmaster(&node.data_dir);
        if let Some(pm) = pm {
            // Freeze it first so that it forks no child we would miss.
            pm.signal(libc::SIGSTOP);
        }
        let mut victims = node_processes(&node.data_dir);
        victims.extend(pm);
        for p in &victims {
            p.signal(libc::SIGKILL);
        }
        self.wait_dead(i, &victims, true)
    }

    /// Starts node `i` again, on the same port, after [`stop`](Self::stop) or
    /// [`kill`](Self::kill), and waits until it accepts connections (after crash recovery).
    pub fn restart(&self, i: usize) -> Result<(), Error> {
        let node = &self.nodes[i];
        if self.is_running(i) {
            return Err(Error::NodeState {
                node: node.to_string(),
                problem: "cannot restart: it is running; stop or kill it first".into(),
            });
        }
        // Children of a postmaster that died some other way may linger a moment.
        self.kill(i)?;
        // Nothing of this node is alive, so its lock files are stale. PostgreSQL would take
        // a reused pid in them for a live owner and refuse to start.
        for lock in [
            node.data_dir.join("postmaster.pid"),
            self.base_dir.join(format!(".s.PGSQL.{}.lock", node.port)),
        ] {
            match fs::remove_file(&lock) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(Error::Io {
                        context: format!("{node}: removing stale {}", lock.display()),
                        source,
                    })
                }
            }
        }
        self.pg_ctl(i, &["start", "-l", &node.log_path.to_string_lossy()])
    }

    /// Hangs node `i` without killing it: SIGSTOP to the postmaster, then to every child.
    /// Clients' connections stay open and get no answer until [`resume`](Self::resume).
    pub fn pause(&self, i: usize) -> Result<(), Error> {
        let node = &self.nodes[i];
        let pm = postmaster(&node.data_dir).ok_or_else(|| Error::NodeState {
            node: node.to_string(),
            problem: "cannot pause: it is not running".into(),
        })?;
        pm.signal(libc::SIGSTOP);
        // Once the postmaster is stopped it forks nothing, so the scan below is complete.
        process::wait_until(
            || format!("{node}: postmaster to stop on SIGSTOP"),
            WAIT,
            || pm.is_stopped() || !pm.is_live(),
        )?;
        for p in node_processes(&node.data_dir) {
            p.signal(libc::SIGSTOP);
        }
        Ok(())
    }

    /// Undoes [`pause`](Self::pause): SIGCONT to the children, then the postmaster. A no-op
    /// on a node that is not paused.
    pub fn resume(&self, i: usize) -> Result<(), Error> {
        let node = &self.nodes[i];
        let pm = postmaster(&node.data_dir);
        for p in node_processes(&node.data_dir) {
            if Some(p) != pm {
                p.signal(libc::SIGCONT);
            }
        }
        if let Some(pm) = pm {
            pm.signal(libc::SIGCONT);
        }
        Ok(())
    }

    /// initdb, configuration and first start of node `i`; returns the port it listens on,
    /// and on failure the port it holds (which may have changed on a retry).
    fn create_and_start(&self, i: usize) -> Result<u16, (u16, Error)> {
        let node = &self.nodes[i];
        self.create(i).map_err(|e| (node.port, e))?;
        let mut port = node.port;
        let mut attempt = 1;
        loop {
            self.write_conf(i, port).map_err(|e| (port, e))?;
            let log_start = fs::metadata(&node.log_path).map_or(0, |m| m.len());
            let log = node.log_path.to_string_lossy();
            let Err(e) = self.pg_ctl_on(node, port, &["start", "-l", &log]) else {
                return Ok(port);
            };
            if attempt == START_ATTEMPTS || !port_taken_since(&node.log_path, log_start) {
                return Err((port, e));
            }
            // Another process bound the port after we chose it: move to a fresh one.
            let next = ports::take().map_err(|e| (port, e))?;
            ports::release([port]);
            port = next;
            attempt += 1;
        }
    }

    /// initdb of node `i`, and the include of the harness's settings.
    fn create(&self, i: usize) -> Result<(), Error> {
        let node = &self.nodes[i];
        let data = node.data_dir.to_string_lossy();
        let mut initdb = self.server_command("initdb");
        initdb.args(["-D", &data, "-U", "postgres", "--auth=trust", "-E", "UTF8"]);
        // No fsync during initdb: the tests kill processes, never the machine.
        initdb.args(["--locale=C", "--no-sync", "--no-instructions"]);
        let what = format!("initdb of {node}");
        let out = run(&mut initdb, &what, INITDB_TIMEOUT)?;
        if !out.status.success() {
            return Err(Error::CommandFailed {
                what,
                status: out.status.to_string(),
                detail: section("output", &format!("{}{}", out.stdout, out.stderr)),
            });
        }
        let main_conf = node.data_dir.join("postgresql.conf");
        OpenOptions::new()
            .append(true)
            .open(&main_conf)
            .and_then(|mut f| {
                writeln!(
                    f,
                    "\n# The pg_paxos cluster harness keeps its settings there."
                )?;
                writeln!(f, "include 'cluster.conf'")
            })
            .map_err(|source| Error::Io {
                context: format!("{node}: appending to {}", main_conf.display()),
                source,
            })?;

        Ok(())
    }

    /// Writes `cluster.conf`, the node's settings, included from `postgresql.conf`.
    fn write_conf(&self, i: usize, port: u16) -> Result<(), Error> {
        let node = &self.nodes[i];
        let mut conf = format!(
            "# Written by the pg_paxos cluster harness (crates/cluster).\n\
             listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = '{}'\n\
             max_connections = 100\n\
             logging_collector = off\n\
             fsync = on\n",
            quote(&self.base_dir.to_string_lossy())
        );
        if self.preload_pg_paxos {
            conf.push_str("shared_preload_libraries = 'pg_paxos'\n");
            conf.push_str(&format!("pg_paxos.node_id = '{}'\n", quote(&node.node_id)));
        }
        for line in &self.extra_conf {
            conf.push_str(line);
            conf.push('\n');
        }
        let path = node.data_dir.join("cluster.conf");
        fs::write(&path, conf)
            .and_then(|()| match self.owner {
                Some((uid, gid)) => std::os::unix::fs::chown(&path, Some(uid), Some(gid)),
                None => Ok(()),
            })
            .map_err(|source| Error::Io {
                context: format!("{node}: writing {}", path.display()),
                source,
            })
    }

    /// `pg_ctl <args> -D <data> -w -t 30` for node `i`, failing with its output and log tail.
    fn pg_ctl(&self, i: usize, args: &[&str]) -> Result<(), Error> {
        let node = &self.nodes[i];
        self.pg_ctl_on(node, node.port, args)
    }

    fn pg_ctl_on(&self, node: &Node, port: u16, args: &[&str]) -> Result<(), Error> {
        let mut cmd = self.server_command("pg_ctl");
        cmd.args(args).arg("-D").arg(&node.data_dir).args([
            "-w",
            "-t",
            &WAIT.as_secs().to_string(),
        ]);
        // Not `{node}`: during a start retry the port differs from `node.port`.
        let what = format!(
            "pg_ctl {} of node {} ({}, 127.0.0.1:{port})",
            args[0], node.index, node.node_id
        );
        let out = run(&mut cmd, &what, WAIT + SLACK).map_err(|e| e.with_log(&node.log_path))?;
        if out.status.success() {
            return Ok(());
        }
        Err(Error::CommandFailed {
            what,
            status: out.status.to_string(),
            detail: section("output", &format!("{}{}", out.stdout, out.stderr)),
        }
        .with_log(&node.log_path))
    }

    /// A PostgreSQL server program, run as `postgres` when we are root, without
    /// `RUST_BACKTRACE` (which `/etc/environment` sets here and PAM may reinstate).
    fn server_command(&self, program: &str) -> Command {
        let mut cmd = if self.owner.is_some() {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--", "env"]);
            cmd
        } else {
            Command::new("env")
        };
        cmd.args(["-u", "RUST_BACKTRACE"])
            .arg(self.bin_dir.join(program))
            .env_remove("RUST_BACKTRACE")
            // The postgres user may not be allowed into our working directory.
            .current_dir(&self.base_dir);
        cmd
    }

    /// Waits until `procs` and any other process of node `i` are gone, killing stragglers
    /// found meanwhile (a child forked just before its postmaster died). With `reaped`,
    /// zombies count as present: a zombie postmaster still holds `postmaster.pid`.
    fn wait_dead(&self, i: usize, procs: &[ProcId], reaped: bool) -> Result<(), Error> {
        let node = &self.nodes[i];
        process::wait_until(
            || format!("{node}: processes to exit"),
            WAIT,
            || {
                let stragglers = node_processes(&node.data_dir);
                for p in &stragglers {
                    if reaped {
                        p.signal(libc::SIGKILL);
                    }
                }
                stragglers.is_empty()
                    && procs
                        .iter()
                        .all(|p| if reaped { !p.exists() } else { !p.is_live() })
            },
        )
        .map_err(|e| e.with_log(&node.log_path))
    }

    /// Best-effort teardown of node `i` for `Drop`: resume, immediate stop, SIGKILL fallback.
    fn shut_down(&self, i: usize) -> Result<(), Error> {
        let node = &self.nodes[i];
        let procs = node_processes(&node.data_dir);
        if procs.is_empty() {
            return Ok(());
        }
        for p in &procs {
            p.signal(libc::SIGCONT);
        }
        if postmaster(&node.data_dir).is_some()
            && self.pg_ctl(i, &["stop", "-m", "immediate"]).is_ok()
            && self.wait_dead(i, &procs, false).is_ok()
        {
            return Ok(());
        }
        self.kill(i)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if thread::panicking() {
            for node in &self.nodes {
                eprintln!(
                    "{}",
                    section(
                        &format!("{node}: last lines of {}", node.log_path.display()),
                        &tail(&node.log_path, 30)
                    )
                );
            }
        }
        let this = &*self;
        thread::scope(|s| {
            let workers: Vec<_> = (0..this.nodes.len())
                .map(|i| s.spawn(move || this.shut_down(i)))
                .collect();
            for (i, worker) in workers.into_iter().enumerate() {
                match worker.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => eprintln!("cluster teardown: {e}"),
                    Err(_) => eprintln!("cluster teardown: shutting down node {i} panicked"),
                }
            }
        });
        ports::release(self.nodes.iter().map(|n| n.port));
        if std::env::var_os("PG_PAXOS_KEEP_CLUSTER").is_some() || self.keep.load(Ordering::Relaxed)
        {
            eprintln!("keeping {} for inspection", self.base_dir.display());
        } else if let Err(e) = fs::remove_dir_all(&self.base_dir) {
            eprintln!(
                "cluster teardown: removing {}: {e}",
                self.base_dir.display()
            );
        }
    }
}

fn validate(opts: &ClusterOptions) -> Result<(), Error> {
    if opts.nodes == 0 {
        return Err(Error::InvalidOptions(
            "a cluster needs at least one node".into(),
        ));
    }
    let name_ok = !opts.name.is_empty()
        && opts.name.len() <= 32
        && opts
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !name_ok {
        return Err(Error::InvalidOptions(format!(
            "name {:?} must be 1 to 32 ASCII letters, digits, '-' or '_'",
            opts.name
        )));
    }
    Ok(())
}

/// Makes a fresh, canonical directory under the temp dir, owned by `owner` when given so
/// that the servers (running as that user) can create their data directories, logs and
/// sockets in it.
fn create_base_dir(name: &str, owner: Option<(u32, u32)>) -> Result<PathBuf, Error> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let tmp = std::env::temp_dir();
    loop {
        let seq = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = tmp.join(format!("pg_paxos-{name}-{}-{seq}", std::process::id()));
        match DirBuilder::new().mode(0o755).create(&dir) {
            Ok(()) => {}
            // Left behind by an earlier process that had our pid.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && seq < 1000 => continue,
            Err(source) => {
                return Err(Error::Io {
                    context: format!("creating {}", dir.display()),
                    source,
                })
            }
        }
        let ready = owner
            .map_or(Ok(()), |(uid, gid)| {
                std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
            })
            .and_then(|()| dir.canonicalize());
        return ready.map_err(|source| {
            let _ = fs::remove_dir(&dir);
            Error::Io {
                context: format!("preparing {}", dir.display()),
                source,
            }
        });
    }
}

/// Whether the server log, from byte `from` on, says the port was already in use.
fn port_taken_since(log: &Path, from: u64) -> bool {
    let Ok(bytes) = fs::read(log) else {
        return false;
    };
    let start = usize::try_from(from).unwrap_or(usize::MAX).min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).contains("Address already in use")
}

/// Escapes a value for a single-quoted postgresql.conf string.
fn quote(value: &str) -> String {
    value.replace('\'', "''")
}
