//! The predicates DataFusion 55.2 answers wrongly (`c = 'v' AND 'v' = c` on dictionaries, NOT IN
//! lists with NULL beside OR/AND/NOT) answer right in every session the crate sets up.
//!
//! The judge is DataFusion without its optimizer: the analyzed plan executed as written, whose
//! operators follow SQL's three-valued logic. Each bug also has a test on plain DataFusion
//! (no rule) that pins today's wrong answer: when an upgrade fixes DataFusion it fails, and says
//! to remove `src/predicate_fixes.rs`.

#[macro_use]
mod common;

use common::lakes::{Backend, open, store};
use common::rng::Rng;
use common::sql::{context, lines, query, reference, sorted_lines};
use common::workload::shared_recording;
use datafusion::arrow::array::{
    ArrayRef, AsArray, BooleanArray, DictionaryArray, Int64Array, RecordBatch, StringArray,
    StringViewArray, UInt32Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Int64Type, Schema};
use datafusion::datasource::MemTable;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::SessionContext;
use datafusion_async_events::{correct_sql, install_predicate_fixes};
use std::sync::Arc;

/// DataFusion as is: the default analyzer and optimizer.
fn plain() -> SessionContext {
    SessionContext::new()
}

/// DataFusion with the crate's rule, as `register` sets sessions up.
fn fixed() -> SessionContext {
    let ctx = SessionContext::new();
    install_predicate_fixes(&ctx);
    ctx
}

/// The judge: no optimizer rule, the analyzed plan executed as written.
fn oracle() -> SessionContext {
    let state = SessionStateBuilder::new()
        .with_default_features()
        .with_optimizer_rules(vec![])
        .build();
    SessionContext::new_with_state(state)
}

/// 30 rows over the column types the crate serves: `i` Int64 and `u` UInt32 (numbers), `s`
/// Utf8, `d` Dictionary(Int32, Utf8) and `v` Utf8View (strings), `b` Boolean; all but `u`
/// have NULLs. `id` numbers the rows.
fn table() -> RecordBatch {
    let n = 30;
    let letters = ["a", "b", "c", "d"];
    let string = |i: usize| (i % 7 != 3).then(|| letters[i % 4]);
    let int = |i: usize| (i % 5 != 2).then_some((i % 6) as i64);
    let dict: DictionaryArray<Int32Type> = (0..n).map(|i| string(i + 1)).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(0..n as i64)),
        Arc::new(Int64Array::from_iter((0..n).map(int))),
        Arc::new(UInt32Array::from_iter_values(
            (0..n).map(|i| (i % 4) as u32),
        )),
        Arc::new(StringArray::from_iter((0..n).map(string))),
        Arc::new(dict),
        Arc::new(StringViewArray::from_iter((0..n).map(|i| string(i + 2)))),
        Arc::new(BooleanArray::from_iter(
            (0..n).map(|i| (i % 3 != 0).then_some(i % 2 == 0)),
        )),
    ];
    let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    let schema = Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("i", DataType::Int64, true),
        Field::new("u", DataType::UInt32, false),
        Field::new("s", DataType::Utf8, true),
        Field::new("d", dictionary, true),
        Field::new("v", DataType::Utf8View, true),
        Field::new("b", DataType::Boolean, true),
    ]);
    RecordBatch::try_new(Arc::new(schema), columns).unwrap()
}

fn with_table(ctx: SessionContext) -> SessionContext {
    let batch = table();
    let t = MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap();
    ctx.register_table("t", Arc::new(t)).unwrap();
    ctx
}

/// A query's rows as sorted text, or the error's kind.
async fn answer(ctx: &SessionContext, sql: &str) -> Result<Vec<String>, String> {
    let batches = async { ctx.sql(sql).await?.collect().await }.await;
    batches.map(|b| sorted_lines(&b)).map_err(|e| {
        let text = e.to_string();
        text.split(':').next().unwrap_or_default().to_string()
    })
}

fn count(batches: &[RecordBatch]) -> i64 {
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

#[tokio::test]
async fn plain_datafusion_still_folds_a_literal_left_pair_on_dictionaries_to_false() {
    // When this fails, DataFusion answers right (apache/datafusion#24763 is in the release):
    // remove the literal-left rewrite of src/predicate_fixes.rs and this test.
    let sql = "SELECT count(*) FROM t WHERE d = 'a' AND 'a' = d";
    let wrong = query(&with_table(plain()), sql).await;
    let right = query(&with_table(oracle()), sql).await;
    assert!(count(&right) > 0);
    assert_eq!(
        count(&wrong),
        0,
        "DataFusion fixed it: remove the workaround"
    );
    // A range pair keeps the weaker bound: rows equal to the bound come back.
    let sql = "SELECT count(*) FROM t WHERE v >= 'b' AND 'b' < v";
    let wrong = query(&with_table(plain()), sql).await;
    let right = query(&with_table(oracle()), sql).await;
    assert!(count(&wrong) > count(&right), "DataFusion fixed it");
}

#[tokio::test]
async fn plain_datafusion_still_drops_a_not_in_with_null_next_to_an_or() {
    // When this fails, DataFusion answers right (apache/datafusion#24258 is in the release):
    // remove the IN-list rewrites of src/predicate_fixes.rs and this test.
    let sql = "SELECT count(*) FROM t WHERE (i = 1 OR i = 4) AND NOT (i IN (0, 5, NULL))";
    let wrong = query(&with_table(plain()), sql).await;
    let right = query(&with_table(oracle()), sql).await;
    assert_eq!(count(&right), 0);
    assert!(
        count(&wrong) > 0,
        "DataFusion fixed it: remove the workaround"
    );
}

#[tokio::test]
async fn the_reported_shapes_answer_right_with_the_rule() {
    let (plain, fixed, oracle) = (
        with_table(plain()),
        with_table(fixed()),
        with_table(oracle()),
    );
    let predicates = [
        "d = 'a' AND 'a' = d",
        "'a' = d AND d = 'a'",
        "d IN ('a') AND 'a' = d",
        "v = 'b' AND 'b' = v",
        "v >= 'b' AND 'b' < v",
        "'b' < v AND v >= 'b'",
        "s = 'c' AND 'c' = s",
        "(i = 1 OR i = 4) AND NOT (i IN (0, 5, NULL))",
        "i IN (1, 4) AND i NOT IN (0, NULL)",
        "i IN (1) AND i NOT IN (3, NULL)",
        "i NOT IN (1, NULL) OR i = 2",
        "NOT (i IN (1, NULL)) OR i NOT IN (2)",
        "i NOT IN (1) OR i NOT IN (2)",
        "NOT (i IN (1, NULL) AND i IN (2))",
        "NOT ((i = 1 OR i = 2) AND (i = 3 OR i = 4))",
        "CAST(u AS BIGINT) IN (1, 2) AND CAST(u AS BIGINT) NOT IN (3, NULL)",
        "(u = 1 OR u = 2) AND NOT (u IN (1, NULL))",
        "(d = 'a' OR d = 'b') AND NOT (d IN ('c', NULL))",
        "(CAST(d AS VARCHAR) = 'a' OR 'b' = CAST(d AS VARCHAR)) AND d NOT IN ('c', NULL)",
        "b = false",
        "NOT (b = true) AND i IN (1, NULL)",
        "i IN (1) AND i IN (2)",
        "(i = 1 OR i = 2) AND (i = 3 OR i = 4)",
        "i IN (1, 2) AND i NOT IN (1, 2)",
    ];
    for p in predicates {
        for sql in [
            format!("SELECT id FROM t WHERE {p}"),
            format!("SELECT id, {p} AS p FROM t"),
            format!("SELECT id FROM t WHERE ({p}) IS NULL"),
        ] {
            let (got, want) = (answer(&fixed, &sql).await, answer(&oracle, &sql).await);
            assert_eq!(got, want, "{sql}");
            let text = answer(&plain, &correct_sql(&sql)).await;
            assert_eq!(text, want, "{sql}\n→ {}", correct_sql(&sql));
        }
    }
}

/// A column and the constants it is compared with: `(operand, values)`.
const OPERANDS: [(&str, &[&str]); 7] = [
    ("i", &["0", "1", "2", "4", "5"]),
    ("u", &["0", "1", "2", "3"]),
    ("CAST(u AS BIGINT)", &["1", "2", "9"]),
    ("s", &["'a'", "'b'", "'c'", "'z'"]),
    ("d", &["'a'", "'b'", "'c'", "'d'"]),
    ("v", &["'a'", "'b'", "'d'"]),
    ("CAST(d AS VARCHAR)", &["'a'", "'c'"]),
];

/// The shapes of the bugs: comparisons written both ways round, IN and NOT IN lists with NULL,
/// and their pairs on one operand, under AND, OR and NOT.
fn atom(rng: &mut Rng, operand: &str, values: &[&str]) -> String {
    let value = *rng.pick(values);
    let op = *rng.pick(&["=", "=", "<>", "<", "<=", ">", ">="]);
    let list = |rng: &mut Rng| {
        let mut items: Vec<&str> = (0..1 + rng.below(3)).map(|_| *rng.pick(values)).collect();
        if rng.below(2) == 0 {
            items.insert(rng.below(items.len() as u64 + 1) as usize, "NULL");
        }
        items.join(", ")
    };
    match rng.below(7) {
        0 => format!("{operand} {op} {value}"),
        1 => format!("{value} {op} {operand}"),
        2 => format!("{operand} IN ({})", list(rng)),
        3 => format!("{operand} NOT IN ({})", list(rng)),
        4 => format!("NOT ({operand} IN ({}))", list(rng)),
        5 => format!("({operand} = {value} OR {operand} = {})", rng.pick(values)),
        _ => format!("{operand} IS NULL"),
    }
}

fn predicate(rng: &mut Rng, operand: (&str, &[&str]), depth: u32) -> String {
    if depth > 0 && rng.below(3) != 0 {
        // Mostly on one operand: that is where the set rewrites apply.
        let other = if rng.below(4) == 0 {
            *rng.pick(&OPERANDS)
        } else {
            operand
        };
        let (a, b) = (
            predicate(rng, operand, depth - 1),
            predicate(rng, other, depth - 1),
        );
        return match rng.below(5) {
            0 | 1 => format!("({a} AND {b})"),
            2 | 3 => format!("({a} OR {b})"),
            _ => format!("NOT ({a} AND {b})"),
        };
    }
    atom(rng, operand.0, operand.1)
}

#[tokio::test]
async fn random_predicates_of_these_shapes_answer_as_sql_says() {
    let (plain, fixed, oracle) = (
        with_table(plain()),
        with_table(fixed()),
        with_table(oracle()),
    );
    let mut rng = Rng(0x0b5e_55ed_2101);
    let (mut compared, mut refused, mut plain_wrong) = (0, 0, 0);
    let generated: usize = std::env::var("PREDICATE_FIXES_QUERIES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(400);
    for n in 0..generated {
        let operand = *rng.pick(&OPERANDS);
        let p = predicate(&mut rng, operand, 3);
        let sql = match n % 3 {
            0 => format!("SELECT id FROM t WHERE {p}"),
            1 => format!("SELECT id, {p} AS p FROM t"),
            _ => format!("SELECT id FROM t WHERE NOT ({p}) OR ({p}) IS NULL"),
        };
        let (got, want) = (answer(&fixed, &sql).await, answer(&oracle, &sql).await);
        assert_eq!(got, want, "{sql}");
        match want {
            Ok(_) => compared += 1,
            Err(_) => refused += 1,
        }
        let plain_answer = answer(&plain, &sql).await;
        if plain_answer != answer(&oracle, &sql).await {
            plain_wrong += 1;
        }
        // The text rewrite (what the Python package applies): the same answers.
        let text = answer(&plain, &correct_sql(&sql)).await;
        assert_eq!(
            text,
            answer(&oracle, &sql).await,
            "{sql}\n→ {}",
            correct_sql(&sql)
        );
    }
    println!(
        "{compared} of {generated} random queries compared on rows, {refused} refused by both \
         (the same kind of error); plain DataFusion answered {plain_wrong} of them wrongly"
    );
    assert!(compared * 10 >= generated * 9, "only {compared} compared");
    // The generator reaches the bugs: without the rule, some answers are wrong.
    assert!(
        plain_wrong > 0,
        "the shapes no longer reach DataFusion's bugs"
    );
}

on_both! {
    async fn the_two_reported_queries_answer_right_on_a_recording(backend: Backend) {
        let rec = shared_recording();
        let t = open(backend).await;
        store(&t.lake, rec).await;
        let pid = rec.process.process_id;
        let ctx = context(&t.lake);
        let reference = reference(backend, rec);
        let begins = count(&query(&reference, "SELECT count(*) FROM ref WHERE event_type = 'begin'").await);
        assert!(begins > 0);
        let pair = query(&ctx, &format!(
            "SELECT count(*) FROM async_events('{pid}') WHERE event_type = 'begin' AND 'begin' = event_type")).await;
        assert_eq!(count(&pair), begins);
        let names = lines(&query(&reference, "SELECT name, count(*) FROM ref GROUP BY name ORDER BY name LIMIT 1").await);
        let (name, n) = names[0].split_once('|').unwrap();
        let pair = query(&ctx, &format!(
            "SELECT count(*) FROM async_events('{pid}') WHERE name = '{name}' AND '{name}' = name")).await;
        assert_eq!(count(&pair).to_string(), n);
        // Through the pairing too: the span's name filter goes into its scan.
        let spans = query(&ctx, &format!(
            "SELECT count(*) FROM async_spans('{pid}') WHERE name = '{name}' AND '{name}' = name")).await;
        let want = query(&ctx, &format!(
            "SELECT count(*) FROM async_spans('{pid}') WHERE name = '{name}'")).await;
        assert!(count(&want) > 0);
        assert_eq!(count(&spans), count(&want));

        let ids = lines(&query(&reference, "SELECT DISTINCT span_id FROM ref ORDER BY span_id LIMIT 4").await);
        let (a, b, c, d) = (&ids[0], &ids[1], &ids[2], &ids[3]);
        let not_in = format!(
            "SELECT span_id FROM async_events('{pid}') WHERE (span_id = {a} OR span_id = {b}) \
             AND NOT (span_id IN ({c}, {d}, NULL))");
        assert!(query(&ctx, &not_in).await.iter().all(|b| b.num_rows() == 0), "{not_in}");
        // Without the NULL, the rows are there.
        let without = not_in.replace(", NULL", "");
        assert!(!lines(&query(&ctx, &without).await).is_empty());
    }
}
