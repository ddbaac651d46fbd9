//! [`LakeRecorder`]: a micromegas-tracing event sink that writes straight into a [`Lake`], so an
//! instrumented program records its telemetry with no ingestion server.
//!
//! It stores what micromegas's HTTP sink and ingestion service would: the process row, one
//! stream row per stream (log, metrics, image and every thread's `cpu` stream) with its transit
//! metadata, and every block as a CBOR `BlockPayload` of two LZ4 frames (the dependencies the
//! block's events refer to, then the events) plus its row. Writes happen on the recorder's own
//! thread, in arrival order, so instrumented threads only pay for a channel send; nothing is
//! dropped, and shutting down waits until everything is written.
//!
//! ```no_run
//! # async fn run() -> datafusion_async_events::Result<()> {
//! use datafusion_async_events::{Lake, recorder::{RecordingOptions, start_recording}};
//! let lake = Lake::create_embedded("lake").await?;
//! let recording = start_recording(lake, RecordingOptions::default())?;
//! // ... run instrumented code on threads that have a thread stream ...
//! let summary = recording.finish();
//! assert!(summary.errors.is_empty());
//! # Ok(()) }
//! ```

pub mod demo;

use crate::error::{Error, Result};
use crate::format::BlockPayload;
use crate::lake::{BlockRecord, Lake, ProcessRecord, StreamRecord};
use bytes::Bytes;
use micromegas_tracing::dispatch;
use micromegas_tracing::event::{EventBlock, EventSink, EventStream, ExtractDeps, TracingBlock};
use micromegas_tracing::images::{ImageBlock, ImageStream};
use micromegas_tracing::logs::{LogBlock, LogMetadata, LogStream};
use micromegas_tracing::metrics::{MetricsBlock, MetricsStream};
use micromegas_tracing::prelude::ProcessInfo;
use micromegas_tracing::property_set::DynProperty;
use micromegas_tracing::spans::{ThreadBlock, ThreadStream};
use micromegas_transit::{HeterogeneousQueue, UserDefinedType};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// A block the recorder thread encodes: any of the dispatch's stream blocks.
trait PendingBlock: Send + Sync {
    fn encode(&self, start_ticks: i64) -> (BlockRecord, Bytes);
}

impl<Q> PendingBlock for EventBlock<Q>
where
    Q: HeterogeneousQueue + ExtractDeps + Send + Sync,
    Q::DepsQueue: HeterogeneousQueue + Send + Sync,
    EventBlock<Q>: TracingBlock,
{
    fn encode(&self, start_ticks: i64) -> (BlockRecord, Bytes) {
        let dependencies = self.events.extract(&self.dyn_deps);
        let payload =
            BlockPayload::compress(dependencies.as_bytes(), self.events.as_bytes()).to_cbor();
        // The dispatch closes blocks before handing them over; an open one ends where it began.
        let end = self.end.as_ref().unwrap_or(&self.begin);
        let record = BlockRecord {
            block_id: uuid::Uuid::new_v4(),
            stream_id: self.stream_id,
            process_id: self.process_id,
            begin_time: self.begin.time,
            begin_ticks: self.begin.ticks - start_ticks,
            end_time: end.time,
            end_ticks: end.ticks - start_ticks,
            nb_objects: self.nb_objects() as i32,
            object_offset: self.object_offset() as i64,
            payload_size: payload.len() as i64,
        };
        (record, Bytes::from(payload))
    }
}

enum Message {
    Process(ProcessRecord),
    Stream(StreamRecord),
    Block(Arc<dyn PendingBlock>),
    Flush(Sender<()>),
}

/// What a recorder wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecorderSummary {
    /// Stream rows written.
    pub streams: u64,
    /// Blocks written (blob and row).
    pub blocks: u64,
    /// Events in the blocks written.
    pub events: u64,
    /// Writes that failed, with the error (the first 100).
    pub errors: Vec<String>,
}

#[derive(Default)]
struct Counters {
    streams: AtomicU64,
    blocks: AtomicU64,
    events: AtomicU64,
    errors: Mutex<Vec<String>>,
}

/// A micromegas-tracing [`EventSink`] writing into a [`Lake`]. See the [module](self) docs.
pub struct LakeRecorder {
    sender: Mutex<Option<Sender<Message>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
    start_ticks: Arc<AtomicI64>,
    counters: Arc<Counters>,
}

impl fmt::Debug for LakeRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LakeRecorder")
            .field("summary", &self.summary())
            .finish()
    }
}

impl LakeRecorder {
    /// A recorder writing into `lake` from a thread of its own; the lake must have been opened
    /// writable ([`LakeOptions::writable`](crate::lake::LakeOptions::writable)).
    pub fn new(lake: Lake) -> Result<Self> {
        if !lake.options().writable {
            return Err(Error::ReadOnly(format!(
                "{} ({})",
                lake.database_url(),
                lake.store_url()
            )));
        }
        let (sender, receiver) = channel();
        let counters = Arc::new(Counters::default());
        let start_ticks = Arc::new(AtomicI64::new(0));
        let worker = {
            let counters = counters.clone();
            let start_ticks = start_ticks.clone();
            std::thread::Builder::new()
                .name("lake-recorder".into())
                .spawn(move || write_loop(lake, receiver, &counters, &start_ticks))
                .map_err(|e| Error::Recorder(format!("cannot start the recorder thread: {e}")))?
        };
        Ok(Self {
            sender: Mutex::new(Some(sender)),
            worker: Mutex::new(Some(worker)),
            start_ticks,
            counters,
        })
    }

    fn send(&self, message: Message) {
        let sender = self.sender.lock().unwrap_or_else(|e| e.into_inner());
        let sent = sender.as_ref().is_some_and(|s| s.send(message).is_ok());
        drop(sender);
        if !sent {
            self.counters
                .note_error("the recorder is shut down: telemetry after shutdown is lost".into());
        }
    }

    /// Waits until everything sent so far is written.
    pub fn flush(&self) {
        let (ack, done) = channel();
        self.send(Message::Flush(ack));
        let _ = done.recv();
    }

    /// Writes everything pending, then stops the recorder thread. Idempotent.
    pub fn shutdown(&self) {
        drop(self.sender.lock().unwrap_or_else(|e| e.into_inner()).take());
        if let Some(worker) = self.worker.lock().unwrap_or_else(|e| e.into_inner()).take()
            && worker.join().is_err()
        {
            self.counters
                .note_error("the recorder thread panicked".into());
        }
    }

    /// What was written so far.
    pub fn summary(&self) -> RecorderSummary {
        let c = &self.counters;
        RecorderSummary {
            streams: c.streams.load(Ordering::Relaxed),
            blocks: c.blocks.load(Ordering::Relaxed),
            events: c.events.load(Ordering::Relaxed),
            errors: c.errors.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }

    fn on_stream<B>(&self, stream: &EventStream<B>)
    where
        B: TracingBlock,
        B::Queue: HeterogeneousQueue,
        <B::Queue as ExtractDeps>::DepsQueue: HeterogeneousQueue,
    {
        let dependencies = flatten(
            <<B::Queue as ExtractDeps>::DepsQueue as HeterogeneousQueue>::reflect_contained(),
        );
        let objects = flatten(<B::Queue as HeterogeneousQueue>::reflect_contained());
        let mut properties: Vec<(String, String)> = stream
            .properties()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        properties.sort();
        self.send(Message::Stream(StreamRecord {
            stream_id: stream.stream_id(),
            process_id: stream.process_id(),
            dependencies_metadata: encode_metadata(&dependencies),
            objects_metadata: encode_metadata(&objects),
            tags: stream.tags().to_vec(),
            properties,
        }));
    }
}

impl Counters {
    fn note_error(&self, e: String) {
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        if errors.len() < 100 {
            errors.push(e);
        }
    }
}

impl Drop for LakeRecorder {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The metadata list of a queue as micromegas's sink sends it: the queue's own types at their
/// type indices, then every secondary type they use (recursively), once per name.
fn flatten(udts: Vec<UserDefinedType>) -> Vec<UserDefinedType> {
    let mut out = udts.clone();
    let mut pending: Vec<UserDefinedType> = udts
        .iter()
        .flat_map(|u| u.secondary_udts.iter().cloned())
        .collect();
    while let Some(udt) = pending.pop() {
        pending.extend(udt.secondary_udts.iter().cloned());
        if !out.iter().any(|o| o.name == udt.name) {
            out.push(udt);
        }
    }
    out
}

fn encode_metadata(udts: &[UserDefinedType]) -> Vec<u8> {
    let mut out = Vec::new();
    if let Err(e) = ciborium::ser::into_writer(udts, &mut out) {
        unreachable!("serializing metadata into memory failed: {e}");
    }
    out
}

impl From<&ProcessInfo> for ProcessRecord {
    /// The `processes` row of a micromegas-tracing process (properties sorted by name).
    fn from(info: &ProcessInfo) -> Self {
        let mut properties: Vec<(String, String)> = info
            .properties
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        properties.sort();
        ProcessRecord {
            process_id: info.process_id,
            exe: info.exe.clone(),
            username: info.username.clone(),
            realname: info.realname.clone(),
            computer: info.computer.clone(),
            distro: info.distro.clone(),
            cpu_brand: info.cpu_brand.clone(),
            tsc_frequency: info.tsc_frequency,
            start_time: info.start_time,
            start_ticks: info.start_ticks,
            parent_process_id: info.parent_process_id,
            properties,
        }
    }
}

fn write_loop(
    lake: Lake,
    receiver: Receiver<Message>,
    counters: &Counters,
    start_ticks: &AtomicI64,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            counters.note_error(format!("cannot start the recorder's runtime: {e}"));
            return;
        }
    };
    runtime.block_on(async {
        // The caller's pool belongs to the caller's runtime: use the lake through this one.
        let lake = lake.rebind();
        while let Ok(message) = receiver.recv() {
            let result = match message {
                Message::Process(p) => lake.insert_process(&p).await,
                Message::Stream(s) => {
                    let r = lake.insert_stream(&s).await;
                    if r.is_ok() {
                        counters.streams.fetch_add(1, Ordering::Relaxed);
                    }
                    r
                }
                Message::Block(block) => {
                    let (record, payload) = block.encode(start_ticks.load(Ordering::Acquire));
                    let r = lake.insert_block(&record, payload).await;
                    if r.is_ok() {
                        counters.blocks.fetch_add(1, Ordering::Relaxed);
                        counters
                            .events
                            .fetch_add(record.nb_objects.max(0) as u64, Ordering::Relaxed);
                    }
                    r
                }
                Message::Flush(ack) => {
                    let _ = ack.send(());
                    Ok(())
                }
            };
            if let Err(e) = result {
                counters.note_error(e.to_string());
            }
        }
    });
}

impl EventSink for LakeRecorder {
    fn on_startup(&self, process_info: Arc<ProcessInfo>) {
        self.start_ticks
            .store(process_info.start_ticks, Ordering::Release);
        self.send(Message::Process(ProcessRecord::from(&*process_info)));
    }

    fn on_shutdown(&self) {
        self.shutdown();
    }

    fn on_log_enabled(&self, _metadata: &LogMetadata) -> bool {
        true
    }

    fn on_log(
        &self,
        _desc: &LogMetadata,
        _properties: &[DynProperty<'_>],
        _time: i64,
        _args: fmt::Arguments<'_>,
    ) {
        // Log entries reach the lake in the log stream's blocks.
    }

    fn on_init_log_stream(&self, log_stream: &LogStream) {
        self.on_stream(log_stream);
    }

    fn on_process_log_block(&self, log_block: Arc<LogBlock>) {
        self.send(Message::Block(log_block));
    }

    fn on_init_metrics_stream(&self, metrics_stream: &MetricsStream) {
        self.on_stream(metrics_stream);
    }

    fn on_process_metrics_block(&self, metrics_block: Arc<MetricsBlock>) {
        self.send(Message::Block(metrics_block));
    }

    fn on_init_thread_stream(&self, thread_stream: &ThreadStream) {
        self.on_stream(thread_stream);
    }

    fn on_process_thread_block(&self, thread_block: Arc<ThreadBlock>) {
        self.send(Message::Block(thread_block));
    }

    fn is_busy(&self) -> bool {
        false
    }

    fn on_init_image_stream(&self, stream: &ImageStream) {
        self.on_stream(stream);
    }

    fn on_process_image_block(&self, block: Arc<ImageBlock>) {
        self.send(Message::Block(block));
    }
}

/// Buffer sizes and switches of [`start_recording`] (micromegas's defaults).
#[derive(Debug, Clone)]
pub struct RecordingOptions {
    /// Bytes of the log stream's buffer.
    pub log_buffer_size: usize,
    /// Bytes of the metrics stream's buffer.
    pub metrics_buffer_size: usize,
    /// Bytes of each thread stream's buffer (one block per full buffer).
    pub thread_buffer_size: usize,
    /// Whether threads record span events at all.
    pub cpu_tracing: bool,
    /// Properties of the process row.
    pub process_properties: HashMap<String, String>,
}

impl Default for RecordingOptions {
    fn default() -> Self {
        Self {
            log_buffer_size: 10 * 1024 * 1024,
            metrics_buffer_size: 1024 * 1024,
            thread_buffer_size: 10 * 1024 * 1024,
            cpu_tracing: true,
            process_properties: HashMap::new(),
        }
    }
}

/// The global micromegas dispatch recording into a lake, until [`finish`](Self::finish).
#[derive(Debug)]
pub struct Recording {
    recorder: Arc<LakeRecorder>,
    process_id: uuid::Uuid,
    finished: bool,
}

/// Initializes micromegas-tracing's global dispatch with a [`LakeRecorder`] on `lake`.
///
/// Threads record span events once they have a thread stream: tokio runtimes built with
/// `with_tracing_callbacks()` give one to each worker; call
/// `micromegas_tracing::dispatch::init_thread_stream()` on other threads.
pub fn start_recording(lake: Lake, options: RecordingOptions) -> Result<Recording> {
    let recorder = Arc::new(LakeRecorder::new(lake)?);
    dispatch::init_event_dispatch(
        options.log_buffer_size,
        options.metrics_buffer_size,
        options.thread_buffer_size,
        recorder.clone(),
        options.process_properties,
        options.cpu_tracing,
    )
    .map_err(|e| Error::Recorder(format!("cannot start recording: {e}")))?;
    let process_id = dispatch::process_id()
        .ok_or_else(|| Error::Recorder("the dispatch has no process id".into()))?;
    Ok(Recording {
        recorder,
        process_id,
        finished: false,
    })
}

impl Recording {
    /// The id of the process being recorded.
    pub fn process_id(&self) -> uuid::Uuid {
        self.process_id
    }

    /// Flushes the log and metrics streams and the calling thread's stream, shuts the dispatch
    /// down and waits until everything is written. Threads that still hold events (a tokio
    /// runtime's workers) flush when they stop: drop runtimes first.
    pub fn finish(mut self) -> RecorderSummary {
        self.stop();
        self.recorder.summary()
    }

    fn stop(&mut self) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        dispatch::flush_log_buffer();
        dispatch::flush_metrics_buffer();
        dispatch::flush_thread_buffer();
        dispatch::shutdown_dispatch();
        self.recorder.shutdown();
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        self.stop();
    }
}
