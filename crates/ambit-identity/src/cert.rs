//! Certificates, keys, CSRs and trust bundles.
