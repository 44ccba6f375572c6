//! The certificate authority service: Istio's `IstioCertificateService` API served by the control plane, with node
//! authentication and authorization and a ledger of issued certificates. The client node proxies use is
//! `ambit_xds::ca`.

pub mod auth;
pub mod check;
pub mod ledger;
pub mod service;

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use ambit_identity::ca::{CaConfig, CaError, CertificateAuthority};
/// The control plane's identity, defined beside the client that verifies it (node proxies do not depend on this
/// crate).
pub use ambit_xds::ca::control_identity;

#[derive(Debug, thiserror::Error)]
pub enum OpenCaError {
    #[error("cannot create the CA directory {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Ca(Box<CaError>),
}

impl From<CaError> for OpenCaError {
    fn from(err: CaError) -> Self {
        OpenCaError::Ca(Box::new(err))
    }
}

/// The CA: the plug-in CA of `cacerts` when given, else the self-signed root kept in `ca_dir` (made on first use,
/// the directory with mode 0700).
pub fn open_ca(ca_dir: &Path, cacerts: Option<&Path>, config: CaConfig) -> Result<CertificateAuthority, OpenCaError> {
    if let Some(dir) = cacerts {
        return Ok(CertificateAuthority::from_plugin(dir, config)?);
    }
    let dir_error = |source| OpenCaError::Dir {
        path: ca_dir.to_path_buf(),
        source,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(ca_dir)
        .map_err(dir_error)?;
    Ok(CertificateAuthority::load_or_create(ca_dir, config, SystemTime::now())?)
}
