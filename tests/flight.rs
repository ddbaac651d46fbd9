//! The Flight SQL server (`server` feature) on loopback, driven by arrow-flight's
//! `FlightSqlServiceClient`: answers compared with the library on the same lake, status codes,
//! read-only refusal, the bearer token, query range headers, dictionary handling, query slots.

#[macro_use]
mod common;

use arrow_flight::Ticket;
use arrow_flight::error::FlightError;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{ProstMessageExt, TicketStatementQuery};
use chrono::{Duration, Utc};
use common::lakes::{Backend, TestLake, open, store};
use common::producer::Recording;
use common::realistic::{Shape, realistic};
use common::sql::{context, lines, query};
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion_async_events::Lake;
use datafusion_async_events::server::{AsyncEventsFlightSql, ServerOptions};
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use tonic::Code;
use tonic::transport::Channel;

/// 3 thread streams of 6 blocks, each block 1 s long.
fn recording() -> &'static Recording {
    static REC: OnceLock<Recording> = OnceLock::new();
    REC.get_or_init(|| {
        realistic(
            Shape {
                streams: 3,
                blocks_per_stream: 6,
                buffer_bytes: 16 * 1024,
                block_duration: Duration::seconds(1),
            },
            Utc::now() - Duration::hours(2),
            5,
        )
    })
}

struct Server {
    addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn serve(lake: &Lake, options: ServerOptions) -> Server {
    serve_service(AsyncEventsFlightSql::new(lake.clone(), options).unwrap()).await
}

/// Serves `service` (a clone of it still sees what the server shares between requests).
async fn serve_service(service: AsyncEventsFlightSql) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(service.serve(listener, async {
        let _ = stopped.await;
    }));
    Server { addr, _stop: stop }
}

async fn client(server: &Server) -> FlightSqlServiceClient<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    FlightSqlServiceClient::new(channel)
}

/// What the micromegas client sends: one DoGet of `Any(TicketStatementQuery{sql})`.
async fn do_get(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> Result<Vec<RecordBatch>, Code> {
    let ticket = statement_ticket(sql.as_bytes().to_vec());
    let stream = client.do_get(ticket).await.map_err(code)?;
    stream.try_collect().await.map_err(code)
}

/// What the micromegas client sends as a ticket: `Any(TicketStatementQuery{sql})`.
fn statement_ticket(sql: impl Into<Vec<u8>>) -> Ticket {
    let handle: Vec<u8> = sql.into();
    Ticket::new(
        TicketStatementQuery {
            statement_handle: handle.into(),
        }
        .as_any()
        .encode_to_vec(),
    )
}

fn code(e: FlightError) -> Code {
    match e {
        FlightError::Tonic(status) => status.code(),
        other => panic!("not a status: {other}"),
    }
}

async fn message(client: &mut FlightSqlServiceClient<Channel>, sql: &str) -> (Code, String) {
    let ticket = statement_ticket(sql.as_bytes().to_vec());
    let result = match client.do_get(ticket).await {
        Ok(stream) => stream.try_collect::<Vec<_>>().await.map(|_| ()),
        Err(e) => Err(e),
    };
    match result {
        Err(FlightError::Tonic(status)) => (status.code(), status.message().to_owned()),
        other => panic!("{sql}: expected a status, got {other:?}"),
    }
}

async fn lake_with_recording(backend: Backend) -> (TestLake, uuid::Uuid) {
    let t = open(backend).await;
    store(&t.lake, recording()).await;
    (t, recording().process.process_id)
}

fn count(batches: &[RecordBatch]) -> i64 {
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

on_both! {
    async fn answers_equal_the_library_on_the_same_lake(backend: Backend) {
        let (t, pid) = lake_with_recording(backend).await;
        let server = serve(&t.lake, ServerOptions::default()).await;
        let mut client = client(&server).await;
        let ctx = context(&t.lake);
        for sql in [
            format!("SELECT * FROM view_instance('async_events', '{pid}') ORDER BY time, span_id, event_type LIMIT 10"),
            format!("SELECT event_type, count(*) AS n FROM async_events('{pid}') GROUP BY event_type ORDER BY event_type"),
            format!("SELECT b.name, count(*) AS n, sum(CAST(e.time - b.time AS BIGINT)) AS total
                     FROM async_events('{pid}') b JOIN async_events('{pid}') e ON b.span_id = e.span_id
                     WHERE b.event_type = 'begin' AND e.event_type = 'end' GROUP BY b.name ORDER BY b.name"),
            format!("SELECT c.name, p.name AS parent FROM async_events('{pid}') c JOIN async_events('{pid}') p
                     ON c.parent_span_id = p.span_id WHERE c.event_type = 'begin' AND p.event_type = 'begin'
                     ORDER BY c.time, c.span_id"),
        ] {
            let expected = lines(&query(&ctx, &sql).await);
            assert!(expected.len() > 1, "{sql}: {expected:?}");
            let got = do_get(&mut client, &sql).await.unwrap();
            assert_eq!(lines(&got), expected, "{sql}");
            // The generic path: GetFlightInfo, then DoGet of its ticket.
            let info = client.execute(sql.clone(), None).await.unwrap();
            let ticket = info.endpoint[0].ticket.clone().unwrap();
            let schema = info.clone().try_decode_schema().unwrap();
            let batches: Vec<RecordBatch> =
                client.do_get(ticket).await.unwrap().try_collect().await.unwrap();
            assert_eq!(lines(&batches), expected, "{sql}");
            assert_eq!(batches[0].schema().fields(), schema.fields(), "{sql}");
        }
        // Prepared statements: the handle is the SQL, the schema is real.
        let sql = format!("SELECT time, name FROM async_events('{pid}') ORDER BY time LIMIT 3");
        let mut prepared = client.prepare(sql.clone(), None).await.unwrap();
        assert_eq!(prepared.dataset_schema().unwrap().field(1).name(), "name");
        let info = prepared.execute().await.unwrap();
        let batches: Vec<RecordBatch> = client
            .do_get(info.endpoint[0].ticket.clone().unwrap())
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(lines(&batches), lines(&query(&ctx, &sql).await));
    }

    async fn errors_are_statuses_with_one_line(backend: Backend) {
        let (t, pid) = lake_with_recording(backend).await;
        let server = serve(&t.lake, ServerOptions::default()).await;
        let mut client = client(&server).await;
        let unknown = uuid::Uuid::new_v4();
        let (code, text) = message(&mut client, &format!("SELECT * FROM async_events('{unknown}')")).await;
        assert_eq!(code, Code::NotFound, "{text}");
        assert!(text.contains(&unknown.to_string()), "{text}");
        for (sql, wanted) in [
            ("SELEC 1".to_string(), "SQL"),
            ("SELECT * FROM async_events('global')".to_string(), "'global' is not supported"),
            (format!("SELECT nope FROM async_events('{pid}')"), "nope"),
            ("CREATE TABLE t AS SELECT 1".to_string(), "DDL not supported"),
            ("CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'".to_string(), "DDL not supported"),
            ("COPY (SELECT 1) TO '/tmp/async-events-flight-copy.csv'".to_string(), "DML not supported"),
            ("INSERT INTO processes SELECT * FROM processes".to_string(), "not supported"),
            ("SET datafusion.execution.batch_size = 1".to_string(), "Statement not supported"),
        ] {
            let (code, text) = message(&mut client, &sql).await;
            assert_eq!(code, Code::InvalidArgument, "{sql}: {text}");
            assert!(text.contains(wanted), "{sql}: {text}");
            assert!(!text.contains('\n'), "{text}");
        }
        assert!(!std::path::Path::new("/tmp/async-events-flight-copy.csv").exists());
        // A bad range header.
        client.set_header("query_range_begin", "yesterday");
        client.set_header("query_range_end", "today");
        let (code, text) = message(&mut client, "SELECT 1").await;
        assert_eq!(code, Code::InvalidArgument, "{text}");
        assert!(text.contains("query_range_begin"), "{text}");
    }

    async fn the_query_range_bounds_every_scan(backend: Backend) {
        let (t, pid) = lake_with_recording(backend).await;
        let server = serve(&t.lake, ServerOptions::default()).await;
        let mut client = client(&server).await;
        let ctx = context(&t.lake);
        let start = recording().process.start_time;
        let at = |ms: i64| (start + Duration::milliseconds(ms)).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let (begin, end) = (at(1_500), at(3_200));
        let sql = format!("SELECT count(*) FROM async_events('{pid}')");
        let all = count(&query(&ctx, &sql).await);
        let bounded = count(&query(&ctx, &format!("{sql} WHERE time BETWEEN '{begin}' AND '{end}'")).await);
        assert!(0 < bounded && bounded < all, "{bounded} of {all}");
        client.set_header("query_range_begin", begin.clone());
        // One end only: ignored, as micromegas does.
        assert_eq!(count(&do_get(&mut client, &sql).await.unwrap()), all);
        client.set_header("query_range_end", end.clone());
        assert_eq!(count(&do_get(&mut client, &sql).await.unwrap()), bounded);
        // On top of the query's own filters, on both sides of a self-join.
        let narrower = format!("{sql} WHERE time >= '{}'", at(3_000));
        let expected = count(&query(&ctx, &format!("{narrower} AND time <= '{end}'")).await);
        assert_eq!(count(&do_get(&mut client, &narrower).await.unwrap()), expected);
        let join = format!("SELECT count(*) FROM async_events('{pid}') b JOIN async_events('{pid}') e
                            ON b.span_id = e.span_id WHERE b.event_type = 'begin' AND e.event_type = 'end'");
        let expected_join = count(&query(&ctx, &format!(
            "SELECT count(*) FROM async_events('{pid}', '{begin}', '{end}') b JOIN async_events('{pid}', '{begin}', '{end}') e
             ON b.span_id = e.span_id WHERE b.event_type = 'begin' AND e.event_type = 'end'")).await);
        assert_eq!(count(&do_get(&mut client, &join).await.unwrap()), expected_join);
    }

    async fn dictionaries_are_plain_strings_unless_preserved(backend: Backend) {
        let (t, pid) = lake_with_recording(backend).await;
        let server = serve(&t.lake, ServerOptions::default()).await;
        let mut client = client(&server).await;
        let sql = format!("SELECT name, event_type, span_id FROM async_events('{pid}') ORDER BY time LIMIT 50");
        let plain = do_get(&mut client, &sql).await.unwrap();
        assert_eq!(plain[0].schema().field(0).data_type(), &DataType::Utf8);
        client.set_header("preserve_dictionary", "true");
        let kept = do_get(&mut client, &sql).await.unwrap();
        assert!(matches!(kept[0].schema().field(0).data_type(), DataType::Dictionary(..)));
        assert_eq!(lines(&kept), lines(&plain));
        assert_eq!(lines(&plain), lines(&query(&context(&t.lake), &sql).await));
    }

    async fn requests_share_the_compiled_layouts(backend: Backend) {
        let (t, pid) = lake_with_recording(backend).await;
        let service = AsyncEventsFlightSql::new(t.lake.clone(), ServerOptions::default()).unwrap();
        let probe = service.clone();
        let server = serve_service(service).await;
        let streams = recording().streams.len();
        assert_eq!(probe.layouts_compiled(), 0);
        let sql = format!("SELECT count(*) FROM async_events('{pid}')");
        let first = do_get(&mut client(&server).await, &sql).await.unwrap();
        assert_eq!(probe.layouts_compiled(), streams, "one compilation per stream");
        // Another request, another connection, another query shape: nothing is compiled again.
        let spans = format!("SELECT count(*) FROM async_spans('{pid}')");
        do_get(&mut client(&server).await, &spans).await.unwrap();
        let second = do_get(&mut client(&server).await, &sql).await.unwrap();
        assert_eq!(count(&first), count(&second));
        assert!(count(&first) > 0);
        assert_eq!(probe.layouts_compiled(), streams, "compiled once per server, not per request");
        // Without the cache (a benchmark's baseline) the answers are the same, and the
        // server's cache is never used.
        let options = ServerOptions { cache_layouts: false, ..ServerOptions::default() };
        let service = AsyncEventsFlightSql::new(t.lake.clone(), options).unwrap();
        let probe = service.clone();
        let uncached = serve_service(service).await;
        let third = do_get(&mut client(&uncached).await, &sql).await.unwrap();
        assert_eq!(count(&third), count(&first));
        assert_eq!(probe.layouts_compiled(), 0);
    }

    async fn metadata_tables_list_the_lake(backend: Backend) {
        let (t, pid) = lake_with_recording(backend).await;
        let server = serve(&t.lake, ServerOptions::default()).await;
        let mut client = client(&server).await;
        let rec = recording();
        let got = do_get(&mut client, &format!(
            "SELECT process_id, exe, tsc_frequency FROM processes WHERE process_id = '{pid}'")).await.unwrap();
        assert_eq!(lines(&got), [format!("{pid}|{}|{}", rec.process.exe, rec.process.tsc_frequency)]);
        let streams = do_get(&mut client, &format!(
            "SELECT count(*) FROM streams WHERE process_id = '{pid}' AND array_position(tags, 'cpu') IS NOT NULL")).await.unwrap();
        assert_eq!(count(&streams), rec.streams.len() as i64);
        let blocks = do_get(&mut client, &format!(
            "SELECT count(*), sum(nb_objects) FROM blocks WHERE process_id = '{pid}'")).await.unwrap();
        assert_eq!(count(&blocks), rec.blocks.len() as i64);
        let stream = rec.streams[0].stream_id;
        let cut = rec.blocks.iter().filter(|b| b.stream_id == stream).map(|b| b.begin_time).nth(2).unwrap();
        let cut_text = cut.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let later = do_get(&mut client, &format!(
            "SELECT block_id, \"processes.exe\", \"streams.tags\" FROM blocks
             WHERE stream_id = '{stream}' AND begin_time >= '{cut_text}' ORDER BY begin_time")).await.unwrap();
        let expected = rec.blocks.iter().filter(|b| b.stream_id == stream && b.begin_time >= cut).count();
        assert_eq!(lines(&later).len(), expected);
        assert!(lines(&later)[0].contains(&rec.process.exe), "{:?}", lines(&later));
        // An id that is not canonical still compares as a string.
        let upper = do_get(&mut client, &format!(
            "SELECT count(*) FROM processes WHERE process_id = '{}'", pid.to_string().to_uppercase())).await.unwrap();
        assert_eq!(count(&upper), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lake_failure_is_unavailable() {
    let (t, pid) = lake_with_recording(Backend::Sqlite).await;
    let server = serve(&t.lake, ServerOptions::default()).await;
    let mut client = client(&server).await;
    std::fs::remove_dir_all(t.dir.path().join("blobs")).unwrap();
    let (code, text) = message(&mut client, &format!("SELECT * FROM async_events('{pid}')")).await;
    assert_eq!(code, Code::Unavailable, "{text}");
    assert!(
        text.contains("block") && text.contains(&pid.to_string()),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_required_on_every_call() {
    let (t, pid) = lake_with_recording(Backend::Sqlite).await;
    let options = ServerOptions {
        token: Some("s3cret-token".into()),
        ..ServerOptions::default()
    };
    let server = serve(&t.lake, options).await;
    let sql = format!("SELECT count(*) FROM async_events('{pid}')");
    let mut anonymous = client(&server).await;
    assert_eq!(
        do_get(&mut anonymous, &sql).await.unwrap_err(),
        Code::Unauthenticated
    );
    assert!(anonymous.execute(sql.clone(), None).await.is_err());
    let mut wrong = client(&server).await;
    wrong.set_token("s3cret-tokem".into());
    assert_eq!(
        do_get(&mut wrong, &sql).await.unwrap_err(),
        Code::Unauthenticated
    );
    // RFC 7235: the scheme is matched in any case.
    let mut lower = client(&server).await;
    lower.set_header("authorization", "bearer s3cret-token");
    assert!(do_get(&mut lower, &sql).await.is_ok());
    let mut right = client(&server).await;
    right.set_token("s3cret-token".into());
    let all = count(&query(&context(&t.lake), &sql).await);
    assert_eq!(count(&do_get(&mut right, &sql).await.unwrap()), all);
    assert!(right.execute(sql, None).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_frees_its_slot_and_excess_queries_wait_then_fail() {
    let (t, pid) = lake_with_recording(Backend::Sqlite).await;
    let options = ServerOptions {
        max_concurrent_queries: 1,
        queue_timeout: std::time::Duration::from_millis(500),
        ..ServerOptions::default()
    };
    let server = serve(&t.lake, options).await;
    // Far more rows than a client reads: the query stays open while its stream is held.
    let big = format!(
        "SELECT e.time, g.value FROM async_events('{pid}') e CROSS JOIN generate_series(1, 100000) g"
    );
    let small = format!("SELECT count(*) FROM async_events('{pid}')");
    let mut first = client(&server).await;
    let ticket = statement_ticket(big.into_bytes());
    let mut stream = first.do_get(ticket).await.unwrap();
    let batch = stream.next().await.unwrap().unwrap();
    assert!(batch.num_rows() > 0);
    // The only slot is taken: another query waits, then gives up.
    let mut second = client(&server).await;
    assert_eq!(
        do_get(&mut second, &small).await.unwrap_err(),
        Code::ResourceExhausted
    );
    // The first client goes away: its query is dropped and the slot is free again.
    drop(stream);
    drop(first);
    let expected = count(&query(&context(&t.lake), &small).await);
    assert_eq!(count(&do_get(&mut second, &small).await.unwrap()), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_beyond_its_memory_is_resource_exhausted() {
    let (t, pid) = lake_with_recording(Backend::Sqlite).await;
    let options = ServerOptions {
        query_memory: Some(64 * 1024),
        ..ServerOptions::default()
    };
    let server = serve(&t.lake, options).await;
    let mut client = client(&server).await;
    // A hash join keeps its build side in memory: far more than 64 KiB here.
    let join = format!(
        "SELECT count(*) FROM async_events('{pid}') b JOIN async_events('{pid}') e ON b.span_id = e.span_id"
    );
    let (code, text) = message(&mut client, &join).await;
    assert_eq!(code, Code::ResourceExhausted, "{text}");
    // The scan's blocks are counted too: 64 KiB does not hold even one, and the error says
    // which block did not fit.
    let (code, text) = message(
        &mut client,
        &format!("SELECT count(*) FROM async_events('{pid}')"),
    )
    .await;
    assert_eq!(code, Code::ResourceExhausted, "{text}");
    assert!(
        text.contains("block ") && text.contains(&pid.to_string()),
        "{text}"
    );
}

/// A query that never ends by itself: counts 2^63 numbers.
const ENDLESS: &str = "SELECT count(*) FROM generate_series(1, 9223372036854775807)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_query_is_cancelled_at_the_query_timeout_and_frees_its_slot() {
    common::logs::start();
    let (t, pid) = lake_with_recording(Backend::Sqlite).await;
    let options = ServerOptions {
        max_concurrent_queries: 1,
        query_timeout: Some(std::time::Duration::from_millis(400)),
        queue_timeout: std::time::Duration::from_secs(10),
        ..ServerOptions::default()
    };
    let service = AsyncEventsFlightSql::new(t.lake.clone(), options).unwrap();
    let server = serve_service(service.clone()).await;
    let mut endless = client(&server).await;
    let (code, text) = message(&mut endless, ENDLESS).await;
    assert_eq!(code, Code::DeadlineExceeded, "{text}");
    assert!(text.contains("query timeout (0.4 s"), "{text}");
    // The only slot is free again, and the query's memory was given back.
    let small = format!("SELECT count(*) FROM async_events('{pid}')");
    let mut next = client(&server).await;
    let expected = count(&query(&context(&t.lake), &small).await);
    assert_eq!(count(&do_get(&mut next, &small).await.unwrap()), expected);
    assert_eq!(service.memory_reserved(), 0);
    let logged = common::logs::containing("outcome=deadline");
    assert!(
        logged
            .iter()
            .any(|l| l.contains("generate_series") && l.contains("code=DeadlineExceeded")),
        "{logged:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_own_deadline_cancels_its_query() {
    let (t, _) = lake_with_recording(Backend::Sqlite).await;
    let options = ServerOptions {
        query_timeout: None,
        ..ServerOptions::default()
    };
    let server = serve(&t.lake, options).await;
    let mut client = client(&server).await;
    client.set_header("grpc-timeout", "300m");
    let (code, text) = message(&mut client, ENDLESS).await;
    assert_eq!(code, Code::DeadlineExceeded, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_loses_its_query_after_the_idle_timeout() {
    common::logs::start();
    let (t, pid) = lake_with_recording(Backend::Sqlite).await;
    let options = ServerOptions {
        max_concurrent_queries: 1,
        idle_timeout: Some(std::time::Duration::from_millis(300)),
        queue_timeout: std::time::Duration::from_secs(10),
        ..ServerOptions::default()
    };
    let server = serve(&t.lake, options).await;
    let mut reader = client(&server).await;
    // About 800 MB of numbers: far more than the connection's buffers hold.
    let sql = "SELECT value, value * 2 AS twice FROM generate_series(1, 50000000)";
    let ticket = statement_ticket(sql.as_bytes().to_vec());
    let mut stream = reader.do_get(ticket).await.unwrap();
    assert!(stream.next().await.unwrap().unwrap().num_rows() > 0);
    // The stream stays open but unread: the slot comes back when the idle timeout passes.
    let small = format!("SELECT count(*) FROM async_events('{pid}')");
    let mut next = client(&server).await;
    let waited = std::time::Instant::now();
    let expected = count(&query(&context(&t.lake), &small).await);
    assert_eq!(count(&do_get(&mut next, &small).await.unwrap()), expected);
    assert!(waited.elapsed() >= std::time::Duration::from_millis(200));
    let logged = common::logs::containing("outcome=idle");
    assert!(logged.iter().any(|l| l.contains("50000000")), "{logged:?}");
    drop(stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_arrays_from_literals_are_refused_at_planning() {
    let (t, _) = lake_with_recording(Backend::Sqlite).await;
    let server = serve(&t.lake, ServerOptions::default()).await;
    let mut client = client(&server).await;
    let (code, text) = message(&mut client, "SELECT cardinality(range(0, 3000000000))").await;
    assert_eq!(code, Code::ResourceExhausted, "{text}");
    assert!(text.contains("at most 16777216"), "{text}");
    let small = do_get(&mut client, "SELECT cardinality(range(0, 1000))")
        .await
        .unwrap();
    assert_eq!(
        small[0]
            .column(0)
            .as_primitive::<datafusion::arrow::datatypes::UInt64Type>()
            .value(0),
        1000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_memory_pool_bounds_all_queries() {
    let (t, pid) = lake_with_recording(Backend::Sqlite).await;
    let options = ServerOptions {
        memory_limit: Some(64 * 1024),
        query_memory: None,
        ..ServerOptions::default()
    };
    let server = serve(&t.lake, options).await;
    let mut client = client(&server).await;
    let join = format!(
        "SELECT count(*) FROM async_events('{pid}') b JOIN async_events('{pid}') e ON b.span_id = e.span_id"
    );
    let (code, text) = message(&mut client, &join).await;
    assert_eq!(code, Code::ResourceExhausted, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_dictionaries_are_advertised_as_they_are_sent() {
    let (t, pid) = lake_with_recording(Backend::Sqlite).await;
    let server = serve(&t.lake, ServerOptions::default()).await;
    let mut client = client(&server).await;
    let sql = format!(
        "SELECT stream_id, array_agg(name) AS names FROM async_events('{pid}') GROUP BY stream_id"
    );
    let info = client.execute(sql, None).await.unwrap();
    let advertised = info.clone().try_decode_schema().unwrap();
    assert!(
        matches!(advertised.field_with_name("names").unwrap().data_type(),
            DataType::List(item) if item.data_type() == &DataType::Utf8),
        "{advertised:?}"
    );
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let batches: Vec<RecordBatch> = client
        .do_get(ticket)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(!batches.is_empty());
    for batch in &batches {
        assert_eq!(batch.schema().as_ref(), &advertised);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_block_is_data_loss_and_the_message_hides_the_store() {
    let (t, pid) = lake_with_recording(Backend::Sqlite).await;
    let server = serve(&t.lake, ServerOptions::default()).await;
    let mut client = client(&server).await;
    let blobs = t.dir.path().join("blobs").join(pid.to_string());
    let stream = std::fs::read_dir(&blobs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let block = std::fs::read_dir(&stream)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(&block, b"not a block").unwrap();
    let (code, text) = message(&mut client, &format!("SELECT * FROM async_events('{pid}')")).await;
    assert_eq!(code, Code::DataLoss, "{text}");
    let block_id = block.file_name().unwrap().to_str().unwrap();
    assert!(text.contains(block_id), "{text}");
    let dir = t.dir.path().to_str().unwrap();
    assert!(!text.contains(dir), "{text}");
}

/// Every batch a `FlightInfo`'s tickets give.
async fn fetch_all(
    client: &mut FlightSqlServiceClient<Channel>,
    info: arrow_flight::FlightInfo,
) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    for endpoint in info.endpoint {
        let stream = client.do_get(endpoint.ticket.unwrap()).await.unwrap();
        out.extend(stream.try_collect::<Vec<_>>().await.unwrap());
    }
    out
}

fn total_rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

fn strings(batches: &[RecordBatch], column: &str) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let c = datafusion::arrow::compute::cast(
                b.column_by_name(column).unwrap(),
                &DataType::Utf8,
            )
            .unwrap();
            let c = c.as_string::<i32>().clone();
            (0..c.len())
                .map(move |i| c.value(i).to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_commands_list_the_sessions_tables() {
    use arrow_flight::sql::{CommandGetDbSchemas, CommandGetTables, SqlInfo};
    let (t, _) = lake_with_recording(Backend::Sqlite).await;
    let server = serve(&t.lake, ServerOptions::default()).await;
    let mut client = client(&server).await;
    let info = client.get_catalogs().await.unwrap();
    let catalogs = strings(&fetch_all(&mut client, info).await, "catalog_name");
    assert_eq!(catalogs, ["datafusion"]);
    let info = client
        .get_db_schemas(CommandGetDbSchemas {
            catalog: None,
            db_schema_filter_pattern: Some("pub%".into()),
        })
        .await
        .unwrap();
    let schemas = strings(&fetch_all(&mut client, info).await, "db_schema_name");
    assert_eq!(schemas, ["public"]);
    let info = client
        .get_tables(CommandGetTables {
            catalog: None,
            db_schema_filter_pattern: Some("public".into()),
            table_name_filter_pattern: None,
            table_types: vec![],
            include_schema: true,
        })
        .await
        .unwrap();
    let batches = fetch_all(&mut client, info).await;
    let mut names = strings(&batches, "table_name");
    names.sort();
    assert_eq!(names, ["blocks", "processes", "streams", "table_functions"]);
    // Each table's schema, as IPC: the same as a query of the table sends.
    let schemas = batches[0]
        .column_by_name("table_schema")
        .unwrap()
        .as_binary::<i32>();
    let names_col = strings(&batches, "table_name");
    let streams = names_col.iter().position(|n| n == "streams").unwrap();
    let decoded =
        datafusion::arrow::ipc::convert::try_schema_from_ipc_buffer(schemas.value(streams))
            .unwrap();
    let queried = client
        .execute("SELECT * FROM streams".into(), None)
        .await
        .unwrap()
        .try_decode_schema()
        .unwrap();
    let field_names = |s: &datafusion::arrow::datatypes::Schema| {
        s.fields()
            .iter()
            .map(|f| f.name().clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(field_names(&decoded), field_names(&queried));
    let info = client.get_table_types().await.unwrap();
    let types = strings(&fetch_all(&mut client, info).await, "table_type");
    assert!(types.contains(&"TABLE".to_owned()) && types.contains(&"VIEW".to_owned()));
    let info = client
        .get_sql_info(vec![
            SqlInfo::FlightSqlServerName,
            SqlInfo::FlightSqlServerReadOnly,
        ])
        .await
        .unwrap();
    let batches = fetch_all(&mut client, info).await;
    assert_eq!(total_rows(&batches), 2);
    // No keys here: answered empty, not unimplemented.
    let info = client
        .get_primary_keys(arrow_flight::sql::CommandGetPrimaryKeys {
            catalog: None,
            db_schema: None,
            table: "blocks".into(),
        })
        .await
        .unwrap();
    let keys = fetch_all(&mut client, info).await;
    assert_eq!(total_rows(&keys), 0);
    let info = client
        .get_imported_keys(arrow_flight::sql::CommandGetImportedKeys {
            catalog: None,
            db_schema: None,
            table: "blocks".into(),
        })
        .await
        .unwrap();
    let schema = info.clone().try_decode_schema().unwrap();
    assert!(schema.field_with_name("fk_table_name").is_ok());
    assert_eq!(total_rows(&fetch_all(&mut client, info).await), 0);
    // information_schema answers, for the tools that read it instead.
    let routines = do_get(
        &mut client,
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'blocks'",
    )
    .await
    .unwrap();
    assert_eq!(count(&routines), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_the_server_lists_is_one_its_sql_accepts() {
    use arrow_flight::sql::{CommandGetXdbcTypeInfo, XdbcDataType};
    let (t, _) = lake_with_recording(Backend::Sqlite).await;
    let server = serve(&t.lake, ServerOptions::default()).await;
    let mut client = client(&server).await;
    let info = client
        .get_xdbc_type_info(CommandGetXdbcTypeInfo { data_type: None })
        .await
        .unwrap();
    let batches = fetch_all(&mut client, info).await;
    let names = strings(&batches, "type_name");
    assert!(names.len() >= 10, "{names:?}");
    for name in ["BIGINT", "VARCHAR", "TIMESTAMP", "DOUBLE", "BOOLEAN"] {
        assert!(names.iter().any(|n| n == name), "{name} missing: {names:?}");
    }
    // Each name is one the server's SQL takes in a CAST.
    for name in &names {
        let sql = format!("SELECT CAST(NULL AS {name}) AS v");
        let batches = do_get(&mut client, &sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        assert_eq!(total_rows(&batches), 1, "{sql}");
    }
    // Rows come ordered by data type, as the specification asks, and a filter keeps one kind.
    let codes: Vec<i32> = batches
        .iter()
        .flat_map(|b| {
            let c = b.column_by_name("data_type").unwrap();
            c.as_primitive::<datafusion::arrow::datatypes::Int32Type>()
                .values()
                .to_vec()
        })
        .collect();
    assert!(codes.is_sorted(), "{codes:?}");
    let varchar = XdbcDataType::XdbcVarchar as i32;
    let info = client
        .get_xdbc_type_info(CommandGetXdbcTypeInfo {
            data_type: Some(varchar),
        })
        .await
        .unwrap();
    let filtered = fetch_all(&mut client, info).await;
    assert_eq!(strings(&filtered, "type_name"), ["VARCHAR"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_bind_parameters() {
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};
    let (t, pid) = lake_with_recording(Backend::Sqlite).await;
    let server = serve(&t.lake, ServerOptions::default()).await;
    let mut client = client(&server).await;
    let ctx = context(&t.lake);
    for sql in [
        format!("SELECT count(*) FROM async_events('{pid}') WHERE depth = $1 AND event_type = $2"),
        format!("SELECT count(*) FROM async_events('{pid}') WHERE depth = ? AND event_type = ?"),
    ] {
        let mut prepared = client.prepare(sql.clone(), None).await.unwrap();
        let parameters = prepared.parameter_schema().unwrap().clone();
        assert_eq!(parameters.fields().len(), 2, "{parameters:?}");
        for (depth, event_type) in [(0i64, "begin"), (1, "end")] {
            let schema = Arc::new(Schema::new(vec![
                Field::new("$1", DataType::Int64, true),
                Field::new("$2", DataType::Utf8, true),
            ]));
            let batch = RecordBatch::try_new(
                schema,
                vec![
                    Arc::new(Int64Array::from(vec![depth])),
                    Arc::new(StringArray::from(vec![event_type])),
                ],
            )
            .unwrap();
            prepared.set_parameters(batch).unwrap();
            let info = prepared.execute().await.unwrap();
            let got = count(&fetch_all(&mut client, info).await);
            let expected = count(
                &query(
                    &ctx,
                    &format!(
                        "SELECT count(*) FROM async_events('{pid}') WHERE depth = {depth} AND event_type = '{event_type}'"
                    ),
                )
                .await,
            );
            assert!(expected > 0);
            assert_eq!(got, expected, "{sql} with ({depth}, {event_type})");
        }
    } // Floats, booleans and timestamps, each against the same query with a literal.
    use datafusion::arrow::array::{
        ArrayRef, BooleanArray, Float64Array, TimestampNanosecondArray,
    };
    let middle = count(
        &query(
            &ctx,
            &format!("SELECT CAST(avg(CAST(time AS BIGINT)) AS BIGINT) FROM async_events('{pid}')"),
        )
        .await,
    );
    let cases: Vec<(String, ArrayRef, String)> = vec![
        (
            format!("SELECT count(*) FROM async_events('{pid}') WHERE depth < ?"),
            Arc::new(Float64Array::from(vec![1.5])),
            format!("SELECT count(*) FROM async_events('{pid}') WHERE depth < 1.5"),
        ),
        (
            format!("SELECT count(*) FROM async_events('{pid}') WHERE (event_type = 'begin') = ?"),
            Arc::new(BooleanArray::from(vec![false])),
            format!("SELECT count(*) FROM async_events('{pid}') WHERE event_type <> 'begin'"),
        ),
        (
            format!("SELECT count(*) FROM async_events('{pid}') WHERE time > $1"),
            Arc::new(TimestampNanosecondArray::from(vec![middle]).with_timezone("+00:00")),
            format!(
                "SELECT count(*) FROM async_events('{pid}') WHERE CAST(time AS BIGINT) > {middle}"
            ),
        ),
    ];
    for (sql, value, reference) in cases {
        let mut prepared = client.prepare(sql.clone(), None).await.unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new(
            "$1",
            value.data_type().clone(),
            true,
        )]));
        prepared
            .set_parameters(RecordBatch::try_new(schema, vec![value]).unwrap())
            .unwrap();
        let info = prepared.execute().await.unwrap();
        let got = count(&fetch_all(&mut client, info).await);
        let expected = count(&query(&ctx, &reference).await);
        assert!(expected > 0, "{reference}");
        assert_eq!(got, expected, "{sql}");
    }
    // A table function's arguments as parameters: listed in the parameter schema although the
    // plan no longer holds them, and bound when the statement runs.
    let sql = "SELECT count(*) FROM async_spans(?, ?, NULL) WHERE depth = ?";
    let mut prepared = client.prepare(sql.into(), None).await.unwrap();
    let parameters = prepared.parameter_schema().unwrap().clone();
    let names: Vec<&str> = parameters
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(names, ["$1", "$2", "$3"]);
    let values: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![pid.to_string()])),
        Arc::new(StringArray::from(vec!["2000-01-01T00:00:00Z"])),
        Arc::new(Int64Array::from(vec![1])),
    ];
    let schema = Arc::new(Schema::new(
        values
            .iter()
            .enumerate()
            .map(|(i, v)| Field::new(format!("${}", i + 1), v.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    prepared
        .set_parameters(RecordBatch::try_new(schema, values).unwrap())
        .unwrap();
    let info = prepared.execute().await.unwrap();
    let got = count(&fetch_all(&mut client, info).await);
    let expected = count(
        &query(
            &ctx,
            &format!("SELECT count(*) FROM async_spans('{pid}') WHERE depth = 1"),
        )
        .await,
    );
    assert!(expected > 0);
    assert_eq!(got, expected, "{sql}");
}
