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
        DataFusionError::ArrowError(arrow, _) => match arrow.as_ref() {
            ArrowError::ExternalError(source) => classify_external(source.as_ref()),
            _ => Code::Internal,
        },
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
            _ => Code::Internal,
        };
    }
    if let Some(e) = source.downcast_ref::<DataFusionError>() {
        return classify(e);
    }
    if let Some(e) = source.downcast_ref::<ArrowError>() {
        if let ArrowError::ExternalError(inner) = e {
            return classify_external(inner.as_ref());
        }
        return Code::Internal;
    }
    Code::Internal
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

/// The status of a failed query: `InvalidArgument` for SQL and planning errors, `NotFound` for
/// an unknown process, `Unavailable` when the lake cannot be read, `ResourceExhausted` when the
/// query's memory is exhausted, `Internal` for the rest (a block that fails to decode).
pub fn status_of(error: &DataFusionError) -> Status {
    Status::new(classify(error), one_line(&error.to_string()))
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
}
