//! Tunnel bytes between two sockets, kernel to kernel once a direction proves to be bulk:
//! socket → pipe → socket with `splice(2)`. A bulk transfer through leash then costs page moves
//! instead of two copies through user space, which is most of what a tunnel costs (issue 9:
//! `connect_bulk`, `socks_bulk`). A direction starts out copying through a small buffer, so the
//! many short tunnels (one request, one small answer) never pay for creating pipes. A bulk
//! direction over a loopback hop also gets bounded socket buffers (see `bound_loopback_buffers`).

use std::{io, os::fd::OwnedFd};

use rustix::{
    io::Errno,
    net::{
        recv,
        sockopt::{set_socket_recv_buffer_size, set_socket_send_buffer_size},
        RecvFlags, Shutdown,
    },
    pipe::{fcntl_getpipe_size, fcntl_setpipe_size, pipe_with, splice, PipeFlags, SpliceFlags},
};
use tokio::{io::Interest, net::TcpStream};

use crate::relay::Direction;

/// A direction copies through a buffer this large until one read fills it; then it splices.
const COPY_BUFFER: usize = 16 * 1024;

/// Pipe capacity asked for: larger than the default 64 KiB so one wake-up moves more, small
/// enough that many open bulk tunnels stay within the kernel's per-user pipe allowance (past it
/// the kernel keeps a smaller pipe, which only costs speed).
const PIPE_SIZE: usize = 256 * 1024;

/// Both directions until both have ended (each end closes the other side's write half, as
/// `tokio::io::copy_bidirectional` does), or until either fails.
pub(crate) async fn relay(
    client: &TcpStream,
    upstream: &TcpStream,
    up: &Direction,
    down: &Direction,
) -> io::Result<()> {
    tokio::try_join!(pump(client, upstream, up), pump(upstream, client, down))?;
    Ok(())
}

/// `from` → `to` until `from` ends.
async fn pump(from: &TcpStream, to: &TcpStream, direction: &Direction) -> io::Result<()> {
    if copy(from, to, direction, COPY_BUFFER, Until::Filled).await? == Copied::Ended {
        return Ok(());
    }
    bound_loopback_buffers(from, to);
    match Pipe::new() {
        Ok(pipe) => pipe.pump(from, to, direction).await,
        // Out of descriptors: keep copying, more slowly.
        Err(_) => copy(from, to, direction, 64 * 1024, Until::Ended)
            .await
            .map(drop),
    }
}

/// Socket buffer size asked for on a loopback hop that carries bulk (the kernel doubles it).
const LOOPBACK_HOP_BUFFER: usize = 512 * 1024;

/// A loopback hop has a bandwidth-delay product of a few KiB, yet the kernel's autotuning grows
/// its buffers to megabytes; bulk bytes then wait in queues long enough to leave the CPU cache
/// before the reader copies them out, and the reader pays (`connect_bulk` went from about 65 % to
/// about 88 % of direct with this bound). A hop to another machine keeps autotuning: its
/// throughput needs buffers as large as its bandwidth-delay product.
fn bound_loopback_buffers(from: &TcpStream, to: &TcpStream) {
    let on_loopback = |s: &TcpStream| {
        s.peer_addr()
            .is_ok_and(|a| a.ip().to_canonical().is_loopback())
    };
    if on_loopback(from) {
        let _ = set_socket_recv_buffer_size(from, LOOPBACK_HOP_BUFFER);
    }
    if on_loopback(to) {
        let _ = set_socket_send_buffer_size(to, LOOPBACK_HOP_BUFFER);
    }
}

/// When [`copy`] stops.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Until {
    /// At the end of the source, or as soon as one read fills the buffer (bulk is coming).
    Filled,
    /// Only at the end of the source.
    Ended,
}

#[derive(PartialEq, Eq)]
enum Copied {
    Ended,
    Filled,
}

/// Copies through a buffer of `size` bytes.
async fn copy(
    from: &TcpStream,
    to: &TcpStream,
    direction: &Direction,
    size: usize,
    until: Until,
) -> io::Result<Copied> {
    // Held only while bytes flow: an idle tunnel (most of an agent's open ones) keeps no buffer
    // (`rss_tunnel_10k`). Never zeroed: `try_read_buf` writes into spare capacity, and zeroing
    // 2 × 16 KiB per tunnel cost more than copying the few hundred bytes most tunnels move.
    let mut buffer: Option<Vec<u8>> = None;
    loop {
        from.readable().await?;
        let bytes = buffer.get_or_insert_with(|| Vec::with_capacity(size));
        bytes.clear();
        let read = match from.try_read_buf(bytes) {
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                buffer = None;
                continue;
            }
            Err(error) => return Err(error),
        };
        if read == 0 {
            end(to);
            return Ok(Copied::Ended);
        }
        direction.moved(read);
        write_all(to, &bytes[..read]).await?;
        if read == size && until == Until::Filled {
            return Ok(Copied::Filled);
        }
    }
}

async fn write_all(to: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        let written = to
            .async_io(Interest::WRITABLE, || to.try_write(bytes))
            .await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        bytes = &bytes[written..];
    }
    Ok(())
}

/// The source has ended: pass the end on as a half-close. Not-connected here means the peer is
/// already gone, and the tunnel ends either way.
fn end(to: &TcpStream) {
    let _ = rustix::net::shutdown(to, Shutdown::Write);
}

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        let capacity = fcntl_setpipe_size(&write, PIPE_SIZE)
            .or_else(|_| fcntl_getpipe_size(&write))
            .unwrap_or(4096);
        Ok(Pipe {
            read,
            write,
            capacity,
        })
    }

    /// `from` → pipe → `to` until `from` ends.
    async fn pump(
        &self,
        from: &TcpStream,
        to: &TcpStream,
        direction: &Direction,
    ) -> io::Result<()> {
        let mut urgent = [0u8; 512];
        loop {
            let held = match self.fill(from, &mut urgent).await? {
                Moved::Spliced(0) | Moved::Read(0) => {
                    end(to);
                    return Ok(());
                }
                Moved::Read(read) => {
                    direction.moved(read);
                    write_all(to, &urgent[..read]).await?;
                    continue;
                }
                Moved::Spliced(read) => read,
            };
            direction.moved(held);
            self.drain(to, held).await?;
        }
    }

    /// Moves what `from` has into the (empty) pipe. The pipe is empty whenever `from` is read, so
    /// a "would block" from that splice never means a full pipe: either the socket has nothing,
    /// or it stopped at urgent (out-of-band) data, which splice never passes. A plain read tells
    /// which, and passes the mark as `recv` does; on an empty socket it would block too, which
    /// is what tokio's readiness tracking needs to be true.
    async fn fill(&self, from: &TcpStream, urgent: &mut [u8]) -> io::Result<Moved> {
        let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
        from.async_io(Interest::READABLE, || {
            match splice(from, None, &self.write, None, self.capacity, flags) {
                Ok(read) => Ok(Moved::Spliced(read)),
                Err(Errno::AGAIN) => {
                    let (_, read) = recv(from, &mut *urgent, RecvFlags::empty())?;
                    Ok(Moved::Read(read))
                }
                Err(error) => Err(error.into()),
            }
        })
        .await
    }

    /// Empties the pipe (`held` bytes) into `to`.
    async fn drain(&self, to: &TcpStream, mut held: usize) -> io::Result<()> {
        let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
        while held > 0 {
            let written = to
                .async_io(Interest::WRITABLE, || {
                    Ok(splice(&self.read, None, to, None, held, flags)?)
                })
                .await?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            held -= written;
        }
        Ok(())
    }
}

/// How bytes left the source socket.
enum Moved {
    /// Into the pipe.
    Spliced(usize),
    /// Into a buffer, past urgent data.
    Read(usize),
}
