//! Idempotent writes of the recorder: processes, streams and blocks, as micromegas's ingestion
//! inserts them (`ON CONFLICT DO NOTHING`).

use super::PgMeta;
use crate::error::{Error, Result};
use crate::lake::db_err;
use crate::lake::records::{BlockRecord, ProcessRecord, StreamRecord};
use sqlx::AssertSqlSafe;

fn split_properties(properties: &[(String, String)]) -> (Vec<String>, Vec<String>) {
    properties.iter().cloned().unzip()
}

impl PgMeta {
    fn check_writable(&self) -> Result<()> {
        if self.schema.has_unique_ids {
            Ok(())
        } else {
            Err(Error::Schema(
                "this lake predates micromegas schema v3 (no unique id indexes): writing is not supported"
                    .into(),
            ))
        }
    }

    pub async fn insert_process(&self, p: &ProcessRecord) -> Result<()> {
        self.check_writable()?;
        let id = self.id();
        let sql = format!(
            "INSERT INTO processes (process_id, exe, username, realname, computer, distro, cpu_brand,
                tsc_frequency, start_time, start_ticks, insert_time, parent_process_id, properties)
             VALUES (CAST($1 AS {id}), $2, $3, $4, $5, $6, $7, $8, $9, $10, now(), CAST($11 AS {id}),
                (SELECT COALESCE(array_agg(ROW(u.k, u.v)::micromegas_property ORDER BY u.o), '{{}}')
                 FROM unnest($12::text[], $13::text[]) WITH ORDINALITY AS u(k, v, o)))
             ON CONFLICT (process_id) DO NOTHING"
        );
        let (keys, values) = split_properties(&p.properties);
        sqlx::query(AssertSqlSafe(sql))
            .bind(p.process_id.to_string())
            .bind(&p.exe)
            .bind(&p.username)
            .bind(&p.realname)
            .bind(&p.computer)
            .bind(&p.distro)
            .bind(&p.cpu_brand)
            .bind(p.tsc_frequency)
            .bind(p.start_time)
            .bind(p.start_ticks)
            .bind(p.parent_process_id.map(|u| u.to_string()))
            .bind(keys)
            .bind(values)
            .execute(&self.pool)
            .await
            .map_err(db_err(format!("inserting process {}", p.process_id)))?;
        Ok(())
    }

    pub async fn insert_stream(&self, s: &StreamRecord) -> Result<()> {
        self.check_writable()?;
        let id = self.id();
        let sql = format!(
            "INSERT INTO streams (stream_id, process_id, dependencies_metadata, objects_metadata, tags,
                properties, insert_time)
             VALUES (CAST($1 AS {id}), CAST($2 AS {id}), $3, $4, $5,
                (SELECT COALESCE(array_agg(ROW(u.k, u.v)::micromegas_property ORDER BY u.o), '{{}}')
                 FROM unnest($6::text[], $7::text[]) WITH ORDINALITY AS u(k, v, o)), now())
             ON CONFLICT (stream_id) DO NOTHING"
        );
        let (keys, values) = split_properties(&s.properties);
        sqlx::query(AssertSqlSafe(sql))
            .bind(s.stream_id.to_string())
            .bind(s.process_id.to_string())
            .bind(&s.dependencies_metadata)
            .bind(&s.objects_metadata)
            .bind(&s.tags)
            .bind(keys)
            .bind(values)
            .execute(&self.pool)
            .await
            .map_err(db_err(format!("inserting stream {}", s.stream_id)))?;
        Ok(())
    }

    pub async fn insert_block(&self, b: &BlockRecord) -> Result<()> {
        self.check_writable()?;
        let id = self.id();
        let sql = format!(
            "INSERT INTO blocks (block_id, stream_id, process_id, begin_time, begin_ticks, end_time,
                end_ticks, nb_objects, object_offset, payload_size, insert_time)
             VALUES (CAST($1 AS {id}), CAST($2 AS {id}), CAST($3 AS {id}), $4, $5, $6, $7, $8, $9, $10, now())
             ON CONFLICT (block_id) DO NOTHING"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(b.block_id.to_string())
            .bind(b.stream_id.to_string())
            .bind(b.process_id.to_string())
            .bind(b.begin_time)
            .bind(b.begin_ticks)
            .bind(b.end_time)
            .bind(b.end_ticks)
            .bind(b.nb_objects)
            .bind(b.object_offset)
            .bind(b.payload_size)
            .execute(&self.pool)
            .await
            .map_err(db_err(format!("inserting block {}", b.block_id)))?;
        Ok(())
    }
}
