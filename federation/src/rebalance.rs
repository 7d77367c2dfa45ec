//! Rebalancing: which topics' placement differs from where the ring (and
//! the pins) would put them now, and moving them one by one with
//! drain-then-switch, with progress anyone can poll.

use std::sync::Arc;

use serde::Serialize;
use sluice_config::ClusterState;

use crate::placement::EpochReason;
use crate::router::{now_ms, Federation};
use crate::{FederationError, Result};

/// A topic to move and how much data its current home holds of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedMove {
    /// The topic.
    pub topic: String,
    /// Its current home.
    pub from: String,
    /// Where it belongs now.
    pub to: String,
    /// Bytes of the topic on its current home (stay there, readable, until retention).
    pub bytes: u64,
}

/// Progress of the last (or running) rebalance.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RebalanceState {
    /// `idle` (never ran), `running`, `done` or `failed` (some moves failed).
    pub state: RebalancePhase,
    /// The moves, in the order they are applied.
    pub moves: Vec<PlannedMove>,
    /// Moves completed.
    pub completed: usize,
    /// The topic being moved now.
    pub current: Option<String>,
    /// Moves that failed, with the reason.
    pub failed: Vec<FailedMove>,
    /// When it started, ms since the epoch.
    pub started_ms: Option<i64>,
    /// When it finished, ms since the epoch.
    pub finished_ms: Option<i64>,
}

/// A move that did not happen.
#[derive(Debug, Clone, Serialize)]
pub struct FailedMove {
    /// The topic.
    pub topic: String,
    /// Why.
    pub error: String,
}

/// Phase of a rebalance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RebalancePhase {
    /// Nothing ran yet.
    #[default]
    Idle,
    /// Moves are being applied.
    Running,
    /// Every move was applied.
    Done,
    /// Finished, but some moves failed.
    Failed,
}

impl Federation {
    /// The topics whose home differs from where the ring and pins put them
    /// now, e.g. after clusters were added, weights changed, or a cluster
    /// began draining.
    pub async fn plan(&self) -> Result<Vec<PlannedMove>> {
        let mut moves = Vec::new();
        for (topic, home) in self.homes() {
            let Some(to) = self.desired_home(&topic) else {
                continue;
            };
            if to == home {
                continue;
            }
            let bytes = match self.member(&home) {
                Some(m) if m.is_up() => m.cluster.topic_size_bytes(&topic).await.unwrap_or(0),
                _ => 0,
            };
            moves.push(PlannedMove {
                topic,
                from: home,
                to,
                bytes,
            });
        }
        Ok(moves)
    }

    /// Starts applying `moves` in the background, one topic at a time.
    /// [`FederationError::RebalanceRunning`] if one is under way.
    pub fn apply(self: &Arc<Self>, moves: Vec<PlannedMove>) -> Result<()> {
        {
            let mut state = self.rebalance.lock().unwrap_or_else(|e| e.into_inner());
            if state.state == RebalancePhase::Running {
                return Err(FederationError::RebalanceRunning);
            }
            *state = RebalanceState {
                state: RebalancePhase::Running,
                moves: moves.clone(),
                started_ms: Some(now_ms()),
                ..RebalanceState::default()
            };
        }
        let federation = self.clone();
        tokio::spawn(async move {
            for m in moves {
                federation.update(|s| s.current = Some(m.topic.clone()));
                let result = federation.migrate_planned(&m).await;
                federation.update(|s| {
                    s.current = None;
                    match result {
                        Ok(()) => s.completed += 1,
                        Err(e) => s.failed.push(FailedMove {
                            topic: m.topic.clone(),
                            error: e.to_string(),
                        }),
                    }
                });
            }
            federation.update(|s| {
                s.state = if s.failed.is_empty() {
                    RebalancePhase::Done
                } else {
                    RebalancePhase::Failed
                };
                s.finished_ms = Some(now_ms());
            });
        });
        Ok(())
    }

    async fn migrate_planned(&self, m: &PlannedMove) -> Result<()> {
        let epoch = self
            .placement(&m.topic)
            .and_then(|p| p.current().filter(|e| e.cluster == m.from).map(|e| e.epoch));
        match epoch {
            // Moved or deleted since the plan was made: nothing to do.
            None => Ok(()),
            Some(epoch) => {
                self.switch_epoch(&m.topic, epoch, Some(&m.to), EpochReason::Migration)
                    .await
            }
        }
    }

    fn update(&self, f: impl FnOnce(&mut RebalanceState)) {
        f(&mut self.rebalance.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Progress of the last rebalance.
    pub fn rebalance_status(&self) -> RebalanceState {
        self.rebalance
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Puts a cluster in the draining state (it takes no new topics) and
    /// starts moving its topics away. Returns the moves.
    pub async fn drain(self: &Arc<Self>, cluster: &str) -> Result<Vec<PlannedMove>> {
        let member = self
            .member(cluster)
            .ok_or_else(|| FederationError::UnknownCluster(cluster.to_owned()))?
            .clone();
        let previous = member.state();
        member.set_state(ClusterState::Draining);
        if let Err(e) = self.rebuild_ring() {
            member.set_state(previous);
            let _ = self.rebuild_ring();
            return Err(e);
        }
        let moves: Vec<_> = self
            .plan()
            .await?
            .into_iter()
            .filter(|m| m.from == cluster)
            .collect();
        if let Err(e) = self.apply(moves.clone()) {
            // Refused (a rebalance is running): the drain did not start, so
            // the cluster must not be left draining without its moves.
            member.set_state(previous);
            let _ = self.rebuild_ring();
            return Err(e);
        }
        Ok(moves)
    }
}
