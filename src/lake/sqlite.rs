//! The embedded lake's metadata: the same three tables in SQLite, created by a writable open
//! (a reading open is `mode=ro` and changes nothing, not even the journal mode).
//!
//! Types are adapted: ids are lower-case hyphenated TEXT, times are INTEGER nanoseconds since
//! the Unix epoch (UTC), tags and properties are JSON text. Blocks get composite indexes on
//! `(stream_id, begin_ticks)` and `(stream_id, end_ticks)` for the tick windows scans list, and
//! on the same bounds in time for the metadata tables.

use super::records::{
    BlockRecord, BlockWindow, BoundValue, ProcessRecord, ProcessSummary, StreamRecord,
};
use super::{LakeOptions, column_err, db_err};
use crate::error::{Error, Result};
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use std::str::FromStr;
use std::time::Duration;
use uuid::Uuid;

const CREATE: &str = "
CREATE TABLE IF NOT EXISTS processes(
    process_id TEXT NOT NULL PRIMARY KEY, exe TEXT, username TEXT, realname TEXT, computer TEXT,
    distro TEXT, cpu_brand TEXT, tsc_frequency INTEGER, start_time INTEGER NOT NULL,
    start_ticks INTEGER NOT NULL, insert_time INTEGER, parent_process_id TEXT,
    properties TEXT NOT NULL DEFAULT '[]');
CREATE INDEX IF NOT EXISTS process_start_time ON processes(start_time);
CREATE TABLE IF NOT EXISTS streams(
    stream_id TEXT NOT NULL PRIMARY KEY, process_id TEXT NOT NULL, dependencies_metadata BLOB NOT NULL,
    objects_metadata BLOB NOT NULL, tags TEXT NOT NULL DEFAULT '[]', properties TEXT NOT NULL DEFAULT '[]',
    insert_time INTEGER, format TEXT NOT NULL DEFAULT 'micromegas-transit');
CREATE INDEX IF NOT EXISTS stream_process_id ON streams(process_id);
CREATE TABLE IF NOT EXISTS blocks(
    block_id TEXT NOT NULL PRIMARY KEY, stream_id TEXT NOT NULL, process_id TEXT NOT NULL,
    begin_time INTEGER NOT NULL, begin_ticks INTEGER NOT NULL, end_time INTEGER NOT NULL,
    end_ticks INTEGER NOT NULL, nb_objects INTEGER NOT NULL, object_offset INTEGER NOT NULL,
    payload_size INTEGER NOT NULL, insert_time INTEGER);
CREATE INDEX IF NOT EXISTS block_stream_begin ON blocks(stream_id, begin_time);
CREATE INDEX IF NOT EXISTS block_stream_end ON blocks(stream_id, end_time);
CREATE INDEX IF NOT EXISTS block_stream_begin_ticks ON blocks(stream_id, begin_ticks);
CREATE INDEX IF NOT EXISTS block_stream_end_ticks ON blocks(stream_id, end_ticks);
";

#[derive(Debug, Clone)]
pub(crate) struct SqliteMeta {
    pool: SqlitePool,
    url: String,
}

fn ns(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(if t.timestamp() < 0 {
        i64::MIN
    } else {
        i64::MAX
    })
}

fn time(ns: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(ns)
}

fn get<'r, T>(row: &'r SqliteRow, column: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(column).map_err(column_err(column))
}

fn id(row: &SqliteRow, column: &str) -> Result<Uuid> {
    let text: String = get(row, column)?;
    Uuid::parse_str(&text).map_err(|e| Error::BadRow(format!("{column} {text:?}: {e}")))
}

fn json_properties(properties: &[(String, String)]) -> String {
    let pairs: Vec<[&str; 2]> = properties
        .iter()
        .map(|(k, v)| [k.as_str(), v.as_str()])
        .collect();
    serde_json::to_string(&pairs).unwrap_or_else(|_| "[]".into())
}

fn parse_properties(row: &SqliteRow, column: &str) -> Result<Vec<(String, String)>> {
    let text: String = get(row, column)?;
    let pairs: Vec<(String, String)> = serde_json::from_str(&text)
        .map_err(|e| Error::BadRow(format!("{column} is not a JSON list of pairs: {e}")))?;
    Ok(pairs)
}

/// A JSON array of the ids, bound as one parameter and read with `json_each`.
fn json_ids(ids: &[Uuid]) -> String {
    serde_json::to_string(&ids.iter().map(Uuid::to_string).collect::<Vec<_>>())
        .unwrap_or_else(|_| "[]".into())
}

const PROCESS_COLUMNS: &str = "p.process_id, p.exe, p.username, p.realname, p.computer, p.distro, \
    p.cpu_brand, p.tsc_frequency, p.start_time, p.start_ticks, p.parent_process_id, p.properties";

const CPU_STREAM: &str = "EXISTS (SELECT 1 FROM json_each(s.tags) WHERE json_each.value = 'cpu') \
    AND s.format = 'micromegas-transit'";

impl SqliteMeta {
    /// Opens the database at `url` (`sqlite:` URL): read-only, or, when `options.writable`,
    /// creating it and its tables if needed.
    pub async fn connect(url: &str, options: &LakeOptions) -> Result<Self> {
        let connect_options = SqliteConnectOptions::from_str(url)
            .map_err(|e| Error::Config(format!("SQLite URL {url}: {e}")))?
            .busy_timeout(Duration::from_secs(30));
        let connect_options = if options.writable {
            connect_options
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
        } else {
            connect_options.read_only(true)
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.connect_timeout.max(Duration::from_secs(30)))
            .connect_with(connect_options)
            .await
            .map_err(|e| Error::Unreachable {
                url: url.to_owned(),
                detail: e.to_string(),
            })?;
        if options.writable {
            sqlx::raw_sql(CREATE)
                .execute(&pool)
                .await
                .map_err(db_err("creating the telemetry tables"))?;
        } else {
            let tables: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('processes', 'streams', 'blocks')",
            )
            .fetch_one(&pool)
            .await
            .map_err(db_err("looking for the telemetry tables"))?;
            if tables < 3 {
                return Err(Error::NoLake(format!(
                    "in {url} (no processes, streams and blocks tables)"
                )));
            }
        }
        Ok(Self {
            pool,
            url: url.to_owned(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn process_row(row: &SqliteRow) -> Result<ProcessRecord> {
        let text =
            |c: &str| -> Result<String> { Ok(get::<Option<String>>(row, c)?.unwrap_or_default()) };
        let parent: Option<String> = get(row, "parent_process_id")?;
        Ok(ProcessRecord {
            process_id: id(row, "process_id")?,
            exe: text("exe")?,
            username: text("username")?,
            realname: text("realname")?,
            computer: text("computer")?,
            distro: text("distro")?,
            cpu_brand: text("cpu_brand")?,
            tsc_frequency: get::<Option<i64>>(row, "tsc_frequency")?.unwrap_or(0),
            start_time: time(get(row, "start_time")?),
            start_ticks: get(row, "start_ticks")?,
            parent_process_id: parent
                .filter(|p| !p.is_empty())
                .map(|p| {
                    Uuid::parse_str(&p)
                        .map_err(|e| Error::BadRow(format!("parent_process_id {p:?}: {e}")))
                })
                .transpose()?,
            properties: parse_properties(row, "properties")?,
        })
    }

    pub async fn process(&self, process_id: Uuid) -> Result<Option<ProcessRecord>> {
        let sql = format!("SELECT {PROCESS_COLUMNS} FROM processes p WHERE p.process_id = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(process_id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err(format!("reading process {process_id}")))?;
        row.as_ref().map(Self::process_row).transpose()
    }

    pub async fn processes(&self, limit: i64) -> Result<Vec<ProcessSummary>> {
        let sql = format!(
            "SELECT {PROCESS_COLUMNS},
                (SELECT count(*) FROM streams s WHERE s.process_id = p.process_id AND {CPU_STREAM}) AS streams,
                (SELECT count(*) FROM streams s JOIN blocks b ON b.stream_id = s.stream_id
                   WHERE s.process_id = p.process_id AND {CPU_STREAM}) AS blocks,
                (SELECT max(b.end_time) FROM streams s JOIN blocks b ON b.stream_id = s.stream_id
                   WHERE s.process_id = p.process_id AND {CPU_STREAM}) AS last_end
             FROM processes p
             WHERE EXISTS (SELECT 1 FROM streams s WHERE s.process_id = p.process_id AND {CPU_STREAM})
             ORDER BY p.start_time DESC LIMIT ?"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err("listing processes"))?;
        rows.iter()
            .map(|row| {
                Ok(ProcessSummary {
                    process: Self::process_row(row)?,
                    cpu_streams: get(row, "streams")?,
                    cpu_blocks: get(row, "blocks")?,
                    last_block_end: get::<Option<i64>>(row, "last_end")?.map(time),
                })
            })
            .collect()
    }

    pub async fn cpu_streams(
        &self,
        process_id: Uuid,
        only: Option<&[Uuid]>,
    ) -> Result<Vec<StreamRecord>> {
        let mut sql = format!(
            "SELECT s.stream_id, s.process_id, s.dependencies_metadata, s.objects_metadata, s.tags, s.properties
             FROM streams s WHERE s.process_id = ? AND {CPU_STREAM}"
        );
        if only.is_some() {
            sql.push_str(" AND s.stream_id IN (SELECT value FROM json_each(?))");
        }
        sql.push_str(" ORDER BY s.stream_id");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(process_id.to_string());
        if let Some(ids) = only {
            query = query.bind(json_ids(ids));
        }
        let rows = query.fetch_all(&self.pool).await.map_err(db_err(format!(
            "listing the cpu streams of process {process_id}"
        )))?;
        rows.iter()
            .map(|row| stream_row(row, "properties"))
            .collect()
    }

    pub async fn blocks(
        &self,
        process_id: Uuid,
        streams: &[Uuid],
        window: BlockWindow,
    ) -> Result<Vec<BlockRecord>> {
        let mut sql = String::from(
            "SELECT b.block_id, b.stream_id, b.process_id, b.begin_time, b.begin_ticks, b.end_time,
                b.end_ticks, b.nb_objects, b.object_offset, b.payload_size
             FROM streams s JOIN blocks b ON b.stream_id = s.stream_id
             WHERE s.process_id = ? AND b.stream_id IN (SELECT value FROM json_each(?))",
        );
        let conditions = window.conditions();
        for (column, op, _) in &conditions {
            sql.push_str(&format!(" AND b.{column} {op} ?"));
        }
        sql.push_str(" ORDER BY b.stream_id, b.begin_ticks, b.object_offset");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(process_id.to_string())
            .bind(json_ids(streams));
        for (_, _, value) in conditions {
            query = match value {
                BoundValue::Time(t) => query.bind(ns(t)),
                BoundValue::Ticks(t) => query.bind(t),
            };
        }
        let rows = query.fetch_all(&self.pool).await.map_err(db_err(format!(
            "listing the blocks of process {process_id}"
        )))?;
        rows.iter().map(block_row).collect()
    }

    pub async fn count_cpu_blocks(&self, process_id: Uuid) -> Result<i64> {
        let sql = format!(
            "SELECT count(*) AS n FROM streams s JOIN blocks b ON b.stream_id = s.stream_id
             WHERE s.process_id = ? AND {CPU_STREAM}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(process_id.to_string())
            .fetch_one(&self.pool)
            .await
            .map_err(db_err(format!(
                "counting the blocks of process {process_id}"
            )))?;
        get(&row, "n")
    }

    pub async fn latest_timing(&self, process_id: Uuid) -> Result<Option<(i64, DateTime<Utc>)>> {
        let row = sqlx::query(
            "SELECT max(b.end_ticks) AS end_ticks, max(b.end_time) AS end_time
             FROM streams s JOIN blocks b ON b.stream_id = s.stream_id WHERE s.process_id = ?",
        )
        .bind(process_id.to_string())
        .fetch_one(&self.pool)
        .await
        .map_err(db_err(format!(
            "reading the latest block of process {process_id}"
        )))?;
        let ticks: Option<i64> = get(&row, "end_ticks")?;
        let end: Option<i64> = get(&row, "end_time")?;
        Ok(ticks.zip(end.map(time)))
    }

    pub async fn insert_process(&self, p: &ProcessRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO processes (process_id, exe, username, realname, computer, distro, cpu_brand,
                tsc_frequency, start_time, start_ticks, insert_time, parent_process_id, properties)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (process_id) DO NOTHING",
        )
        .bind(p.process_id.to_string())
        .bind(&p.exe)
        .bind(&p.username)
        .bind(&p.realname)
        .bind(&p.computer)
        .bind(&p.distro)
        .bind(&p.cpu_brand)
        .bind(p.tsc_frequency)
        .bind(ns(p.start_time))
        .bind(p.start_ticks)
        .bind(ns(Utc::now()))
        .bind(p.parent_process_id.map(|u| u.to_string()))
        .bind(json_properties(&p.properties))
        .execute(&self.pool)
        .await
        .map_err(db_err(format!("inserting process {}", p.process_id)))?;
        Ok(())
    }

    pub async fn insert_stream(&self, s: &StreamRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO streams (stream_id, process_id, dependencies_metadata, objects_metadata, tags,
                properties, insert_time)
             VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (stream_id) DO NOTHING",
        )
        .bind(s.stream_id.to_string())
        .bind(s.process_id.to_string())
        .bind(&s.dependencies_metadata)
        .bind(&s.objects_metadata)
        .bind(serde_json::to_string(&s.tags).unwrap_or_else(|_| "[]".into()))
        .bind(json_properties(&s.properties))
        .bind(ns(Utc::now()))
        .execute(&self.pool)
        .await
        .map_err(db_err(format!("inserting stream {}", s.stream_id)))?;
        Ok(())
    }

    pub async fn insert_block(&self, b: &BlockRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO blocks (block_id, stream_id, process_id, begin_time, begin_ticks, end_time,
                end_ticks, nb_objects, object_offset, payload_size, insert_time)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (block_id) DO NOTHING",
        )
        .bind(b.block_id.to_string())
        .bind(b.stream_id.to_string())
        .bind(b.process_id.to_string())
        .bind(ns(b.begin_time))
        .bind(b.begin_ticks)
        .bind(ns(b.end_time))
        .bind(b.end_ticks)
        .bind(b.nb_objects)
        .bind(b.object_offset)
        .bind(b.payload_size)
        .bind(ns(Utc::now()))
        .execute(&self.pool)
        .await
        .map_err(db_err(format!("inserting block {}", b.block_id)))?;
        Ok(())
    }
}

// ---- Listings of the metadata tables (the `processes`, `streams` and `blocks` SQL tables).

use super::listing::{
    Bind, BlockJoins, BlockListing, BlockProcess, BlockStream, Conditions, Listing, MetadataFilter,
    ProcessListing, StreamListing,
};
use futures::StreamExt;

type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

fn bind_all(mut query: SqliteQuery<'_>, binds: Vec<Bind>) -> SqliteQuery<'_> {
    for b in binds {
        query = match b {
            Bind::Ids(ids) => query.bind(json_ids(&ids)),
            Bind::Time(t) => query.bind(ns(t)),
        };
    }
    query
}

fn sqlite_conditions(
    filter: &MetadataFilter,
    process: &str,
    stream: Option<&str>,
    block: Option<&str>,
) -> Conditions {
    filter.conditions(
        process,
        stream,
        block,
        &|column, _| format!("{column} IN (SELECT value FROM json_each(?))"),
        &|_| "?".to_owned(),
        1,
    )
}

fn opt_time(row: &SqliteRow, column: &str) -> Result<Option<DateTime<Utc>>> {
    Ok(get::<Option<i64>>(row, column)?.map(time))
}

/// The stream of a listing row: its `stream_id`, `process_id`, metadata and `tags` columns, and
/// its properties in `properties`.
fn stream_row(row: &SqliteRow, properties: &str) -> Result<StreamRecord> {
    let tags: String = get(row, "tags")?;
    Ok(StreamRecord {
        stream_id: id(row, "stream_id")?,
        process_id: id(row, "process_id")?,
        dependencies_metadata: get(row, "dependencies_metadata")?,
        objects_metadata: get(row, "objects_metadata")?,
        tags: serde_json::from_str(&tags)
            .map_err(|e| Error::BadRow(format!("tags are not a JSON list: {e}")))?,
        properties: parse_properties(row, properties)?,
    })
}

fn block_row(row: &SqliteRow) -> Result<BlockRecord> {
    Ok(BlockRecord {
        block_id: id(row, "block_id")?,
        stream_id: id(row, "stream_id")?,
        process_id: id(row, "process_id")?,
        begin_time: time(get(row, "begin_time")?),
        begin_ticks: get(row, "begin_ticks")?,
        end_time: time(get(row, "end_time")?),
        end_ticks: get(row, "end_ticks")?,
        nb_objects: get(row, "nb_objects")?,
        object_offset: get(row, "object_offset")?,
        payload_size: get(row, "payload_size")?,
    })
}

/// The rows of a listing query, each read by `read` (the error message is only built on failure).
fn listing<'a, T: Send + 'a>(
    query: SqliteQuery<'static>,
    pool: &'a SqlitePool,
    what: &'static str,
    read: impl Fn(&SqliteRow) -> Result<T> + Send + 'a,
) -> Listing<'a, T> {
    query
        .fetch(pool)
        .map(move |row| read(&row.map_err(|e| db_err(what)(e))?))
        .boxed()
}

impl SqliteMeta {
    pub fn list_processes(&self, filter: &MetadataFilter) -> Listing<'_, ProcessListing> {
        let c = sqlite_conditions(filter, "p.process_id", None, None);
        let of_process = "FROM streams s JOIN blocks b ON b.stream_id = s.stream_id \
                          WHERE s.process_id = p.process_id";
        let sql = format!(
            "SELECT * FROM (SELECT {PROCESS_COLUMNS}, p.insert_time,
                (SELECT max(b.insert_time) {of_process}) AS last_update_time,
                (SELECT max(b.end_ticks) {of_process}) AS last_end_ticks,
                (SELECT max(b.end_time) {of_process}) AS last_end_time
             FROM processes p WHERE 1 = 1{conds}) WHERE last_end_time IS NOT NULL
             ORDER BY start_time DESC{limit}",
            conds = c.sql,
            limit = filter.limit_sql(),
        );
        let query = bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)), c.binds);
        listing(query, &self.pool, "listing processes", |row| {
            Ok(ProcessListing {
                process: Self::process_row(row)?,
                insert_time: opt_time(row, "insert_time")?,
                last_update_time: opt_time(row, "last_update_time")?,
                last_block_end_ticks: get(row, "last_end_ticks")?,
                last_block_end_time: time(get(row, "last_end_time")?),
            })
        })
    }

    pub fn list_streams(&self, filter: &MetadataFilter) -> Listing<'_, StreamListing> {
        let c = sqlite_conditions(filter, "s.process_id", Some("s.stream_id"), None);
        let sql = format!(
            "SELECT s.stream_id, s.process_id, s.dependencies_metadata, s.objects_metadata, s.tags,
                s.properties, s.insert_time, s.format,
                (SELECT max(b.insert_time) FROM blocks b WHERE b.stream_id = s.stream_id) AS last_update_time
             FROM streams s WHERE 1 = 1{} ORDER BY s.process_id, s.stream_id{}",
            c.sql,
            filter.limit_sql()
        );
        let query = bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)), c.binds);
        listing(query, &self.pool, "listing streams", |row| {
            Ok(StreamListing {
                stream: stream_row(row, "properties")?,
                insert_time: opt_time(row, "insert_time")?,
                format: get(row, "format")?,
                last_update_time: opt_time(row, "last_update_time")?,
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
        let c = sqlite_conditions(
            filter,
            "b.process_id",
            Some("b.stream_id"),
            Some("b.block_id"),
        );
        let mut columns = String::from(
            "b.block_id, b.stream_id, b.process_id, b.begin_time, b.begin_ticks, b.end_time,
                b.end_ticks, b.nb_objects, b.object_offset, b.payload_size, b.insert_time",
        );
        let mut joined = String::new();
        if joins.streams {
            columns.push_str(
                ", s.stream_id AS joined_stream_id, s.dependencies_metadata, s.objects_metadata, s.tags,
                s.properties AS stream_properties, s.insert_time AS stream_insert_time, s.format",
            );
            joined.push_str(" LEFT JOIN streams s ON s.stream_id = b.stream_id");
        }
        if joins.processes {
            columns.push_str(
                ", p.process_id AS joined_process_id, p.exe, p.username, p.realname, p.computer,
                p.distro, p.cpu_brand, p.tsc_frequency, p.start_time, p.start_ticks,
                p.parent_process_id, p.properties, p.insert_time AS process_insert_time",
            );
            joined.push_str(" LEFT JOIN processes p ON p.process_id = b.process_id");
        }
        let sql = format!(
            "SELECT {columns} FROM blocks b{joined} WHERE 1 = 1{} ORDER BY b.begin_time, b.block_id{}",
            c.sql,
            filter.limit_sql()
        );
        let query = bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)), c.binds);
        listing(query, &self.pool, "listing blocks", move |row| {
            let stream =
                if joins.streams && get::<Option<String>>(row, "joined_stream_id")?.is_some() {
                    Some(BlockStream {
                        stream: stream_row(row, "stream_properties")?,
                        insert_time: opt_time(row, "stream_insert_time")?,
                        format: get(row, "format")?,
                    })
                } else {
                    None
                };
            let process =
                if joins.processes && get::<Option<String>>(row, "joined_process_id")?.is_some() {
                    Some(BlockProcess {
                        process: Self::process_row(row)?,
                        insert_time: opt_time(row, "process_insert_time")?,
                    })
                } else {
                    None
                };
            Ok(BlockListing {
                block: block_row(row)?,
                insert_time: opt_time(row, "insert_time")?,
                stream,
                process,
            })
        })
    }
}
