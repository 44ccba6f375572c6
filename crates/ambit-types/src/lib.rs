//! Shared vocabulary of the mesh: newtypes every component speaks. No IO and no async runtime here.

mod identity;

pub use identity::{Identity, IdentityError, TrustDomain};
