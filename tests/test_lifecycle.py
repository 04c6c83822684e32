"""Whole programs: nothing is left behind, multiprocessing programs run unchanged,
and strangers cannot talk to a run."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import List

import pytest

from fiber_core import transport
from fiber_core.hub import Hub
from fiber_core.peers import Peers


def start_script(tmp_path: Path, source: str, *args: str) -> subprocess.Popen:
    script = tmp_path / "program.py"
    script.write_text(textwrap.dedent(source))
    return subprocess.Popen([sys.executable, str(script), *args], cwd=tmp_path,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def wait_gone(pids: List[int], seconds: float) -> List[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.1)
    return [pid for pid in pids if alive(pid)]


TREE = """
    import os, sys, time
    import fiber_core

    def grandchild():
        time.sleep(120)

    def child(queue):
        p = fiber_core.Process(target=grandchild)
        p.start()
        queue.put(p.pid)
        time.sleep(120)

    if __name__ == "__main__":
        queue = fiber_core.Queue()
        p = fiber_core.Process(target=child, args=(queue,), daemon=True)
        p.start()
        print(p.pid, queue.get(timeout=60), flush=True)
        sys.stdin.readline()  # the test has seen both processes alive
        if sys.argv[1] == "raise":
            raise RuntimeError("the master fails")
        if sys.argv[1] == "wait":
            time.sleep(120)
"""


@pytest.mark.parametrize("ending", ["exit", "raise", "sigkill"])
def test_no_process_left_behind(tmp_path: Path, ending: str) -> None:
    master = start_script(tmp_path, TREE, "wait" if ending == "sigkill" else ending)
    assert master.stdout is not None
    pids = [int(pid) for pid in master.stdout.readline().split()]
    assert len(pids) == 2 and all(alive(pid) for pid in pids)
    assert master.stdin is not None
    master.stdin.write("go\n")
    master.stdin.flush()
    if ending == "sigkill":
        master.send_signal(signal.SIGKILL)
    master.wait(60)
    assert wait_gone(pids, 20) == []


def test_non_daemon_children_are_waited_for(tmp_path: Path) -> None:
    master = start_script(tmp_path, """
        import time
        import fiber_core

        def slow():
            time.sleep(1)
            open("done", "w").close()

        if __name__ == "__main__":
            fiber_core.Process(target=slow).start()
    """)
    assert master.wait(60) == 0
    assert (tmp_path / "done").exists()


MULTIPROCESSING_PROGRAM = """
    import sys
    if sys.argv[1] == "fiber":
        import fiber_core as multiprocessing
    else:
        import multiprocessing
        multiprocessing.set_start_method("spawn", force=True)

    def square(x, queue):
        queue.put(x * x)

    def pong(conn):
        conn.send(conn.recv().upper())
        conn.close()

    if __name__ == "__main__":
        multiprocessing.freeze_support()
        queue = multiprocessing.Queue()
        workers = [multiprocessing.Process(target=square, args=(i, queue)) for i in range(4)]
        for w in workers:
            w.start()
        print(sorted(queue.get() for _ in workers))
        for w in workers:
            w.join()
        print([w.exitcode for w in workers])
        a, b = multiprocessing.Pipe()
        p = multiprocessing.Process(target=pong, args=(b,))
        p.start()
        b.close()
        a.send("hello")
        print(a.recv())
        p.join()
        try:
            a.recv()
        except EOFError:
            print("EOF")
        print(multiprocessing.current_process().name, multiprocessing.cpu_count() > 0)
"""


def test_multiprocessing_program_runs_unchanged(tmp_path: Path) -> None:
    outputs = []
    for flavour in ("fiber", "multiprocessing"):
        program = start_script(tmp_path, MULTIPROCESSING_PROGRAM, flavour)
        out, err = program.communicate(timeout=120)
        assert program.returncode == 0, err
        outputs.append(out)
    assert outputs[0] == outputs[1]
    assert "[0, 1, 4, 9]" in outputs[0] and "HELLO" in outputs[0]


def test_exception_in_child_prints_traceback_to_stderr(tmp_path: Path) -> None:
    program = start_script(tmp_path, """
        import fiber_core

        def fail():
            raise KeyError("missing thing")

        if __name__ == "__main__":
            p = fiber_core.Process(target=fail)
            p.start()
            p.join()
            print(p.exitcode)
    """)
    out, err = program.communicate(timeout=60)
    assert out.strip() == "1"
    assert "Process Process-1:" in err and "KeyError: 'missing thing'" in err
    assert "Traceback" in err


def test_secret_is_not_on_the_command_line(tmp_path: Path) -> None:
    program = start_script(tmp_path, """
        import time, fiber_core
        from fiber_core import context

        if __name__ == "__main__":
            p = fiber_core.Process(target=time.sleep, args=(30,))
            p.start()
            print(p.pid, context.runtime().secret, flush=True)
            time.sleep(2)
            p.kill()
    """)
    assert program.stdout is not None
    pid, secret = program.stdout.readline().split()
    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
        assert secret.encode() not in cmdline.read()
    program.communicate(timeout=60)


@pytest.mark.parametrize("encrypt", [False, True])
def test_stranger_without_the_secret_is_refused(encrypt: bool) -> None:
    """PLAIN on loopback, CURVE (the default between hosts, forced here) otherwise."""
    secret = transport.new_secret()
    hub = Hub("127.0.0.1", secret, heartbeat=0.2, peer_timeout=1.0, encrypt=encrypt)
    assert hub.address.startswith(transport.CURVE_SCHEME) == encrypt
    calls = []
    hub.handle(b"echo", lambda request: (calls.append(request),
                                          hub.reply(request, *request.args)))
    friend, stranger = Peers(secret, 0.2, 1.0), Peers(transport.new_secret(), 0.2, 1.0)
    try:
        assert friend.get(hub.address).request(b"echo", b"x", timeout=5)[0].bytes == b"x"
        with pytest.raises((TimeoutError, ConnectionError)):
            stranger.get(hub.address).request(b"echo", timeout=1.5)
        assert len(calls) == 1
    finally:
        friend.close()
        stranger.close()
        hub.close()
