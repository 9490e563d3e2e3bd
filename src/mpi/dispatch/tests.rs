//! Property tests of the root's book, with an in-memory stand-in for the ranks: each
//! simulated rank keeps its requests and blocks in flight, and random steps deliver them.

use std::time::Duration;

use proptest::prelude::*;

use super::*;

/// One simulated rank: what it holds (as the rank sees it) and whether it asked for more.
#[derive(Default)]
struct SimRank {
    blocks: Vec<Block>,
    no_more: bool,
}

#[derive(Debug, Clone)]
enum Step {
    /// Rank asks for a block (only when it may).
    Request(usize),
    /// Rank reports one of its blocks done (chosen by the seed), after `ns` of work.
    Complete(usize, usize, u64),
    /// Rank reports one of its blocks failed.
    Fail(usize, usize),
}

fn step(ranks: usize) -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..ranks).prop_map(Step::Request),
        4 => (0..ranks, any::<usize>(), 1u64..50_000_000).prop_map(|(r, k, ns)| Step::Complete(r, k, ns)),
        1 => (0..ranks, any::<usize>()).prop_map(|(r, k)| Step::Fail(r, k)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Whatever the order of requests, completions and failures: every position is granted
    /// exactly once, blocks are contiguous and in order, no rank holds more than
    /// OUTSTANDING, the book always agrees with what the ranks hold, and once every rank
    /// has run what it holds the call is finished (without failures) or nothing is lost.
    #[test]
    fn every_position_is_granted_once(
        total in 0usize..5_000,
        workers in prop::collection::vec(1usize..8, 1..5),
        steps in prop::collection::vec(step(4), 0..400),
        block_ms in 1u64..2_000,
    ) {
        let ranks = workers.len();
        let mut d = Dispatcher::new(total, &workers, Duration::from_millis(block_ms));
        let mut sim: Vec<SimRank> = (0..ranks).map(|_| SimRank::default()).collect();
        let mut granted = vec![0u8; total];
        let mut next_start = 0;
        let mut failed = 0;
        let mut grant = |d: &mut Dispatcher, sim: &mut Vec<SimRank>, r: usize| -> Result<(), TestCaseError> {
            match d.request(r).unwrap() {
                Grant::Block(b) => {
                    prop_assert!(b.len() >= 1);
                    prop_assert_eq!(b.start, next_start, "blocks go front to back");
                    next_start = b.end;
                    for g in &mut granted[b.start..b.end] {
                        *g += 1;
                    }
                    sim[r].blocks.push(b);
                }
                Grant::NoMore => sim[r].no_more = true,
            }
            Ok(())
        };
        for s in steps {
            match s {
                Step::Request(r) if r < ranks => {
                    if sim[r].blocks.len() < OUTSTANDING {
                        grant(&mut d, &mut sim, r)?;
                    } else {
                        prop_assert_eq!(
                            d.request(r),
                            Err(Misstep::TooManyRequests { rank: r, held: OUTSTANDING })
                        );
                    }
                }
                Step::Complete(r, k, ns) if r < ranks && !sim[r].blocks.is_empty() => {
                    let held = sim[r].blocks.len();
                    let b = sim[r].blocks.remove(k % held);
                    prop_assert_eq!(d.complete(r, b.id, Duration::from_nanos(ns)), Ok(b));
                    // A second report of the same block is refused.
                    prop_assert_eq!(
                        d.complete(r, b.id, Duration::from_nanos(ns)),
                        Err(Misstep::NotHeld { rank: r, id: b.id })
                    );
                }
                Step::Fail(r, k) if r < ranks && !sim[r].blocks.is_empty() => {
                    let held = sim[r].blocks.len();
                    let b = sim[r].blocks.remove(k % held);
                    prop_assert_eq!(d.fail(r, b.id), Ok(b));
                    failed += b.len();
                }
                _ => {}
            }
            for (r, s) in sim.iter().enumerate() {
                let mut book = d.held_by(r);
                let mut seen = s.blocks.clone();
                book.sort_by_key(|b| b.id);
                seen.sort_by_key(|b| b.id);
                prop_assert_eq!(book, seen, "the root knows what rank {} holds", r);
                prop_assert!(s.blocks.len() <= OUTSTANDING);
            }
        }
        // Drain: every rank runs what it holds and asks until told there is no more.
        loop {
            let mut moved = false;
            for r in 0..ranks {
                if let Some(b) = sim[r].blocks.pop() {
                    prop_assert_eq!(d.complete(r, b.id, Duration::from_millis(1)), Ok(b));
                    moved = true;
                }
                if !sim[r].no_more && sim[r].blocks.len() < OUTSTANDING {
                    grant(&mut d, &mut sim, r)?;
                    moved = true;
                }
            }
            if !moved {
                break;
            }
        }
        prop_assert!(granted.iter().all(|&g| g == 1), "every position granted exactly once");
        prop_assert_eq!(d.completed() + failed, total);
        prop_assert_eq!(d.finished(), failed == 0);
        prop_assert_eq!(d.request(0), Ok(Grant::NoMore));
    }

    /// Sizes: never below one task per worker (unless fewer remain), never above half an
    /// even share of what is left (unless that is below the minimum), and capped by what
    /// the rank ran in block_time.
    #[test]
    fn blocks_shrink_and_fit_the_time(
        total in 1usize..1_000_000,
        workers in 1usize..64,
        ranks in 1usize..6,
        per_task_ns in 1u64..10_000_000,
    ) {
        let mut d = Dispatcher::new(total, &vec![workers; ranks], Duration::from_secs(1));
        let mut left = total;
        let mut first = true;
        while let Grant::Block(b) = d.request(0).unwrap() {
            let min = workers.min(left);
            let guided = left.div_ceil(2 * ranks);
            prop_assert!(b.len() >= min);
            prop_assert!(b.len() <= guided.max(min));
            if first {
                prop_assert_eq!(b.len(), min, "the first block is a probe");
                first = false;
            } else {
                let fit = (1_000_000_000 / per_task_ns) as usize;
                prop_assert!(b.len() <= fit.max(min) + 1, "{} > {}", b.len(), fit);
            }
            left -= b.len();
            d.complete(0, b.id, Duration::from_nanos(per_task_ns * b.len() as u64)).unwrap();
        }
        prop_assert!(d.finished());
    }
}

#[test]
fn unknown_ranks_and_foreign_blocks_are_missteps() {
    let mut d = Dispatcher::new(100, &[1, 1], Duration::from_secs(1));
    assert_eq!(d.request(2), Err(Misstep::NoSuchRank { rank: 2 }));
    let Grant::Block(b) = d.request(0).unwrap() else {
        panic!("a block")
    };
    assert_eq!(
        d.complete(1, b.id, Duration::ZERO),
        Err(Misstep::NotHeld { rank: 1, id: b.id })
    );
    assert!(
        Misstep::NotHeld { rank: 1, id: 7 }
            .to_string()
            .contains("rank 1 reported block 7")
    );
    assert_eq!(d.complete(0, b.id, Duration::ZERO), Ok(b));
}
