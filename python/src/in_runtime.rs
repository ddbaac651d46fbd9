//! Wrappers that keep the crate's plans and scans right behind the FFI: [`InRuntime`] polls
//! `scan` inside the module runtime, [`Sealed`] hands a plan over as one leaf, [`Guarded`]
//! streams its batches.
//!
//! Every entry point the host calls through the FFI (`call_with_args`, `scan`,
//! `supports_filters_pushdown`, `execute`, a stream's poll, the metrics) runs under
//! `catch_unwind`: a panic there would cross an `extern "C"` function and abort Python, so it
//! becomes an error naming what panicked. Each wrapper checks that it is used in the process
//! that made it (see [`Home`]), and drops what it holds inside the module runtime: the host
//! releases plans and streams wherever it is, with no tokio runtime entered or with its own (a
//! query cancelled by Ctrl-C), and sqlx panics when a connection is dropped outside a runtime.

use crate::runtime::{DropInRuntime, Home, forget_payload, panic_message};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result as DfResult, Statistics, internal_err};
use datafusion::datasource::TableType;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::metrics::{MetricValue, MetricsSet};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, displayable,
};
use std::future::Future;
use std::mem::ManuallyDrop;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// The error of a panic caught in `what`.
fn panicked(what: &str, payload: Box<dyn std::any::Any + Send>) -> DataFusionError {
    let message = panic_message(payload.as_ref());
    forget_payload(payload);
    DataFusionError::Execution(format!(
        "datafusion_async_events: {what} failed with an internal error (a panic): {message}"
    ))
}

/// Runs `f`, a synchronous entry point called through the FFI, turning a panic into an error.
fn guarded<T>(what: &str, f: impl FnOnce() -> DfResult<T>) -> DfResult<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| Err(panicked(what, payload)))
}

/// Polls a future inside the module runtime (what the FFI does not do around `scan`), turns a
/// panic of a poll into an error, and drops the future inside the runtime when it is cancelled
/// (Ctrl-C in datafusion-python drops a query's planning wherever it is).
struct Entered<'h, F> {
    home: &'h Home,
    what: &'h str,
    future: ManuallyDrop<F>,
    done: bool,
}

impl<'h, F> Entered<'h, F> {
    fn new(home: &'h Home, what: &'h str, future: F) -> Self {
        Self {
            home,
            what,
            future: ManuallyDrop::new(future),
            done: false,
        }
    }
}

impl<T, F: Future<Output = DfResult<T>> + Unpin> Future for Entered<'_, F> {
    type Output = DfResult<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<DfResult<T>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(internal_err!("{} polled after it failed", this.what));
        }
        let _entered = this.home.enter();
        let future = &mut *this.future;
        match catch_unwind(AssertUnwindSafe(|| Pin::new(future).poll(cx))) {
            Ok(poll) => poll,
            Err(payload) => {
                this.done = true;
                Poll::Ready(Err(panicked(this.what, payload)))
            }
        }
    }
}

impl<F> Drop for Entered<'_, F> {
    fn drop(&mut self) {
        // SAFETY: `future` is taken once, here, and never used again.
        let future = unsafe { ManuallyDrop::take(&mut self.future) };
        self.home.drop_here(future);
    }
}

/// A table provider whose `scan` runs inside the module runtime (lake I/O needs it).
#[derive(Debug)]
pub(crate) struct InRuntime {
    inner: DropInRuntime<Arc<dyn TableProvider>>,
    /// What it is, for errors: `table AsyncEventsTable`, `the table function async_events`.
    what: String,
}

impl InRuntime {
    /// `inner` made in (and dropped inside the runtime of) `home`.
    pub(crate) fn new(inner: Arc<dyn TableProvider>, home: Home, what: String) -> Self {
        Self {
            inner: DropInRuntime::new(inner, home),
            what,
        }
    }
}

#[async_trait::async_trait]
impl TableProvider for InRuntime {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        guarded(&self.what, || self.inner.supports_filters_pushdown(filters))
    }

    fn statistics(&self) -> Option<Statistics> {
        catch_unwind(AssertUnwindSafe(|| self.inner.statistics())).unwrap_or_else(|payload| {
            forget_payload(payload);
            None
        })
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let home = self.inner.home();
        home.check(&self.what)?;
        // An async-trait method: the call only boxes the future, whose polls are guarded.
        let future = self.inner.scan(state, projection, filters, limit);
        let plan = Entered::new(home, &self.what, future).await?;
        Ok(Arc::new(Sealed {
            inner: DropInRuntime::new(plan, home.clone()),
            what: self.what.clone(),
        }))
    }
}

/// A scan's physical plan shown to the host as one leaf.
///
/// The FFI exposes a plan's children but not their requirements (required input distribution
/// and ordering), so the host's optimizer would rewrite the inside of our plans blindly: seen
/// with `async_spans`, whose pairing needs its input merged into one partition in time order,
/// and whose merge the host split again with a round-robin repartition. Sealed, the plan runs
/// exactly as the crate built it; the host optimizes what lies above it.
#[derive(Debug)]
pub(crate) struct Sealed {
    inner: DropInRuntime<Arc<dyn ExecutionPlan>>,
    what: String,
}

impl DisplayAs for Sealed {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}", displayable(self.inner.as_ref()).one_line())
    }
}

impl ExecutionPlan for Sealed {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.inner.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            return Ok(self);
        }
        internal_err!(
            "{} is a leaf for its host: it takes no children",
            self.name()
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let home = self.inner.home();
        home.check(&self.what)?;
        let stream = guarded(&self.what, || {
            let _entered = home.enter();
            self.inner.execute(partition, context)
        })?;
        Ok(Box::pin(Guarded {
            schema: stream.schema(),
            inner: DropInRuntime::new(stream, home.clone()),
            what: self.what.clone(),
            done: false,
        }))
    }

    /// The metrics of the whole plan, so that EXPLAIN ANALYZE in the host shows the scan's
    /// counters: every metric of the top operator, and the named counters, gauges and times of
    /// the operators below (`blocks_pruned`, `events_decoded`, …) whose names are not taken by
    /// an operator above. Baseline metrics (`output_rows`, `elapsed_compute`, …) stay the top's.
    fn metrics(&self) -> Option<MetricsSet> {
        catch_unwind(AssertUnwindSafe(|| self.all_metrics())).unwrap_or_else(|payload| {
            forget_payload(payload);
            None
        })
    }
}

impl Sealed {
    fn all_metrics(&self) -> Option<MetricsSet> {
        let mut set = MetricsSet::new();
        let mut taken = std::collections::HashSet::new();
        let mut level = vec![&*self.inner];
        let mut top = true;
        while !level.is_empty() {
            let mut names = Vec::new();
            for plan in &level {
                for metric in plan.metrics().iter().flat_map(|m| m.iter()) {
                    let named = matches!(
                        metric.value(),
                        MetricValue::Count { .. }
                            | MetricValue::Gauge { .. }
                            | MetricValue::Time { .. }
                    );
                    let name = metric.value().name();
                    if top || (named && !taken.contains(name)) {
                        names.push(name.to_string());
                        set.push(metric.clone());
                    }
                }
            }
            taken.extend(names);
            level = level.iter().flat_map(|p| p.children()).collect();
            top = false;
        }
        Some(set)
    }
}

/// The batches of a [`Sealed`] plan's partition: polled inside the module runtime with panics
/// turned into errors, and dropped inside the runtime (the host releases a stream wherever it
/// is: a query cancelled by Ctrl-C, a Python object garbage-collected).
struct Guarded {
    inner: DropInRuntime<SendableRecordBatchStream>,
    schema: SchemaRef,
    what: String,
    /// Ended by an error of ours (a panic, a fork): the inner stream is not polled again.
    done: bool,
}

impl futures_core::Stream for Guarded {
    type Item = DfResult<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        let home = this.inner.home().clone();
        if let Err(forked) = home.check(&this.what) {
            this.done = true;
            return Poll::Ready(Some(Err(forked.into())));
        }
        let _entered = home.enter();
        let stream = &mut *this.inner;
        match catch_unwind(AssertUnwindSafe(|| stream.as_mut().poll_next(cx))) {
            Ok(poll) => poll,
            Err(payload) => {
                this.done = true;
                Poll::Ready(Some(Err(panicked(&this.what, payload))))
            }
        }
    }
}

impl RecordBatchStream for Guarded {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

/// A table function whose tables scan inside the module runtime.
#[derive(Debug)]
pub(crate) struct InRuntimeFunction {
    inner: DropInRuntime<Arc<dyn TableFunctionImpl>>,
    name: &'static str,
}

impl InRuntimeFunction {
    /// The table function `name`, made in (and dropped inside the runtime of) `home`.
    pub(crate) fn new(inner: Arc<dyn TableFunctionImpl>, home: Home, name: &'static str) -> Self {
        Self {
            inner: DropInRuntime::new(inner, home),
            name,
        }
    }
}

impl TableFunctionImpl for InRuntimeFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let what = format!("the table function {}", self.name);
        let home = self.inner.home();
        home.check(&what)?;
        let inner = guarded(&what, || {
            let _entered = home.enter();
            self.inner.call_with_args(args)
        })?;
        Ok(Arc::new(InRuntime::new(inner, home.clone(), what)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::runtime;
    use datafusion::arrow::datatypes::Schema;
    use datafusion::prelude::SessionContext;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Spawns a task when dropped, as a sqlx pool connection does: a panic outside a runtime.
    struct SpawnsOnDrop(mpsc::Sender<()>);

    impl Drop for SpawnsOnDrop {
        fn drop(&mut self) {
            let done = self.0.clone();
            tokio::spawn(async move { done.send(()).unwrap() });
        }
    }

    /// A table whose pushdown panics, and whose scan panics or, holding a [`SpawnsOnDrop`],
    /// never ends.
    #[derive(Debug)]
    struct Faulty {
        dropped: Option<mpsc::Sender<()>>,
    }

    #[async_trait::async_trait]
    impl TableProvider for Faulty {
        fn schema(&self) -> SchemaRef {
            Arc::new(Schema::empty())
        }

        fn table_type(&self) -> TableType {
            TableType::Base
        }

        fn supports_filters_pushdown(
            &self,
            _filters: &[&Expr],
        ) -> DfResult<Vec<TableProviderFilterPushDown>> {
            panic!("boom in pushdown")
        }

        async fn scan(
            &self,
            _state: &dyn Session,
            _projection: Option<&Vec<usize>>,
            _filters: &[Expr],
            _limit: Option<usize>,
        ) -> DfResult<Arc<dyn ExecutionPlan>> {
            let Some(dropped) = &self.dropped else {
                panic!("boom in scan")
            };
            let _held = SpawnsOnDrop(dropped.clone());
            std::future::pending().await
        }
    }

    fn table(dropped: Option<mpsc::Sender<()>>) -> InRuntime {
        let home = Home::current().unwrap();
        InRuntime::new(Arc::new(Faulty { dropped }), home, "table faulty".into())
    }

    #[test]
    fn panics_of_scan_and_pushdown_are_errors() {
        let table = table(None);
        let state = SessionContext::new().state();
        let rt = runtime().unwrap();
        let error = rt
            .runtime
            .block_on(table.scan(&state, None, &[], None))
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("table faulty failed with an internal error (a panic): boom in scan"),
            "{error}"
        );
        let error = table.supports_filters_pushdown(&[]).unwrap_err();
        assert!(error.to_string().contains("boom in pushdown"), "{error}");
    }

    #[test]
    fn a_cancelled_scan_is_dropped_inside_the_runtime() {
        let (dropped, was_dropped) = mpsc::channel();
        let table = table(Some(dropped));
        let state = SessionContext::new().state();
        let mut scan = table.scan(&state, None, &[], None);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(scan.as_mut().poll(&mut cx).is_pending());
        // Dropped here, on a thread with no runtime: the task it spawns runs on ours.
        drop(scan);
        was_dropped.recv_timeout(Duration::from_secs(10)).unwrap();
    }

    #[test]
    fn a_panicking_stream_ends_with_an_error() {
        struct Panics;
        impl futures_core::Stream for Panics {
            type Item = DfResult<RecordBatch>;
            fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
                panic!("boom in poll")
            }
        }
        impl RecordBatchStream for Panics {
            fn schema(&self) -> SchemaRef {
                Arc::new(Schema::empty())
            }
        }
        let mut stream = Guarded {
            inner: DropInRuntime::new(Box::pin(Panics), Home::current().unwrap()),
            schema: Arc::new(Schema::empty()),
            what: "table faulty".into(),
            done: false,
        };
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut poll = || futures_core::Stream::poll_next(Pin::new(&mut stream), &mut cx);
        match poll() {
            Poll::Ready(Some(Err(e))) => assert!(e.to_string().contains("boom in poll"), "{e}"),
            other => panic!("expected the panic as an error, got {other:?}"),
        }
        assert!(matches!(poll(), Poll::Ready(None)));
    }
}
