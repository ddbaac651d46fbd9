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
//! Layers, top to bottom: [`udtf`] (the table functions) → [`provider`] (the DataFusion table
//! and scan) → [`lake`] (metadata database and object store) and [`format`](mod@format) (block bytes to
//! Arrow rows). [`recorder`] writes instrumented programs into a lake.

#[cfg(feature = "ballista")]
pub mod ballista;
#[cfg(feature = "distributed")]
pub mod distributed;
mod error;
pub mod format;
pub mod lake;
pub mod lints;
pub mod provider;
#[cfg(feature = "recorder")]
pub mod recorder;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "timeline")]
pub mod timeline;
pub mod udtf;

pub use error::{Error, Result};
pub use lake::Lake;
pub use provider::register_metadata_tables;
pub use udtf::{register, register_with, table_functions};
