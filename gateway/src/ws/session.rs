//! One WebSocket connection.
//!
//! The session reads frames and dispatches them; it never waits on a
//! cluster itself. A produce that completes at once (an embedded append
//! with acks 0 or 1) is answered inline; one that must wait goes on as a
//! task. At most [`SessionSettings::max_in_flight`] produces are unanswered
//! at once: a produce takes a permit
//! before the next frame is read, so when all are taken the session stops
//! reading and TCP pushes back on the client. Produce frames that arrive
//! together (already read, nothing else waiting) for the same topic and
//! acks are written as one call to the cluster and answered frame by frame
//! (see `PendingProduce`). Subscriptions run as tasks
//! too (see [`super::subscription`]). Every outbound frame goes through one
//! bounded queue to the writer, which feeds as many as are ready and then
//! flushes once, so a busy connection writes in batches, not per frame.
//!
//! The code is generic over the socket's `Sink` and `Stream`, so tests can
//! drive it without a network.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use sluice_broker::{ProduceRecord, ProducedOffset};
use sluice_federation::cursor::Cursor;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::task::AbortHandle;

use super::protocol::{
    AckOffset, ClientFrame, Encoded, FrameError, Framing, ProduceFrame, ServerFrame,
};
use super::subscription::Subscription;
use super::DEFAULT_WS_OUTBOUND_FRAMES;
use super::{SessionSettings, DEFAULT_WS_BATCH_FRAMES, DEFAULT_WS_INITIAL_CREDIT};
use crate::app::AppState;
use crate::auth::quota::CountPermit;
use crate::auth::ws::{FrameAccess, SessionGuard, Verdict, CLOSE_UNAUTHENTICATED};
use crate::error::ApiError;
use crate::telemetry::messaging;
use crate::telemetry::metrics::WEBSOCKET_CONNECTIONS;
use crate::telemetry::{propagation, GaugeGuard};

/// How long a closing session waits for the client's Close after sending
/// its own, so the close handshake completes.
const CLOSE_HANDSHAKE_WAIT: Duration = Duration::from_secs(1);

/// Most produce frames written together in one call.
const COALESCE_MAX_FRAMES: usize = 64;
/// Most record bytes written together in one call.
const COALESCE_MAX_BYTES: usize = 256 * 1024;
/// Frames with more record bytes than this are written on their own.
const COALESCE_MAX_FRAME_BYTES: usize = 64 * 1024;

/// What the connection's tasks hand the writer.
#[derive(Debug)]
pub enum Out {
    /// A frame, already encoded.
    Frame(Encoded),
    /// Close the connection with this code and reason; nothing follows.
    Close(u16, String),
}

/// The way to the connection's writer, with the connection's framing:
/// every task that answers the client holds a clone.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Out>,
    framing: Framing,
}

impl Outbox {
    /// An outbox over `tx` encoding in `framing`.
    pub fn new(tx: mpsc::Sender<Out>, framing: Framing) -> Self {
        Self { tx, framing }
    }

    /// The connection's framing.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// Encodes and queues `frame`; false once the writer is gone.
    pub async fn send(&self, frame: &ServerFrame<'_>) -> bool {
        self.send_encoded(frame.encode(self.framing)).await
    }

    /// Queues an encoded frame; false once the writer is gone.
    pub async fn send_encoded(&self, frame: Encoded) -> bool {
        self.tx.send(Out::Frame(frame)).await.is_ok()
    }

    /// Queues a Close; false once the writer is gone.
    pub async fn close(&self, code: u16, reason: String) -> bool {
        self.tx.send(Out::Close(code, reason)).await.is_ok()
    }

    /// Resolves once the writer is gone.
    pub async fn closed(&self) {
        self.tx.closed().await;
    }
}

/// Sends `frame` to the writer; false once the writer is gone.
pub async fn send(out: &Outbox, frame: &ServerFrame<'_>) -> bool {
    out.send(frame).await
}

/// Serves an upgraded connection until either side closes it.
pub async fn run(
    socket: WebSocket,
    state: AppState,
    settings: SessionSettings,
    guard: SessionGuard,
) {
    serve(socket, state, settings, guard).await;
}

/// [`run`] over any socket of axum's message type.
pub async fn serve<S>(socket: S, state: AppState, settings: SessionSettings, guard: SessionGuard)
where
    S: Sink<Message, Error = axum::Error>
        + Stream<Item = Result<Message, axum::Error>>
        + Send
        + Unpin
        + 'static,
{
    let _open = GaugeGuard::hold(WEBSOCKET_CONNECTIONS);
    let (sink, mut stream) = socket.split();
    let (tx, rx) = mpsc::channel(DEFAULT_WS_OUTBOUND_FRAMES);
    let out = Outbox::new(tx, settings.framing);
    let mut writer = tokio::spawn(write_loop(sink, rx));
    let mut session = Session {
        state,
        settings,
        out,
        permits: Arc::new(Semaphore::new(settings.max_in_flight)),
        subscriptions: Subscriptions::default(),
        guard,
        held: None,
    };
    // A session that must authenticate by frame gets so long to do it.
    let auth_wait = Duration::from_millis(
        session
            .state
            .config
            .auth
            .as_ref()
            .map_or(sluice_config::DEFAULT_WS_AUTH_FRAME_TIMEOUT_MS, |a| {
                a.websocket.frame_timeout_ms
            }),
    );
    let auth_deadline = tokio::time::Instant::now() + auth_wait;
    // Whether a close handshake is under way and worth finishing.
    let closing = loop {
        // The permit comes first: with every produce slot taken, the socket
        // is not read, which is the backpressure.
        let permit = match Arc::clone(&session.permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(TryAcquireError::Closed) => break false,
            Err(TryAcquireError::NoPermits) => {
                // Held produces may be what holds the permits.
                session.flush_produces().await;
                let permit = tokio::select! {
                    permit = Arc::clone(&session.permits).acquire_owned() => permit,
                    ended = &mut writer => break ended.unwrap_or(WriterEnd::Gone) == WriterEnd::Closed,
                };
                let Ok(permit) = permit else { break false };
                permit
            }
        };
        // A frame already read goes on the held produces; once nothing more
        // is waiting, they are written.
        let message = match stream.next().now_or_never() {
            Some(message) => message,
            None => {
                session.flush_produces().await;
                let awaiting_auth = session.guard.awaiting_auth();
                tokio::select! {
                    message = stream.next() => message,
                    ended = &mut writer => break ended.unwrap_or(WriterEnd::Gone) == WriterEnd::Closed,
                    () = tokio::time::sleep_until(auth_deadline), if awaiting_auth => {
                        let error = SessionGuard::auth_frame_late(auth_wait);
                        send(&session.out, &ServerFrame::error(None, None, &error)).await;
                        session.out.close(CLOSE_UNAUTHENTICATED, error.message.clone()).await;
                        // The writer sends the Close; the client's answers it.
                        break true;
                    }
                }
            }
        };
        match message {
            Some(Ok(Message::Text(text))) => match session.settings.framing {
                Framing::Json => session.handle(text.as_bytes(), permit).await,
                Framing::Cbor => session.wrong_framing("a text", "CBOR binary").await,
            },
            Some(Ok(Message::Binary(bytes))) => match session.settings.framing {
                Framing::Cbor => session.handle(&bytes, permit).await,
                Framing::Json => session.wrong_framing("a binary", "JSON text").await,
            },
            // Pings are answered by the WebSocket layer; pongs need nothing.
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            // Reading on lets the WebSocket layer send its Close reply.
            Some(Ok(Message::Close(_))) => break true,
            Some(Err(_)) | None => break false,
        }
    };
    // Frames read before the end are written still (their answers may not
    // reach the client).
    session.flush_produces().await;
    session.subscriptions.abort_all();
    if closing {
        // Finish the close handshake: the client's Close to our Close, or
        // our reply to the client's, which the layer sends as it reads.
        let _ = tokio::time::timeout(CLOSE_HANDSHAKE_WAIT, async {
            while let Some(Ok(_)) = stream.next().await {}
        })
        .await;
    }
    writer.abort();
}

/// Per-connection state the reading loop works with.
struct Session {
    state: AppState,
    settings: SessionSettings,
    out: Outbox,
    permits: Arc<Semaphore>,
    subscriptions: Subscriptions,
    guard: SessionGuard,
    /// Produce frames read but not yet written.
    held: Option<PendingProduce>,
}

/// Produce frames written in one produce call to the cluster (one append
/// on the embedded log) and answered one by one, each with its own
/// offsets: a frame on its own, or frames to one topic with the same acks
/// read back to back. Only frames whose records name no partition are held
/// together, so the call cannot fail for one frame and not the others (a
/// topic-wide error fails them all alike), and only with tracing off, since
/// each traced frame is its own `send` span.
struct PendingProduce {
    topic: String,
    acks: sluice_broker::Acks,
    /// The trace the `send` span joins: the frame's `traceparent` for a
    /// frame written alone with tracing on, else none.
    parent: opentelemetry::Context,
    records: Vec<ProduceRecord>,
    bytes: usize,
    /// Id and record count of each frame, in order.
    frames: Vec<(String, usize)>,
    permits: Vec<OwnedSemaphorePermit>,
}

impl Session {
    /// Answers a frame of the other framing than the connection's.
    async fn wrong_framing(&self, got: &str, expected: &str) {
        let error = ApiError::bad_request(format!(
            "{got} frame on a connection that uses {expected} frames \
             (chosen at the upgrade by subprotocol or ?framing=)"
        ));
        send(&self.out, &ServerFrame::error(None, None, &error)).await;
    }

    /// Handles one frame; only produces keep the permit.
    async fn handle(&mut self, frame: &[u8], permit: OwnedSemaphorePermit) {
        self.subscriptions.forget_finished();
        let bytes = frame.len();
        let frame = match ClientFrame::decode(self.settings.framing, frame) {
            Ok(frame) => frame,
            Err(FrameError { id, sub, error }) => {
                let frame = ServerFrame::error(id.as_deref(), sub.as_deref(), &error);
                send(&self.out, &frame).await;
                return;
            }
        };
        // Whatever this frame does comes after the produces read before it.
        if !matches!(frame, ClientFrame::Produce(_)) {
            self.flush_produces().await;
        }
        // Auth sees every frame first (crate::auth::ws).
        let quota_permit = match self.guard.check(frame_access(&frame, bytes)) {
            Verdict::Pass { pause, permit } => {
                if !pause.is_zero() {
                    self.flush_produces().await;
                    // Not reading while paused is the throttle.
                    let notice = ServerFrame::Throttle {
                        throttle_time_ms: pause.as_millis() as u64,
                    };
                    send(&self.out, &notice).await;
                    tokio::time::sleep(pause).await;
                }
                permit
            }
            Verdict::Authenticated(principal) => {
                let answer = ServerFrame::Authenticated {
                    principal: &principal,
                };
                send(&self.out, &answer).await;
                return;
            }
            Verdict::Refuse(error) => {
                let (id, sub) = frame_ids(&frame);
                send(&self.out, &ServerFrame::error(id, sub, &error)).await;
                return;
            }
            Verdict::Close(error) => {
                let (id, sub) = frame_ids(&frame);
                send(&self.out, &ServerFrame::error(id, sub, &error)).await;
                self.out
                    .close(CLOSE_UNAUTHENTICATED, error.message.clone())
                    .await;
                return;
            }
        };
        match frame {
            ClientFrame::Auth(_) => {}
            ClientFrame::Produce(produce) => self.produce(produce, permit).await,
            ClientFrame::Subscribe(subscribe) => {
                if self.subscriptions.by_id.contains_key(&subscribe.id) {
                    let error = ApiError::bad_request(format!(
                        "subscription id {:?} is in use on this connection",
                        subscribe.id
                    ));
                    send(
                        &self.out,
                        &ServerFrame::error(Some(&subscribe.id), None, &error),
                    )
                    .await;
                    return;
                }
                let credit = subscribe.credit.unwrap_or(DEFAULT_WS_INITIAL_CREDIT);
                let (grants, granted) = watch::channel(credit);
                let id = subscribe.id.clone();
                let (task, commits) = if subscribe.group.is_some() {
                    let (commits, queue) = mpsc::channel(super::group::DEFAULT_WS_COMMIT_QUEUE);
                    let task = super::group::GroupMember::start(
                        self.state.clone(),
                        subscribe,
                        granted,
                        self.settings.pause_limit,
                        self.out.clone(),
                        queue,
                    );
                    (tokio::spawn(task).abort_handle(), Some(commits))
                } else {
                    let task = Subscription::start(
                        Arc::clone(&self.state.federation),
                        Arc::clone(&self.state.telemetry),
                        subscribe,
                        granted,
                        self.settings,
                        self.out.clone(),
                        self.guard.buckets(),
                    );
                    (tokio::spawn(task).abort_handle(), None)
                };
                self.subscriptions.by_id.insert(
                    id,
                    Handle {
                        grants,
                        task,
                        commits,
                        _quota: quota_permit,
                    },
                );
            }
            ClientFrame::Credit(credit) => match self.subscriptions.by_id.get(&credit.sub) {
                Some(handle) => handle
                    .grants
                    .send_modify(|granted| *granted = granted.saturating_add(credit.records)),
                None => {
                    let error = unknown_subscription(&credit.sub);
                    send(
                        &self.out,
                        &ServerFrame::error(None, Some(&credit.sub), &error),
                    )
                    .await;
                }
            },
            ClientFrame::Unsubscribe(unsubscribe) => {
                // Dropping the credit sender stops the task, which answers
                // `unsubscribed` after its last record. A task already
                // ended (after an error) cannot, so the session does.
                match self.subscriptions.by_id.remove(&unsubscribe.sub) {
                    Some(handle) if !handle.task.is_finished() => {}
                    Some(_) => {
                        let frame = ServerFrame::Unsubscribed {
                            sub: &unsubscribe.sub,
                        };
                        send(&self.out, &frame).await;
                    }
                    None => {
                        let error = unknown_subscription(&unsubscribe.sub);
                        let frame = ServerFrame::error(None, Some(&unsubscribe.sub), &error);
                        send(&self.out, &frame).await;
                    }
                }
            }
            ClientFrame::Ping => {
                send(&self.out, &ServerFrame::Pong).await;
            }
            ClientFrame::Commit(commit) => {
                let queue = self
                    .subscriptions
                    .by_id
                    .get(&commit.sub)
                    .map(|h| h.commits.clone());
                let error = match queue {
                    Some(Some(queue)) => match queue.try_send(commit) {
                        Ok(()) => return,
                        Err(mpsc::error::TrySendError::Full(commit)) => (
                            commit,
                            ApiError::new(
                                axum::http::StatusCode::TOO_MANY_REQUESTS,
                                429,
                                "too many commits in flight on this subscription; wait for `committed`",
                            ),
                        ),
                        Err(mpsc::error::TrySendError::Closed(commit)) => {
                            let error = unknown_subscription(&commit.sub);
                            (commit, error)
                        }
                    },
                    Some(None) => {
                        let error = ApiError::bad_request(format!(
                            "subscription {:?} has no group; only group subscriptions commit",
                            commit.sub
                        ));
                        (commit, error)
                    }
                    None => {
                        let error = unknown_subscription(&commit.sub);
                        (commit, error)
                    }
                };
                let (commit, error) = error;
                let frame = ServerFrame::error(commit.id.as_deref(), Some(&commit.sub), &error);
                send(&self.out, &frame).await;
            }
        }
    }

    /// Checks a produce and starts it; the ack or error is sent when it
    /// completes, and the permit is released then.
    async fn produce(&mut self, mut frame: ProduceFrame, permit: OwnedSemaphorePermit) {
        let checked = frame
            .acks(self.state.config.gateway.default_acks)
            .and_then(|acks| Ok((acks, frame.take_records()?)));
        let (acks, records) = match checked {
            Ok(checked) => checked,
            Err(error) => {
                send(
                    &self.out,
                    &ServerFrame::error(Some(&frame.id), None, &error),
                )
                .await;
                return;
            }
        };
        let bytes: usize = records.iter().map(ProduceRecord::size_bytes).sum();
        let tracing = self.state.telemetry.tracing_enabled();
        let coalesce = !tracing
            && bytes <= COALESCE_MAX_FRAME_BYTES
            && records.iter().all(|r| r.partition.is_none());
        let joins = coalesce
            && self.held.as_ref().is_some_and(|held| {
                held.topic == frame.topic
                    && held.acks == acks
                    && held.frames.len() < COALESCE_MAX_FRAMES
                    && held.bytes + bytes <= COALESCE_MAX_BYTES
            });
        // Frames held before this one are written first.
        if !joins {
            self.flush_produces().await;
        }
        let held = self.held.get_or_insert_with(|| PendingProduce {
            topic: std::mem::take(&mut frame.topic),
            acks,
            // Only worth parsing when spans are recorded.
            parent: if tracing {
                propagation::context_from(
                    frame.traceparent.as_deref().map(str::as_bytes),
                    frame.tracestate.as_deref(),
                )
            } else {
                opentelemetry::Context::new()
            },
            records: Vec::new(),
            bytes: 0,
            frames: Vec::new(),
            permits: Vec::new(),
        });
        held.frames
            .push((std::mem::take(&mut frame.id), records.len()));
        held.records.extend(records);
        held.bytes += bytes;
        held.permits.push(permit);
        if !coalesce {
            self.flush_produces().await;
        }
    }

    /// Writes the held produce frames in one call and answers each.
    async fn flush_produces(&mut self) {
        let Some(held) = self.held.take() else {
            return;
        };
        let state = self.state.clone();
        let out = self.out.clone();
        let mut answered = Box::pin(async move {
            let PendingProduce {
                topic,
                acks,
                parent,
                records,
                frames,
                permits,
                ..
            } = held;
            let _permits = permits;
            match produce(&state, &topic, records, acks, &parent).await {
                Ok(offsets) => {
                    let mut offsets = offsets.into_iter();
                    for (id, count) in &frames {
                        let offsets = offsets.by_ref().take(*count).collect();
                        out.send(&ServerFrame::Ack { id, offsets }).await;
                    }
                }
                Err(error) => {
                    for (id, _) in &frames {
                        out.send(&ServerFrame::error(Some(id), None, &error)).await;
                    }
                }
            }
        });
        // Most produces finish without waiting (an embedded append with
        // acks 0 or 1): answered right here, with no task to schedule. One
        // that waits (an fsync, a Kafka delivery) goes on in its own task
        // while this connection reads on.
        if futures_util::poll!(answered.as_mut()).is_pending() {
            tokio::spawn(answered);
        }
    }
}

/// Writes records and builds each one's cursor, as the REST reads would
/// give for the position after it.
async fn produce(
    state: &AppState,
    topic: &str,
    records: Vec<ProduceRecord>,
    acks: sluice_broker::Acks,
    parent: &opentelemetry::Context,
) -> Result<Vec<AckOffset>, ApiError> {
    let produced =
        messaging::produce(state, topic, records, acks, parent, messaging::WEBSOCKET).await?;
    let epoch = produced.epoch;
    Ok(produced
        .offsets
        .into_iter()
        .map(
            |ProducedOffset {
                 partition, offset, ..
             }| AckOffset {
                partition,
                offset,
                cursor: offset
                    .map(|offset| Cursor::at_epoch(epoch, [(partition, offset + 1)]).encode(topic)),
            },
        )
        .collect())
}

/// What auth needs to know of a frame.
fn frame_access(frame: &ClientFrame, bytes: usize) -> FrameAccess<'_> {
    match frame {
        ClientFrame::Auth(auth) => FrameAccess::Auth(&auth.token),
        ClientFrame::Produce(p) => FrameAccess::Produce(&p.topic, bytes as u64),
        ClientFrame::Subscribe(s) => FrameAccess::Subscribe(&s.topic),
        _ => FrameAccess::Other,
    }
}

/// The id and subscription an answer to `frame` correlates with.
fn frame_ids(frame: &ClientFrame) -> (Option<&str>, Option<&str>) {
    match frame {
        ClientFrame::Produce(p) => (Some(&p.id), None),
        ClientFrame::Subscribe(s) => (Some(&s.id), None),
        ClientFrame::Credit(c) => (None, Some(&c.sub)),
        ClientFrame::Unsubscribe(u) => (None, Some(&u.sub)),
        ClientFrame::Commit(c) => (c.id.as_deref(), Some(&c.sub)),
        ClientFrame::Ping | ClientFrame::Auth(_) => (None, None),
    }
}

fn unknown_subscription(sub: &str) -> ApiError {
    ApiError::bad_request(format!("no subscription {sub:?} on this connection"))
}

/// A running subscription, as the session holds it.
struct Handle {
    /// Total credit granted so far.
    grants: watch::Sender<u64>,
    task: AbortHandle,
    /// The principal's subscription quota unit, given back with the handle.
    _quota: Option<CountPermit>,
    /// Where `commit` frames go, for a group subscription.
    commits: Option<mpsc::Sender<super::protocol::CommitFrame>>,
}

/// The connection's subscriptions by id; aborted when the session ends.
#[derive(Default)]
struct Subscriptions {
    by_id: HashMap<String, Handle>,
}

impl Subscriptions {
    /// Drops subscriptions that ended by themselves (after an error), so
    /// their ids can be used again.
    fn forget_finished(&mut self) {
        self.by_id.retain(|_, handle| !handle.task.is_finished());
    }

    fn abort_all(&mut self) {
        for (_, handle) in self.by_id.drain() {
            handle.task.abort();
        }
    }
}

impl Drop for Subscriptions {
    fn drop(&mut self) {
        self.abort_all();
    }
}

/// Why the writer stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriterEnd {
    /// It sent a Close frame.
    Closed,
    /// The socket failed or every sender is gone.
    Gone,
}

/// Feeds frames as they come and flushes once nothing more is ready (or
/// after [`DEFAULT_WS_BATCH_FRAMES`]), so bursts cost one flush.
async fn write_loop<S>(mut sink: S, mut rx: mpsc::Receiver<Out>) -> WriterEnd
where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut fed = 0;
        while let Some(out) = next.take() {
            match out {
                Out::Frame(frame) => {
                    let message = match frame {
                        Encoded::Text(text) => Message::text(text),
                        Encoded::Binary(bytes) => Message::binary(bytes),
                    };
                    if sink.feed(message).await.is_err() {
                        return WriterEnd::Gone;
                    }
                }
                Out::Close(code, reason) => {
                    let close = Message::Close(Some(CloseFrame {
                        code,
                        reason: reason.into(),
                    }));
                    return match sink.send(close).await {
                        Ok(()) => WriterEnd::Closed,
                        Err(_) => WriterEnd::Gone,
                    };
                }
            }
            fed += 1;
            if fed < DEFAULT_WS_BATCH_FRAMES {
                next = rx.try_recv().ok();
            }
        }
        if sink.flush().await.is_err() {
            return WriterEnd::Gone;
        }
    }
    WriterEnd::Gone
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use super::*;

    /// A sink that records what it is given and how often it is flushed.
    #[derive(Default)]
    struct Recording {
        frames: Vec<Message>,
        flushes: usize,
    }

    impl Sink<Message> for Recording {
        type Error = axum::Error;

        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
            Poll::Ready(Ok(()))
        }

        fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), axum::Error> {
            self.frames.push(item);
            Ok(())
        }

        fn poll_flush(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Result<(), axum::Error>> {
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }

        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn writer_flushes_once_per_batch() {
        let frames = DEFAULT_WS_BATCH_FRAMES + 10;
        let (tx, rx) = mpsc::channel(frames);
        for i in 0..frames {
            tx.send(Out::Frame(Encoded::Text(format!("{i}"))))
                .await
                .unwrap();
        }
        drop(tx);
        let mut sink = Recording::default();
        assert_eq!(write_loop(&mut sink, rx).await, WriterEnd::Gone);
        assert_eq!(sink.frames.len(), frames);
        // A full batch, then the rest: two flushes, not one per frame.
        assert_eq!(sink.flushes, 2);
    }

    #[tokio::test]
    async fn writer_ends_after_a_close() {
        let (tx, rx) = mpsc::channel(4);
        tx.send(Out::Frame(Encoded::Text("last".into())))
            .await
            .unwrap();
        tx.send(Out::Close(4008, "slow".into())).await.unwrap();
        tx.send(Out::Frame(Encoded::Text("never".into())))
            .await
            .unwrap();
        let mut sink = Recording::default();
        assert_eq!(write_loop(&mut sink, rx).await, WriterEnd::Closed);
        assert_eq!(sink.frames.len(), 2);
        assert!(matches!(
            &sink.frames[1],
            Message::Close(Some(CloseFrame { code: 4008, .. }))
        ));
    }
}
