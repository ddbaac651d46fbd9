//! `async-events`: SQL over the async span events of a micromegas lake, from the shell.
//!
//! ```text
//! async-events [--db URL] [--store URL] [-v] sql [--format table|csv|json] "<SQL>"
//! async-events [--db URL] [--store URL] processes [--limit N]
//! async-events [--db URL] [--store URL] quickstart
//! async-events [--db URL] [--store URL] lint --process UUID [--begin T --end T]
//! async-events [--db URL] [--store URL] trace --process ID [--begin T --end T] -o trace.pftrace
//! async-events [--db URL] [--store URL] timeline --process ID [--begin T --end T] -o timeline.svg|png
//! async-events [--db URL] [--store URL] serve [--addr 127.0.0.1:50051] [--token-file PATH]
//! ```
//! Without `--db`/`--store`, the lake comes from `MICROMEGAS_SQL_CONNECTION_STRING` and
//! `MICROMEGAS_OBJECT_STORE_URI`, or is the embedded lake in `./lake`. Warnings (skipped blocks)
//! go to standard error; `-v` adds the crate's debug messages.

mod logger;
mod quickstart;
#[cfg(feature = "server")]
mod serve;
mod timeline;

use clap::{Parser, Subcommand, ValueEnum};
use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::SessionContext;
use datafusion_async_events::lake::{LakeOptions, MissingBlobPolicy};
use datafusion_async_events::provider::ScanOptions;
use datafusion_async_events::{Lake, register_metadata_tables, register_with};
use futures::StreamExt;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "async-events",
    version,
    about = "SQL over the async span events of micromegas-instrumented programs"
)]
struct Cli {
    /// Metadata database (postgres://… or sqlite:…); with --store. Default: the environment.
    #[arg(long, global = true, value_name = "URL")]
    db: Option<String>,
    /// Object store of the blobs (file://, s3://, gs://, az://, memory://); with --db.
    #[arg(long, global = true, value_name = "URL")]
    store: Option<String>,
    /// Skip (with a warning) blocks that cannot be decoded or whose blob is missing, instead of
    /// failing the query.
    #[arg(long, global = true)]
    skip_bad_blocks: bool,
    /// Print the crate's debug messages on standard error too (warnings are always printed).
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a query; `async_events('<process id>')`, `view_instance(...)`, `thread_streams(...)`
    /// and the `processes`, `streams` and `blocks` tables are available.
    Sql {
        /// Output format: an aligned table, CSV with a header, or JSON Lines.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// The query.
        sql: String,
    },
    /// Lists the processes that recorded thread streams, newest first.
    Processes {
        /// How many processes to list.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Records a small instrumented tokio service into the lake, then runs example queries.
    Quickstart,
    /// Finds spans that never finished, children that outlived their parent, and slow
    /// outliers (the SQL of each is in the README).
    Lint {
        /// The process to check.
        #[arg(long, value_name = "UUID")]
        process: uuid::Uuid,
        /// Only spans overlapping the range from this time (RFC 3339).
        #[arg(long)]
        begin: Option<String>,
        /// Only spans overlapping the range up to this time (RFC 3339).
        #[arg(long)]
        end: Option<String>,
    },
    /// Writes a Perfetto trace of a process's thread and async spans (open it in the Perfetto
    /// UI).
    Trace {
        #[command(flatten)]
        span: SpanArgs,
    },
    /// Draws a process's thread and async spans per thread over time, as SVG or PNG (by the
    /// extension).
    Timeline {
        #[command(flatten)]
        span: SpanArgs,
        /// Width of the picture in pixels.
        #[arg(long, default_value_t = 1600)]
        width: u32,
        /// Names with a colour of their own in the legend (the others are "other").
        #[arg(long, default_value_t = 12)]
        legend: usize,
    },
    /// Serves the lake over Flight SQL (the micromegas Python client, ADBC, pyarrow.flight).
    #[cfg(feature = "server")]
    Serve(serve::ServeArgs),
}

/// The process, time range and output file of `trace` and `timeline`.
#[derive(clap::Args)]
struct SpanArgs {
    /// The process id (`async-events processes` lists them).
    #[arg(long)]
    process: String,
    /// Start of the range (RFC 3339); with --end. Default: the whole recording.
    #[arg(long, requires = "end")]
    begin: Option<String>,
    /// End of the range (RFC 3339); with --begin.
    #[arg(long, requires = "begin")]
    end: Option<String>,
    /// Output file.
    #[arg(short, long)]
    output: std::path::PathBuf,
    /// Which spans: the threads' scopes, the async spans, or both.
    #[arg(long, value_enum, default_value = "both")]
    span_types: SpanTypesArg,
}

#[derive(Clone, Copy, ValueEnum)]
enum SpanTypesArg {
    Thread,
    Async,
    Both,
}

impl SpanTypesArg {
    /// `perfetto_trace_chunks`' name for it.
    fn sql(self) -> &'static str {
        match self {
            Self::Thread => "thread",
            Self::Async => "async",
            Self::Both => "both",
        }
    }

    /// What the timeline's title calls them.
    fn title(self) -> &'static str {
        match self {
            Self::Thread => "thread spans",
            Self::Async => "async spans",
            Self::Both => "thread and async spans",
        }
    }

    fn types(self) -> datafusion_async_events::timeline::SpanTypes {
        use datafusion_async_events::timeline::SpanTypes;
        match self {
            Self::Thread => SpanTypes::Thread,
            Self::Async => SpanTypes::Async,
            Self::Both => SpanTypes::Both,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
}

type Failure = Box<dyn std::error::Error>;

/// Rows of each lint the command prints.
const LINT_ROWS: usize = 15;

/// Opens the lake of the command line or the environment: read-only, except for `quickstart`,
/// which records into it (creating the embedded `./lake` or PostgreSQL's tables if missing).
async fn open_lake(cli: &Cli) -> Result<Lake, Failure> {
    let mut options = LakeOptions {
        writable: matches!(cli.command, Command::Quickstart),
        ..LakeOptions::default()
    };
    if cli.skip_bad_blocks {
        options.missing_blobs = MissingBlobPolicy::Skip;
    }
    Ok(match (&cli.db, &cli.store) {
        (Some(db), Some(store)) => Lake::open_with(db, store, options).await?,
        (None, None) => Lake::from_env_with(options).await?,
        _ => return Err("--db and --store go together".into()),
    })
}

fn scan_options(cli: &Cli) -> Result<ScanOptions, Failure> {
    Ok(ScanOptions {
        skip_corrupt_blocks: cli.skip_bad_blocks,
        ..ScanOptions::default()
    })
}

fn csv_cell(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// Writes query results as CSV as they come, a batch at a time (an export holds one batch).
async fn write_csv(
    out: &mut impl Write,
    mut batches: SendableRecordBatchStream,
    schema: &Schema,
) -> Result<(), Failure> {
    let header: Vec<String> = schema.fields().iter().map(|f| csv_cell(f.name())).collect();
    writeln!(out, "{}", header.join(","))?;
    while let Some(batch) = batches.next().await {
        let batch = batch?;
        for row in 0..batch.num_rows() {
            let cells = batch
                .columns()
                .iter()
                .map(|c| array_value_to_string(c, row).map(|s| csv_cell(&s)))
                .collect::<Result<Vec<_>, _>>()?;
            writeln!(out, "{}", cells.join(","))?;
        }
    }
    Ok(())
}

/// Writes query results as JSON lines as they come, a batch at a time.
async fn write_json(
    out: &mut impl Write,
    mut batches: SendableRecordBatchStream,
) -> Result<(), Failure> {
    let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(out);
    while let Some(batch) = batches.next().await {
        let batch = batch?;
        // Dictionary-encoded strings are written as plain strings.
        let columns = batch
            .columns()
            .iter()
            .map(|c| match c.data_type() {
                DataType::Dictionary(_, value) => datafusion::arrow::compute::cast(c, value),
                _ => Ok(c.clone()),
            })
            .collect::<Result<Vec<ArrayRef>, _>>()?;
        let fields: Vec<Field> = batch
            .schema()
            .fields()
            .iter()
            .zip(&columns)
            .map(|(f, c)| Field::new(f.name(), c.data_type().clone(), f.is_nullable()))
            .collect();
        let plain = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
        writer.write(&plain)?;
    }
    writer.finish()?;
    Ok(())
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let lake = open_lake(&cli).await?;
    let options = scan_options(&cli)?;
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Quickstart => {
            drop(out);
            let where_ = match &cli.db {
                Some(db) => db.clone(),
                None => std::env::var("MICROMEGAS_SQL_CONNECTION_STRING")
                    .ok()
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "./lake".into()),
            };
            quickstart::run(lake, &where_).await?;
        }
        Command::Lint {
            process,
            begin,
            end,
        } => {
            let ctx = SessionContext::new();
            register_with(&ctx, lake, options);
            let lints =
                datafusion_async_events::lints::lints(process, begin.as_deref(), end.as_deref());
            for (i, lint) in lints.iter().enumerate() {
                let batches = ctx.sql(&lint.sql).await?.collect().await?;
                let found: usize = batches.iter().map(|b| b.num_rows()).sum();
                if i > 0 {
                    writeln!(out)?;
                }
                writeln!(out, "{} ({found}):", lint.title)?;
                if found == 0 {
                    writeln!(out, "(none)")?;
                    continue;
                }
                // The first rows; the README's SQL lists them all.
                let mut shown = Vec::new();
                let mut rows = 0;
                for batch in &batches {
                    let take = batch.num_rows().min(LINT_ROWS - rows);
                    shown.push(batch.slice(0, take));
                    rows += take;
                }
                writeln!(out, "{}", pretty_format_batches(&shown)?)?;
                if found > LINT_ROWS {
                    writeln!(
                        out,
                        "({} more: run the lint's SQL, in the README, for all)",
                        found - LINT_ROWS
                    )?;
                }
            }
        }
        Command::Sql { format, sql } => {
            let ctx = SessionContext::new();
            register_with(&ctx, lake.clone(), options);
            register_metadata_tables(&ctx, lake)?;
            let df = ctx.sql(&sql).await?;
            let schema: Schema = df.schema().as_arrow().clone();
            match format {
                Format::Table => {
                    let batches = df.collect().await?;
                    if batches.iter().all(|b| b.num_rows() == 0) {
                        writeln!(out, "(no rows)")?;
                    } else {
                        writeln!(out, "{}", pretty_format_batches(&batches)?)?;
                    }
                }
                Format::Csv | Format::Json => {
                    // Buffered: standard output alone writes each line with a system call.
                    let mut out = std::io::BufWriter::with_capacity(1 << 16, &mut out);
                    let batches = df.execute_stream().await?;
                    if matches!(format, Format::Csv) {
                        write_csv(&mut out, batches, &schema).await?;
                    } else {
                        write_json(&mut out, batches).await?;
                    }
                    out.flush()?;
                }
            }
        }
        Command::Trace { span } => {
            let ctx = SessionContext::new();
            register_with(&ctx, lake, options);
            let (begin, end) = (span.begin.as_deref(), span.end.as_deref());
            let types = span.span_types.sql();
            timeline::trace(&ctx, &span.process, types, begin, end, &span.output).await?;
        }
        Command::Timeline {
            span,
            width,
            legend,
        } => {
            let ctx = SessionContext::new();
            register_with(&ctx, lake, options);
            let (begin, end) = (span.begin.as_deref(), span.end.as_deref());
            let options = datafusion_async_events::timeline::svg::SvgOptions {
                width,
                legend,
                title: format!("{} of process {}", span.span_types.title(), span.process),
            };
            let (process, output) = (&span.process, &span.output);
            let types = span.span_types.types();
            timeline::timeline(&ctx, process, types, begin, end, output, options).await?;
        }
        #[cfg(feature = "server")]
        Command::Serve(args) => {
            drop(out);
            serve::run(lake, options, args).await?;
        }
        Command::Processes { limit } => {
            let processes = lake.processes(limit).await?;
            if processes.is_empty() {
                writeln!(out, "no process with thread streams in the lake")?;
                return Ok(());
            }
            let text =
                |f: &dyn Fn(&datafusion_async_events::lake::ProcessSummary) -> String| -> ArrayRef {
                    Arc::new(StringArray::from(
                        processes.iter().map(f).collect::<Vec<_>>(),
                    ))
                };
            let schema = Schema::new(vec![
                Field::new("process_id", DataType::Utf8, false),
                Field::new("exe", DataType::Utf8, false),
                Field::new("computer", DataType::Utf8, false),
                Field::new("start_time", DataType::Utf8, false),
                Field::new("streams", DataType::Int64, false),
                Field::new("blocks", DataType::Int64, false),
                Field::new("last_block_end", DataType::Utf8, false),
            ]);
            let rfc3339 = |t: chrono::DateTime<chrono::Utc>| {
                t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            };
            let batch = RecordBatch::try_new(
                Arc::new(schema),
                vec![
                    text(&|p| p.process.process_id.to_string()),
                    text(&|p| p.process.exe.clone()),
                    text(&|p| p.process.computer.clone()),
                    text(&|p| rfc3339(p.process.start_time)),
                    Arc::new(Int64Array::from(
                        processes.iter().map(|p| p.cpu_streams).collect::<Vec<_>>(),
                    )),
                    Arc::new(Int64Array::from(
                        processes.iter().map(|p| p.cpu_blocks).collect::<Vec<_>>(),
                    )),
                    text(&|p| p.last_block_end.map(rfc3339).unwrap_or_default()),
                ],
            )?;
            writeln!(out, "{}", pretty_format_batches(&[batch])?)?;
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    logger::install(cli.verbose);
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let message = e.to_string().replace('\n', " ");
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
