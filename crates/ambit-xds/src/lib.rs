//! The node proxy's clients of the control plane, over the control plane's TLS port (15012): the CA client
//! ([`ca`]) and the delta ADS config stream ([`delta`]). Nothing here depends on the control plane crate, which
//! depends on this one for what both ends share.

pub mod ca;
pub mod delta;
