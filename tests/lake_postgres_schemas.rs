//! Every PostgreSQL schema a published micromegas release writes is read, and an existing
//! schema is never altered; an empty database gets micromegas's telemetry tables.

mod common;

use common::lakes::{decode_from_lake, fresh_pg_database};
use common::producer::Recording;
use common::scripted::scripted_033;
use datafusion_async_events::Lake;
use datafusion_async_events::lake::LakeOptions;
use datafusion_async_events::lake::{TimeRange, blob_key};
use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};
use uuid::Uuid;

/// The shapes of the telemetry tables across micromegas releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Early lakes: ids as VARCHAR(36), no `format` column, no unique indexes (schema v2).
    VarcharV2,
    /// Schema v3: unique ids, no `format` column (everything is micromegas-transit).
    V3,
    /// Schema v4: `streams.format`; what this crate's recorder creates on an empty database.
    V4,
    /// micromegas 0.29 (schema v5): API keys.
    V5,
    /// micromegas 0.33 (schema v14): `audience` on processes, streams and blocks.
    V14,
}

/// The telemetry schema at `shape`, built step by step as micromegas's ingestion migrates it
/// (its `sql_telemetry_db.rs` v1 and `sql_migration.rs` v2 to v14, in the 0.33 crate): the same
/// tables, columns and indexes at each version, written here from that schema's definition
/// (micromegas's own code is not a dependency: it would pin this repository's SQLite to an older
/// release and bring a second sqlx). Steps that only concern the ingestion service's own tables
/// (API keys, grants, groups, settings) are reduced to what makes the version recognisable.
fn ddl(shape: Shape) -> String {
    let id = if shape == Shape::VarcharV2 {
        "VARCHAR(36)"
    } else {
        "UUID"
    };
    // v1
    let mut sql = format!(
        "CREATE TYPE micromegas_property AS (key TEXT, value TEXT);
         CREATE TABLE processes(process_id {id}, exe VARCHAR(255), username VARCHAR(255), realname VARCHAR(255),
            computer VARCHAR(255), distro VARCHAR(255), cpu_brand VARCHAR(255), tsc_frequency BIGINT,
            start_time TIMESTAMPTZ, start_ticks BIGINT, insert_time TIMESTAMPTZ, parent_process_id {id},
            properties micromegas_property[]);
         CREATE INDEX process_id ON processes(process_id);
         CREATE INDEX parent_process_id ON processes(parent_process_id);
         CREATE INDEX process_start_time ON processes(start_time);
         CREATE TABLE streams(stream_id {id}, process_id {id}, dependencies_metadata BYTEA, objects_metadata BYTEA,
            tags TEXT[], properties micromegas_property[], insert_time TIMESTAMPTZ);
         CREATE INDEX stream_id ON streams(stream_id);
         CREATE INDEX stream_process_id ON streams(process_id);
         CREATE INDEX stream_insert_time ON streams(insert_time);
         CREATE TABLE blocks(block_id {id}, stream_id {id}, process_id {id}, begin_time TIMESTAMPTZ, begin_ticks BIGINT,
            end_time TIMESTAMPTZ, end_ticks BIGINT, nb_objects INT, object_offset BIGINT, payload_size BIGINT);
         CREATE INDEX block_id ON blocks(block_id);
         CREATE INDEX block_stream_id ON blocks(stream_id);
         CREATE TABLE migration(version integer);
         INSERT INTO migration VALUES(1);"
    );
    // v2
    sql.push_str(
        "ALTER TABLE blocks ADD insert_time TIMESTAMPTZ;
         CREATE INDEX block_begin_time ON blocks(begin_time);
         CREATE INDEX block_end_time ON blocks(end_time);
         CREATE INDEX block_insert_time ON blocks(insert_time);
         CREATE INDEX process_insert_time ON processes(insert_time);
         UPDATE migration SET version = 2;",
    );
    if shape == Shape::VarcharV2 {
        return sql;
    }
    // v3
    sql.push_str(
        "CREATE UNIQUE INDEX processes_process_id_unique ON processes(process_id);
         CREATE UNIQUE INDEX streams_stream_id_unique ON streams(stream_id);
         CREATE UNIQUE INDEX blocks_block_id_unique ON blocks(block_id);
         DROP INDEX process_id;
         DROP INDEX stream_id;
         DROP INDEX block_id;
         UPDATE migration SET version = 3;",
    );
    if shape == Shape::V3 {
        return sql;
    }
    // v4
    sql.push_str(
        "ALTER TABLE streams ADD COLUMN format TEXT NOT NULL DEFAULT 'micromegas-transit';
         UPDATE migration SET version = 4;",
    );
    if shape == Shape::V4 {
        return sql;
    }
    // v5
    sql.push_str(
        "CREATE TABLE ingestion_api_keys(key_id UUID PRIMARY KEY, key_hash BYTEA NOT NULL);
         CREATE UNIQUE INDEX ingestion_api_keys_key_hash ON ingestion_api_keys(key_hash);
         CREATE TABLE analytics_api_keys(key_id UUID PRIMARY KEY, key_hash BYTEA NOT NULL);
         CREATE UNIQUE INDEX analytics_api_keys_key_hash ON analytics_api_keys(key_hash);
         UPDATE migration SET version = 5;",
    );
    if shape == Shape::V5 {
        return sql;
    }
    // v8 (the telemetry tables' last change), up to v14
    sql.push_str(
        "ALTER TABLE processes ADD COLUMN audience VARCHAR(255);
         ALTER TABLE streams ADD COLUMN audience VARCHAR(255);
         ALTER TABLE blocks ADD COLUMN audience VARCHAR(255);
         UPDATE migration SET version = 14;",
    );
    sql
}

/// Inserts a recording's rows with plain SQL, the way micromegas's ingestion service does, and
/// writes its blobs into the folder of a `file://` store.
async fn insert_raw(conn: &mut PgConnection, shape: Shape, rec: &Recording, dir: &std::path::Path) {
    let t = if shape == Shape::VarcharV2 {
        "varchar"
    } else {
        "uuid"
    };
    let p = &rec.process;
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO processes (process_id, exe, username, realname, computer, distro, cpu_brand, tsc_frequency,
            start_time, start_ticks, insert_time, parent_process_id, properties)
         VALUES (CAST($1 AS {t}), $2, $3, $4, $5, $6, $7, $8, $9, $10, now(), NULL,
            ARRAY[ROW('version', '1.2')::micromegas_property])",
    )))
    .bind(p.process_id.to_string()).bind(&p.exe).bind(&p.username).bind(&p.realname).bind(&p.computer)
    .bind(&p.distro).bind(&p.cpu_brand).bind(p.tsc_frequency).bind(p.start_time).bind(p.start_ticks)
    .execute(&mut *conn).await.unwrap();
    for s in &rec.streams {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO streams (stream_id, process_id, dependencies_metadata, objects_metadata, tags, properties, insert_time)
             VALUES (CAST($1 AS {t}), CAST($2 AS {t}), $3, $4, $5, ARRAY[ROW('thread-name', 'worker-1')::micromegas_property], now())",
        )))
        .bind(s.stream_id.to_string()).bind(s.process_id.to_string())
        .bind(&s.dependencies_metadata).bind(&s.objects_metadata).bind(&s.tags)
        .execute(&mut *conn).await.unwrap();
    }
    for b in &rec.blocks {
        let path = dir.join(blob_key(b.process_id, b.stream_id, b.block_id));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &b.payload).unwrap();
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO blocks (block_id, stream_id, process_id, begin_time, begin_ticks, end_time, end_ticks,
                nb_objects, object_offset, payload_size, insert_time)
             VALUES (CAST($1 AS {t}), CAST($2 AS {t}), CAST($3 AS {t}), $4, $5, $6, $7, $8, $9, $10, now())",
        )))
        .bind(b.block_id.to_string()).bind(b.stream_id.to_string()).bind(b.process_id.to_string())
        .bind(b.begin_time).bind(b.begin_ticks).bind(b.end_time).bind(b.end_ticks)
        .bind(b.nb_objects).bind(b.object_offset).bind(b.payload.len() as i64)
        .execute(&mut *conn).await.unwrap();
    }
}

/// The columns, types and indexes of the three tables, to compare before and after.
async fn shape_of(conn: &mut PgConnection) -> Vec<String> {
    let mut out: Vec<String> = sqlx::query(
        "SELECT table_name || '.' || column_name || ':' || data_type || ':' || is_nullable || ':' || coalesce(column_default, '') AS c
         FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1",
    )
    .fetch_all(&mut *conn).await.unwrap()
    .iter().map(|r| r.get::<String, _>("c")).collect();
    out.extend(
        sqlx::query("SELECT indexname || ':' || indexdef AS i FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1")
            .fetch_all(&mut *conn).await.unwrap()
            .iter().map(|r| r.get::<String, _>("i")),
    );
    out.push(format!(
        "migration {:?}",
        sqlx::query("SELECT version FROM migration")
            .fetch_optional(&mut *conn)
            .await
            .unwrap()
            .map(|r| r.get::<i32, _>("version"))
    ));
    out
}

#[tokio::test]
async fn every_released_schema_is_read_and_left_unaltered() {
    for shape in [
        Shape::VarcharV2,
        Shape::V3,
        Shape::V4,
        Shape::V5,
        Shape::V14,
    ] {
        let url = fresh_pg_database().await;
        let mut conn = PgConnection::connect(&url).await.unwrap();
        sqlx::raw_sql(AssertSqlSafe(ddl(shape)))
            .execute(&mut conn)
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let rec = scripted_033().recording;
        insert_raw(&mut conn, shape, &rec, dir.path()).await;
        let pid = rec.process.process_id;
        let before = shape_of(&mut conn).await;

        let store = url::Url::from_directory_path(dir.path())
            .unwrap()
            .to_string();
        // Writable, for the inserts below: an existing schema is not altered either way.
        let lake = Lake::open_with(&url, &store, LakeOptions::writable())
            .await
            .unwrap();
        let schema = lake.postgres_schema().unwrap().clone();
        assert_eq!(
            schema.id_type,
            if shape == Shape::VarcharV2 {
                "varchar"
            } else {
                "uuid"
            },
            "{shape:?}"
        );
        assert_eq!(
            schema.has_format,
            matches!(shape, Shape::V4 | Shape::V5 | Shape::V14),
            "{shape:?}"
        );
        assert_eq!(schema.has_audience, shape == Shape::V14, "{shape:?}");
        let p = lake.process(pid).await.unwrap();
        assert_eq!(
            p.properties,
            vec![("version".to_string(), "1.2".to_string())]
        );
        let streams = lake.cpu_streams(pid, None).await.unwrap();
        assert_eq!(streams.len(), 1, "{shape:?}");
        assert_eq!(streams[0].property("thread-name"), Some("worker-1"));
        assert_eq!(decode_from_lake(&lake, pid).await.len(), 11, "{shape:?}");
        assert!(lake.latest_timing(pid).await.unwrap().is_some());
        if shape == Shape::VarcharV2 {
            let err = lake.insert_process(&p).await.unwrap_err();
            assert!(
                err.to_string().contains("predates micromegas schema v3"),
                "{err}"
            );
        } else {
            // Writing through the lake into an existing micromegas schema works and is idempotent.
            lake.insert_process(&p).await.unwrap();
        }
        drop(lake);
        assert_eq!(
            shape_of(&mut conn).await,
            before,
            "{shape:?}: the schema was altered"
        );
    }
}

#[tokio::test]
async fn the_metadata_tables_read_every_schema_and_rows_written_twice_once() {
    for shape in [
        Shape::VarcharV2,
        Shape::V3,
        Shape::V4,
        Shape::V5,
        Shape::V14,
    ] {
        let url = fresh_pg_database().await;
        let mut conn = PgConnection::connect(&url).await.unwrap();
        sqlx::raw_sql(AssertSqlSafe(ddl(shape)))
            .execute(&mut conn)
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let rec = scripted_033().recording;
        insert_raw(&mut conn, shape, &rec, dir.path()).await;
        if shape == Shape::VarcharV2 {
            // No unique index before v3: a retried ingestion leaves every row twice.
            insert_raw(&mut conn, shape, &rec, dir.path()).await;
        }
        let store = url::Url::from_directory_path(dir.path())
            .unwrap()
            .to_string();
        let lake = Lake::open(&url, &store).await.unwrap();
        let ctx = datafusion::prelude::SessionContext::new();
        datafusion_async_events::register_metadata_tables(&ctx, lake).unwrap();
        let count = |sql: &'static str| {
            let ctx = ctx.clone();
            async move {
                let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
                let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
                rows
            }
        };
        assert_eq!(count("SELECT * FROM processes").await, 1, "{shape:?}");
        assert_eq!(
            count("SELECT * FROM streams").await,
            rec.streams.len(),
            "{shape:?}"
        );
        let blocks = rec.blocks.len();
        assert_eq!(count("SELECT * FROM blocks").await, blocks, "{shape:?}");
        assert_eq!(
            count("SELECT block_id FROM blocks LIMIT 100").await,
            blocks,
            "{shape:?}"
        );
        assert_eq!(
            count(
                "SELECT * FROM blocks WHERE \"streams.format\" = 'micromegas-transit' \
                 AND property_get(\"processes.properties\", 'version') = '1.2'"
            )
            .await,
            blocks,
            "{shape:?}: every block joined with its stream and process"
        );
        // jsonb_each of the process's properties: each property, as micromegas's notebooks
        // read them.
        let batches = ctx
            .sql("SELECT key, jsonb_as_string(value) AS v FROM jsonb_each((SELECT properties FROM processes)) ORDER BY key")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        // `insert_raw` gives the process one property, version 1.2.
        let want = ["version|1.2"];
        assert_eq!(common::sql::lines(&batches), want, "{shape:?}");
    }
}

#[tokio::test]
async fn otlp_streams_and_other_audiences_stay_out() {
    let url = fresh_pg_database().await;
    let mut conn = PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(AssertSqlSafe(ddl(Shape::V14)))
        .execute(&mut conn)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rec = scripted_033().recording;
    insert_raw(&mut conn, Shape::V14, &rec, dir.path()).await;
    let pid = rec.process.process_id;
    // An OTLP stream tagged cpu: another format, never read as transit.
    sqlx::query("INSERT INTO streams (stream_id, process_id, dependencies_metadata, objects_metadata, tags, format) VALUES ($1, $2, '\\x80', '\\x80', '{cpu}', 'otlp/v1/traces')")
        .bind(Uuid::new_v4()).bind(pid).execute(&mut conn).await.unwrap();
    // micromegas 0.33's blocks view hides a block stamped for another audience than its stream's.
    sqlx::query("UPDATE streams SET audience = 'team-a' WHERE stream_id = $1")
        .bind(rec.streams[0].stream_id)
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("UPDATE blocks SET audience = 'team-b' WHERE block_id = $1")
        .bind(rec.blocks[1].block_id)
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("UPDATE blocks SET audience = 'team-a' WHERE block_id = $1")
        .bind(rec.blocks[0].block_id)
        .execute(&mut conn)
        .await
        .unwrap();
    let store = url::Url::from_directory_path(dir.path())
        .unwrap()
        .to_string();
    let lake = Lake::open(&url, &store).await.unwrap();
    let streams = lake.cpu_streams(pid, None).await.unwrap();
    assert_eq!(streams.len(), 1);
    let blocks = lake
        .blocks(pid, &[streams[0].stream_id], TimeRange::all())
        .await
        .unwrap();
    assert_eq!(
        blocks.iter().map(|b| b.block_id).collect::<Vec<_>>(),
        vec![rec.blocks[0].block_id]
    );
}

#[tokio::test]
async fn an_empty_database_is_refused_by_readers_and_given_telemetry_tables_by_the_recorder() {
    let url = fresh_pg_database().await;
    let dir = tempfile::tempdir().unwrap();
    let store = url::Url::from_directory_path(dir.path())
        .unwrap()
        .to_string();
    // A reading open names the database and schema it looked in, and creates nothing.
    let err = Lake::open(&url, &store).await.unwrap_err().to_string();
    let database = url.rsplit('/').next().unwrap();
    assert!(
        err.contains(&format!(
            "PostgreSQL database \"{database}\", schema \"public\""
        )) && err.contains("async-events quickstart"),
        "{err}"
    );
    let mut conn = PgConnection::connect(&url).await.unwrap();
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(tables, 0);
    // The recorder's open creates them.
    let lake = Lake::open_with(&url, &store, LakeOptions::writable())
        .await
        .unwrap();
    let schema = lake.postgres_schema().unwrap();
    assert_eq!(
        (
            schema.id_type,
            schema.has_format,
            schema.has_audience,
            schema.has_unique_ids,
            schema.version
        ),
        ("uuid", true, false, true, Some(4))
    );
    drop(lake);
    let mut conn = PgConnection::connect(&url).await.unwrap();
    let shape = shape_of(&mut conn).await;
    // Column for column and index for index, micromegas's v4 as its migration steps build it.
    let steps = fresh_pg_database().await;
    let mut steps_conn = PgConnection::connect(&steps).await.unwrap();
    sqlx::raw_sql(AssertSqlSafe(ddl(Shape::V4)))
        .execute(&mut steps_conn)
        .await
        .unwrap();
    assert_eq!(shape, shape_of(&mut steps_conn).await);
    assert!(
        shape.iter().filter(|c| c.contains("INDEX")).count() >= 9,
        "{shape:#?}"
    );
    // Opening again finds the tables and changes nothing.
    Lake::open(&url, &store).await.unwrap();
    assert_eq!(shape_of(&mut conn).await, shape);
    // Two recorders opening the same empty database at once both succeed.
    let url = fresh_pg_database().await;
    let (a, b) = tokio::join!(
        Lake::open_with(&url, &store, LakeOptions::writable()),
        Lake::open_with(&url, &store, LakeOptions::writable())
    );
    a.unwrap();
    b.unwrap();
}

#[tokio::test]
async fn a_database_with_other_tables_is_not_taken_for_a_lake() {
    let url = fresh_pg_database().await;
    let mut conn = PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("CREATE TABLE processes(id INT)")
        .execute(&mut conn)
        .await
        .unwrap();
    let err = Lake::open(&url, "memory://").await.unwrap_err();
    assert!(
        err.to_string()
            .contains("not a micromegas telemetry database"),
        "{err}"
    );
}
