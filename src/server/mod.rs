//! A Flight SQL server over a lake, for the micromegas Python client, ADBC, `pyarrow.flight`
//! and other Flight SQL clients (feature `server`).
//!
//! Each query gets a fresh `SessionContext` (its own memory pool) with the table functions (`async_events`,
//! `view_instance`, `thread_streams`) and the `processes`, `streams` and `blocks` tables, and
//! runs read-only: DDL, DML and statements (`SET`, `COPY`, `CREATE EXTERNAL TABLE`, …) are
//! refused. Results are streamed batch by batch; a client that goes away cancels its query.
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
mod status;

pub use auth::BearerAuth;
pub use status::status_of;

use crate::lake::Lake;
use crate::metadata_tables::register_metadata_tables;
use crate::provider::ScanOptions;
use crate::time_bounds::{TimeBounds, parse_time};
use crate::udtf::TableFunctions;
use arrow_flight::encode::{DictionaryHandling, FlightDataEncoderBuilder};
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::server::FlightSqlService;
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandPreparedStatementQuery, CommandStatementQuery,
    ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{FlightDescriptor, FlightEndpoint, FlightInfo, IpcMessage, SchemaAsIpc, Ticket};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
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
    /// Memory of each query's operators (sorts, joins, aggregates), in bytes; `None`: no limit.
    /// A query that needs more fails with `ResourceExhausted`.
    pub query_memory: Option<usize>,
    /// When set, every call must carry `authorization: Bearer <token>`.
    pub token: Option<String>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            scan: ScanOptions::default(),
            max_concurrent_queries: 8,
            queue_timeout: Duration::from_secs(30),
            query_memory: Some(1024 * 1024 * 1024),
            token: None,
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

/// The `x-client-*` labels of a request, for the debug log.
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

/// SQL text of a statement handle or ticket.
fn sql_text(bytes: &[u8]) -> Result<&str, Status> {
    std::str::from_utf8(bytes)
        .map_err(|_| Status::invalid_argument("the statement handle is not UTF-8 SQL text"))
}

/// The schema a client receives: dictionaries replaced by their value type unless preserved.
fn sent_schema(schema: &Schema, preserve_dictionary: bool) -> Schema {
    if preserve_dictionary {
        return schema.clone();
    }
    fn plain(t: &DataType) -> DataType {
        match t {
            DataType::Dictionary(_, value) => plain(value),
            other => other.clone(),
        }
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_data_type(plain(f.data_type())))
        .collect();
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

type FlightDataStream =
    Pin<Box<dyn Stream<Item = Result<arrow_flight::FlightData, Status>> + Send + 'static>>;

impl AsyncEventsFlightSql {
    /// A service over `lake`.
    pub fn new(lake: Lake, options: ServerOptions) -> Self {
        let slots = Arc::new(Semaphore::new(options.max_concurrent_queries.max(1)));
        let functions = TableFunctions::new(lake.clone(), options.scan.clone());
        Self {
            lake,
            options,
            slots,
            functions,
        }
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
        tonic::transport::Server::builder()
            .add_service(self.into_service())
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown)
            .await
    }

    /// A fresh session for one request: its own memory pool, the server's table functions
    /// bounded by the request's range, and the metadata tables.
    fn context(&self, settings: &RequestSettings) -> Result<SessionContext, Status> {
        let mut runtime = RuntimeEnvBuilder::new();
        if let Some(bytes) = self.options.query_memory {
            runtime = runtime.with_memory_limit(bytes, 1.0);
        }
        let runtime = runtime
            .build_arc()
            .map_err(|e| Status::internal(status::one_line(&e.to_string())))?;
        let ctx = SessionContext::new_with_config_rt(SessionConfig::new(), runtime);
        self.functions
            .with_query_range(settings.query_range)
            .register(&ctx);
        register_metadata_tables(&ctx, self.lake.clone()).map_err(|e| status_of(&e))?;
        Ok(ctx)
    }

    /// Plans a query, read-only.
    async fn plan(&self, sql: &str, settings: &RequestSettings) -> Result<DataFrame, Status> {
        let ctx = self.context(settings)?;
        let read_only = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        ctx.sql_with_options(sql, read_only)
            .await
            .map_err(|e| status_of(&e))
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

    /// Runs a query and streams its batches as Flight data.
    async fn execute(
        &self,
        sql: &str,
        metadata: &MetadataMap,
    ) -> Result<Response<FlightDataStream>, Status> {
        let settings = RequestSettings::from_headers(metadata)?;
        log::debug!(
            "query [{}] range={:?} preserve_dictionary={}: {}",
            client_labels(metadata),
            settings.query_range,
            settings.preserve_dictionary,
            status::one_line(sql)
        );
        let permit = self.slot().await?;
        let df = self.plan(sql, &settings).await?;
        let batches = df.execute_stream().await.map_err(|e| status_of(&e))?;
        let schema: SchemaRef = batches.schema();
        let batches = batches.map_err(|e| FlightError::Tonic(Box::new(status_of(&e))));
        let handling = if settings.preserve_dictionary {
            DictionaryHandling::Resend
        } else {
            DictionaryHandling::Hydrate
        };
        let data = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .with_dictionary_handling(handling)
            .build(batches)
            // The slot is held until the stream ends or is dropped (the client went away).
            .map(move |item| {
                let _held = &permit;
                item.map_err(Status::from)
            });
        Ok(Response::new(Box::pin(data)))
    }

    /// The `FlightInfo` of a query: its schema as sent, and a ticket that runs it.
    async fn flight_info(
        &self,
        sql: &str,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let settings = RequestSettings::from_headers(request.metadata())?;
        let df = self.plan(sql, &settings).await?;
        let schema = sent_schema(df.schema().as_arrow(), settings.preserve_dictionary);
        let ticket = TicketStatementQuery {
            statement_handle: sql.as_bytes().to_vec().into(),
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
        let sql = sql_text(&ticket.statement_handle)?;
        self.execute(sql, request.metadata()).await
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let sql = sql_text(&query.prepared_statement_handle)?;
        self.execute(sql, request.metadata()).await
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
        let sql = sql_text(&raw.statement_handle)?.to_owned();
        self.execute(&sql, request.metadata()).await
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.flight_info(&query.query, request).await
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let sql = sql_text(&query.prepared_statement_handle)?.to_owned();
        self.flight_info(&sql, request).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let settings = RequestSettings::from_headers(request.metadata())?;
        let df = self.plan(&query.query, &settings).await?;
        let schema = sent_schema(df.schema().as_arrow(), settings.preserve_dictionary);
        let options = IpcWriteOptions::default();
        let IpcMessage(schema_bytes) = SchemaAsIpc::new(&schema, &options).try_into().map_err(
            |e: datafusion::arrow::error::ArrowError| {
                Status::internal(status::one_line(&e.to_string()))
            },
        )?;
        // The handle is the SQL itself: the micromegas client reads it back as the query.
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: query.query.into_bytes().into(),
            dataset_schema: schema_bytes,
            parameter_schema: Default::default(),
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

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
