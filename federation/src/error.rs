//! Errors of the federation, each telling whose fault it is.

use sluice_broker::BrokerError;

use crate::cursor::CursorError;
use crate::placement::PlacementError;
use crate::store::StoreError;

/// An error from routing, placement or the home cluster.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    /// The home cluster answered with an error.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The configuration names no cluster at all.
    #[error("no cluster is configured")]
    NoCluster,
    /// The topic's home is down and its policy is `reject`: retry later.
    #[error("topic {topic:?}: its home cluster {cluster:?} is unavailable ({reason})")]
    HomeDown {
        /// The topic.
        topic: String,
        /// Its home.
        cluster: String,
        /// Why the cluster is down.
        reason: String,
    },
    /// With `federation.placement.lease_ms`: this gateway has not confirmed
    /// its view of placement recently enough to write.
    #[error("placement not confirmed for {age_ms} ms (lease {lease_ms} ms); the placement store may be unreachable")]
    PlacementStale {
        /// Time since the view was last confirmed.
        age_ms: u64,
        /// The lease.
        lease_ms: u64,
    },
    /// No healthy, active cluster can take the topic.
    #[error("topic {topic:?}: no healthy cluster can take it")]
    NoHealthyCluster {
        /// The topic.
        topic: String,
    },
    /// A cursor that is malformed or belongs to another topic.
    #[error("invalid cursor: {0}")]
    Cursor(#[from] CursorError),
    /// A cursor that holds no position for the partition asked for.
    #[error("the cursor holds no position for partition {partition}")]
    CursorPartition {
        /// The partition asked for.
        partition: u32,
    },
    /// The placement table refused a change.
    #[error(transparent)]
    Placement(#[from] PlacementError),
    /// The placement store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A cluster name that is not configured.
    #[error("cluster {0:?} not found")]
    UnknownCluster(String),
    /// A rebalance is already being applied.
    #[error("a rebalance is already running; poll its progress and try again when it is done")]
    RebalanceRunning,
    /// The request conflicts with what the clusters hold.
    #[error("{0}")]
    Conflict(String),
    /// The configuration does not allow this.
    #[error("configuration: {0}")]
    Config(String),
    /// A bug or an unexpected state.
    #[error("internal: {0}")]
    Internal(String),
}

impl FederationError {
    /// Whether the same request may succeed later.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Broker(e) => e.is_retriable(),
            Self::HomeDown { .. }
            | Self::NoHealthyCluster { .. }
            | Self::PlacementStale { .. }
            | Self::RebalanceRunning => true,
            Self::Placement(e) => e.is_retryable(),
            Self::Store(e) => e.is_retryable(),
            _ => false,
        }
    }
}
