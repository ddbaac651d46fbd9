//! A program of plain threads calling nested synchronous `#[span_fn]` functions with
//! `span_scope!` (tagged with properties), named and dynamically named scopes, one thread whose
//! recording stops inside two scopes. Used by tests/thread_spans.rs and, through `#[path]`, by
//! compat/tests/thread_spans.rs (which compares with micromegas's own pairing).

use micromegas_tracing::prelude::*;

/// The module path the scopes of this file are named under.
pub const MODULE: &str = module_path!();

/// Scopes one `outer` call records: outer, middle, tagged, 3 × inner, named_scope, dyn_*.
pub const SCOPES_PER_CALL: usize = 8;

/// Threads the program runs.
pub const THREADS: u64 = 3;

#[span_fn]
fn inner(i: u64) -> u64 {
    let mut h = i;
    for _ in 0..200 {
        h = h.rotate_left(3) ^ 0x5bd1_e995;
    }
    std::hint::black_box(h)
}

#[span_fn]
fn middle(i: u64) -> u64 {
    let mut span = span_scope!(name = "tagged", parity = %(i % 2));
    span.set_property("call", i.to_string());
    inner(i) ^ inner(i + 1)
}

#[span_fn]
fn outer(i: u64) -> u64 {
    let a = middle(i);
    span_scope_named!("named_scope");
    {
        span_scope_named_dyn!(format!("dyn_{}", i % 3));
        a ^ inner(i)
    }
}

/// [`THREADS`] threads calling `outer` `calls` times; the last stays inside `left_open` and
/// `held` when its stream is unregistered (flushed): those two ends are never recorded.
pub fn program(calls: u64) {
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            std::thread::Builder::new()
                .name(format!("worker-{t}"))
                .spawn(move || {
                    micromegas_tracing::dispatch::init_thread_stream();
                    for i in 0..calls {
                        std::hint::black_box(outer(t * 1000 + i));
                    }
                    if t == THREADS - 1 {
                        span_scope!("left_open");
                        {
                            span_scope!("held");
                            micromegas_tracing::dispatch::unregister_thread_stream();
                        }
                    } else {
                        micromegas_tracing::dispatch::unregister_thread_stream();
                    }
                })
                .unwrap()
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
}
