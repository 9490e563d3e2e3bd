//! Taking in what workers send: batches (decoded piece by piece, with the descriptors
//! of the arrays in them), `init` failures, retirements.

use std::os::fd::{AsFd, OwnedFd};

use serde::de::DeserializeOwned;

use super::{Retirement, Team};
use crate::error::Error;
use crate::ipc::{self, Body, Envelope, Outcome, Payload};
use crate::pool::call::{Call, Mode, Sink};
use crate::shm::handoff;
use crate::sys;
use crate::worker::Job;

impl<J: Job> Team<J>
where
    J::Out: DeserializeOwned,
{
    pub(super) fn accept<K: Sink<J::Out>>(
        &mut self,
        call: &mut Call<K>,
        envelope: Envelope,
    ) -> Result<(), Error> {
        let Envelope {
            worker,
            incarnation,
            call: call_id,
            fds,
            body,
        } = envelope;
        match self.crew.get(worker) {
            Some(m) if m.incarnation == incarnation && m.exit.is_none() => {}
            // A buried worker's last words: its chunks were already given back.
            _ => return Ok(()),
        }
        let pid = self.crew[worker].pid;
        let received = match (fds, &self.crew[worker].fds) {
            (0, _) => Ok(Vec::new()),
            (n, Some(socket)) => {
                sys::recv_fds(socket.as_fd(), n as usize).map_err(|e| e.to_string())
            }
            (_, None) => Err("its descriptor socket is closed".to_string()),
        };
        let received = received.map_err(|e| Error::Channel {
            worker: Some(worker),
            message: format!(
                "could not receive the descriptors of worker {worker} (pid {pid}): {e}"
            ),
        })?;
        let (start, count, busy_ns, pieces, payload, retire) = match body {
            Body::InitFailed { message } => {
                return Err(Error::InitFailed {
                    worker,
                    pid,
                    reason: format!("panicked: {message}"),
                });
            }
            // A report of a call that is over (its descriptors, just received, close).
            Body::Batch { .. } if call_id != call.id => return Ok(()),
            Body::Batch {
                start,
                count,
                busy_ns,
                pieces,
                payload,
                retire,
            } => (start, count, busy_ns, pieces, payload, retire),
        };
        self.init_deaths = 0;
        let expected = if J::FOLDS { 1 } else { count };
        if pieces.len() != expected || count == 0 {
            return Err(Error::Channel {
                worker: Some(worker),
                message: format!(
                    "a batch of worker {worker} (pid {pid}) for {count} positions carries {} \
                     outcomes",
                    pieces.len()
                ),
            });
        }
        let mut received = received.into_iter();
        let mut bytes = match payload {
            Payload::Inline(bytes) => Ok(Received::Heap(bytes.0)),
            Payload::File => match received.next() {
                Some(fd) => sys::ReceivedFile::map(std::fs::File::from(fd))
                    .map(Received::Mapped)
                    .map_err(|e| format!("could not map the file that carries it: {e}")),
                None => Err("the file that carries it is missing".to_string()),
            },
        };
        call.sched
            .complete(worker, start, count)
            .map_err(|message| Error::Channel {
                worker: Some(worker),
                message,
            })?;
        let mut offset = 0usize;
        for (k, piece) in pieces.into_iter().enumerate() {
            // A map's piece is its position's; a fold's covers the batch, and a panic in
            // it is its last position's.
            let (pos, covers) = match J::FOLDS {
                true => (start + count - 1, count),
                false => (start + k, 1),
            };
            let first = pos + 1 - covers;
            let fds: Vec<OwnedFd> = match piece.fds {
                0 => Vec::new(),
                n => received.by_ref().take(n as usize).collect(),
            };
            let len = piece.len as usize;
            let at = offset;
            offset = offset.saturating_add(len);
            // The common case first, without building an error: a small value with no
            // arrays in it, decoded from the message itself. Anything else (or a failure)
            // takes the general path below, which says what went wrong.
            if piece.fds == 0
                && let Ok(Received::Heap(b)) = &bytes
                && let Some(Ok(Outcome::Done(value))) = b
                    .get(at..at.saturating_add(len))
                    .map(ipc::decode::<Outcome<J::Out>>)
            {
                if call.sink.value(first, covers, value) {
                    call.done += covers;
                }
                continue;
            }
            let index = call.indices.at(pos);
            let not_received = |message: String| Error::ResultNotSent {
                index,
                worker,
                pid,
                message,
            };
            let left = (len > ipc::FILE_PAYLOAD)
                .then(sys::address_space_left)
                .flatten();
            let room = match left {
                Some(left) if len as u64 > left => Err(format!(
                    "it is too large to receive: {len} bytes, about {left} bytes of address \
                     space left under RLIMIT_AS (ulimit -v)"
                )),
                _ => Ok(()),
            };
            let source = match (room, bytes.as_mut()) {
                (Err(message), _) => Err(message),
                (_, Err(message)) => Err(message.clone()),
                (_, Ok(source)) => Ok(source),
            };
            let result = match source {
                Err(message) => Err(not_received(message)),
                Ok(source) => {
                    let mut decode = || match source {
                        Received::Heap(b) => b
                            .get(at..at.saturating_add(len))
                            .ok_or_else(|| "its bytes are missing from the batch".to_string())
                            .and_then(ipc::decode::<Outcome<J::Out>>),
                        // The file's pages are given back as the value is built.
                        Received::Mapped(file) => file.decode::<Outcome<J::Out>>(at, len),
                    };
                    // Without descriptors the piece holds no array: no context to open.
                    let decoded = match fds.is_empty() {
                        true => (decode(), None),
                        false => handoff::with_incoming(fds, decode),
                    };
                    match decoded {
                        (Ok(Outcome::Done(value)), _) => Ok(value),
                        (Ok(Outcome::Panicked(message)), _) => Err(Error::TaskPanicked {
                            index,
                            position: pos,
                            worker,
                            pid,
                            message,
                        }),
                        (Ok(Outcome::Unsendable(message)), _) => Err(not_received(message)),
                        (Err(_), Some(e)) => Err(e),
                        (Err(message), None) => Err(not_received(format!(
                            "the coordinator could not decode it ({message}); results travel \
                             as postcard, which cannot carry serde attributes that need a \
                             self-describing format (skip_serializing_if, flatten, untagged \
                             or internally tagged enums)"
                        ))),
                    }
                }
            };
            match result {
                Ok(value) => {
                    if call.sink.value(first, covers, value) {
                        call.done += covers;
                    }
                }
                Err(e) => settle_failure(call, pos, covers, e)?,
            }
        }
        drop(bytes);
        self.crew[worker].acked += count as u64;
        call.sched.observe(count, busy_ns);
        if let Some(reason) = retire {
            // It leaves: nothing it holds will run there. What it held goes back now; the
            // slot is forked again once the process has gone (`reap`).
            self.retirements.push(Retirement {
                worker,
                pid,
                reason,
            });
            let m = &mut self.crew[worker];
            m.retiring = true;
            m.orders = None;
            for r in call.sched.surrender(worker) {
                call.sched.requeue(r);
            }
            for v in 0..self.crew.len() {
                if call.sched.held(v).is_empty() {
                    self.refill(call, v);
                }
            }
            return Ok(());
        }
        self.refill(call, worker);
        Ok(())
    }

    /// Accepts every message already waiting.
    pub(super) fn drain<K: Sink<J::Out>>(&mut self, call: &mut Call<K>) -> Result<(), Error> {
        loop {
            let next = match &self.report_rx {
                Some(rx) => rx.try_recv(),
                None => return Ok(()),
            };
            match next {
                Ok(envelope) => self.accept(call, envelope)?,
                // Empty, or a broken message: the deaths are dealt with by the caller.
                Err(_) => return Ok(()),
            }
        }
    }
}

/// Records the failure of position `pos` (a fold's covers `covers` positions); in
/// fail-fast mode it ends the call.
pub(super) fn settle_failure<K, T>(
    call: &mut Call<K>,
    pos: usize,
    covers: usize,
    error: Error,
) -> Result<(), Error>
where
    K: Sink<T>,
{
    if call.mode == Mode::FailFast {
        return Err(error);
    }
    if call.sink.failure(pos, error) {
        call.done += covers;
    }
    Ok(())
}

/// A batch's payload as the coordinator holds it while decoding.
enum Received {
    /// Carried in the message.
    Heap(Vec<u8>),
    /// Carried in a memory file, mapped.
    Mapped(sys::ReceivedFile),
}
