//! The waypoint's L7 config, as the control plane streams it: `ambit.config.v1.ConfigObject` resources named
//! `<Kind>/<namespace>/<name>`, each carrying the object's JSON. [`ConfigHandler`] checks and parses every object of
//! a response (with the same validation as `ambit apply`), applies the response whole or refuses it whole (a NACK
//! naming each bad resource; the last good config stays), and publishes the result as an [`L7Config`].

use std::collections::BTreeMap;
use std::sync::Arc;

use ambit_api::CONFIG_OBJECT_TYPE_URL;
use ambit_api::ambit::config::v1::ConfigObject;
use ambit_api::prost::Message;
use ambit_config::gateway::{Gateway, GrpcRoute, HttpRoute};
use ambit_config::istio::AuthorizationPolicy;
use ambit_config::{Kind, Object};
use ambit_xds::delta::{Handler, Rejection, Update};
use tokio::sync::watch;

/// The L7 config a waypoint holds, by resource name (`<Kind>/<namespace>/<name>`).
#[derive(Clone, Debug, Default)]
pub struct L7Config {
    pub gateways: BTreeMap<String, Gateway>,
    pub http_routes: BTreeMap<String, HttpRoute>,
    pub grpc_routes: BTreeMap<String, GrpcRoute>,
    /// AuthorizationPolicies with `targetRef(s)`: the waypoint's to enforce.
    pub policies: BTreeMap<String, AuthorizationPolicy>,
}

/// Consumes the `ambit.config.v1.ConfigObject` stream and publishes [`L7Config`] snapshots.
pub struct ConfigHandler {
    objects: BTreeMap<String, Object>,
    tx: watch::Sender<Arc<L7Config>>,
}

// === impl ConfigHandler ===

impl ConfigHandler {
    /// A handler holding nothing yet, and the receiver of its snapshots.
    pub fn new() -> (Self, watch::Receiver<Arc<L7Config>>) {
        let (tx, rx) = watch::channel(Arc::new(L7Config::default()));
        let handler = Self {
            objects: BTreeMap::new(),
            tx,
        };
        (handler, rx)
    }
}

impl Handler for ConfigHandler {
    fn type_url(&self) -> &'static str {
        CONFIG_OBJECT_TYPE_URL
    }

    fn apply(&mut self, update: Update) -> Result<(), Vec<Rejection>> {
        let mut next = self.objects.clone();
        for name in &update.removed {
            next.remove(name);
        }
        let mut rejected = Vec::new();
        for resource in update.added {
            let body = resource
                .resource
                .as_ref()
                .map(|any| any.value.as_slice())
                .unwrap_or_default();
            match decode(&resource.name, body) {
                Ok(object) => _ = next.insert(resource.name, object),
                Err(reason) => rejected.push(Rejection {
                    name: resource.name,
                    reason,
                }),
            }
        }
        if !rejected.is_empty() {
            return Err(rejected);
        }
        self.tx.send_replace(Arc::new(typed(&next)));
        self.objects = next;
        Ok(())
    }
}

/// One resource: a `ConfigObject` whose JSON is one valid object of the kind, namespace and name it declares, and
/// whose resource name is `<Kind>/<namespace>/<name>`.
fn decode(name: &str, body: &[u8]) -> Result<Object, String> {
    let wrapper = ConfigObject::decode(body).map_err(|e| format!("not an ambit.config.v1.ConfigObject: {e}"))?;
    let expected = format!("{}/{}/{}", wrapper.kind, wrapper.namespace, wrapper.name);
    if name != expected {
        return Err(format!(
            "the resource name {name:?} does not name its object {expected:?}"
        ));
    }
    let text = std::str::from_utf8(&wrapper.json).map_err(|_| "json: not UTF-8".to_string())?;
    let mut objects = ambit_config::parse(name, text).map_err(|diagnostics| {
        let messages: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
        messages.join("; ")
    })?;
    let object = match (objects.pop(), objects.is_empty()) {
        (Some(object), true) => object,
        _ => return Err("json: exactly one object expected".to_string()),
    };
    let key = object.key();
    let wanted = [
        Kind::Gateway,
        Kind::HttpRoute,
        Kind::GrpcRoute,
        Kind::AuthorizationPolicy,
    ];
    if !wanted.contains(&key.kind) {
        return Err(format!("kind {:?} is not L7 config", wrapper.kind));
    }
    if (key.namespace.as_str(), key.name.as_str()) != (wrapper.namespace.as_str(), wrapper.name.as_str()) {
        return Err(format!(
            "json: the object is {}/{}, not {expected}",
            key.namespace, key.name
        ));
    }
    Ok(object)
}

/// The objects sorted by kind.
fn typed(objects: &BTreeMap<String, Object>) -> L7Config {
    let mut config = L7Config::default();
    for (name, object) in objects {
        let name = name.clone();
        match object {
            Object::Gateway(o) => _ = config.gateways.insert(name, (**o).clone()),
            Object::HttpRoute(o) => _ = config.http_routes.insert(name, (**o).clone()),
            Object::GrpcRoute(o) => _ = config.grpc_routes.insert(name, (**o).clone()),
            Object::AuthorizationPolicy(o) => _ = config.policies.insert(name, (**o).clone()),
            // `decode` admits only the kinds above.
            _ => {}
        }
    }
    config
}

#[cfg(test)]
mod tests;
