"""The Python peers of forkmap's comparison harness (`cargo run --release --example compare`).

Run by the harness from the virtualenv it creates (numpy and tqdm from PyPI):

    peers.py --peer PEER --workload W --workers N --params JSON

and prints one JSON line: {"times": [seconds per repetition], "checksum": sum of results,
"extra": {...}}. The parameters come from the harness, so Rust and Python run the same work.

Peers:
  process_map  tutorial 1 as written: a global multiprocessing.Array, a numpy view made from
               it inside every task, tqdm.contrib.concurrent.process_map (bar disabled, as
               forkmap's is in the harness).
  pool_map     plain multiprocessing.Pool.map over the same global Array, the numpy view made
               once before the fork (cheaper per task than the tutorial), default chunks unless
               the workload says otherwise.
  pool_map_loop  workload b only: pool_map with the Rust task's algorithm (Horner's rule)
               written as a pure-Python loop instead of numpy's dot product.
  sequential   the pool_map task in a loop in this process (workload b only): the
               interpreter's own cost per task, without any parallel machinery.

Every timed call includes starting the worker processes and stopping them, as forkmap forks
its workers per map call.
"""

import argparse
import ctypes
import json
import multiprocessing as mp
import resource
import time
from multiprocessing import Array

import numpy as np
from tqdm.contrib.concurrent import process_map

# The tutorial's global: set in the parent before the workers are forked.
B_shared = None
SHAPE = None
# A view of B_shared made once, before the fork (pool_map peers).
VIEW = None
P = {}
POW = None
DEADLINE = 0.0


def tutorial_view():
    """What the tutorial does in every task."""
    return np.frombuffer(B_shared.get_obj()).reshape(SHAPE)


def make_shared(rows, cols, random):
    global B_shared, SHAPE, VIEW
    B_shared = Array(ctypes.c_double, rows * cols)
    SHAPE = (rows, cols)
    VIEW = np.frombuffer(B_shared.get_obj()).reshape(SHAPE)
    if random:
        VIEW[:] = np.random.uniform(size=SHAPE)
    else:
        # Element k (row-major) is (k * 7919 mod 10007) / 10007, as in the Rust harness,
        # filled in blocks of rows so no 200 MB temporary is made.
        step = max(1, (1 << 20) // cols)
        for r0 in range(0, rows, step):
            r1 = min(rows, r0 + step)
            k = np.arange(r0 * cols, r1 * cols, dtype=np.int64)
            VIEW[r0:r1] = (((k * 7919) % 10007) / 10007.0).reshape(r1 - r0, cols)


# ---- tasks ------------------------------------------------------------------------------

def test(a):
    """Tutorial 1's task, verbatim apart from the parameterised sleep."""
    arr = tutorial_view()
    time.sleep(P["tutorial_sleep_s"])
    return arr[a, a]


def fine_tutorial(i):
    arr = tutorial_view()
    return float(arr[i % SHAPE[0], : P["fine_k"]] @ POW)


def fine_cached(i):
    return float(VIEW[i % SHAPE[0], : P["fine_k"]] @ POW)


def fine_loop(i):
    """The Rust task's algorithm, Horner's rule, in pure Python."""
    x = P["fine_x"]
    acc = 0.0
    for v in VIEW[i % SHAPE[0], : P["fine_k"]].tolist():
        acc = acc * x + v
    return acc


def spin(ns):
    end = time.thread_time_ns() + ns
    while time.thread_time_ns() < end:
        pass


def skew_tutorial(i):
    arr = tutorial_view()
    spin((i + 1) * P["skew_unit_ns"])
    s = min(SHAPE)
    return float(arr[i % s, i % s])


def skew_cached(i):
    spin((i + 1) * P["skew_unit_ns"])
    s = min(SHAPE)
    return float(VIEW[i % s, i % s])


def mem_task(_):
    s = float(tutorial_view().sum())
    time.sleep(max(DEADLINE - time.monotonic(), 0.02))
    return s


def trivial_tutorial(i):
    return float(tutorial_view()[i, i])


def trivial_cached(i):
    return float(VIEW[i, i])


# ---- runners ----------------------------------------------------------------------------

def run_process_map(fn, n, workers, chunksize):
    return process_map(fn, range(n), max_workers=workers, chunksize=chunksize, disable=True)


def run_pool_map(fn, n, workers, chunksize=None):
    pool = mp.Pool(workers)
    try:
        out = pool.map(fn, range(n), chunksize)
    except BaseException:
        pool.terminate()
        pool.join()
        raise
    pool.close()
    pool.join()
    return out


CPU = {"cpu_self": [], "cpu_children": []}


def _cpu():
    """CPU seconds (user + system) of this process and of its reaped children."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def timed(reps, call):
    """Wall seconds per repetition; CPU seconds of this process and of its reaped
    children per repetition go to CPU."""
    times, out = [], None
    for _ in range(max(1, reps)):
        c0 = _cpu()
        t0 = time.perf_counter()
        out = call()
        times.append(time.perf_counter() - t0)
        c1 = _cpu()
        CPU["cpu_self"].append(c1[0] - c0[0])
        CPU["cpu_children"].append(c1[1] - c0[1])
    return times, out


def pool_map_chunk(n, workers):
    return max(1, -(-n // (4 * workers)))


def main():
    global P, POW, DEADLINE
    ap = argparse.ArgumentParser()
    ap.add_argument("--peer", required=True)
    ap.add_argument("--workload", required=True)
    ap.add_argument("--workers", type=int, required=True)
    ap.add_argument("--params", required=True)
    args = ap.parse_args()
    P = json.loads(args.params)
    # The tutorial relies on fork (workers inherit the global); pin it on every platform.
    mp.set_start_method("fork", force=True)
    w, peer, extra = args.workers, args.peer, {}
    reps = P["py_reps"]

    if args.workload == "a":
        make_shared(P["tutorial_n"], P["tutorial_n"], random=True)
        if peer == "process_map":
            times, out = timed(P["reps"], lambda: run_process_map(test, 4, 2, 1))
        elif peer == "pool_map":
            times, out = timed(P["reps"], lambda: run_pool_map(test, 4, 2, 1))
        else:
            raise SystemExit(f"no peer {peer} for (a)")
    elif args.workload == "b":
        make_shared(P["side"], P["side"], random=False)
        k = P["fine_k"]
        POW = P["fine_x"] ** np.arange(k - 1, -1, -1, dtype=np.float64)
        n = P["fine_tasks"]
        if peer == "process_map":
            c = pool_map_chunk(n, w)
            extra["chunksize"] = c
            times, out = timed(reps, lambda: run_process_map(fine_tutorial, n, w, c))
        elif peer == "pool_map":
            times, out = timed(reps, lambda: run_pool_map(fine_cached, n, w))
        elif peer == "pool_map_loop":
            times, out = timed(1, lambda: run_pool_map(fine_loop, n, w))
        elif peer == "sequential":
            times, out = timed(1, lambda: [fine_cached(i) for i in range(n)])
        else:
            raise SystemExit(f"no peer {peer} for (b)")
    elif args.workload == "c":
        make_shared(P["side"], P["side"], random=False)
        n = P["skew_tasks"]
        if peer == "process_map":
            times, out = timed(reps, lambda: run_process_map(skew_tutorial, n, w, 1))
        elif peer == "pool_map":
            times, out = timed(reps, lambda: run_pool_map(skew_cached, n, w))
        else:
            raise SystemExit(f"no peer {peer} for (c)")
    elif args.workload == "d":
        make_shared(P["mem_rows"], P["mem_cols"], random=False)
        hold = P["mem_hold_s"] + P["mem_hold_per_worker_s"] * w

        def once(run):
            global DEADLINE
            DEADLINE = time.monotonic() + hold
            return run()

        if peer == "process_map":
            times, out = timed(1, lambda: once(lambda: run_process_map(mem_task, w, w, 1)))
        elif peer == "pool_map":
            times, out = timed(1, lambda: once(lambda: run_pool_map(mem_task, w, w, 1)))
        else:
            raise SystemExit(f"no peer {peer} for (d)")
    elif args.workload == "e":
        make_shared(P["side"], P["side"], random=False)
        reps = P["py_startup_reps"]
        if peer == "process_map":
            times, out = timed(reps, lambda: run_process_map(trivial_tutorial, 1, w, 1))
        elif peer == "pool_map":
            times, out = timed(reps, lambda: run_pool_map(trivial_cached, 1, w))
        else:
            raise SystemExit(f"no peer {peer} for (e)")
        extra["first"] = times[0]
    else:
        raise SystemExit(f"no workload {args.workload}")
    extra.update(CPU)
    print(json.dumps({"times": times, "checksum": float(sum(out)), "extra": extra}))


if __name__ == "__main__":
    main()
