//! Which routes attach to a Service port (through a Service parentRef, as producer routes), and their order on
//! precedence ties: the oldest first, then by `namespace/name`.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use ambit_config::DEFAULT_NAMESPACE;
use ambit_config::gateway::{GrpcRoute, HttpRoute, ParentReference};

use super::{Problem, RouteKind, RouteRef, ServiceRef};

/// What attachment reads of a route object, for both kinds.
pub(super) trait Route {
    const KIND: RouteKind;

    fn parents(&self) -> &[ParentReference];

    fn annotations(&self) -> Option<&BTreeMap<String, String>>;

    /// The route's namespace (`default` when unset) and name.
    fn id(&self) -> RouteRef;

    /// Older first, by `metadata.creationTimestamp`; routes without one (the ambit store keeps none) tie.
    fn age_order(&self, other: &Self) -> Ordering;
}

/// The routes of `routes` attached to `service`, with their identities, oldest first (then by namespace/name).
/// Parent references that name the Service but cannot attach are problems.
pub(super) fn attached<'r, R: Route>(
    routes: &[&'r R],
    service: &ServiceRef,
    problems: &mut Vec<Problem>,
) -> Vec<(&'r R, RouteRef)> {
    let mut attached: Vec<(&R, RouteRef)> = (routes.iter())
        .map(|route| (*route, route.id()))
        .filter(|(route, id)| attaches(*route, id, service, problems))
        .collect();
    attached.sort_by(|(a, a_id), (b, b_id)| {
        (a.age_order(b)).then_with(|| (&a_id.namespace, &a_id.name).cmp(&(&b_id.namespace, &b_id.name)))
    });
    attached
}

/// Whether one of the route's parentRefs attaches it to `service`.
fn attaches<R: Route>(route: &R, id: &RouteRef, service: &ServiceRef, problems: &mut Vec<Problem>) -> bool {
    let mut attached = false;
    for (i, parent) in route.parents().iter().enumerate() {
        if !names_service(parent, &id.namespace, service) {
            continue;
        }
        let problem = |field: &str, message: String| Problem {
            route: id.clone(),
            field: format!("spec.parentRefs[{i}].{field}"),
            message,
        };
        if id.namespace != service.namespace {
            let message = format!(
                "names Service {}/{} in another namespace: such a consumer route applies to its own namespace's \
                 clients, which a waypoint cannot single out, so it is not applied",
                service.namespace, service.name
            );
            problems.push(problem("namespace", message));
        } else if parent.section_name.is_some() {
            let message = "is not supported on a Service parent (select the Service port with `port`): the route \
                           does not attach through this parentRef";
            problems.push(problem("sectionName", message.to_string()));
        } else {
            attached = true;
        }
    }
    attached
}

/// Group `""` (or `core`), kind Service, the Service's namespace and name, and no port or its port.
fn names_service(parent: &ParentReference, route_namespace: &str, service: &ServiceRef) -> bool {
    matches!(parent.group.as_deref(), Some("" | "core"))
        && parent.kind.as_deref() == Some("Service")
        && parent.namespace.as_deref().unwrap_or(route_namespace) == service.namespace
        && parent.name == service.name
        && parent.port.is_none_or(|port| port == i32::from(service.port))
}

/// A route's identity from its metadata: namespace (`default` when unset) and name.
fn route_ref(kind: RouteKind, namespace: Option<&str>, name: Option<&str>) -> RouteRef {
    let namespace = namespace
        .filter(|namespace| !namespace.is_empty())
        .unwrap_or(DEFAULT_NAMESPACE);
    RouteRef {
        kind,
        namespace: namespace.to_string(),
        name: name.unwrap_or_default().to_string(),
    }
}

// === impl HttpRoute ===

impl Route for HttpRoute {
    const KIND: RouteKind = RouteKind::Http;

    fn parents(&self) -> &[ParentReference] {
        &self.spec.parent_refs
    }

    fn annotations(&self) -> Option<&BTreeMap<String, String>> {
        self.metadata.annotations.as_ref()
    }

    fn id(&self) -> RouteRef {
        route_ref(
            Self::KIND,
            self.metadata.namespace.as_deref(),
            self.metadata.name.as_deref(),
        )
    }

    fn age_order(&self, other: &Self) -> Ordering {
        (self.metadata.creation_timestamp).cmp(&other.metadata.creation_timestamp)
    }
}

// === impl GrpcRoute ===

impl Route for GrpcRoute {
    const KIND: RouteKind = RouteKind::Grpc;

    fn parents(&self) -> &[ParentReference] {
        &self.spec.parent_refs
    }

    fn annotations(&self) -> Option<&BTreeMap<String, String>> {
        self.metadata.annotations.as_ref()
    }

    fn id(&self) -> RouteRef {
        route_ref(
            Self::KIND,
            self.metadata.namespace.as_deref(),
            self.metadata.name.as_deref(),
        )
    }

    fn age_order(&self, other: &Self) -> Ordering {
        (self.metadata.creation_timestamp).cmp(&other.metadata.creation_timestamp)
    }
}
