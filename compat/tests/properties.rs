//! The property and JSONB functions of datafusion-async-events against micromegas's own
//! (micromegas-datafusion-extensions 0.33, registered by its `register_extension_udfs`): the
//! same SQL on the same random properties, in micromegas's two layouts (a list of key/value
//! structs, and JSONB objects written by the `jsonb` crate micromegas uses), must give the same
//! answers, NULLs and errors included. Our `Map<Utf8, Utf8>` layout, which micromegas does not
//! read, must answer as micromegas does on the same entries as a list.

use datafusion::arrow::array::{
    ArrayRef, BinaryDictionaryBuilder, Int64Array, ListArray, MapArray, RecordBatch, StringArray,
    StructArray,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::datatypes::{DataType, Field, Fields, Int32Type, Schema};
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use std::sync::Arc;

/// A small deterministic generator (xorshift64*), so that a failure can be replayed.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// Keys of the data, two equal but for case.
const KEYS: &[&str] = &[
    "thread-name",
    "Thread-Name",
    "version",
    "count",
    "ratio",
    "flag",
    "nested",
    "arr",
    "note",
    "",
];
/// The keys looked up: those of the data, another case of one, and one never present.
fn lookups() -> Vec<&'static str> {
    KEYS.iter()
        .copied()
        .chain(["THREAD-NAME", "missing"])
        .collect()
}

const TEXTS: &[&str] = &[
    "worker-1",
    "42",
    "-7",
    "0.5",
    "x y",
    "say \"hi\"",
    "ünïcode",
    "",
    "back\\slash",
];

/// A row's properties: `None` for a NULL row.
type Row = Option<Vec<(String, String)>>;

fn rows(random: &mut Random, n: usize) -> Vec<Row> {
    (0..n)
        .map(|_| {
            if random.below(10) == 0 {
                return None;
            }
            let len = random.below(6);
            Some(
                (0..len)
                    .map(|_| (random.pick(KEYS).to_owned(), random.pick(TEXTS).to_owned()))
                    .collect(),
            )
        })
        .collect()
}

fn offsets(rows: &[Row]) -> OffsetBuffer<i32> {
    OffsetBuffer::from_lengths(rows.iter().map(|r| r.as_ref().map_or(0, Vec::len)))
}

fn nulls(rows: &[Row]) -> NullBuffer {
    NullBuffer::from(rows.iter().map(Option::is_some).collect::<Vec<_>>())
}

fn entries(rows: &[Row]) -> (ArrayRef, ArrayRef) {
    let flat: Vec<&(String, String)> = rows.iter().flatten().flatten().collect();
    let keys = StringArray::from_iter_values(flat.iter().map(|(k, _)| k.as_str()));
    let values = StringArray::from_iter_values(flat.iter().map(|(_, v)| v.as_str()));
    (Arc::new(keys), Arc::new(values))
}

fn key_value_fields() -> Fields {
    Fields::from(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("value", DataType::Utf8, false),
    ])
}

/// micromegas's former layout: `List<Property: Struct<key, value>>`.
fn as_list(rows: &[Row]) -> ArrayRef {
    let (keys, values) = entries(rows);
    let fields = key_value_fields();
    let structs = StructArray::new(fields.clone(), vec![keys, values], None);
    let item = Arc::new(Field::new("Property", DataType::Struct(fields), false));
    Arc::new(ListArray::new(
        item,
        offsets(rows),
        Arc::new(structs),
        Some(nulls(rows)),
    ))
}

/// This crate's layout: `Map<Utf8, Utf8>`.
fn as_map(rows: &[Row]) -> ArrayRef {
    let (keys, values) = entries(rows);
    let fields = key_value_fields();
    let structs = StructArray::new(fields.clone(), vec![keys, values], None);
    let entries = Arc::new(Field::new("entries", DataType::Struct(fields), false));
    Arc::new(MapArray::try_new(entries, offsets(rows), structs, Some(nulls(rows)), false).unwrap())
}

/// JSON text for a row: the values of some keys typed (numbers, booleans, an object, an array),
/// the rest strings; of keys equal but for case, both are kept; of equal keys, the first.
fn json(row: &[(String, String)]) -> String {
    let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut seen = Vec::new();
    let mut members = Vec::new();
    for (key, value) in row {
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        let typed = match key.as_str() {
            "count" => value.parse::<i64>().map_or(quote(value), |n| n.to_string()),
            "ratio" => value
                .parse::<f64>()
                .map_or(quote(value), |x| format!("{x:?}")),
            "flag" => (value.len() % 2 == 0).to_string(),
            "nested" => format!("{{\"a\": {}, \"b\": {}}}", value.len(), quote(value)),
            "arr" => format!("[1, {}, 3.5]", quote(value)),
            _ => quote(value),
        };
        members.push(format!("{}: {typed}", quote(key)));
    }
    format!("{{{}}}", members.join(", "))
}

/// micromegas 0.33's layout: JSONB objects in a `Dictionary<Int32, Binary>`.
fn as_jsonb(rows: &[Row]) -> ArrayRef {
    let mut out = BinaryDictionaryBuilder::<Int32Type>::new();
    for row in rows {
        match row {
            None => out.append_null(),
            Some(row) => {
                let text = json(row);
                let value = jsonb::parse_value(text.as_bytes()).unwrap();
                let mut bytes = Vec::new();
                value.write_to_vec(&mut bytes);
                out.append_value(bytes);
            }
        }
    }
    Arc::new(out.finish())
}

/// JSON text for `jsonb_parse`, some of it not JSON.
fn texts(random: &mut Random, rows: &[Row]) -> ArrayRef {
    Arc::new(StringArray::from_iter(rows.iter().map(|row| {
        row.as_ref().map(|row| match random.below(4) {
            0 => "{not json".to_owned(),
            1 => format!("[{}, null, \"x\"]", row.len()),
            _ => json(row),
        })
    })))
}

fn table(rows: &[Row], random: &mut Random) -> RecordBatch {
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "id",
            Arc::new(Int64Array::from_iter_values(0..rows.len() as i64)),
        ),
        ("plist", as_list(rows)),
        ("pmap", as_map(rows)),
        ("pjsonb", as_jsonb(rows)),
        ("jtext", texts(random, rows)),
    ];
    let schema = Schema::new(
        columns
            .iter()
            .map(|(name, array)| Field::new(*name, array.data_type().clone(), true))
            .collect::<Vec<_>>(),
    );
    RecordBatch::try_new(
        Arc::new(schema),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .unwrap()
}

fn session(batch: &RecordBatch, ours: bool) -> SessionContext {
    let ctx = SessionContext::new();
    if ours {
        datafusion_async_events::properties::register_property_functions(&ctx);
    } else {
        micromegas_datafusion_extensions::register_extension_udfs(&ctx);
    }
    let table = MemTable::try_new(batch.schema(), vec![vec![batch.clone()]]).unwrap();
    ctx.register_table("t", Arc::new(table)).unwrap();
    ctx
}

/// `n` random rows from `seed`, with a session over them running our functions and one
/// running micromegas's.
fn sessions(seed: u64, n: usize) -> (Vec<Row>, SessionContext, SessionContext) {
    let mut random = Random(seed);
    let rows = rows(&mut random, n);
    let batch = table(&rows, &mut random);
    let (ours, theirs) = (session(&batch, true), session(&batch, false));
    (rows, ours, theirs)
}

/// The answer to `sql` as text, or the error.
async fn answer(ctx: &SessionContext, sql: &str) -> Result<(String, usize), String> {
    let batches = async { ctx.sql(sql).await?.collect().await }
        .await
        .map_err(|e| e.to_string())?;
    let rows = batches.iter().map(RecordBatch::num_rows).sum();
    Ok((pretty_format_batches(&batches).unwrap().to_string(), rows))
}

/// Fails on the first line where two answers differ, showing that line of each.
fn same(ours: &str, theirs: &str, what: &str) {
    for (i, (a, b)) in ours.lines().zip(theirs.lines()).enumerate() {
        assert_eq!(a, b, "{what}: line {i} differs (ours, then micromegas's)");
    }
    assert_eq!(
        ours.lines().count(),
        theirs.lines().count(),
        "{what}: line counts"
    );
}

/// Every query, each selecting `id` and one value per row.
fn queries() -> Vec<String> {
    let mut out = Vec::new();
    let per_row = |expr: String| format!("SELECT id, {expr} AS v FROM t ORDER BY id");
    for column in ["plist", "pjsonb"] {
        out.push(per_row(format!("properties_length({column})")));
        for key in lookups() {
            out.push(per_row(format!("property_get({column}, '{key}')")));
        }
    }
    for key in lookups() {
        let got = format!("jsonb_get(pjsonb, '{key}')");
        for function in [
            "jsonb_format_json",
            "jsonb_as_string",
            "jsonb_as_i64",
            "jsonb_as_f64",
            "jsonb_array_length",
        ] {
            out.push(per_row(format!("{function}({got})")));
        }
        out.push(per_row(format!("jsonb_object_keys({got})")));
    }
    for expr in [
        "jsonb_object_keys(pjsonb)",
        "jsonb_format_json(pjsonb)",
        "jsonb_format_json(jsonb_parse(jtext))",
        "jsonb_array_length(jsonb_parse(jtext))",
        "jsonb_format_json(properties_to_array(pjsonb))",
        "property_get(pjsonb, 'count') = '42'",
        "jsonb_format_json(jsonb_path_query_first(pjsonb, '$.nested.a'))",
        "jsonb_format_json(jsonb_path_query(pjsonb, '$.arr[*]'))",
        "jsonb_format_json(jsonb_path_query(pjsonb, '$.*'))",
        "jsonb_format_json(jsonb_path_query_first(pjsonb, 'not a path ((('))",
    ] {
        out.push(per_row(expr.to_owned()));
    }
    // Filters and aggregates over the functions, as notebooks write them.
    out.push(
        "SELECT property_get(plist, 'thread-name') AS thread, count(*) AS n FROM t \
         GROUP BY thread ORDER BY thread NULLS FIRST"
            .to_owned(),
    );
    out.push(
        "SELECT id FROM t WHERE jsonb_as_i64(jsonb_get(pjsonb, 'count')) > 0 ORDER BY id"
            .to_owned(),
    );
    out
}

/// What running the same queries on both sessions found.
struct Compared {
    /// Queries both answered, alike.
    compared: usize,
    /// Rows of those answers.
    values: usize,
    /// Queries both refused: the query, our message, micromegas's.
    refused: Vec<(String, String, String)>,
}

/// Runs each query on both sessions: the answers must be the same, or both must fail.
async fn compare(ours: &SessionContext, theirs: &SessionContext, queries: &[String]) -> Compared {
    let mut out = Compared {
        compared: 0,
        values: 0,
        refused: Vec::new(),
    };
    for sql in queries {
        match (answer(ours, sql).await, answer(theirs, sql).await) {
            (Ok((a, n)), Ok((b, _))) => {
                same(&a, &b, sql);
                out.compared += 1;
                out.values += n;
            }
            (Err(a), Err(b)) => out.refused.push((sql.clone(), a, b)),
            (a, b) => panic!("{sql}\nours: {a:?}\nmicromegas: {b:?}"),
        }
    }
    println!(
        "{} of {} queries compared ({} rows), {} refused by both",
        out.compared,
        queries.len(),
        out.values,
        out.refused.len()
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn property_and_jsonb_functions_answer_as_micromegas_does() {
    let (_, ours, theirs) = sessions(0x5eed_1234_abcd_0001, 400);
    let queries = queries();
    let Compared {
        compared,
        values,
        refused,
    } = compare(&ours, &theirs, &queries).await;
    // Only the malformed JSONPath is refused, by both for the same reason.
    for (sql, a, b) in &refused {
        for message in [a, b] {
            assert!(message.contains("invalid JSONPath"), "{sql}: {message}");
        }
    }
    assert_eq!((compared, refused.len()), (queries.len() - 1, 1));
    assert!(values >= 400 * (queries.len() - 3), "{values} rows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_map_layout_answers_as_micromegas_on_the_same_list() {
    let (_, ours, theirs) = sessions(0x5eed_1234_abcd_0002, 400);
    let mut compared = 0;
    let mut exprs = vec!["properties_length({})".to_owned()];
    exprs.extend(
        lookups()
            .iter()
            .map(|k| format!("property_get({{}}, '{k}')")),
    );
    for expr in exprs {
        let on = |column: &str| {
            format!(
                "SELECT id, {} AS v FROM t ORDER BY id",
                expr.replace("{}", column)
            )
        };
        let (a, n) = answer(&ours, &on("pmap")).await.unwrap();
        let (b, _) = answer(&theirs, &on("plist")).await.unwrap();
        same(&a, &b, &expr);
        compared += n;
    }
    assert_eq!(compared, 400 * (lookups().len() + 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_jsonb_reads_back_in_micromegas() {
    // properties_to_jsonb is in micromegas-analytics, not in the extensions: its output is
    // judged by micromegas's readers instead, against ours on the entries it came from.
    let mut random = Random(0x5eed_1234_abcd_0003);
    // Without repeated keys: of those, a list answers the first and JSONB (made from the map)
    // keeps the last, in micromegas as here.
    let rows: Vec<Row> = rows(&mut random, 400)
        .into_iter()
        .map(|row| {
            row.map(|entries| {
                let mut kept: Vec<(String, String)> = Vec::new();
                for (k, v) in entries {
                    if !kept.iter().any(|(seen, _)| *seen == k) {
                        kept.push((k, v));
                    }
                }
                kept
            })
        })
        .collect();
    let batch = table(&rows, &mut random);
    let ours = session(&batch, true);
    let converted = ours
        .sql("SELECT id, properties_to_jsonb(pmap) AS j FROM t")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let theirs = SessionContext::new();
    micromegas_datafusion_extensions::register_extension_udfs(&theirs);
    let table = MemTable::try_new(converted[0].schema(), vec![converted]).unwrap();
    theirs.register_table("c", Arc::new(table)).unwrap();
    for key in lookups() {
        let (a, n) = answer(
            &ours,
            &format!("SELECT id, property_get(pmap, '{key}') AS v FROM t ORDER BY id"),
        )
        .await
        .unwrap();
        let (b, _) = answer(
            &theirs,
            &format!("SELECT id, property_get(j, '{key}') AS v FROM c ORDER BY id"),
        )
        .await
        .unwrap();
        if key.eq_ignore_ascii_case("thread-name") {
            // Keys equal but for case: a list gives the first entry, JSONB the exact key first.
            continue;
        }
        same(&a, &b, key);
        assert_eq!(n, 400);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonb_table_functions_answer_as_micromegas_does() {
    // jsonb_each and jsonb_array_elements over the same random properties, one row at a time
    // (objects, their arrays, NULL rows), over many rows at once, and over literals; answers
    // and refusals must agree.
    let (rows, ours, theirs) = sessions(0x5eed_1234_abcd_0003, 60);
    let each =
        |arg: &str| format!("SELECT key, jsonb_format_json(value) AS v FROM jsonb_each({arg})");
    let elements = |arg: &str| {
        format!("SELECT jsonb_format_json(value) AS v FROM jsonb_array_elements({arg})")
    };
    let mut queries = Vec::new();
    for id in 0..rows.len() {
        let object = format!("(SELECT pjsonb FROM t WHERE id = {id})");
        let array = format!("(SELECT jsonb_get(pjsonb, 'arr') FROM t WHERE id = {id})");
        queries.push(each(&object));
        queries.push(each(&array));
        queries.push(elements(&array));
        queries.push(elements(&object));
    }
    for arg in [
        "(SELECT pjsonb FROM t WHERE id < 20)",
        "(SELECT pjsonb FROM t WHERE id < 0)",
        "jsonb_parse('{\"a\": 1, \"b\": [1, 2], \"c\": {\"d\": null}}')",
        "jsonb_parse('[1, \"x\", null, {\"k\": true}]')",
        "jsonb_parse('3')",
    ] {
        queries.push(each(arg));
        queries.push(elements(arg));
    }
    let Compared {
        compared,
        values,
        refused,
    } = compare(&ours, &theirs, &queries).await;
    let both_failed = refused.len();
    assert!(compared > rows.len() * 2, "{compared}");
    assert!(values > 150, "{values} rows");
    assert!(
        both_failed >= rows.len() / 2,
        "objects are not arrays: {both_failed}"
    );
}
