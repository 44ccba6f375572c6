//! Who is calling the CA, and which identities it may ask for.
//!
//! Authentication: a node proxy proves which node it runs on with a bearer token (`authorization: Bearer <token>`).
//! [`NodeCredentials`] checks it against the per-node tokens the local cluster writes; Kubernetes service-account
//! tokens can be added later as another [`Authenticator`].
//!
//! Authorization follows istiod's node authorizer: a caller may obtain a certificate for an identity only if at least
//! one pod scheduled on the caller's node runs as that identity ([`NodeIndex`]).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::future::Future;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ambit_types::{Identity, IdentityError, TrustDomain};
use tonic::metadata::MetadataMap;

/// The shortest token accepted in a credentials file (bytes): shorter ones are guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// An authenticated caller: the node it proved it runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub node: String,
}

/// Why a request could not be authenticated. Each becomes `UNAUTHENTICATED` with this message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("no credentials: send `authorization: Bearer <token>`")]
    Missing,
    #[error("the authorization header is not `Bearer <token>`")]
    Malformed,
    #[error("the bearer token is not known")]
    UnknownToken,
}

/// Authenticates the caller of a CA request from the request's metadata.
pub trait Authenticator: Send + Sync + 'static {
    fn authenticate(&self, metadata: &MetadataMap) -> impl Future<Output = Result<Caller, AuthError>> + Send;
}

/// The bearer token of a request, if it sent one.
pub fn bearer_token(metadata: &MetadataMap) -> Result<&str, AuthError> {
    let value = metadata.get("authorization").ok_or(AuthError::Missing)?;
    let value = value.to_str().map_err(|_| AuthError::Malformed)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::Malformed);
    }
    Ok(token)
}

// === NodeCredentials ===

/// Errors loading or writing a node-credentials file.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read node credentials {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write node credentials {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("node credentials {path} are not a JSON object of node name to token: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("node credentials {path} are readable by group or others (mode {mode:04o}); chmod 600 it")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("the token of node {node:?} is shorter than {MIN_TOKEN_LEN} bytes")]
    WeakToken { node: String },
    #[error("nodes {first:?} and {second:?} share a token")]
    SharedToken { first: String, second: String },
    #[error("cannot generate a token: {0}")]
    Random(String),
}

/// Node name ↔ bearer token, compared in constant time.
#[derive(Clone, Debug)]
pub struct NodeCredentials {
    tokens: Vec<(String, Vec<u8>)>,
}

impl NodeCredentials {
    /// Checks and indexes `node → token` pairs.
    pub fn new(tokens: HashMap<String, String>) -> Result<Self, CredentialsError> {
        let mut entries: Vec<(String, Vec<u8>)> = Vec::with_capacity(tokens.len());
        for (node, token) in tokens {
            if token.len() < MIN_TOKEN_LEN {
                return Err(CredentialsError::WeakToken { node });
            }
            if let Some((first, _)) = entries.iter().find(|(_, t)| t.as_slice() == token.as_bytes()) {
                let first = first.clone();
                return Err(CredentialsError::SharedToken { first, second: node });
            }
            entries.push((node, token.into_bytes()));
        }
        Ok(Self { tokens: entries })
    }

    /// Loads `{"node-1": "<token>", ...}`. The file must not be readable by group or others.
    pub fn load(path: &Path) -> Result<Self, CredentialsError> {
        let read = |source| CredentialsError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mode = fs::metadata(path).map_err(read)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(CredentialsError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        let bytes = fs::read(path).map_err(read)?;
        let tokens = serde_json::from_slice(&bytes).map_err(|source| CredentialsError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        Self::new(tokens)
    }

    /// Makes a fresh random token (32 bytes, hex) for each node and writes them to `path` with mode 0600.
    pub fn create(path: &Path, nodes: &[String]) -> Result<Self, CredentialsError> {
        let tokens = nodes
            .iter()
            .map(|node| Ok((node.clone(), generate_token()?)))
            .collect::<Result<HashMap<_, _>, CredentialsError>>()?;
        // A HashMap of strings always serializes.
        let json = serde_json::to_vec_pretty(&tokens).unwrap_or_default();
        let write = |source| CredentialsError::Write {
            path: path.to_path_buf(),
            source,
        };
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(write)?;
        file.set_permissions(fs::Permissions::from_mode(0o600)).map_err(write)?;
        file.write_all(&json).map_err(write)?;
        Self::new(tokens)
    }

    /// The node whose token this is. Every stored token is compared, each in constant time.
    pub fn node_of(&self, token: &str) -> Option<&str> {
        let mut found = None;
        for (node, expected) in &self.tokens {
            if constant_time_eq(expected, token.as_bytes()) {
                found = Some(node.as_str());
            }
        }
        found
    }

    /// The token of a node (for a node proxy started by the local cluster).
    pub fn token_of(&self, node: &str) -> Option<String> {
        let (_, token) = self.tokens.iter().find(|(n, _)| n == node)?;
        String::from_utf8(token.clone()).ok()
    }
}

impl Authenticator for NodeCredentials {
    async fn authenticate(&self, metadata: &MetadataMap) -> Result<Caller, AuthError> {
        let token = bearer_token(metadata)?;
        let node = self.node_of(token).ok_or(AuthError::UnknownToken)?;
        Ok(Caller { node: node.to_string() })
    }
}

/// A random 256-bit token in lowercase hex.
pub fn generate_token() -> Result<String, CredentialsError> {
    let mut bytes = [0u8; 32];
    let provider = ambit_identity::tls::provider();
    provider
        .secure_random
        .fill(&mut bytes)
        .map_err(|e| CredentialsError::Random(format!("{e:?}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Equality whose running time depends only on the lengths, not on where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

// === NodeIndex ===

/// Which identities run on which node: the basis of node authorization.
pub trait NodeIndex: Send + Sync + 'static {
    /// Whether at least one pod scheduled on `node` runs as `identity`.
    fn allows(&self, node: &str, identity: &Identity) -> bool;
}

/// Where a pod runs and as whom (a pod of a cluster plan, reduced to what authorization needs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodPlacement {
    pub node: String,
    pub namespace: String,
    pub service_account: String,
}

/// A fixed index, built once from the pods of a cluster.
#[derive(Clone, Debug, Default)]
pub struct StaticNodeIndex {
    by_node: HashMap<String, HashSet<Identity>>,
}

impl StaticNodeIndex {
    /// Identity of each pod = `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`.
    pub fn new(trust_domain: &TrustDomain, pods: &[PodPlacement]) -> Result<Self, IdentityError> {
        let mut by_node: HashMap<String, HashSet<Identity>> = HashMap::new();
        for pod in pods {
            let identity = Identity::new(trust_domain.clone(), &pod.namespace, &pod.service_account)?;
            by_node.entry(pod.node.clone()).or_default().insert(identity);
        }
        Ok(Self { by_node })
    }

    pub fn identities_on_node(&self, node: &str) -> HashSet<Identity> {
        self.by_node.get(node).cloned().unwrap_or_default()
    }
}

impl NodeIndex for StaticNodeIndex {
    fn allows(&self, node: &str, identity: &Identity) -> bool {
        self.by_node.get(node).is_some_and(|ids| ids.contains(identity))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(value: &str) -> MetadataMap {
        let mut map = MetadataMap::new();
        map.insert("authorization", value.parse().unwrap());
        map
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn bearer_tokens_are_parsed_strictly() {
        assert_eq!(bearer_token(&md("Bearer abc")), Ok("abc"));
        assert_eq!(bearer_token(&md("bearer abc")), Ok("abc"));
        assert_eq!(bearer_token(&md("Basic abc")), Err(AuthError::Malformed));
        assert_eq!(bearer_token(&md("Bearer ")), Err(AuthError::Malformed));
        assert_eq!(bearer_token(&md("abc")), Err(AuthError::Malformed));
        assert_eq!(bearer_token(&MetadataMap::new()), Err(AuthError::Missing));
    }

    #[test]
    fn credentials_map_tokens_to_nodes() {
        let tokens = [("node-1", "a".repeat(32)), ("node-2", "b".repeat(32))];
        let creds = NodeCredentials::new(tokens.iter().map(|(n, t)| (n.to_string(), t.clone())).collect()).unwrap();
        assert_eq!(creds.node_of(&"a".repeat(32)), Some("node-1"));
        assert_eq!(creds.node_of(&"b".repeat(32)), Some("node-2"));
        assert_eq!(creds.node_of(&"a".repeat(31)), None);
        assert_eq!(creds.node_of(""), None);
    }

    #[test]
    fn credentials_reject_weak_and_shared_tokens() {
        let weak = NodeCredentials::new([("n".to_string(), "short".to_string())].into());
        assert!(matches!(weak, Err(CredentialsError::WeakToken { node }) if node == "n"));
        let shared =
            NodeCredentials::new([("a".to_string(), "x".repeat(20)), ("b".to_string(), "x".repeat(20))].into());
        assert!(matches!(shared, Err(CredentialsError::SharedToken { .. })));
    }

    #[test]
    fn credentials_file_round_trip_and_permissions() {
        let dir = std::env::temp_dir().join(format!("ambit-creds-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node-credentials.json");
        let created = NodeCredentials::create(&path, &["node-1".to_string()]).unwrap();
        let token = created.token_of("node-1").unwrap();
        assert_eq!(token.len(), 64);
        let loaded = NodeCredentials::load(&path).unwrap();
        assert_eq!(loaded.node_of(&token), Some("node-1"));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = NodeCredentials::load(&path).unwrap_err();
        assert!(err.to_string().contains("mode 0644"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn index_allows_only_identities_on_the_node() {
        let td = TrustDomain::new("cluster.local").unwrap();
        let pod = |node: &str, ns: &str, sa: &str| PodPlacement {
            node: node.into(),
            namespace: ns.into(),
            service_account: sa.into(),
        };
        let index = StaticNodeIndex::new(&td, &[pod("n1", "demo", "client"), pod("n2", "demo", "server")]).unwrap();
        let client: Identity = "spiffe://cluster.local/ns/demo/sa/client".parse().unwrap();
        let server: Identity = "spiffe://cluster.local/ns/demo/sa/server".parse().unwrap();
        assert!(index.allows("n1", &client));
        assert!(!index.allows("n1", &server));
        assert!(!index.allows("n3", &client));
        assert_eq!(index.identities_on_node("n2"), [server].into());
    }
}
