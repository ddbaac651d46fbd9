//! One running query: its batches encoded as Flight data by a task of its own, which ends (and
//! frees the query's slot and memory) when the results are sent, the deadline passes, the client
//! stops reading for longer than the idle timeout, or the client goes away. It writes one log
//! line when it ends.

use super::status::{Redactor, one_line};
use arrow_flight::FlightData;
use arrow_flight::encode::{DictionaryHandling, FlightDataEncoderBuilder};
use arrow_flight::error::FlightError;
use datafusion::execution::SendableRecordBatchStream;
use futures::{Stream, StreamExt};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tonic::{Code, Status};

/// The limit that ends a query early, for the client's message.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Limit {
    /// The server's `--query-timeout`.
    Server(Duration),
    /// The client's own gRPC deadline.
    Client(Duration),
}

impl Limit {
    /// The nearer of the server's and the client's limits.
    pub(crate) fn nearest(server: Option<Duration>, client: Option<Duration>) -> Option<Self> {
        match (server, client) {
            (Some(s), Some(c)) if c < s => Some(Limit::Client(c)),
            (Some(s), _) => Some(Limit::Server(s)),
            (None, Some(c)) => Some(Limit::Client(c)),
            (None, None) => None,
        }
    }

    pub(crate) fn duration(self) -> Duration {
        match self {
            Limit::Server(d) | Limit::Client(d) => d,
        }
    }

    /// `DeadlineExceeded`, naming the limit.
    pub(crate) fn exceeded(self) -> Status {
        let seconds = self.duration().as_secs_f64();
        Status::deadline_exceeded(match self {
            Limit::Server(_) => format!(
                "the query ran longer than the server's query timeout ({seconds} s, serve \
                 --query-timeout) and was cancelled"
            ),
            Limit::Client(_) => format!(
                "the query ran longer than the client's deadline ({seconds} s) and was cancelled"
            ),
        })
    }
}

/// Who asked what, for the query's log line.
#[derive(Debug, Clone)]
pub(crate) struct QueryLog {
    pub(crate) id: u64,
    pub(crate) client: String,
    pub(crate) sql: String,
    pub(crate) started: Instant,
}

impl QueryLog {
    /// The query's one log line (logfmt): id, client, outcome, status code, rows, bytes,
    /// duration, SQL.
    pub(crate) fn finish(&self, outcome: &str, code: Code, rows: u64, bytes: u64) {
        log::info!(
            "query id={} client=\"{}\" outcome={outcome} code={code:?} rows={rows} bytes={bytes} \
             duration_ms={} sql={:?}",
            self.id,
            self.client,
            self.started.elapsed().as_millis(),
            one_line(&self.sql),
        );
    }
}

/// How a running query ends.
pub(crate) struct Run {
    pub(crate) log: QueryLog,
    pub(crate) deadline: Option<(tokio::time::Instant, Limit)>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) preserve_dictionary: bool,
    pub(crate) redactor: Arc<Redactor>,
    pub(crate) permit: OwnedSemaphorePermit,
}

/// The Flight data of a running query; dropping it (the client went away) cancels the query.
pub(crate) struct QueryStream {
    receiver: mpsc::Receiver<Result<FlightData, Status>>,
}

impl Stream for QueryStream {
    type Item = Result<FlightData, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.receiver.poll_recv(cx)
    }
}

async fn sleep_until(deadline: Option<(tokio::time::Instant, Limit)>) -> Limit {
    match deadline {
        Some((at, limit)) => {
            tokio::time::sleep_until(at).await;
            limit
        }
        None => std::future::pending().await,
    }
}

async fn idle(timeout: Option<Duration>) {
    match timeout {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

impl Run {
    /// Starts sending `batches`; the returned stream is the response body.
    pub(crate) fn start(self, batches: SendableRecordBatchStream) -> QueryStream {
        let (sender, receiver) = mpsc::channel(2);
        tokio::spawn(self.send(batches, sender));
        QueryStream { receiver }
    }

    async fn send(
        self,
        batches: SendableRecordBatchStream,
        sender: mpsc::Sender<Result<FlightData, Status>>,
    ) {
        let Run {
            log,
            deadline,
            idle_timeout,
            preserve_dictionary,
            redactor,
            permit,
        } = self;
        let rows = Arc::new(AtomicU64::new(0));
        let counted = rows.clone();
        let schema = batches.schema();
        let id = log.id;
        let batches = batches.map(move |batch| match batch {
            Ok(batch) => {
                counted.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                Ok(batch)
            }
            Err(e) => Err(FlightError::Tonic(Box::new(redactor.status(&e, id)))),
        });
        let handling = if preserve_dictionary {
            DictionaryHandling::Resend
        } else {
            DictionaryHandling::Hydrate
        };
        let mut data = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .with_dictionary_handling(handling)
            .build(batches);
        let mut bytes = 0u64;
        let (outcome, code) = loop {
            let item = tokio::select! {
                biased;
                () = sender.closed() => break ("cancelled by the client", Code::Cancelled),
                limit = sleep_until(deadline) => {
                    let _ = sender.try_send(Err(limit.exceeded()));
                    break ("deadline", Code::DeadlineExceeded);
                }
                item = data.next() => item,
            };
            let Some(item) = item else {
                break ("ok", Code::Ok);
            };
            let item = item.map_err(Status::from);
            let failed = item.as_ref().err().map(Status::code);
            if let Ok(flight) = &item {
                bytes += (flight.data_header.len() + flight.data_body.len()) as u64;
            }
            tokio::select! {
                biased;
                sent = sender.send(item) => if sent.is_err() {
                    break ("cancelled by the client", Code::Cancelled);
                },
                limit = sleep_until(deadline) => {
                    let _ = sender.try_send(Err(limit.exceeded()));
                    break ("deadline", Code::DeadlineExceeded);
                }
                () = idle(idle_timeout) => break ("idle: the client stopped reading", Code::Cancelled),
            }
            if let Some(code) = failed {
                break ("failed", code);
            }
        };
        // The query's operators, memory and slot go before the log line says it ended.
        drop(data);
        drop(permit);
        log.finish(outcome, code, rows.load(Ordering::Relaxed), bytes);
    }
}
