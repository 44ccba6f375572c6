//! Which TCP ports have a listening socket in the calling thread's network namespace, asked of the kernel over
//! NETLINK_SOCK_DIAG with a state filter of LISTEN only. Unlike reading `/proc/net/tcp`, which walks every socket of
//! the namespace (a pod serving thousands of connections a second holds tens of thousands in TIME_WAIT, and the walk
//! then costs milliseconds of CPU per read), the kernel answers a LISTEN-only dump from the listening table alone.

use std::collections::BTreeSet;
use std::io;
use std::os::fd::AsRawFd;

use nix::sys::socket::{AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto, socket};

/// `SOCK_DIAG_BY_FAMILY`: the message type of requests and answers.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
/// `NLM_F_ROOT | NLM_F_MATCH`.
const NLM_F_DUMP: u16 = 0x300;
const IPPROTO_TCP: u8 = 6;
/// `1 << TCP_LISTEN`.
const LISTEN_STATES: u32 = 1 << 10;
/// `struct nlmsghdr`.
const HEADER: usize = 16;
/// `struct inet_diag_req_v2`.
const REQUEST: usize = 56;
/// Bytes of `struct inet_diag_msg` read: family, state, timer, retrans, then the source port (big endian).
const MESSAGE_PORT: std::ops::Range<usize> = 4..6;

/// The TCP ports with a socket in LISTEN, IPv4 and IPv6, in the calling thread's namespace.
pub fn listening_tcp_ports() -> io::Result<BTreeSet<u16>> {
    let mut ports = dump(AddressFamily::Inet)?;
    // Without IPv6 the kernel refuses the family, which is no error.
    if let Ok(v6) = dump(AddressFamily::Inet6) {
        ports.extend(v6);
    }
    Ok(ports)
}

fn dump(family: AddressFamily) -> io::Result<BTreeSet<u16>> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )?;
    let kernel = NetlinkAddr::new(0, 0);
    sendto(fd.as_raw_fd(), &request(family as u8), &kernel, MsgFlags::empty())?;
    let mut ports = BTreeSet::new();
    let mut buffer = vec![0u8; 32 * 1024];
    loop {
        let n = recv(fd.as_raw_fd(), &mut buffer, MsgFlags::empty())?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "sock_diag: the dump ended without NLMSG_DONE",
            ));
        }
        if parse(&buffer[..n], &mut ports)? {
            return Ok(ports);
        }
    }
}

/// A LISTEN-only dump request for `family` and TCP.
fn request(family: u8) -> [u8; HEADER + REQUEST] {
    let mut message = [0u8; HEADER + REQUEST];
    message[0..4].copy_from_slice(&((HEADER + REQUEST) as u32).to_ne_bytes());
    message[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    message[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    // Sequence number and port id stay 0.
    message[HEADER] = family;
    message[HEADER + 1] = IPPROTO_TCP;
    message[HEADER + 4..HEADER + 8].copy_from_slice(&LISTEN_STATES.to_ne_bytes());
    message
}

/// Adds the ports of one datagram's messages to `ports`; `true` once the dump is done.
fn parse(mut datagram: &[u8], ports: &mut BTreeSet<u16>) -> io::Result<bool> {
    while datagram.len() >= HEADER {
        let length = u32::from_ne_bytes(datagram[0..4].try_into().unwrap_or_default()) as usize;
        let kind = u16::from_ne_bytes(datagram[4..6].try_into().unwrap_or_default());
        if length < HEADER || length > datagram.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "sock_diag: a message overruns its datagram",
            ));
        }
        let payload = &datagram[HEADER..length];
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let errno = payload
                    .get(0..4)
                    .map_or(0, |b| i32::from_ne_bytes(b.try_into().unwrap_or_default()));
                return Err(io::Error::from_raw_os_error(-errno));
            }
            SOCK_DIAG_BY_FAMILY => {
                if let Some(port) = payload.get(MESSAGE_PORT) {
                    ports.insert(u16::from_be_bytes([port[0], port[1]]));
                }
            }
            _ => {}
        }
        // Messages are aligned to 4 bytes.
        let next = (length + 3) & !3;
        datagram = datagram.get(next..).unwrap_or_default();
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_namespaces_listeners_are_found_and_nothing_else() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let client_port = client.local_addr().unwrap().port();
        let ports = listening_tcp_ports().unwrap();
        assert!(ports.contains(&port), "{port} not in {ports:?}");
        assert!(!ports.contains(&client_port), "an established socket is not listening");
        drop(listener);
        assert!(!listening_tcp_ports().unwrap().contains(&port));
    }

    #[test]
    fn a_dump_is_parsed_message_by_message() {
        let message = |kind: u16, payload: &[u8]| {
            let mut m = Vec::new();
            m.extend_from_slice(&((HEADER + payload.len()) as u32).to_ne_bytes());
            m.extend_from_slice(&kind.to_ne_bytes());
            m.extend_from_slice(&[0; 10]);
            m.extend_from_slice(payload);
            while m.len() % 4 != 0 {
                m.push(0);
            }
            m
        };
        let mut datagram = message(SOCK_DIAG_BY_FAMILY, &[2, 10, 0, 0, 0x3a, 0x98, 0, 0]);
        datagram.extend(message(SOCK_DIAG_BY_FAMILY, &[2, 10, 0, 0, 0x1f, 0x90, 0, 0, 7]));
        let mut ports = BTreeSet::new();
        assert!(!parse(&datagram, &mut ports).unwrap());
        assert_eq!(ports, BTreeSet::from([15000, 8080]));
        assert!(parse(&message(NLMSG_DONE, &[0; 4]), &mut ports).unwrap());
        let error = parse(&message(NLMSG_ERROR, &(-2i32).to_ne_bytes()), &mut ports).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(2));
        assert!(parse(&[200, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], &mut ports).is_err());
    }
}
