//! Linux process plumbing: running commands with a deadline, finding a node's processes in
//! `/proc`, signalling them and waiting for them to disappear.
//!
//! A process is named by its pid *and* its start time, so a pid the kernel reuses (pid_max is
//! 32768 on these machines) is never mistaken for the process we saw earlier.

use std::fs;
use std::io::{self, Read};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::Error;

/// One process, identified across pid reuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProcId {
    pub(crate) pid: i32,
    start: u64,
}

/// The fields of `/proc/<pid>/stat` the harness needs.
struct Stat {
    state: char,
    start: u64,
}

fn stat(pid: i32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may itself contain spaces or ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); field 22 (starttime) is therefore index 19.
    Some(Stat {
        state: fields.first()?.chars().next()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

impl ProcId {
    /// The process that has `pid` now, zombie or not.
    pub(crate) fn of(pid: i32) -> Option<ProcId> {
        stat(pid).map(|s| ProcId {
            pid,
            start: s.start,
        })
    }

    /// Still has a /proc entry, even as a zombie: a zombie keeps its pid, and PostgreSQL's
    /// lock-file check (`kill(pid, 0)`) still sees it.
    pub(crate) fn exists(self) -> bool {
        stat(self.pid).is_some_and(|s| s.start == self.start)
    }

    /// Exists and is not a zombie.
    pub(crate) fn is_live(self) -> bool {
        stat(self.pid).is_some_and(|s| s.start == self.start && !matches!(s.state, 'Z' | 'X'))
    }

    /// Stopped by a signal (SIGSTOP): it runs no code, so it forks no new children.
    pub(crate) fn is_stopped(self) -> bool {
        stat(self.pid).is_some_and(|s| s.start == self.start && s.state == 'T')
    }

    /// Sends `sig`; false when the process is gone or the signal was refused.
    pub(crate) fn signal(self, sig: libc::c_int) -> bool {
        // Re-check right before the syscall so a reused pid is (almost surely) not hit.
        if !self.exists() {
            return false;
        }
        // SAFETY: kill(2) takes two integers and touches no memory of ours.
        unsafe { libc::kill(self.pid, sig) == 0 }
    }
}

/// Every live PostgreSQL process (postmaster, backends, auxiliary and background workers) of
/// the server whose data directory is `data_dir` (canonical).
///
/// Found by working directory, because each postmaster child calls `setsid()` (so there is no
/// shared process group) and children outlive a killed postmaster with a new parent. The
/// postmaster and every child `chdir` into the data directory; the name check keeps out a
/// shell someone opened there.
pub(crate) fn node_processes(data_dir: &Path) -> Vec<ProcId> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == data_dir)
                && fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|comm| comm.trim_end() == "postgres")
        })
        .filter_map(ProcId::of)
        .filter(|p| p.is_live())
        .collect()
}

/// The live postmaster of the server in `data_dir` (canonical), if there is one.
///
/// `postmaster.pid` outlives a killed postmaster, so its pid is trusted only while that
/// process still works in this data directory.
pub(crate) fn postmaster(data_dir: &Path) -> Option<ProcId> {
    let text = fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    let pm = ProcId::of(pid)?;
    let here = fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == data_dir);
    (here && pm.is_live()).then_some(pm)
}

/// Polls `done` until it returns true, or fails with a timeout naming `what`.
pub(crate) fn wait_until(
    what: impl FnOnce() -> String,
    timeout: Duration,
    mut done: impl FnMut() -> bool,
) -> Result<(), Error> {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: what(),
                after: timeout,
                detail: String::new(),
            });
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// What a finished command left behind.
pub(crate) struct Finished {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs `cmd` with stdin closed and its output captured, killing it after `timeout`.
///
/// Output is read on helper threads so a chatty command cannot block on a full pipe.
pub(crate) fn run(cmd: &mut Command, what: &str, timeout: Duration) -> Result<Finished, Error> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Io {
            context: format!("starting {what}"),
            source,
        })?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    let status = loop {
        let polled = child.try_wait().map_err(|source| Error::Io {
            context: format!("waiting for {what}"),
            source,
        })?;
        if let Some(status) = polled {
            break status;
        }
        if Instant::now() >= deadline {
            // Best effort: the command is abandoned either way.
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Timeout {
                what: what.to_string(),
                after: timeout,
                detail: section("stderr", &collect(&stderr)),
            });
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    };
    Ok(Finished {
        status,
        stdout: collect(&stdout),
        stderr: collect(&stderr),
    })
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    if let Some(mut pipe) = pipe {
        thread::spawn(move || {
            let mut buf = Vec::new();
            // A read error only truncates diagnostics; keep what was read.
            let _ = pipe.read_to_end(&mut buf);
            let _ = tx.send(buf);
        });
    }
    rx
}

/// The drained output, or what is missing if a grandchild still holds the pipe open.
fn collect(rx: &mpsc::Receiver<Vec<u8>>) -> String {
    match rx.recv_timeout(Duration::from_secs(2)) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => String::new(),
    }
}

/// A titled block for an error message; empty when there is nothing to show.
pub(crate) fn section(title: &str, body: &str) -> String {
    let body = body.trim_end();
    if body.is_empty() {
        String::new()
    } else {
        format!("\n--- {title} ---\n{body}")
    }
}

/// The last `lines` lines of a (server log) file, read from its last 64 KiB.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let Ok(bytes) = fs::read(path) else {
        return String::new();
    };
    let from = bytes.len().saturating_sub(64 * 1024);
    let text = String::from_utf8_lossy(&bytes[from..]);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether this process runs as root, in which case servers must run as another user.
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid(2) has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Uid and gid of the OS user `name`.
pub(crate) fn lookup_user(name: &str) -> io::Result<(u32, u32)> {
    let cname = std::ffi::CString::new(name).map_err(io::Error::other)?;
    // SAFETY: `passwd` is a C struct of integers and pointers, for which all-zero is valid.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the duration of the call and `buf.len()` is the real
    // size of `buf`; getpwnam_r writes only into `pwd`, `buf` and `found`.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    if found.is_null() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("there is no OS user {name:?}"),
        ));
    }
    Ok((pwd.pw_uid, pwd.pw_gid))
}
