//! [`ListingBatcher`]: the rows of a metadata listing gathered into record batches of bounded
//! size, held within the query's memory pool.

use super::columns::{MetadataRow, record_batch};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::{Result, exec_err};
use datafusion::execution::memory_pool::MemoryReservation;

/// Strings and binaries a batch gathers before it is cut, whatever its row count: with
/// [`MAX_ROW_TEXT_BYTES`] more from its last row, a batch stays far below the 2 GiB that the
/// 32-bit offsets of Arrow's `Utf8` and `Binary` columns address.
pub(super) const BATCH_TEXT_BYTES: usize = 256 << 20;

/// Strings and binaries of one metadata row at most. PostgreSQL and SQLite cap a value at about
/// 1 GB; a row holding more (several such values) is an error, never an offset overflow.
pub(super) const MAX_ROW_TEXT_BYTES: usize = 1 << 30;

// A batch holds less than `BATCH_TEXT_BYTES + MAX_ROW_TEXT_BYTES` bytes of text.
const _: () = assert!(BATCH_TEXT_BYTES + MAX_ROW_TEXT_BYTES < i32::MAX as usize);

/// What the batches of a listing look like.
#[derive(Debug, Clone)]
pub(super) struct BatchShape {
    /// Their columns: a projection of the table's schema.
    pub schema: SchemaRef,
    /// The table, for messages.
    pub table: &'static str,
    /// Rows a batch holds at most (the session's `batch_size`).
    pub batch_size: usize,
    /// Strings and binaries a batch gathers before it is cut (at most [`BATCH_TEXT_BYTES`]).
    pub text_bytes: usize,
}

/// Gathers rows into batches of the [`BatchShape`]: at most `batch_size` rows, cut early once
/// their strings and binaries reach `text_bytes`. The rows gathered and the batch built from
/// them are reserved in the query's memory pool, so that a listing beyond the query's memory
/// limit fails with `ResourcesExhausted`; a batch's reservation is released when it is handed
/// on (operators that keep batches, such as sorts and joins, reserve them themselves).
#[derive(Debug)]
pub(super) struct ListingBatcher<R> {
    shape: BatchShape,
    rows: Vec<R>,
    text_bytes: usize,
    reservation: MemoryReservation,
}

impl<R: MetadataRow> ListingBatcher<R> {
    /// A batcher reserving its rows and batches in `reservation`.
    pub(super) fn new(shape: BatchShape, reservation: MemoryReservation) -> Self {
        Self {
            shape: BatchShape {
                batch_size: shape.batch_size.max(1),
                text_bytes: shape.text_bytes.min(BATCH_TEXT_BYTES),
                ..shape
            },
            rows: Vec::new(),
            text_bytes: 0,
            reservation,
        }
    }

    /// Adds a row; returns a batch when the rows gathered make one.
    pub(super) fn push(&mut self, row: R) -> Result<Option<RecordBatch>> {
        let text = row.text_bytes();
        if text > MAX_ROW_TEXT_BYTES {
            return exec_err!(
                "a row of the {} table holds {text} bytes of strings and binaries, more than the \
                 {MAX_ROW_TEXT_BYTES} a metadata row may hold",
                self.shape.table
            );
        }
        self.reservation.try_grow(std::mem::size_of::<R>() + text)?;
        self.rows.push(row);
        self.text_bytes += text;
        if self.rows.len() >= self.shape.batch_size || self.text_bytes >= self.shape.text_bytes {
            self.finish()
        } else {
            Ok(None)
        }
    }

    /// The batch of the rows gathered, if any.
    pub(super) fn finish(&mut self) -> Result<Option<RecordBatch>> {
        if self.rows.is_empty() {
            return Ok(None);
        }
        let batch = record_batch(&self.rows, &self.shape.schema)?;
        // The batch is built beside its rows: both are held until the rows are dropped.
        self.reservation.try_grow(batch.get_array_memory_size())?;
        self.rows.clear();
        self.text_bytes = 0;
        self.reservation.free();
        Ok(Some(batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::{BlockListing, BlockRecord, StreamListing, StreamRecord};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryConsumer, MemoryPool};
    use std::sync::Arc;
    use uuid::Uuid;

    fn stream(metadata_bytes: usize) -> StreamListing {
        StreamListing {
            stream: StreamRecord {
                stream_id: Uuid::new_v4(),
                process_id: Uuid::new_v4(),
                dependencies_metadata: vec![7; metadata_bytes],
                objects_metadata: Vec::new(),
                tags: vec!["cpu".into()],
                properties: Vec::new(),
            },
            insert_time: None,
            format: "micromegas-transit".into(),
            last_update_time: None,
        }
    }

    fn block() -> BlockListing {
        let t = chrono::DateTime::from_timestamp_nanos(0);
        BlockListing {
            block: BlockRecord {
                block_id: Uuid::new_v4(),
                stream_id: Uuid::new_v4(),
                process_id: Uuid::new_v4(),
                begin_time: t,
                begin_ticks: 0,
                end_time: t,
                end_ticks: 1,
                nb_objects: 1,
                object_offset: 0,
                payload_size: 10,
            },
            insert_time: None,
            stream: None,
            process: None,
        }
    }

    fn schema(name: &str, data_type: DataType) -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new(name, data_type, true)]))
    }

    fn reservation(pool: &Arc<dyn MemoryPool>) -> MemoryReservation {
        MemoryConsumer::new("test").register(pool)
    }

    fn batcher<R: MetadataRow>(
        schema: SchemaRef,
        batch_size: usize,
        text: usize,
        pool: &Arc<dyn MemoryPool>,
    ) -> ListingBatcher<R> {
        let shape = BatchShape {
            schema,
            table: "test",
            batch_size,
            text_bytes: text,
        };
        ListingBatcher::new(shape, reservation(pool))
    }

    /// Pushes every row, then finishes: the row counts of the batches.
    fn batch_rows<R: MetadataRow>(
        batcher: &mut ListingBatcher<R>,
        rows: impl IntoIterator<Item = R>,
    ) -> Vec<usize> {
        let mut out = Vec::new();
        for row in rows {
            out.extend(batcher.push(row).unwrap().map(|b| b.num_rows()));
        }
        out.extend(batcher.finish().unwrap().map(|b| b.num_rows()));
        out
    }

    #[test]
    fn batches_hold_at_most_batch_size_rows() {
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1 << 30));
        let mut b = batcher(schema("block_id", DataType::Utf8), 4, usize::MAX, &pool);
        assert_eq!(batch_rows(&mut b, (0..10).map(|_| block())), [4, 4, 2]);
        assert_eq!(pool.reserved(), 0, "every batch handed on is released");
    }

    #[test]
    fn a_batch_is_cut_when_its_text_grows_large() {
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1 << 30));
        let mut b = batcher(
            schema("dependencies_metadata", DataType::Binary),
            1000,
            2500,
            &pool,
        );
        // About 1 100 bytes a row (metadata, ids, tag, format): the third row reaches 2 500.
        assert_eq!(batch_rows(&mut b, (0..7).map(|_| stream(1000))), [3, 3, 1]);
    }

    #[test]
    fn rows_beyond_the_memory_limit_are_resources_exhausted() {
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(64 << 10));
        let mut b = batcher(
            schema("dependencies_metadata", DataType::Binary),
            1000,
            usize::MAX,
            &pool,
        );
        let err = (0..100)
            .map(|_| b.push(stream(1000)))
            .find_map(Result::err)
            .expect("100 KB of rows do not fit in 64 KiB");
        assert!(
            matches!(
                err.find_root(),
                datafusion::error::DataFusionError::ResourcesExhausted(_)
            ),
            "{err}"
        );
    }

    #[test]
    fn an_empty_projection_keeps_the_row_count() {
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1 << 30));
        let mut b = batcher(Arc::new(Schema::empty()), 8, usize::MAX, &pool);
        assert_eq!(batch_rows(&mut b, (0..3).map(|_| block())), [3]);
    }
}
