//! DataFusion and lake errors as Flight statuses with a one-line message.

use crate::error::Error;
use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;
use tonic::{Code, Status};

/// What an error is, for a client: its status code.
fn classify(error: &DataFusionError) -> Code {
    match error {
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            classify(inner)
        }
        DataFusionError::Shared(inner) => classify(inner),
        DataFusionError::Collection(errors) => errors.first().map_or(Code::Internal, classify),
        DataFusionError::External(source) => classify_external(source.as_ref()),
        DataFusionError::ArrowError(arrow, _) => classify_arrow(arrow),
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::Configuration(_) => Code::InvalidArgument,
        DataFusionError::ResourcesExhausted(_) => Code::ResourceExhausted,
        DataFusionError::ObjectStore(_) | DataFusionError::IoError(_) => Code::Unavailable,
        _ => Code::Internal,
    }
}

/// The code of an error boxed inside a DataFusion error: the crate's own errors by what they
/// say, DataFusion errors (a stream error wrapped again) recursively.
fn classify_external(source: &(dyn std::error::Error + Send + Sync + 'static)) -> Code {
    if let Some(e) = source.downcast_ref::<Error>() {
        return match e {
            Error::UnknownProcess { .. } => Code::NotFound,
            Error::Database { .. }
            | Error::Unreachable { .. }
            | Error::ObjectStore { .. }
            | Error::MissingBlob { .. } => Code::Unavailable,
            Error::Config(_) => Code::InvalidArgument,
            // Stored bytes that cannot be read as micromegas blocks.
            Error::Block { .. } | Error::StreamMetadata { .. } | Error::OutOfOrder { .. } => {
                Code::DataLoss
            }
            _ => Code::Internal,
        };
    }
    if let Some(e) = source.downcast_ref::<DataFusionError>() {
        return classify(e);
    }
    if let Some(e) = source.downcast_ref::<ArrowError>() {
        return classify_arrow(e);
    }
    Code::Internal
}

/// Arrow's errors: those a query's own values cause (an overflow, a division by zero, a cast
/// that fails) are the client's; the others are ours.
fn classify_arrow(error: &ArrowError) -> Code {
    match error {
        ArrowError::ExternalError(source) => classify_external(source.as_ref()),
        ArrowError::ArithmeticOverflow(_)
        | ArrowError::DivideByZero
        | ArrowError::CastError(_)
        | ArrowError::ParseError(_)
        | ArrowError::InvalidArgumentError(_) => Code::InvalidArgument,
        ArrowError::MemoryError(_) => Code::ResourceExhausted,
        _ => Code::Internal,
    }
}

/// One line: gRPC carries the message in a header, and clients print it as is.
pub(crate) fn one_line(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    const MAX: usize = 2000;
    if line.len() <= MAX {
        return line;
    }
    let mut end = MAX;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &line[..end])
}

/// The status of a failed query: `InvalidArgument` for SQL and planning errors and for values
/// the query itself makes fail (overflow, division by zero, a bad cast), `NotFound` for an
/// unknown process, `Unavailable` when the lake cannot be read, `ResourceExhausted` when memory
/// runs out, `DataLoss` for a stored block that cannot be decoded, `Internal` for the rest.
pub fn status_of(error: &DataFusionError) -> Status {
    Status::new(classify(error), one_line(&error.to_string()))
}

/// Takes the places a client must not learn out of the messages it is sent: the object store's
/// location (a local folder, a bucket) and the database URL. The server log keeps the full text.
#[derive(Debug, Clone, Default)]
pub(crate) struct Redactor {
    /// Text to replace, longest first, with what replaces it.
    secrets: Vec<(String, &'static str)>,
}

impl Redactor {
    /// Hides `store_url` (and its local path, for `file://` URLs) and `database_url`.
    pub(crate) fn new(store_url: &str, database_url: &str) -> Self {
        let mut secrets = vec![
            (store_url.to_owned(), "<store>"),
            (database_url.to_owned(), "<database>"),
        ];
        if let Ok(url) = url::Url::parse(store_url)
            && url.scheme() == "file"
        {
            secrets.push((url.path().trim_end_matches('/').to_owned(), "<store>"));
        }
        // A SQLite URL names its file: `sqlite:/path/telemetry.db?mode=…` or `sqlite:///path`.
        if let Some(path) = database_url.strip_prefix("sqlite:") {
            let path = path
                .split('?')
                .next()
                .unwrap_or("")
                .trim_start_matches("//");
            if let Some(folder) = std::path::Path::new(path).parent() {
                secrets.push((folder.display().to_string(), "<lake>"));
            }
        }
        secrets.retain(|(s, _)| s.len() > 1);
        secrets.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        Self { secrets }
    }

    /// `text` without the lake's locations.
    pub(crate) fn redact(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for (secret, replacement) in &self.secrets {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), replacement);
            }
        }
        text
    }

    /// The client's status of `error`, redacted; the full text goes to the server log, tagged
    /// with the query's id, which the client's message gives so that the two can be matched.
    pub(crate) fn status(&self, error: &DataFusionError, query_id: u64) -> Status {
        let status = status_of(error);
        let redacted = self.redact(status.message());
        if redacted != status.message() {
            log::warn!("query {query_id} failed: {}", status.message());
            return Status::new(
                status.code(),
                format!("{redacted} (query {query_id}: the server log has the details)"),
            );
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn unknown_process_is_found_through_wrappers() {
        let e: DataFusionError = Error::UnknownProcess {
            process_id: Uuid::nil(),
        }
        .into();
        let wrapped = DataFusionError::Context(
            "scan".into(),
            Box::new(DataFusionError::External(Box::new(e))),
        );
        let status = status_of(&wrapped);
        assert_eq!(status.code(), Code::NotFound);
        assert!(status.message().contains("is not in the lake"));
        let plan = DataFusionError::Plan("bad\nthing".into());
        assert_eq!(status_of(&plan).code(), Code::InvalidArgument);
        assert!(!status_of(&plan).message().contains('\n'));
    }

    #[test]
    fn arithmetic_faults_are_the_clients_and_bad_blocks_are_data_loss() {
        let overflow = DataFusionError::ArrowError(
            Box::new(ArrowError::ArithmeticOverflow("1 + i64::MAX".into())),
            None,
        );
        assert_eq!(status_of(&overflow).code(), Code::InvalidArgument);
        let block: DataFusionError = Error::Block {
            process_id: Uuid::nil(),
            stream_id: Uuid::nil(),
            block_id: Uuid::nil(),
            source: crate::format::FormatError::Metadata("bad".into()),
        }
        .into();
        assert_eq!(status_of(&block).code(), Code::DataLoss);
    }

    #[test]
    fn redaction_hides_the_store_folder_and_the_database() {
        let redactor = Redactor::new(
            "file:///srv/lake/store/",
            "sqlite:/srv/lake/telemetry.db?mode=ro",
        );
        let text = "object store: get blobs/p/s/b: Object at location /srv/lake/store/blobs/p/s/b \
                    not found (sqlite:/srv/lake/telemetry.db?mode=ro)";
        let redacted = redactor.redact(text);
        assert!(!redacted.contains("/srv"), "{redacted}");
        assert!(redacted.contains("blobs/p/s/b"), "{redacted}");
        let status = redactor.status(&DataFusionError::Execution(text.into()), 7);
        assert!(
            status
                .message()
                .ends_with("(query 7: the server log has the details)")
        );
        assert!(!status.message().contains("/srv"));
    }
}
