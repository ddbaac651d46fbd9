//! [`StreamEdges`]: the time order of a thread stream read by several partitions, checked where
//! they meet.
//!
//! A stream split into contiguous runs of blocks (see the scan planning) is read by one
//! partition per run. Each partition checks the order of the blocks it reads; where two runs of
//! one stream meet, the last rows of the earlier run must not be later than the first rows of
//! the next. The two partitions read their sides independently, so each reports its side here
//! and whichever comes second compares them: a stream that goes back in time across an edge
//! fails the query just as it would read by one partition.
//!
//! A side is reported only when it was read: the earlier partition reports its last rows once it
//! has read all its blocks (not when a `LIMIT` stopped it), the later one the first block that
//! gave rows. What is never read is never checked, as in one partition.

use std::collections::HashMap;
use std::sync::Mutex;
use uuid::Uuid;

/// An event time and the block it was read from.
pub(crate) type TimeInBlock = (i64, Uuid);

/// Two partitions of one stream whose rows go back in time where they meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StepBack {
    /// The first rows of the later partition.
    pub first: TimeInBlock,
    /// The last rows of the earlier partition.
    pub previous_last: TimeInBlock,
}

#[derive(Debug, Default)]
struct Edge {
    previous_last: Option<TimeInBlock>,
    first: Option<TimeInBlock>,
}

/// The edges between the partitions of the streams of one scan, by the index of the later
/// partition.
#[derive(Debug, Default)]
pub(crate) struct StreamEdges {
    edges: Mutex<HashMap<usize, Edge>>,
}

impl StreamEdges {
    /// The partition before `next` (same stream) read all its blocks; its last rows.
    pub fn ended(&self, next: usize, last: TimeInBlock) -> Option<StepBack> {
        self.report(next, |edge| edge.previous_last = Some(last))
    }

    /// `partition` (not the first of its stream) read its first rows.
    pub fn started(&self, partition: usize, first: TimeInBlock) -> Option<StepBack> {
        self.report(partition, |edge| edge.first = Some(first))
    }

    fn report(&self, partition: usize, side: impl FnOnce(&mut Edge)) -> Option<StepBack> {
        let mut edges = self.edges.lock().unwrap_or_else(|e| e.into_inner());
        let edge = edges.entry(partition).or_default();
        side(edge);
        match (edge.first, edge.previous_last) {
            (Some(first), Some(previous_last)) if first.0 < previous_last.0 => Some(StepBack {
                first,
                previous_last,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_second_side_reported_finds_a_step_back() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let edges = StreamEdges::default();
        assert_eq!(edges.started(1, (100, b)), None);
        assert_eq!(
            edges.ended(1, (600, a)),
            Some(StepBack {
                first: (100, b),
                previous_last: (600, a)
            })
        );
        let in_order = StreamEdges::default();
        assert_eq!(in_order.ended(3, (600, a)), None);
        assert_eq!(
            in_order.started(3, (600, b)),
            None,
            "equal times are in order"
        );
        assert_eq!(in_order.started(2, (0, b)), None, "another edge");
    }
}
