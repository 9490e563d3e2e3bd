//! The link thread of each rank: all of a call's MPI traffic, while the calling thread
//! runs blocks on the local pool.
//!
//! On the root it serves the book ([`Dispatcher`]) to every rank, itself included (over a
//! channel, no MPI); elsewhere it forwards requests and results to the root and grants
//! back. Both sides send a beat after a second of silence and abort the job, naming the
//! rank, when their peer has been silent for `rank_timeout`. The end is a handshake: the
//! root sends `End` to every rank and reads (discarding) whatever they still send until
//! each has answered `Bye`, its last message, so no message of this call is left in flight
//! to be mistaken for the next call's.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::time::{Duration, Instant};

use mpi::point_to_point::MatchedReceiveVec;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, Destination, Source};

use super::dispatch::{Block, Dispatcher, Grant};
use super::wire::{self, CONTROL, DATA, Msg, Stop};
use crate::error::Error;
use crate::sys::mpi::LentComm;

/// The calling thread to its link.
#[derive(Debug)]
pub(crate) enum ToLink {
    /// Ask for one more block.
    Request,
    /// A block ran; its results (the root keeps its own, so `None` there).
    Done {
        id: u64,
        elapsed: Duration,
        payload: Option<Vec<u8>>,
    },
    /// A block failed: the call stops.
    Failed { id: u64, error: Error },
}

/// A link to its calling thread.
#[derive(Debug)]
pub(crate) enum ToMain {
    Grant(Block),
    NoMore,
    /// On the root: another rank's results for the block starting at `start`.
    Remote {
        rank: i32,
        start: usize,
        payload: Vec<u8>,
    },
    /// The call is over; `Some` when it was stopped.
    End(Option<Stop>),
}

/// Timing and sizes of a call's traffic.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LinkConfig {
    pub(crate) rank_timeout: Duration,
    pub(crate) piece: usize,
}

/// A beat goes out after this much silence towards a peer.
const BEAT: Duration = Duration::from_secs(1);
/// Exit code of the job when a silent rank makes forkmap abort it.
pub(crate) const ABORT_CODE: i32 = 75;
const MIN_NAP: Duration = Duration::from_micros(20);
const MAX_NAP: Duration = Duration::from_millis(1);

fn send(comm: &SimpleCommunicator, to: i32, msg: &Msg) {
    comm.process_at_rank(to)
        .send_with_tag(&msg.encode()[..], CONTROL);
}

fn abort_silent(comm: &SimpleCommunicator, rank: i32, silent: Duration) -> ! {
    eprintln!(
        "forkmap: rank {rank} has sent nothing for {:.1} s (more than the cluster's \
         rank_timeout): it hangs or was stopped; aborting the MPI job",
        silent.as_secs_f64()
    );
    comm.abort(ABORT_CODE)
}

/// Naps between polls, from 20 us up to 1 ms while nothing happens.
struct Nap(Duration);

impl Nap {
    fn next(&mut self, busy: bool) -> Duration {
        self.0 = if busy {
            MIN_NAP
        } else {
            (self.0 * 2).min(MAX_NAP)
        };
        self.0
    }
}

/// The root's link: serves the book until every position is done or something failed,
/// then ends the call on every rank.
pub(crate) fn serve_root(
    comm: LentComm<'_>,
    mut book: Dispatcher,
    to_main: Sender<ToMain>,
    from_main: Receiver<ToLink>,
    cfg: LinkConfig,
) {
    let comm = comm.0;
    let size = comm.size() as usize;
    let start = Instant::now();
    let mut heard = vec![start; size];
    let mut said = vec![start; size];
    let mut stop: Option<Stop> = None;
    let mut nap = Nap(MIN_NAP);
    let halt = |stop: &mut Option<Stop>, rank: i32, error: Error| {
        stop.get_or_insert(Stop { rank, error });
    };
    // Serving.
    while stop.is_none() && !book.finished() {
        let mut busy = false;
        let local = |m: ToLink, book: &mut Dispatcher, stop: &mut Option<Stop>| match m {
            ToLink::Request => match book.request(0) {
                Ok(Grant::Block(b)) => drop(to_main.send(ToMain::Grant(b))),
                Ok(Grant::NoMore) => drop(to_main.send(ToMain::NoMore)),
                Err(e) => halt(stop, 0, Error::Mpi(e.to_string())),
            },
            ToLink::Done { id, elapsed, .. } => {
                if let Err(e) = book.complete(0, id, elapsed) {
                    halt(stop, 0, Error::Mpi(e.to_string()));
                }
            }
            ToLink::Failed { id, error } => {
                let _ = book.fail(0, id);
                halt(stop, 0, error);
            }
        };
        loop {
            match from_main.try_recv() {
                Ok(m) => {
                    busy = true;
                    local(m, &mut book, &mut stop);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    halt(&mut stop, 0, Error::Mpi("the calling thread ended".into()));
                    break;
                }
            }
        }
        while let Some(probe) = comm.any_process().immediate_matched_probe_with_tag(CONTROL) {
            busy = true;
            let from = probe.1.source_rank();
            let (bytes, _) = probe.matched_receive_vec::<u8>();
            heard[from as usize] = Instant::now();
            let msg = match Msg::decode(&bytes, from) {
                Ok(m) => m,
                Err(e) => {
                    halt(&mut stop, from, Error::Mpi(e.to_string()));
                    continue;
                }
            };
            match msg {
                Msg::Request => {
                    let answer = match book.request(from as usize) {
                        Ok(Grant::Block(b)) => Msg::Grant {
                            id: b.id,
                            start: b.start as u64,
                            end: b.end as u64,
                        },
                        Ok(Grant::NoMore) => Msg::NoMore,
                        Err(e) => {
                            halt(&mut stop, from, Error::Mpi(e.to_string()));
                            continue;
                        }
                    };
                    send(comm, from, &answer);
                    said[from as usize] = Instant::now();
                }
                Msg::Done {
                    id,
                    elapsed_ns,
                    len,
                    pieces,
                } => {
                    let payload = receive_pieces(comm, from, len, pieces, cfg.piece, &mut heard);
                    let Some(payload) = payload else {
                        halt(
                            &mut stop,
                            from,
                            Error::Mpi(format!(
                                "the root could not hold the {len} result bytes of block {id}"
                            )),
                        );
                        continue;
                    };
                    match book.complete(from as usize, id, Duration::from_nanos(elapsed_ns)) {
                        Ok(b) => drop(to_main.send(ToMain::Remote {
                            rank: from,
                            start: b.start,
                            payload,
                        })),
                        Err(e) => halt(&mut stop, from, Error::Mpi(e.to_string())),
                    }
                }
                Msg::Failed { id, error } => {
                    let _ = book.fail(from as usize, id);
                    halt(&mut stop, from, error);
                }
                Msg::Beat => {}
                other => halt(
                    &mut stop,
                    from,
                    Error::Mpi(format!("unexpected message {other:?} at the root")),
                ),
            }
        }
        keep_alive(comm, &mut said, &heard, cfg.rank_timeout, |_| false);
        if stop.is_none() && !book.finished() && !busy {
            match from_main.recv_timeout(nap.next(false)) {
                Ok(m) => {
                    nap.next(true);
                    local(m, &mut book, &mut stop);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    halt(&mut stop, 0, Error::Mpi("the calling thread ended".into()))
                }
            }
        } else {
            nap.next(true);
        }
    }
    // Ending: every other rank gets End and answers Bye; what they send meanwhile is read
    // and dropped (results pieces included, so no sender stays blocked).
    let end = Msg::End { stop };
    let bytes = end.encode();
    for r in 1..size as i32 {
        comm.process_at_rank(r).send_with_tag(&bytes[..], CONTROL);
    }
    if let Msg::End { stop } = end {
        let _ = to_main.send(ToMain::End(stop));
    }
    let mut bye = vec![false; size];
    bye[0] = true;
    let mut nap = Nap(MIN_NAP);
    while !bye.iter().all(|&b| b) {
        let mut busy = false;
        while let Some(probe) = comm.any_process().immediate_matched_probe_with_tag(CONTROL) {
            busy = true;
            let from = probe.1.source_rank();
            let (bytes, _) = probe.matched_receive_vec::<u8>();
            heard[from as usize] = Instant::now();
            match Msg::decode(&bytes, from) {
                Ok(Msg::Bye) => bye[from as usize] = true,
                Ok(Msg::Done { len, pieces, .. }) => {
                    let _ = receive_pieces(comm, from, len, pieces, cfg.piece, &mut heard);
                }
                _ => {}
            }
        }
        keep_alive(comm, &mut said, &heard, cfg.rank_timeout, |r| bye[r]);
        std::thread::sleep(nap.next(busy));
    }
}

/// Receives the `pieces` DATA messages of `len` bytes that follow a `Done` from `from`;
/// `None` when `len` bytes cannot be allocated (the pieces are still read, and dropped).
fn receive_pieces(
    comm: &SimpleCommunicator,
    from: i32,
    len: u64,
    pieces: u32,
    piece: usize,
    heard: &mut [Instant],
) -> Option<Vec<u8>> {
    let began = Instant::now();
    let source = comm.process_at_rank(from);
    let mut buf = Vec::new();
    let held = usize::try_from(len)
        .ok()
        .filter(|&n| buf.try_reserve_exact(n).is_ok());
    let out = match held {
        Some(n) => {
            buf.resize(n, 0);
            for range in wire::pieces(n, piece) {
                source.receive_into_with_tag(&mut buf[range], DATA);
            }
            Some(buf)
        }
        None => {
            for _ in 0..pieces {
                let _ = source.receive_vec_with_tag::<u8>(DATA);
            }
            None
        }
    };
    // A long transfer kept this thread from hearing the others: restart their clocks.
    if began.elapsed() > BEAT {
        let now = Instant::now();
        heard.iter_mut().for_each(|h| *h = now);
    }
    out
}

/// Beats to every peer that has not been sent anything for a second; aborts the job when
/// a peer (not yet `done`) has been silent past the timeout.
fn keep_alive(
    comm: &SimpleCommunicator,
    said: &mut [Instant],
    heard: &[Instant],
    timeout: Duration,
    done: impl Fn(usize) -> bool,
) {
    let me = comm.rank() as usize;
    let now = Instant::now();
    for peer in 0..said.len() {
        if peer == me || done(peer) || (me != 0 && peer != 0) {
            continue;
        }
        let silent = now.duration_since(heard[peer]);
        if silent > timeout {
            abort_silent(comm, peer as i32, silent);
        }
        if now.duration_since(said[peer]) > BEAT {
            send(comm, peer as i32, &Msg::Beat);
            said[peer] = now;
        }
    }
}

/// A non-root rank's link: forwards its calling thread's requests and results to the
/// root and the root's grants back, until the root ends the call.
pub(crate) fn serve_rank(
    comm: LentComm<'_>,
    to_main: Sender<ToMain>,
    from_main: Receiver<ToLink>,
    cfg: LinkConfig,
) {
    let comm = comm.0;
    let start = Instant::now();
    let mut heard = [start];
    let mut said = [start];
    let mut nap = Nap(MIN_NAP);
    let mut main_gone = false;
    let mut woken: Option<ToLink> = None;
    loop {
        let mut busy = false;
        while !main_gone {
            let next = woken.take().map_or_else(|| from_main.try_recv(), Ok);
            let msg = match next {
                Ok(m) => m,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    main_gone = true;
                    ToLink::Failed {
                        id: u64::MAX,
                        error: Error::Mpi("the calling thread ended".into()),
                    }
                }
            };
            busy = true;
            match msg {
                ToLink::Request => send(comm, 0, &Msg::Request),
                ToLink::Failed { id, error } => send(comm, 0, &Msg::Failed { id, error }),
                ToLink::Done {
                    id,
                    elapsed,
                    payload,
                } => {
                    let payload = payload.unwrap_or_default();
                    let ranges: Vec<_> = wire::pieces(payload.len(), cfg.piece).collect();
                    send(
                        comm,
                        0,
                        &Msg::Done {
                            id,
                            elapsed_ns: u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
                            len: payload.len() as u64,
                            pieces: u32::try_from(ranges.len()).unwrap_or(u32::MAX),
                        },
                    );
                    let root = comm.process_at_rank(0);
                    for range in ranges {
                        root.send_with_tag(&payload[range], DATA);
                    }
                    // The root received it all, so it is alive.
                    heard[0] = Instant::now();
                }
            }
            said[0] = Instant::now();
        }
        while let Some(probe) = comm
            .process_at_rank(0)
            .immediate_matched_probe_with_tag(CONTROL)
        {
            busy = true;
            let (bytes, _) = probe.matched_receive_vec::<u8>();
            heard[0] = Instant::now();
            match Msg::decode(&bytes, 0) {
                Ok(Msg::Grant { id, start, end }) => drop(to_main.send(ToMain::Grant(Block {
                    id,
                    start: start as usize,
                    end: end as usize,
                }))),
                Ok(Msg::NoMore) => drop(to_main.send(ToMain::NoMore)),
                Ok(Msg::Beat) => {}
                Ok(Msg::End { stop }) => {
                    send(comm, 0, &Msg::Bye);
                    let _ = to_main.send(ToMain::End(stop));
                    return;
                }
                Ok(other) => send(
                    comm,
                    0,
                    &Msg::Failed {
                        id: u64::MAX,
                        error: Error::Mpi(format!("unexpected message {other:?} from the root")),
                    },
                ),
                Err(e) => send(
                    comm,
                    0,
                    &Msg::Failed {
                        id: u64::MAX,
                        error: e,
                    },
                ),
            }
        }
        keep_alive(comm, &mut said, &heard, cfg.rank_timeout, |_| false);
        // Nap, but wake at once when the calling thread has something to send.
        if !main_gone {
            match from_main.recv_timeout(nap.next(busy)) {
                Ok(m) => woken = Some(m),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {}
            }
        } else {
            std::thread::sleep(nap.next(busy));
        }
    }
}
