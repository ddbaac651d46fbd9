//! A `properties` column in any of the layouts the functions accept, read row by row:
//! `Map<Utf8, Utf8>` (this crate's), `List<Struct<key, value>>` (micromegas's former layout) and
//! JSONB objects (`Binary`, micromegas 0.33's), each possibly dictionary-encoded.

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, DictionaryArray, Int32Array, StringArray,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{DataType, Int32Type};
use datafusion::common::{Result, exec_err};
use jsonb::{RawJsonb, Value};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// A dictionary-encoded array as the plain array of its values (nulls kept); other arrays as
/// they are.
pub(super) fn expand(array: &ArrayRef) -> Result<ArrayRef> {
    if !matches!(array.data_type(), DataType::Dictionary(_, _)) {
        return Ok(array.clone());
    }
    let dictionary = array.as_any_dictionary();
    let keys = cast(dictionary.keys(), &DataType::Int64)?;
    Ok(take(dictionary.values().as_ref(), &keys, None)?)
}

/// Text of any string layout (`Utf8`, `LargeUtf8`, `Utf8View`, dictionaries of them).
pub(super) fn text(function: &str, what: &str, array: &ArrayRef) -> Result<StringArray> {
    let array = expand(array)?;
    match array.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => {
            Ok(cast(&array, &DataType::Utf8)?.as_string::<i32>().clone())
        }
        other => exec_err!("{function}: the {what} must be text, got {other}"),
    }
}

/// JSONB values of any binary layout (`Binary`, `LargeBinary`, `BinaryView`, dictionaries of
/// them).
pub(super) fn binary(function: &str, array: &ArrayRef) -> Result<BinaryArray> {
    let array = expand(array)?;
    match array.data_type() {
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::Null => {
            Ok(cast(&array, &DataType::Binary)?.as_binary::<i32>().clone())
        }
        other => exec_err!("{function}: expected JSONB (Binary), got {other}"),
    }
}

/// JSONB values of a JSONB column, or of a properties column of another layout (each row as
/// the JSONB object [`Properties::to_jsonb`] makes), so that the `jsonb_*` functions written
/// for micromegas's JSONB `properties` also take this crate's `Map` columns.
pub(super) fn jsonb_values(function: &str, array: &ArrayRef) -> Result<BinaryArray> {
    let array = expand(array)?;
    if !matches!(array.data_type(), DataType::Map(_, _) | DataType::List(_)) {
        return binary(function, &array);
    }
    let properties = Properties::read(function, &array)?;
    Ok(BinaryArray::from_iter((0..properties.len()).map(|row| {
        (!properties.is_null(row)).then(|| properties.to_jsonb(row))
    })))
}

/// The error of a JSONB value that does not decode.
pub(super) fn bad_jsonb<T>(function: &str, row: usize, error: jsonb::Error) -> Result<T> {
    exec_err!("{function}: row {row} is not a valid JSONB value: {error}")
}

/// Row `i` of a text array, `None` when NULL.
fn cell(array: Option<&StringArray>, i: usize) -> Option<&str> {
    array.filter(|a| a.is_valid(i)).map(|a| a.value(i))
}

/// One `properties` column, read in place.
pub(super) enum Properties {
    /// Key/value entries: `Map<Utf8, Utf8>` or `List<Struct<key, value>>`.
    Entries {
        nulls: Option<NullBuffer>,
        offsets: OffsetBuffer<i32>,
        keys: StringArray,
        values: StringArray,
    },
    /// JSONB objects.
    Jsonb(BinaryArray),
}

impl Properties {
    /// Reads `array` for `function`, or says which layouts it takes.
    pub(super) fn read(function: &str, array: &ArrayRef) -> Result<Self> {
        let array = expand(array)?;
        match array.data_type() {
            DataType::Map(_, _) => {
                let map = array.as_map();
                Ok(Self::Entries {
                    nulls: map.logical_nulls(),
                    offsets: map.offsets().clone(),
                    keys: text(function, "property key", map.keys())?,
                    values: text(function, "property value", map.values())?,
                })
            }
            DataType::List(_) => {
                let list = array.as_list::<i32>();
                let Some(entries) = list.values().as_struct_opt() else {
                    return exec_err!(
                        "{function}: expected a list of key/value structs, got {}",
                        array.data_type()
                    );
                };
                let (Some(keys), Some(values)) = (
                    entries.column_by_name("key"),
                    entries.column_by_name("value"),
                ) else {
                    return exec_err!(
                        "{function}: expected a list of structs with fields `key` and `value`, \
                         got {}",
                        array.data_type()
                    );
                };
                Ok(Self::Entries {
                    nulls: list.logical_nulls(),
                    offsets: list.offsets().clone(),
                    keys: text(function, "property key", keys)?,
                    values: text(function, "property value", values)?,
                })
            }
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
                Ok(Self::Jsonb(binary(function, &array)?))
            }
            other => exec_err!(
                "{function}: expected properties as Map<Utf8, Utf8>, List<Struct<key, value>> \
                 or JSONB (Binary), got {other}"
            ),
        }
    }

    /// The number of rows.
    pub(super) fn len(&self) -> usize {
        match self {
            Self::Entries { offsets, .. } => offsets.len() - 1,
            Self::Jsonb(array) => array.len(),
        }
    }

    /// Whether row `row` is NULL.
    pub(super) fn is_null(&self, row: usize) -> bool {
        match self {
            Self::Entries { nulls, .. } => nulls.as_ref().is_some_and(|n| n.is_null(row)),
            Self::Jsonb(array) => array.is_null(row),
        }
    }

    /// The entries of row `row` (of the entries layouts), NULL keys and values as `None`.
    fn entries(&self, row: usize) -> impl Iterator<Item = (Option<&str>, Option<&str>)> {
        let (range, keys, values) = match self {
            Self::Entries {
                offsets,
                keys,
                values,
                ..
            } => (
                offsets[row] as usize..offsets[row + 1] as usize,
                Some(keys),
                Some(values),
            ),
            Self::Jsonb(_) => (0..0, None, None),
        };
        range.map(move |i| (cell(keys, i), cell(values, i)))
    }

    /// The value of property `name` in row `row` (not NULL): in entries, the first whose key
    /// equals `name` ignoring ASCII case; in JSONB, the key equal to `name`, else one equal
    /// ignoring case. A string comes back as it is, any other JSON value as its JSON text.
    pub(super) fn get(&self, function: &str, row: usize, name: &str) -> Result<Option<String>> {
        match self {
            Self::Entries { .. } => Ok(self
                .entries(row)
                .find(|(k, _)| k.is_some_and(|k| k.eq_ignore_ascii_case(name)))
                .and_then(|(_, v)| v.map(str::to_owned))),
            Self::Jsonb(array) => {
                let found = match RawJsonb::new(array.value(row)).get_by_name(name, true) {
                    Ok(found) => found,
                    Err(e) => return bad_jsonb(function, row, e),
                };
                let Some(value) = found else {
                    return Ok(None);
                };
                let raw = value.as_raw();
                Ok(Some(match raw.as_str() {
                    Ok(Some(s)) => s.into_owned(),
                    _ => raw.to_string(),
                }))
            }
        }
    }

    /// The number of properties of row `row` (not NULL): entries, or the keys of a JSONB
    /// object (0 for another JSON value, `None` for bytes that are not JSONB).
    pub(super) fn count(&self, row: usize) -> Option<i32> {
        match self {
            Self::Entries { offsets, .. } => Some(offsets[row + 1] - offsets[row]),
            Self::Jsonb(array) => match RawJsonb::new(array.value(row)).object_each() {
                Ok(Some(entries)) => i32::try_from(entries.len()).ok(),
                Ok(None) => Some(0),
                Err(_) => None,
            },
        }
    }

    /// Row `row` (not NULL) as a JSONB object: entries with a NULL key or value left out, the
    /// last of equal keys kept; JSONB as it is.
    pub(super) fn to_jsonb(&self, row: usize) -> Vec<u8> {
        match self {
            Self::Entries { .. } => jsonb_object(
                self.entries(row)
                    .filter_map(|(key, value)| Some((key?, value?))),
            ),
            Self::Jsonb(array) => array.value(row).to_vec(),
        }
    }

    /// Bytes equal for two rows exactly when their contents are (entries in order, NULLs
    /// distinct from empty strings), for finding repeated rows.
    pub(super) fn fingerprint(&self, row: usize) -> Vec<u8> {
        match self {
            Self::Entries { .. } => {
                let mut out = Vec::new();
                for (key, value) in self.entries(row) {
                    for part in [key, value] {
                        match part {
                            None => out.push(0),
                            Some(text) => {
                                out.push(1);
                                out.extend_from_slice(&(text.len() as u64).to_le_bytes());
                                out.extend_from_slice(text.as_bytes());
                            }
                        }
                    }
                }
                out
            }
            Self::Jsonb(array) => array.value(row).to_vec(),
        }
    }
}

/// A JSONB object of string values, as micromegas 0.33 encodes a property set (the last of
/// equal keys kept).
pub fn jsonb_object<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<u8> {
    let object: BTreeMap<String, Value<'a>> = pairs
        .into_iter()
        .map(|(key, value)| (key.to_owned(), Value::String(Cow::Borrowed(value))))
        .collect();
    let mut out = Vec::new();
    Value::Object(object).write_to_vec(&mut out);
    out
}

/// Property sets as micromegas's JSONB dictionaries hold them: each distinct set stored once,
/// rows referring to it by key.
#[derive(Debug, Default)]
pub(crate) struct JsonbSets {
    values: Vec<Vec<u8>>,
    index: HashMap<Vec<u8>, i32>,
}

impl JsonbSets {
    /// The key of a set (see [`jsonb_object`]), stored when new.
    pub(crate) fn intern<'a>(
        &mut self,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> i32 {
        let jsonb = jsonb_object(pairs);
        let values = &mut self.values;
        *self.index.entry(jsonb).or_insert_with_key(|jsonb| {
            values.push(jsonb.clone());
            values.len() as i32 - 1
        })
    }

    /// The dictionary column of these keys (NULL keys are NULL rows).
    pub(crate) fn column(&self, keys: Int32Array) -> Result<DictionaryArray<Int32Type>> {
        let values = BinaryArray::from_iter_values(self.values.iter());
        Ok(DictionaryArray::try_new(keys, Arc::new(values))?)
    }
}
