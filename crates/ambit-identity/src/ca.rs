//! The certificate authority: root or plug-in intermediate, CSR validation and signing.
