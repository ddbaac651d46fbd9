//! The Flight SQL metadata commands, answered from the serving session's own catalog with the
//! builders of `arrow_flight::sql::metadata`.

use super::status::one_line;
use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetTableTypes, CommandGetTables, Nullable,
    Searchable, SqlInfo, XdbcDataType, XdbcDatetimeSubcode,
};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::TableType;
use datafusion::prelude::SessionContext;
use std::sync::Arc;
use tonic::Status;

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(one_line(&e.to_string()))
}

/// The Flight SQL name of a table type.
fn type_name(table_type: TableType) -> &'static str {
    match table_type {
        TableType::Base => "TABLE",
        TableType::View => "VIEW",
        TableType::Temporary => "LOCAL TEMPORARY",
    }
}

/// Every (catalog, schema) of the session.
fn schemas(ctx: &SessionContext) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for catalog in ctx.catalog_names() {
        if let Some(provider) = ctx.catalog(&catalog) {
            for schema in provider.schema_names() {
                out.push((catalog.clone(), schema));
            }
        }
    }
    out
}

/// `GetCatalogs`.
pub(crate) fn catalogs(ctx: &SessionContext) -> Result<RecordBatch, Status> {
    let mut builder = CommandGetCatalogs {}.into_builder();
    for catalog in ctx.catalog_names() {
        builder.append(catalog);
    }
    builder.build().map_err(internal)
}

/// `GetDbSchemas` (the builder applies the catalog and pattern filters).
pub(crate) fn db_schemas(
    ctx: &SessionContext,
    query: CommandGetDbSchemas,
) -> Result<RecordBatch, Status> {
    let mut builder = query.into_builder();
    for (catalog, schema) in schemas(ctx) {
        builder.append(catalog, schema);
    }
    builder.build().map_err(internal)
}

/// `GetTables`, with each table's Arrow schema when asked, as `sent` makes it (what a query of
/// the table sends).
pub(crate) async fn tables(
    ctx: &SessionContext,
    query: CommandGetTables,
    sent: impl Fn(&Schema) -> Schema,
) -> Result<RecordBatch, Status> {
    let mut builder = query.into_builder();
    for (catalog, schema) in schemas(ctx) {
        let Some(provider) = ctx.catalog(&catalog).and_then(|c| c.schema(&schema)) else {
            continue;
        };
        for name in provider.table_names() {
            if let Some(table) = provider.table(&name).await.map_err(internal)? {
                let table_type = type_name(table.table_type());
                builder
                    .append(&catalog, &schema, &name, table_type, &sent(&table.schema()))
                    .map_err(internal)?;
            }
        }
    }
    builder.build().map_err(internal)
}

/// `GetTableTypes`.
pub(crate) fn table_types() -> Result<RecordBatch, Status> {
    let mut builder = CommandGetTableTypes {}.into_builder();
    for table_type in [TableType::Base, TableType::View, TableType::Temporary] {
        builder.append(type_name(table_type));
    }
    builder.build().map_err(internal)
}

/// What `GetSqlInfo` answers: only facts that hold for this server.
pub(crate) fn sql_info() -> Result<SqlInfoData, Status> {
    let mut builder = SqlInfoDataBuilder::new();
    builder.append(SqlInfo::FlightSqlServerName, "datafusion-async-events");
    builder.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    builder.append(SqlInfo::FlightSqlServerArrowVersion, "59");
    // Nothing is ever written: DDL, DML and statements are refused.
    builder.append(SqlInfo::FlightSqlServerReadOnly, true);
    builder.append(SqlInfo::FlightSqlServerSql, true);
    builder.append(SqlInfo::FlightSqlServerSubstrait, false);
    // No transactions (FlightSqlServerTransaction: 0 = none).
    builder.append(SqlInfo::FlightSqlServerTransaction, 0i32);
    builder.append(SqlInfo::FlightSqlServerCancel, false);
    builder.append(SqlInfo::SqlDdlCatalog, false);
    builder.append(SqlInfo::SqlDdlSchema, false);
    builder.append(SqlInfo::SqlDdlTable, false);
    builder.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    builder.append(SqlInfo::SqlTransactionsSupported, false);
    builder.build().map_err(internal)
}

/// The SQL types `GetXdbcTypeInfo` lists: those this server's SQL accepts in `CAST` and
/// column definitions, under the name it accepts (tests/flight.rs casts to each one).
const SQL_TYPES: &[(&str, XdbcDataType, Option<i32>)] = &[
    ("BOOLEAN", XdbcDataType::XdbcBit, Some(1)),
    ("TINYINT", XdbcDataType::XdbcTinyint, Some(3)),
    ("SMALLINT", XdbcDataType::XdbcSmallint, Some(5)),
    ("INTEGER", XdbcDataType::XdbcInteger, Some(10)),
    ("BIGINT", XdbcDataType::XdbcBigint, Some(19)),
    ("TINYINT UNSIGNED", XdbcDataType::XdbcTinyint, Some(3)),
    ("SMALLINT UNSIGNED", XdbcDataType::XdbcSmallint, Some(5)),
    ("INTEGER UNSIGNED", XdbcDataType::XdbcInteger, Some(10)),
    ("BIGINT UNSIGNED", XdbcDataType::XdbcBigint, Some(20)),
    ("REAL", XdbcDataType::XdbcReal, Some(24)),
    ("DOUBLE", XdbcDataType::XdbcDouble, Some(53)),
    ("DECIMAL", XdbcDataType::XdbcDecimal, Some(38)),
    ("VARCHAR", XdbcDataType::XdbcVarchar, None),
    ("BYTEA", XdbcDataType::XdbcVarbinary, None),
    ("DATE", XdbcDataType::XdbcDate, Some(10)),
    ("TIME", XdbcDataType::XdbcTime, Some(18)),
    ("TIMESTAMP", XdbcDataType::XdbcTimestamp, Some(29)),
    ("INTERVAL", XdbcDataType::XdbcInterval, None),
];

/// One row of `GetXdbcTypeInfo`, its details following from the type's kind.
fn xdbc_type(name: &str, data_type: XdbcDataType, column_size: Option<i32>) -> XdbcTypeInfo {
    use XdbcDataType as T;
    let exact = matches!(
        data_type,
        T::XdbcTinyint | T::XdbcSmallint | T::XdbcInteger | T::XdbcBigint | T::XdbcDecimal
    );
    let approximate = matches!(data_type, T::XdbcReal | T::XdbcDouble);
    let (sql_data_type, datetime_subcode) = match data_type {
        T::XdbcDate => (T::XdbcDatetime, Some(XdbcDatetimeSubcode::XdbcSubcodeYear)),
        T::XdbcTime => (T::XdbcDatetime, Some(XdbcDatetimeSubcode::XdbcSubcodeTime)),
        T::XdbcTimestamp => (
            T::XdbcDatetime,
            Some(XdbcDatetimeSubcode::XdbcSubcodeTimestamp),
        ),
        other => (other, None),
    };
    // How a literal of the type is written.
    let (prefix, suffix) = match data_type {
        T::XdbcVarchar => (Some("'"), Some("'")),
        T::XdbcVarbinary => (Some("X'"), Some("'")),
        T::XdbcDate => (Some("DATE '"), Some("'")),
        T::XdbcTime => (Some("TIME '"), Some("'")),
        T::XdbcTimestamp => (Some("TIMESTAMP '"), Some("'")),
        T::XdbcInterval => (Some("INTERVAL '"), Some("'")),
        _ => (None, None),
    };
    let text = data_type == T::XdbcVarchar;
    XdbcTypeInfo {
        type_name: name.to_owned(),
        data_type,
        column_size,
        literal_prefix: prefix.map(str::to_owned),
        literal_suffix: suffix.map(str::to_owned),
        create_params: (data_type == T::XdbcDecimal)
            .then(|| vec!["precision".to_owned(), "scale".to_owned()]),
        nullable: Nullable::NullabilityNullable,
        case_sensitive: text,
        // LIKE works on text only; every type compares with `=` and `<`.
        searchable: if text {
            Searchable::Full
        } else {
            Searchable::Basic
        },
        unsigned_attribute: (exact || approximate).then(|| name.ends_with("UNSIGNED")),
        fixed_prec_scale: false,
        auto_increment: (exact || approximate).then_some(false),
        local_type_name: Some(name.to_owned()),
        minimum_scale: (data_type == T::XdbcDecimal).then_some(0),
        maximum_scale: (data_type == T::XdbcDecimal).then_some(38),
        sql_data_type,
        datetime_subcode,
        num_prec_radix: if exact {
            Some(10)
        } else if approximate {
            Some(2)
        } else {
            None
        },
        interval_precision: None,
    }
}

/// What `GetXdbcTypeInfo` answers.
pub(crate) fn xdbc_type_info() -> Result<XdbcTypeInfoData, Status> {
    let mut builder = XdbcTypeInfoDataBuilder::new();
    for &(name, data_type, column_size) in SQL_TYPES {
        builder.append(xdbc_type(name, data_type, column_size));
    }
    builder.build().map_err(internal)
}

/// The result schema of `GetPrimaryKeys`, as the Flight SQL specification gives it.
pub(crate) fn primary_keys_schema() -> Schema {
    Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ])
}

/// The result schema of `GetExportedKeys`, `GetImportedKeys` and `GetCrossReference`.
pub(crate) fn foreign_keys_schema() -> Schema {
    let text = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
    Schema::new(vec![
        text("pk_catalog_name", true),
        text("pk_db_schema_name", true),
        text("pk_table_name", false),
        text("pk_column_name", false),
        text("fk_catalog_name", true),
        text("fk_db_schema_name", true),
        text("fk_table_name", false),
        text("fk_column_name", false),
        Field::new("key_sequence", DataType::Int32, false),
        text("fk_key_name", true),
        text("pk_key_name", true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ])
}

/// No rows of `schema`: the tables here have no primary or foreign keys.
pub(crate) fn no_keys(schema: Schema) -> RecordBatch {
    RecordBatch::new_empty(Arc::new(schema))
}
