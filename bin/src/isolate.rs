//! `leash exec --isolate` (Linux, SPEC §19): the command runs in new user and network namespaces
//! whose only way out is leash. A helper (this binary again, as the hidden `__isolate`
//! subcommand) enters the namespaces, brings the namespace's loopback up, binds leash's proxy
//! ports *inside* it, and hands those listening sockets to leash over a unix socket
//! (`SCM_RIGHTS`); leash accepts on them like on its own listeners, then tells the helper to
//! exec the command. So the command finds the proxies at the same `127.0.0.1:PORT` as without
//! isolation, and every other address is unreachable: the namespace has no other interface.
//! Handing over the listening sockets (rather than relaying bytes through the helper) keeps one
//! hop and lets the tunnels splice as usual.
//!
//! The helper connects to a socket in leash's private `0700` scratch directory before it runs
//! anything else, and leash takes exactly one connection, from the helper's pid, so the command
//! (which starts later) cannot speak on that channel.

use std::{
    io::{self, IoSlice, IoSliceMut, Read, Write},
    mem::MaybeUninit,
    net::{Ipv4Addr, SocketAddr, TcpListener},
    os::{
        fd::{AsFd, OwnedFd},
        unix::{net::UnixStream, process::CommandExt},
    },
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{bail, Context};
use clap::Args;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketType,
};

/// The hidden subcommand the helper runs as.
pub(crate) const HELPER: &str = "__isolate";

/// How long leash waits for the helper to hand over its sockets.
const HANDOVER: Duration = Duration::from_secs(10);

/// The helper's arguments (internal; not for people).
#[derive(Debug, Args)]
pub(crate) struct HelperArgs {
    /// The unix socket leash listens on for the handover.
    #[arg(long)]
    channel: PathBuf,
    /// A proxy port to bind inside the namespace (repeated, in leash's order).
    #[arg(long = "port")]
    ports: Vec<u16>,
    /// The command.
    #[arg(trailing_var_arg = true, required = true)]
    command: Vec<String>,
}

/// The command, started isolated, and the listeners it can reach leash through (in `ports`'
/// order). The command waits until `Handover::release` says leash serves them.
#[derive(Debug)]
pub(crate) struct Handover {
    pub(crate) child: tokio::process::Child,
    pub(crate) listeners: Vec<TcpListener>,
    channel: UnixStream,
}

impl Handover {
    /// Lets the helper exec the command.
    pub(crate) fn release(mut self) -> anyhow::Result<tokio::process::Child> {
        self.channel
            .write_all(b"go")
            .context("starting the isolated command")?;
        Ok(self.child)
    }
}

/// Starts `command` isolated with `env` added to leash's own environment (less the variable
/// `withheld`), its namespace's loopback carrying `ports`.
pub(crate) async fn spawn(
    scratch: &Path,
    command: &[String],
    env: Vec<(String, String)>,
    ports: &[u16],
    withheld: &str,
) -> anyhow::Result<Handover> {
    let channel_path = scratch.join("isolate.sock");
    let channel =
        tokio::net::UnixListener::bind(&channel_path).context("creating the isolation channel")?;
    let mut helper = tokio::process::Command::new(std::env::current_exe()?);
    helper.arg(HELPER).arg("--channel").arg(&channel_path);
    for port in ports {
        helper.arg("--port").arg(port.to_string());
    }
    helper
        .arg("--")
        .args(command)
        .env_remove(withheld)
        .envs(env);
    let child = helper.spawn().context("starting the isolation helper")?;
    let pid = child.id().context("the isolation helper exited at once")?;
    let expected = ports.len();
    let accepted = tokio::time::timeout(HANDOVER, channel.accept()).await;
    drop(channel);
    let _ = std::fs::remove_file(&channel_path);
    let stream = match accepted {
        Ok(accepted) => accepted.context("accepting the isolation helper")?.0,
        Err(_) => bail!("the isolation helper did not report within {HANDOVER:?}"),
    };
    let stream = stream.into_std()?;
    let taken = tokio::task::spawn_blocking(move || take_handover(stream, pid, expected));
    let (channel, listeners) = taken.await??;
    Ok(Handover {
        child,
        listeners,
        channel,
    })
}

/// Checks that the one connection taken is the helper's (by pid) and receives its listeners, or
/// the error it reports.
fn take_handover(
    stream: UnixStream,
    helper: u32,
    expected: usize,
) -> anyhow::Result<(UnixStream, Vec<TcpListener>)> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(HANDOVER))?;
    let peer = rustix::net::sockopt::socket_peercred(&stream)?;
    if peer.pid.as_raw_nonzero().get() as u32 != helper {
        bail!("the isolation channel was opened by another process");
    }
    let (message, fds) = receive(&stream, expected)?;
    match message.split_first() {
        Some((0, _)) if fds.len() == expected => {
            let listeners = fds.into_iter().map(TcpListener::from).collect();
            Ok((stream, listeners))
        }
        Some((1, reason)) => bail!("{}", String::from_utf8_lossy(reason)),
        _ => bail!("the isolation helper sent a malformed handover"),
    }
}

fn receive(stream: &UnixStream, expected: usize) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut buffer = vec![0u8; 4096];
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(expected.max(1)))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = rustix::net::recvmsg(
        stream,
        &mut [IoSliceMut::new(&mut buffer)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    buffer.truncate(received.bytes);
    Ok((buffer, fds))
}

/// The helper: namespaces, loopback, listeners handed to leash, then the command in its place.
pub(crate) fn helper(args: HelperArgs) -> ExitCode {
    let channel = match UnixStream::connect(&args.channel) {
        Ok(channel) => channel,
        Err(error) => {
            eprintln!("leash: isolation channel: {error}");
            return ExitCode::from(2);
        }
    };
    let listeners = match enter_namespaces().and_then(|()| bind_ports(&args.ports)) {
        Ok(listeners) => listeners,
        Err(error) => {
            let mut message = vec![1u8];
            message.extend(error.to_string().as_bytes());
            let _ = send(&channel, &message, &[]);
            return ExitCode::from(2);
        }
    };
    let fds: Vec<_> = listeners.iter().map(AsFd::as_fd).collect();
    if send(&channel, &[0], &fds).is_err() {
        return ExitCode::from(2);
    }
    drop(listeners);
    // leash serves the sockets before the command may use them; EOF means leash is gone.
    let mut go = [0u8; 2];
    if (&channel).read_exact(&mut go).is_err() {
        return ExitCode::from(2);
    }
    drop(channel);
    let error = std::process::Command::new(&args.command[0])
        .args(&args.command[1..])
        .exec();
    crate::exec::cannot_run(&args.command[0], &error)
}

fn send(
    channel: &UnixStream,
    message: &[u8],
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> io::Result<()> {
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len().max(1)))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("too many descriptors for one message"));
    }
    rustix::net::sendmsg(
        channel,
        &[IoSlice::new(message)],
        &mut control,
        SendFlags::empty(),
    )?;
    Ok(())
}

/// New user, network and mount namespaces, our own ids mapped to themselves, loopback up, and
/// the well-known homes of unix sockets hidden.
fn enter_namespaces() -> io::Result<()> {
    use nix::sched::{unshare, CloneFlags};
    let (uid, gid) = (rustix::process::getuid(), rustix::process::getgid());
    let flags = CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWNS;
    unshare(flags).map_err(|errno| {
        io::Error::other(format!(
            "--isolate needs user and network namespaces, which this system refuses ({errno}); \
             unprivileged user namespaces may be disabled (kernel.unprivileged_userns_clone, \
             user.max_user_namespaces, or a container's seccomp policy)"
        ))
    })?;
    let write = |file: &str, text: String| {
        std::fs::write(format!("/proc/self/{file}"), text)
            .map_err(|e| io::Error::other(format!("--isolate: writing /proc/self/{file}: {e}")))
    };
    write("setgroups", "deny".to_owned())?;
    write("uid_map", format!("{0} {0} 1", uid.as_raw()))?;
    write("gid_map", format!("{0} {0} 1", gid.as_raw()))?;
    hide_socket_homes()?;
    loopback_up().map_err(|e| io::Error::other(format!("--isolate: bringing loopback up: {e}")))
}

/// Unix sockets in the file system ignore network namespaces: the user's D-Bus (which can start
/// programs outside, `systemd-run --user`), the system bus, a Docker socket, an SSH agent and
/// X11 live under `/run` (`$XDG_RUNTIME_DIR` is `/run/user/UID`) and `/tmp/.X11-unix`. An empty
/// tmpfs over each, in the command's own mount namespace, takes those doors away.
fn hide_socket_homes() -> io::Result<()> {
    use nix::mount::{mount, MsFlags};
    let failed =
        |what: &str, errno: nix::Error| io::Error::other(format!("--isolate: {what}: {errno}"));
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| failed("making mounts private", e))?;
    for home in ["/run", "/tmp/.X11-unix"] {
        if !Path::new(home).is_dir() {
            continue;
        }
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        mount(Some("tmpfs"), home, Some("tmpfs"), flags, Some("mode=0755"))
            .map_err(|e| failed(&format!("hiding {home}"), e))?;
    }
    Ok(())
}

/// `ip link set lo up`, as one netlink request: the loopback interface is index 1 in every
/// network namespace.
fn loopback_up() -> io::Result<()> {
    const RTM_NEWLINK: u16 = 16;
    const NLM_F_REQUEST_ACK: u16 = 1 | 4;
    const NLMSG_ERROR: u16 = 2;
    const IFF_UP: u32 = 1;
    let mut request = Vec::with_capacity(32);
    request.extend(32u32.to_ne_bytes()); // nlmsghdr: length,
    request.extend(RTM_NEWLINK.to_ne_bytes()); // type,
    request.extend(NLM_F_REQUEST_ACK.to_ne_bytes()); // flags,
    request.extend(1u32.to_ne_bytes()); // sequence,
    request.extend(0u32.to_ne_bytes()); // port id; ifinfomsg:
    request.extend([0u8, 0]); // family AF_UNSPEC, padding,
    request.extend(0u16.to_ne_bytes()); // device type,
    request.extend(1i32.to_ne_bytes()); // interface index (lo),
    request.extend(IFF_UP.to_ne_bytes()); // flags,
    request.extend(IFF_UP.to_ne_bytes()); // the flags to change.
    let socket = rustix::net::socket(AddressFamily::NETLINK, SocketType::RAW, None)?;
    let kernel = rustix::net::netlink::SocketAddrNetlink::new(0, 0);
    rustix::net::sendto(&socket, &request, SendFlags::empty(), &kernel)?;
    let mut answer = [0u8; 256];
    let n = rustix::net::recv(&socket, &mut answer, RecvFlags::empty())?.0;
    let kind = answer.get(4..6).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    let errno = answer
        .get(16..20)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    match (n >= 20, kind, errno) {
        (true, Some(NLMSG_ERROR), Some(0)) => Ok(()),
        (true, Some(NLMSG_ERROR), Some(errno)) => Err(io::Error::from_raw_os_error(-errno)),
        _ => Err(io::Error::other("unexpected netlink answer")),
    }
}

fn bind_ports(ports: &[u16]) -> io::Result<Vec<TcpListener>> {
    ports
        .iter()
        .map(|port| {
            TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, *port))).map_err(|e| {
                io::Error::other(format!("--isolate: binding 127.0.0.1:{port} inside: {e}"))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The helper's end of a channel, with this process's pid as its peer.
    fn channel_with(message: &[u8]) -> UnixStream {
        let (ours, theirs) = UnixStream::pair().unwrap();
        send(&theirs, message, &[]).unwrap();
        ours
    }

    #[test]
    fn a_handover_from_another_process_is_refused() {
        let someone_else = std::process::id() + 1;
        let error = take_handover(channel_with(&[0]), someone_else, 0).unwrap_err();
        assert!(error.to_string().contains("another process"), "{error}");
    }

    #[test]
    fn a_malformed_or_short_handover_is_refused() {
        let me = std::process::id();
        for message in [&[7u8][..], &[0], &[]] {
            // One listener expected: a message without descriptors, or of an unknown kind.
            let refused = take_handover(channel_with(message), me, 1);
            assert!(refused.is_err(), "{message:?}");
        }
    }

    #[test]
    fn the_helpers_own_error_is_passed_on() {
        let mut message = vec![1u8];
        message.extend(b"--isolate needs user and network namespaces");
        let error = take_handover(channel_with(&message), std::process::id(), 1).unwrap_err();
        assert_eq!(
            error.to_string(),
            "--isolate needs user and network namespaces"
        );
    }
}
