//! Listings of the metadata tables (processes, streams, blocks) with id and time conditions
//! applied in the database, for the `processes`, `streams` and `blocks` SQL tables. A listing is
//! a stream of rows read as the database sends them, so that no listing is ever held whole.

use super::records::{BlockRecord, ProcessRecord, StreamRecord};
use crate::error::Result;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use uuid::Uuid;

/// The rows of a listing, in the order the database sends them.
pub type Listing<'a, T> = BoxStream<'a, Result<T>>;

/// A time column a listing can be filtered on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeColumn {
    /// `processes.start_time`.
    ProcessStart,
    /// `blocks.begin_time`.
    BlockBegin,
    /// `blocks.end_time`.
    BlockEnd,
}

impl TimeColumn {
    pub(crate) fn sql(self) -> &'static str {
        match self {
            TimeColumn::ProcessStart => "p.start_time",
            TimeColumn::BlockBegin => "b.begin_time",
            TimeColumn::BlockEnd => "b.end_time",
        }
    }
}

/// A comparison of a time column with a constant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// `<`
    Lt,
    /// `<=`
    LtEq,
    /// `=`
    Eq,
    /// `>=`
    GtEq,
    /// `>`
    Gt,
}

impl Comparison {
    pub(crate) fn sql(self) -> &'static str {
        match self {
            Comparison::Lt => "<",
            Comparison::LtEq => "<=",
            Comparison::Eq => "=",
            Comparison::GtEq => ">=",
            Comparison::Gt => ">",
        }
    }
}

/// `column op value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeCondition {
    /// The column.
    pub column: TimeColumn,
    /// The comparison.
    pub op: Comparison,
    /// The constant.
    pub value: DateTime<Utc>,
}

/// Which rows a metadata listing returns: every condition holds (an id list means "one of").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataFilter {
    /// Only these processes.
    pub process_ids: Option<Vec<Uuid>>,
    /// Only these streams.
    pub stream_ids: Option<Vec<Uuid>>,
    /// Only these blocks.
    pub block_ids: Option<Vec<Uuid>>,
    /// Time conditions.
    pub times: Vec<TimeCondition>,
    /// At most this many rows.
    pub limit: Option<usize>,
}

/// A process with the times of its blocks, as micromegas's `processes` view shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessListing {
    /// The process row.
    pub process: ProcessRecord,
    /// When the process row was written (absent in lakes that did not record it).
    pub insert_time: Option<DateTime<Utc>>,
    /// Latest `insert_time` of its blocks.
    pub last_update_time: Option<DateTime<Utc>>,
    /// Latest `end_ticks` of its blocks.
    pub last_block_end_ticks: i64,
    /// Latest `end_time` of its blocks.
    pub last_block_end_time: DateTime<Utc>,
}

/// A stream row with its insertion time and format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamListing {
    /// The stream row.
    pub stream: StreamRecord,
    /// When it was written.
    pub insert_time: Option<DateTime<Utc>>,
    /// `micromegas-transit` (older lakes have no format column).
    pub format: String,
    /// Latest `insert_time` of its blocks.
    pub last_update_time: Option<DateTime<Utc>>,
}

/// A block row with its insertion time, and the rows of its stream and process when the listing
/// joins them ([`BlockJoins`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockListing {
    /// The block row.
    pub block: BlockRecord,
    /// When it was written.
    pub insert_time: Option<DateTime<Utc>>,
    /// Its stream's row: `None` when streams are not joined, or when the lake has no row for
    /// the block's stream (an orphan block).
    pub stream: Option<BlockStream>,
    /// Its process's row: `None` when processes are not joined, or when the lake has no row
    /// for the block's process.
    pub process: Option<BlockProcess>,
}

/// The stream row of a block, as the `streams.*` columns of the `blocks` table show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockStream {
    /// The stream row.
    pub stream: StreamRecord,
    /// When it was written.
    pub insert_time: Option<DateTime<Utc>>,
    /// `micromegas-transit` (older lakes have no format column).
    pub format: String,
}

/// The process row of a block, as the `processes.*` columns of the `blocks` table show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockProcess {
    /// The process row.
    pub process: ProcessRecord,
    /// When it was written (absent in lakes that did not record it).
    pub insert_time: Option<DateTime<Utc>>,
}

/// Which rows a block listing reads beside each block: a left join, so that a block whose stream
/// or process row is missing is still listed. Joining costs a stream's metadata per block, so a
/// listing joins only what its reader uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockJoins {
    /// Read the block's stream row.
    pub streams: bool,
    /// Read the block's process row.
    pub processes: bool,
}

/// A bound value of a listing query, in the order of its placeholders.
#[derive(Debug, Clone)]
pub(crate) enum Bind {
    Ids(Vec<Uuid>),
    Time(DateTime<Utc>),
}

/// Conditions of a listing, rendered with a backend's placeholders.
pub(crate) struct Conditions {
    pub sql: String,
    pub binds: Vec<Bind>,
}

impl MetadataFilter {
    /// `AND …` conditions over the aliases `p` (processes), `s` (streams), `b` (blocks), for the
    /// columns the listing has. `ids_in(n)` renders "is one of placeholder n"; `placeholder(n)`
    /// a scalar placeholder.
    pub(crate) fn conditions(
        &self,
        process_column: &str,
        stream_column: Option<&str>,
        block_column: Option<&str>,
        ids_in: &dyn Fn(&str, usize) -> String,
        placeholder: &dyn Fn(usize) -> String,
        first: usize,
    ) -> Conditions {
        let mut sql = String::new();
        let mut binds = Vec::new();
        let mut n = first;
        let mut ids = |column: Option<&str>, list: &Option<Vec<Uuid>>, sql: &mut String| {
            if let (Some(column), Some(list)) = (column, list) {
                sql.push_str(&format!(" AND {}", ids_in(column, n)));
                binds.push(Bind::Ids(list.clone()));
                n += 1;
            }
        };
        ids(Some(process_column), &self.process_ids, &mut sql);
        ids(stream_column, &self.stream_ids, &mut sql);
        ids(block_column, &self.block_ids, &mut sql);
        for t in &self.times {
            sql.push_str(&format!(
                " AND {} {} {}",
                t.column.sql(),
                t.op.sql(),
                placeholder(n)
            ));
            binds.push(Bind::Time(t.value));
            n += 1;
        }
        Conditions { sql, binds }
    }

    /// Whether an id list is empty (then nothing matches).
    pub(crate) fn matches_nothing(&self) -> bool {
        [&self.process_ids, &self.stream_ids, &self.block_ids]
            .iter()
            .any(|l| l.as_ref().is_some_and(Vec::is_empty))
    }

    /// ` LIMIT n` or nothing.
    pub(crate) fn limit_sql(&self) -> String {
        self.limit
            .map(|n| format!(" LIMIT {n}"))
            .unwrap_or_default()
    }
}
