//! `async-events trace` (a Perfetto trace file) and `async-events timeline` (an SVG or PNG
//! picture) of a process's spans.

use datafusion::arrow::array::AsArray;
use datafusion::prelude::SessionContext;
use datafusion_async_events::timeline::svg::{SvgOptions, render_png, render_svg};
use datafusion_async_events::timeline::{SpanTypes, Timeline};
use futures::StreamExt;
use std::io::Write;
use std::path::Path;

type Failure = Box<dyn std::error::Error>;

fn sql_text(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn sql_time(t: Option<&str>) -> String {
    t.map_or_else(|| "NULL".to_owned(), sql_text)
}

/// Writes `perfetto_trace_chunks(process, span_types, begin, end)` to `output`, chunk by chunk.
pub async fn trace(
    ctx: &SessionContext,
    process: &str,
    span_types: &str,
    begin: Option<&str>,
    end: Option<&str>,
    output: &Path,
) -> Result<(), Failure> {
    let sql = format!(
        "SELECT chunk_data FROM perfetto_trace_chunks({}, {}, {}, {})",
        sql_text(process),
        sql_text(span_types),
        sql_time(begin),
        sql_time(end)
    );
    let mut stream = ctx.sql(&sql).await?.execute_stream().await?;
    let mut file = std::io::BufWriter::new(std::fs::File::create(output)?);
    let (mut chunks, mut bytes) = (0usize, 0usize);
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        for chunk in batch.column(0).as_binary::<i32>().iter().flatten() {
            file.write_all(chunk)?;
            chunks += 1;
            bytes += chunk.len();
        }
    }
    file.flush()?;
    eprintln!(
        "wrote {} ({bytes} bytes in {chunks} chunks); open it in the Perfetto UI",
        output.display()
    );
    Ok(())
}

/// Draws the timeline of `process` to `output` (`.svg` or `.png`).
pub async fn timeline(
    ctx: &SessionContext,
    process: &str,
    types: SpanTypes,
    begin: Option<&str>,
    end: Option<&str>,
    output: &Path,
    options: SvgOptions,
) -> Result<(), Failure> {
    let ext = output
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    if !matches!(ext.as_deref(), Some("svg" | "png")) {
        return Err(format!("{}: the output must end in .svg or .png", output.display()).into());
    }
    let timeline = Timeline::load_types(ctx, process, types, begin, end).await?;
    let svg = render_svg(&timeline, &options);
    let bytes = if ext.as_deref() == Some("png") {
        render_png(&svg)?
    } else {
        svg.into_bytes()
    };
    std::fs::write(output, &bytes)?;
    eprintln!(
        "wrote {} ({} spans, {} bytes)",
        output.display(),
        timeline.spans.len(),
        bytes.len()
    );
    Ok(())
}
