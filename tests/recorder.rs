//! The LakeRecorder: real instrumented programs recording straight into SQLite and PostgreSQL
//! lakes, read back and decoded.

mod common;

use common::lakes::{BACKENDS, Backend, TestLake, decode_from_lake, open};
use common::producer::{RawProcess, Recording, encode_thread_block, thread_stream};
use common::{Row, rows, workload};
use datafusion_async_events::format::{ColumnSet, RowFilter};
use datafusion_async_events::recorder::{LakeRecorder, RecordingOptions, start_recording};
use micromegas_tracing::event::{EventSink, TracingBlock, in_memory_sink::InMemorySink};
use micromegas_tracing::images::{ImageBlock, ImageStream};
use micromegas_tracing::logs::{LogBlock, LogMetadata, LogStream};
use micromegas_tracing::metrics::{MetricsBlock, MetricsStream};
use micromegas_tracing::prelude::ProcessInfo;
use micromegas_tracing::property_set::DynProperty;
use micromegas_tracing::spans::{
    BeginAsyncSpanEvent, EndAsyncSpanEvent, SpanLocation, SpanMetadata, ThreadBlock, ThreadStream,
};
use serial_test::serial;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use uuid::Uuid;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Forwards everything to the recorder under test and to micromegas's in-memory sink, so the
/// same blocks can be read back from the lake and encoded by micromegas's own sink code.
struct Tee {
    recorder: Arc<LakeRecorder>,
    memory: Arc<InMemorySink>,
}

impl EventSink for Tee {
    fn on_startup(&self, p: Arc<ProcessInfo>) {
        self.memory.on_startup(p.clone());
        self.recorder.on_startup(p);
    }
    fn on_shutdown(&self) {
        self.memory.on_shutdown();
        self.recorder.on_shutdown();
    }
    fn on_log_enabled(&self, m: &LogMetadata) -> bool {
        self.recorder.on_log_enabled(m)
    }
    fn on_log(&self, _: &LogMetadata, _: &[DynProperty<'_>], _: i64, _: fmt::Arguments<'_>) {}
    fn on_init_log_stream(&self, s: &LogStream) {
        self.memory.on_init_log_stream(s);
        self.recorder.on_init_log_stream(s);
    }
    fn on_process_log_block(&self, b: Arc<LogBlock>) {
        self.memory.on_process_log_block(b.clone());
        self.recorder.on_process_log_block(b);
    }
    fn on_init_metrics_stream(&self, s: &MetricsStream) {
        self.memory.on_init_metrics_stream(s);
        self.recorder.on_init_metrics_stream(s);
    }
    fn on_process_metrics_block(&self, b: Arc<MetricsBlock>) {
        self.memory.on_process_metrics_block(b.clone());
        self.recorder.on_process_metrics_block(b);
    }
    fn on_init_thread_stream(&self, s: &ThreadStream) {
        self.memory.on_init_thread_stream(s);
        self.recorder.on_init_thread_stream(s);
    }
    fn on_process_thread_block(&self, b: Arc<ThreadBlock>) {
        self.memory.on_process_thread_block(b.clone());
        self.recorder.on_process_thread_block(b);
    }
    fn is_busy(&self) -> bool {
        false
    }
    fn on_init_image_stream(&self, s: &ImageStream) {
        self.recorder.on_init_image_stream(s);
    }
    fn on_process_image_block(&self, b: Arc<ImageBlock>) {
        self.recorder.on_process_image_block(b);
    }
}

/// Every row of a process, read through the lake.
fn lake_rows(t: &TestLake, rt: &tokio::runtime::Runtime, pid: Uuid) -> Vec<Row> {
    rt.block_on(decode_from_lake(&t.lake, pid))
}

fn without_block_ids(mut rows: Vec<Row>) -> Vec<Row> {
    for r in &mut rows {
        r.block_id.clear();
    }
    rows.sort();
    rows
}

fn count_streams_by_tag(
    t: &TestLake,
    rt: &tokio::runtime::Runtime,
    pid: Uuid,
) -> HashMap<String, i64> {
    rt.block_on(async {
        use sqlx::Row as _;
        let rows: Vec<(String, i64)> = match t.backend {
            Backend::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&t.db_url).await.unwrap();
                sqlx::query("SELECT json_each.value AS tag, count(*) AS n FROM streams, json_each(streams.tags) WHERE process_id = ? GROUP BY 1")
                    .bind(pid.to_string())
                    .fetch_all(&pool).await.unwrap()
                    .iter().map(|r| (r.get("tag"), r.get("n"))).collect()
            }
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&t.db_url).await.unwrap();
                sqlx::query("SELECT unnest(tags) AS tag, count(*) AS n FROM streams WHERE process_id = $1::uuid GROUP BY 1")
                    .bind(pid.to_string())
                    .fetch_all(&pool).await.unwrap()
                    .iter().map(|r| (r.get("tag"), r.get("n"))).collect()
            }
        };
        rows.into_iter().collect()
    })
}

#[test]
#[serial]
fn a_real_tokio_workload_recorded_into_each_lake_reads_back_whole() {
    for backend in BACKENDS {
        let rt = runtime();
        let t = rt.block_on(open(backend));
        let recorder = Arc::new(LakeRecorder::new(t.lake.clone()).unwrap());
        let memory = Arc::new(InMemorySink::new());
        let tee = Arc::new(Tee {
            recorder: recorder.clone(),
            memory: memory.clone(),
        });
        // Small thread buffers: many blocks per thread.
        micromegas_tracing::dispatch::init_event_dispatch(
            4096,
            4096,
            2048,
            tee,
            HashMap::new(),
            true,
        )
        .unwrap();
        let tops = 20;
        workload::run_workload(tops);
        micromegas_tracing::dispatch::flush_log_buffer();
        micromegas_tracing::dispatch::flush_metrics_buffer();
        micromegas_tracing::dispatch::shutdown_dispatch();
        // Shutdown waited for every write.
        let summary = recorder.summary();
        unsafe { micromegas_tracing::dispatch::force_uninit() };
        assert!(
            summary.errors.is_empty(),
            "{backend:?}: {:?}",
            summary.errors
        );

        let state = memory.state.lock().unwrap();
        let info = state.process_info.clone().unwrap();
        let pid = info.process_id;
        assert!(
            state.thread_blocks.len() > 5,
            "{} thread blocks",
            state.thread_blocks.len()
        );
        assert_eq!(
            summary.blocks as usize,
            state.thread_blocks.len() + state.log_blocks.len() + state.metrics_blocks.len()
        );
        // Micromegas's own encoding of the very same blocks.
        let reference = Recording {
            process: RawProcess::from(&*info),
            streams: state
                .thread_stream_descs
                .iter()
                .map(|d| thread_stream(d.process_id, d.stream_id, &d.properties))
                .collect(),
            blocks: state
                .thread_blocks
                .iter()
                .map(|b| encode_thread_block(b, &info))
                .collect(),
        };
        drop(state);

        let from_lake = lake_rows(&t, &rt, pid);
        assert_eq!(
            from_lake.len(),
            workload::emitted_events(tops),
            "{backend:?}: every async event the program emitted"
        );
        let mut reference_rows = rows(&reference.decode(ColumnSet::all(), &RowFilter::all()));
        // PostgreSQL keeps start_time to the microsecond: compare times to within 1 µs.
        for (a, b) in without_block_ids(from_lake.clone())
            .iter()
            .zip(without_block_ids(reference_rows.clone()))
        {
            assert!((a.time - b.time).abs() < 1000);
        }
        for r in reference_rows.iter_mut() {
            r.time = 0;
        }
        let mut from_lake_no_time = from_lake;
        for r in from_lake_no_time.iter_mut() {
            r.time = 0;
        }
        assert_eq!(
            without_block_ids(from_lake_no_time),
            without_block_ids(reference_rows),
            "{backend:?}"
        );

        let tags = count_streams_by_tag(&t, &rt, pid);
        assert_eq!(tags.get("log"), Some(&1), "{tags:?}");
        assert_eq!(tags.get("metrics"), Some(&1), "{tags:?}");
        assert_eq!(
            tags.get("cpu").copied(),
            Some(reference.streams.len() as i64),
            "{tags:?}"
        );
        let process = rt.block_on(t.lake.process(pid)).unwrap();
        assert_eq!(process.start_ticks, info.start_ticks);
        assert_eq!(process.exe, info.exe);
    }
}

#[test]
#[serial]
fn start_recording_records_until_finish() {
    let rt = runtime();
    let t = rt.block_on(open(Backend::Sqlite));
    let options = RecordingOptions {
        thread_buffer_size: 8192,
        ..RecordingOptions::default()
    };
    let recording = start_recording(t.lake.clone(), options).unwrap();
    let pid = recording.process_id();
    workload::run_workload(3);
    let summary = recording.finish();
    unsafe { micromegas_tracing::dispatch::force_uninit() };
    assert!(summary.errors.is_empty(), "{:?}", summary.errors);
    assert!(summary.blocks >= 2);
    assert_eq!(lake_rows(&t, &rt, pid).len(), workload::emitted_events(3));
}

static SPAN: SpanMetadata = SpanMetadata {
    name: "writer::work",
    location: SpanLocation {
        lod: micromegas_tracing::levels::Verbosity::Max,
        target: "writer",
        module_path: "writer",
        file: "src/writer.rs",
        line: 3,
    },
};

/// One recorder per simulated process, `threads` threads each sending `blocks` closed blocks of
/// `spans` complete spans through the sink interface, all at once.
fn write_concurrently(
    recorder: &LakeRecorder,
    info: &Arc<ProcessInfo>,
    threads: usize,
    blocks: usize,
    spans: u64,
) {
    std::thread::scope(|scope| {
        for thread in 0..threads {
            scope.spawn(move || {
                let mut stream = ThreadStream::new(
                    1 << 20,
                    info.process_id,
                    &["cpu".to_string()],
                    HashMap::new(),
                );
                recorder.on_init_thread_stream(&stream);
                for b in 0..blocks {
                    for i in 0..spans {
                        let span_id = ((thread * blocks + b) as u64) * spans + i + 1;
                        let time = micromegas_tracing::time::now();
                        stream.get_events_mut().push(BeginAsyncSpanEvent {
                            span_desc: &SPAN,
                            span_id,
                            parent_span_id: 0,
                            depth: 0,
                            time,
                        });
                        stream.get_events_mut().push(EndAsyncSpanEvent {
                            span_desc: &SPAN,
                            span_id,
                            parent_span_id: 0,
                            depth: 0,
                            time: time + 10,
                        });
                    }
                    let offset = (b as u64 * spans * 2) as usize;
                    let next = ThreadBlock::new(
                        1 << 20,
                        info.process_id,
                        stream.stream_id(),
                        offset + (spans * 2) as usize,
                    );
                    let mut block = stream.replace_block(Arc::new(next));
                    Arc::get_mut(&mut block).unwrap().close();
                    recorder.on_process_thread_block(block);
                }
            });
        }
    });
}

#[test]
fn two_recorders_and_many_threads_lose_nothing() {
    let (threads, blocks, spans) = (8, 6, 50u64);
    for backend in BACKENDS {
        let rt = runtime();
        let t = rt.block_on(open(backend));
        // A second handle on the same lake, as a second process would open it.
        let store_url = url::Url::from_directory_path(t.dir.path())
            .unwrap()
            .to_string();
        let other = rt
            .block_on(datafusion_async_events::Lake::open_with(
                &t.db_url,
                &store_url,
                datafusion_async_events::lake::LakeOptions::writable(),
            ))
            .unwrap();
        let recorders = [
            LakeRecorder::new(t.lake.clone()).unwrap(),
            LakeRecorder::new(other).unwrap(),
        ];
        let infos: Vec<Arc<ProcessInfo>> = (0..2)
            .map(|_| {
                Arc::new(micromegas_tracing::dispatch::make_process_info(
                    Uuid::new_v4(),
                    None,
                    HashMap::new(),
                ))
            })
            .collect();
        for (r, info) in recorders.iter().zip(&infos) {
            r.on_startup(info.clone());
        }
        std::thread::scope(|scope| {
            for (r, info) in recorders.iter().zip(&infos) {
                scope.spawn(move || write_concurrently(r, info, threads, blocks, spans));
            }
        });
        for r in &recorders {
            r.shutdown();
            let s = r.summary();
            assert!(s.errors.is_empty(), "{backend:?}: {:?}", s.errors);
            assert_eq!(
                (s.streams, s.blocks),
                (threads as u64, (threads * blocks) as u64)
            );
        }
        for info in &infos {
            let got = lake_rows(&t, &rt, info.process_id);
            assert_eq!(
                got.len() as u64,
                threads as u64 * blocks as u64 * spans * 2,
                "{backend:?}"
            );
            let mut ids: Vec<i64> = got
                .iter()
                .filter(|r| r.event_type == "begin")
                .map(|r| r.span_id)
                .collect();
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len() as u64, threads as u64 * blocks as u64 * spans);
            let summaries = rt.block_on(t.lake.processes(10)).unwrap();
            let s = summaries
                .iter()
                .find(|s| s.process.process_id == info.process_id)
                .unwrap();
            assert_eq!(
                (s.cpu_streams, s.cpu_blocks),
                (threads as i64, (threads * blocks) as i64)
            );
        }
    }
}
