//! The `table_functions` table: each table function of the session with its arguments, what it
//! returns and an example, for clients that discover a database by browsing its tables.
//! DataFusion's `information_schema.routines` lists scalar, aggregate and window functions only,
//! so a SQL tool, an ADBC `get_objects` or a Flight SQL `GetTables` finds the table functions
//! here, next to `processes`, `streams` and `blocks`.

use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::TableProvider;
use datafusion::common::Result;
use datafusion::datasource::MemTable;
use std::sync::Arc;

/// The name of the table.
pub const TABLE_FUNCTIONS_TABLE: &str = "table_functions";

/// What one table function takes and gives.
struct FunctionDoc {
    name: &'static str,
    arguments: &'static str,
    returns: &'static str,
    example: &'static str,
}

/// Every table function the crate can register (some only with a feature).
const DOCS: &[FunctionDoc] = &[
    FunctionDoc {
        name: "async_events",
        arguments: "process_id VARCHAR [, begin TIMESTAMP, end TIMESTAMP]",
        returns: "one row per Begin or End event of the process's async spans",
        example: "SELECT name, count(*) FROM async_events('<process_id>') \
                  WHERE event_type = 'begin' GROUP BY name",
    },
    FunctionDoc {
        name: "async_spans",
        arguments: "process_id VARCHAR [, begin TIMESTAMP, end TIMESTAMP]",
        returns: "one row per async span, its begin and end paired (unfinished spans included)",
        example: "SELECT name, duration FROM async_spans('<process_id>') \
                  ORDER BY duration DESC LIMIT 10",
    },
    FunctionDoc {
        name: "thread_spans",
        arguments: "process_id VARCHAR [, begin TIMESTAMP, end TIMESTAMP]",
        returns: "one row per thread scope (#[span_fn] on plain functions, span_scope!) of every \
                  thread, with micromegas's ids, parent and depth, plus stream_id, thread_name \
                  and finished",
        example: "SELECT name, count(*), sum(duration) FROM thread_spans('<process_id>') \
                  WHERE depth > 0 GROUP BY name ORDER BY 3 DESC",
    },
    FunctionDoc {
        name: "process_spans",
        arguments: "process_id VARCHAR, span_types VARCHAR ('thread', 'async' or 'both')",
        returns: "micromegas's process_spans: stream_id, thread_name and the thread_spans \
                  columns, for every thread's scopes and the process's finished async spans",
        example: "SELECT thread_name, count(*) FROM process_spans('<process_id>', 'both') \
                  GROUP BY thread_name ORDER BY thread_name",
    },
    FunctionDoc {
        name: "view_instance",
        arguments: "view_set VARCHAR ('async_events' or 'async_spans' with a process_id, \
                    'thread_spans' with a stream_id), instance_id VARCHAR",
        returns: "the rows of async_events or async_spans, or micromegas's thread_spans view of \
                  one thread, under micromegas's names",
        example: "SELECT count(*) FROM view_instance('async_events', '<process_id>')",
    },
    FunctionDoc {
        name: "thread_streams",
        arguments: "process_id VARCHAR",
        returns: "one row per thread stream: stream_id, thread name and id, blocks, events, \
                  begin, end",
        example: "SELECT stream_id, thread_name FROM thread_streams('<process_id>')",
    },
    FunctionDoc {
        name: "jsonb_each",
        arguments: "jsonb BINARY, or a subquery giving a column of JSONB values",
        returns: "key, value (JSONB): an object's members, or an array's elements keyed by their \
                  index",
        example: "SELECT key, jsonb_format_json(value) FROM \
                  jsonb_each(jsonb_parse('{\"version\": \"1.2\", \"ports\": [80, 443]}'))",
    },
    FunctionDoc {
        name: "jsonb_array_elements",
        arguments: "jsonb BINARY, or a subquery giving a column of JSONB values",
        returns: "value (JSONB): an array's elements",
        example: "SELECT jsonb_as_i64(value) FROM jsonb_array_elements(jsonb_parse('[80, 443]'))",
    },
    FunctionDoc {
        name: "perfetto_trace_chunks",
        arguments: "process_id VARCHAR, span_types VARCHAR ('thread', 'async' or 'both'), \
                    begin TIMESTAMP, end TIMESTAMP",
        returns: "a Perfetto trace of the process's spans in chunks: chunk_id, chunk_data",
        example: "SELECT chunk_id, chunk_data FROM perfetto_trace_chunks('<process_id>', \
                  'async', now() - INTERVAL '1 hour', now()) ORDER BY chunk_id",
    },
];

/// The `table_functions` table for the functions named in `registered`, in that order (for a
/// host that registers the functions itself, as the Python package does).
pub fn table_functions_table(registered: &[&str]) -> Result<Arc<dyn TableProvider>> {
    let docs: Vec<&FunctionDoc> = registered
        .iter()
        .filter_map(|name| DOCS.iter().find(|d| d.name == *name))
        .collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("function_name", DataType::Utf8, false),
        Field::new("arguments", DataType::Utf8, false),
        Field::new("returns", DataType::Utf8, false),
        Field::new("example", DataType::Utf8, false),
    ]));
    let column = |field: fn(&FunctionDoc) -> &'static str| {
        Arc::new(StringArray::from_iter_values(docs.iter().map(|d| field(d)))) as _
    };
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            column(|d| d.name),
            column(|d| d.arguments),
            column(|d| d.returns),
            column(|d| d.example),
        ],
    )?;
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
}
