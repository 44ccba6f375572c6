//! Deterministic names and ids: FNV-1a 64 hashes written in the alphabet Kubernetes uses for generated names.

/// Lowercase consonants and digits without look-alikes (no vowels, so no words), as Kubernetes uses.
const ALPHABET: &[u8; 27] = b"bcdfghjklmnpqrstvwxz2456789";
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a, 64 bits.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(FNV_PRIME)
    })
}

/// `len` characters of [`ALPHABET`]: the base-27 digits of `value`, least significant first.
pub(crate) fn alnum(mut value: u64, len: usize) -> String {
    let base = ALPHABET.len() as u64;
    (0..len)
        .map(|_| {
            // `value % base` is below ALPHABET.len(), so the index is in bounds.
            let digit = ALPHABET[(value % base) as usize];
            value /= base;
            char::from(digit)
        })
        .collect()
}

/// A UUID-shaped id from two FNV-1a hashes of cluster, namespace and pod name.
pub(crate) fn uid(cluster: &str, namespace: &str, name: &str) -> String {
    let key = format!("{cluster}\0{namespace}\0{name}");
    let high = fnv1a(format!("uid-high\0{key}").as_bytes());
    let low = fnv1a(format!("uid-low\0{key}").as_bytes());
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        high >> 32,
        (high >> 16) & 0xffff,
        high & 0xffff,
        low >> 48,
        low & 0xffff_ffff_ffff
    )
}
