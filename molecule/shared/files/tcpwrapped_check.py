#!/usr/bin/env python3
"""Show whether nmap honours the probes file's `tcpwrappedms` (run on a lab scanner host, as root).

Two listeners on the host's loopback accept and close without a byte: one at once, one after
--close-ms (between the patched DEFAULT_TCPWRAPPEDMS and the service wait). nmap -sV runs as the scanner
user with a probes file whose NULL probe says `tcpwrappedms 3000`, with --version-trace. A port that closes
on the NULL probe before tcpwrappedms is called tcpwrapped at once, with no probe sent. If the file's 3000
were honoured, the delayed port would be settled that way too (0 probes sent); with the patch (200 ms) nmap
goes on sending probes to it. (Both end up reported "tcpwrapped": a port that never sends a byte keeps
nmap's tcpwrap_possible flag to the end.) Prints one JSON line.
"""

import argparse
import json
import os
import pwd
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET


def closer(listener: socket.socket, delay: float) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        threading.Timer(delay, conn.close).start()


def listen(delay: float) -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    threading.Thread(target=closer, args=(sock, delay), daemon=True).start()
    return sock, sock.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nmap", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--close-ms", type=int, required=True)
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="set in nmap's environment (e.g. SCANFLEET_TCPWRAPPED_MS=1000)")
    args = parser.parse_args()

    share = os.path.realpath(os.path.join(os.path.dirname(args.nmap), "..", "share", "nmap"))
    with open(os.path.join(share, "nmap-service-probes"), encoding="latin-1") as stock_file:
        stock = stock_file.read()
    # The NULL probe's tcpwrappedms, explicit (stock says 3000 already).
    probes, count = re.subn(r"(?m)^tcpwrappedms \d+$", "tcpwrappedms 3000", stock, count=1)
    if count != 1:
        print("no tcpwrappedms line in the stock probes file", file=sys.stderr)
        return 1
    user = pwd.getpwnam(args.user)
    with tempfile.NamedTemporaryFile("w", suffix=".probes", delete=False, encoding="latin-1") as handle:
        handle.write(probes)
    os.chmod(handle.name, 0o644)
    with open(handle.name + ".xml", "w"):
        pass
    os.chown(handle.name + ".xml", user.pw_uid, user.pw_gid)

    quick, quick_port = listen(0.0)
    slow, slow_port = listen(args.close_ms / 1000)

    def drop() -> None:
        os.setgroups([])
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)

    start = time.monotonic()
    proc = subprocess.run(
        [args.nmap, "-sV", "--version-trace", "--versiondb", handle.name, "-Pn", "-n",
         "-p", f"{quick_port},{slow_port}", "-oX", handle.name + ".xml", "127.0.0.1"],
        capture_output=True, text=True, preexec_fn=drop, cwd="/", check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": user.pw_dir, **dict(item.split("=", 1) for item in args.env)},
    )
    seconds = round(time.monotonic() - start, 2)
    quick.close()
    slow.close()
    os.unlink(handle.name)
    if proc.returncode != 0:
        os.unlink(handle.name + ".xml")
        print(proc.stderr, file=sys.stderr)
        return 1
    with open(handle.name + ".xml") as xml_file:
        xml_text = xml_file.read()
    os.unlink(handle.name + ".xml")
    sent = {port: len(re.findall(rf"Service scan sending probe \S+ to 127\.0\.0\.1:{port} ", proc.stdout))
            for port in (quick_port, slow_port)}  # the NULL probe counts as one
    services = {}
    for port in ET.fromstring(xml_text).iter("port"):
        service = port.find("service")
        services[int(port.get("portid"))] = service.get("name") if service is not None else ""
    print(json.dumps({"immediate_close": services.get(quick_port), "immediate_probes_sent": sent[quick_port],
                      "close_after_ms": args.close_ms, "delayed_close": services.get(slow_port),
                      "delayed_probes_sent": sent[slow_port], "seconds": seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
