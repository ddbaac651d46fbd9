//! A Flight SQL server over a lake, for the micromegas Python client, ADBC, `pyarrow.flight`
//! and other Flight SQL clients (feature `server`).
//!
//! Each query gets a fresh `SessionContext` with the table functions (`async_events`,
//! `view_instance`, `thread_streams`) and the `processes`, `streams` and `blocks` tables, and
//! runs read-only: DDL, DML and statements (`SET`, `COPY`, `CREATE EXTERNAL TABLE`, …) are
//! refused. Results are streamed batch by batch.
//!
//! What a query may cost: a slot among [`ServerOptions::max_concurrent_queries`]; a deadline
//! (the server's query timeout or the client's gRPC deadline, the nearer), after which it is
//! cancelled and the client gets `DEADLINE_EXCEEDED`; an idle timeout on a client that stops
//! reading; a share of the one memory pool of the server; no function call that would build a
//! huge array from literal arguments ([`MAX_LITERAL_ALLOCATION`]). A client that goes away
//! cancels its query. Each query ends with one log line (id, client, outcome, rows, bytes,
//! duration, SQL).
//!
//! What the micromegas client sends, and how it is read here:
//! - `DoGet` of `Any(TicketStatementQuery { statement_handle: <SQL> })` (`query`,
//!   `query_stream`), also as a raw, un-wrapped `TicketStatementQuery`;
//! - `GetFlightInfo(CommandStatementQuery)` (generic clients): the real schema and a ticket as
//!   above; prepared statements whose handle is the SQL text;
//! - headers `query_range_begin` / `query_range_end` (RFC 3339; used only when both are
//!   present, as micromegas does): every `async_events` scan of the query is bounded by the
//!   range, inclusive, on top of the SQL's own filters;
//! - `preserve_dictionary: true` keeps dictionary-encoded columns; otherwise they are sent as
//!   their value type (plain strings);
//! - `authorization: Bearer <token>` when the server has a token;
//! - `x-client-*` labels, logged at debug level.

mod auth;
mod catalog;
mod limits;
mod query;
mod statement;
mod status;

pub use auth::BearerAuth;
pub use limits::MAX_LITERAL_ALLOCATION;
pub use status::status_of;

use limits::{QueryPool, client_deadline, refuse_oversized_calls};
use query::{Limit, QueryLog, QueryStream, Run};
use statement::{Statement, first_row, number_placeholders, parameter_schema};
use status::Redactor;

use crate::lake::Lake;
use crate::metadata_tables::register_metadata_tables;
use crate::provider::ScanOptions;
use crate::time_bounds::{TimeBounds, parse_time};
use crate::udtf::{BoundParameters, TableFunctions};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::metadata::{SqlInfoData, XdbcTypeInfoData};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetCrossReference,
    CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys, CommandGetPrimaryKeys,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo,
    CommandPreparedStatementQuery, CommandStatementQuery, DoPutPreparedStatementResult,
    ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{FlightDescriptor, FlightEndpoint, FlightInfo, IpcMessage, SchemaAsIpc, Ticket};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{
    FairSpillPool, MemoryPool, TrackConsumersPool, UnboundedMemoryPool,
};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use std::future::Future;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::metadata::MetadataMap;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// Header with the start of the query range (RFC 3339), as the micromegas client sends it.
pub const QUERY_RANGE_BEGIN: &str = "query_range_begin";
/// Header with the end of the query range (RFC 3339).
pub const QUERY_RANGE_END: &str = "query_range_end";
/// Header that keeps dictionary-encoded columns when `true`.
pub const PRESERVE_DICTIONARY: &str = "preserve_dictionary";

/// How the server runs queries.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// How scans read blocks (its `query_range` is replaced by each request's range).
    pub scan: ScanOptions,
    /// Queries running at once; a query beyond waits for a slot.
    pub max_concurrent_queries: usize,
    /// Longest wait for a slot; then the query fails with `ResourceExhausted`.
    pub queue_timeout: Duration,
    /// Memory of all queries together, in bytes (`None`: no limit): one pool, whose spillable
    /// part (sorts, aggregates) is shared fairly between the queries that spill. Every buffer a
    /// query holds (DataFusion's operators, blocks in flight, span maps, metadata listings) is
    /// reserved in it; a query that cannot get what it needs fails with `ResourceExhausted`.
    pub memory_limit: Option<usize>,
    /// The most one query may take of that pool, in bytes (`None`: the whole pool).
    pub query_memory: Option<usize>,
    /// Longest run of a query, from its arrival to its last batch (`None`: none); a client's
    /// own gRPC deadline applies when it is nearer. Past it the query is cancelled and the
    /// client gets `DeadlineExceeded`.
    pub query_timeout: Option<Duration>,
    /// Longest time a client may leave a batch unread before its query is cancelled (`None`:
    /// no limit).
    pub idle_timeout: Option<Duration>,
    /// Where sorts and aggregates that outgrow their memory spill, with a cap; `None`: no
    /// spilling, such a query fails with `ResourceExhausted`.
    pub spill: Option<Spill>,
    /// When set, every call must carry `authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Keep compiled stream layouts across requests (the default). Off, each request compiles
    /// the layouts of the streams it reads: only useful to measure what the cache saves.
    pub cache_layouts: bool,
}

/// Where spill files go, and how much disk they may take in all.
#[derive(Debug, Clone)]
pub struct Spill {
    /// The folder of the spill files (created if missing).
    pub dir: PathBuf,
    /// The most disk all spill files together may take, in bytes.
    pub max_bytes: u64,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            scan: ScanOptions::default(),
            max_concurrent_queries: 8,
            queue_timeout: Duration::from_secs(30),
            memory_limit: Some(4096 * 1024 * 1024),
            query_memory: Some(1024 * 1024 * 1024),
            query_timeout: Some(Duration::from_secs(300)),
            idle_timeout: Some(Duration::from_secs(60)),
            spill: None,
            token: None,
            cache_layouts: true,
        }
    }
}

/// The Flight SQL service: an `arrow_flight::sql::server::FlightSqlService` over a lake.
#[derive(Debug, Clone)]
pub struct AsyncEventsFlightSql {
    lake: Lake,
    options: ServerOptions,
    slots: Arc<Semaphore>,
    /// The table functions of every request, with the caches they share for as long as the
    /// server runs (each stream's layout is compiled once, not once per request).
    functions: TableFunctions,
    /// The memory pool and spill files of all queries.
    runtime: Arc<RuntimeEnv>,
    /// Takes the lake's locations out of messages to clients.
    redactor: Arc<Redactor>,
    /// The id of the next query, for its log line and error messages.
    next_query: Arc<AtomicU64>,
    /// What `GetSqlInfo` and `GetXdbcTypeInfo` answer.
    answers: Arc<FixedAnswers>,
}

/// What `GetSqlInfo` and `GetXdbcTypeInfo` answer, built once (arrow-flight's types have no
/// `Debug`).
struct FixedAnswers {
    sql_info: SqlInfoData,
    xdbc_types: XdbcTypeInfoData,
}

impl std::fmt::Debug for FixedAnswers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FixedAnswers")
    }
}

/// The gRPC service to add to a `tonic` server: the Flight SQL service behind the token check.
pub type FlightSqlServer =
    InterceptedService<FlightServiceServer<AsyncEventsFlightSql>, BearerAuth>;

/// What a request's headers ask for.
#[derive(Debug, Clone, Copy, Default)]
struct RequestSettings {
    query_range: TimeBounds,
    preserve_dictionary: bool,
}

fn header<'a>(metadata: &'a MetadataMap, name: &str) -> Option<&'a str> {
    metadata
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

impl RequestSettings {
    fn from_headers(metadata: &MetadataMap) -> Result<Self, Status> {
        let time = |name: &str| -> Result<Option<i64>, Status> {
            match header(metadata, name) {
                None => Ok(None),
                Some(text) => parse_time(text).map(Some).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "header {name}: '{}' is not an RFC 3339 timestamp such as \
                         '2024-05-01T10:00:00+00:00'",
                        status::one_line(text)
                    ))
                }),
            }
        };
        let begin = time(QUERY_RANGE_BEGIN)?;
        let end = time(QUERY_RANGE_END)?;
        // As micromegas: the range applies only when both ends are given.
        let query_range = match (begin, end) {
            (Some(b), Some(e)) => TimeBounds::new(Some(b), Some(e)),
            _ => TimeBounds::ALL,
        };
        let preserve_dictionary =
            header(metadata, PRESERVE_DICTIONARY).is_some_and(|v| v.eq_ignore_ascii_case("true"));
        Ok(Self {
            query_range,
            preserve_dictionary,
        })
    }
}

/// Who sent a request, for the query's log line: the peer's address and the `x-client-*`
/// labels the micromegas client sends.
fn client_name<T>(request: &Request<T>) -> String {
    let peer = request
        .remote_addr()
        .map_or_else(|| "?".to_owned(), |a| a.to_string());
    let labels = client_labels(request.metadata());
    if labels.is_empty() {
        peer
    } else {
        format!("{peer} {labels}")
    }
}

/// The `x-client-*` labels of a request.
fn client_labels(metadata: &MetadataMap) -> String {
    let mut labels: Vec<String> = metadata
        .iter()
        .filter_map(|kv| match kv {
            tonic::metadata::KeyAndValueRef::Ascii(k, v) if k.as_str().starts_with("x-client-") => {
                Some(format!("{}={}", k.as_str(), v.to_str().unwrap_or("?")))
            }
            _ => None,
        })
        .collect();
    labels.sort();
    labels.join(" ")
}

/// The schema a client receives: dictionaries replaced by their value type at every depth
/// (inside lists, structs and maps too, as the encoder sends them) unless preserved.
fn sent_schema(schema: &Schema, preserve_dictionary: bool) -> Schema {
    if preserve_dictionary {
        return schema.clone();
    }
    let fields: Vec<Field> = schema.fields().iter().map(|f| plain_field(f)).collect();
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

fn plain_field(field: &Field) -> Field {
    field.clone().with_data_type(plain_type(field.data_type()))
}

fn plain_type(data_type: &DataType) -> DataType {
    let inner = |f: &Arc<Field>| Arc::new(plain_field(f));
    match data_type {
        DataType::Dictionary(_, value) => plain_type(value),
        DataType::List(f) => DataType::List(inner(f)),
        DataType::LargeList(f) => DataType::LargeList(inner(f)),
        DataType::ListView(f) => DataType::ListView(inner(f)),
        DataType::LargeListView(f) => DataType::LargeListView(inner(f)),
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(inner(f), *n),
        DataType::Map(f, sorted) => DataType::Map(inner(f), *sorted),
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(inner).collect()),
        other => other.clone(),
    }
}

type FlightDataStream =
    Pin<Box<dyn Stream<Item = Result<arrow_flight::FlightData, Status>> + Send + 'static>>;

/// The server's one runtime: its memory pool and its spill files.
fn server_runtime(options: &ServerOptions) -> datafusion::error::Result<Arc<RuntimeEnv>> {
    let pool: Arc<dyn MemoryPool> = match options.memory_limit {
        // Out-of-memory errors name the five biggest consumers.
        Some(bytes) => Arc::new(TrackConsumersPool::new(
            FairSpillPool::new(bytes),
            NonZeroUsize::new(5).expect("5 is not 0"),
        )),
        None => Arc::new(UnboundedMemoryPool::default()),
    };
    let disk = match &options.spill {
        Some(spill) => {
            std::fs::create_dir_all(&spill.dir)?;
            DiskManagerBuilder::default()
                .with_mode(DiskManagerMode::Directories(vec![spill.dir.clone()]))
                .with_max_temp_directory_size(spill.max_bytes)
        }
        None => DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
    };
    RuntimeEnvBuilder::new()
        .with_memory_pool(pool)
        .with_disk_manager_builder(disk)
        .build_arc()
}

impl AsyncEventsFlightSql {
    /// A service over `lake`; fails when the spill folder cannot be created.
    pub fn new(lake: Lake, options: ServerOptions) -> datafusion::error::Result<Self> {
        let slots = Arc::new(Semaphore::new(options.max_concurrent_queries.max(1)));
        let functions = TableFunctions::new(lake.clone(), options.scan.clone());
        let runtime = server_runtime(&options)?;
        let redactor = Arc::new(Redactor::new(lake.store_url(), lake.database_url()));
        Ok(Self {
            lake,
            options,
            slots,
            functions,
            runtime,
            redactor,
            next_query: Arc::new(AtomicU64::new(1)),
            answers: Arc::new(FixedAnswers {
                sql_info: catalog::sql_info().map_err(status_error)?,
                xdbc_types: catalog::xdbc_type_info().map_err(status_error)?,
            }),
        })
    }

    /// Bytes reserved in the server's memory pool by the queries running now.
    pub fn memory_reserved(&self) -> usize {
        self.runtime.memory_pool.reserved()
    }

    /// Stream layouts compiled since the server started (each stream's once, while it stays in
    /// the bounded cache), whatever the number of requests.
    pub fn layouts_compiled(&self) -> usize {
        self.functions.caches().layouts_compiled()
    }

    /// The gRPC service, with the token check in front of every call.
    pub fn into_service(self) -> FlightSqlServer {
        let auth = BearerAuth::new(self.options.token.clone());
        FlightServiceServer::with_interceptor(self, auth)
    }

    /// Serves on a bound listener until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        // Dead peers are found by HTTP/2 pings and TCP keepalive, and their queries cancelled.
        let incoming = TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(Duration::from_secs(60)))
            .with_keepalive_interval(Some(Duration::from_secs(15)));
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .add_service(self.into_service())
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
    }

    /// A fresh session for one request: the request's share of the server's memory pool, the
    /// server's table functions bounded by the request's range, and the metadata tables.
    fn context(&self, settings: &RequestSettings) -> Result<SessionContext, Status> {
        let share = QueryPool::new(
            self.runtime.memory_pool.clone(),
            self.options.query_memory.unwrap_or(usize::MAX),
        );
        let runtime = RuntimeEnvBuilder::from_runtime_env(&self.runtime)
            .with_memory_pool(Arc::new(share))
            .build_arc()
            .map_err(|e| Status::internal(status::one_line(&e.to_string())))?;
        // information_schema: where SQL tools look for tables, columns and functions.
        let config = SessionConfig::new().with_information_schema(true);
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        let functions = if self.options.cache_layouts {
            self.functions.with_query_range(settings.query_range)
        } else {
            TableFunctions::new(self.lake.clone(), self.options.scan.clone())
                .with_query_range(settings.query_range)
        };
        functions.register(&ctx);
        register_metadata_tables(&ctx, self.lake.clone()).map_err(|e| status_of(&e))?;
        Ok(ctx)
    }

    /// Plans a query, read-only, refusing calls that would build huge arrays.
    /// `?` placeholders are read as `$1`, `$2`, …; bound parameters are applied. While
    /// `preparing`, table function arguments that are placeholders plan tables of no process.
    async fn plan(
        &self,
        statement: &Statement,
        settings: &RequestSettings,
        query_id: u64,
        preparing: bool,
    ) -> Result<DataFrame, Status> {
        let ctx = self.context(settings)?;
        let read_only = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let values = statement.param_values();
        // For table function arguments, which are read while the plan is made.
        let bound = match &values {
            Some(values) => Some(BoundParameters::Values(values.clone())),
            None => preparing.then(BoundParameters::pending),
        };
        if let Some(bound) = bound {
            let state = ctx.state_ref();
            let mut state = state.write();
            state.config_mut().set_extension(Arc::new(bound));
        }
        let mut df = ctx
            .sql_with_options(&number_placeholders(&statement.sql), read_only)
            .await
            .map_err(|e| self.redactor.status(&e, query_id))?;
        if let Some(values) = values {
            df = df
                .with_param_values(values)
                .map_err(|e| self.redactor.status(&e, query_id))?;
        }
        refuse_oversized_calls(df.logical_plan()).map_err(|e| status_of(&e))?;
        Ok(df)
    }

    /// A session for a catalog command.
    fn catalog_context(&self, metadata: &MetadataMap) -> Result<SessionContext, Status> {
        self.context(&RequestSettings::from_headers(metadata)?)
    }

    /// Waits for a query slot, at most the queue timeout.
    async fn slot(&self) -> Result<OwnedSemaphorePermit, Status> {
        match tokio::time::timeout(
            self.options.queue_timeout,
            self.slots.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(Status::unavailable("the server is shutting down")),
            Err(_) => Err(Status::resource_exhausted(format!(
                "the server is busy: {} queries running and none finished within {:?}; retry later",
                self.options.max_concurrent_queries, self.options.queue_timeout
            ))),
        }
    }

    /// Runs a query and streams its batches as Flight data, within its deadline.
    async fn execute<T>(
        &self,
        statement: &Statement,
        request: &Request<T>,
    ) -> Result<Response<FlightDataStream>, Status> {
        let metadata = request.metadata();
        let log = QueryLog {
            id: self.next_query.fetch_add(1, Ordering::Relaxed),
            client: client_name(request),
            sql: statement.sql.clone(),
            started: Instant::now(),
        };
        let limit = Limit::nearest(self.options.query_timeout, client_deadline(metadata));
        let deadline = limit.map(|l| (tokio::time::Instant::now() + l.duration(), l));
        let started = async {
            let settings = RequestSettings::from_headers(metadata)?;
            log::debug!(
                "query {} range={:?} preserve_dictionary={}",
                log.id,
                settings.query_range,
                settings.preserve_dictionary,
            );
            let permit = self.slot().await?;
            let df = self.plan(statement, &settings, log.id, false).await?;
            let batches = df
                .execute_stream()
                .await
                .map_err(|e| self.redactor.status(&e, log.id))?;
            Ok::<_, Status>((settings, permit, batches))
        };
        let started = match deadline {
            Some((at, limit)) => tokio::time::timeout_at(at, started)
                .await
                .unwrap_or_else(|_| Err(limit.exceeded())),
            None => started.await,
        };
        let (settings, permit, batches) = match started {
            Ok(started) => started,
            Err(status) => {
                log.finish("refused", status.code(), 0, 0);
                return Err(status);
            }
        };
        let stream: QueryStream = Run {
            log,
            deadline,
            idle_timeout: self.options.idle_timeout,
            preserve_dictionary: settings.preserve_dictionary,
            redactor: self.redactor.clone(),
            permit,
        }
        .start(batches);
        Ok(Response::new(Box::pin(stream)))
    }

    /// The `FlightInfo` of a query: its schema as sent, and a ticket that runs it.
    async fn flight_info(
        &self,
        statement: &Statement,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let settings = RequestSettings::from_headers(request.metadata())?;
        let id = self.next_query.fetch_add(1, Ordering::Relaxed);
        let df = self.plan(statement, &settings, id, false).await?;
        let schema = sent_schema(df.schema().as_arrow(), settings.preserve_dictionary);
        let ticket = TicketStatementQuery {
            statement_handle: statement.encode()?.into(),
        }
        .as_any()
        .encode_to_vec();
        let info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(status::one_line(&e.to_string())))?
            .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
            .with_descriptor(request.into_inner());
        Ok(Response::new(info))
    }
}

#[tonic::async_trait]
impl FlightSqlService for AsyncEventsFlightSql {
    type FlightService = AsyncEventsFlightSql;

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let statement = Statement::decode(&ticket.statement_handle)?;
        self.execute(&statement, &request).await
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let statement = Statement::decode(&query.prepared_statement_handle)?;
        self.execute(&statement, &request).await
    }

    async fn do_get_fallback(
        &self,
        request: Request<Ticket>,
        message: Any,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        // micromegas's own tickets are a raw `TicketStatementQuery`, not wrapped in `Any`
        // (decoded as an `Any`, the SQL lands in `type_url`).
        let raw =
            TicketStatementQuery::decode(request.get_ref().ticket.as_ref()).map_err(|_| {
                Status::invalid_argument(format!(
                    "unsupported ticket {}: expected a TicketStatementQuery holding SQL",
                    status::one_line(&message.type_url)
                ))
            })?;
        let statement = Statement::decode(&raw.statement_handle)?;
        self.execute(&statement, &request).await
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let statement = Statement {
            sql: query.query,
            parameters: Vec::new(),
        };
        self.flight_info(&statement, request).await
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let statement = Statement::decode(&query.prepared_statement_handle)?;
        self.flight_info(&statement, request).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let settings = RequestSettings::from_headers(request.metadata())?;
        let id = self.next_query.fetch_add(1, Ordering::Relaxed);
        let statement = Statement {
            sql: query.query,
            parameters: Vec::new(),
        };
        let df = self.plan(&statement, &settings, id, true).await?;
        let schema = sent_schema(df.schema().as_arrow(), settings.preserve_dictionary);
        // Placeholders in table function arguments are gone from the plan: noted while planning.
        let in_arguments = df
            .task_ctx()
            .session_config()
            .get_extension::<BoundParameters>()
            .map(|b| b.placeholders_in_arguments())
            .unwrap_or_default();
        let parameters = parameter_schema(df.logical_plan(), &in_arguments)?;
        // The handle is the SQL itself: the micromegas client reads it back as the query.
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: statement.encode()?.into(),
            dataset_schema: ipc_schema(&schema)?,
            parameter_schema: if parameters.fields().is_empty() {
                Default::default()
            } else {
                ipc_schema(&parameters)?
            },
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        _request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        // Nothing is kept per prepared statement.
        Ok(())
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let mut statement = Statement::decode(&query.prepared_statement_handle)?;
        let stream = request
            .into_inner()
            .map_err(|status| FlightError::Tonic(Box::new(status)));
        let batches: Vec<RecordBatch> =
            arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(stream)
                .try_collect()
                .await
                .map_err(|e| Status::invalid_argument(status::one_line(&e.to_string())))?;
        statement.parameters = match batches.iter().find(|b| b.num_rows() > 0) {
            Some(batch) => first_row(batch)?,
            None => Vec::new(),
        };
        // Stateless: the new handle carries the SQL and the bound values.
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(statement.encode()?.into()),
        })
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        command_info(&schema, query.as_any(), request)
    }

    async fn do_get_catalogs(
        &self,
        _query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let ctx = self.catalog_context(request.metadata())?;
        one_batch(catalog::catalogs(&ctx)?)
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        command_info(&schema, query.as_any(), request)
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let ctx = self.catalog_context(request.metadata())?;
        one_batch(catalog::db_schemas(&ctx, query)?)
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        command_info(&schema, query.as_any(), request)
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let ctx = self.catalog_context(request.metadata())?;
        // Each table's schema as a query of it is sent (dictionaries hydrated unless kept).
        let preserve = RequestSettings::from_headers(request.metadata())?.preserve_dictionary;
        let sent = move |schema: &Schema| sent_schema(schema, preserve);
        one_batch(catalog::tables(&ctx, query, sent).await?)
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        command_info(&schema, query.as_any(), request)
    }

    async fn do_get_table_types(
        &self,
        _query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        one_batch(catalog::table_types()?)
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(&self.answers.sql_info).schema();
        command_info(&schema, query.as_any(), request)
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let batch = query
            .into_builder(&self.answers.sql_info)
            .build()
            .map_err(|e| Status::internal(status::one_line(&e.to_string())))?;
        one_batch(batch)
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder(&self.answers.xdbc_types).schema();
        command_info(&schema, query.as_any(), request)
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let batch = query
            .into_builder(&self.answers.xdbc_types)
            .build()
            .map_err(|e| Status::internal(status::one_line(&e.to_string())))?;
        one_batch(batch)
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        command_info(&catalog::primary_keys_schema(), query.as_any(), request)
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        one_batch(catalog::no_keys(catalog::primary_keys_schema()))
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        command_info(&catalog::foreign_keys_schema(), query.as_any(), request)
    }

    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        one_batch(catalog::no_keys(catalog::foreign_keys_schema()))
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        command_info(&catalog::foreign_keys_schema(), query.as_any(), request)
    }

    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        one_batch(catalog::no_keys(catalog::foreign_keys_schema()))
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        command_info(&catalog::foreign_keys_schema(), query.as_any(), request)
    }

    async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        one_batch(catalog::no_keys(catalog::foreign_keys_schema()))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// A status from building a fixed answer, as the error `new` returns.
fn status_error(status: Status) -> datafusion::error::DataFusionError {
    datafusion::error::DataFusionError::Internal(status.message().to_owned())
}

/// A schema as the IPC message Flight SQL carries.
fn ipc_schema(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let options = IpcWriteOptions::default();
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &options).try_into().map_err(
        |e: datafusion::arrow::error::ArrowError| {
            Status::internal(status::one_line(&e.to_string()))
        },
    )?;
    Ok(bytes)
}

/// The `FlightInfo` of a metadata command: its result schema, and the command as the ticket.
fn command_info(
    schema: &Schema,
    command: Any,
    request: Request<FlightDescriptor>,
) -> Result<Response<FlightInfo>, Status> {
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(status::one_line(&e.to_string())))?
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(command.encode_to_vec())))
        .with_descriptor(request.into_inner());
    Ok(Response::new(info))
}

/// One batch as a Flight data stream.
fn one_batch(batch: RecordBatch) -> Result<Response<FlightDataStream>, Status> {
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(batch.schema())
        .build(futures::stream::iter([Ok(batch)]))
        .map(|item| item.map_err(Status::from));
    Ok(Response::new(Box::pin(stream)))
}
