//! Auth for WebSocket sessions: the principal from the upgrade (or from a
//! first `auth` frame), ACLs on every produce and subscribe, quotas per
//! frame. Throttling pauses the session's reads and tells the client with
//! a `throttle` frame; rejecting answers an `error` frame with 42901.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use sluice_config::Operation;

use super::acl::Resource;
use super::quota::{Admit, Count, CountPermit, Rate};
use super::{forbidden, over_quota, unauthenticated, AuthContext, Credential, Principal};
use crate::error::ApiError;

/// Close code after a failed `auth` frame.
pub const CLOSE_UNAUTHENTICATED: u16 = 4401;

/// What the session does with a frame after auth looked at it.
#[derive(Debug)]
pub enum Verdict {
    /// Handle it; hold the session's reads for `pause` first (a `throttle`
    /// frame says so), and keep `permit` as long as the subscription lives.
    Pass {
        /// How long to pause reading.
        pause: Duration,
        /// The subscription's quota unit.
        permit: Option<CountPermit>,
    },
    /// A good `auth` frame: the session is now this principal.
    Authenticated(String),
    /// Refuse it with an error frame.
    Refuse(ApiError),
    /// Refuse it and close the connection.
    Close(ApiError),
}

/// What a frame asks, as far as auth cares.
#[derive(Debug, Clone, Copy)]
pub enum FrameAccess<'a> {
    /// `{"type":"auth","token":..}`.
    Auth(&'a str),
    /// A produce to this topic of this many bytes.
    Produce(&'a str, u64),
    /// A subscription to this topic.
    Subscribe(&'a str),
    /// Anything else (credit, unsubscribe, ping).
    Other,
}

/// One session's view of auth.
pub struct SessionGuard {
    context: Option<AuthContext>,
    principal: Option<Arc<Principal>>,
}

impl SessionGuard {
    /// From what the auth layer handed the upgrade (nothing when the
    /// router runs without the layer).
    pub fn new(context: Option<AuthContext>) -> Self {
        let principal = context.as_ref().and_then(|c| c.principal.clone());
        Self { context, principal }
    }

    /// Whether the session must still send its `auth` frame: auth is on
    /// and no principal came with the upgrade or a frame yet.
    pub fn awaiting_auth(&self) -> bool {
        self.principal.is_none()
            && self
                .context
                .as_ref()
                .is_some_and(|c| c.auth.snapshot().enabled())
    }

    /// The error a session gets when its `auth` frame did not come in time.
    pub fn auth_frame_late(waited: std::time::Duration) -> ApiError {
        unauthenticated(&format!(
            "no auth frame within {} ms of the upgrade: send {{\"type\":\"auth\",\"token\":...}} first",
            waited.as_millis()
        ))
    }

    /// The session's principal, once known.
    pub fn principal(&self) -> Option<&Principal> {
        self.principal.as_deref()
    }

    /// The principal's quota buckets, for charging what a subscription
    /// pushes against its consume rate; `None` without auth or quotas.
    pub fn buckets(&self) -> Option<Arc<crate::auth::quota::Buckets>> {
        let context = self.context.as_ref()?;
        let principal = self.principal.as_ref()?;
        let snapshot = context.auth.snapshot();
        if !snapshot.enabled() {
            return None;
        }
        context.auth.buckets(&snapshot, &principal.name)
    }

    /// Looks at a frame before the session handles it.
    pub fn check(&mut self, frame: FrameAccess<'_>) -> Verdict {
        let Some(context) = &self.context else {
            return pass();
        };
        let auth = Arc::clone(&context.auth);
        let snapshot = auth.snapshot();
        if let FrameAccess::Auth(token) = frame {
            if !snapshot.enabled() {
                return Verdict::Refuse(ApiError::bad_request(
                    "authentication is not configured on this gateway",
                ));
            }
            if self.principal.is_some() {
                return Verdict::Refuse(ApiError::bad_request(
                    "this session is already authenticated",
                ));
            }
            let peer = context.connection.as_ref().map(|c| c.peer);
            if let Some(wait) = peer.and_then(|p| auth.cooling_down(p)) {
                return Verdict::Close(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    super::TOO_MANY_FAILURES,
                    format!(
                        "too many failed authentications from this address; retry in {} s",
                        super::retry_after_secs(wait)
                    ),
                ));
            }
            return match auth.authenticate(&snapshot, Credential::Secret(token), None, peer) {
                Ok(principal) => {
                    if let Some(connection) = &context.connection {
                        if let Err(error) = connection.count(&auth, &snapshot, &principal.name) {
                            return Verdict::Close(error);
                        }
                    }
                    let name = principal.name.clone();
                    self.principal = Some(principal);
                    Verdict::Authenticated(name)
                }
                Err(error) => Verdict::Close(error),
            };
        }
        if !snapshot.enabled() {
            return pass();
        }
        let Some(principal) = &self.principal else {
            return Verdict::Close(unauthenticated(
                "authenticate first: send {\"type\":\"auth\",\"token\":...}",
            ));
        };
        let buckets = auth.buckets(&snapshot, &principal.name);
        let mut admit = buckets
            .as_ref()
            .map_or(Admit::Go, |b| b.admit(Rate::Requests, 1));
        let mut permit = None;
        match frame {
            FrameAccess::Produce(topic, bytes) => {
                let resource = Resource::Topic(topic);
                if !snapshot.allows(principal, Operation::Produce, resource) {
                    return Verdict::Refuse(forbidden(principal, Operation::Produce, resource));
                }
                if let (Some(b), false) = (&buckets, matches!(admit, Admit::Reject(_))) {
                    admit = admit.and(b.admit(Rate::Produce, bytes));
                }
            }
            FrameAccess::Subscribe(topic) => {
                let resource = Resource::Topic(topic);
                if !snapshot.allows(principal, Operation::Consume, resource) {
                    return Verdict::Refuse(forbidden(principal, Operation::Consume, resource));
                }
                match auth.acquire(&snapshot, &principal.name, Count::Subscriptions) {
                    Ok(p) => permit = p,
                    Err(error) => return Verdict::Refuse(error),
                }
            }
            FrameAccess::Auth(_) | FrameAccess::Other => {}
        }
        match admit {
            Admit::Go => Verdict::Pass {
                pause: Duration::ZERO,
                permit,
            },
            Admit::Delay(pause) => Verdict::Pass { pause, permit },
            Admit::Reject(wait) => {
                let mut error = over_quota();
                error.message = format!("quota exceeded; retry in {} ms", wait.as_millis().max(1));
                Verdict::Refuse(error)
            }
        }
    }
}

fn pass() -> Verdict {
    Verdict::Pass {
        pause: Duration::ZERO,
        permit: None,
    }
}
