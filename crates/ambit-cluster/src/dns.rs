//! Cluster DNS: an authoritative server for the cluster domain that answers A queries for services and pods.
//!
//! Pods resolve through `nameserver <dns_ip>` with the Kubernetes search list, so the server sees fully qualified
//! names such as `echo.default.svc.cluster.local` (and, while glibc walks the search list, many names that do not
//! exist). It answers only for the cluster domain: the cluster is sealed off, so any other name is REFUSED.
//!
//! The wire codec is deliberately small: one question per message, A records only (TTL 5 s), compression only
//! as a pointer back to the question, EDNS(0) understood just enough to size UDP answers.

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

#[cfg(test)]
mod tests;

/// TTL of every answer, in seconds: short, because endpoints of headless services come and go.
pub const TTL: u32 = 5;
/// The largest UDP answer without EDNS (RFC 1035).
pub const PLAIN_UDP_MAX_LEN: usize = 512;
/// The largest UDP answer the server sends to EDNS clients, and the size it advertises (DNS flag day 2020).
pub const EDNS_UDP_MAX_LEN: usize = EDNS_PAYLOAD as usize;
/// [`EDNS_UDP_MAX_LEN`] as the OPT record carries it.
const EDNS_PAYLOAD: u16 = 1232;
/// The largest message a TCP frame can carry.
pub const TCP_MAX_LEN: usize = 65535;

/// How long a TCP connection may sit idle (or stall mid-message) before the server closes it.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections beyond this many are closed as soon as they are accepted.
const MAX_TCP_CONNECTIONS: usize = 256;
/// The largest query accepted over TCP; a real query is a few hundred bytes at most.
const MAX_TCP_QUERY_LEN: usize = 4096;
/// Pause after a failed `accept`/`recv` so that a persistent error (e.g. EMFILE) does not spin the loop.
const ERROR_BACKOFF: Duration = Duration::from_millis(20);

const HEADER_LEN: usize = 12;
/// An A record whose owner is a pointer to the question name: pointer, type, class, TTL, rdlength, address.
const ANSWER_LEN: usize = 16;
/// An OPT pseudo-record with no options: root name, type, class, TTL, rdlength.
const OPT_LEN: usize = 11;
/// A compression pointer to offset 12, where the question name starts.
const QUESTION_NAME_POINTER: [u8; 2] = [0xC0, 0x0C];
const MAX_NAME_LEN: usize = 255;
const MAX_LABEL_LEN: usize = 63;

// Header flag bits, third byte.
const FLAG_QR: u8 = 0x80;
const FLAG_OPCODE: u8 = 0x78;
const FLAG_AA: u8 = 0x04;
const FLAG_TC: u8 = 0x02;
const FLAG_RD: u8 = 0x01;

const TYPE_A: u16 = 1;
const TYPE_OPT: u16 = 41;
const TYPE_IXFR: u16 = 251;
const TYPE_AXFR: u16 = 252;
const TYPE_ANY: u16 = 255;
const CLASS_IN: u16 = 1;
const CLASS_ANY: u16 = 255;

const RCODE_NOERROR: u16 = 0;
const RCODE_FORMERR: u16 = 1;
const RCODE_NXDOMAIN: u16 = 3;
const RCODE_NOTIMP: u16 = 4;
const RCODE_REFUSED: u16 = 5;
/// Extended rcode: the query's EDNS version is not supported (RFC 6891).
const RCODE_BADVERS: u16 = 16;

/// The names the server answers for; immutable, swapped whole when the cluster changes.
///
/// Names are stored lowercase without the trailing dot. Every ancestor of an inserted name, up to the cluster
/// domain, exists too (with no addresses), so that e.g. `default.svc.cluster.local` is NODATA rather than
/// NXDOMAIN. The default table has no cluster domain and refuses every name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DnsTable {
    /// Lowercase, no trailing dot; empty means "no domain": every name is refused.
    domain: String,
    names: BTreeMap<String, Vec<Ipv4Addr>>,
}

/// The result of looking a name up in a [`DnsTable`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The name exists; its A records, possibly none (then the answer is NODATA).
    Found(Vec<Ipv4Addr>),
    /// The name is inside the cluster domain but does not exist (NXDOMAIN).
    NotFound,
    /// The name is outside the cluster domain (REFUSED).
    Refused,
}

// === impl DnsTable ===

impl DnsTable {
    /// An empty table for `cluster_domain` (e.g. `cluster.local`; case and a trailing dot do not matter).
    pub fn new(cluster_domain: &str) -> Self {
        Self {
            domain: normalize(cluster_domain),
            names: BTreeMap::new(),
        }
    }

    /// The cluster domain, lowercase, without trailing dot.
    pub fn cluster_domain(&self) -> &str {
        &self.domain
    }

    /// Adds A records for a fully qualified name (no trailing dot needed; case-insensitive), e.g.
    /// "echo.default.svc.cluster.local". Inserting the same name again adds the addresses it lacks; an empty
    /// `addrs` makes the name exist without addresses. Names outside the cluster domain, or with empty labels,
    /// are ignored: the server could never answer them.
    pub fn insert(&mut self, fqdn: &str, addrs: Vec<Ipv4Addr>) {
        let name = normalize(fqdn);
        if !self.contains(&name) || name.split('.').any(str::is_empty) {
            tracing::debug!(name = %fqdn, domain = %self.domain, "dns: ignoring a name outside the cluster domain");
            return;
        }
        let mut rest = name.as_str();
        while let Some((_, parent)) = rest.split_once('.') {
            if !self.contains(parent) {
                break;
            }
            self.names.entry(parent.to_owned()).or_default();
            rest = parent;
        }
        let known = self.names.entry(name).or_default();
        for addr in addrs {
            if !known.contains(&addr) {
                known.push(addr);
            }
        }
    }

    /// Looks up a fully qualified name (no trailing dot needed; case-insensitive).
    ///
    /// Besides the inserted names (and their ancestors) this knows the cluster domain itself and the Kubernetes
    /// pod names `<a>-<b>-<c>-<d>.<namespace>.pod.<domain>`, which resolve to `a.b.c.d`.
    pub fn lookup(&self, fqdn: &str) -> Lookup {
        self.find(&normalize(fqdn))
    }

    /// [`Self::lookup`] for a name that is already lowercase without trailing dot.
    fn find(&self, name: &str) -> Lookup {
        if !self.contains(name) {
            return Lookup::Refused;
        }
        if let Some(addrs) = self.names.get(name) {
            return Lookup::Found(addrs.clone());
        }
        if name == self.domain {
            return Lookup::Found(Vec::new());
        }
        let Some(relative) = name
            .strip_suffix(self.domain.as_str())
            .and_then(|prefix| prefix.strip_suffix('.'))
        else {
            return Lookup::NotFound;
        };
        let labels: Vec<&str> = relative.split('.').collect();
        match labels.as_slice() {
            ["pod"] | [_, "pod"] => Lookup::Found(Vec::new()),
            [ip, _, "pod"] => match parse_dashed_ipv4(ip) {
                Some(ip) => Lookup::Found(vec![ip]),
                None => Lookup::NotFound,
            },
            _ => Lookup::NotFound,
        }
    }

    /// Whether a normalized name is the cluster domain or below it.
    fn contains(&self, name: &str) -> bool {
        !self.domain.is_empty()
            && (name == self.domain
                || name
                    .strip_suffix(self.domain.as_str())
                    .is_some_and(|prefix| prefix.ends_with('.')))
    }
}

/// Lowercase (DNS case-insensitivity is ASCII only) and without a trailing dot.
fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// Parses the pod-name form of an address, `10-244-1-5`.
fn parse_dashed_ipv4(label: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = label.split('-');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *octet = part.parse().ok()?;
    }
    parts.next().is_none().then(|| Ipv4Addr::from(octets))
}

// === answer ===

/// Pure: builds the response for one query message, or None if the bytes are not a query worth answering (e.g. a
/// response, or too short to have an id).
///
/// `max_len` is the largest response the transport takes: [`udp_max_len`] of the query for UDP, [`TCP_MAX_LEN`]
/// for TCP; it is clamped to 512..=65535. An answer that does not fit is sent with TC set and no answer records,
/// so that the client retries over TCP.
pub fn answer(query: &[u8], table: &DnsTable, max_len: usize) -> Option<Vec<u8>> {
    let id = u16::from_be_bytes([*query.first()?, *query.get(1)?]);
    let flags = query.get(2).copied().unwrap_or(0);
    if flags & FLAG_QR != 0 {
        return None;
    }
    let limit = max_len.clamp(PLAIN_UDP_MAX_LEN, TCP_MAX_LEN);
    let mut response = Response {
        id,
        flags: flags & (FLAG_OPCODE | FLAG_RD),
        question: &[],
        rcode: RCODE_FORMERR,
        authoritative: false,
        answers: Vec::new(),
        edns: false,
    };
    if query.len() < HEADER_LEN {
        return Some(response.encode(limit));
    }
    if flags & FLAG_OPCODE != 0 {
        response.rcode = RCODE_NOTIMP;
        return Some(response.encode(limit));
    }
    let Some(parsed) = parse_query(query) else {
        return Some(response.encode(limit));
    };
    response.question = parsed.question;
    response.edns = parsed.edns.is_some();
    if parsed.edns.as_ref().is_some_and(|edns| edns.version != 0) {
        response.rcode = RCODE_BADVERS;
        return Some(response.encode(limit));
    }
    let lookup = if matches!(parsed.qclass, CLASS_IN | CLASS_ANY) {
        table.find(&parsed.name)
    } else {
        Lookup::Refused
    };
    match lookup {
        Lookup::Refused => response.rcode = RCODE_REFUSED,
        Lookup::NotFound => {
            response.rcode = RCODE_NXDOMAIN;
            response.authoritative = true;
        }
        // Zone transfers are not offered.
        Lookup::Found(_) if matches!(parsed.qtype, TYPE_AXFR | TYPE_IXFR) => response.rcode = RCODE_REFUSED,
        Lookup::Found(mut addrs) => {
            response.rcode = RCODE_NOERROR;
            response.authoritative = true;
            if matches!(parsed.qtype, TYPE_A | TYPE_ANY) && !addrs.is_empty() {
                // Rotate by the query id so that clients spread across the endpoints of a headless service.
                let start = usize::from(id) % addrs.len();
                addrs.rotate_left(start);
                response.answers = addrs;
            }
        }
    }
    Some(response.encode(limit))
}

/// The UDP answer size for a query: the client's EDNS payload size within 512..=1232, or 512 without EDNS.
pub fn udp_max_len(query: &[u8]) -> usize {
    match parse_query(query).and_then(|parsed| parsed.edns) {
        Some(edns) => usize::from(edns.payload).clamp(PLAIN_UDP_MAX_LEN, EDNS_UDP_MAX_LEN),
        None => PLAIN_UDP_MAX_LEN,
    }
}

/// A well-formed query (header of at least 12 bytes already checked).
struct ParsedQuery<'a> {
    /// The question exactly as sent: name, type, class.
    question: &'a [u8],
    /// The question name, lowercase, in presentation form with `\DDD` escapes.
    name: String,
    qtype: u16,
    qclass: u16,
    edns: Option<Edns>,
}

/// The OPT pseudo-record of a query.
struct Edns {
    payload: u16,
    version: u8,
}

/// Parses the question and finds the OPT record; None means FORMERR.
fn parse_query(msg: &[u8]) -> Option<ParsedQuery<'_>> {
    if read_u16(msg, 4)? != 1 {
        return None;
    }
    let (name, name_end) = read_question_name(msg, HEADER_LEN)?;
    let qtype = read_u16(msg, name_end)?;
    let qclass = read_u16(msg, name_end + 2)?;
    let question_end = name_end + 4;
    let other = usize::from(read_u16(msg, 6)?) + usize::from(read_u16(msg, 8)?);
    let additional = usize::from(read_u16(msg, 10)?);
    let edns = find_opt(msg, question_end, other, additional)?;
    Some(ParsedQuery {
        question: msg.get(HEADER_LEN..question_end)?,
        name,
        qtype,
        qclass,
        edns,
    })
}

/// Reads an uncompressed name; returns it in presentation form and the offset after it.
fn read_question_name(msg: &[u8], mut pos: usize) -> Option<(String, usize)> {
    let mut name = String::new();
    let mut wire_len = 1;
    loop {
        let len = usize::from(*msg.get(pos)?);
        pos += 1;
        if len == 0 {
            return Some((name, pos));
        }
        // Covers compression pointers (0xC0) and the reserved label types (0x40, 0x80) too.
        if len > MAX_LABEL_LEN {
            return None;
        }
        wire_len += len + 1;
        if wire_len > MAX_NAME_LEN {
            return None;
        }
        let label = msg.get(pos..pos + len)?;
        pos += len;
        if !name.is_empty() {
            name.push('.');
        }
        push_label(&mut name, label);
    }
}

/// Appends a label lowercased; dots, backslashes and non-printable bytes become `\DDD`, so a label can never be
/// confused with several labels, nor with a table name.
fn push_label(name: &mut String, label: &[u8]) {
    for &byte in label {
        if byte.is_ascii_graphic() && byte != b'.' && byte != b'\\' {
            name.push(char::from(byte.to_ascii_lowercase()));
        } else {
            name.push('\\');
            for digit in [byte / 100, byte / 10 % 10, byte % 10] {
                name.push(char::from(b'0' + digit));
            }
        }
    }
}

/// Walks the answer and authority records (`skip` of them) and the `additional` records after the question,
/// returning the OPT record of the additional section, if any. None means a malformed message.
fn find_opt(msg: &[u8], mut pos: usize, skip: usize, additional: usize) -> Option<Option<Edns>> {
    let mut edns = None;
    for index in 0..skip + additional {
        let owner = pos;
        pos = skip_name(msg, pos)?;
        let rtype = read_u16(msg, pos)?;
        let class = read_u16(msg, pos + 2)?;
        let version = *msg.get(pos + 5)?;
        let rdlength = usize::from(read_u16(msg, pos + 8)?);
        pos += 10 + rdlength;
        if pos > msg.len() {
            return None;
        }
        if index >= skip && rtype == TYPE_OPT {
            // At most one OPT, owned by the root (RFC 6891 6.1.1).
            if edns.is_some() || msg.get(owner) != Some(&0) {
                return None;
            }
            edns = Some(Edns {
                payload: class,
                version,
            });
        }
    }
    Some(edns)
}

/// Skips a possibly compressed name; returns the offset after it.
fn skip_name(msg: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let len = *msg.get(pos)?;
        match len & 0xC0 {
            0x00 if len == 0 => return Some(pos + 1),
            0x00 => pos += 1 + usize::from(len),
            0xC0 => {
                msg.get(pos + 1)?;
                return Some(pos + 2);
            }
            _ => return None,
        }
    }
}

fn read_u16(msg: &[u8], pos: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.get(pos)?, *msg.get(pos + 1)?]))
}

/// A response under construction.
struct Response<'a> {
    id: u16,
    /// The opcode and RD bits of the query.
    flags: u8,
    /// The question as sent; empty for a header-only error.
    question: &'a [u8],
    /// Up to 12 bits; the upper 8 go into the OPT record.
    rcode: u16,
    authoritative: bool,
    answers: Vec<Ipv4Addr>,
    /// Whether to add an OPT record (the query had one).
    edns: bool,
}

impl Response<'_> {
    /// Encodes the response; if the answers do not fit in `limit` bytes, sets TC and leaves them out.
    fn encode(&self, limit: usize) -> Vec<u8> {
        let base_len = HEADER_LEN + self.question.len() + if self.edns { OPT_LEN } else { 0 };
        let full_len = base_len + ANSWER_LEN * self.answers.len();
        let fitting = match u16::try_from(self.answers.len()) {
            Ok(count) if full_len <= limit => Some(count),
            _ => None,
        };
        let (answer_count, answers) = match fitting {
            Some(count) => (count, self.answers.as_slice()),
            None => (0, &[][..]),
        };

        let mut out = Vec::with_capacity(base_len + ANSWER_LEN * answers.len());
        out.extend_from_slice(&self.id.to_be_bytes());
        let mut flags = FLAG_QR | self.flags;
        if self.authoritative {
            flags |= FLAG_AA;
        }
        if fitting.is_none() {
            flags |= FLAG_TC;
        }
        out.push(flags);
        // RA, Z, AD and CD are all zero; the low four bits of the rcode.
        out.push(self.rcode.to_be_bytes()[1] & 0x0F);
        let question_count = u16::from(!self.question.is_empty());
        for count in [question_count, answer_count, 0, u16::from(self.edns)] {
            out.extend_from_slice(&count.to_be_bytes());
        }
        out.extend_from_slice(self.question);
        for addr in answers {
            out.extend_from_slice(&QUESTION_NAME_POINTER);
            out.extend_from_slice(&TYPE_A.to_be_bytes());
            out.extend_from_slice(&CLASS_IN.to_be_bytes());
            out.extend_from_slice(&TTL.to_be_bytes());
            out.extend_from_slice(&4u16.to_be_bytes());
            out.extend_from_slice(&addr.octets());
        }
        if self.edns {
            out.push(0);
            out.extend_from_slice(&TYPE_OPT.to_be_bytes());
            // The class of an OPT record is the advertised payload size.
            out.extend_from_slice(&EDNS_PAYLOAD.to_be_bytes());
            // TTL: extended rcode (upper 8 of 12 bits), version 0, no flags. Then an empty rdata.
            out.push((self.rcode >> 4).to_be_bytes()[1]);
            out.extend_from_slice(&[0, 0, 0, 0, 0]);
        }
        out
    }
}

// === servers ===

/// Serves UDP on the socket until the receiver's sender is dropped; reads the table from the watch channel for each
/// query.
pub async fn serve_udp(socket: UdpSocket, mut table: watch::Receiver<Arc<DnsTable>>) {
    // Large enough for any datagram, so that none is silently cut short.
    let mut buf = vec![0u8; 65536];
    loop {
        tokio::select! {
            changed = table.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            received = socket.recv_from(&mut buf) => match received {
                Ok((len, peer)) => {
                    // `recv_from` never reports more bytes than the buffer holds.
                    let query = &buf[..len];
                    let current = Arc::clone(&table.borrow());
                    if let Some(response) = answer(query, &current, udp_max_len(query)) {
                        send_udp(&socket, &response, peer).await;
                    } else {
                        tracing::debug!(%peer, len, "dns: dropping a datagram that is not a query");
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, "dns: udp receive failed");
                    tokio::time::sleep(ERROR_BACKOFF).await;
                }
            },
        }
    }
}

async fn send_udp(socket: &UdpSocket, response: &[u8], peer: SocketAddr) {
    if let Err(error) = socket.send_to(response, peer).await {
        tracing::debug!(%peer, %error, "dns: udp send failed");
    }
}

/// Serves TCP (2-byte length prefix, several queries per connection, idle timeout 10 s, bounded query size) the
/// same way. When the sender is dropped, open connections are closed too.
pub async fn serve_tcp(listener: TcpListener, mut table: watch::Receiver<Arc<DnsTable>>) {
    let slots = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            changed = table.changed() => {
                if changed.is_err() {
                    // Dropping the set aborts the connection tasks.
                    return;
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                        tracing::debug!(%peer, "dns: too many tcp connections, closing a new one");
                        continue;
                    };
                    let table = table.clone();
                    connections.spawn(async move {
                        if let Err(error) = serve_connection(stream, table).await {
                            tracing::debug!(%peer, %error, "dns: tcp connection failed");
                        }
                        drop(slot);
                    });
                }
                Err(error) => {
                    tracing::debug!(%error, "dns: tcp accept failed");
                    tokio::time::sleep(ERROR_BACKOFF).await;
                }
            },
            Some(finished) = connections.join_next(), if !connections.is_empty() => {
                if let Err(error) = finished {
                    tracing::debug!(%error, "dns: tcp connection task failed");
                }
            }
        }
    }
}

/// Answers queries on one connection until the client closes it, goes idle, or misbehaves.
async fn serve_connection(mut stream: TcpStream, table: watch::Receiver<Arc<DnsTable>>) -> io::Result<()> {
    let mut buf = vec![0u8; MAX_TCP_QUERY_LEN];
    loop {
        let mut prefix = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE_TIMEOUT, stream.read_exact(&mut prefix)).await {
            // Idle, or closed between messages: the normal end of a connection.
            Err(_) => return Ok(()),
            Ok(Err(error)) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(result) => result?,
        };
        let len = usize::from(u16::from_be_bytes(prefix));
        let Some(query) = buf.get_mut(..len) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("query of {len} bytes exceeds {MAX_TCP_QUERY_LEN}"),
            ));
        };
        with_timeout(stream.read_exact(query)).await?;
        let current = Arc::clone(&table.borrow());
        let Some(response) = answer(query, &current, TCP_MAX_LEN) else {
            continue;
        };
        // `answer` never exceeds TCP_MAX_LEN, so the length fits the prefix.
        let Ok(response_len) = u16::try_from(response.len()) else {
            return Err(io::Error::other("response too large for a tcp frame"));
        };
        let mut frame = Vec::with_capacity(2 + response.len());
        frame.extend_from_slice(&response_len.to_be_bytes());
        frame.extend_from_slice(&response);
        with_timeout(stream.write_all(&frame)).await?;
    }
}

/// Bounds a read or write in the middle of a message by the idle timeout.
async fn with_timeout<T>(operation: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(TCP_IDLE_TIMEOUT, operation)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "stalled for the idle timeout"))?
}
