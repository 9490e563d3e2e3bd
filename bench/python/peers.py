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

Workloads g and h (issue 8) are tasks that sleep (`--sleeps MS,MS,...`: task i sleeps the
i-th figure) and return their index and their worker's pid, run by
  pool_map_c1 / pool_map_default  Pool(workers).map with chunksize 1 / its default chunksize,
  process_map_c1 / process_map_default  process_map(max_workers=workers) with chunksize 1 /
               its default (1, passed as no argument at all);
"extra" has "pids": the number of distinct worker pids that ran a task, per repetition.

Workload f is tutorial 2 end to end (h5py needed, imported only there): children load text
files of records with np.loadtxt, copy them into SharedMemory blocks and send name, shape and
dtype back; the parent attaches, writes one HDF5 dataset per file with h5py, closes, and the
blocks are unlinked. Its peers are the tutorial's two versions:
  process_queues  one Process per file, results on one queue, "done" back on another: the
               child unlinks its block on "done" (tutorial 2, first version).
  pool_map     Pool(workers).map(load_and_share, ...); the parent unlinks (second version).

    peers.py --check REFERENCE.h5 OTHER.h5 ...

compares HDF5 files of records: the same datasets, shapes and fields, and every value equal
(floats bit for bit). It prints one line saying what it compared, and exits with 1 when
something differs.

Every timed call includes starting the worker processes and stopping them, as forkmap forks
its workers per map call.
"""

import argparse
import ctypes
import json
import multiprocessing as mp
import os
import resource
import sys
import time
from multiprocessing import Array, Pool, Process, Queue, resource_tracker
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path

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


SLEEPS = []


def sleeper(i):
    time.sleep(SLEEPS[i])
    return i, os.getpid()


def trivial_tutorial(i):
    return float(tutorial_view()[i, i])


def trivial_cached(i):
    return float(VIEW[i, i])


# ---- tutorial 2 (workload f) -------------------------------------------------------------
# The tutorial's code, with three changes that do not make it slower: the messages also carry
# the file's name and timestamps (time.time(), a clock the processes share), the first
# version gives each child its own "done" queue (with one shared queue, any waiting child may
# take another's "done" and unlink its block before the parent attaches it), and the parent
# writes each array with h5py where the tutorial prints it.

def loadtxt_worker(out_queue, in_queue, filepath):
    """Tutorial 2, first version: the child."""
    dtype = [('chr', 'S10'), ('pos', '<i4'), ('pct', '<f4'), ('c', '<i4'), ('t', '<i4')]
    t0 = time.time()
    data = np.loadtxt(filepath, dtype=dtype)
    t1 = time.time()
    shm = SharedMemory(create=True, size=data.nbytes)
    shared_array = np.ndarray(data.shape, dtype=dtype, buffer=shm.buf)
    shared_array[:] = data
    t2 = time.time()
    out_queue.put({"name": shm.name, "shape": data.shape, "dtype": dtype,
                   "file": filepath, "parse": t1 - t0, "copy": t2 - t1, "done": t2})
    while True:
        msg = in_queue.get()
        if msg == "done":
            shm.close()
            shm.unlink()
            break


def run_process_queues(filenames, out):
    """Tutorial 2, first version: the parent. Returns rows written and the split."""
    import h5py

    start = time.time()
    out_queue = Queue()
    in_queues = {file: Queue() for file in filenames}
    processes = []
    for file in filenames:
        p = Process(target=loadtxt_worker, args=(out_queue, in_queues[file], file))
        p.start()
        processes.append(p)
    handoff = write = 0.0
    msgs = []
    t = time.time()
    f = h5py.File(out, "w")
    write += time.time() - t
    for _ in filenames:
        asked = time.time()
        msg = out_queue.get()
        got = time.time()
        shm = SharedMemory(name=msg["name"])
        array = np.ndarray(msg["shape"], dtype=msg["dtype"], buffer=shm.buf)
        held = time.time()
        f.create_dataset(Path(msg["file"]).stem, data=array)
        write += time.time() - held
        handoff += got - max(asked, msg["done"]) + (held - got)
        msgs.append(msg)
        shm.close()
        in_queues[msg["file"]].put("done")
    t = time.time()
    f.close()
    write += time.time() - t
    for p in processes:
        p.join()
    return t2_split(msgs, start, handoff, write)


def load_and_share(file_info):
    """Tutorial 2, second version: the task."""
    filepath, dtype = file_info
    t0 = time.time()
    data = np.loadtxt(filepath, dtype=dtype)
    t1 = time.time()
    shm = SharedMemory(create=True, size=data.nbytes)
    shared_array = np.ndarray(data.shape, dtype=dtype, buffer=shm.buf)
    shared_array[:] = data
    t2 = time.time()
    return {"name": shm.name, "shape": data.shape, "dtype": dtype,
            "file": filepath, "parse": t1 - t0, "copy": t2 - t1, "done": t2}


def run_t2_pool_map(filenames, out, workers):
    """Tutorial 2, second version: the parent."""
    import h5py

    start = time.time()
    dtype = [('chr', 'S10'), ('pos', '<i4'), ('pct', '<f4'), ('c', '<i4'), ('t', '<i4')]
    file_info = [(file, dtype) for file in filenames]
    handoff = write = 0.0
    with Pool(processes=workers) as pool:
        results = pool.map(load_and_share, file_info)
        handoff += time.time() - max(r["done"] for r in results)
        t = time.time()
        f = h5py.File(out, "w")
        write += time.time() - t
        for res in results:
            t = time.time()
            shm = SharedMemory(name=res["name"])
            array = np.ndarray(res["shape"], dtype=res["dtype"], buffer=shm.buf)
            held = time.time()
            handoff += held - t
            f.create_dataset(Path(res["file"]).stem, data=array)
            write += time.time() - held
            shm.close()
            shm.unlink()
        t = time.time()
        f.close()
        write += time.time() - t
    return t2_split(results, start, handoff, write)


def t2_split(msgs, start, handoff, write):
    rows = sum(m["shape"][0] for m in msgs)
    return rows, {
        "load": max(m["done"] for m in msgs) - start,
        "handoff": handoff,
        "write": write,
        "parse": sum(m["parse"] for m in msgs),
        "copy": sum(m["copy"] for m in msgs),
    }


def run_t2(peer, workers):
    """Workload f: every repetition timed whole, the previous output removed untimed."""
    filenames = P["records_inputs"]
    out = os.path.join(P["records_out"], f"py-{peer}.h5")
    os.makedirs(P["records_out"], exist_ok=True)
    # Imported before timing, as the tutorial imports at the top of its script (the runners'
    # own `import h5py` then only looks it up).
    import h5py  # noqa: F401
    # One tracker for the whole run, started before any child: otherwise every child that
    # creates a block starts its own tracker process, which costs more and outlives it.
    resource_tracker.ensure_running()
    times, extra, rows = [], {}, 0
    for _ in range(max(1, P["py_reps"])):
        if os.path.exists(out):
            os.remove(out)
        c0 = _cpu()
        t0 = time.perf_counter()
        if peer == "process_queues":
            rows, split = run_process_queues(filenames, out)
        elif peer == "pool_map":
            rows, split = run_t2_pool_map(filenames, out, workers)
        else:
            raise SystemExit(f"no peer {peer} for (f)")
        times.append(time.perf_counter() - t0)
        c1 = _cpu()
        CPU["cpu_self"].append(c1[0] - c0[0])
        CPU["cpu_children"].append(c1[1] - c0[1])
        for k, v in split.items():
            extra.setdefault(k, []).append(v)
    extra["output"] = out
    return times, rows, extra


def check_h5(paths):
    """Compares HDF5 files of records with the first one; exits 1 on any difference."""
    import h5py

    def fail(msg):
        print(msg)
        sys.exit(1)

    ref_path, others = paths[0], paths[1:]
    with h5py.File(ref_path, "r") as ref:
        names = sorted(ref.keys())
        want = {n: ref[n][()] for n in names}
    rows = sum(len(a) for a in want.values())
    for path in others:
        with h5py.File(path, "r") as f:
            if sorted(f.keys()) != names:
                fail(f"{path}: datasets {sorted(f.keys())}, expected {names}")
            for n in names:
                got, exp = f[n][()], want[n]
                if got.shape != exp.shape:
                    fail(f"{path}:{n}: shape {got.shape}, expected {exp.shape}")
                if got.dtype.names != exp.dtype.names:
                    fail(f"{path}:{n}: fields {got.dtype.names}, expected {exp.dtype.names}")
                for field in exp.dtype.names:
                    a, b = got[field], exp[field]
                    if a.dtype != b.dtype:
                        fail(f"{path}:{n}.{field}: type {a.dtype}, expected {b.dtype}")
                    if a.dtype.kind == "f":
                        a, b = a.view(f"u{a.itemsize}"), b.view(f"u{b.itemsize}")
                    diff = np.flatnonzero(a != b)
                    if diff.size:
                        i = int(diff[0])
                        fail(f"{path}:{n}.{field}: {diff.size} values differ, first at row "
                             f"{i}: {got[i]} vs {exp[i]}")
    fields = ", ".join(f"{k} {v[0]}" for k, v in want[names[0]].dtype.fields.items())
    print(f"{len(names)} datasets, {rows} rows, fields {fields}, in {len(others) + 1} files")


# ---- runners ----------------------------------------------------------------------------

def run_process_map(fn, n, workers, chunksize):
    if chunksize is None:
        return process_map(fn, range(n), max_workers=workers, disable=True)
    return process_map(fn, range(n), max_workers=workers, chunksize=chunksize, disable=True)


def run_sleepers(peer, workers, reps):
    """Workloads g and h: wall times, the indices, and distinct worker pids per repetition."""
    runners = {
        "pool_map_c1": lambda: run_pool_map(sleeper, len(SLEEPS), workers, 1),
        "pool_map_default": lambda: run_pool_map(sleeper, len(SLEEPS), workers),
        "process_map_c1": lambda: run_process_map(sleeper, len(SLEEPS), workers, 1),
        "process_map_default": lambda: run_process_map(sleeper, len(SLEEPS), workers, None),
    }
    if peer not in runners:
        raise SystemExit(f"no peer {peer} for (g) and (h)")
    pids = []

    def once():
        out = runners[peer]()
        if [i for i, _ in out] != list(range(len(SLEEPS))):
            raise SystemExit("results out of order")
        ran = {pid for _, pid in out}
        if os.getpid() in ran:
            raise SystemExit("a task ran in the calling process")
        pids.append(len(ran))
        return [i for i, _ in out]

    times, out = timed(reps, once)
    return times, out, {"pids": pids}


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
    ap.add_argument("--check", nargs="+", metavar="FILE.h5")
    ap.add_argument("--peer")
    ap.add_argument("--workload")
    ap.add_argument("--workers", type=int)
    ap.add_argument("--params")
    ap.add_argument("--sleeps", help="workloads g and h: milliseconds per task, comma-separated")
    args = ap.parse_args()
    if args.check:
        check_h5(args.check)
        return
    if None in (args.peer, args.workload, args.workers, args.params):
        ap.error("--peer, --workload, --workers and --params are required")
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
    elif args.workload in ("g", "h"):
        if not args.sleeps:
            raise SystemExit("workloads g and h need --sleeps")
        SLEEPS[:] = [int(ms) / 1000.0 for ms in args.sleeps.split(",")]
        times, out, extra = run_sleepers(peer, w, P["reps"])
    elif args.workload == "f":
        times, rows, extra = run_t2(peer, w)
        out = [rows]
        # Reap the tracker now, so that nothing of this peer outlives it.
        resource_tracker._resource_tracker._stop()
    else:
        raise SystemExit(f"no workload {args.workload}")
    extra.update(CPU)
    print(json.dumps({"times": times, "checksum": float(sum(out)), "extra": extra}))


if __name__ == "__main__":
    main()
