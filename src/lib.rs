//! Query the async span events recorded by micromegas-instrumented programs with SQL in
//! Apache DataFusion.
//!
//! ```no_run
//! # async fn run() -> datafusion::common::Result<()> {
//! use datafusion::prelude::SessionContext;
//! use datafusion_async_events::{Lake, register};
//!
//! let lake = Lake::from_env().await?; // micromegas's env variables, else the embedded ./lake
//! let ctx = SessionContext::new();
//! register(&ctx, lake);
//! ctx.sql("SELECT name, time, event_type, depth \
//!          FROM async_events('6f0e6b0c-5d3c-4e7a-9a57-0e9f1a2b3c4d') \
//!          WHERE time > now() - interval '5 minutes' ORDER BY time LIMIT 20")
//!     .await?
//!     .show()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! Layers, bottom to top (each imports only from the ones below it; `ARCHITECTURE.md` has the
//! map and the path of a query):
//!
//! - [`predicate_fixes`]: the analyzer rule that corrects two DataFusion 55.2 bugs;
//! - [`format`](mod@format): block bytes to Arrow rows, pure and synchronous;
//! - [`lake`]: the metadata database and the object store, and where a lake is;
//! - [`provider`]: the `async_events` table and its scan;
//! - [`spans`]: `async_spans`, the pairing of begin and end events;
//! - [`metadata_tables`]: `processes`, `streams`, `blocks`, `thread_streams`;
//! - `codec`, `distributed`, `ballista` (features): plans as bytes, distributed engines;
//! - `timeline` (feature): Perfetto traces and pictures;
//! - [`udtf`]: every table function and [`register`];
//! - `server` (feature): the Flight SQL server.
//!
//! [`recorder`] (feature) writes instrumented programs into a lake.

#[cfg(feature = "ballista")]
pub mod ballista;
#[cfg(feature = "codec")]
pub mod codec;
#[cfg(feature = "distributed")]
pub mod distributed;
mod error;
pub mod format;
pub mod lake;
pub mod lints;
pub mod metadata_tables;
pub mod predicate_fixes;
pub mod properties;
pub mod provider;
#[cfg(feature = "recorder")]
pub mod recorder;
#[cfg(feature = "server")]
pub mod server;
pub mod spans;
pub mod thread_spans;
mod time_bounds;
#[cfg(feature = "timeline")]
pub mod timeline;
pub mod udtf;

pub use error::{Error, Result};
pub use lake::Lake;
pub use metadata_tables::register_metadata_tables;
pub use predicate_fixes::{PredicateFixes, correct_sql, install_predicate_fixes};
pub use time_bounds::{TimeBounds, parse_time};
pub use udtf::{TableFunctions, register, register_with, table_functions};
