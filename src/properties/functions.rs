//! The functions, one `ScalarUDFImpl` for all: each [`Kind`] says its name, arity, result type
//! and how a row is computed.

use super::columns::{Properties, bad_jsonb, expand, jsonb_values, text};
use datafusion::arrow::array::{
    Array, ArrayRef, BinaryArray, BinaryDictionaryBuilder, DictionaryArray, Float64Array,
    Int32Array, Int64Array, ListBuilder, StringBuilder, StringDictionaryBuilder, UInt32Array,
};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, Field, Int32Type};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use jsonb::RawJsonb;
use jsonb::jsonpath::parse_json_path;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

/// Every function, by what it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    PropertyGet,
    PropertiesLength,
    PropertiesToJsonb,
    PropertiesToDict,
    PropertiesToArray,
    JsonbGet,
    JsonbAsString,
    JsonbAsI64,
    JsonbAsF64,
    JsonbObjectKeys,
    JsonbFormatJson,
    JsonbParse,
    JsonbArrayLength,
    JsonbPathQueryFirst,
    JsonbPathQuery,
}

const KINDS: [Kind; 15] = [
    Kind::PropertyGet,
    Kind::PropertiesLength,
    Kind::PropertiesToJsonb,
    Kind::PropertiesToDict,
    Kind::PropertiesToArray,
    Kind::JsonbGet,
    Kind::JsonbAsString,
    Kind::JsonbAsI64,
    Kind::JsonbAsF64,
    Kind::JsonbObjectKeys,
    Kind::JsonbFormatJson,
    Kind::JsonbParse,
    Kind::JsonbArrayLength,
    Kind::JsonbPathQueryFirst,
    Kind::JsonbPathQuery,
];

fn text_dictionary() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

fn jsonb_dictionary() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Binary))
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::PropertyGet => "property_get",
            Kind::PropertiesLength => "properties_length",
            Kind::PropertiesToJsonb => "properties_to_jsonb",
            Kind::PropertiesToDict => "properties_to_dict",
            Kind::PropertiesToArray => "properties_to_array",
            Kind::JsonbGet => "jsonb_get",
            Kind::JsonbAsString => "jsonb_as_string",
            Kind::JsonbAsI64 => "jsonb_as_i64",
            Kind::JsonbAsF64 => "jsonb_as_f64",
            Kind::JsonbObjectKeys => "jsonb_object_keys",
            Kind::JsonbFormatJson => "jsonb_format_json",
            Kind::JsonbParse => "jsonb_parse",
            Kind::JsonbArrayLength => "jsonb_array_length",
            Kind::JsonbPathQueryFirst => "jsonb_path_query_first",
            Kind::JsonbPathQuery => "jsonb_path_query",
        }
    }

    fn arity(self) -> usize {
        match self {
            Kind::PropertyGet
            | Kind::JsonbGet
            | Kind::JsonbPathQueryFirst
            | Kind::JsonbPathQuery => 2,
            _ => 1,
        }
    }

    fn return_type(self, args: &[DataType]) -> Result<DataType> {
        Ok(match self {
            Kind::PropertyGet | Kind::JsonbAsString | Kind::JsonbFormatJson => text_dictionary(),
            Kind::PropertiesToJsonb
            | Kind::JsonbGet
            | Kind::JsonbParse
            | Kind::JsonbPathQueryFirst
            | Kind::JsonbPathQuery => jsonb_dictionary(),
            Kind::PropertiesLength => DataType::Int32,
            Kind::JsonbAsI64 | Kind::JsonbArrayLength => DataType::Int64,
            Kind::JsonbAsF64 => DataType::Float64,
            Kind::JsonbObjectKeys => {
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
            }
            Kind::PropertiesToDict => match &args[0] {
                DataType::Dictionary(_, values) => {
                    DataType::Dictionary(Box::new(DataType::Int32), values.clone())
                }
                other => DataType::Dictionary(Box::new(DataType::Int32), Box::new(other.clone())),
            },
            Kind::PropertiesToArray => match &args[0] {
                DataType::Dictionary(_, values) => values.as_ref().clone(),
                other => {
                    return plan_err!("properties_to_array expects a Dictionary, got {other}");
                }
            },
        })
    }

    /// The result for whole arrays of arguments (scalars already made arrays).
    fn evaluate(self, args: &[ArrayRef]) -> Result<ArrayRef> {
        let name = self.name();
        let name_arg = || text(name, "property name", &args[1]);
        Ok(match self {
            Kind::PropertyGet => {
                let properties = Properties::read(name, &args[0])?;
                let names = name_arg()?;
                let mut out = StringDictionaryBuilder::<Int32Type>::new();
                for row in 0..properties.len() {
                    if properties.is_null(row) || names.is_null(row) {
                        out.append_null();
                    } else {
                        out.append_option(properties.get(name, row, names.value(row))?);
                    }
                }
                Arc::new(out.finish())
            }
            Kind::PropertiesLength => {
                let properties = Properties::read(name, &args[0])?;
                Arc::new(Int32Array::from_iter((0..properties.len()).map(|row| {
                    (!properties.is_null(row))
                        .then(|| properties.count(row))
                        .flatten()
                })))
            }
            Kind::PropertiesToJsonb => {
                if args[0].data_type() == &jsonb_dictionary() {
                    return Ok(args[0].clone());
                }
                let properties = Properties::read(name, &args[0])?;
                let mut out = BinaryDictionaryBuilder::<Int32Type>::new();
                for row in 0..properties.len() {
                    if properties.is_null(row) {
                        out.append_null();
                    } else {
                        out.append_value(properties.to_jsonb(row));
                    }
                }
                Arc::new(out.finish())
            }
            Kind::PropertiesToDict => {
                let values = expand(&args[0])?;
                let properties = Properties::read(name, &values)?;
                let mut first: HashMap<Vec<u8>, i32> = HashMap::new();
                let mut unique: Vec<u32> = Vec::new();
                let mut keys = Vec::with_capacity(properties.len());
                for row in 0..properties.len() {
                    if properties.is_null(row) {
                        keys.push(None);
                        continue;
                    }
                    let next = i32::try_from(unique.len()).unwrap_or(i32::MAX);
                    let key = *first.entry(properties.fingerprint(row)).or_insert_with(|| {
                        unique.push(row as u32);
                        next
                    });
                    keys.push(Some(key));
                }
                let dictionary = take(values.as_ref(), &UInt32Array::from(unique), None)?;
                Arc::new(DictionaryArray::<Int32Type>::try_new(
                    Int32Array::from(keys),
                    dictionary,
                )?)
            }
            Kind::PropertiesToArray => expand(&args[0])?,
            Kind::JsonbGet => {
                let values = jsonb_values(name, &args[0])?;
                let names = name_arg()?;
                let found = per_row(name, &values, |row, raw| match names.is_null(row) {
                    true => Ok(None),
                    false => raw.get_by_name(names.value(row), true),
                })?;
                let mut out = BinaryDictionaryBuilder::<Int32Type>::new();
                for value in found {
                    out.append_option(value);
                }
                Arc::new(out.finish())
            }
            Kind::JsonbPathQueryFirst | Kind::JsonbPathQuery => {
                let values = jsonb_values(name, &args[0])?;
                let paths = text(name, "JSONPath", &args[1])?;
                let mut parsed = HashMap::new();
                let mut out = BinaryDictionaryBuilder::<Int32Type>::new();
                for row in 0..values.len() {
                    if values.is_null(row) || paths.is_null(row) {
                        out.append_null();
                        continue;
                    }
                    let text = paths.value(row);
                    if !parsed.contains_key(text) {
                        match parse_json_path(text.as_bytes()) {
                            Ok(path) => parsed.insert(text, path),
                            Err(e) => return exec_err!("{name}: invalid JSONPath '{text}': {e}"),
                        };
                    }
                    let path = &parsed[text];
                    let raw = RawJsonb::new(values.value(row));
                    let found = if self == Kind::JsonbPathQueryFirst {
                        raw.select_first_by_path(path)
                    } else {
                        raw.select_array_by_path(path).map(Some)
                    };
                    match found {
                        Ok(Some(found)) => out.append_value(found.to_vec()),
                        Ok(None) => out.append_null(),
                        Err(e) => return bad_jsonb(name, row, e),
                    }
                }
                Arc::new(out.finish())
            }
            Kind::JsonbAsString => {
                let values = jsonb_values(name, &args[0])?;
                let texts = per_row(name, &values, |_, raw| {
                    raw.as_str().map(|s| s.map(Cow::into_owned))
                })?;
                let mut out = StringDictionaryBuilder::<Int32Type>::new();
                for text in texts {
                    out.append_option(text);
                }
                Arc::new(out.finish())
            }
            Kind::JsonbAsI64 => {
                let values = jsonb_values(name, &args[0])?;
                Arc::new(Int64Array::from(per_row(name, &values, |_, raw| {
                    raw.as_i64()
                })?))
            }
            Kind::JsonbAsF64 => {
                let values = jsonb_values(name, &args[0])?;
                Arc::new(Float64Array::from(per_row(name, &values, |_, raw| {
                    raw.as_f64()
                })?))
            }
            Kind::JsonbArrayLength => {
                let values = jsonb_values(name, &args[0])?;
                let lengths = per_row(name, &values, |_, raw| raw.array_length())?;
                Arc::new(Int64Array::from_iter(
                    lengths
                        .into_iter()
                        .map(|n| n.and_then(|n| i64::try_from(n).ok())),
                ))
            }
            Kind::JsonbObjectKeys => {
                let values = jsonb_values(name, &args[0])?;
                let objects = per_row(name, &values, |_, raw| raw.object_each())?;
                let mut out = ListBuilder::new(StringBuilder::new());
                for entries in objects {
                    match entries {
                        Some(entries) => {
                            for (key, _) in entries {
                                out.values().append_value(key);
                            }
                            out.append(true);
                        }
                        None => out.append_null(),
                    }
                }
                Arc::new(out.finish())
            }
            Kind::JsonbFormatJson => {
                let values = jsonb_values(name, &args[0])?;
                let mut out = StringDictionaryBuilder::<Int32Type>::new();
                for row in 0..values.len() {
                    if values.is_null(row) {
                        out.append_null();
                    } else if values.value(row).is_empty() {
                        out.append_value("null");
                    } else {
                        out.append_value(RawJsonb::new(values.value(row)).to_string());
                    }
                }
                Arc::new(out.finish())
            }
            Kind::JsonbParse => {
                let texts = text(name, "JSON text", &args[0])?;
                let mut out = BinaryDictionaryBuilder::<Int32Type>::new();
                for row in 0..texts.len() {
                    match texts
                        .is_valid(row)
                        .then(|| jsonb::parse_value(texts.value(row).as_bytes()))
                    {
                        Some(Ok(value)) => {
                            let mut bytes = Vec::new();
                            value.write_to_vec(&mut bytes);
                            out.append_value(bytes);
                        }
                        // Text that is not JSON is NULL, as in micromegas.
                        Some(Err(_)) | None => out.append_null(),
                    }
                }
                Arc::new(out.finish())
            }
        })
    }
}

/// `read` of each JSONB value with its row (NULL rows give `None`), or the error naming the
/// first row that does not decode.
fn per_row<T>(
    function: &str,
    values: &BinaryArray,
    read: impl Fn(usize, RawJsonb<'_>) -> std::result::Result<Option<T>, jsonb::Error>,
) -> Result<Vec<Option<T>>> {
    let mut out = Vec::with_capacity(values.len());
    for row in 0..values.len() {
        if values.is_null(row) {
            out.push(None);
            continue;
        }
        match read(row, RawJsonb::new(values.value(row))) {
            Ok(v) => out.push(v),
            Err(e) => return bad_jsonb(function, row, e),
        }
    }
    Ok(out)
}

/// One of the functions, as DataFusion calls it.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PropertyFunction {
    kind: Kind,
    signature: Signature,
}

impl ScalarUDFImpl for PropertyFunction {
    fn name(&self) -> &str {
        self.kind.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.kind.return_type(arg_types)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalars = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let out = self.kind.evaluate(&arrays)?;
        if out.len() != arrays.first().map_or(0, |a| a.len()) {
            return exec_err!(
                "{}: {} rows in, {} out",
                self.name(),
                arrays[0].len(),
                out.len()
            );
        }
        Ok(if scalars {
            ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
        } else {
            ColumnarValue::Array(out)
        })
    }
}

/// The functions, to register on a session.
pub fn property_functions() -> Vec<ScalarUDF> {
    KINDS
        .iter()
        .map(|&kind| {
            ScalarUDF::from(PropertyFunction {
                kind,
                signature: Signature::any(kind.arity(), Volatility::Immutable),
            })
        })
        .collect()
}
