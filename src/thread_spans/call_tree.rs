//! [`CallTree`]: one thread's scope events, in recording order, paired into spans with a stack.
//!
//! The tree of one chain of blocks (blocks that follow each other without a gap) has a root
//! row standing for the thread (id -1, depth 0, the chain's time range), as micromegas's
//! `thread_spans` view has; every span's parent is the span open below it on the stack (-1 for a
//! top-level span), and its depth is its position on the stack.
//!
//! Where a chain starts inside scopes (a time range that cut them, a recording that started late),
//! their end events come with no begin: as micromegas does, the root becomes that span (begun at
//! the chain's start, with the top-level spans that completed so far as its children) and a new
//! root is made. Completed spans are kept until [`CallTree::budget`] of them are waiting, then
//! emitted; an unmatched end after that is emitted as a top-level span instead, and counted.
//!
//! micromegas fails the partition when an end does not match the open scope. Here, an end
//! matching a scope deeper on the stack closes the scopes above it at its time; an end matching
//! no open scope is dropped. Both are counted ([`Repairs`]).

use crate::format::EventType;

/// Deepest stack accepted (trees are walked recursively, so a corrupt stream must not nest
/// without bound).
pub(crate) const MAX_DEPTH: usize = 4096;

/// A span of the tree; `id` is `None` for the root.
#[derive(Debug)]
pub(crate) struct Node {
    pub id: Option<i64>,
    pub hash: u32,
    /// `None`: begun before the chain (the root's is the chain's start).
    pub begin: Option<i64>,
    /// `None`: still open when the chain ended.
    pub end: Option<i64>,
    /// The properties of a tagged end.
    pub properties: Properties,
    children: Vec<Node>,
}

/// What the pairing repaired instead of failing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Repairs {
    /// Ends that closed scopes left open above them on the stack (those scopes end there too).
    pub closed_by_outer_end: u64,
    /// Ends matching no open scope when the stack held other scopes: dropped.
    pub dropped_ends: u64,
    /// Unmatched ends that came after the top-level spans before them were emitted: made
    /// top-level spans instead of the parents of those spans.
    pub unmatched_after_flush: u64,
}

/// The fields of a scope event the pairing reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScopeEvent {
    pub id: i64,
    pub time: i64,
    pub event_type: EventType,
    pub hash: u32,
}

/// The properties of a tagged end, read only when the end closes a span.
pub(crate) type Properties = Vec<(Box<str>, Box<str>)>;

/// Where a span row sits: its parent's id and its depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place {
    pub parent: i64,
    pub depth: u32,
}

/// Receives the rows of a tree, each with its place.
pub(crate) trait RowSink {
    /// One span (the root too: `node.id` is `None`).
    fn row(&mut self, node: &Node, place: Place) -> datafusion::common::Result<()>;
}

/// The pairing of one chain.
#[derive(Debug)]
pub(crate) struct CallTree {
    root_hash: u32,
    /// The open scopes; `stack[0]` is the root once a first event came.
    stack: Vec<Node>,
    /// Whether the root row was emitted (by a flush): it can no longer become a span.
    root_emitted: bool,
    /// Completed spans held in the tree.
    held: usize,
    budget: usize,
    pub repairs: Repairs,
}

impl CallTree {
    /// Completed spans held before they are emitted.
    pub const DEFAULT_BUDGET: usize = 16_384;

    /// An empty tree whose root has the thread's scope hash.
    pub fn new(root_hash: u32, budget: usize) -> Self {
        Self {
            root_hash,
            stack: Vec::new(),
            root_emitted: false,
            held: 0,
            budget: budget.max(1),
            repairs: Repairs::default(),
        }
    }

    fn ensure_root(&mut self) {
        if self.stack.is_empty() {
            self.stack.push(Node {
                id: None,
                hash: self.root_hash,
                begin: None,
                end: None,
                properties: Vec::new(),
                children: Vec::new(),
            });
        }
    }

    /// Adds the next event of the chain; may emit rows to `sink`.
    pub fn push(
        &mut self,
        event: ScopeEvent,
        properties: impl FnOnce() -> Properties,
        sink: &mut dyn RowSink,
    ) -> datafusion::common::Result<()> {
        self.ensure_root();
        match event.event_type {
            EventType::Begin if self.stack.len() > MAX_DEPTH => {
                return datafusion::common::exec_err!(
                    "scope {} begins {MAX_DEPTH} scopes deep: the stack of this thread is not a \
                     call stack",
                    event.id
                );
            }
            EventType::Begin => self.stack.push(Node {
                id: Some(event.id),
                hash: event.hash,
                begin: Some(event.time),
                end: None,
                properties: Vec::new(),
                children: Vec::new(),
            }),
            EventType::End => self.end(event, properties),
        }
        if self.held >= self.budget {
            self.flush(sink)?;
        }
        Ok(())
    }

    fn end(&mut self, event: ScopeEvent, properties: impl FnOnce() -> Properties) {
        let mut properties = Some(properties);
        let mut properties = move || properties.take().map_or_else(Vec::new, |f| f());
        let open = self.stack.len() - 1;
        match (1..=open).rev().find(|&i| self.stack[i].hash == event.hash) {
            Some(at) => {
                self.repairs.closed_by_outer_end += (open - at) as u64;
                while self.stack.len() > at {
                    let mut node = self.stack.pop().unwrap_or_else(|| unreachable!());
                    node.end = Some(event.time);
                    if self.stack.len() == at {
                        node.properties = properties();
                    }
                    self.complete(node);
                }
            }
            None if open > 0 => self.repairs.dropped_ends += 1,
            None if self.root_emitted => {
                // The root's row is out: this span can no longer adopt the ones before it.
                self.repairs.unmatched_after_flush += 1;
                let node = Node {
                    id: Some(event.id),
                    hash: event.hash,
                    begin: None,
                    end: Some(event.time),
                    properties: properties(),
                    children: Vec::new(),
                };
                self.complete(node);
            }
            None => {
                // The root becomes the span that ends here, begun before the chain.
                let mut node = self.stack.pop().unwrap_or_else(|| unreachable!());
                node.id = Some(event.id);
                node.hash = event.hash;
                node.end = Some(event.time);
                node.properties = properties();
                self.ensure_root();
                self.complete(node);
            }
        }
    }

    /// A closed span becomes a child of the scope below it.
    fn complete(&mut self, node: Node) {
        self.held += 1;
        if let Some(parent) = self.stack.last_mut() {
            parent.children.push(node);
        }
    }

    /// Emits the completed spans held (each with its subtree), keeping the open scopes.
    fn flush(&mut self, sink: &mut dyn RowSink) -> datafusion::common::Result<()> {
        if !self.root_emitted
            && let Some(root) = self.stack.first()
        {
            sink.row(
                root,
                Place {
                    parent: 0,
                    depth: 0,
                },
            )?;
            self.root_emitted = true;
        }
        for depth in 0..self.stack.len() {
            let parent = self.stack[depth].id.unwrap_or(-1);
            let children = std::mem::take(&mut self.stack[depth].children);
            for child in &children {
                emit(
                    child,
                    Place {
                        parent,
                        depth: depth as u32 + 1,
                    },
                    sink,
                )?;
            }
        }
        self.held = 0;
        Ok(())
    }

    /// Ends the chain: the scopes still open end with it (`end` stays `None`); every row not
    /// emitted yet is.
    pub fn finish(mut self, sink: &mut dyn RowSink) -> datafusion::common::Result<Repairs> {
        while self.stack.len() > 1 {
            let node = self.stack.pop().unwrap_or_else(|| unreachable!());
            self.complete(node);
        }
        if let Some(root) = self.stack.pop() {
            if self.root_emitted {
                for child in &root.children {
                    emit(
                        child,
                        Place {
                            parent: -1,
                            depth: 1,
                        },
                        sink,
                    )?;
                }
            } else {
                emit(
                    &root,
                    Place {
                        parent: 0,
                        depth: 0,
                    },
                    sink,
                )?;
            }
        }
        Ok(self.repairs)
    }
}

/// A subtree, parents first, children in the order they began.
fn emit(node: &Node, place: Place, sink: &mut dyn RowSink) -> datafusion::common::Result<()> {
    sink.row(node, place)?;
    let parent = node.id.unwrap_or(-1);
    for child in &node.children {
        emit(
            child,
            Place {
                parent,
                depth: place.depth + 1,
            },
            sink,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (id, parent, depth, hash, begin, end) of each row, in emission order.
    type Out = Vec<(i64, i64, u32, u32, Option<i64>, Option<i64>)>;

    impl RowSink for Out {
        fn row(&mut self, n: &Node, p: Place) -> datafusion::common::Result<()> {
            self.push((
                n.id.unwrap_or(-1),
                p.parent,
                p.depth,
                n.hash,
                n.begin,
                n.end,
            ));
            Ok(())
        }
    }

    const ROOT: u32 = 99;

    /// Runs `events` (id = position, time = 10 × position): `+h` begins scope h, `-h` ends it.
    fn run(events: &[i32], budget: usize) -> (Out, Repairs) {
        let mut tree = CallTree::new(ROOT, budget);
        let mut out = Out::new();
        for (i, &e) in events.iter().enumerate() {
            let event = ScopeEvent {
                id: i as i64,
                time: 10 * i as i64,
                event_type: if e > 0 {
                    EventType::Begin
                } else {
                    EventType::End
                },
                hash: e.unsigned_abs(),
            };
            tree.push(event, Vec::new, &mut out).unwrap();
        }
        let repairs = tree.finish(&mut out).unwrap();
        (out, repairs)
    }

    #[test]
    fn nested_scopes_under_a_root() {
        let (out, repairs) = run(&[1, 2, -2, 3, -3, -1, 4], 100);
        assert_eq!(
            out,
            vec![
                (-1, 0, 0, ROOT, None, None),
                (0, -1, 1, 1, Some(0), Some(50)),
                (1, 0, 2, 2, Some(10), Some(20)),
                (3, 0, 2, 3, Some(30), Some(40)),
                (6, -1, 1, 4, Some(60), None),
            ]
        );
        assert_eq!(repairs, Repairs::default());
    }

    #[test]
    fn an_end_without_begin_adopts_the_spans_before_it() {
        // The chain starts inside scope 7: 1 and 2 ran inside it.
        let (out, _) = run(&[1, -1, 2, -2, -7, 3, -3], 100);
        assert_eq!(
            out,
            vec![
                (-1, 0, 0, ROOT, None, None),
                (4, -1, 1, 7, None, Some(40)),
                (0, 4, 2, 1, Some(0), Some(10)),
                (2, 4, 2, 2, Some(20), Some(30)),
                (5, -1, 1, 3, Some(50), Some(60)),
            ]
        );
    }

    #[test]
    fn mismatched_ends_are_repaired_and_counted() {
        // 3 never ends: the end of 2 closes it; the end of 5 matches nothing open.
        let (out, repairs) = run(&[1, 2, 3, -2, -5, -1], 100);
        assert_eq!(
            out,
            vec![
                (-1, 0, 0, ROOT, None, None),
                (0, -1, 1, 1, Some(0), Some(50)),
                (1, 0, 2, 2, Some(10), Some(30)),
                (2, 1, 3, 3, Some(20), Some(30)),
            ]
        );
        assert_eq!(repairs.closed_by_outer_end, 1);
        assert_eq!(repairs.dropped_ends, 1);
    }

    #[test]
    fn a_small_budget_emits_the_same_rows_early() {
        let events = [1, 2, -2, 3, -3, -1, 4, 5, -5, 6, -6];
        let (all, _) = run(&events, 1000);
        let (early, repairs) = run(&events, 2);
        let sorted = |mut v: Out| {
            v.sort();
            v
        };
        assert_eq!(sorted(all), sorted(early));
        assert_eq!(repairs, Repairs::default());
        // After the root row went out, an end without begin no longer adopts earlier spans.
        let (out, repairs) = run(&[1, -1, 2, -2, -7], 1);
        assert_eq!(repairs.unmatched_after_flush, 1);
        assert!(out.contains(&(4, -1, 1, 7, None, Some(40))), "{out:?}");
        assert!(out.contains(&(0, -1, 1, 1, Some(0), Some(10))), "{out:?}");
    }

    #[test]
    fn a_stack_deeper_than_the_limit_is_an_error() {
        let mut tree = CallTree::new(ROOT, 100);
        let mut out = Out::new();
        let begin = |id| ScopeEvent {
            id,
            time: id,
            event_type: EventType::Begin,
            hash: 1,
        };
        for id in 0..MAX_DEPTH as i64 {
            tree.push(begin(id), Vec::new, &mut out).unwrap();
        }
        let err = tree.push(begin(-5), Vec::new, &mut out).unwrap_err();
        assert!(err.to_string().contains("deep"), "{err}");
    }
}
