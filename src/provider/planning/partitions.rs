//! [`Partitions`]: a scan's blocks cut into partitions, each a contiguous run of one stream's
//! blocks in time order, of balanced weight (events per block): for a local scan
//! (`target_partitions`) and for the tasks of a distributed engine.

use crate::lake::BlockRecord;

/// One partition: a contiguous run of one stream's blocks, oldest first. A stream's partitions
/// are consecutive in [`PlannedScan::partitions`] and in time order.
#[derive(Debug, Clone)]
pub(crate) struct PlannedPartition {
    /// Index of the stream in [`PlannedScan::streams`].
    pub stream: usize,
    pub blocks: Vec<BlockRecord>,
    /// Blocks the metadata query returned for this partition (the blocks pruned by tick bounds
    /// are counted in the first partition of their stream).
    pub listed: usize,
}

/// The partitions of a scan, the runs of one stream next to each other in time order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Partitions(Vec<PlannedPartition>);

impl Partitions {
    /// Partitions as given (a decoded plan's), in order.
    #[cfg_attr(not(feature = "codec"), allow(dead_code))]
    pub fn new(partitions: Vec<PlannedPartition>) -> Self {
        Self(partitions)
    }

    /// Whole stream segments (one partition each, in stream order) cut into about `target`
    /// partitions of balanced weight (see [`ranges_per_stream`]).
    pub fn cut(segments: Vec<PlannedPartition>, target: usize) -> Self {
        Self(cut_into_runs(segments, target))
    }

    /// Every partition, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, PlannedPartition> {
        self.0.iter()
    }

    /// Renumbers the partitions' streams `0..k` in stream order (a task's scan carries only the
    /// streams it reads); returns the old index of each new one.
    pub fn renumber_streams(&mut self) -> Vec<usize> {
        let mut kept: Vec<usize> = self.0.iter().map(|p| p.stream).collect();
        kept.sort_unstable();
        kept.dedup();
        for p in &mut self.0 {
            p.stream = kept.binary_search(&p.stream).unwrap_or_default();
        }
        kept
    }

    /// Every block, partition after partition.
    pub fn blocks(&self) -> impl Iterator<Item = &BlockRecord> {
        self.0.iter().flat_map(|p| p.blocks.iter())
    }

    /// The partitions.
    pub fn get(&self, partition: usize) -> Option<&PlannedPartition> {
        self.0.get(partition)
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Blocks the scan will read.
    pub fn block_count(&self) -> usize {
        self.0.iter().map(|p| p.blocks.len()).sum()
    }

    /// Blocks the metadata query listed (before pruning by tick bounds).
    pub fn listed_count(&self) -> usize {
        self.0.iter().map(|p| p.listed).sum()
    }

    /// The partition read just before `partition` in the same stream, if any: where the
    /// stream's time order crosses a partition boundary.
    pub fn previous_in_stream(&self, partition: usize) -> Option<usize> {
        let previous = partition.checked_sub(1)?;
        let (p, q) = (self.0.get(previous)?, self.0.get(partition)?);
        (p.stream == q.stream).then_some(previous)
    }

    /// Whether `partition` is followed by another partition of the same stream.
    pub fn has_next_in_stream(&self, partition: usize) -> bool {
        self.previous_in_stream(partition + 1).is_some()
    }

    /// One partition per stream: the runs of each stream joined again.
    pub fn per_stream(&self) -> Self {
        let mut joined: Vec<PlannedPartition> = Vec::new();
        for p in &self.0 {
            match joined.last_mut() {
                Some(last) if last.stream == p.stream => {
                    last.blocks.extend(p.blocks.iter().cloned());
                    last.listed += p.listed;
                }
                _ => joined.push(p.clone()),
            }
        }
        Self(joined)
    }
}

/// The weight of a block when partitions are balanced: its events (what decoding costs), plus
/// one so that empty blocks still count for their fetch.
fn block_weight(block: &BlockRecord) -> u64 {
    u64::try_from(block.nb_objects).unwrap_or(0) + 1
}

/// How many contiguous ranges each stream is cut into so that a scan has about `target`
/// partitions of balanced weight: a stream heavier than `1/target` of the total gets one range
/// per `1/target` (rounded up, at most one per block); the others stay whole. A process with
/// one busy thread then uses every core, and one with many streams is left as it is.
fn ranges_per_stream(weights: &[u64], blocks: &[usize], target: usize) -> Vec<usize> {
    let total: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    weights
        .iter()
        .zip(blocks)
        .map(|(&w, &n)| {
            let wanted = if total == 0 {
                1
            } else {
                (u128::from(w) * target as u128).div_ceil(total)
            };
            (wanted.min(n as u128) as usize).max(1)
        })
        .collect()
}

/// Cuts blocks (in time order) into `ranges` contiguous, non-empty runs of about equal weight;
/// returns the start index of each run.
fn split_points(blocks: &[BlockRecord], ranges: usize) -> Vec<usize> {
    let ranges = ranges.clamp(1, blocks.len().max(1));
    let total: u64 = blocks.iter().map(block_weight).sum();
    let mut starts = vec![0];
    let mut seen = 0u64;
    for (i, block) in blocks.iter().enumerate() {
        let cut = starts.len() as u64;
        if starts.len() == ranges {
            break;
        }
        // Start the next run at the block whose middle passes this run's share, and early
        // enough to leave a block for each run still to come.
        let share = u128::from(total) * u128::from(cut) / ranges as u128;
        let middle = 2 * u128::from(seen) + u128::from(block_weight(block));
        let remaining = ranges - starts.len();
        if i > 0 && (middle >= 2 * share || blocks.len() - i <= remaining) {
            starts.push(i);
        }
        seen += block_weight(block);
    }
    starts
}

/// Cuts whole stream segments (one partition each, in stream order) into runs, so that there
/// are about `target` partitions of balanced weight (see [`ranges_per_stream`]). The blocks a
/// segment's metadata query listed but pruned are counted in its first run.
fn cut_into_runs(segments: Vec<PlannedPartition>, target: usize) -> Vec<PlannedPartition> {
    let weights: Vec<u64> = segments
        .iter()
        .map(|s| s.blocks.iter().map(block_weight).sum())
        .collect();
    let counts: Vec<usize> = segments.iter().map(|s| s.blocks.len()).collect();
    let ranges = ranges_per_stream(&weights, &counts, target.max(1));
    let mut partitions = Vec::with_capacity(segments.len());
    for (segment, ranges) in segments.into_iter().zip(ranges) {
        let pruned = segment.listed.saturating_sub(segment.blocks.len());
        let mut starts = split_points(&segment.blocks, ranges);
        starts.push(segment.blocks.len());
        for (k, run) in starts.windows(2).enumerate() {
            let run = segment
                .blocks
                .get(run[0]..run[1])
                .unwrap_or_default()
                .to_vec();
            partitions.push(PlannedPartition {
                stream: segment.stream,
                listed: run.len() + if k == 0 { pruned } else { 0 },
                blocks: run,
            });
        }
    }
    partitions
}

impl Partitions {
    /// The blocks of the scan spread over `tasks` tasks of a distributed engine, each with the
    /// same number of partitions (an engine's requirement), for a task per worker.
    ///
    /// The streams' blocks, end to end in stream order, are cut into `tasks` contiguous slices
    /// of equal weight (to a block), so a task reads the same share of events whatever the skew
    /// between streams; a busy stream may be cut between tasks. Each task's slice is then cut
    /// into runs for about `per_task` partitions, as a local scan is for `target_partitions`,
    /// and the tasks with fewer partitions are padded with empty ones. Every partition still
    /// reads one stream's blocks in time order. With `whole_runs` (a scan read newest first)
    /// a task's segments are not cut further.
    ///
    /// A block weighs its events plus `block_cost` (what fetching it costs, in events): 1
    /// balances the decoding, a large value the blocks (object store requests).
    pub fn split_for_tasks(
        &self,
        tasks: usize,
        per_task: usize,
        whole_runs: bool,
        block_cost: u64,
    ) -> Vec<Self> {
        let tasks = tasks.max(1);
        let joined = self.per_stream().0;
        let weight = |b: &BlockRecord| {
            u128::from(u64::try_from(b.nb_objects).unwrap_or(0)) + u128::from(block_cost.max(1))
        };
        let total: u128 = joined.iter().flat_map(|p| &p.blocks).map(weight).sum();
        let mut slices: Vec<Vec<PlannedPartition>> = vec![Vec::new(); tasks];
        let mut seen = 0u128;
        for stream in joined {
            let pruned = stream.listed.saturating_sub(stream.blocks.len());
            if stream.blocks.is_empty() {
                // Every block pruned: nothing to read, but its listing is still counted.
                let task = (seen * tasks as u128).checked_div(total).unwrap_or(0) as usize;
                slices[task.min(tasks - 1)].push(stream);
                continue;
            }
            let mut first = true;
            for block in stream.blocks {
                let weight = weight(&block);
                // The task whose share holds the block's middle: slices are contiguous.
                let task = ((2 * seen + weight) * tasks as u128)
                    .checked_div(2 * total)
                    .unwrap_or(0) as usize;
                seen += weight;
                let slice = &mut slices[task.min(tasks - 1)];
                match slice.last_mut() {
                    Some(last) if last.stream == stream.stream && !first => {
                        last.blocks.push(block);
                        last.listed += 1;
                    }
                    _ => slice.push(PlannedPartition {
                        stream: stream.stream,
                        listed: 1 + if first { pruned } else { 0 },
                        blocks: vec![block],
                    }),
                }
                first = false;
            }
        }
        let mut variants: Vec<Vec<PlannedPartition>> = slices
            .into_iter()
            .map(|slice| {
                if whole_runs {
                    slice
                } else {
                    cut_into_runs(slice, per_task)
                }
            })
            .collect();
        let width = variants.iter().map(Vec::len).max().unwrap_or(0).max(1);
        for variant in &mut variants {
            let stream = variant.last().map_or(0, |p| p.stream);
            variant.resize_with(width, || PlannedPartition {
                stream,
                blocks: vec![],
                listed: 0,
            });
        }
        variants.into_iter().map(Self).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use uuid::Uuid;

    fn blocks(events: &[i32]) -> Vec<BlockRecord> {
        let at = DateTime::from_timestamp_nanos(0);
        events
            .iter()
            .enumerate()
            .map(|(i, &n)| BlockRecord {
                block_id: Uuid::new_v4(),
                stream_id: Uuid::nil(),
                process_id: Uuid::nil(),
                begin_time: at,
                begin_ticks: i as i64,
                end_time: at,
                end_ticks: i as i64 + 1,
                nb_objects: n,
                object_offset: 0,
                payload_size: 0,
            })
            .collect()
    }

    #[test]
    fn one_busy_stream_is_cut_into_target_partitions() {
        assert_eq!(ranges_per_stream(&[1000], &[10], 4), [4]);
        assert_eq!(
            ranges_per_stream(&[1000], &[3], 4),
            [3],
            "at most one per block"
        );
        // Balanced streams, as many as the target: left whole.
        assert_eq!(ranges_per_stream(&[10, 10, 10], &[5, 5, 5], 2), [1, 1, 1]);
        // One busy thread among idle ones gets the cores.
        assert_eq!(ranges_per_stream(&[900, 50, 50], &[9, 1, 1], 2), [2, 1, 1]);
        assert_eq!(ranges_per_stream(&[0, 0], &[0, 0], 8), [1, 1]);
    }

    #[test]
    fn runs_are_contiguous_non_empty_and_balanced() {
        let even = blocks(&[99; 10]);
        assert_eq!(split_points(&even, 2), [0, 5]);
        assert_eq!(split_points(&even, 3), [0, 3, 7]);
        assert_eq!(split_points(&even, 10), (0..10).collect::<Vec<_>>());
        // Heavy blocks at the start: the first run is shorter.
        let skewed = blocks(&[1000, 1000, 10, 10, 10, 10, 10, 10]);
        assert_eq!(split_points(&skewed, 2), [0, 1]);
        assert_eq!(split_points(&blocks(&[5]), 4), [0]);
        assert_eq!(split_points(&[], 3), [0]);
    }

    /// A run of `stream` whose first block starts at tick `first`.
    fn partition(stream: usize, events: &[i32], listed: usize, first: i64) -> PlannedPartition {
        let mut blocks = blocks(events);
        for b in &mut blocks {
            b.begin_ticks += first;
            b.end_ticks += first;
        }
        PlannedPartition {
            stream,
            blocks,
            listed,
        }
    }

    fn task_weights(variants: &[Partitions]) -> Vec<u64> {
        variants
            .iter()
            .map(|v| v.0.iter().flat_map(|p| &p.blocks).map(block_weight).sum())
            .collect()
    }

    #[test]
    fn tasks_get_equal_shares_of_a_skewed_scan() {
        // One hot stream (cut in four runs locally) and three light ones.
        let scan = Partitions(vec![
            partition(0, &[100; 30], 32, 0),
            partition(1, &[100; 30], 30, 0),
            partition(1, &[100; 30], 30, 30),
            partition(1, &[100; 30], 30, 60),
            partition(1, &[100; 30], 30, 90),
            partition(2, &[100; 2], 2, 0),
            partition(3, &[], 5, 0),
        ]);
        for tasks in [1, 2, 3, 4, 7] {
            let variants = scan.split_for_tasks(tasks, 2, false, 1);
            assert_eq!(variants.len(), tasks);
            let width = variants[0].len();
            assert!(variants.iter().all(|v| v.len() == width), "{tasks} tasks");
            let weights = task_weights(&variants);
            let (max, min) = (weights.iter().max().unwrap(), weights.iter().min().unwrap());
            assert!(max - min <= 101, "{tasks} tasks: {weights:?}");
            // Nothing lost or read twice, every listing counted, streams in time order.
            let mut read: Vec<Uuid> = variants
                .iter()
                .flat_map(|v| &v.0)
                .flat_map(|p| p.blocks.iter().map(|b| b.block_id))
                .collect();
            assert_eq!(read.len(), 152, "{tasks} tasks");
            let listed: usize = variants.iter().map(Partitions::listed_count).sum();
            assert_eq!(listed, scan.listed_count(), "{tasks} tasks");
            for p in variants.iter().flat_map(|v| &v.0) {
                assert!(
                    p.blocks
                        .windows(2)
                        .all(|w| w[0].begin_ticks < w[1].begin_ticks)
                );
            }
            read.sort_unstable();
            read.dedup();
            assert_eq!(read.len(), 152, "{tasks} tasks: a block read twice");
        }
        // Newest first: segments are not cut further.
        let whole = scan.split_for_tasks(2, 8, true, 1);
        assert!(whole.iter().all(|v| v.len() <= 3), "{whole:?}");
        // More tasks than blocks: the extra tasks read nothing.
        let tiny = Partitions(vec![partition(0, &[5, 5], 2, 0)]);
        let variants = tiny.split_for_tasks(4, 2, false, 1);
        assert_eq!(
            task_weights(&variants).iter().filter(|&&w| w > 0).count(),
            2
        );
        assert!(variants.iter().all(|v| v.len() == 1));
        assert_eq!(
            Partitions::default().split_for_tasks(3, 2, false, 1).len(),
            3
        );
        // Blocks of 10 and 1 000 events: balanced by events, or by blocks when a fetch costs
        // as much as a large block.
        let mixed = Partitions(vec![
            partition(0, &[1000; 10], 10, 0),
            partition(1, &[10; 100], 100, 0),
        ]);
        let blocks =
            |v: &[Partitions]| -> Vec<usize> { v.iter().map(Partitions::block_count).collect() };
        assert_eq!(blocks(&mixed.split_for_tasks(2, 1, false, 1)), [6, 104]);
        assert_eq!(
            blocks(&mixed.split_for_tasks(2, 1, false, 100_000)),
            [55, 55]
        );
    }
}
