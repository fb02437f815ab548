#!/usr/bin/env python3
"""Time `nmap -sV` against a port that accepts connections and never speaks (on this host's loopback).

Run by roles/nmap_build (ansible.builtin.script) as root; nmap itself runs as the scanner user.
Prints one JSON line; exits 1 when nmap fails or takes longer than --max-seconds.
"""

import argparse
import json
import os
import pwd
import socket
import subprocess
import sys
import threading
import time


def serve_silently(listener: socket.socket, held: list) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        held.append(conn)  # keep it open, say nothing


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nmap", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--max-seconds", type=float, required=True)
    args = parser.parse_args()

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    held: list = []
    threading.Thread(target=serve_silently, args=(listener, held), daemon=True).start()

    user = pwd.getpwnam(args.user)

    def drop() -> None:
        os.setgroups([])
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)

    cmd = [args.nmap, "-sV", "-Pn", "-n", "-p", str(port), "-oX", "-", "127.0.0.1"]
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=drop, cwd="/", check=False,
                          env={"PATH": "/usr/bin:/bin", "HOME": user.pw_dir})
    seconds = round(time.monotonic() - start, 2)
    listener.close()
    for conn in held:
        conn.close()
    state = "open" if f'portid="{port}"><state state="open"' in proc.stdout else "not open"
    result = {"port": port, "seconds": seconds, "max_seconds": args.max_seconds, "rc": proc.returncode,
              "port_state": state, "user": args.user}
    print(json.dumps(result))
    if proc.returncode != 0:
        print(f"nmap failed as {args.user}: {proc.stderr.strip()}", file=sys.stderr)
        return 1
    if state != "open":
        print(f"nmap did not see the silent port {port} open: {proc.stdout[-500:]}", file=sys.stderr)
        return 1
    if seconds > args.max_seconds:
        print(f"-sV on a silent port took {seconds} s, more than {args.max_seconds} s: the wait-time "
              "patches are not in effect", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
