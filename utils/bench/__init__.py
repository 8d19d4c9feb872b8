"""Benchmarks (``python -m utils.bench.core|train_step|gpu|augment|voc_eval``,
and others) and their shared timer."""
import statistics
import time


def timeit(fns, repeats, warmup=1):
    """Run each callable ``warmup`` times, then ``repeats`` rounds, rotating
    the order every round (so that no contender always runs first). Returns
    ``{name: (median, min) seconds}``."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    times = {n: [] for n in names}
    for r in range(repeats):
        for n in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            fns[n]()
            times[n].append(time.perf_counter() - t0)
    return {n: (statistics.median(v), min(v)) for n, v in times.items()}
