#!/usr/bin/python
"""Runs on a scanner host: start, watch and stop the detached nmap jobs of a scanfleet run.

Self-contained (scanner hosts do not have the scanfleet package): it manages processes and files on the
host; every decision about shards, resume and reassignment is made on the controller by scanfleet.run.
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: scanfleet_scan_job
short_description: Start, watch and stop detached nmap jobs on a scanner host
description:
  - "Each attempt is one nmap process over one shard, in its own directory
    O(base_dir)/RUN_ID/ATTEMPT_ID/: the C(-iL) file C(targets), the job description C(job.json), the
    supervisor's C(pid.json) and C(exit.json), nmap's stdout/stderr C(nmap.log) (the C(--stats-every) lines)
    and, in C(out/), nmap's C(-oA) outputs C(scan.xml), C(scan.nmap), C(scan.gnmap)."
  - "O(state=started): starts a detached supervisor (its own session, no controlling terminal, stdio on
    /dev/null) that runs nmap as O(user):O(group) (no supplementary groups, umask 027), records nmap's PID
    with its start time in C(pid.json), ends nmap after O(timeout) seconds (SIGTERM, SIGKILL after
    O(kill_grace)), and writes C(exit.json) when nmap ends. The SSH connection is not held: the module
    returns as soon as nmap runs. An attempt that already has a job is never started again: a running
    job is attached to, a finished one is reported (a re-run resumes instead of rescanning), and a
    directory whose job vanished without an exit record is reported C(dead) for the controller to salvage."
  - "O(state=status): reports every attempt (running, exited, dead, absent) with the tail of nmap.log,
    the size of the XML, the number of hosts it holds, and, once ended, the sha256 of every output."
  - "O(state=stopped): ends the running nmap of each attempt by its recorded PID (checked against the
    process start time, so a reused PID is never signalled): SIGTERM and SIGCONT, SIGKILL after
    O(kill_grace) seconds. The reason is recorded in C(exit.json)."
  - Directories are created root:O(group) mode 0750 (C(out/) owned by O(user)); nothing is world-readable.
options:
  state:
    description: "What to do with the attempts."
    type: str
    choices: [started, status, stopped]
    default: status
  base_dir:
    description: "Root of the run directories on the host."
    type: path
    required: true
  run_id:
    description: "Run id (a directory name)."
    type: str
    required: true
  attempts:
    description:
      - "Attempts: C(id) (directory name), and for O(state=started) C(lines) (the -iL lines) and C(ipv6)
        (adds C(-6))."
    type: list
    elements: dict
    required: true
  nmap:
    description: "The nmap binary (O(state=started))."
    type: path
    default: /opt/scanfleet/nmap-current/bin/nmap
  options:
    description: "nmap options before the ones the module adds: C(--versiondb), C(--stats-every), C(-iL),
      C(-oA), C(-6)."
    type: list
    elements: str
    default: []
  versiondb:
    description: "Probes file for C(--versiondb). When it does not exist on the host, nmap's own file is used
      and a warning is given."
    type: path
    default: ""
  stats_every:
    description: "Seconds between nmap's progress lines (C(--stats-every))."
    type: int
    default: 10
  user:
    description: "Unprivileged user nmap runs as."
    type: str
    default: scanfleet
  group:
    description: "Its group (owns the nmap binary)."
    type: str
    default: scanfleet
  timeout:
    description: "Seconds after which the supervisor ends nmap; 0 for none."
    type: int
    default: 0
  kill_grace:
    description: "Seconds between SIGTERM and SIGKILL."
    type: int
    default: 10
  script_args:
    description:
      - "NSE script arguments (O(state=started)), in the syntax of nmap's C(--script-args-file) (the
        C(scanfleet_script_args) filter renders them from a mapping). Written to C(script-args) in the
        attempt's directory (root:O(group) mode 0640) and passed with C(--script-args-file), so the values are
        on no command line; the supervisor removes the file when nmap ends. Never logged (C(no_log))."
    type: str
    default: ""
  reason:
    description: "Why the jobs are stopped (O(state=stopped)), recorded in C(exit.json)."
    type: str
    choices: [stopped, stalled, timeout]
    default: stopped
author: scanfleet
"""

EXAMPLES = r"""
- name: Start the shard of this host
  scanfleet_scan_job:
    state: started
    base_dir: /var/lib/scanfleet/runs
    run_id: demo
    attempts:
      - id: 001-scanner1
        lines: ["10.77.0.101", "10.77.0.102/31"]
    options: ["-sS", "-sV", "-T4", "-p", "1-1024", "--privileged"]
    versiondb: /opt/scanfleet/probes/current/nmap-service-probes
    timeout: 14400
  become: true
"""

RETURN = r"""
attempts:
  description: "Per attempt: id, state (running, exited, dead, absent), action (started, attached, none,
    stopped), pid, rc, reason (finished, error, signal, timeout, stopped), started, ended, argv, versiondb
    (empty: nmap's own file), xml_bytes, hosts_done, tail (end of nmap.log), files (name -> path, sha256,
    bytes; once ended)."
  type: list
  elements: dict
  returned: always
"""

import contextlib
import grp
import hashlib
import json
import os
import pwd
import re
import signal
import subprocess
import sys
import time

from ansible.module_utils.basic import AnsibleModule

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
TAIL_BYTES = 6000
OUTPUTS = {"scan.xml": "out/scan.xml", "scan.nmap": "out/scan.nmap", "scan.gnmap": "out/scan.gnmap",
           "nmap.log": "nmap.log"}
SECRETS = "script-args"  # the --script-args-file: removed when nmap ends, never fetched

# The detached supervisor, run as `python3 -c SUPERVISOR CONFIG_JSON` in its own session.
#
# nmap >= 7.94 prints no --stats-every lines when it cannot open /dev/tty (nmap issue #3175: tty_init() then
# sets noninteractive, which keyWasPressed() checks before the stats schedule). So nmap gets a pseudo-terminal
# as its controlling terminal (its own session, TIOCSCTTY on the pty's slave as stdin) while its output goes
# to nmap.log. The supervisor holds the master side open for nmap's lifetime and drains it.
SUPERVISOR = r'''
import fcntl, grp, json, os, pwd, select, signal, subprocess, sys, termios, time
cfg = json.loads(sys.argv[1])
d = cfg["dir"]
def ticks(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except OSError:
        return None
def put(name, data):
    tmp = os.path.join(d, "." + name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(d, name))
def controlling_tty():
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
def forget():
    for path in cfg["secrets"]:
        try:
            os.unlink(path)
        except OSError:
            pass
started = time.time()
log = os.open(os.path.join(d, "nmap.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
master, slave = os.openpty()
os.fchown(slave, pwd.getpwnam(cfg["user"]).pw_uid, grp.getgrnam(cfg["group"]).gr_gid)
try:
    proc = subprocess.Popen(cfg["argv"], cwd=os.path.join(d, "out"), stdin=slave, stdout=log,
                            stderr=subprocess.STDOUT, user=cfg["user"], group=cfg["group"], extra_groups=[],
                            umask=0o027, close_fds=True, start_new_session=True, preexec_fn=controlling_tty)
except (OSError, subprocess.SubprocessError) as exc:
    forget()
    put("exit.json", {"rc": None, "reason": "error", "detail": "cannot run nmap: %s" % exc,
                      "started": started, "ended": time.time()})
    sys.exit(1)
os.close(slave)
put("pid.json", {"pid": proc.pid, "ticks": ticks(proc.pid), "supervisor": os.getpid(),
                 "supervisor_ticks": ticks(os.getpid()), "started": started})
def drain():
    while select.select([master], [], [], 0)[0]:
        try:
            if not os.read(master, 4096):
                return
        except OSError:
            return
deadline = started + cfg["timeout"] if cfg["timeout"] > 0 else None
reason = None
kill_at = None
while True:
    drain()
    try:
        rc = proc.wait(timeout=1.0)
        break
    except subprocess.TimeoutExpired:
        now = time.time()
        if deadline is not None and reason is None and now > deadline:
            reason = "timeout"
            proc.send_signal(signal.SIGTERM)
            proc.send_signal(signal.SIGCONT)
            kill_at = now + cfg["kill_grace"]
        elif kill_at is not None and now > kill_at:
            proc.kill()
            kill_at = None
forget()
if reason is None:
    if os.path.exists(os.path.join(d, "stop.json")):
        with open(os.path.join(d, "stop.json")) as f:
            reason = json.load(f).get("reason", "stopped")
    elif rc == 0:
        reason = "finished"
    elif rc < 0:
        reason = "signal"
    else:
        reason = "error"
put("exit.json", {"rc": rc, "reason": reason, "started": started, "ended": time.time()})
'''


def _ticks(pid):
    """Start time of process PID (clock ticks since boot), None when it does not exist or is a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    if fields[0] in ("Z", "X"):
        return None
    return fields[19]


def _alive(pid, ticks):
    return bool(pid) and ticks is not None and _ticks(pid) == ticks


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _tail(path):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - TAIL_BYTES))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _hosts_done(path):
    """Number of complete <host> elements in the XML written so far, and its size."""
    count, size, carry = 0, 0, b""
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                size += len(chunk)
                data = carry + chunk
                count += data.count(b"</host>")
                carry = data[-6:]
    except OSError:
        return None, None
    return count, size


class Job:
    def __init__(self, base, run_id, attempt_id):
        self.dir = os.path.join(base, run_id, attempt_id)
        self.id = attempt_id

    def path(self, *names):
        return os.path.join(self.dir, *names)

    def forget_secrets(self):
        """Remove the script arguments of an ended job (the supervisor does it, unless it died first)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(SECRETS))

    def status(self, checksums=False):
        info = {"id": self.id, "dir": self.dir}
        job = _read_json(self.path("job.json")) or {}
        info["argv"] = job.get("argv")
        info["versiondb"] = job.get("versiondb")
        exit_info = _read_json(self.path("exit.json"))
        pid_info = _read_json(self.path("pid.json")) or {}
        info["pid"] = pid_info.get("pid")
        if exit_info is not None:
            info.update(state="exited", rc=exit_info.get("rc"), reason=exit_info.get("reason"),
                        detail=exit_info.get("detail"), started=exit_info.get("started"),
                        ended=exit_info.get("ended"))
        elif not os.path.isdir(self.dir):
            info["state"] = "absent"
        elif _alive(pid_info.get("pid"), pid_info.get("ticks")) or _alive(
                pid_info.get("supervisor"), pid_info.get("supervisor_ticks")):
            info.update(state="running", started=pid_info.get("started"))
        elif not pid_info and _alive(job.get("supervisor"), job.get("supervisor_ticks")):
            info.update(state="running", started=job.get("created"))  # starting
        else:
            info["state"] = "dead"
        info["hosts_done"], info["xml_bytes"] = _hosts_done(self.path("out", "scan.xml"))
        info["tail"] = _tail(self.path("nmap.log"))
        if info["state"] in ("exited", "dead") or checksums:
            files = {}
            for name, rel in OUTPUTS.items():
                path = self.path(rel)
                if os.path.isfile(path):
                    files[name] = {"path": path, "sha256": _sha256(path), "bytes": os.path.getsize(path)}
            info["files"] = files
        return info


def _mkdir(path, uid, gid, mode):
    if not os.path.isdir(path):
        os.mkdir(path, mode)
    st = os.stat(path)
    if (st.st_uid, st.st_gid) != (uid, gid):
        os.chown(path, uid, gid)
    if st.st_mode & 0o7777 != mode:
        os.chmod(path, mode)


def _write(path, text, uid, gid, mode):
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chown(tmp, uid, gid)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def start(module, job, attempt, p, warnings):
    current = job.status()
    if current["state"] != "absent" and os.path.exists(job.path("job.json")):
        current["action"] = "attached" if current["state"] == "running" else "none"
        return current
    try:
        uid = pwd.getpwnam(p["user"]).pw_uid
        gid = grp.getgrnam(p["group"]).gr_gid
    except KeyError as exc:
        module.fail_json(msg=f"scanner user/group {exc} does not exist on this host: run playbooks/provision.yml "
                             "first")
    if not os.access(p["nmap"], os.X_OK):
        module.fail_json(msg=f"{p['nmap']}: no nmap binary here; run playbooks/provision.yml first")
    lines = attempt.get("lines") or []
    if not lines:
        module.fail_json(msg=f"attempt {job.id}: no target lines")
    versiondb = p["versiondb"] or ""
    if versiondb and not os.path.isfile(versiondb):
        warnings.append(f"{job.id}: custom probes file {versiondb} not found; nmap's own nmap-service-probes is "
                        "used (custom matches are not available on this host)")
        versiondb = ""
    argv = [p["nmap"], *list(p["options"])]
    if versiondb:
        argv += ["--versiondb", versiondb]
    argv += ["--stats-every", f"{p['stats_every']}s", "-iL", job.path("targets"), "-oA", job.path("out", "scan")]
    if p["script_args"]:
        argv += ["--script-args-file", job.path(SECRETS)]
    if attempt.get("ipv6"):
        argv.append("-6")
    current = {"id": job.id, "dir": job.dir, "state": "running", "action": "started", "argv": argv,
               "versiondb": versiondb}
    if module.check_mode:
        return current
    _mkdir(os.path.dirname(job.dir), 0, gid, 0o750)
    _mkdir(job.dir, 0, gid, 0o750)
    _mkdir(job.path("out"), uid, gid, 0o750)
    _write(job.path("targets"), "".join(line + "\n" for line in lines), 0, gid, 0o640)
    secrets = []
    if p["script_args"]:
        _write(job.path(SECRETS), p["script_args"], 0, gid, 0o640)
        secrets.append(job.path(SECRETS))
    config = {"dir": job.dir, "argv": argv, "user": p["user"], "group": p["group"], "timeout": p["timeout"],
              "kill_grace": p["kill_grace"], "secrets": secrets}
    description = {"argv": argv, "versiondb": versiondb, "created": time.time(), "lines": len(lines)}
    # job.json first: from here on the attempt is never started twice
    _write(job.path("job.json"), json.dumps(description), 0, gid, 0o640)
    proc = subprocess.Popen([sys.executable, "-c", SUPERVISOR, json.dumps(config)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True,
                            start_new_session=True, cwd="/")
    description.update(supervisor=proc.pid, supervisor_ticks=_ticks(proc.pid))
    _write(job.path("job.json"), json.dumps(description), 0, gid, 0o640)
    for _ in range(100):  # until nmap runs (pid.json) or the supervisor gave up (exit.json)
        if os.path.exists(job.path("pid.json")) or os.path.exists(job.path("exit.json")):
            break
        time.sleep(0.05)
    current.update(job.status())
    current["action"] = "started"
    if current["state"] == "exited" and current.get("reason") == "error" and current.get("detail"):
        module.fail_json(msg=f"attempt {job.id}: {current['detail']}", attempts=[current])
    return current


def stop(module, job, reason, grace):
    current = job.status()
    if current["state"] != "running":
        current["action"] = "none"
        return current
    current["action"] = "stopped"
    if module.check_mode:
        return current
    pid_info = _read_json(job.path("pid.json")) or {}
    _write(job.path("stop.json"), json.dumps({"reason": reason, "time": time.time()}), 0, 0, 0o640)
    pid, ticks = pid_info.get("pid"), pid_info.get("ticks")
    if _alive(pid, ticks):
        os.kill(pid, signal.SIGTERM)
        os.kill(pid, signal.SIGCONT)  # a stopped (SIGSTOP) nmap must run to act on SIGTERM
        end = time.time() + grace
        while _alive(pid, ticks) and time.time() < end:
            time.sleep(0.2)
        if _alive(pid, ticks):
            os.kill(pid, signal.SIGKILL)
    end = time.time() + 10
    while not os.path.exists(job.path("exit.json")) and time.time() < end:
        time.sleep(0.2)
    if not os.path.exists(job.path("exit.json")):  # the supervisor is gone too: record it ourselves
        _write(job.path("exit.json"), json.dumps({"rc": None, "reason": reason, "started": pid_info.get("started"),
                                                  "ended": time.time()}), 0, 0, 0o640)
    current.update(job.status())
    current["action"] = "stopped"
    return current


def main():
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "str", "choices": ["started", "status", "stopped"], "default": "status"},
            "base_dir": {"type": "path", "required": True},
            "run_id": {"type": "str", "required": True},
            "attempts": {"type": "list", "elements": "dict", "required": True},
            "nmap": {"type": "path", "default": "/opt/scanfleet/nmap-current/bin/nmap"},
            "options": {"type": "list", "elements": "str", "default": []},
            "versiondb": {"type": "path", "default": ""},
            "stats_every": {"type": "int", "default": 10},
            "user": {"type": "str", "default": "scanfleet"},
            "group": {"type": "str", "default": "scanfleet"},
            "timeout": {"type": "int", "default": 0},
            "kill_grace": {"type": "int", "default": 10},
            "reason": {"type": "str", "default": "stopped", "choices": ["stopped", "stalled", "timeout"]},
            "script_args": {"type": "str", "default": "", "no_log": True},
        },
        supports_check_mode=True,
    )
    p = module.params
    if not NAME.match(p["run_id"]):
        module.fail_json(msg=f"run_id {p['run_id']!r} is not a plain directory name")
    results = []
    warnings = []
    changed = False
    for attempt in p["attempts"]:
        attempt_id = str(attempt.get("id", ""))
        if not NAME.match(attempt_id):
            module.fail_json(msg=f"attempt id {attempt_id!r} is not a plain directory name")
        job = Job(p["base_dir"], p["run_id"], attempt_id)
        if p["state"] == "started":
            info = start(module, job, attempt, p, warnings)
        elif p["state"] == "stopped":
            info = stop(module, job, p["reason"], p["kill_grace"])
        else:
            info = job.status()
        if info.get("state") in ("exited", "dead") and not module.check_mode:
            job.forget_secrets()
        changed = changed or info.get("action") in ("started", "stopped")
        results.append(info)
    for warning in warnings:
        module.warn(warning)
    module.exit_json(changed=changed, attempts=results)


if __name__ == "__main__":
    main()
