use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use super::*;

/// The (device, inode) of an open descriptor: two descriptors for the same namespace have the same pair.
fn identity(fd: BorrowedFd<'_>) -> (u64, u64) {
    let file = File::from(fd.try_clone_to_owned().unwrap());
    let meta = file.metadata().unwrap();
    (meta.dev(), meta.ino())
}

fn own_netns() -> File {
    File::open("/proc/self/ns/net").unwrap()
}

/// A pipe whose read end is passed somewhere: writing to the write end fails with EPIPE once every copy of the read
/// end is closed, which tells whether the receiver closed the copy it got.
fn pipe() -> (OwnedFd, File) {
    let (read, write) = nix::unistd::pipe().unwrap();
    (read, File::from(write))
}

fn read_end_closed(write: &mut File) -> bool {
    match write.write(b"x") {
        Ok(_) => false,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => true,
        Err(e) => panic!("unexpected write error: {e}"),
    }
}

#[tokio::test]
async fn netns_fd_round_trips() {
    let (a, b) = SeqpacketStream::pair().unwrap();
    let netns = own_netns();
    a.send(b"hello", Some(netns.as_fd())).await.unwrap();
    let mut buf = [0u8; 64];
    let (len, fds) = b.recv(&mut buf).await.unwrap();
    assert_eq!(&buf[..len], b"hello");
    assert_eq!(fds.len(), 1);
    assert_eq!(identity(fds[0].as_fd()), identity(netns.as_fd()));
    assert!(is_network_namespace(fds[0].as_fd()).unwrap());
    // MSG_CMSG_CLOEXEC: the received descriptor does not leak into children.
    let flags = nix::fcntl::fcntl(fds[0].as_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
    assert_ne!(flags & libc::FD_CLOEXEC, 0);
}

#[tokio::test]
async fn messages_keep_their_boundaries_and_fds_their_message() {
    let (a, b) = SeqpacketStream::pair().unwrap();
    let netns = own_netns();
    a.send(b"one", None).await.unwrap();
    a.send(b"two", Some(netns.as_fd())).await.unwrap();
    let mut buf = [0u8; 64];
    let (len, fds) = b.recv(&mut buf).await.unwrap();
    assert_eq!((&buf[..len], fds.len()), (&b"one"[..], 0));
    let (len, fds) = b.recv(&mut buf).await.unwrap();
    assert_eq!((&buf[..len], fds.len()), (&b"two"[..], 1));
}

#[test]
fn namespace_check_tells_netns_from_other_files() {
    let file = tempfile::tempfile().unwrap();
    let cases: Vec<(&str, File, bool)> = vec![
        ("own netns", own_netns(), true),
        ("uts namespace", File::open("/proc/self/ns/uts").unwrap(), false),
        ("regular file", file, false),
        ("directory", File::open("/proc/self").unwrap(), false),
    ];
    for (what, file, want) in cases {
        assert_eq!(is_network_namespace(file.as_fd()).unwrap(), want, "{what}");
    }
}

#[tokio::test]
async fn truncated_message_is_an_error_and_closes_its_fds() {
    let (a, b) = SeqpacketStream::pair().unwrap();
    let (read, mut write) = pipe();
    a.send(&[7u8; 100], Some(read.as_fd())).await.unwrap();
    drop(read);
    let mut buf = [0u8; 10];
    let err = b.recv(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("MSG_TRUNC"), "{err}");
    assert!(read_end_closed(&mut write), "the fd of a truncated message stays open");
}

#[tokio::test]
async fn fds_beyond_the_control_buffer_are_an_error() {
    let (a, b) = SeqpacketStream::pair().unwrap();
    let netns = [own_netns(), own_netns(), own_netns()];
    let fds = netns.each_ref().map(AsRawFd::as_raw_fd);
    let send = |sock: &OwnedFd| send_raw(sock.as_fd(), b"three fds", &fds);
    a.fd.async_io(Interest::WRITABLE, send).await.unwrap();
    let mut buf = [0u8; 64];
    // Room for one descriptor (two after alignment) while three come: the kernel truncates the control data.
    let recv = |sock: &OwnedFd| recv_raw(sock.as_fd(), &mut buf, 1);
    let err = b.fd.async_io(Interest::READABLE, recv).await.unwrap_err();
    assert!(err.to_string().contains("MSG_CTRUNC"), "{err}");
}

#[tokio::test]
async fn extra_fds_are_all_returned_owned() {
    // Whatever the protocol above allows, every descriptor received is handed up, so dropping them closes them.
    let (a, b) = SeqpacketStream::pair().unwrap();
    let (r1, mut w1) = pipe();
    let (r2, mut w2) = pipe();
    let fds = [r1.as_raw_fd(), r2.as_raw_fd()];
    let send = |sock: &OwnedFd| send_raw(sock.as_fd(), b"m", &fds);
    a.fd.async_io(Interest::WRITABLE, send).await.unwrap();
    drop((r1, r2));
    let mut buf = [0u8; 8];
    let (_, received) = b.recv(&mut buf).await.unwrap();
    assert_eq!(received.len(), 2);
    assert!(!read_end_closed(&mut w1));
    drop(received);
    assert!(read_end_closed(&mut w1) && read_end_closed(&mut w2));
}

#[tokio::test]
async fn peer_close_reads_as_end_and_sending_fails() {
    let (a, b) = SeqpacketStream::pair().unwrap();
    drop(a);
    let mut buf = [0u8; 8];
    let (len, fds) = b.recv(&mut buf).await.unwrap();
    assert_eq!((len, fds.len()), (0, 0));
    let err = b.send(b"x", None).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
}

#[tokio::test]
async fn listener_replaces_a_stale_socket_and_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zds.sock");
    drop(SeqpacketListener::bind(&path).unwrap());
    assert!(
        path.exists(),
        "a dropped listener leaves its socket file, as a crashed agent would"
    );
    let listener = SeqpacketListener::bind(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
    assert_eq!(mode, SOCKET_MODE);
    let client = SeqpacketStream::connect(&path).unwrap();
    let server = listener.accept().await.unwrap();
    client.send(b"ping", None).await.unwrap();
    let mut buf = [0u8; 8];
    let (len, _) = server.recv(&mut buf).await.unwrap();
    assert_eq!(&buf[..len], b"ping");
}

#[tokio::test]
async fn listener_refuses_to_delete_other_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-a-socket");
    std::fs::write(&path, b"data").unwrap();
    let err = SeqpacketListener::bind(&path).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    assert_eq!(std::fs::read(&path).unwrap(), b"data");
}

#[tokio::test]
async fn connect_without_listener_fails() {
    let dir = tempfile::tempdir().unwrap();
    let err = SeqpacketStream::connect(&dir.path().join("absent.sock")).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    assert!(err.to_string().contains("connect to"), "{err}");
}
