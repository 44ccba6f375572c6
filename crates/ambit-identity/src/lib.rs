//! Workload identity for the mesh: SPIFFE X.509 certificates and CSRs (`cert`), the certificate authority's signing
//! core (`ca`), rustls configurations for HBONE and the control plane (`tls`), and the node proxy's certificate
//! manager (`manager`).

pub mod ca;
pub mod cert;
pub mod manager;
pub mod tls;
