//! What a query may cost the server: its deadline, its share of the server's memory, and the
//! size of the arrays a function call may build from literal arguments.

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::scalar::ScalarValue;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tonic::metadata::MetadataMap;

/// The most elements (or bytes, for strings) one call of a function that builds an array or a
/// string of a requested size may produce when that size is a literal: `range`,
/// `generate_series`, `array_repeat`, `array_resize`, `repeat`, `lpad` and `rpad`. DataFusion
/// cannot account the memory of a scalar function's result before it is built, so calls over
/// this are refused at planning. 16 Mi elements are 128 MiB of `Int64`.
pub const MAX_LITERAL_ALLOCATION: u64 = 1 << 24;

/// Refuses, at planning, function calls whose literal arguments ask for an array or a string
/// larger than [`MAX_LITERAL_ALLOCATION`].
pub(crate) fn refuse_oversized_calls(plan: &LogicalPlan) -> Result<()> {
    plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let Expr::ScalarFunction(call) = e
                    && let Some(size) = requested_size(call.name(), &call.args)
                    && size > MAX_LITERAL_ALLOCATION as f64
                {
                    return Err(DataFusionError::ResourcesExhausted(format!(
                        "{e} would build about {size:.0} elements in one call; this server \
                         allows at most {MAX_LITERAL_ALLOCATION} per call of {}",
                        call.name()
                    )));
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })?;
    Ok(())
}

/// The elements a call asks for, when its size arguments are literals.
fn requested_size(function: &str, args: &[Expr]) -> Option<f64> {
    let number = |i: usize| args.get(i).and_then(literal_number);
    match function {
        "range" | "generate_series" => {
            let (start, stop) = match args.len() {
                1 => (0.0, number(0)?),
                _ => (number(0)?, number(1)?),
            };
            let step = if args.len() >= 3 { number(2)? } else { 1.0 };
            if step == 0.0 {
                return None;
            }
            Some(((stop - start) / step).max(0.0))
        }
        "array_repeat" | "list_repeat" | "array_resize" | "list_resize" | "lpad" | "rpad" => {
            number(1)
        }
        "repeat" => {
            let width = match args.first() {
                Some(Expr::Literal(ScalarValue::Utf8(Some(s)), _))
                | Some(Expr::Literal(ScalarValue::LargeUtf8(Some(s)), _))
                | Some(Expr::Literal(ScalarValue::Utf8View(Some(s)), _)) => s.len().max(1),
                _ => 1,
            };
            Some(number(1)? * width as f64)
        }
        _ => None,
    }
}

/// The value of a numeric literal, through casts and negation.
fn literal_number(expr: &Expr) -> Option<f64> {
    match expr {
        Expr::Literal(value, _) => {
            if value.is_null() || !value.data_type().is_numeric() {
                return None;
            }
            match value.cast_to(&datafusion::arrow::datatypes::DataType::Float64) {
                Ok(ScalarValue::Float64(Some(v))) => Some(v),
                _ => None,
            }
        }
        Expr::Cast(cast) => literal_number(&cast.expr),
        Expr::TryCast(cast) => literal_number(&cast.expr),
        Expr::Negative(inner) => literal_number(inner).map(|v| -v),
        _ => None,
    }
}

/// The deadline a client asks for in its `grpc-timeout` header (`<digits><unit>`, units `H`,
/// `M`, `S`, `m`, `u`, `n`), when it gives one.
pub(crate) fn client_deadline(metadata: &MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let unit = value.chars().last()?;
    let amount: u64 = value[..value.len() - unit.len_utf8()].parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(amount.saturating_mul(3600)),
        'M' => Duration::from_secs(amount.saturating_mul(60)),
        'S' => Duration::from_secs(amount),
        'm' => Duration::from_millis(amount),
        'u' => Duration::from_micros(amount),
        'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// One query's view of the server's memory pool: every reservation goes to the shared pool
/// (one bound for the whole server) and also counts against the query's own cap, so that no
/// query takes more than its share.
#[derive(Debug)]
pub(crate) struct QueryPool {
    shared: Arc<dyn MemoryPool>,
    cap: usize,
    used: AtomicUsize,
}

impl QueryPool {
    /// A query's pool: at most `cap` bytes of `shared`.
    pub(crate) fn new(shared: Arc<dyn MemoryPool>, cap: usize) -> Self {
        Self {
            shared,
            cap,
            used: AtomicUsize::new(0),
        }
    }
}

impl std::fmt::Display for QueryPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "query share: {} of {} bytes reserved, in {}",
            self.used.load(Ordering::Relaxed),
            self.cap,
            self.shared
        )
    }
}

impl MemoryPool for QueryPool {
    fn name(&self) -> &str {
        "query share of the server pool"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.shared.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.shared.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.shared.grow(reservation, additional);
        self.used.fetch_add(additional, Ordering::Relaxed);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.shared.shrink(reservation, shrink);
        self.used.fetch_sub(shrink, Ordering::Relaxed);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let wanted = used.saturating_add(additional);
            if wanted > self.cap {
                return Err(DataFusionError::ResourcesExhausted(format!(
                    "{} asked for {additional} more bytes, beyond this query's share of the \
                     server's memory ({} bytes, of which {used} in use; serve --query-memory-mb)",
                    reservation.consumer().name(),
                    self.cap
                )));
            }
            match self.used.compare_exchange_weak(
                used,
                wanted,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => used = now,
            }
        }
        if let Err(e) = self.shared.try_grow(reservation, additional) {
            self.used.fetch_sub(additional, Ordering::Relaxed);
            return Err(e);
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn memory_limit(&self) -> MemoryLimit {
        match self.shared.memory_limit() {
            MemoryLimit::Finite(shared) => MemoryLimit::Finite(shared.min(self.cap)),
            _ => MemoryLimit::Finite(self.cap),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::memory_pool::GreedyMemoryPool;
    use datafusion::prelude::SessionContext;

    async fn refused(sql: &str) -> Option<String> {
        let ctx = SessionContext::new();
        let plan = ctx.state().create_logical_plan(sql).await.expect(sql);
        refuse_oversized_calls(&plan).err().map(|e| e.to_string())
    }

    #[tokio::test]
    async fn literal_sizes_over_the_limit_are_refused() {
        for sql in [
            "SELECT cardinality(range(0, 3000000000))",
            "SELECT cardinality(range(3000000000))",
            "SELECT generate_series(-5, 100000000, 2)",
            "SELECT length(repeat('ab', 10000000))",
            "SELECT lpad('x', 100000000)",
            "SELECT array_repeat(1, CAST(20000000 AS BIGINT))",
            "SELECT * FROM (SELECT 1 AS a) WHERE a IN (SELECT cardinality(range(0, 1000000000)))",
        ] {
            let message = refused(sql).await;
            assert!(
                message
                    .as_deref()
                    .is_some_and(|m| m.contains("allows at most 16777216")),
                "{sql}: {message:?}"
            );
        }
        for sql in [
            "SELECT cardinality(range(0, 1000))",
            "SELECT cardinality(range(0, 3000000000, 1000))",
            "SELECT repeat('ab', 1000)",
            "SELECT count(*) FROM generate_series(1, 9223372036854775807)",
        ] {
            assert_eq!(refused(sql).await, None, "{sql}");
        }
    }

    #[test]
    fn client_deadlines_follow_the_grpc_header() {
        let mut metadata = MetadataMap::new();
        assert_eq!(client_deadline(&metadata), None);
        for (value, expected) in [
            ("500m", Duration::from_millis(500)),
            ("2S", Duration::from_secs(2)),
            ("1H", Duration::from_secs(3600)),
        ] {
            metadata.insert("grpc-timeout", value.parse().unwrap());
            assert_eq!(client_deadline(&metadata), Some(expected), "{value}");
        }
        metadata.insert("grpc-timeout", "soon".parse().unwrap());
        assert_eq!(client_deadline(&metadata), None);
    }

    #[test]
    fn a_query_share_bounds_the_query_and_the_shared_pool_bounds_all() {
        let shared: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1000));
        let first: Arc<dyn MemoryPool> = Arc::new(QueryPool::new(shared.clone(), 600));
        let second: Arc<dyn MemoryPool> = Arc::new(QueryPool::new(shared.clone(), 600));
        let a = MemoryConsumer::new("a").register(&first);
        a.try_grow(500).unwrap();
        let share = a.try_grow(200).unwrap_err().to_string();
        assert!(share.contains("this query's share"), "{share}");
        let b = MemoryConsumer::new("b").register(&second);
        b.try_grow(400).unwrap();
        assert!(b.try_grow(200).is_err(), "the shared pool holds 1000 bytes");
        assert_eq!((first.reserved(), second.reserved()), (500, 400));
        drop(a);
        assert_eq!((first.reserved(), shared.reserved()), (0, 400));
        b.try_grow(200).unwrap();
    }
}
