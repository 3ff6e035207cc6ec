//! Sockets handed down by the process that started this one.
//!
//! A supervisor (a test, `sealbatch cluster demo`, a process manager) that
//! must know a process's addresses before it starts — a replica's are
//! part of the cluster's membership — binds the sockets itself on port 0,
//! writes the addresses it got into the configuration, and hands the bound
//! sockets down (`--inherit-fd`): no port is guessed, and a process
//! restarted on its address gets the same socket back, which no other
//! process can have taken meanwhile. This is socket activation as
//! `systemd` does it, with the descriptors named on the command line.
//!
//! The process adopts them before it opens anything else ([`inherit`],
//! called first by the command line); [`udp_socket`] and [`tcp_listener`]
//! then give the socket bound to the address a configuration names, and
//! bind one only when none was handed down for it. [`spawn_with`] is the
//! supervisor's side.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::{Mutex, PoisonError};

/// The command-line flag naming a descriptor handed down.
pub const INHERIT_FLAG: &str = "--inherit-fd";

/// Why a descriptor handed down cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum InheritError {
    /// 0, 1 and 2 are the standard streams.
    #[error("descriptor {0} is a standard stream, not a socket handed down")]
    Reserved(RawFd),
    /// Named twice (on this command line or an earlier call).
    #[error("descriptor {0} is named twice")]
    Twice(RawFd),
    /// Not an open descriptor of this process.
    #[error("descriptor {0} is not open")]
    NotOpen(RawFd),
    /// Open, but neither a UDP socket nor a listening TCP socket.
    #[error("descriptor {0} is neither a UDP socket nor a listening TCP socket")]
    NotASocket(RawFd),
    /// A socket, but its address could not be read (not an IP socket).
    #[error("descriptor {fd}: {source}")]
    Io {
        /// The descriptor.
        fd: RawFd,
        /// The error.
        source: std::io::Error,
    },
    /// Two sockets of one kind bound to one address.
    #[error("two sockets of one kind handed down for {0}")]
    SameAddress(SocketAddr),
}

enum Inherited {
    Udp(UdpSocket),
    Tcp(TcpListener),
}

/// Which kind of socket: a UDP socket and a TCP listener may hold the same
/// address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Udp,
    Tcp,
}

/// The sockets handed down and not yet taken, by kind and local address.
static INHERITED: Mutex<BTreeMap<(Kind, SocketAddr), Inherited>> = Mutex::new(BTreeMap::new());
/// Every descriptor adopted: one named again must not be adopted twice
/// (two owners would close it twice).
static ADOPTED: Mutex<Vec<RawFd>> = Mutex::new(Vec::new());

fn socket_option(fd: RawFd, option: libc::c_int) -> Option<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes of a c_int and a
    // socklen_t for the duration of the call; a bad `fd` is an error
    // return, not undefined behaviour.
    let status = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            std::ptr::addr_of_mut!(value).cast(),
            &mut len,
        )
    };
    (status == 0).then_some(value)
}

/// Adopts the descriptors `fds` handed down by the parent: each must be a
/// bound UDP socket or a listening TCP socket, open, not a standard stream
/// and named once. Called before this process opens any descriptor of its
/// own (the command line does it first), so that an open descriptor named
/// here can only be one handed down. Returns the addresses adopted, in the
/// order given.
///
/// # Errors
///
/// [`InheritError`]: nothing is adopted from a descriptor refused (the
/// ones before it are).
///
/// # Safety
///
/// Each descriptor in `fds` that is open must be owned by nothing else in
/// this process (it was handed down across `exec` and nothing has taken
/// it): this function becomes its owner and will close it. The command
/// line calls it first thing, before the process opens anything.
pub unsafe fn inherit(fds: &[RawFd]) -> Result<Vec<SocketAddr>, InheritError> {
    let mut addrs = Vec::with_capacity(fds.len());
    for &fd in fds {
        if fd < 0 {
            return Err(InheritError::NotOpen(fd));
        }
        if fd <= 2 {
            return Err(InheritError::Reserved(fd));
        }
        {
            let mut adopted = ADOPTED.lock().unwrap_or_else(PoisonError::into_inner);
            if adopted.contains(&fd) {
                return Err(InheritError::Twice(fd));
            }
            // SAFETY: F_GETFD reads the descriptor's flags; a descriptor
            // that is not open is an error return.
            if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
                return Err(InheritError::NotOpen(fd));
            }
            let kind = socket_option(fd, libc::SO_TYPE).ok_or(InheritError::NotASocket(fd))?;
            let listening = socket_option(fd, libc::SO_ACCEPTCONN) == Some(1);
            if kind != libc::SOCK_DGRAM && !(kind == libc::SOCK_STREAM && listening) {
                return Err(InheritError::NotASocket(fd));
            }
            // Not handed further down to this process's own children.
            // SAFETY: sets the close-on-exec flag of an open descriptor.
            if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } == -1 {
                return Err(InheritError::NotOpen(fd));
            }
            adopted.push(fd);
            // SAFETY: `fd` is open, is not a standard stream, is owned by
            // nothing else in this process (the caller's contract) and is
            // adopted once (`ADOPTED`): this is its only owner.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            let io = |source| InheritError::Io { fd, source };
            let (key, socket) = if kind == libc::SOCK_DGRAM {
                let socket = UdpSocket::from(owned);
                (
                    (Kind::Udp, socket.local_addr().map_err(io)?),
                    Inherited::Udp(socket),
                )
            } else {
                let listener = TcpListener::from(owned);
                (
                    (Kind::Tcp, listener.local_addr().map_err(io)?),
                    Inherited::Tcp(listener),
                )
            };
            let mut inherited = INHERITED.lock().unwrap_or_else(PoisonError::into_inner);
            if inherited.contains_key(&key) {
                return Err(InheritError::SameAddress(key.1));
            }
            inherited.insert(key, socket);
            addrs.push(key.1);
        }
    }
    Ok(addrs)
}

/// The UDP socket handed down for `addr`, else one bound to it now.
///
/// # Errors
///
/// The bind error.
pub fn udp_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let handed = INHERITED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&(Kind::Udp, addr));
    match handed {
        Some(Inherited::Udp(socket)) => Ok(socket),
        _ => UdpSocket::bind(addr).map_err(|error| unmatched(addr, error)),
    }
}

/// A bind error, naming the sockets handed down that no address matched
/// (a handed-down socket holding the port is the likely cause: an address
/// must equal a socket's exactly, `0.0.0.0` is not `127.0.0.1`).
fn unmatched(addr: SocketAddr, error: std::io::Error) -> std::io::Error {
    let untaken = untaken();
    if untaken.is_empty() {
        return error;
    }
    std::io::Error::new(
        error.kind(),
        format!(
            "{error}; no socket handed down (--inherit-fd) is bound to exactly {addr}, those left are {untaken:?}"
        ),
    )
}

/// The listening TCP socket handed down for `addr`, else one bound to it
/// now; for tokio.
///
/// # Errors
///
/// The bind error.
pub async fn tcp_listener(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let handed = INHERITED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&(Kind::Tcp, addr));
    match handed {
        Some(Inherited::Tcp(listener)) => {
            listener.set_nonblocking(true)?;
            tokio::net::TcpListener::from_std(listener)
        }
        _ => tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|error| unmatched(addr, error)),
    }
}

/// The addresses of the sockets handed down and not taken (a
/// configuration that names none of them): worth a warning.
#[must_use]
pub fn untaken() -> Vec<SocketAddr> {
    INHERITED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .keys()
        .map(|&(_, addr)| addr)
        .collect()
}

/// Spawns `command` with `sockets` handed down: each stays open across the
/// `exec` in the child (and only there) and is named by an
/// [`INHERIT_FLAG`] argument appended to the command (the flag is global:
/// it may follow the subcommand). The command is consumed: spawned again,
/// its hook would clear close-on-exec on whatever then holds those
/// numbers. The caller keeps its own descriptors; a child restarted later
/// is handed the same sockets again (by a new command).
///
/// # Errors
///
/// The spawn error.
pub fn spawn_with(mut command: Command, sockets: &[BorrowedFd<'_>]) -> std::io::Result<Child> {
    let fds: Vec<RawFd> = sockets.iter().map(AsRawFd::as_raw_fd).collect();
    for fd in &fds {
        command.arg(INHERIT_FLAG).arg(fd.to_string());
    }
    // SAFETY: the closure runs in the child between fork and exec and calls
    // only fcntl, which is async-signal-safe; it allocates nothing (the
    // vector is moved in and only read). Clearing FD_CLOEXEC there affects
    // the child's descriptor table alone, so no other child spawned
    // meanwhile by another thread inherits these sockets.
    unsafe {
        command.pre_exec(move || {
            for &fd in &fds {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    command.spawn()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test: descriptors are process-wide, and one adopted and later
    /// closed could be reopened by a file another test asks to adopt.
    #[test]
    fn sockets_handed_down_are_adopted_and_anything_else_refused() {
        // SAFETY (every call below): the descriptors named are this test's
        // own only where the call refuses them; the one adopted is given up
        // to `inherit` first (`into_raw_fd`).
        let inherit = |fds: &[RawFd]| unsafe { inherit(fds) };
        assert!(matches!(inherit(&[1]), Err(InheritError::Reserved(1))));
        assert!(matches!(inherit(&[-1]), Err(InheritError::NotOpen(-1))));
        // A descriptor number far above any this test process opened.
        assert!(matches!(
            inherit(&[1_000_000]),
            Err(InheritError::NotOpen(1_000_000))
        ));
        let file = tempfile::tempfile().expect("a file");
        let fd = file.as_raw_fd();
        assert!(matches!(inherit(&[fd]), Err(InheritError::NotASocket(f)) if f == fd));
        // A TCP socket that does not listen is refused too.
        let listener = TcpListener::bind("127.0.0.1:0").expect("binds");
        let stream =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connects");
        let fd = stream.as_raw_fd();
        assert!(matches!(inherit(&[fd]), Err(InheritError::NotASocket(f)) if f == fd));
        let socket = UdpSocket::bind("127.0.0.1:0").expect("binds");
        let addr = socket.local_addr().expect("addr");
        // This process plays the child: the descriptor is given up to
        // `inherit`, which becomes its owner.
        let raw = std::os::fd::IntoRawFd::into_raw_fd(socket);
        assert_eq!(inherit(&[raw]).expect("adopted"), vec![addr]);
        assert!(matches!(inherit(&[raw]), Err(InheritError::Twice(f)) if f == raw));
        assert!(untaken().contains(&addr));
        let taken = udp_socket(addr).expect("the socket handed down");
        assert_eq!(taken.as_raw_fd(), raw);
        assert!(!untaken().contains(&addr));
        // A UDP socket and a TCP listener may hold one address: both are
        // handed down, each taken by its kind.
        let (udp, tcp) = (0..100)
            .find_map(|_| {
                let udp = UdpSocket::bind("127.0.0.1:0").ok()?;
                let tcp = TcpListener::bind(udp.local_addr().ok()?).ok()?;
                Some((udp, tcp))
            })
            .expect("a port free for both");
        let shared = udp.local_addr().expect("addr");
        let fds = [
            std::os::fd::IntoRawFd::into_raw_fd(udp),
            std::os::fd::IntoRawFd::into_raw_fd(tcp),
        ];
        assert_eq!(inherit(&fds).expect("both adopted"), vec![shared, shared]);
        let udp = udp_socket(shared).expect("the UDP socket handed down");
        assert_eq!(udp.as_raw_fd(), fds[0]);
        assert_eq!(untaken(), vec![shared], "the listener is left");
        // An address that matches no handed-down socket exactly binds, and
        // a bind the handed-down socket blocks says which sockets are left.
        let held = UdpSocket::bind("127.0.0.1:0").expect("binds");
        let held_addr = held.local_addr().expect("addr");
        let fd = std::os::fd::IntoRawFd::into_raw_fd(held);
        assert_eq!(inherit(&[fd]).expect("adopted"), vec![held_addr]);
        let any = SocketAddr::from(([0, 0, 0, 0], held_addr.port()));
        // (Linux refuses the wildcard address on a port a socket holds on
        // one address.)
        let text = udp_socket(any).expect_err("the port is held").to_string();
        assert!(
            text.contains("--inherit-fd") && text.contains(&held_addr.to_string()),
            "{text}"
        );
        assert!(untaken().contains(&held_addr), "still handed down");
    }
}
