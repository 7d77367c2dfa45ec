//! Records handed to librdkafka a partition's run at a time.
//!
//! The `rdkafka` crate's only way to produce is `rd_kafka_producev`, one
//! call per record: each looks the topic up by name (allocating a C string
//! for it and taking the client's topic lock for writing), reads the clock
//! and takes the partition's lock. `rd_kafka_produce_batch` does those once
//! per call on a topic handle kept for the producer's life. It takes no
//! headers and stamps every record with the time of the call, so only
//! records with neither of their own go this way; the others go through
//! `rd_kafka_producev` as before.
//!
//! This is the crate's one use of librdkafka's C API directly. Every
//! record's delivery report carries a reference to its produce call's
//! [`Request`], made and reclaimed with the `rdkafka` crate's own
//! [`IntoOpaque`], so reports are handled by the crate's polling thread
//! exactly as those of records sent through it.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::ptr::{self, NonNull};
use std::sync::{Arc, RwLock};

use rdkafka::bindings as rd;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::IntoOpaque;

use super::producer::Request;

/// Topics whose handles a producer keeps. Records for other topics go
/// through `rd_kafka_producev` (librdkafka keeps every topic a client has
/// produced to anyway; this only bounds the handles held here).
const MAX_TOPIC_HANDLES: usize = 4096;

/// A librdkafka topic handle. librdkafka's topic handles may be used from
/// any thread.
#[derive(Clone, Copy)]
pub(super) struct TopicHandle(NonNull<rd::rd_kafka_topic_t>);

// SAFETY: librdkafka topic handles are thread-safe (its own locks guard
// every use); the pointer is only passed to librdkafka.
unsafe impl Send for TopicHandle {}
// SAFETY: as above.
unsafe impl Sync for TopicHandle {}

/// The topic handles of one producer client, created on first use and
/// destroyed with the client. Handles are never removed while the client
/// lives, so a handle taken from here stays valid as long as the client.
pub(super) struct TopicHandles {
    client: NonNull<rd::rd_kafka_t>,
    handles: RwLock<HashMap<Box<str>, TopicHandle>>,
}

// SAFETY: the client pointer is only passed to librdkafka, whose client
// handle is thread-safe; the map is behind a lock.
unsafe impl Send for TopicHandles {}
// SAFETY: as above.
unsafe impl Sync for TopicHandles {}

impl TopicHandles {
    /// Handles for `client`, which must outlive this value (the producer
    /// declares this field before its client, so it is dropped first).
    pub(super) fn new(client: *mut rd::rd_kafka_t) -> Option<Self> {
        Some(Self {
            client: NonNull::new(client)?,
            handles: RwLock::new(HashMap::new()),
        })
    }

    /// The handle of `topic`; `None` when librdkafka refuses the name or
    /// this producer already holds as many handles as it keeps.
    pub(super) fn get(&self, topic: &str) -> Option<TopicHandle> {
        if let Some(handle) = super::read(&self.handles).get(topic) {
            return Some(*handle);
        }
        let mut handles = super::write(&self.handles);
        if let Some(handle) = handles.get(topic) {
            return Some(*handle);
        }
        if handles.len() >= MAX_TOPIC_HANDLES {
            return None;
        }
        let name = CString::new(topic).ok()?;
        // SAFETY: the client is alive (see `new`), the name is a valid C
        // string that librdkafka copies, and a null configuration means
        // the client's default topic configuration, as `rd_kafka_producev`
        // uses.
        let raw =
            unsafe { rd::rd_kafka_topic_new(self.client.as_ptr(), name.as_ptr(), ptr::null_mut()) };
        let handle = TopicHandle(NonNull::new(raw)?);
        handles.insert(topic.into(), handle);
        Some(handle)
    }
}

impl Drop for TopicHandles {
    fn drop(&mut self) {
        let handles = self
            .handles
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (_, handle) in handles.drain() {
            // SAFETY: each handle came from `rd_kafka_topic_new` on the
            // client, which is still alive, and is destroyed once.
            unsafe { rd::rd_kafka_topic_destroy(handle.0.as_ptr()) };
        }
    }
}

/// A record for [`produce`]: key and value, `None` for null.
pub(super) struct Unstamped<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

/// Hands `records`, in order, to librdkafka for `partition` of `topic`;
/// the delivery report of each record it takes goes to `request`.
/// Returns how many it took (always the first ones) and, if it stopped
/// short, why the next one was refused.
pub(super) fn produce(
    topic: TopicHandle,
    partition: i32,
    records: &[Unstamped<'_>],
    request: &Arc<Request>,
) -> (usize, Option<RDKafkaErrorCode>) {
    fn bytes(data: Option<&[u8]>) -> (*mut c_void, usize) {
        // As the `rdkafka` crate passes them: null for none, else the
        // slice's pointer (librdkafka copies, never writes).
        data.map_or((ptr::null_mut(), 0), |d| {
            (d.as_ptr() as *mut c_void, d.len())
        })
    }
    let mut messages: Vec<rd::rd_kafka_message_t> = records
        .iter()
        .map(|record| {
            let (payload, len) = bytes(record.value);
            let (key, key_len) = bytes(record.key);
            rd::rd_kafka_message_t {
                err: rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR,
                rkt: ptr::null_mut(),
                partition,
                payload,
                len,
                key,
                key_len,
                offset: 0,
                _private: Arc::clone(request).into_ptr(),
            }
        })
        .collect();
    let Ok(count) = i32::try_from(messages.len()) else {
        // Callers send runs far shorter than this; refuse rather than
        // hand librdkafka a wrong count.
        for message in &messages {
            // SAFETY: made by `into_ptr` above and not handed to anyone.
            drop(unsafe { Arc::<Request>::from_ptr(message._private) });
        }
        return (0, Some(RDKafkaErrorCode::InvalidArgument));
    };
    // SAFETY: the topic handle is alive (`TopicHandles`); `messages` is a
    // valid array of `count` messages whose key and payload point into
    // `records`, which librdkafka copies (`RD_KAFKA_MSG_F_COPY`) before
    // returning; it writes only each message's `err`.
    unsafe {
        rd::rd_kafka_produce_batch(
            topic.0.as_ptr(),
            partition,
            rd::RD_KAFKA_MSG_F_COPY,
            messages.as_mut_ptr(),
            count,
        );
    }
    let mut taken = messages.len();
    let mut refused = None;
    for (i, message) in messages.iter().enumerate() {
        if message.err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            continue;
        }
        // Not enqueued: librdkafka will not report it, so its reference
        // to the request comes back here.
        // SAFETY: made by `into_ptr` above; librdkafka did not take it.
        drop(unsafe { Arc::<Request>::from_ptr(message._private) });
        if refused.is_none() {
            taken = i;
            refused = Some(RDKafkaErrorCode::from(message.err));
        }
    }
    (taken, refused)
}
