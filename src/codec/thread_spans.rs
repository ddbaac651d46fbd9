//! [`ThreadSpansExec`] as a message: the plan's data (lake URLs, clock, each partition's streams
//! with their metadata and blocks, columns, overlap, row filter, options). The stream layouts
//! are compiled again where the plan is decoded, in the session's layout cache.

use super::messages::*;
use crate::lake::StreamRecord;
use crate::provider::{ClockParams, ScanCaches, ScanPredicate};
use crate::thread_spans::{Flavor, StreamPlan, ThreadSpansExec, ThreadSpansParts};
use crate::time_bounds::TimeBounds;
use datafusion::common::Result;
use datafusion::execution::TaskContext;

pub(super) fn flavor_to_proto(flavor: Flavor) -> u32 {
    match flavor {
        Flavor::View => 0,
        Flavor::Process => 1,
        Flavor::ProcessSpans => 2,
        Flavor::ProcessSpansBesideAsync => 3,
    }
}

pub(super) fn flavor_from_proto(flavor: u32) -> Result<Flavor> {
    match flavor {
        0 => Ok(Flavor::View),
        1 => Ok(Flavor::Process),
        2 => Ok(Flavor::ProcessSpans),
        3 => Ok(Flavor::ProcessSpansBesideAsync),
        other => Err(bad(format_args!("thread spans flavor {other}"))),
    }
}

fn stream_to_proto(plan: &StreamPlan) -> ThreadStreamProto {
    let s = &plan.stream;
    ThreadStreamProto {
        stream: Some(StreamProto {
            stream_id: s.stream_id.as_bytes().to_vec(),
            dependencies_metadata: s.dependencies_metadata.clone(),
            objects_metadata: s.objects_metadata.clone(),
        }),
        tags: s.tags.clone(),
        properties: (s.properties.iter())
            .map(|(key, value)| PropertyProto {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        blocks: plan.blocks.iter().map(block_to_proto).collect(),
        reaches_stream_end: plan.reaches_stream_end,
    }
}

pub(super) fn encode(exec: &ThreadSpansExec) -> ThreadSpansProto {
    let parts = exec.parts();
    let clock = ClockParams::of(&parts.clock);
    let rows = ScanPredicate {
        row: parts.rows,
        ..ScanPredicate::default()
    };
    ThreadSpansProto {
        location: Some(location_to_proto(&parts.location)),
        process_id: parts.process_id.as_bytes().to_vec(),
        start_ticks: clock.start_ticks,
        start_ns: clock.start_ns,
        frequency: clock.frequency,
        partitions: (parts.partitions.iter())
            .map(|p| ThreadPartitionProto {
                streams: p.iter().map(stream_to_proto).collect(),
            })
            .collect(),
        flavor: flavor_to_proto(parts.flavor),
        columns: parts.columns.iter().map(|&c| c as u32).collect(),
        options: Some(options_to_proto(&parts.options)),
        overlap_begin: parts.overlap.begin,
        overlap_end: parts.overlap.end,
        rows: Some(predicate_to_proto(&rows)),
    }
}

pub(super) fn decode(proto: ThreadSpansProto, ctx: &TaskContext) -> Result<ThreadSpansExec> {
    let process_id = uuid(&proto.process_id, "the process id")?;
    let (_, clock) = clock_from_proto(proto.start_ticks, proto.start_ns, proto.frequency)?;
    let flavor = flavor_from_proto(proto.flavor)?;
    let width = crate::thread_spans::thread_spans_schema(flavor)
        .fields()
        .len();
    let columns = (proto.columns.iter())
        .map(|&c| {
            usize::try_from(c)
                .ok()
                .filter(|&c| c < width)
                .ok_or_else(|| bad(format_args!("thread spans have no column {c}")))
        })
        .collect::<Result<Vec<_>>>()?;
    // Only the checks thread spans make: on names, targets and depths.
    let predicate = predicate_from_proto(proto.rows)?;
    let rows = predicate.row.clone();
    let only_span_checks = ScanPredicate {
        row: crate::format::RowFilter {
            names: rows.names.clone(),
            targets: rows.targets.clone(),
            depth: rows.depth,
            ..Default::default()
        },
        ..ScanPredicate::default()
    };
    if predicate != only_span_checks {
        return Err(bad(
            "thread spans filter rows by name, target and depth only",
        ));
    }
    let caches =
        (ctx.session_config().get_extension::<ScanCaches>()).unwrap_or_else(ScanCaches::global);
    let partitions = (proto.partitions.into_iter())
        .map(|p| {
            (p.streams.into_iter())
                .map(|s| {
                    let stream = s
                        .stream
                        .ok_or_else(|| bad("a thread stream without its record"))?;
                    let stream_id = uuid(&stream.stream_id, "a stream id")?;
                    let layout = caches.layouts.layout_of(
                        process_id,
                        stream_id,
                        &stream.dependencies_metadata,
                        &stream.objects_metadata,
                    )?;
                    let blocks = (s.blocks.into_iter())
                        .map(|b| block_from_proto(b, stream_id, process_id))
                        .collect::<Result<Vec<_>>>()?;
                    Ok(StreamPlan {
                        stream: StreamRecord {
                            stream_id,
                            process_id,
                            dependencies_metadata: stream.dependencies_metadata,
                            objects_metadata: stream.objects_metadata,
                            tags: s.tags,
                            properties: (s.properties.into_iter())
                                .map(|p| (p.key, p.value))
                                .collect(),
                        },
                        layout,
                        blocks,
                        reaches_stream_end: s.reaches_stream_end,
                    })
                })
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ThreadSpansExec::from_parts(ThreadSpansParts {
        location: location_from_proto(proto.location)?,
        process_id,
        clock,
        partitions,
        flavor,
        columns,
        overlap: TimeBounds::new(proto.overlap_begin, proto.overlap_end),
        options: options_from_proto(proto.options)?,
        rows,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::RowFilter;
    use crate::provider::ScanOptions;
    use datafusion::physical_plan::ExecutionPlan;

    /// A plan of no streams, as bytes would bring it.
    fn proto() -> ThreadSpansProto {
        ThreadSpansProto {
            location: Some(LocationProto {
                database_url: "sqlite:///nowhere/lake.db".into(),
                store_url: "file:///nowhere/blobs".into(),
            }),
            process_id: uuid::Uuid::from_u128(7).as_bytes().to_vec(),
            start_ticks: 100,
            start_ns: 1_000,
            frequency: 1_000_000_000,
            partitions: vec![ThreadPartitionProto { streams: vec![] }],
            flavor: 1,
            columns: vec![0, 5, 14],
            options: Some(options_to_proto(&ScanOptions::default())),
            overlap_begin: Some(5),
            overlap_end: None,
            rows: Some(predicate_to_proto(&ScanPredicate {
                row: RowFilter {
                    names: Some(vec!["a::f".into()]),
                    depth: Some((1, 3)),
                    ..RowFilter::all()
                },
                ..ScanPredicate::default()
            })),
        }
    }

    #[test]
    fn a_plan_round_trips_and_bad_fields_are_named_errors() {
        let ctx = TaskContext::default();
        let plan = decode(proto(), &ctx).unwrap();
        assert_eq!(encode(&plan), proto());
        assert_eq!(plan.schema().fields().len(), 3);

        let mut flavor = proto();
        flavor.flavor = 4;
        let columns = ThreadSpansProto {
            columns: vec![0, 15],
            ..proto()
        };
        let mut event_rows = proto();
        event_rows.rows = Some(predicate_to_proto(&ScanPredicate {
            row: RowFilter {
                event_type: Some(crate::format::EventType::Begin),
                ..RowFilter::all()
            },
            ..ScanPredicate::default()
        }));
        let clock = ThreadSpansProto {
            frequency: 0,
            ..proto()
        };
        let stream = ThreadSpansProto {
            partitions: vec![ThreadPartitionProto {
                streams: vec![ThreadStreamProto::default()],
            }],
            ..proto()
        };
        for (bad, expected) in [
            (flavor, "thread spans flavor 4"),
            (columns, "thread spans have no column 15"),
            (event_rows, "by name, target and depth only"),
            (clock, "clock"),
            (stream, "a thread stream without its record"),
        ] {
            let message = decode(bad, &ctx).unwrap_err().to_string();
            assert!(message.contains(expected), "{message}");
        }
    }
}
