"""ansible-playbook runs forked from a process that has imported ansible-core once.

`ansible-playbook` is `from ansible.cli.playbook import main; main()`: the server imports that module once, then
for each request forks a child that takes the request's arguments, environment, working folder and output file
and calls that same `main()`. A run therefore pays for its playbook, not for importing ansible-core again.

The server is single-threaded (children are forked from it, never from the test process and its threads), and it
is started with the environment every test run shares (`base_env`); tests/lib/playbook.py sends a run here only
when its ANSIBLE_* settings, locale, HOME and Python variables are that environment's, and runs the command
otherwise (ansible-core reads its configuration when it is imported).

Protocol over a Unix socket, one connection per run: the client sends one JSON line {argv, env, cwd, output};
the child answers {"pid": n} when it starts and {"returncode": n, "cpu_s": seconds} when main() has returned and the
run's exit handlers have run (cpu_s: the CPU time of the run and its task workers).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import traceback

# The environment variables ansible-core reads when it is imported, besides ANSIBLE_*.
IMPORT_TIME_VARS = ("HOME", "LANG", "LC_ALL", "LC_CTYPE", "PYTHONPATH", "PYTHONHASHSEED", "TMPDIR", "PATH")


def same_import_env(env, base):
    """True when env sets what ansible-core reads at import time exactly as base does."""
    keys = {k for k in set(env) | set(base) if k.startswith("ANSIBLE_") or k in IMPORT_TIME_VARS}
    return all(env.get(k) == base.get(k) for k in keys)


def _read_line(conn):
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            raise EOFError("the client closed the connection")
        data += chunk
    return json.loads(data)


def _fresh_local_tmp():
    """The child's own ansible-local-<pid> folder, removed at its exit (the server's stays the server's)."""
    import atexit  # pylint: disable=import-outside-toplevel
    import tempfile  # pylint: disable=import-outside-toplevel

    from ansible import constants  # pylint: disable=import-outside-toplevel
    from ansible.config.manager import cleanup_tmp_file  # pylint: disable=import-outside-toplevel

    atexit.unregister(cleanup_tmp_file)
    parent = os.path.dirname(constants.DEFAULT_LOCAL_TMP)
    constants.DEFAULT_LOCAL_TMP = tempfile.mkdtemp(prefix="ansible-local-%s" % os.getpid(), dir=parent)
    atexit.register(cleanup_tmp_file, constants.DEFAULT_LOCAL_TMP, warn=True)


def _cpu_seconds():
    """CPU seconds of this run so far: its own and its finished task workers' (a forked child starts from zero)."""
    import resource  # pylint: disable=import-outside-toplevel

    own, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime


def _child(conn):
    """Become the run: its folder, environment, output and arguments, then ansible-playbook's main()."""
    import atexit  # pylint: disable=import-outside-toplevel

    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.setsid()  # the client ends the whole run (and its task workers) by process group on a timeout
    request = _read_line(conn)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    out = os.open(request["output"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    conn.sendall(json.dumps({"pid": os.getpid()}).encode() + b"\n")
    sys.argv = list(request["argv"])
    code = 0
    try:
        _fresh_local_tmp()
        from ansible.cli.playbook import main  # pylint: disable=import-outside-toplevel

        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # pylint: disable=broad-except  # reported in the run's output, like the command would
        traceback.print_exc()
        code = 250
    try:
        atexit._run_exitfuncs()  # pylint: disable=protected-access  # what interpreter exit runs, before the answer
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        conn.sendall(json.dumps({"returncode": code, "cpu_s": round(_cpu_seconds(), 3)}).encode() + b"\n")
        os._exit(code)  # pylint: disable=protected-access


# What ansible-playbook imports before main(), then the plain Python modules a render imports later (plugins and
# the collection's modules are imported by ansible-core's plugin loader in each run, as they would be).
PRELOAD = ("ansible.cli.playbook", "ansible.plugins.inventory", "ansible.plugins.strategy", "ansible.plugins.connection",
           "ansible.plugins.shell", "ansible.executor.task_executor", "ansible.executor.process.worker",
           "ansible.utils.encrypt", "ansible.utils.version", "ssl", "urllib.request", "http.client", "tomllib",
           "xml.etree.ElementTree", "xml.dom.minidom", "multiprocessing.shared_memory")


def serve(path):
    """Import ansible-core, listen on the socket path, fork one child per connection; never returns."""
    import gc  # pylint: disable=import-outside-toplevel
    import importlib  # pylint: disable=import-outside-toplevel

    for name in PRELOAD:
        importlib.import_module(name)
    # What the server imported lives as long as it does: frozen, the cyclic collector of each run (and of each task
    # worker the run forks) skips it instead of walking it, which would also copy its pages into that process.
    gc.freeze()
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(64)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # exit handlers remove the server's ansible-local folder
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        conn = server.accept()[0]
        pid = os.fork()
        if pid == 0:
            server.close()
            _child(conn)
        conn.close()
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass


if __name__ == "__main__":
    sys.path[0] = os.path.dirname(sys.executable)  # what the ansible-playbook script has first, not tests/lib
    serve(sys.argv[1])
