//! Reading and writing lakes: the embedded SQLite lake and a real PostgreSQL server, with
//! blocks encoded by micromegas's own sink and stored the way its ingestion stores them.

#[macro_use]
mod common;

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use common::lakes::{Backend, block_record, decode_from_lake, open, store, stored_time};
use common::producer::Recording;
use common::realistic::{Shape, realistic};
use common::rows;
use common::scripted::{scripted_030, scripted_033};
use datafusion_async_events::format::{ColumnSet, RowFilter};
use datafusion_async_events::lake::{
    BlockRecord, LakeOptions, MissingBlobPolicy, ProcessRecord, TimeRange,
};
use datafusion_async_events::{Error, Lake};
use uuid::Uuid;

fn expected_block(backend: Backend, b: &common::producer::RawBlock) -> BlockRecord {
    let mut r = block_record(b);
    r.begin_time = stored_time(backend, r.begin_time);
    r.end_time = stored_time(backend, r.end_time);
    r
}

fn realistic_small(start: DateTime<Utc>) -> Recording {
    realistic(
        Shape {
            streams: 3,
            blocks_per_stream: 20,
            buffer_bytes: 4 * 1024,
            block_duration: Duration::milliseconds(10),
        },
        start,
        7,
    )
}

on_both! {
    async fn stored_rows_and_blobs_read_back(backend: Backend) {
        let t = open(backend).await;
        let recordings = [scripted_033().recording, scripted_030().recording];
        for rec in &recordings {
            store(&t.lake, rec).await;
            // Idempotent, like micromegas's ingestion: a second store changes nothing.
            store(&t.lake, rec).await;
        }
        for rec in &recordings {
            let pid = rec.process.process_id;
            let got = t.lake.process(pid).await.unwrap();
            let mut want = rec.process.clone();
            want.start_time = stored_time(backend, want.start_time);
            assert_eq!(got, want);
            let streams = t.lake.cpu_streams(pid, None).await.unwrap();
            assert_eq!(streams, rec.streams.clone());
            let ids: Vec<Uuid> = streams.iter().map(|s| s.stream_id).collect();
            let blocks = t.lake.blocks(pid, &ids, TimeRange::all()).await.unwrap();
            let want: Vec<BlockRecord> = rec.blocks.iter().map(|b| expected_block(backend, b)).collect();
            assert_eq!(blocks, want);
            for (b, raw) in blocks.iter().zip(&rec.blocks) {
                let blob = t.lake.fetch_blob(b).await.unwrap().unwrap();
                assert_eq!(blob.as_ref(), raw.payload.as_slice(), "the blob is stored byte for byte");
            }
            assert_eq!(t.lake.count_cpu_blocks(pid).await.unwrap(), rec.blocks.len() as i64);
            // The blocks decode to the same rows as straight from the producer's bytes; times may
            // differ by the sub-microsecond part of start_time that PostgreSQL drops.
            let direct = rows(&rec.decode(ColumnSet::all(), &RowFilter::all()));
            let through_lake = decode_from_lake(&t.lake, pid).await;
            assert_eq!(through_lake.len(), direct.len());
            for (a, b) in through_lake.iter().zip(&direct) {
                assert!((a.time - b.time).abs() < 1000, "{} vs {}", a.time, b.time);
                assert_eq!(common::Row { time: 0, ..a.clone() }, common::Row { time: 0, ..b.clone() });
            }
        }
        let summaries = t.lake.processes(10).await.unwrap();
        let ids: Vec<Uuid> = summaries.iter().map(|s| s.process.process_id).collect();
        for rec in &recordings {
            let s = summaries.iter().find(|s| s.process.process_id == rec.process.process_id).unwrap();
            assert_eq!((s.cpu_streams, s.cpu_blocks), (1, rec.blocks.len() as i64));
        }
        assert_eq!(ids.len(), 2);
    }

    async fn time_window_selects_overlapping_blocks_inclusive(backend: Backend) {
        let t = open(backend).await;
        let rec = realistic_small(Utc::now() - Duration::hours(1));
        store(&t.lake, &rec).await;
        let pid = rec.process.process_id;
        let all: Vec<BlockRecord> = rec.blocks.iter().map(|b| expected_block(backend, b)).collect();
        let streams: Vec<Uuid> = rec.streams.iter().map(|s| s.stream_id).collect();
        let select = |range: TimeRange, only: &[Uuid]| -> Vec<Uuid> {
            let mut v: Vec<Uuid> = all
                .iter()
                .filter(|b| only.contains(&b.stream_id))
                .filter(|b| range.end.is_none_or(|e| b.begin_time <= e) && range.begin.is_none_or(|s| b.end_time >= s))
                .map(|b| b.block_id)
                .collect();
            v.sort();
            v
        };
        let mut windows = vec![TimeRange::all()];
        // Exactly one block's bounds: its neighbours touch it at both ends and are included.
        let b = &all[5];
        windows.push(TimeRange::between(b.begin_time, b.end_time));
        windows.push(TimeRange::between(b.end_time, b.end_time));
        windows.push(TimeRange { begin: Some(b.end_time + Duration::microseconds(1)), end: None });
        windows.push(TimeRange { begin: None, end: Some(all[0].begin_time) });
        windows.push(TimeRange::between(all[0].begin_time - Duration::days(1), all[0].begin_time - Duration::microseconds(1)));
        for w in windows {
            for only in [&streams[..], &streams[1..2]] {
                let mut got: Vec<Uuid> = t.lake.blocks(pid, only, w).await.unwrap().iter().map(|b| b.block_id).collect();
                got.sort();
                assert_eq!(got, select(w, only), "window {w:?}");
            }
        }
        assert_eq!(select(TimeRange::between(b.begin_time, b.end_time), &streams).len(), 3 * 3, "3 blocks in each of 3 streams");
        // Stream selection happens before any block is listed.
        let one = t.lake.cpu_streams(pid, Some(&streams[2..3])).await.unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].stream_id, streams[2]);
        assert!(t.lake.cpu_streams(pid, Some(&[Uuid::new_v4()])).await.unwrap().is_empty());
        assert!(t.lake.blocks(pid, &[], TimeRange::all()).await.unwrap().is_empty());
    }

    async fn clock_estimate_uses_the_latest_block_of_every_stream(backend: Backend) {
        let t = open(backend).await;
        let mut rec = realistic_small(Utc::now() - Duration::hours(2));
        rec.process.tsc_frequency = 0;
        store(&t.lake, &rec).await;
        // A log stream whose last block ends after every cpu block, as micromegas's view counts it.
        let pid = rec.process.process_id;
        let log_stream = datafusion_async_events::lake::StreamRecord {
            stream_id: Uuid::new_v4(),
            process_id: pid,
            dependencies_metadata: vec![0x80],
            objects_metadata: vec![0x80],
            tags: vec!["log".into()],
            properties: vec![],
        };
        t.lake.insert_stream(&log_stream).await.unwrap();
        let last = rec.blocks.iter().max_by_key(|b| b.end_ticks).unwrap();
        let log_block = BlockRecord {
            block_id: Uuid::new_v4(),
            stream_id: log_stream.stream_id,
            process_id: pid,
            begin_time: last.end_time,
            begin_ticks: last.end_ticks,
            end_time: last.end_time + Duration::seconds(3),
            end_ticks: last.end_ticks + 3_000_000_000,
            nb_objects: 0,
            object_offset: 0,
            payload_size: 0,
        };
        t.lake.insert_block(&log_block, Bytes::from_static(b"\xa0")).await.unwrap();
        let latest = t.lake.latest_timing(pid).await.unwrap().unwrap();
        assert_eq!(latest.end_ticks, log_block.end_ticks);
        let process = t.lake.process(pid).await.unwrap();
        let clock = datafusion_async_events::provider::process_clock(&t.lake, &process).await.unwrap();
        let secs = (stored_time(backend, log_block.end_time) - process.start_time).num_nanoseconds().unwrap() as f64 / 1e9;
        assert_eq!(clock.frequency(), (log_block.end_ticks as f64 / secs).round() as i64);
        // The log stream is not a cpu stream: it is never listed for async events.
        assert_eq!(t.lake.cpu_streams(pid, None).await.unwrap().len(), 3);
    }

    async fn unknown_process_is_an_error_naming_it(backend: Backend) {
        let t = open(backend).await;
        let pid = Uuid::new_v4();
        let err = t.lake.process(pid).await.unwrap_err();
        assert!(matches!(err, Error::UnknownProcess { process_id } if process_id == pid));
        assert!(err.to_string().contains(&pid.to_string()), "{err}");
        assert!(t.lake.cpu_streams(pid, None).await.unwrap().is_empty());
    }

    async fn missing_blob_fails_naming_the_block_or_is_skipped_and_counted(backend: Backend) {
        let t = open(backend).await;
        let rec = scripted_033().recording;
        store(&t.lake, &rec).await;
        let victim = &rec.blocks[1];
        let path = t.dir.path().join(datafusion_async_events::lake::blob_key(victim.process_id, victim.stream_id, victim.block_id));
        std::fs::remove_file(&path).unwrap();
        let block = expected_block(backend, victim);
        let err = t.lake.fetch_blob(&block).await.unwrap_err();
        match &err {
            Error::MissingBlob { block_id, stream_id, process_id, .. } => {
                assert_eq!((*block_id, *stream_id, *process_id), (victim.block_id, victim.stream_id, victim.process_id));
            }
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains(&victim.block_id.to_string()));
        // The same lake opened to skip missing blobs counts them instead.
        let store_url = url::Url::from_directory_path(t.dir.path()).unwrap().to_string();
        let options = LakeOptions { missing_blobs: MissingBlobPolicy::Skip, ..LakeOptions::default() };
        let skipping = Lake::open_with(&t.db_url, &store_url, options).await.unwrap();
        assert!(skipping.fetch_blob(&block).await.unwrap().is_none());
        assert!(skipping.fetch_blob(&expected_block(backend, &rec.blocks[0])).await.unwrap().is_some());
        assert_eq!(skipping.skipped_missing_blobs(), 1);
    }

    async fn process_properties_named_micromegas_are_dropped(backend: Backend) {
        let t = open(backend).await;
        let mut p: ProcessRecord = scripted_033().recording.process.clone();
        p.properties = vec![("micromegas.audience".into(), "x".into()), ("region".into(), "eu, \"west\" ü".into())];
        t.lake.insert_process(&p).await.unwrap();
        let got = t.lake.process(p.process_id).await.unwrap();
        assert_eq!(got.properties, vec![("region".to_string(), "eu, \"west\" ü".to_string())]);
    }
}

#[tokio::test]
async fn unreachable_postgres_fails_fast_with_a_clear_error() {
    let options = LakeOptions {
        connect_timeout: std::time::Duration::from_secs(2),
        ..LakeOptions::default()
    };
    // A closed port, then an address that never answers.
    for url in [
        "postgres://user:secret@127.0.0.1:1/db",
        "postgres://user:secret@10.255.255.1:5432/db",
    ] {
        let started = std::time::Instant::now();
        let err = Lake::open_with(url, "memory://", options.clone())
            .await
            .unwrap_err();
        let elapsed = started.elapsed();
        assert!(
            elapsed < std::time::Duration::from_secs(5),
            "{url}: took {elapsed:?}"
        );
        let text = err.to_string();
        assert!(matches!(err, Error::Unreachable { .. }), "{text}");
        assert!(text.contains("cannot connect"), "{text}");
        assert!(
            !text.contains("secret"),
            "the password stays out of messages: {text}"
        );
    }
}

#[tokio::test]
async fn unsupported_urls_are_clear_errors() {
    let err = Lake::open("sqlite::memory:", "ftp://example.com/lake")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("unsupported object store URL"),
        "{err}"
    );
    let err = Lake::open("sqlite::memory:", "not a url")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a URL"), "{err}");
    if !cfg!(feature = "s3") {
        let err = Lake::open("sqlite::memory:", "s3://bucket/lake")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("`s3` feature"), "{err}");
    }
    let err = Lake::open("mysql://localhost/db", "memory://")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("unsupported database URL"),
        "{err}"
    );
    let err = Lake::open("postgres://nobody:pw@localhost:notaport/db", "memory://")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    assert!(!err.to_string().contains("pw@"), "{err}");
}

#[tokio::test]
async fn memory_store_and_sqlite_memory_database_work_together() {
    let lake = Lake::open_with("sqlite::memory:", "memory://", LakeOptions::writable())
        .await
        .unwrap();
    let rec = scripted_033().recording;
    store(&lake, &rec).await;
    let rows = decode_from_lake(&lake, rec.process.process_id).await;
    assert_eq!(rows.len(), 11);
}

#[tokio::test]
async fn embedded_lake_is_created_on_first_use_and_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join("lake");
    let rec = scripted_033().recording;
    {
        let lake = Lake::create_embedded(&path).await.unwrap();
        store(&lake, &rec).await;
    }
    assert!(path.join("telemetry.db").exists());
    assert!(
        path.join("blobs")
            .join(rec.process.process_id.to_string())
            .is_dir()
    );
    let lake = Lake::embedded(&path).await.unwrap();
    assert_eq!(
        decode_from_lake(&lake, rec.process.process_id).await.len(),
        11
    );
}

/// Every file under `dir` with its bytes, SQLite's `-shm` read marks aside (readers update them
/// by design; they hold no data).
fn files(dir: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if !path.to_string_lossy().ends_with("-shm") {
                let name = path.strip_prefix(dir).unwrap().display().to_string();
                out.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

#[tokio::test]
async fn reading_opens_never_change_an_embedded_lake() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lake");
    // No lake there: an error saying how to point at one, and nothing created.
    let err = Lake::embedded(&path).await.unwrap_err();
    assert!(matches!(err, Error::NoLake(_)), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&path.display().to_string())
            && text.contains("MICROMEGAS_SQL_CONNECTION_STRING")
            && text.contains("quickstart"),
        "{text}"
    );
    assert!(!path.exists());
    // A lake recorded, then switched to the rollback journal by another program.
    let rec = scripted_033().recording;
    {
        let lake = Lake::create_embedded(&path).await.unwrap();
        store(&lake, &rec).await;
        assert!(matches!(
            Lake::embedded(&path)
                .await
                .unwrap()
                .insert_stream(&rec.streams[0])
                .await
                .unwrap_err(),
            Error::ReadOnly(_)
        ));
    }
    let db = format!("sqlite://{}", path.join("telemetry.db").display());
    let journal = || async {
        let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&db)
            .await
            .unwrap();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        mode
    };
    {
        let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&db)
            .await
            .unwrap();
        // The recorder's pool closes its connections in the background after the lake is
        // dropped; leaving WAL needs them gone.
        let mut tries = 0;
        while let Err(e) = sqlx::query("PRAGMA journal_mode = DELETE")
            .execute(&mut conn)
            .await
        {
            tries += 1;
            assert!(tries < 100, "the database stays locked: {e}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    assert_eq!(journal().await, "delete");
    let before = files(&path);
    {
        let lake = Lake::embedded(&path).await.unwrap();
        assert_eq!(
            decode_from_lake(&lake, rec.process.process_id).await.len(),
            11
        );
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        journal().await,
        "delete",
        "the reader left the journal mode alone"
    );
    let after = files(&path);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    assert!(before == after, "a file of the lake changed");
}

#[tokio::test]
async fn a_postgres_role_that_may_only_select_reads_a_lake() {
    let t = open(Backend::Postgres).await;
    let rec = scripted_033().recording;
    store(&t.lake, &rec).await;
    let role = format!("ae_reader_{}", Uuid::new_v4().simple());
    let database = t.db_url.rsplit('/').next().unwrap().to_owned();
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&t.db_url)
        .await
        .unwrap();
    for statement in [
        format!("CREATE ROLE {role} LOGIN PASSWORD 'reader'"),
        format!("GRANT CONNECT ON DATABASE \"{database}\" TO {role}"),
        format!("GRANT USAGE ON SCHEMA public TO {role}"),
        format!("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut admin)
            .await
            .unwrap();
    }
    let mut url = url::Url::parse(&t.db_url).unwrap();
    url.set_username(&role).unwrap();
    url.set_password(Some("reader")).unwrap();
    let store_url = url::Url::from_directory_path(t.dir.path())
        .unwrap()
        .to_string();
    let lake = Lake::open(url.as_str(), &store_url).await.unwrap();
    assert_eq!(
        decode_from_lake(&lake, rec.process.process_id).await.len(),
        11
    );
    drop(lake);
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP OWNED BY {role}; DROP ROLE {role}"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
}
