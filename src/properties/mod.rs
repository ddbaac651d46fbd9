//! SQL functions over `properties` columns, under the names and with the rules micromegas 0.33
//! gives them, so that notebooks written for micromegas run unchanged:
//!
//! | function | result |
//! |---|---|
//! | `property_get(properties, name)` | the value of a property (keys compared ignoring ASCII case; NULL when missing) |
//! | `properties_length(properties)` | the number of properties |
//! | `properties_to_jsonb(properties)` | the properties as a JSONB object |
//! | `properties_to_dict(properties)` | the same values, dictionary-encoded (repeated rows stored once) |
//! | `properties_to_array(dictionary)` | a dictionary-encoded column as plain values |
//! | `jsonb_get(jsonb, name)` | a member of a JSONB object, as JSONB |
//! | `jsonb_as_string`, `jsonb_as_i64`, `jsonb_as_f64` | a JSONB string or number (NULL for another kind) |
//! | `jsonb_object_keys(jsonb)` | the keys of a JSONB object, as a list |
//! | `jsonb_array_length(jsonb)` | the length of a JSONB array |
//! | `jsonb_format_json(jsonb)` | JSONB as JSON text |
//! | `jsonb_parse(text)` | JSON text as JSONB (NULL when it is not JSON) |
//! | `jsonb_path_query_first(jsonb, path)`, `jsonb_path_query(jsonb, path)` | the first match of a JSONPath, or all as an array |
//! | `jsonb_each(jsonb)` (table) | `(key, value)` rows of a JSONB object's members or an array's elements ([`rows`](JsonbRows)) |
//! | `jsonb_array_elements(jsonb)` (table) | `value` rows of a JSONB array's elements |
//!
//! `properties` may be this crate's `Map<Utf8, Utf8>`, micromegas's former
//! `List<Struct<key, value>>` or micromegas 0.33's JSONB (`Binary`, the `jsonb` crate's
//! encoding, which micromegas writes), each possibly dictionary-encoded; the `jsonb_*` functions
//! take the first two as JSONB objects too, so `jsonb_get(properties, 'k')` written for
//! micromegas also runs on this crate's columns. A NULL argument gives
//! NULL; bytes that are not JSONB are an error naming the function and the row.
//! `properties_length` of such bytes is NULL and `jsonb_parse` of text that is not JSON is NULL, as
//! in micromegas.

mod columns;
mod functions;
mod rows;

pub(crate) use columns::JsonbSets;
pub use columns::jsonb_object;
pub use functions::property_functions;
pub use rows::{JsonbRows, JsonbRowsKind, jsonb_row_functions};

use datafusion::prelude::SessionContext;

/// Registers the functions on a session (`register` does it with the table functions).
pub fn register_property_functions(ctx: &SessionContext) {
    for function in property_functions() {
        ctx.register_udf(function);
    }
    for (name, function) in jsonb_row_functions() {
        ctx.register_udtf(name, function);
    }
}
