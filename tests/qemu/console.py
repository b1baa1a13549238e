#!/usr/bin/env python3
"""Drive a QEMU serial console from the host (standard library only).

run:    console.py run LOG TIMEOUT STEP... -- QEMU_COMMAND...
  Starts QEMU_COMMAND (its stdio is the guest's serial console: -nographic),
  appends everything it prints to LOG, and performs the STEPs in order:
    expect:REGEX   wait until REGEX matches console output that arrived after
                   the previous match (re.MULTILINE on the raw text)
    send:TEXT      type TEXT plus a newline
    sleep:SECONDS  wait (still logging)
    kill           SIGKILL QEMU (a power cut) and stop
    exit           wait for QEMU to exit by itself (guest power-off)
  The whole run (all steps) must finish within TIMEOUT seconds. Exit status:
  0 all steps done, 1 a step failed or timed out (QEMU is killed), 2 usage.
  Nothing is ever typed while U-Boot may be reading the console: only send
  after an `expect:` of the guest shell's prompt.

status: console.py status LOG INDEX CHECK...
  Takes the INDEX-th (0-based, negative counts from the end) line
  `FERRY-TEST: status {json}` of LOG and checks each CHECK `dotted.key=VALUE`
  (VALUE compared with the JSON value's compact JSON text, or with the plain
  string for strings: slots.b.version=1.1.0, boot.order=["b","a"],
  last=null). Prints every mismatch and exits 1 if there is one.
"""
import json
import os
import re
import select
import signal
import subprocess
import sys
import time


def run(argv):
    if "--" not in argv or len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    sep = argv.index("--")
    log_path, timeout, steps, cmd = argv[0], float(argv[1]), argv[2:sep], argv[sep + 1:]
    deadline = time.monotonic() + timeout
    log = open(log_path, "ab", buffering=0)
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    buf = b""   # output not yet consumed by an expect
    eof = False

    def pump(wait):
        nonlocal buf, eof
        if eof:
            return
        r, _, _ = select.select([fd], [], [], wait)
        if r:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return
            if not data:
                eof = True
                return
            log.write(data)
            buf += data

    def fail(msg):
        sys.stderr.write(f"console.py: {msg}\n")
        log.write(f"\n[console.py] FAILED: {msg}\n".encode())
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        return 1

    for step in steps:
        kind, _, arg = step.partition(":")
        if kind != "expect":
            log.write(f"\n[console.py] step {step}\n".encode())
        if kind == "expect":
            rx = re.compile(arg.encode(), re.MULTILINE)
            while True:
                m = rx.search(buf)
                if m:
                    buf = buf[m.end():]
                    break
                if eof:
                    return fail(f"QEMU exited (rc {proc.wait()}) before /{arg}/")
                left = deadline - time.monotonic()
                if left <= 0:
                    return fail(f"timed out waiting for /{arg}/")
                pump(min(left, 1.0))
        elif kind == "send":
            time.sleep(0.2)  # let the shell settle after its prompt
            try:
                proc.stdin.write(arg.encode() + b"\n")
                proc.stdin.flush()
            except BrokenPipeError:
                return fail(f"QEMU gone, cannot send {arg!r}")
        elif kind == "sleep":  # keep logging output meanwhile
            until = min(deadline, time.monotonic() + float(arg))
            while time.monotonic() < until and not eof:
                pump(max(0.0, min(until - time.monotonic(), 0.2)))
        elif kind == "kill":
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            log.write(b"\n[console.py] QEMU killed (SIGKILL)\n")
            return 0
        elif kind == "exit":
            while not eof:
                left = deadline - time.monotonic()
                if left <= 0:
                    return fail("timed out waiting for QEMU to exit")
                pump(min(left, 1.0))
            try:
                rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                return fail("QEMU closed its output but did not exit")
            if rc != 0:
                return fail(f"QEMU exited with status {rc}")
        else:
            return fail(f"unknown step {step!r}")
    # All steps done: QEMU may still be running (a step list need not end in exit).
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    return 0


def lookup(doc, dotted):
    for k in dotted.split("."):
        if isinstance(doc, list):
            doc = doc[int(k)]
        elif isinstance(doc, dict) and k in doc:
            doc = doc[k]
        else:
            raise KeyError(dotted)
    return doc


def status(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    log_path, index, checks = argv[0], int(argv[1]), argv[2:]
    text = open(log_path, "rb").read().decode(errors="replace")
    lines = re.findall(r"^FERRY-TEST: status (.*?)\r?$", text, re.MULTILINE)
    try:
        line = lines[index]
    except IndexError:
        print(f"FAIL: no status line #{index} in {log_path} ({len(lines)} found)")
        return 1
    try:
        doc = json.loads(line)
    except ValueError as e:
        print(f"FAIL: status line #{index} is not JSON ({e}): {line}")
        return 1
    bad = 0
    for c in checks:
        key, _, want = c.partition("=")
        try:
            got = lookup(doc, key)
        except (KeyError, IndexError, ValueError):
            got = "<missing>"
        got_s = got if isinstance(got, str) else json.dumps(got, separators=(",", ":"))
        if got_s != want:
            print(f"FAIL: status #{index}: {key} is {got_s}, expected {want}")
            bad = 1
    if bad:
        print(f"  status #{index}: {line}")
    return bad


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "run":
        sys.exit(run(sys.argv[2:]))
    if len(sys.argv) >= 2 and sys.argv[1] == "status":
        sys.exit(status(sys.argv[2:]))
    print(__doc__, file=sys.stderr)
    sys.exit(2)
