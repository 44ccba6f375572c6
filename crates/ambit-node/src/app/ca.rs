//! The node proxy's certificate source: the control plane's CA, connected on first use and again after a failure,
//! so a proxy that starts before the control plane (or outlives it) simply retries through the certificate
//! manager's backoff.

use ambit_identity::cert::TrustBundle;
use ambit_identity::manager::{CertificateSource, FetchError, FetchFuture};
use ambit_types::{Identity, TrustDomain};
use ambit_xds::ca::{CaClient, control_identity};
use tokio::sync::Mutex;

/// A [`CertificateSource`] over [`CaClient`] that connects lazily.
pub struct LazyCaClient {
    address: String,
    bundle: TrustBundle,
    token: String,
    server: Identity,
    client: Mutex<Option<CaClient>>,
}

impl LazyCaClient {
    /// The CA at `address`, verified against `bundle` as the control plane's identity in `trust_domain`.
    pub fn new(address: String, bundle: TrustBundle, token: String, trust_domain: &TrustDomain) -> Self {
        Self {
            address,
            bundle,
            token,
            server: control_identity(trust_domain),
            client: Mutex::new(None),
        }
    }

    async fn client(&self) -> Result<CaClient, FetchError> {
        let mut client = self.client.lock().await;
        if let Some(client) = client.as_ref() {
            return Ok(client.clone());
        }
        let connected = CaClient::connect(&self.address, self.bundle.clone(), &self.token, self.server.clone())
            .await
            .map_err(|e| FetchError(format!("cannot reach the CA at {}: {e}", self.address)))?;
        *client = Some(connected.clone());
        Ok(connected)
    }
}

impl CertificateSource for LazyCaClient {
    fn fetch(&self, identity: Identity) -> FetchFuture<'_> {
        Box::pin(async move {
            let client = self.client().await?;
            client.fetch(identity).await
        })
    }
}
