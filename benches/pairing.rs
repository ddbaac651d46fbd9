//! The pairing of `async_spans` with every span open at once, span ids from a counter against
//! ids shaped `k << 32` (whose low bits are all zero): the span-id map must hash every bit, or
//! the second shape makes pairing quadratic. Each run is one `SELECT count(*)` over a lake of
//! one block.
//!
//! `cargo bench --bench pairing --features recorder`

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use common::lakes::{Backend, TestLake, open, store};
use common::scripted::all_open;
use common::sql::{context, query};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use datafusion::prelude::SessionContext;

struct Case {
    _lake: TestLake,
    ctx: SessionContext,
    sql: String,
}

fn case(rt: &tokio::runtime::Runtime, ids: &[u64]) -> Case {
    rt.block_on(async {
        let rec = all_open(ids);
        let lake = open(Backend::Sqlite).await;
        store(&lake.lake, &rec).await;
        let ctx = context(&lake.lake);
        let sql = format!(
            "SELECT count(*) FROM async_spans('{}')",
            rec.process.process_id
        );
        // Every span paired.
        let n = query(&ctx, &sql).await;
        assert_eq!(
            datafusion::arrow::array::AsArray::as_primitive::<
                datafusion::arrow::datatypes::Int64Type,
            >(n[0].column(0))
            .value(0),
            ids.len() as i64
        );
        Case {
            _lake: lake,
            ctx,
            sql,
        }
    })
}

fn pairing(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut group = c.benchmark_group("pairing");
    group.sample_size(10);
    for n in [25_000u64, 100_000] {
        for (shape, ids) in [
            ("counter", (1..=n).collect::<Vec<u64>>()),
            ("k<<32", (1..=n).map(|k| k << 32).collect()),
        ] {
            let case = case(&rt, &ids);
            group.throughput(Throughput::Elements(n));
            group.bench_function(format!("{shape}/{n}"), |b| {
                b.iter(|| rt.block_on(query(&case.ctx, &case.sql)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, pairing);
criterion_main!(benches);
