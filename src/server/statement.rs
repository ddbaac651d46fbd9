//! Statement handles and bound parameters.
//!
//! The server keeps nothing per prepared statement: a handle is the statement itself. Without
//! parameters it is the SQL text (what the micromegas client reads back as the query); with
//! bound parameters it is a tagged pair of the SQL and the parameter row as Arrow IPC, so any
//! server of a fleet can run it.

use super::status::one_line;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::scalar::ScalarValue;
use tonic::Status;

/// Marks a handle holding SQL and bound parameters (a NUL byte never starts SQL text).
const WITH_PARAMETERS: &[u8] = b"\0async-events-parameters\0";

/// A statement: SQL, and the values bound to its placeholders.
#[derive(Debug, Clone, Default)]
pub(crate) struct Statement {
    pub(crate) sql: String,
    pub(crate) parameters: Vec<ScalarValue>,
}

impl Statement {
    /// Reads a handle or a ticket.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, Status> {
        let text = |b: &[u8]| {
            String::from_utf8(b.to_vec())
                .map_err(|_| Status::invalid_argument("the statement handle is not UTF-8 SQL text"))
        };
        let Some(rest) = bytes.strip_prefix(WITH_PARAMETERS) else {
            return Ok(Self {
                sql: text(bytes)?,
                parameters: Vec::new(),
            });
        };
        let bad = || Status::invalid_argument("malformed prepared statement handle");
        let (len, rest) = rest.split_first_chunk::<4>().ok_or_else(bad)?;
        let len = u32::from_le_bytes(*len) as usize;
        let (sql, ipc) = rest.split_at_checked(len).ok_or_else(bad)?;
        let mut reader = StreamReader::try_new(ipc, None).map_err(|_| bad())?;
        let batch = reader.next().ok_or_else(bad)?.map_err(|_| bad())?;
        Ok(Self {
            sql: text(sql)?,
            parameters: first_row(&batch)?,
        })
    }

    /// The handle of the statement.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, Status> {
        if self.parameters.is_empty() {
            return Ok(self.sql.as_bytes().to_vec());
        }
        let fields: Vec<Field> = self
            .parameters
            .iter()
            .enumerate()
            .map(|(i, v)| Field::new(format!("${}", i + 1), v.data_type(), true))
            .collect();
        let schema = std::sync::Arc::new(Schema::new(fields));
        let columns = self
            .parameters
            .iter()
            .map(|v| v.to_array())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Status::internal(one_line(&e.to_string())))?;
        let internal =
            |e: datafusion::arrow::error::ArrowError| Status::internal(one_line(&e.to_string()));
        let batch = RecordBatch::try_new(schema.clone(), columns).map_err(internal)?;
        let mut out = WITH_PARAMETERS.to_vec();
        let sql_len = u32::try_from(self.sql.len())
            .map_err(|_| Status::invalid_argument("the statement is longer than 4 GiB"))?;
        out.extend_from_slice(&sql_len.to_le_bytes());
        out.extend_from_slice(self.sql.as_bytes());
        let mut writer = StreamWriter::try_new(&mut out, &schema).map_err(internal)?;
        writer.write(&batch).map_err(internal)?;
        writer.finish().map_err(internal)?;
        drop(writer);
        Ok(out)
    }

    /// The values to bind, for DataFusion.
    pub(crate) fn param_values(&self) -> Option<ParamValues> {
        (!self.parameters.is_empty()).then(|| ParamValues::from(self.parameters.clone()))
    }
}

/// The values of the first row of a parameter batch, in column order.
pub(crate) fn first_row(batch: &RecordBatch) -> Result<Vec<ScalarValue>, Status> {
    if batch.num_rows() != 1 {
        return Err(Status::invalid_argument(format!(
            "bind one row of parameters; got {}",
            batch.num_rows()
        )));
    }
    batch
        .columns()
        .iter()
        .map(|c| ScalarValue::try_from_array(c, 0))
        .collect::<Result<_, _>>()
        .map_err(|e| Status::invalid_argument(one_line(&e.to_string())))
}

/// The SQL with each `?` placeholder (outside quotes and comments) numbered `$1`, `$2`, … as
/// DataFusion reads them.
pub(crate) fn number_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut n = 0;
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                out.push(c);
                for q in chars.by_ref() {
                    out.push(q);
                    if q == c {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                out.push(c);
                for q in chars.by_ref() {
                    out.push(q);
                    if q == '\n' {
                        break;
                    }
                }
            }
            '?' => {
                n += 1;
                out.push_str(&format!("${n}"));
            }
            _ => out.push(c),
        }
    }
    out
}

/// The parameter schema of a plan: `$1`, `$2`, … with their inferred types (`Utf8` when
/// DataFusion cannot infer one), and the placeholders that were table function arguments
/// (`in_arguments`), which the plan no longer holds.
pub(crate) fn parameter_schema(
    plan: &LogicalPlan,
    in_arguments: &[String],
) -> Result<Schema, Status> {
    let mut types = plan
        .get_parameter_types()
        .map_err(|e| Status::invalid_argument(one_line(&e.to_string())))?;
    // Table function arguments: a process id or a bound as text (a timestamp is accepted too).
    for id in in_arguments {
        types.entry(id.clone()).or_insert(Some(DataType::Utf8));
    }
    let mut names: Vec<(usize, String, Option<DataType>)> = types
        .into_iter()
        .map(|(name, t)| {
            let index = name.trim_start_matches('$').parse().unwrap_or(usize::MAX);
            (index, name, t)
        })
        .collect();
    names.sort();
    Ok(Schema::new(
        names
            .into_iter()
            .map(|(_, name, t)| Field::new(name, t.unwrap_or(DataType::Utf8), true))
            .collect::<Vec<_>>(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_marks_are_numbered_outside_quotes_and_comments() {
        assert_eq!(
            number_placeholders("SELECT '?' AS q, \"a?\" FROM t WHERE a = ? AND b > ? -- ?\n"),
            "SELECT '?' AS q, \"a?\" FROM t WHERE a = $1 AND b > $2 -- ?\n"
        );
    }

    #[test]
    fn handles_carry_sql_and_parameters() {
        let plain = Statement {
            sql: "SELECT 1".into(),
            parameters: vec![],
        };
        assert_eq!(plain.encode().unwrap(), b"SELECT 1");
        let bound = Statement {
            sql: "SELECT $1, $2".into(),
            parameters: vec![ScalarValue::Int64(Some(7)), ScalarValue::from("x")],
        };
        let back = Statement::decode(&bound.encode().unwrap()).unwrap();
        assert_eq!(back.sql, bound.sql);
        assert_eq!(back.parameters, bound.parameters);
        assert!(Statement::decode(b"\0async-events-parameters\0\xff").is_err());
    }
}
