//! The one table that says what each route needs: the operation and the
//! topic (a path parameter, or none). Routes not listed are denied when
//! auth is on, so a new route is closed until its line is added here.

use std::sync::LazyLock;

use axum::http::Method;
use sluice_config::Operation;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Nothing: served without credentials (health probes, the API document).
    Public,
    /// `operation` on the topic in the path parameter `topic`.
    Topic(Operation),
    /// `operation` on the cluster (no one topic).
    Cluster(Operation),
    /// A principal; the WebSocket checks each frame itself, and may
    /// authenticate with its first frame.
    Session,
    /// A principal and nothing more: no route matched, the answer will be
    /// a 404 or 405 (so unknown paths do not reveal themselves to strangers).
    Authenticated,
    /// A route nobody listed: denied while auth is on.
    Unlisted,
}

type Line = (&'static str, Method, Access);

const CONSUMER: &str = "/consumers/{group}/instances/{instance}";
const CONSUMER_SUBSCRIPTION: &str = "/consumers/{group}/instances/{instance}/subscription";
const CONSUMER_ASSIGNMENTS: &str = "/consumers/{group}/instances/{instance}/assignments";
const CONSUMER_RECORDS: &str = "/consumers/{group}/instances/{instance}/records";
const CONSUMER_OFFSETS: &str = "/consumers/{group}/instances/{instance}/offsets";
const CONSUMER_POSITIONS: &str = "/consumers/{group}/instances/{instance}/positions";
const CONSUMER_POSITIONS_BEGINNING: &str =
    "/consumers/{group}/instances/{instance}/positions/beginning";
const CONSUMER_POSITIONS_END: &str = "/consumers/{group}/instances/{instance}/positions/end";

fn table_lookup(table: &[Line], method: &Method, route: Option<&str>) -> Access {
    let Some(route) = route else {
        return Access::Authenticated;
    };
    let mut known = false;
    for (path, m, access) in table {
        if *path == route {
            known = true;
            if m == method {
                return *access;
            }
        }
    }
    if known {
        Access::Authenticated
    } else {
        Access::Unlisted
    }
}

/// The public listener's routes.
fn public_table() -> Vec<Line> {
    use Access::*;
    use Operation::*;
    vec![
        ("/openapi.json", Method::GET, Public),
        ("/v1/ws", Method::GET, Session),
        ("/topics", Method::GET, Cluster(Describe)),
        ("/topics/{topic}", Method::GET, Topic(Describe)),
        ("/topics/{topic}", Method::POST, Topic(Produce)),
        ("/topics/{topic}/partitions", Method::GET, Topic(Describe)),
        (
            "/topics/{topic}/partitions/{partition}",
            Method::GET,
            Topic(Describe),
        ),
        (
            "/topics/{topic}/partitions/{partition}",
            Method::POST,
            Topic(Produce),
        ),
        (
            "/topics/{topic}/partitions/{partition}/offsets",
            Method::GET,
            Topic(Describe),
        ),
        (
            "/topics/{topic}/partitions/{partition}/records",
            Method::GET,
            Topic(Consume),
        ),
        ("/topics/{topic}/events", Method::GET, Topic(Consume)),
        ("/v3/clusters", Method::GET, Cluster(Describe)),
        ("/v3/clusters/{cluster_id}", Method::GET, Cluster(Describe)),
        (
            "/v3/clusters/{cluster_id}/topics",
            Method::GET,
            Cluster(Describe),
        ),
        (
            "/v3/clusters/{cluster_id}/topics",
            Method::POST,
            Cluster(Admin),
        ),
        (
            "/v3/clusters/{cluster_id}/topics/{topic}",
            Method::GET,
            Topic(Describe),
        ),
        (
            "/v3/clusters/{cluster_id}/topics/{topic}",
            Method::DELETE,
            Topic(Admin),
        ),
        (
            "/v3/clusters/{cluster_id}/topics/{topic}/records",
            Method::POST,
            Topic(Produce),
        ),
        // v2 consumer instances: their topics are named in bodies, not
        // paths, so they need consume on every topic (a rule without
        // topic or prefix).
        ("/consumers/{group}", Method::POST, Cluster(Consume)),
        (CONSUMER, Method::DELETE, Cluster(Consume)),
        (CONSUMER_SUBSCRIPTION, Method::POST, Cluster(Consume)),
        (CONSUMER_SUBSCRIPTION, Method::GET, Cluster(Consume)),
        (CONSUMER_SUBSCRIPTION, Method::DELETE, Cluster(Consume)),
        (CONSUMER_ASSIGNMENTS, Method::GET, Cluster(Consume)),
        (CONSUMER_ASSIGNMENTS, Method::POST, Cluster(Consume)),
        (CONSUMER_RECORDS, Method::GET, Cluster(Consume)),
        (CONSUMER_OFFSETS, Method::POST, Cluster(Consume)),
        (CONSUMER_OFFSETS, Method::GET, Cluster(Consume)),
        (CONSUMER_POSITIONS, Method::POST, Cluster(Consume)),
        (CONSUMER_POSITIONS_BEGINNING, Method::POST, Cluster(Consume)),
        (CONSUMER_POSITIONS_END, Method::POST, Cluster(Consume)),
    ]
}

/// The admin listener's routes: probes are public, everything else is
/// the admin operation.
fn admin_table() -> Vec<Line> {
    use Access::*;
    use Operation::*;
    vec![
        ("/healthz", Method::GET, Public),
        ("/readyz", Method::GET, Public),
        ("/admin/clusters", Method::GET, Cluster(Admin)),
        ("/admin/clusters/{name}/drain", Method::POST, Cluster(Admin)),
        ("/admin/topics/{topic}/placement", Method::GET, Topic(Admin)),
        ("/admin/topics/{topic}/migrate", Method::POST, Topic(Admin)),
        ("/admin/rebalance", Method::GET, Cluster(Admin)),
        ("/admin/rebalance/plan", Method::POST, Cluster(Admin)),
        ("/admin/rebalance/apply", Method::POST, Cluster(Admin)),
        ("/admin/reload", Method::POST, Cluster(Admin)),
        ("/metrics", Method::GET, Cluster(Admin)),
    ]
}

/// What a request to the public listener needs.
pub fn public(method: &Method, route: Option<&str>) -> Access {
    static TABLE: LazyLock<Vec<Line>> = LazyLock::new(public_table);
    table_lookup(&TABLE, method, route)
}

/// What a request to the admin listener needs.
pub fn admin(method: &Method, route: Option<&str>) -> Access {
    // Consumer requests forwarded by a peer gateway to their group's owner
    // were authenticated and authorised at the peer's public listener, and
    // arrive without the client's credentials: like the peers' admin
    // listeners themselves, they must stay on a private network.
    if route.is_some_and(|r| r.starts_with("/internal/")) {
        return Access::Public;
    }
    static TABLE: LazyLock<Vec<Line>> = LazyLock::new(admin_table);
    table_lookup(&TABLE, method, route)
}

/// Whether a route answers with a v2 produce response, which reports
/// `throttle_time_ms` in its body as Kafka's produce response does.
pub fn is_v2_produce(method: &Method, route: Option<&str>) -> bool {
    method == Method::POST
        && matches!(
            route,
            Some("/topics/{topic}" | "/topics/{topic}/partitions/{partition}")
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_map_to_what_they_need() {
        assert_eq!(
            public(&Method::POST, Some("/topics/{topic}")),
            Access::Topic(Operation::Produce)
        );
        assert_eq!(
            public(&Method::GET, Some("/topics/{topic}/events")),
            Access::Topic(Operation::Consume)
        );
        assert_eq!(
            public(&Method::PUT, Some("/topics/{topic}")),
            Access::Authenticated
        );
        assert_eq!(public(&Method::GET, None), Access::Authenticated);
        assert_eq!(
            public(&Method::GET, Some("/nothing/{here}")),
            Access::Unlisted
        );
        assert_eq!(
            public(&Method::POST, Some("/consumers/{group}")),
            Access::Cluster(Operation::Consume)
        );
        assert_eq!(
            admin(&Method::POST, Some("/internal/v2/consumers/{group}")),
            Access::Public
        );
        assert_eq!(admin(&Method::GET, Some("/healthz")), Access::Public);
        assert_eq!(
            admin(&Method::POST, Some("/admin/reload")),
            Access::Cluster(Operation::Admin)
        );
    }
}
