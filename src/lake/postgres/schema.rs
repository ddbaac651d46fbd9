//! The shape of a micromegas PostgreSQL metadata schema ([`PgSchema`]): detected from
//! `information_schema`, never assumed; and the telemetry tables as micromegas's ingestion
//! creates them, for a lake this crate writes.

use super::get;
use crate::error::{Error, Result};
use crate::lake::db_err;
use std::collections::HashMap;

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

pub(super) const TABLES: [&str; 3] = ["processes", "streams", "blocks"];

/// Columns this crate reads, per table.
pub(super) const REQUIRED: [(&str, &[&str]); 3] = [
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
pub(super) const CREATE_V4: &str = "
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

pub(super) async fn detect(conn: &mut sqlx::PgConnection) -> Result<Option<PgSchema>> {
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

pub(super) async fn create_tables(conn: &mut sqlx::PgConnection) -> Result<()> {
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
