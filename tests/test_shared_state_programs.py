"""A multiprocessing program using shared state runs unchanged on fiber_core."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

PROGRAM = """
    import sys

    if sys.argv[1] == "fiber":
        import fiber_core as multiprocessing
    else:
        import multiprocessing


    def work(rank, counter, totals, lock, event, barrier, tasks, shared):
        event.wait(30)
        for _ in range(20):
            with counter.get_lock():
                counter.value += 1
        with lock:
            totals[rank] = rank * 10
        barrier.wait(30)
        while True:
            item = tasks.get(timeout=30)
            tasks.task_done()
            if item is None:
                break
            shared[item] = item * item


    if __name__ == "__main__":
        if sys.argv[1] != "fiber":
            multiprocessing.set_start_method("spawn")
        counter = multiprocessing.Value("i", 0)
        totals = multiprocessing.Array("d", 3)
        lock, event = multiprocessing.Lock(), multiprocessing.Event()
        barrier, tasks = multiprocessing.Barrier(3), multiprocessing.JoinableQueue()
        with multiprocessing.Manager() as manager:
            shared = manager.dict()
            processes = [multiprocessing.Process(target=work, args=(
                rank, counter, totals, lock, event, barrier, tasks, shared))
                for rank in range(3)]
            for p in processes:
                p.start()
            event.set()
            for item in range(6):
                tasks.put(item)
            for _ in processes:
                tasks.put(None)
            tasks.join()
            for p in processes:
                p.join()
            print(counter.value, list(totals), sorted(shared.items()))
            try:
                lock.release()
            except ValueError as error:
                print("ValueError:", error)
            print([p.exitcode for p in processes])
"""


def test_shared_state_program_matches_multiprocessing(tmp_path: Path) -> None:
    script = tmp_path / "program.py"
    script.write_text(textwrap.dedent(PROGRAM))
    outputs = [subprocess.run([sys.executable, str(script), which], cwd=tmp_path,
                              capture_output=True, text=True, timeout=90)
               for which in ("multiprocessing", "fiber")]
    for result in outputs:
        assert result.returncode == 0, result.stderr
    assert outputs[0].stdout == outputs[1].stdout
    assert outputs[1].stdout.startswith("60 [0.0, 10.0, 20.0] [(0, 0), (1, 1), (2, 4)")
