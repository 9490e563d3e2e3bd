//! A deterministic model of the coordinator's event loop driving the real [`Scheduler`]
//! and the real gate protocol: workers that open and claim positions with per-task costs
//! in simulated time, a one-way latency for orders and batches, and a coordinator that
//! handles one message at a time. Used by the scaling tests (`tests.rs`) to check the
//! makespan against its bounds for worker counts no test machine has.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::atomic::AtomicU64;

use super::{Chunk, Gate, Gates, Scheduler};

/// The gates of simulated workers (plain atomics in this process).
pub(super) struct Board(pub(super) Vec<AtomicU64>);

impl Gates for Board {
    fn gate(&self, w: usize) -> Gate<'_> {
        Gate(&self.0[w])
    }
}

/// What a simulation is given.
#[derive(Debug, Clone)]
pub(super) struct Params {
    pub(super) workers: usize,
    /// Cost of each position's task, in nanoseconds.
    pub(super) costs: Vec<u64>,
    /// One-way latency of an order or a batch.
    pub(super) latency_ns: u64,
    /// Coordinator time to handle one batch (decode, store, schedule, send).
    pub(super) handle_ns: u64,
    pub(super) chunk: Option<usize>,
    /// Streaming: positions are handed out only below the first unfinished one plus this
    /// (the consumer takes each result as soon as it is next in order).
    pub(super) window: Option<usize>,
}

/// What a simulation measured.
#[derive(Debug, Clone)]
pub(super) struct Report {
    /// When the coordinator held every result.
    pub(super) makespan_ns: u64,
    /// How many times each position ran.
    pub(super) runs: Vec<u32>,
    /// Workers that ran at least one task.
    pub(super) busy_workers: usize,
    /// Batches the coordinator handled.
    pub(super) batches: usize,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// An order reaches worker `w`'s socket.
    Order(usize, u64, usize, usize),
    /// Worker `w` is free to claim its next position.
    Step(usize),
    /// The coordinator has handled a batch of worker `w`: `start`, `n`, busy time.
    Handled(usize, usize, usize, u64),
    /// The coordinator's periodic look at its workers (`TICK` in `pool/team.rs`).
    Tick,
}

/// The coordinator's tick, as in `pool/team.rs`.
const TICK_NS: u64 = 10_000_000;

#[derive(Debug, Default)]
struct Sim {
    queue: BinaryHeap<Reverse<(u64, u64, Event)>>,
    order: u64,
}

impl Sim {
    fn at(&mut self, t: u64, e: Event) {
        self.order += 1;
        self.queue.push(Reverse((t, self.order, e)));
    }
}

/// A simulated worker: its socket, the chunk it has open, what it ran of it.
#[derive(Debug, Default)]
struct Worker {
    socket: VecDeque<Chunk>,
    open: Option<(Chunk, usize, u64)>,
    busy: bool,
    ran: usize,
}

/// Runs one map in the model and reports its makespan against the bound.
pub(super) fn simulate(p: &Params) -> Report {
    let n = p.costs.len();
    let board = Board((0..p.workers).map(|_| AtomicU64::new(0)).collect());
    let mut sched = Scheduler::new(p.window.map_or(n, |k| k.min(n)), p.workers, p.chunk);
    let mut finished = vec![false; n];
    let mut front = 0;
    let mut workers: Vec<Worker> = (0..p.workers).map(|_| Worker::default()).collect();
    let mut sim = Sim::default();
    let mut runs = vec![0u32; n];
    let (mut done, mut batches, mut coordinator_free, mut makespan) = (0usize, 0, 0u64, 0u64);
    for w in 0..p.workers {
        for (v, c) in sched.fill(w, &board) {
            sim.at(
                p.latency_ns,
                Event::Order(v, c.seq, c.range.start, c.range.end),
            );
        }
    }
    sim.at(TICK_NS, Event::Tick);
    while let Some(Reverse((t, _, event))) = sim.queue.pop() {
        match event {
            Event::Order(w, seq, start, end) => {
                workers[w].socket.push_back(Chunk {
                    seq,
                    range: start..end,
                });
                if !workers[w].busy {
                    workers[w].busy = true;
                    sim.at(t, Event::Step(w));
                }
            }
            Event::Step(w) => {
                let gate = board.gate(w);
                let me = &mut workers[w];
                loop {
                    if let Some((chunk, claimed, busy)) = &mut me.open {
                        if let Some(off) = gate.claim(chunk.seq) {
                            let pos = chunk.range.start + off;
                            runs[pos] += 1;
                            me.ran += 1;
                            *claimed += 1;
                            *busy += p.costs[pos];
                            sim.at(t + p.costs[pos], Event::Step(w));
                            break;
                        }
                        let (chunk, claimed, busy) = me.open.take().unwrap_or_default();
                        if claimed > 0 {
                            // The batch reaches the coordinator, which handles one at a time.
                            let handled = (t + p.latency_ns).max(coordinator_free) + p.handle_ns;
                            coordinator_free = handled;
                            sim.at(handled, Event::Handled(w, chunk.range.start, claimed, busy));
                        }
                    }
                    match me.socket.pop_front() {
                        Some(chunk) => {
                            if gate.open(chunk.seq, chunk.range.len()) {
                                me.open = Some((chunk, 0, 0));
                            }
                        }
                        None => {
                            me.busy = false;
                            break;
                        }
                    }
                }
            }
            Event::Tick => {
                if done < n {
                    for w in 0..p.workers {
                        if sched.held(w).is_empty() {
                            for (v, c) in sched.fill(w, &board) {
                                sim.at(
                                    t + p.latency_ns,
                                    Event::Order(v, c.seq, c.range.start, c.range.end),
                                );
                            }
                        }
                    }
                    sim.at(t + TICK_NS, Event::Tick);
                }
            }
            Event::Handled(w, start, k, busy) => {
                sched
                    .complete(w, start, k)
                    .unwrap_or_else(|e| panic!("worker {w}: {e}"));
                sched.observe(k, busy);
                done += k;
                finished[start..start + k].fill(true);
                while front < n && finished[front] {
                    front += 1;
                }
                batches += 1;
                makespan = t;
                let mut orders = sched.fill(w, &board);
                if let Some(k) = p.window {
                    let before = sched.limit();
                    sched.extend_to((front + k).min(n));
                    if sched.limit() > before {
                        for v in 0..p.workers {
                            orders.extend(sched.fill(v, &board));
                        }
                    }
                }
                for (v, c) in orders {
                    if let Some(k) = p.window {
                        assert!(c.range.end <= front + k, "a chunk past the window");
                    }
                    sim.at(
                        t + p.latency_ns,
                        Event::Order(v, c.seq, c.range.start, c.range.end),
                    );
                }
            }
        }
    }
    assert_eq!(done, n, "every position reported once");
    Report {
        makespan_ns: makespan,
        runs,
        busy_workers: workers.iter().filter(|w| w.ran > 0).count(),
        batches,
    }
}
