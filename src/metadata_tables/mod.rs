//! The lake's metadata as tables: `processes`, `streams` and `blocks` with the column names and
//! types of micromegas's views of the same names (so queries written for micromegas, and the
//! Python client's `find_process`, `query_streams`, `query_blocks`, run unchanged), and
//! `thread_streams(pid)`, the threads behind the `stream_id` of events.
//!
//! | file | holds |
//! |---|---|
//! | `table.rs` | [`MetadataTable`]: the three tables, their filters and limits |
//! | `exec.rs` | `MetadataScanExec`: a listing read as a stream of batches |
//! | `batcher.rs` | `ListingBatcher`: rows into bounded batches, reserved in the memory pool |
//! | `schema.rs` | their schemas |
//! | `filters.rs` | the filters applied in the metadata query |
//! | `columns.rs` | Arrow columns of metadata rows |
//! | `thread_streams.rs` | [`ThreadStreamsTable`] |

mod batcher;
mod columns;
mod exec;
mod filters;
mod schema;
mod table;
mod thread_streams;

pub use table::MetadataTable;
pub use thread_streams::ThreadStreamsTable;

use crate::lake::Lake;
use crate::predicate_fixes::install_predicate_fixes;
use crate::properties::register_property_functions;
use datafusion::common::Result;
use datafusion::prelude::SessionContext;
use std::sync::Arc;

/// Registers the `processes`, `streams` and `blocks` tables of `lake` on a session, with the
/// property functions that read their JSONB `properties` (`property_get`, …) and the analyzer
/// rule that corrects two DataFusion 55.2 bugs, as `register` does.
pub fn register_metadata_tables(ctx: &SessionContext, lake: Lake) -> Result<()> {
    ctx.register_table(
        "processes",
        Arc::new(MetadataTable::processes(lake.clone())),
    )?;
    ctx.register_table("streams", Arc::new(MetadataTable::streams(lake.clone())))?;
    ctx.register_table("blocks", Arc::new(MetadataTable::blocks(lake)))?;
    register_property_functions(ctx);
    install_predicate_fixes(ctx);
    Ok(())
}
