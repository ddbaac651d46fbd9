//! A micromegas lake's PostgreSQL metadata, as micromegas's ingestion service lays it out.
//!
//! Every schema a published release writes is read: the columns this crate needs are the same
//! in all of them, but `streams.format` exists only from schema v4 (before, every stream is
//! micromegas-transit), `audience` columns only from v8, and early lakes hold ids as
//! `VARCHAR(36)` instead of `UUID`. The shape is detected from `information_schema`, never
//! assumed; ids are bound as text and cast to the column's type. An empty database gets the
//! telemetry tables created (at schema v4, so that micromegas's own ingestion can carry on with
//! its later migrations); an existing schema is never altered.

use super::records::{BlockRecord, ProcessRecord, ProcessSummary, StreamRecord, TimeRange};
use super::{LakeOptions, column_err, db_err, redact};
use crate::error::{Error, Result};
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Row};
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use uuid::Uuid;

/// What the connected database's telemetry tables look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgSchema {
    /// `uuid` or `varchar`: the SQL type of the id columns.
    pub id_type: &'static str,
    /// Whether `streams.format` exists (schema v4 and later).
    pub has_format: bool,
    /// Whether the `audience` columns exist (schema v8 and later).
    pub has_audience: bool,
    /// Whether the unique id indexes exist (schema v3 and later): needed to write.
    pub has_unique_ids: bool,
    /// `migration.version`, if the table exists.
    pub version: Option<i32>,
}

#[derive(Debug, Clone)]
pub(crate) struct PgMeta {
    pool: PgPool,
    schema: PgSchema,
    url: String,
}

const TABLES: [&str; 3] = ["processes", "streams", "blocks"];

/// Columns this crate reads, per table.
const REQUIRED: [(&str, &[&str]); 3] = [
    (
        "processes",
        &[
            "process_id",
            "exe",
            "username",
            "realname",
            "computer",
            "distro",
            "cpu_brand",
            "tsc_frequency",
            "start_time",
            "start_ticks",
            "parent_process_id",
            "properties",
        ],
    ),
    (
        "streams",
        &[
            "stream_id",
            "process_id",
            "dependencies_metadata",
            "objects_metadata",
            "tags",
            "properties",
        ],
    ),
    (
        "blocks",
        &[
            "block_id",
            "stream_id",
            "process_id",
            "begin_time",
            "begin_ticks",
            "end_time",
            "end_ticks",
            "nb_objects",
            "object_offset",
            "payload_size",
        ],
    ),
];

/// The telemetry tables as micromegas's ingestion creates them, up to its schema v4.
const CREATE_V4: &str = "
CREATE TYPE micromegas_property AS (key TEXT, value TEXT);
CREATE TABLE processes(
    process_id UUID, exe VARCHAR(255), username VARCHAR(255), realname VARCHAR(255),
    computer VARCHAR(255), distro VARCHAR(255), cpu_brand VARCHAR(255), tsc_frequency BIGINT,
    start_time TIMESTAMPTZ, start_ticks BIGINT, insert_time TIMESTAMPTZ, parent_process_id UUID,
    properties micromegas_property[]);
CREATE INDEX parent_process_id ON processes(parent_process_id);
CREATE INDEX process_start_time ON processes(start_time);
CREATE INDEX process_insert_time ON processes(insert_time);
CREATE UNIQUE INDEX processes_process_id_unique ON processes(process_id);
CREATE TABLE streams(
    stream_id UUID, process_id UUID, dependencies_metadata BYTEA, objects_metadata BYTEA,
    tags TEXT[], properties micromegas_property[], insert_time TIMESTAMPTZ,
    format TEXT NOT NULL DEFAULT 'micromegas-transit');
CREATE INDEX stream_process_id ON streams(process_id);
CREATE INDEX stream_insert_time ON streams(insert_time);
CREATE UNIQUE INDEX streams_stream_id_unique ON streams(stream_id);
CREATE TABLE blocks(
    block_id UUID, stream_id UUID, process_id UUID, begin_time TIMESTAMPTZ, begin_ticks BIGINT,
    end_time TIMESTAMPTZ, end_ticks BIGINT, nb_objects INT, object_offset BIGINT,
    payload_size BIGINT, insert_time TIMESTAMPTZ);
CREATE INDEX block_stream_id ON blocks(stream_id);
CREATE INDEX block_begin_time ON blocks(begin_time);
CREATE INDEX block_end_time ON blocks(end_time);
CREATE INDEX block_insert_time ON blocks(insert_time);
CREATE UNIQUE INDEX blocks_block_id_unique ON blocks(block_id);
CREATE TABLE migration(version integer);
INSERT INTO migration VALUES(4);
";

/// `properties` as two parallel text arrays (keys, values), in stored order.
fn properties_sql(column: &str) -> String {
    format!(
        "COALESCE((SELECT array_agg(p.key ORDER BY p.ord) FROM unnest({column}) WITH ORDINALITY AS p(key, value, ord)), '{{}}') AS property_keys, \
         COALESCE((SELECT array_agg(p.value ORDER BY p.ord) FROM unnest({column}) WITH ORDINALITY AS p(key, value, ord)), '{{}}') AS property_values"
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
    let keys: Vec<Option<String>> = get(row, "property_keys")?;
    let values: Vec<Option<String>> = get(row, "property_values")?;
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
        range: TimeRange,
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
        let mut next = 3;
        if range.end.is_some() {
            sql.push_str(&format!(" AND b.begin_time <= ${next}"));
            next += 1;
        }
        if range.begin.is_some() {
            sql.push_str(&format!(" AND b.end_time >= ${next}"));
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
        if let Some(end) = range.end {
            query = query.bind(end);
        }
        if let Some(begin) = range.begin {
            query = query.bind(begin);
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

    fn check_writable(&self) -> Result<()> {
        if self.schema.has_unique_ids {
            Ok(())
        } else {
            Err(Error::Schema(
                "this lake predates micromegas schema v3 (no unique id indexes): writing is not supported"
                    .into(),
            ))
        }
    }

    pub async fn insert_process(&self, p: &ProcessRecord) -> Result<()> {
        self.check_writable()?;
        let id = self.id();
        let sql = format!(
            "INSERT INTO processes (process_id, exe, username, realname, computer, distro, cpu_brand,
                tsc_frequency, start_time, start_ticks, insert_time, parent_process_id, properties)
             VALUES (CAST($1 AS {id}), $2, $3, $4, $5, $6, $7, $8, $9, $10, now(), CAST($11 AS {id}),
                (SELECT COALESCE(array_agg(ROW(u.k, u.v)::micromegas_property ORDER BY u.o), '{{}}')
                 FROM unnest($12::text[], $13::text[]) WITH ORDINALITY AS u(k, v, o)))
             ON CONFLICT (process_id) DO NOTHING"
        );
        let (keys, values) = split_properties(&p.properties);
        sqlx::query(AssertSqlSafe(sql))
            .bind(p.process_id.to_string())
            .bind(&p.exe)
            .bind(&p.username)
            .bind(&p.realname)
            .bind(&p.computer)
            .bind(&p.distro)
            .bind(&p.cpu_brand)
            .bind(p.tsc_frequency)
            .bind(p.start_time)
            .bind(p.start_ticks)
            .bind(p.parent_process_id.map(|u| u.to_string()))
            .bind(keys)
            .bind(values)
            .execute(&self.pool)
            .await
            .map_err(db_err(format!("inserting process {}", p.process_id)))?;
        Ok(())
    }

    pub async fn insert_stream(&self, s: &StreamRecord) -> Result<()> {
        self.check_writable()?;
        let id = self.id();
        let sql = format!(
            "INSERT INTO streams (stream_id, process_id, dependencies_metadata, objects_metadata, tags,
                properties, insert_time)
             VALUES (CAST($1 AS {id}), CAST($2 AS {id}), $3, $4, $5,
                (SELECT COALESCE(array_agg(ROW(u.k, u.v)::micromegas_property ORDER BY u.o), '{{}}')
                 FROM unnest($6::text[], $7::text[]) WITH ORDINALITY AS u(k, v, o)), now())
             ON CONFLICT (stream_id) DO NOTHING"
        );
        let (keys, values) = split_properties(&s.properties);
        sqlx::query(AssertSqlSafe(sql))
            .bind(s.stream_id.to_string())
            .bind(s.process_id.to_string())
            .bind(&s.dependencies_metadata)
            .bind(&s.objects_metadata)
            .bind(&s.tags)
            .bind(keys)
            .bind(values)
            .execute(&self.pool)
            .await
            .map_err(db_err(format!("inserting stream {}", s.stream_id)))?;
        Ok(())
    }

    pub async fn insert_block(&self, b: &BlockRecord) -> Result<()> {
        self.check_writable()?;
        let id = self.id();
        let sql = format!(
            "INSERT INTO blocks (block_id, stream_id, process_id, begin_time, begin_ticks, end_time,
                end_ticks, nb_objects, object_offset, payload_size, insert_time)
             VALUES (CAST($1 AS {id}), CAST($2 AS {id}), CAST($3 AS {id}), $4, $5, $6, $7, $8, $9, $10, now())
             ON CONFLICT (block_id) DO NOTHING"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(b.block_id.to_string())
            .bind(b.stream_id.to_string())
            .bind(b.process_id.to_string())
            .bind(b.begin_time)
            .bind(b.begin_ticks)
            .bind(b.end_time)
            .bind(b.end_ticks)
            .bind(b.nb_objects)
            .bind(b.object_offset)
            .bind(b.payload_size)
            .execute(&self.pool)
            .await
            .map_err(db_err(format!("inserting block {}", b.block_id)))?;
        Ok(())
    }
}

fn split_properties(properties: &[(String, String)]) -> (Vec<String>, Vec<String>) {
    properties.iter().cloned().unzip()
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

async fn detect(conn: &mut sqlx::PgConnection) -> Result<Option<PgSchema>> {
    let rows = sqlx::query(
        "SELECT table_name::text AS t, column_name::text AS c, data_type::text AS d
         FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name IN ('processes', 'streams', 'blocks', 'migration')",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(db_err("reading information_schema"))?;
    let mut columns: HashMap<String, HashMap<String, String>> = HashMap::new();
    for row in &rows {
        let (t, c, d): (String, String, String) = (get(row, "t")?, get(row, "c")?, get(row, "d")?);
        columns.entry(t).or_default().insert(c, d);
    }
    let present: Vec<&str> = TABLES
        .into_iter()
        .filter(|t| columns.contains_key(*t))
        .collect();
    if present.is_empty() {
        return Ok(None);
    }
    for (table, needed) in REQUIRED {
        let Some(have) = columns.get(table) else {
            return Err(Error::Schema(format!(
                "table {table} is missing (found {}): not a micromegas telemetry database",
                present.join(", ")
            )));
        };
        let missing: Vec<&str> = needed
            .iter()
            .copied()
            .filter(|c| !have.contains_key(*c))
            .collect();
        if !missing.is_empty() {
            return Err(Error::Schema(format!(
                "table {table} lacks column(s) {}: not a micromegas telemetry database",
                missing.join(", ")
            )));
        }
    }
    let id_type = match columns["processes"]["process_id"].as_str() {
        "uuid" => "uuid",
        "character varying" | "text" => "varchar",
        other => {
            return Err(Error::Schema(format!(
                "processes.process_id has the unsupported type {other}"
            )));
        }
    };
    let version = if columns.contains_key("migration") {
        sqlx::query("SELECT version FROM migration LIMIT 1")
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_err("reading the schema version"))?
            .map(|row| get::<Option<i32>>(&row, "version"))
            .transpose()?
            .flatten()
    } else {
        None
    };
    let unique = sqlx::query(
        "SELECT count(*) AS n FROM pg_indexes WHERE schemaname = current_schema()
         AND indexname IN ('processes_process_id_unique', 'streams_stream_id_unique', 'blocks_block_id_unique')",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(db_err("reading pg_indexes"))?;
    let unique: i64 = get(&unique, "n")?;
    Ok(Some(PgSchema {
        id_type,
        has_format: columns["streams"].contains_key("format"),
        has_audience: columns["blocks"].contains_key("audience"),
        has_unique_ids: unique == 3,
        version,
    }))
}

async fn create_tables(conn: &mut sqlx::PgConnection) -> Result<()> {
    use sqlx::Connection;
    let mut tx = conn
        .begin()
        .await
        .map_err(db_err("starting the schema creation"))?;
    sqlx::raw_sql(CREATE_V4)
        .execute(&mut *tx)
        .await
        .map_err(db_err("creating the telemetry tables"))?;
    tx.commit()
        .await
        .map_err(db_err("committing the schema creation"))?;
    Ok(())
}

// ---- Listings of the metadata tables (the `processes`, `streams` and `blocks` SQL tables).

use super::listing::{
    Bind, BlockListing, Conditions, MetadataFilter, ProcessListing, StreamListing,
};

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

    pub async fn list_processes(&self, filter: &MetadataFilter) -> Result<Vec<ProcessListing>> {
        let c = self.listing_conditions(filter, "p.process_id", None, None);
        let sql = format!(
            "SELECT {process}, p.insert_time, a.last_update_time, a.last_end_ticks, a.last_end_time
             FROM processes p CROSS JOIN LATERAL (
                SELECT max(b.insert_time) AS last_update_time, max(b.end_ticks) AS last_end_ticks,
                       max(b.end_time) AS last_end_time
                FROM streams s JOIN blocks b ON b.stream_id = s.stream_id
                WHERE s.process_id = p.process_id) a
             WHERE a.last_end_time IS NOT NULL{conds}
             ORDER BY p.start_time DESC{limit}",
            process = self.process_sql("p"),
            conds = c.sql,
            limit = filter.limit_sql(),
        );
        let rows = bind_all(sqlx::query(AssertSqlSafe(sql)), c.binds)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err("listing processes"))?;
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let process = Self::process_row(row)?;
            if !seen.insert(process.process_id) {
                continue;
            }
            let what = Named("process", process.process_id);
            out.push(ProcessListing {
                process,
                insert_time: get(row, "insert_time")?,
                last_update_time: get(row, "last_update_time")?,
                last_block_end_ticks: required(row, "last_end_ticks", &what)?,
                last_block_end_time: required(row, "last_end_time", &what)?,
            });
        }
        Ok(out)
    }

    pub async fn list_streams(&self, filter: &MetadataFilter) -> Result<Vec<StreamListing>> {
        let c = self.listing_conditions(filter, "s.process_id", Some("s.stream_id"), None);
        let format = if self.schema.has_format {
            "s.format"
        } else {
            "'micromegas-transit'"
        };
        let sql = format!(
            "SELECT s.stream_id::text AS stream_id, s.process_id::text AS process_id, \
             s.dependencies_metadata, s.objects_metadata, s.tags, {props}, s.insert_time, \
             {format} AS format, \
             (SELECT max(b.insert_time) FROM blocks b WHERE b.stream_id = s.stream_id) AS last_update_time
             FROM streams s WHERE true{conds} ORDER BY s.process_id, s.stream_id{limit}",
            props = properties_sql("s.properties"),
            conds = c.sql,
            limit = filter.limit_sql(),
        );
        let rows = bind_all(sqlx::query(AssertSqlSafe(sql)), c.binds)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err("listing streams"))?;
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let stream_id = parse_id(row, "stream_id")?;
            if !seen.insert(stream_id) {
                continue;
            }
            let what = Named("stream", stream_id);
            out.push(StreamListing {
                stream: StreamRecord {
                    stream_id,
                    process_id: parse_id(row, "process_id")?,
                    dependencies_metadata: required(row, "dependencies_metadata", &what)?,
                    objects_metadata: required(row, "objects_metadata", &what)?,
                    tags: get::<Option<Vec<String>>>(row, "tags")?.unwrap_or_default(),
                    properties: properties(row)?,
                },
                insert_time: get(row, "insert_time")?,
                format: get::<Option<String>>(row, "format")?.unwrap_or_default(),
                last_update_time: get(row, "last_update_time")?,
            });
        }
        Ok(out)
    }

    pub async fn list_blocks(&self, filter: &MetadataFilter) -> Result<Vec<BlockListing>> {
        let c = self.listing_conditions(
            filter,
            "b.process_id",
            Some("b.stream_id"),
            Some("b.block_id"),
        );
        let sql = format!(
            "SELECT b.block_id::text AS block_id, b.stream_id::text AS stream_id, \
             b.process_id::text AS process_id, b.begin_time, b.begin_ticks, b.end_time, b.end_ticks, \
             b.nb_objects, b.object_offset, b.payload_size, b.insert_time
             FROM blocks b WHERE true{conds} ORDER BY b.begin_time, b.block_id{limit}",
            conds = c.sql,
            limit = filter.limit_sql(),
        );
        let rows = bind_all(sqlx::query(AssertSqlSafe(sql)), c.binds)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err("listing blocks"))?;
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let block = block_row(row)?;
            if seen.insert(block.block_id) {
                out.push(BlockListing {
                    block,
                    insert_time: get(row, "insert_time")?,
                });
            }
        }
        Ok(out)
    }
}
