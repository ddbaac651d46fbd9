//! Listings of the metadata tables (the `processes`, `streams` and `blocks` SQL tables).

use super::{Named, PgMeta, block_row, get, parse_id, properties, properties_sql, required};
use crate::error::Result;
use crate::lake::db_err;
use crate::lake::listing::{
    Bind, BlockListing, Conditions, MetadataFilter, ProcessListing, StreamListing,
};
use crate::lake::records::StreamRecord;
use sqlx::AssertSqlSafe;
use std::collections::HashSet;
use uuid::Uuid;

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

fn bind_all(mut query: PgQuery<'_>, binds: Vec<Bind>) -> PgQuery<'_> {
    for b in binds {
        query = match b {
            Bind::Ids(ids) => query.bind(ids.iter().map(Uuid::to_string).collect::<Vec<_>>()),
            Bind::Time(t) => query.bind(t),
        };
    }
    query
}

impl PgMeta {
    fn listing_conditions(
        &self,
        filter: &MetadataFilter,
        process: &str,
        stream: Option<&str>,
        block: Option<&str>,
    ) -> Conditions {
        let id = self.id();
        filter.conditions(
            process,
            stream,
            block,
            &|column, n| format!("{column} = ANY(CAST(${n} AS {id}[]))"),
            &|n| format!("${n}"),
            1,
        )
    }

    pub async fn list_processes(&self, filter: &MetadataFilter) -> Result<Vec<ProcessListing>> {
        let c = self.listing_conditions(filter, "p.process_id", None, None);
        let sql = format!(
            "SELECT {process}, p.insert_time, a.last_update_time, a.last_end_ticks, a.last_end_time
             FROM processes p CROSS JOIN LATERAL (
                SELECT max(b.insert_time) AS last_update_time, max(b.end_ticks) AS last_end_ticks,
                       max(b.end_time) AS last_end_time
                FROM streams s JOIN blocks b ON b.stream_id = s.stream_id
                WHERE s.process_id = p.process_id) a
             WHERE a.last_end_time IS NOT NULL{conds}
             ORDER BY p.start_time DESC{limit}",
            process = self.process_sql("p"),
            conds = c.sql,
            limit = filter.limit_sql(),
        );
        let rows = bind_all(sqlx::query(AssertSqlSafe(sql)), c.binds)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err("listing processes"))?;
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let process = Self::process_row(row)?;
            if !seen.insert(process.process_id) {
                continue;
            }
            let what = Named("process", process.process_id);
            out.push(ProcessListing {
                process,
                insert_time: get(row, "insert_time")?,
                last_update_time: get(row, "last_update_time")?,
                last_block_end_ticks: required(row, "last_end_ticks", &what)?,
                last_block_end_time: required(row, "last_end_time", &what)?,
            });
        }
        Ok(out)
    }

    pub async fn list_streams(&self, filter: &MetadataFilter) -> Result<Vec<StreamListing>> {
        let c = self.listing_conditions(filter, "s.process_id", Some("s.stream_id"), None);
        let format = if self.schema.has_format {
            "s.format"
        } else {
            "'micromegas-transit'"
        };
        let sql = format!(
            "SELECT s.stream_id::text AS stream_id, s.process_id::text AS process_id, \
             s.dependencies_metadata, s.objects_metadata, s.tags, {props}, s.insert_time, \
             {format} AS format, \
             (SELECT max(b.insert_time) FROM blocks b WHERE b.stream_id = s.stream_id) AS last_update_time
             FROM streams s WHERE true{conds} ORDER BY s.process_id, s.stream_id{limit}",
            props = properties_sql("s.properties"),
            conds = c.sql,
            limit = filter.limit_sql(),
        );
        let rows = bind_all(sqlx::query(AssertSqlSafe(sql)), c.binds)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err("listing streams"))?;
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let stream_id = parse_id(row, "stream_id")?;
            if !seen.insert(stream_id) {
                continue;
            }
            let what = Named("stream", stream_id);
            out.push(StreamListing {
                stream: StreamRecord {
                    stream_id,
                    process_id: parse_id(row, "process_id")?,
                    dependencies_metadata: required(row, "dependencies_metadata", &what)?,
                    objects_metadata: required(row, "objects_metadata", &what)?,
                    tags: get::<Option<Vec<String>>>(row, "tags")?.unwrap_or_default(),
                    properties: properties(row)?,
                },
                insert_time: get(row, "insert_time")?,
                format: get::<Option<String>>(row, "format")?.unwrap_or_default(),
                last_update_time: get(row, "last_update_time")?,
            });
        }
        Ok(out)
    }

    pub async fn list_blocks(&self, filter: &MetadataFilter) -> Result<Vec<BlockListing>> {
        let c = self.listing_conditions(
            filter,
            "b.process_id",
            Some("b.stream_id"),
            Some("b.block_id"),
        );
        let sql = format!(
            "SELECT b.block_id::text AS block_id, b.stream_id::text AS stream_id, \
             b.process_id::text AS process_id, b.begin_time, b.begin_ticks, b.end_time, b.end_ticks, \
             b.nb_objects, b.object_offset, b.payload_size, b.insert_time
             FROM blocks b WHERE true{conds} ORDER BY b.begin_time, b.block_id{limit}",
            conds = c.sql,
            limit = filter.limit_sql(),
        );
        let rows = bind_all(sqlx::query(AssertSqlSafe(sql)), c.binds)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err("listing blocks"))?;
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let block = block_row(row)?;
            if seen.insert(block.block_id) {
                out.push(BlockListing {
                    block,
                    insert_time: get(row, "insert_time")?,
                });
            }
        }
        Ok(out)
    }
}
