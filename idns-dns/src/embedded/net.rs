//! Sockets: UDP worker threads (one socket each, `SO_REUSEPORT`) and TCP on tokio.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

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

/// Accepts TCP connections and serves each on its own task, at most `max` at once. The
/// connection tasks belong to this one: when it is stopped (the server shuts down), they end
/// with it.
pub(crate) async fn tcp_accept(
    listener: TcpListener,
    cell: Arc<SnapshotCell>,
    max_udp: u16,
    max: usize,
    idle: Duration,
) {
    let permits = Arc::new(Semaphore::new(max));
    let mut connections = JoinSet::new();
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        while connections.try_join_next().is_some() {}
        match listener.accept().await {
            Ok((stream, peer)) => {
                let cell = Arc::clone(&cell);
                connections.spawn(async move {
                    if let Err(e) = tcp_serve(stream, cell, max_udp, idle).await {
                        tracing::debug!(%peer, error = %e, "TCP connection closed");
                    }
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::debug!(error = %e, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Serves the queries of one TCP connection in order until it is closed or idle. Reading a
/// query and writing its answer each have `idle` as their deadline: a client that stops
/// reading its answers loses its connection instead of holding a slot for ever.
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
        let len = match tokio::time::timeout(idle, stream.read_u16()).await {
            Ok(Ok(len)) => usize::from(len),
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        };
        buf.resize(len, 0);
        match tokio::time::timeout(idle, stream.read_exact(&mut buf)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        }
        if len < 12 {
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
