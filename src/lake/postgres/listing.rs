//! Listings of the metadata tables (the `processes`, `streams` and `blocks` SQL tables), read as
//! row streams.

use super::{
    Named, PgMeta, block_row, get, opt_id, parse_id, properties_of, properties_sql,
    properties_sql_as, required,
};
use crate::error::Result;
use crate::lake::db_err;
use crate::lake::listing::{
    Bind, BlockJoins, BlockListing, BlockProcess, BlockStream, Conditions, Listing, MetadataFilter,
    ProcessListing, StreamListing,
};
use crate::lake::records::StreamRecord;
use futures::StreamExt;
use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgPool, PgRow};
use uuid::Uuid;

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

fn bind_all(mut query: PgQuery<'_>, binds: Vec<Bind>) -> PgQuery<'_> {
    for b in binds {
        query = match b {
            Bind::Ids(ids) => query.bind(ids.iter().map(Uuid::to_string).collect::<Vec<_>>()),
            Bind::Time(t) => query.bind(t),
        };
    }
    query
}

/// The rows of a listing query, each read by `read` (the error message is only built on failure).
fn listing<'a, T: Send + 'a>(
    query: PgQuery<'static>,
    pool: &'a PgPool,
    what: &'static str,
    read: impl Fn(&PgRow) -> Result<T> + Send + 'a,
) -> Listing<'a, T> {
    query
        .fetch(pool)
        .map(move |row| read(&row.map_err(|e| db_err(what)(e))?))
        .boxed()
}

/// A stream row whose properties are in the columns `keys` and `values`.
fn stream_row(row: &PgRow, keys: &str, values: &str) -> Result<StreamRecord> {
    let stream_id = parse_id(row, "stream_id")?;
    let what = Named("stream", stream_id);
    Ok(StreamRecord {
        stream_id,
        process_id: parse_id(row, "process_id")?,
        dependencies_metadata: required(row, "dependencies_metadata", &what)?,
        objects_metadata: required(row, "objects_metadata", &what)?,
        tags: get::<Option<Vec<String>>>(row, "tags")?.unwrap_or_default(),
        properties: properties_of(row, keys, values)?,
    })
}

impl PgMeta {
    fn listing_conditions(
        &self,
        filter: &MetadataFilter,
        process: &str,
        stream: Option<&str>,
        block: Option<&str>,
    ) -> Conditions {
        let id = self.id();
        filter.conditions(
            process,
            stream,
            block,
            &|column, n| format!("{column} = ANY(CAST(${n} AS {id}[]))"),
            &|n| format!("${n}"),
            1,
        )
    }

    /// The rows of `table` meeting `conds` (written over `alias`), as a `FROM` item named
    /// `alias`. Lakes without unique id indexes (before schema v3) may hold a row twice: it is
    /// read once, so that the database, not this process, remembers the ids seen.
    fn rows_of(&self, table: &str, alias: &str, id: &str, conds: &str) -> String {
        if self.schema.has_unique_ids {
            format!("(SELECT * FROM {table} {alias} WHERE true{conds}) {alias}")
        } else {
            format!(
                "(SELECT DISTINCT ON ({alias}.{id}) * FROM {table} {alias} WHERE true{conds} \
                 ORDER BY {alias}.{id}) {alias}"
            )
        }
    }

    fn format_sql(&self) -> &'static str {
        if self.schema.has_format {
            "s.format"
        } else {
            "'micromegas-transit'"
        }
    }

    pub fn list_processes(&self, filter: &MetadataFilter) -> Listing<'_, ProcessListing> {
        let c = self.listing_conditions(filter, "p.process_id", None, None);
        let sql = format!(
            "SELECT {process}, p.insert_time, a.last_update_time, a.last_end_ticks, a.last_end_time
             FROM {processes} CROSS JOIN LATERAL (
                SELECT max(b.insert_time) AS last_update_time, max(b.end_ticks) AS last_end_ticks,
                       max(b.end_time) AS last_end_time
                FROM streams s JOIN blocks b ON b.stream_id = s.stream_id
                WHERE s.process_id = p.process_id) a
             WHERE a.last_end_time IS NOT NULL
             ORDER BY p.start_time DESC{limit}",
            process = self.process_sql("p"),
            processes = self.rows_of("processes", "p", "process_id", &c.sql),
            limit = filter.limit_sql(),
        );
        let query = bind_all(sqlx::query(AssertSqlSafe(sql)), c.binds);
        listing(query, &self.pool, "listing processes", |row| {
            let process = Self::process_row(row)?;
            let what = Named("process", process.process_id);
            Ok(ProcessListing {
                insert_time: get(row, "insert_time")?,
                last_update_time: get(row, "last_update_time")?,
                last_block_end_ticks: required(row, "last_end_ticks", &what)?,
                last_block_end_time: required(row, "last_end_time", &what)?,
                process,
            })
        })
    }

    pub fn list_streams(&self, filter: &MetadataFilter) -> Listing<'_, StreamListing> {
        let c = self.listing_conditions(filter, "s.process_id", Some("s.stream_id"), None);
        let sql = format!(
            "SELECT s.stream_id::text AS stream_id, s.process_id::text AS process_id, \
             s.dependencies_metadata, s.objects_metadata, s.tags, {props}, s.insert_time, \
             {format} AS format, \
             (SELECT max(b.insert_time) FROM blocks b WHERE b.stream_id = s.stream_id) AS last_update_time
             FROM {streams} ORDER BY s.process_id, s.stream_id{limit}",
            props = properties_sql("s.properties"),
            format = self.format_sql(),
            streams = self.rows_of("streams", "s", "stream_id", &c.sql),
            limit = filter.limit_sql(),
        );
        let query = bind_all(sqlx::query(AssertSqlSafe(sql)), c.binds);
        listing(query, &self.pool, "listing streams", |row| {
            Ok(StreamListing {
                stream: stream_row(row, "property_keys", "property_values")?,
                insert_time: get(row, "insert_time")?,
                format: get::<Option<String>>(row, "format")?.unwrap_or_default(),
                last_update_time: get(row, "last_update_time")?,
            })
        })
    }

    /// Blocks left-joined with their stream and process rows (as `joins` asks): the block's
    /// own `stream_id` and `process_id` stand for the joined rows' ids, and `joined_*_id` tell
    /// whether a joined row was found.
    pub fn list_blocks(
        &self,
        filter: &MetadataFilter,
        joins: BlockJoins,
    ) -> Listing<'_, BlockListing> {
        let c = self.listing_conditions(
            filter,
            "b.process_id",
            Some("b.stream_id"),
            Some("b.block_id"),
        );
        let mut columns = String::from(
            "b.block_id::text AS block_id, b.stream_id::text AS stream_id, \
             b.process_id::text AS process_id, b.begin_time, b.begin_ticks, b.end_time, b.end_ticks, \
             b.nb_objects, b.object_offset, b.payload_size, b.insert_time",
        );
        let mut joined = String::new();
        if joins.streams {
            columns.push_str(&format!(
                ", s.stream_id::text AS joined_stream_id, s.dependencies_metadata, s.objects_metadata, \
                 s.tags, {props}, s.insert_time AS stream_insert_time, {format} AS format",
                props = properties_sql_as("s.properties", "stream_"),
                format = self.format_sql(),
            ));
            joined.push_str(&format!(
                " LEFT JOIN {} ON s.stream_id = b.stream_id",
                self.rows_of("streams", "s", "stream_id", "")
            ));
        }
        if joins.processes {
            columns.push_str(&format!(
                ", p.process_id::text AS joined_process_id, p.exe, p.username, p.realname, \
                 p.computer, p.distro, p.cpu_brand, p.tsc_frequency, p.start_time, p.start_ticks, \
                 p.parent_process_id::text AS parent_process_id, {props}, \
                 p.insert_time AS process_insert_time",
                props = properties_sql("p.properties"),
            ));
            joined.push_str(&format!(
                " LEFT JOIN {} ON p.process_id = b.process_id",
                self.rows_of("processes", "p", "process_id", "")
            ));
        }
        let sql = format!(
            "SELECT {columns} FROM {blocks}{joined} ORDER BY b.begin_time, b.block_id{limit}",
            blocks = self.rows_of("blocks", "b", "block_id", &c.sql),
            limit = filter.limit_sql(),
        );
        let query = bind_all(sqlx::query(AssertSqlSafe(sql)), c.binds);
        listing(query, &self.pool, "listing blocks", move |row| {
            let stream = if joins.streams && opt_id(row, "joined_stream_id")?.is_some() {
                Some(BlockStream {
                    stream: stream_row(row, "stream_property_keys", "stream_property_values")?,
                    insert_time: get(row, "stream_insert_time")?,
                    format: get::<Option<String>>(row, "format")?.unwrap_or_default(),
                })
            } else {
                None
            };
            let process = if joins.processes && opt_id(row, "joined_process_id")?.is_some() {
                Some(BlockProcess {
                    process: Self::process_row(row)?,
                    insert_time: get(row, "process_insert_time")?,
                })
            } else {
                None
            };
            Ok(BlockListing {
                block: block_row(row)?,
                insert_time: get(row, "insert_time")?,
                stream,
                process,
            })
        })
    }
}
