//! A micromegas lake's PostgreSQL metadata, as micromegas's ingestion service lays it out.
//!
//! Every schema a published release writes is read: the columns this crate needs are the same
//! in all of them, but `streams.format` exists only from schema v4 (before, every stream is
//! micromegas-transit), `audience` columns only from v8, and early lakes hold ids as
//! `VARCHAR(36)` instead of `UUID`. The shape is detected from `information_schema`, never
//! assumed; ids are bound as text and cast to the column's type. A reading open never writes:
//! a database without the telemetry tables is an error naming it and its schema. Only a
//! writable open (the recorder's) creates them in an empty database (at schema v4, so that
//! micromegas's own ingestion can carry on with its later migrations); an existing schema is
//! never altered.

use super::records::{
    BlockRecord, BlockWindow, BoundValue, ProcessRecord, ProcessSummary, StreamRecord,
};
use super::{LakeOptions, column_err, db_err, redact};
use crate::error::{Error, Result};
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Row};
use std::collections::HashSet;
use std::str::FromStr;
use uuid::Uuid;

mod listing;
mod schema;
mod writes;

pub use schema::PgSchema;

use schema::{create_tables, detect};

#[derive(Debug, Clone)]
pub(crate) struct PgMeta {
    pool: PgPool,
    schema: PgSchema,
    url: String,
}

/// `properties` as two parallel text arrays (keys, values), in stored order.
fn properties_sql(column: &str) -> String {
    properties_sql_as(column, "")
}

/// [`properties_sql`] named `{prefix}property_keys` and `{prefix}property_values`, for a row
/// holding the properties of two tables.
fn properties_sql_as(column: &str, prefix: &str) -> String {
    format!(
        "COALESCE((SELECT array_agg(p.key ORDER BY p.ord) FROM unnest({column}) WITH ORDINALITY AS p(key, value, ord)), '{{}}') AS {prefix}property_keys, \
         COALESCE((SELECT array_agg(p.value ORDER BY p.ord) FROM unnest({column}) WITH ORDINALITY AS p(key, value, ord)), '{{}}') AS {prefix}property_values"
    )
}

fn parse_id(row: &PgRow, column: &str) -> Result<Uuid> {
    let text: Option<String> = row.try_get(column).map_err(column_err(column))?;
    let text = text.ok_or_else(|| Error::BadRow(format!("{column} is NULL")))?;
    Uuid::parse_str(&text).map_err(|e| Error::BadRow(format!("{column} {text:?}: {e}")))
}

fn opt_id(row: &PgRow, column: &str) -> Result<Option<Uuid>> {
    let text: Option<String> = row.try_get(column).map_err(column_err(column))?;
    match text.as_deref() {
        None | Some("") => Ok(None),
        Some(t) => Uuid::parse_str(t)
            .map(Some)
            .map_err(|e| Error::BadRow(format!("{column} {t:?}: {e}"))),
    }
}

fn get<'r, T>(row: &'r PgRow, column: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(column).map_err(column_err(column))
}

/// "process <id>", "block <id>": formatted only if a row turns out bad.
struct Named(&'static str, Uuid);

impl std::fmt::Display for Named {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.0, self.1)
    }
}

fn required<'r, T>(row: &'r PgRow, column: &str, what: &dyn std::fmt::Display) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    get::<Option<T>>(row, column)?.ok_or_else(|| Error::BadRow(format!("{what}: {column} is NULL")))
}

fn properties(row: &PgRow) -> Result<Vec<(String, String)>> {
    properties_of(row, "property_keys", "property_values")
}

/// The properties selected by [`properties_sql_as`].
fn properties_of(row: &PgRow, keys: &str, values: &str) -> Result<Vec<(String, String)>> {
    let keys: Vec<Option<String>> = get(row, keys)?;
    let values: Vec<Option<String>> = get(row, values)?;
    Ok(keys
        .into_iter()
        .zip(values)
        .map(|(k, v)| (k.unwrap_or_default(), v.unwrap_or_default()))
        .collect())
}

impl PgMeta {
    /// Connects, within `options.connect_timeout`, and reads (or creates) the schema.
    pub async fn connect(url: &str, options: &LakeOptions) -> Result<Self> {
        let redacted = redact(url);
        let connect_options = PgConnectOptions::from_str(url)
            .map_err(|e| Error::Config(format!("PostgreSQL URL {redacted}: {e}")))?;
        let unreachable = |detail: String| Error::Unreachable {
            url: redacted.clone(),
            detail,
        };
        // One direct connection first: a refused connection fails at once (a pool would retry
        // until its timeout), an address that never answers fails after `connect_timeout`.
        let first = <sqlx::PgConnection as sqlx::Connection>::connect_with(&connect_options);
        let mut conn = match tokio::time::timeout(options.connect_timeout, first).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Err(_) => {
                return Err(unreachable(format!(
                    "no answer within {:?}",
                    options.connect_timeout
                )));
            }
        };
        let schema = match detect(&mut conn).await? {
            Some(schema) => schema,
            None if !options.writable => {
                let (database, schema): (String, Option<String>) =
                    sqlx::query_as("SELECT current_database(), current_schema()")
                        .fetch_one(&mut conn)
                        .await
                        .map_err(db_err("naming the database"))?;
                let schema = schema.unwrap_or_else(|| "(none)".into());
                return Err(Error::NoLake(format!(
                    "in PostgreSQL database {database:?}, schema {schema:?} of {redacted} (no processes, streams and blocks tables)"
                )));
            }
            None => {
                let created = create_tables(&mut conn).await;
                // Another writer may have created them at the same time: what counts is that
                // they exist now.
                match (detect(&mut conn).await?, created) {
                    (Some(schema), _) => schema,
                    (None, Err(e)) => return Err(e),
                    (None, Ok(())) => {
                        return Err(Error::Schema(
                            "the telemetry tables could not be created".into(),
                        ));
                    }
                }
            }
        };
        let _ = sqlx::Connection::close(conn).await;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.connect_timeout)
            .connect_lazy_with(connect_options);
        Ok(Self {
            pool,
            schema,
            url: redacted,
        })
    }

    /// The same database through a new pool, for use on another tokio runtime.
    pub fn rebind(&self) -> Self {
        let options = self.pool.connect_options().as_ref().clone();
        let pool_options = self.pool.options().clone();
        Self {
            pool: pool_options.connect_lazy_with(options),
            schema: self.schema.clone(),
            url: self.url.clone(),
        }
    }

    pub fn schema(&self) -> &PgSchema {
        &self.schema
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn id(&self) -> &'static str {
        self.schema.id_type
    }

    fn transit_filter(&self, alias: &str) -> String {
        if self.schema.has_format {
            format!(" AND {alias}.format = 'micromegas-transit'")
        } else {
            String::new()
        }
    }

    fn process_sql(&self, alias: &str) -> String {
        format!(
            "{a}.process_id::text AS process_id, {a}.exe, {a}.username, {a}.realname, {a}.computer, \
             {a}.distro, {a}.cpu_brand, {a}.tsc_frequency, {a}.start_time, {a}.start_ticks, \
             {a}.parent_process_id::text AS parent_process_id, {props}",
            a = alias,
            props = properties_sql(&format!("{alias}.properties"))
        )
    }

    fn process_row(row: &PgRow) -> Result<ProcessRecord> {
        let process_id = parse_id(row, "process_id")?;
        let what = Named("process", process_id);
        let text =
            |c: &str| -> Result<String> { Ok(get::<Option<String>>(row, c)?.unwrap_or_default()) };
        Ok(ProcessRecord {
            process_id,
            exe: text("exe")?,
            username: text("username")?,
            realname: text("realname")?,
            computer: text("computer")?,
            distro: text("distro")?,
            cpu_brand: text("cpu_brand")?,
            tsc_frequency: get::<Option<i64>>(row, "tsc_frequency")?.unwrap_or(0),
            start_time: required(row, "start_time", &what)?,
            start_ticks: required(row, "start_ticks", &what)?,
            parent_process_id: opt_id(row, "parent_process_id")?,
            properties: properties(row)?,
        })
    }

    pub async fn process(&self, process_id: Uuid) -> Result<Option<ProcessRecord>> {
        let sql = format!(
            "SELECT {} FROM processes p WHERE p.process_id = CAST($1 AS {}) LIMIT 1",
            self.process_sql("p"),
            self.id()
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(process_id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err(format!("reading process {process_id}")))?;
        row.as_ref().map(Self::process_row).transpose()
    }

    pub async fn processes(&self, limit: i64) -> Result<Vec<ProcessSummary>> {
        let sql = format!(
            "SELECT {process}, c.streams, c.blocks, c.last_end
             FROM (SELECT * FROM processes p0 WHERE EXISTS (
                      SELECT 1 FROM streams s0 WHERE s0.process_id = p0.process_id AND 'cpu' = ANY(s0.tags){f0})
                   ORDER BY p0.start_time DESC LIMIT $1) p
             CROSS JOIN LATERAL (
                SELECT count(DISTINCT s.stream_id) AS streams, count(b.block_id) AS blocks, max(b.end_time) AS last_end
                FROM streams s LEFT JOIN blocks b ON b.stream_id = s.stream_id
                WHERE s.process_id = p.process_id AND 'cpu' = ANY(s.tags){f}) c
             ORDER BY p.start_time DESC",
            process = self.process_sql("p"),
            f0 = self.transit_filter("s0"),
            f = self.transit_filter("s"),
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
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
                    last_block_end: get(row, "last_end")?,
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
            "SELECT s.stream_id::text AS stream_id, s.process_id::text AS process_id, \
             s.dependencies_metadata, s.objects_metadata, s.tags, {props}
             FROM streams s WHERE s.process_id = CAST($1 AS {id}) AND 'cpu' = ANY(s.tags){f}",
            props = properties_sql("s.properties"),
            id = self.id(),
            f = self.transit_filter("s"),
        );
        if only.is_some() {
            sql.push_str(&format!(
                " AND s.stream_id = ANY(CAST($2 AS {}[]))",
                self.id()
            ));
        }
        sql.push_str(" ORDER BY s.stream_id");
        let mut query = sqlx::query(AssertSqlSafe(sql)).bind(process_id.to_string());
        if let Some(ids) = only {
            query = query.bind(ids.iter().map(Uuid::to_string).collect::<Vec<_>>());
        }
        let rows = query.fetch_all(&self.pool).await.map_err(db_err(format!(
            "listing the cpu streams of process {process_id}"
        )))?;
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let stream_id = parse_id(row, "stream_id")?;
            if !seen.insert(stream_id) {
                continue;
            }
            let what = format!("stream {stream_id}");
            out.push(StreamRecord {
                stream_id,
                process_id: parse_id(row, "process_id")?,
                dependencies_metadata: required(row, "dependencies_metadata", &what)?,
                objects_metadata: required(row, "objects_metadata", &what)?,
                tags: get::<Option<Vec<String>>>(row, "tags")?.unwrap_or_default(),
                properties: properties(row)?,
            });
        }
        Ok(out)
    }

    pub async fn blocks(
        &self,
        process_id: Uuid,
        streams: &[Uuid],
        window: BlockWindow,
    ) -> Result<Vec<BlockRecord>> {
        let id = self.id();
        let mut sql = String::from(
            "SELECT b.block_id::text AS block_id, b.stream_id::text AS stream_id, \
             b.process_id::text AS process_id, b.begin_time, b.begin_ticks, b.end_time, b.end_ticks, \
             b.nb_objects, b.object_offset, b.payload_size
             FROM streams s JOIN blocks b ON b.stream_id = s.stream_id",
        );
        if self.schema.has_audience {
            sql.push_str(" JOIN processes p ON p.process_id = s.process_id");
        }
        sql.push_str(&format!(
            " WHERE s.process_id = CAST($1 AS {id}) AND b.stream_id = ANY(CAST($2 AS {id}[]))"
        ));
        let conditions = window.conditions();
        for (n, (column, op, _)) in conditions.iter().enumerate() {
            sql.push_str(&format!(" AND b.{column} {op} ${}", n + 3));
        }
        if self.schema.has_audience {
            // micromegas 0.33's blocks view hides a block stamped for another audience than
            // its stream's or its process's.
            sql.push_str(
                " AND NOT (b.audience IS NOT NULL AND s.audience IS NOT NULL AND b.audience <> s.audience) \
                 AND NOT (b.audience IS NOT NULL AND p.audience IS NOT NULL AND b.audience <> p.audience)",
            );
        }
        sql.push_str(" ORDER BY b.stream_id, b.begin_ticks, b.object_offset");
        let mut query = sqlx::query(AssertSqlSafe(sql))
            .bind(process_id.to_string())
            .bind(streams.iter().map(Uuid::to_string).collect::<Vec<_>>());
        for (_, _, value) in conditions {
            query = match value {
                BoundValue::Time(t) => query.bind(t),
                BoundValue::Ticks(t) => query.bind(t),
            };
        }
        let rows = query.fetch_all(&self.pool).await.map_err(db_err(format!(
            "listing the blocks of process {process_id}"
        )))?;
        let mut seen = HashSet::with_capacity(rows.len());
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let block = block_row(row)?;
            if seen.insert(block.block_id) {
                out.push(block);
            }
        }
        Ok(out)
    }

    pub async fn count_cpu_blocks(&self, process_id: Uuid) -> Result<i64> {
        let sql = format!(
            "SELECT count(*) AS n FROM streams s JOIN blocks b ON b.stream_id = s.stream_id
             WHERE s.process_id = CAST($1 AS {}) AND 'cpu' = ANY(s.tags){}",
            self.id(),
            self.transit_filter("s")
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(process_id.to_string())
            .fetch_one(&self.pool)
            .await
            .map_err(db_err(format!(
                "counting the blocks of process {process_id}"
            )))?;
        get(&row, "n")
    }

    pub async fn latest_timing(&self, process_id: Uuid) -> Result<Option<(i64, DateTime<Utc>)>> {
        let sql = format!(
            "SELECT max(b.end_ticks) AS end_ticks, max(b.end_time) AS end_time
             FROM streams s JOIN blocks b ON b.stream_id = s.stream_id
             WHERE s.process_id = CAST($1 AS {})",
            self.id()
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(process_id.to_string())
            .fetch_one(&self.pool)
            .await
            .map_err(db_err(format!(
                "reading the latest block of process {process_id}"
            )))?;
        let ticks: Option<i64> = get(&row, "end_ticks")?;
        let time: Option<DateTime<Utc>> = get(&row, "end_time")?;
        Ok(ticks.zip(time))
    }
}

fn block_row(row: &PgRow) -> Result<BlockRecord> {
    let block_id = parse_id(row, "block_id")?;
    let what = Named("block", block_id);
    Ok(BlockRecord {
        block_id,
        stream_id: parse_id(row, "stream_id")?,
        process_id: parse_id(row, "process_id")?,
        begin_time: required(row, "begin_time", &what)?,
        begin_ticks: required(row, "begin_ticks", &what)?,
        end_time: required(row, "end_time", &what)?,
        end_ticks: required(row, "end_ticks", &what)?,
        nb_objects: get::<Option<i32>>(row, "nb_objects")?.unwrap_or(0),
        object_offset: get::<Option<i64>>(row, "object_offset")?.unwrap_or(0),
        payload_size: get::<Option<i64>>(row, "payload_size")?.unwrap_or(0),
    })
}
