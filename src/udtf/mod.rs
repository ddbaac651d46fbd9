//! Every table function the crate serves, and [`register`].
//!
//! | function | file |
//! |---|---|
//! | `async_events(pid [, begin, end])`, `async_spans(pid [, begin, end])`, `view_instance(view_set, pid)`, `thread_streams(pid)` | `events.rs` |
//! | `perfetto_trace_chunks(pid, span_types [, begin, end])` (feature `timeline`) | `perfetto.rs` |
//! | the `table_functions` table, which lists them for clients that browse tables | `documentation.rs` |
//!
//! Arguments are checked when the query is planned, without I/O (`args.rs`); whether the
//! process exists is known when the scan is planned. The functions made by one
//! [`TableFunctions`] share its [`ScanCaches`]: compiled stream layouts, and the blocks the
//! scans of one query share (the two sides of a self-join).

mod args;
mod documentation;
mod events;
#[cfg(feature = "timeline")]
mod perfetto;

pub(crate) use args::constant;
pub use args::{BoundParameters, parse_process_id};
pub use documentation::{TABLE_FUNCTIONS_TABLE, table_functions_table};

use crate::lake::{Lake, LakeRegistry};
use crate::predicate_fixes::install_predicate_fixes;
use crate::properties::register_property_functions;
use crate::provider::{AsyncEventsTable, ScanCaches, ScanOptions};
use crate::spans::AsyncSpansTable;
use crate::thread_spans::{Flavor, ProcessSpansTable, SpanTypes, ThreadSpansOf, ThreadSpansTable};
use crate::time_bounds::TimeBounds;
use datafusion::catalog::TableFunctionImpl;
use datafusion::prelude::SessionContext;
use std::sync::Arc;
use uuid::Uuid;

/// The view set of async events in `view_instance` (micromegas's name for this view).
pub const VIEW_SET: &str = "async_events";

/// The view set of async spans in `view_instance`.
pub const SPANS_VIEW_SET: &str = "async_spans";

/// The view set of micromegas's thread spans: `view_instance('thread_spans', stream_id)`.
pub const THREAD_SPANS_VIEW_SET: &str = "thread_spans";

/// The view set of micromegas's `process_spans`: `view_instance('process_spans', process_id)`
/// (thread and async spans).
pub const PROCESS_SPANS_VIEW_SET: &str = "process_spans";

/// Registers `async_events(process_id [, begin, end])`, `async_spans(process_id [, begin,
/// end])` (one row per span, begin and end paired), `view_instance('async_events' |
/// 'async_spans', process_id)` and `thread_streams(process_id)` (the thread names behind
/// `stream_id`) on a session, the `table_functions` table that lists them, and the functions on
/// `properties` columns micromegas users know (`property_get`, `jsonb_get`, …: see
/// [`properties`](crate::properties)).
///
/// ```no_run
/// # async fn run() -> datafusion::common::Result<()> {
/// use datafusion::prelude::SessionContext;
/// use datafusion_async_events::{Lake, register};
/// let lake = Lake::from_env().await?;
/// let ctx = SessionContext::new();
/// register(&ctx, lake);
/// ctx.sql("SELECT name, count(*) FROM async_events('6f0e6b0c-5d3c-4e7a-9a57-0e9f1a2b3c4d') \
///          WHERE event_type = 'begin' GROUP BY name").await?.show().await?;
/// # Ok(()) }
/// ```
pub fn register(ctx: &SessionContext, lake: Lake) {
    register_with(ctx, lake, ScanOptions::default());
}

/// [`register`] with explicit scan options.
pub fn register_with(ctx: &SessionContext, lake: Lake, options: ScanOptions) {
    TableFunctions::new(lake, options).register(ctx);
}

/// The table functions [`register`] installs, by name, for hosts that register them
/// themselves (another engine, or datafusion-python through the FFI). The functions made by one
/// call share compiled stream layouts and per-query blocks, as registered ones do.
pub fn table_functions(
    lake: Lake,
    options: ScanOptions,
) -> Vec<(&'static str, Arc<dyn TableFunctionImpl>)> {
    TableFunctions::new(lake, options).functions()
}

/// The table functions over one lake with their options, and the [`ScanCaches`] their tables
/// share. Make one and keep it as long as the lake is served: every session it registers
/// (a server's per-request sessions, say) then compiles each stream's layout once.
#[derive(Debug, Clone)]
pub struct TableFunctions {
    lake: Lake,
    options: ScanOptions,
    caches: Arc<ScanCaches>,
}

impl TableFunctions {
    /// The functions over `lake`, with new caches.
    pub fn new(lake: Lake, options: ScanOptions) -> Self {
        Self {
            lake,
            options,
            caches: Arc::default(),
        }
    }

    /// The same functions, sharing the same caches, with every scan bounded by `range` (a
    /// Flight SQL request's `query_range_begin`/`query_range_end`).
    pub fn with_query_range(&self, range: TimeBounds) -> Self {
        Self {
            options: ScanOptions {
                query_range: range,
                ..self.options.clone()
            },
            ..self.clone()
        }
    }

    /// What the tables of these functions share.
    pub fn caches(&self) -> &Arc<ScanCaches> {
        &self.caches
    }

    /// The lake the functions read.
    pub fn lake(&self) -> &Lake {
        &self.lake
    }

    /// The functions, by name.
    pub fn functions(&self) -> Vec<(&'static str, Arc<dyn TableFunctionImpl>)> {
        let shared = Arc::new(self.clone());
        #[allow(unused_mut)] // without the timeline feature nothing more is pushed
        let mut functions = events::functions(&shared);
        #[cfg(feature = "timeline")]
        functions.extend(perfetto::functions(&shared));
        functions
    }

    /// Installs the functions on a session, and the `table_functions` table that lists them
    /// (their arguments, results and an example), with the analyzer rule that corrects two DataFusion
    /// 55.2 bugs ([`PredicateFixes`](crate::PredicateFixes)). The lake is also added to the process's
    /// [`LakeRegistry`] and, with the caches, installed as extensions of the session's config
    /// (unless it has them): a plan decoded in this process (see the `codec` feature) finds its
    /// lake there by URL and compiles its layouts in these caches.
    pub fn register(&self, ctx: &SessionContext) {
        let registry = LakeRegistry::global();
        registry.add(&self.lake);
        {
            let state = ctx.state_ref();
            let mut state = state.write();
            let config = state.config_mut();
            if config.get_extension::<LakeRegistry>().is_none() {
                config.set_extension(registry);
            }
            if config.get_extension::<ScanCaches>().is_none() {
                config.set_extension(self.caches.clone());
            }
        }
        let functions = self.functions();
        // The JSONB table functions come with the property functions, below.
        let jsonb = crate::properties::jsonb_row_functions();
        let names: Vec<&str> = (functions.iter().chain(&jsonb))
            .map(|(name, _)| *name)
            .collect();
        // Built from constants and checked by the tests: it cannot fail at run time.
        if let Ok(table) = table_functions_table(&names) {
            let _ = ctx.register_table(TABLE_FUNCTIONS_TABLE, table);
        }
        for (name, function) in functions {
            ctx.register_udtf(name, function);
        }
        register_property_functions(ctx);
        install_predicate_fixes(ctx);
    }

    /// The `async_events` table of a process.
    pub(crate) fn events_table(&self, process_id: Uuid, bounds: TimeBounds) -> AsyncEventsTable {
        AsyncEventsTable::with_caches(
            self.lake.clone(),
            process_id,
            bounds,
            self.options.clone(),
            self.caches.clone(),
        )
    }

    /// The `async_spans` table of a process.
    pub(crate) fn thread_spans_table(
        &self,
        of: ThreadSpansOf,
        bounds: TimeBounds,
        flavor: Flavor,
    ) -> ThreadSpansTable {
        ThreadSpansTable::new(
            self.lake.clone(),
            of,
            bounds,
            flavor,
            self.options.clone(),
            self.caches.clone(),
        )
    }

    pub(crate) fn process_spans(
        &self,
        process_id: Uuid,
        types: SpanTypes,
    ) -> datafusion::common::Result<Arc<dyn datafusion::catalog::TableProvider>> {
        Ok(Arc::new(ProcessSpansTable::new(
            self.thread_spans_table(
                ThreadSpansOf::Process(process_id),
                TimeBounds::ALL,
                Flavor::ProcessSpans,
            ),
            self.spans_table(process_id, TimeBounds::ALL),
            types,
        )))
    }

    pub(crate) fn spans_table(&self, process_id: Uuid, bounds: TimeBounds) -> AsyncSpansTable {
        AsyncSpansTable::with_caches(
            self.lake.clone(),
            process_id,
            bounds,
            self.options.clone(),
            self.caches.clone(),
        )
    }
}
