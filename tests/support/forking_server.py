"""One deepdraft server per probe, each in its own process under resource limits, without paying for
the server's imports every time.

Run as a script, this process imports the server and the document readers once, then answers
requests on stdin, one JSON object a line:

* ``{"home": DIR, "token": T}`` forks a server whose workspace is DIR: the child lowers its limits
  (`RLIMIT_AS`, `RLIMIT_CPU`, given on the command line) and serves on a loopback socket bound here
  before the fork, so it accepts connections at once. Answer: ``{"pid": ..., "port": ...}``.
* ``{"stop": PID}`` asks that server to stop (SIGTERM: uvicorn finishes what is under way, then
  ends by the same signal), kills it if it has not stopped within `STOP_GRACE_S`, and reaps it.
  Answer: ``{"pid", "exit", "clean", "peak_rss_kb", "cpu_s"}`` — the child's own figures from
  ``wait4``; `exit` is negative for the signal that ended it (SIGXCPU at the CPU limit), and
  `clean` says it was alive when asked and stopped as asked.

Why fork: a fresh interpreter spends seconds importing FastAPI, the parsers and deepdraft before it
can take an upload, several times what most probes take; a forked child starts with all of that in
memory. Its peak RSS therefore includes those imports (as a fresh server's would).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import sys
import time

STOP_GRACE_S = 30.0


def main() -> None:
    address_space, cpu_seconds = int(sys.argv[1]), int(sys.argv[2])
    # Imported here, before any fork, so that each child has them already.
    import docx  # noqa: F401
    import lxml.html  # noqa: F401
    import openpyxl  # noqa: F401
    import pptx  # noqa: F401
    import pypdf  # noqa: F401
    import trafilatura  # noqa: F401
    import uvicorn

    from deepdraft.config import load_settings
    from deepdraft.server.app import create_app

    def serve(home: str, token: str, listener: socket.socket) -> None:
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
        os.environ["DEEPDRAFT_HOME"] = home
        app = create_app(load_settings(), token=token, workers=1)
        config = uvicorn.Config(app, log_level="warning", lifespan="on")
        uvicorn.Server(config).run(sockets=[listener])

    for line in sys.stdin:
        request = json.loads(line)
        if "home" in request:
            listener = socket.socket()
            listener.bind(("127.0.0.1", 0))
            listener.listen(16)
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    serve(request["home"], request["token"], listener)
                except BaseException:  # the parent sees the traceback on stderr and the exit code
                    import traceback

                    traceback.print_exc()
                    code = 1
                finally:
                    sys.stderr.flush()
                    os._exit(code)
            port = listener.getsockname()[1]
            listener.close()
            answer: dict[str, object] = {"pid": pid, "port": port}
        else:
            answer = _stop(int(request["stop"]))
        print(json.dumps(answer), flush=True)


def _stop(pid: int) -> dict[str, object]:
    done, status, usage = os.wait4(pid, os.WNOHANG)
    alive = not done
    if alive:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while not done and time.monotonic() < deadline:
            time.sleep(0.05)
            done, status, usage = os.wait4(pid, os.WNOHANG)
        if not done:
            os.kill(pid, signal.SIGKILL)
            done, status, usage = os.wait4(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return {
        "pid": pid,
        "exit": code,
        "clean": alive and code in (0, -signal.SIGTERM),
        "peak_rss_kb": usage.ru_maxrss,
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
    }


if __name__ == "__main__":
    main()
