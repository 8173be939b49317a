//! Sockets: UDP worker threads (one socket each, `SO_REUSEPORT`) and TCP on tokio.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{self, JoinSet};

use super::answer::Transport;
use super::fast::{SnapshotCell, Worker};

/// How often a blocked UDP worker wakes up to see whether it must stop.
const STOP_POLL: Duration = Duration::from_millis(100);

/// Opens a UDP socket on `addr`, sharing the port with the server's other UDP sockets.
pub(crate) fn udp_socket(addr: SocketAddr, reuse_port: bool) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    // Bursts from many clients: a larger receive buffer loses fewer queries. Best effort.
    let _ = socket.set_recv_buffer_size(4 << 20);
    socket.bind(&addr.into())?;
    let socket: UdpSocket = socket.into();
    socket.set_read_timeout(Some(STOP_POLL))?;
    Ok(socket)
}

/// Opens a TCP listener on `addr`.
pub(crate) fn tcp_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Datagrams received and answered per system call, at most.
const BATCH: usize = 32;

/// Datagrams a `recvmmsg` is offered at least.
const MIN_WIDTH: usize = 4;

/// Largest query read by the batched loop; anything longer is cut there (and then answered
/// FORMERR, as a query that long is not one a resolver sends).
const MAX_QUERY: usize = 4096;

/// A UDP worker: receive up to [`BATCH`] queries with one `recvmmsg`, answer them, send the
/// answers with one `sendmmsg`; until `stop` is set. Falls back to one datagram per system
/// call where the kernel lacks these calls. Nothing is allocated per datagram or per batch.
pub(crate) fn udp_loop(
    socket: UdpSocket,
    cell: Arc<SnapshotCell>,
    max_udp: u16,
    stop: Arc<AtomicBool>,
) {
    use nix::sys::socket::{SockaddrIn, SockaddrIn6};
    let worker = Worker::new(cell, max_udp);
    // Addresses of the socket's own family: copied once per datagram, they stay small.
    let batched = match socket.local_addr() {
        Ok(SocketAddr::V4(_)) => batch_loop::<SockaddrIn>(&socket, worker, &stop),
        Ok(SocketAddr::V6(_)) => batch_loop::<SockaddrIn6>(&socket, worker, &stop),
        Err(e) => {
            tracing::warn!(error = %e, "UDP socket without a local address; worker stops");
            return;
        }
    };
    if let Some(worker) = batched {
        udp_loop_simple(socket, worker, stop);
    }
}

/// The batched loop; returns the worker when `recvmmsg` is missing, to go on one datagram at
/// a time.
fn batch_loop<S>(socket: &UdpSocket, mut worker: Worker, stop: &AtomicBool) -> Option<Worker>
where
    S: nix::sys::socket::SockaddrLike + Copy,
{
    use std::io::IoSlice;
    use std::os::fd::AsRawFd;

    use nix::errno::Errno;
    use nix::sys::socket::{MsgFlags, MultiHeaders, sendmmsg};

    let fd = socket.as_raw_fd();
    let Ok(mut bufs) =
        Box::<[[u8; MAX_QUERY]; BATCH]>::try_from(vec![[0u8; MAX_QUERY]; BATCH].into_boxed_slice())
    else {
        return Some(worker);
    };
    let mut outs: [Vec<u8>; BATCH] = std::array::from_fn(|_| Vec::with_capacity(512));
    let mut received: [(usize, Option<S>); BATCH] = [(0, None); BATCH];
    let mut addrs: [Option<S>; BATCH] = [None; BATCH];
    let mut recv_headers = MultiHeaders::<S>::preallocate(BATCH, None);
    let mut send_headers = MultiHeaders::<S>::preallocate(BATCH, None);
    let cmsgs: [nix::sys::socket::ControlMessage<'_>; 0] = [];
    // The buffers offered to one `recvmmsg`: twice as many as the last one filled, so a
    // quiet socket does not pay for setting up all of them.
    let mut width = MIN_WIDTH;
    let mut spare_out: Vec<[IoSlice<'static>; 1]> = Vec::with_capacity(BATCH);
    while !stop.load(Ordering::Relaxed) {
        let result = match width {
            ..=4 => receive::<S, 4>(fd, &mut recv_headers, &mut bufs, &mut received),
            5..=8 => receive::<S, 8>(fd, &mut recv_headers, &mut bufs, &mut received),
            9..=16 => receive::<S, 16>(fd, &mut recv_headers, &mut bufs, &mut received),
            _ => receive::<S, BATCH>(fd, &mut recv_headers, &mut bufs, &mut received),
        };
        let n = match result {
            Ok(n) => n,
            Err(Errno::EAGAIN | Errno::EINTR) => continue,
            Err(Errno::ENOSYS | Errno::EOPNOTSUPP) => {
                tracing::debug!("no recvmmsg: one datagram per system call");
                return Some(worker);
            }
            Err(e) => {
                tracing::debug!(error = %e, "UDP receive failed");
                continue;
            }
        };
        width = (2 * n).clamp(MIN_WIDTH, BATCH);
        // Answers are packed at the front of `outs`, each with its address in `addrs`.
        let mut answers = 0;
        for ((len, addr), buf) in received[..n].iter().zip(bufs.iter()) {
            let Some(addr) = addr else { continue };
            let query = &buf[..(*len).min(MAX_QUERY)];
            if worker.handle(query, Transport::Udp, &mut outs[answers]) {
                addrs[answers] = Some(*addr);
                answers += 1;
            }
        }
        if answers == 0 {
            continue;
        }
        let mut slices = recycle(std::mem::take(&mut spare_out));
        slices.extend(outs[..answers].iter().map(|o| [IoSlice::new(o)]));
        if let Err(e) = sendmmsg(
            fd,
            &mut send_headers,
            slices.iter(),
            &addrs[..answers],
            cmsgs,
            MsgFlags::empty(),
        ) {
            tracing::debug!(error = %e, "cannot send answers");
        }
        spare_out = recycle(slices);
    }
    None
}

/// One `recvmmsg` into the first `W` buffers; each datagram's length and sender go to
/// `received`. Returns how many arrived.
fn receive<S, const W: usize>(
    fd: std::os::fd::RawFd,
    headers: &mut nix::sys::socket::MultiHeaders<S>,
    bufs: &mut [[u8; MAX_QUERY]; BATCH],
    received: &mut [(usize, Option<S>); BATCH],
) -> nix::Result<usize>
where
    S: nix::sys::socket::SockaddrLike + Copy,
{
    use nix::sys::socket::{MsgFlags, recvmmsg};
    let Some(first) = bufs.first_chunk_mut::<W>() else {
        return Ok(0);
    };
    let mut slices: [[std::io::IoSliceMut<'_>; 1]; W] =
        first.each_mut().map(|b| [std::io::IoSliceMut::new(b)]);
    let results = recvmmsg(
        fd,
        headers,
        slices.iter_mut(),
        MsgFlags::MSG_WAITFORONE,
        None,
    )?;
    let mut n = 0;
    for (slot, r) in received.iter_mut().zip(results) {
        *slot = (r.bytes, r.address);
        n += 1;
    }
    Ok(n)
}

/// Empties `v` and hands its allocation on as a vector of `U` (the same type under other
/// lifetimes): collecting an emptied vector into one of the same layout reuses the
/// allocation, so nothing is allocated per batch.
fn recycle<T, U>(mut v: Vec<T>) -> Vec<U> {
    v.clear();
    v.into_iter()
        .map(|_| unreachable!("the vector was emptied"))
        .collect()
}

/// A UDP worker: receive, answer, send, one datagram at a time, until `stop` is set.
fn udp_loop_simple(socket: UdpSocket, mut worker: Worker, stop: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 65535];
    let mut out = Vec::with_capacity(4096);
    while !stop.load(Ordering::Relaxed) {
        match socket.recv_from(&mut buf) {
            Ok((n, peer)) => {
                if worker.handle(&buf[..n], Transport::Udp, &mut out)
                    && let Err(e) = socket.send_to(&out, peer)
                {
                    tracing::debug!(%peer, error = %e, "cannot send an answer");
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                tracing::debug!(error = %e, "UDP receive failed");
            }
        }
    }
}

/// The limits on the server's TCP connections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TcpLimits {
    /// Connections served at once; more wait in the listen queue.
    pub(crate) max: usize,
    /// Connections served at once for one client address; more are closed when accepted.
    pub(crate) per_client: usize,
    /// The deadline of a query's read (and of the wait for one) and of an answer's write.
    pub(crate) idle: Duration,
}

/// The open connections of each client address.
#[derive(Debug, Default)]
struct Clients {
    open: HashMap<IpAddr, usize>,
    by_task: HashMap<task::Id, IpAddr>,
}

impl Clients {
    /// Counts a connection from `ip` when it has fewer than `limit` open.
    fn admit(&mut self, ip: IpAddr, limit: usize) -> bool {
        let open = self.open.entry(ip).or_insert(0);
        if *open >= limit {
            return false;
        }
        *open += 1;
        true
    }

    /// Books the connection served by `task`, counted by [`admit`](Self::admit).
    fn serving(&mut self, task: task::Id, ip: IpAddr) {
        self.by_task.insert(task, ip);
    }

    /// Forgets the connection of a task that ended (however it ended).
    fn ended(&mut self, task: task::Id) {
        let Some(ip) = self.by_task.remove(&task) else {
            return;
        };
        if let Some(open) = self.open.get_mut(&ip) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                self.open.remove(&ip);
            }
        }
    }
}

/// Accepts TCP connections and serves each on its own task, at most `limits.max` at once and
/// `limits.per_client` for one client address; a connection beyond a client's limit is
/// closed at once. The connection tasks belong to this one: when it is stopped (the server
/// shuts down), they end with it. Only this task counts connections, so nothing is locked.
pub(crate) async fn tcp_accept(
    listener: TcpListener,
    cell: Arc<SnapshotCell>,
    max_udp: u16,
    limits: TcpLimits,
) {
    let max = limits.max.max(1);
    let mut connections = JoinSet::new();
    let mut clients = Clients::default();
    loop {
        tokio::select! {
            Some(ended) = connections.join_next_with_id() => {
                clients.ended(match ended {
                    Ok((id, ())) => id,
                    Err(e) => e.id(),
                });
            }
            accepted = listener.accept(), if connections.len() < max => match accepted {
                Ok((stream, peer)) => {
                    if !clients.admit(peer.ip(), limits.per_client) {
                        tracing::debug!(%peer, limit = limits.per_client, "TCP connection over the client's limit closed");
                        drop(stream);
                        continue;
                    }
                    let cell = Arc::clone(&cell);
                    let task = connections.spawn(async move {
                        if let Err(e) = tcp_serve(stream, cell, max_udp, limits.idle).await {
                            tracing::debug!(%peer, error = %e, "TCP connection closed");
                        }
                    });
                    clients.serving(task.id(), peer.ip());
                }
                Err(e) => {
                    tracing::debug!(error = %e, "TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
}

/// Serves the queries of one TCP connection in order until it is closed or idle. Waiting
/// for a query, reading the rest of it once its first byte has come, and writing its answer
/// each have `idle` as their deadline: a client that stalls in the middle of a query or
/// stops reading its answers loses its connection instead of holding a slot for ever.
async fn tcp_serve(
    mut stream: TcpStream,
    cell: Arc<SnapshotCell>,
    max_udp: u16,
    idle: Duration,
) -> io::Result<()> {
    let mut worker = Worker::new(cell, max_udp);
    let mut buf = Vec::new();
    let mut out = Vec::with_capacity(512);
    let mut framed = Vec::with_capacity(514);
    loop {
        if !read_query(&mut stream, &mut buf, idle).await? || buf.len() < 12 {
            return Ok(());
        }
        if worker.handle(&buf, Transport::Tcp, &mut out) {
            let Ok(n) = u16::try_from(out.len()) else {
                continue;
            };
            framed.clear();
            framed.extend_from_slice(&n.to_be_bytes());
            framed.extend_from_slice(&out);
            match tokio::time::timeout(idle, stream.write_all(&framed)).await {
                Ok(written) => written?,
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "the client read no answer for {}",
                            humantime::format_duration(idle)
                        ),
                    ));
                }
            }
        }
    }
}

/// Reads the next length-prefixed query into `buf`. `Ok(false)` when the client closed the
/// connection or sent nothing for `idle` between queries; an error when it stopped in the
/// middle of a query (the rest of it has `idle` from its first byte) or the read failed.
async fn read_query(stream: &mut TcpStream, buf: &mut Vec<u8>, idle: Duration) -> io::Result<bool> {
    let mut prefix = [0u8; 2];
    let first = match tokio::time::timeout(idle, stream.read(&mut prefix)).await {
        Ok(read) => read?,
        Err(_) => return Ok(false),
    };
    if first == 0 {
        return Ok(false);
    }
    let rest = async {
        stream.read_exact(&mut prefix[first..]).await?;
        buf.resize(usize::from(u16::from_be_bytes(prefix)), 0);
        stream.read_exact(buf).await
    };
    match tokio::time::timeout(idle, rest).await {
        Ok(read) => read.map(|_| true),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the client sent part of a query and not the rest within {}",
                humantime::format_duration(idle)
            ),
        )),
    }
}
