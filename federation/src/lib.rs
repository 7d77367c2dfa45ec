//! Routing of logical topics across Sluice's broker clusters.
//!
//! - [`router`]: [`Federation`], the single entry point the gateway calls
//!   for every produce, read and topic operation: placement on first
//!   produce (pin, else ring owner), writes to the current epoch's home,
//!   cursor reads across epochs, failover by policy.
//! - [`rebalance`] holds plans (topics whose home differs from the ring's choice)
//!   and their application by drain-then-switch migration; cluster drains.
//! - [`members`]: the clusters with their lifecycle state and health, and
//!   the health probe.
//! - [`ring`]: the consistent-hash ring over active clusters.
//! - [`placement`]: the placement table of epochs, pure.
//! - [`cursor`]: opaque, versioned reader cursors.
//! - [`store`]: where placement is kept (a local file for one node);
//!   [`kafka_store`]: a compacted Kafka topic shared by several gateways.
//! - [`error`] holds [`FederationError`].

pub mod cursor;
pub mod error;
pub mod kafka_store;
pub mod members;
pub mod placement;
pub mod rebalance;
pub mod ring;
pub mod router;
pub mod store;

pub use error::FederationError;
pub use rebalance::{PlannedMove, RebalancePhase, RebalanceState};
pub use router::{Federation, Produced, ReadBatch, ReadStart, TopicInfo};

/// Shorthand for federation results.
pub type Result<T> = std::result::Result<T, FederationError>;
