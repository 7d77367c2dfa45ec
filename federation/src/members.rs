//! The clusters behind the federation, with their runtime state (lifecycle
//! and last observed health), and the probe that keeps health current.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sluice_broker::{Cluster, Health};
use sluice_config::{ClusterConfig, ClusterState};

/// One cluster and what the federation knows of it.
pub struct Member {
    /// The backend.
    pub cluster: Arc<dyn Cluster>,
    /// Its configured name.
    pub name: String,
    /// Its weight on the ring.
    pub weight: u32,
    state: RwLock<ClusterState>,
    up: AtomicBool,
    down_reason: RwLock<Option<String>>,
}

impl Member {
    /// A member in its configured state, presumed up until probed.
    pub fn new(config: &ClusterConfig, cluster: Arc<dyn Cluster>) -> Self {
        Self {
            cluster,
            name: config.name.clone(),
            weight: config.weight,
            state: RwLock::new(config.state),
            up: AtomicBool::new(true),
            down_reason: RwLock::new(None),
        }
    }

    /// Lifecycle state: active, draining or read-only.
    pub fn state(&self) -> ClusterState {
        *self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the lifecycle state (e.g. a drain started from the admin API).
    pub fn set_state(&self, state: ClusterState) {
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = state;
    }

    /// Whether the last probe (or the last request) found it serving.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Why it is down, if it is.
    pub fn down_reason(&self) -> Option<String> {
        self.down_reason
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records an observation; logs transitions.
    pub fn observe(&self, health: &Health) {
        let (up, reason) = match health {
            Health::Up => (true, None),
            Health::Down(reason) => (false, Some(reason.clone())),
        };
        let was = self.up.swap(up, Ordering::AcqRel);
        *self.down_reason.write().unwrap_or_else(|e| e.into_inner()) = reason.clone();
        if was && !up {
            tracing::warn!(cluster = %self.name, reason = reason.as_deref().unwrap_or(""), "cluster down");
        } else if !was && up {
            tracing::info!(cluster = %self.name, "cluster up again");
        }
    }

    /// Health as last observed.
    pub fn health(&self) -> Health {
        if self.is_up() {
            Health::Up
        } else {
            Health::Down(self.down_reason().unwrap_or_else(|| "down".to_owned()))
        }
    }
}

/// The members by name, in configuration order.
pub struct Members {
    list: Vec<Arc<Member>>,
    by_name: HashMap<String, usize>,
}

impl Members {
    /// Indexes the members.
    pub fn new(list: Vec<Arc<Member>>) -> Self {
        let by_name = list
            .iter()
            .enumerate()
            .map(|(i, m)| (m.name.clone(), i))
            .collect();
        Self { list, by_name }
    }

    /// The member with this name.
    pub fn get(&self, name: &str) -> Option<&Arc<Member>> {
        self.by_name.get(name).map(|&i| &self.list[i])
    }

    /// All members in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Member>> {
        self.list.iter()
    }

    /// `(name, weight)` of the members that take new topics.
    pub fn active_weights(&self) -> Vec<(String, u32)> {
        self.list
            .iter()
            .filter(|m| m.state() == ClusterState::Active)
            .map(|m| (m.name.clone(), m.weight))
            .collect()
    }
}

/// Probes every member until the returned handle is dropped. A probe that
/// takes longer than `timeout` counts as down, so a hung cluster is noticed.
pub fn spawn_health_probe(
    members: Arc<Members>,
    interval: Duration,
    timeout: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            // Probed side by side, so one hung cluster does not delay the
            // verdict on the others.
            let mut probes = tokio::task::JoinSet::new();
            for member in members.iter() {
                let member = member.clone();
                probes.spawn(async move {
                    let health = match tokio::time::timeout(timeout, member.cluster.health()).await
                    {
                        Ok(health) => health,
                        Err(_) => Health::Down(format!(
                            "health probe timed out after {} ms",
                            timeout.as_millis()
                        )),
                    };
                    member.observe(&health);
                });
            }
            while probes.join_next().await.is_some() {}
        }
    })
}
