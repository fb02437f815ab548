"""The real action plugin scanfleet.fleet.scan_wait, run by ansible-playbook over SSH to a host that accepts the
TCP connection and never says a word (as a frozen VM behind its open port does): with ``lost_after: 3`` and an SSH
connect timeout of 60 s, the wait returns ``unreachable`` ("no answer for N s") within lost_after and a margin, and
the play ends (the stuck call is abandoned in its thread; the worker process does not wait for it).

The silent host is a listener on loopback in the test's own process, closed at the end; no scan is run. Nothing of the
play may be left in its session afterwards but the abandoned ssh client, which ends with its connection.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from scanfleet.job_model import proc_stat

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

PLAYBOOK = """
- hosts: all
  gather_facts: false
  tasks:
    - name: Wait for a job on a host that never answers
      scanfleet.fleet.scan_wait:
        run_id: r1
        base_dir: {base}
        attempts: [{{id: 001-silent, size: 1}}]
        poll: 1
        lost_after: 3
      register: wait
    - name: Show the result
      ansible.builtin.copy:
        content: "{{{{ wait | to_json }}}}"
        dest: {out}
        mode: "0600"
      delegate_to: localhost
"""


def session(sid: int) -> list[tuple[int, str]]:
    """(PID, command name) of the processes in session ``sid``."""
    found = []
    for entry in Path("/proc").iterdir():
        stat = proc_stat(int(entry.name)) if entry.name.isdigit() else None
        if stat is not None and int(stat[1][3]) == sid:
            found.append((int(entry.name), stat[0]))
    return found


def test_the_real_wait_returns_unreachable_within_lost_after_when_ssh_hangs(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:  # accept and hold every connection, never sending a byte
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    out = tmp_path / "wait.json"
    (tmp_path / "pb.yml").write_text(PLAYBOOK.format(base=tmp_path / "runs", out=out), encoding="utf-8")
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp_path / "cp"), "ANSIBLE_HOST_KEY_CHECKING": "false"}
    env.setdefault("ANSIBLE_LOCAL_TEMP", str(tmp_path / "tmp"))
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(f"silent ansible_host=127.0.0.1 ansible_port={listener.getsockname()[1]} "
                         "ansible_connection=ssh ansible_ssh_timeout=60 ansible_python_interpreter=/usr/bin/python3\n",
                         encoding="utf-8")
    began = time.monotonic()
    try:
        proc = subprocess.Popen([str(BIN / "ansible-playbook"), "-i", str(inventory), str(tmp_path / "pb.yml")],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        try:
            stdout, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()  # by its PID
            proc.communicate()
            raise
        took = time.monotonic() - began
        time.sleep(1)
        # nothing of the play is left but the abandoned ssh client (it ends with its connection, below)
        left = [p for p in session(proc.pid) if p[1] != "ssh"]
    finally:
        stop.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        listener.close()
    assert proc.returncode == 0, stdout
    assert left == [], left
    result = json.loads(out.read_text(encoding="utf-8"))
    assert [o["outcome"] for o in result["outcomes"]] == ["unreachable"] and result["lost"]
    assert result["outcomes"][0]["detail"].startswith("no answer for 3 s")
    assert result["fetch"] == []
    assert took < 3 + 15, took  # lost_after, and Ansible's own start-up and the second task
    assert "the host is lost (no answer for 3 s)" in stdout
