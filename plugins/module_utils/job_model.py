#!/usr/bin/python3
"""The job model of scanfleet: one nmap process over one shard on a scanner host, its records, and its words.

Used on the scanner host by the scanfleet.fleet.scan_job module, and on the controller as ``scanfleet.job_model``
(a symlink to this file) by ``scanfleet.jobs`` (the wait's progress and outcome rules) and the run state.
Standard library only, no Ansible imports: the scanner hosts have neither the scanfleet package nor Ansible's
controller side, and the same file is the supervisor that runs nmap.

* :data:`WORDS` is the one table of the words for a job's life: its *state* on the host, the *reason* its nmap
  ended, its *outcome* as the controller sees it, the *status* of its attempt in the run state, and the
  *action* the module took. Every other list of those words is derived from it.
* :func:`start_time` is the ``/proc/PID/stat`` reader: a PID is only ever signalled while its start time is
  the one recorded when it was started, so a reused PID is never signalled.
* :class:`Job` reads and writes an attempt's directory (``BASE/RUN_ID/ATTEMPT_ID/``): :meth:`Job.status`,
  :func:`start`, :func:`stop`.
* Run as a script (``python3 -I job_model.py CONFIG_JSON``, see :func:`launch`), this file is the detached
  supervisor (:func:`supervise`): the module writes its own copy of this file into the attempt's directory
  (root-owned, not writable by the scanner user) and starts it with the host's Python, since the module's
  own files are gone once it returns.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import grp
import hashlib
import inspect
import json
import os
import pwd
import resource
import select
import signal
import socket
import subprocess
import sys
import termios
import time
from typing import Any, NamedTuple

# --------------------------------------------------------------------------------------------------
# The words of a job's life

STATE = "state"  # the job on its host now (scan_job's `state` of an attempt)
REASON = "reason"  # why its nmap ended (`reason` in exit.json)
STOP = "stop"  # a reason a stop may record (scan_job state=stopped reason=..., written to stop.json)
OUTCOME = "outcome"  # how the job ended, as the wait on the controller reports it (scan_wait's `outcome`)
STATUS = "status"  # the attempt's record in the run state (state.json), decided by the XML that came back
ACTION = "action"  # what scan_job did for the attempt


class Word(NamedTuple):
    word: str
    kinds: tuple[str, ...]  # the vocabularies (above) it belongs to
    meaning: str
    gives: str | None = None  # a state or a reason: the outcome it gives ("reason": the reason decides)
    ended: bool = False  # a state: nmap runs no more and the directory holds what it left
    host_lost: bool = False  # an outcome: the host gets no more work in this playbook run
    says: str = ""  # an outcome: the wait's line for it ({rc}: nmap's exit status)


WORDS: tuple[Word, ...] = (
    Word("running", (STATE,),
         "nmap runs on the host (checked by PID and start time), or its supervisor does while it starts nmap"),
    Word("exited", (STATE, OUTCOME),
         "nmap ended and why is recorded in exit.json; as an outcome: it ended in none of the ways that have a "
         "word of their own (an nmap error, a signal nobody here sent)",
         gives="reason", ended=True, host_lost=True, says="nmap exited with status {rc}"),
    Word("dead", (STATE, OUTCOME),
         "neither nmap nor its supervisor runs and there is no exit record (the host rebooted, the supervisor "
         "was killed)", gives="dead", ended=True, host_lost=True, says="the job vanished without an exit record"),
    Word("absent", (STATE,), "no directory for the attempt on the host", gives="missing"),
    Word("assigned", (STATUS,), "handed to a host, nothing recorded yet"),
    Word("finished", (REASON, OUTCOME, STATUS),
         "nmap ended on its own with exit status 0; as a status: its XML is complete with exit success, so the "
         "whole shard is done", gives="finished", says="nmap finished"),
    Word("partial", (STATUS,),
         "its XML is truncated or nmap ended with an error: the hosts it fully reports are done, the rest is "
         "planned again"),
    Word("failed", (STATUS,), "nothing usable came back: the whole shard is planned again"),
    Word("lost", (STATUS,), "the host went away before anything was fetched: the whole shard is planned again"),
    Word("error", (REASON,), "nmap ended with an exit status other than 0, or could not be started, or left an "
         "empty or truncated XML (a full disk: nmap exits 0 then; the detail says `disk full on HOST`)",
         gives="exited"),
    Word("signal", (REASON,), "nmap was ended by a signal that no timeout or stop of ours sent", gives="exited"),
    Word("timeout", (REASON, STOP, OUTCOME),
         "ended after the per-host timeout: by the supervisor (SIGTERM, SIGKILL after the grace period), or by "
         "the wait when the job outlived it", gives="timeout", host_lost=True, says="ended by the per-host timeout"),
    Word("stalled", (REASON, STOP, OUTCOME),
         "ended by the wait: nmap's progress did not move within the stall timeout", gives="stalled",
         host_lost=True, says="ended: no progress (stall timeout)"),
    Word("stopped", (REASON, STOP, OUTCOME, ACTION),
         "ended on request (scan_job state=stopped) for no more specific reason; as an action: a stop was sent",
         gives="stopped", host_lost=True, says="stopped"),
    Word("missing", (OUTCOME,), "the host has no such job (its state is absent)", host_lost=True,
         says="no such job on the host"),
    Word("unreachable", (OUTCOME,),
         "the host stopped answering while the job ran: nothing can be fetched, the attempt is lost",
         host_lost=True, says="the host stopped answering"),
    Word("started", (ACTION,), "the module started the job's supervisor"),
    Word("attached", (ACTION,), "the job was running already: the module attached to it, nothing was started"),
    Word("none", (ACTION,), "nothing was done: the job had ended already, or it did not run"),
)
TABLE = {w.word: w for w in WORDS}


def words(kind: str) -> tuple[str, ...]:
    """The words of one vocabulary, in table order."""
    return tuple(w.word for w in WORDS if kind in w.kinds)


STATES = words(STATE)
REASONS = words(REASON)
STOP_REASONS = words(STOP)
OUTCOMES = words(OUTCOME)
STATUSES = words(STATUS)
ACTIONS = words(ACTION)
ENDED_STATES = frozenset(w.word for w in WORDS if w.ended)
HOST_LOST_OUTCOMES = frozenset(w.word for w in WORDS if w.host_lost)


def job_outcome(status: dict[str, Any]) -> str | None:
    """The outcome of a job from its status on the host (:meth:`Job.status`), None while it runs."""
    state = TABLE.get(str(status.get("state")))
    if state is not None and STATE in state.kinds and state.gives != "reason":
        return state.gives
    reason = TABLE.get(str(status.get("reason")))
    if reason is None or REASON not in reason.kinds:
        return "exited"
    if reason.word == "finished" and status.get("rc") != 0:
        return "exited"
    return reason.gives


def outcome_line(outcome: str, rc: Any = None) -> str:
    """What the wait prints for an ended job."""
    return TABLE[outcome].says.format(rc=rc)


# --------------------------------------------------------------------------------------------------
# Processes: /proc/PID/stat


def proc_stat(pid: int) -> tuple[str, list[str]] | None:
    """(command name, the fields after it) of /proc/PID/stat, None when there is no such process. In the
    fields, [0] is the process state, [3] its session id, [19] its start time in clock ticks since boot."""
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            text = f.read()
    except (OSError, ValueError, TypeError):
        return None
    head, _, tail = text.rpartition(")")
    fields = tail.split()
    if len(fields) < 20:
        return None
    return head.partition("(")[2], fields


def start_time(pid: int) -> str | None:
    """Start time of process PID (clock ticks since boot), None when it does not exist or is a zombie."""
    stat = proc_stat(pid)
    if stat is None or stat[1][0] in ("Z", "X"):
        return None
    return stat[1][19]


def alive(pid: Any, ticks: Any) -> bool:
    """PID runs and is the process that was recorded with start time ``ticks``."""
    return bool(pid) and ticks is not None and start_time(pid) == ticks


# --------------------------------------------------------------------------------------------------
# Files

TAIL_BYTES = 6000
OUTPUTS = {"scan.xml": "out/scan.xml", "scan.nmap": "out/scan.nmap", "scan.gnmap": "out/scan.gnmap",
           "nmap.log": "nmap.log"}
SECRETS = "script-args"  # the --script-args-file: removed when nmap ends, never fetched
SOURCE = "job_model.py"  # this file, copied into the attempt's directory: the supervisor runs it
RESERVE = "exit.reserve"  # room for exit.json, taken by the supervisor when it starts (for a full disk)


def read_json(path: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_file(path: str, text: str, mode: int = 0o640, uid: int = -1, gid: int = -1) -> None:
    """Write ``text`` atomically (a temporary file beside it, fsync, rename), mode ``mode``, owner uid:gid
    (-1 keeps the writer's)."""
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".{name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
        if (uid, gid) != (-1, -1):
            os.fchown(f.fileno(), uid, gid)
        os.fchmod(f.fileno(), mode)
    os.replace(tmp, path)


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 of a file (hex), read in 1 MiB pieces: on the host and on the controller."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _tail(path: str) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - TAIL_BYTES))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _hosts_done(path: str) -> tuple[int | None, int | None]:
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


def _xml_complete(path: str) -> bool:
    """nmap wrote its XML to the end (the closing ``</nmaprun>``)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64))
            return b"</nmaprun>" in f.read()
    except OSError:
        return False


def disk_full(path: str) -> str | None:
    """Why the file system of ``path`` cannot take nmap's output, None when it has room. nmap does not check
    its writes to -oA files or stdout (it exits 0 with empty or truncated files on a full disk), so the
    supervisor asks the file system: no block or no inode left for the scanner user."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    if st.f_bavail == 0 or (st.f_files and st.f_favail == 0):
        return (f"disk full on {socket.gethostname()}: no space left on device for nmap's output in {path} "
                f"({st.f_bavail * st.f_frsize} bytes, {st.f_favail} inodes free)")
    return None


def output_problem(d: str) -> str | None:
    """Why the output of the ended nmap in job directory ``d`` is not usable although nmap may have exited 0:
    the disk is full, or its XML ends early. None when its XML is complete."""
    if _xml_complete(os.path.join(d, "out", "scan.xml")):
        return None
    return disk_full(os.path.join(d, "out")) or "nmap's XML output is incomplete (it ends before </nmaprun>)"


def _mkdir(path: str, uid: int, gid: int, mode: int) -> None:
    if not os.path.isdir(path):
        os.mkdir(path, mode)
    st = os.stat(path)
    if (st.st_uid, st.st_gid) != (uid, gid):
        os.chown(path, uid, gid)
    if st.st_mode & 0o7777 != mode:
        os.chmod(path, mode)


# --------------------------------------------------------------------------------------------------
# An attempt's directory


class JobError(Exception):
    """A job cannot be started; the message names the fix. ``info``: the attempt's status, when there is one."""

    def __init__(self, msg: str, info: dict[str, Any] | None = None) -> None:
        super().__init__(msg)
        self.info = info


class Job:
    """The directory ``BASE/RUN_ID/ATTEMPT_ID/`` of one attempt on its host: ``targets`` (the -iL file),
    ``job.json`` (the command line; written before the supervisor starts, so an attempt is never started
    twice), ``job_model.py`` (the supervisor), ``pid.json`` and ``exit.json`` (the supervisor's records),
    ``stop.json`` (why it was stopped), ``nmap.log`` and ``out/scan.*``."""

    def __init__(self, base: str, run_id: str, attempt_id: str) -> None:
        self.dir = os.path.join(base, run_id, attempt_id)
        self.id = attempt_id

    def path(self, *names: str) -> str:
        return os.path.join(self.dir, *names)

    def forget_secrets(self) -> None:
        """Remove the script arguments of an ended job (the supervisor does it, unless it died first)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(SECRETS))

    def status(self, checksums: bool = False) -> dict[str, Any]:
        """The attempt as the module returns it: state (see :data:`WORDS`), pid, rc, reason, started, ended,
        argv, versiondb, xml_bytes, hosts_done, tail (end of nmap.log), files (once ended, or with
        ``checksums``)."""
        info: dict[str, Any] = {"id": self.id, "dir": self.dir}
        job = read_json(self.path("job.json")) or {}
        info["argv"] = job.get("argv")
        info["versiondb"] = job.get("versiondb")
        exit_info = read_json(self.path("exit.json"))
        pid_info = read_json(self.path("pid.json")) or {}
        info["pid"] = pid_info.get("pid")
        if exit_info is not None:
            info.update(state="exited", rc=exit_info.get("rc"), reason=exit_info.get("reason"),
                        detail=exit_info.get("detail"), started=exit_info.get("started"),
                        ended=exit_info.get("ended"))
        elif not os.path.isdir(self.dir):
            info["state"] = "absent"
        elif alive(pid_info.get("pid"), pid_info.get("ticks")) or alive(
                pid_info.get("supervisor"), pid_info.get("supervisor_ticks")):
            info.update(state="running", started=pid_info.get("started"))
        elif not pid_info and alive(job.get("supervisor"), job.get("supervisor_ticks")):
            info.update(state="running", started=job.get("created"))  # starting
        else:
            info["state"] = "dead"
            full = disk_full(self.dir)  # the supervisor could not write its exit record
            if full:
                info["detail"] = full
        info["hosts_done"], info["xml_bytes"] = _hosts_done(self.path("out", "scan.xml"))
        info["tail"] = _tail(self.path("nmap.log"))
        if info["state"] in ENDED_STATES or checksums:
            files = {}
            for name, rel in OUTPUTS.items():
                path = self.path(rel)
                if os.path.isfile(path):
                    files[name] = {"path": path, "sha256": sha256_file(path), "bytes": os.path.getsize(path)}
            info["files"] = files
        return info


def command(job: Job, attempt: dict[str, Any], p: dict[str, Any]) -> tuple[list[str], str, list[str]]:
    """nmap's command line for ``attempt`` (``p``: the module's options), the probes file used ("" for nmap's
    own) and warnings."""
    warnings = []
    versiondb = p["versiondb"] or ""
    if versiondb and not os.path.isfile(versiondb):
        warnings.append(f"{job.id}: custom probes file {versiondb} not found; nmap's own nmap-service-probes is "
                        "used (custom matches are not available on this host)")
        versiondb = ""
    argv = [p["nmap"], *list(p["options"])]
    if attempt.get("ports"):  # a phase-2 job's own port list (two-phase scan: scanfleet.pairs)
        argv += ["-p", str(attempt["ports"])]
    if attempt.get("max_rate"):  # the attempt's share of the fleet's rate budget (scanfleet.rates)
        argv += ["--max-rate", str(int(attempt["max_rate"]))]
        if p.get("hold_rate"):  # send at that rate: nmap's congestion control reads unanswered probes as loss
            argv += ["--min-rate", str(int(attempt["max_rate"]))]
    if versiondb:
        argv += ["--versiondb", versiondb]
    argv += ["--stats-every", f"{p['stats_every']}s", "-iL", job.path("targets"), "-oA", job.path("out", "scan")]
    if p["script_args"]:
        argv += ["--script-args-file", job.path(SECRETS)]
    if attempt.get("ipv6"):
        argv.append("-6")
    return argv, versiondb, warnings


def start(job: Job, attempt: dict[str, Any], p: dict[str, Any], *,
          check_mode: bool = False) -> tuple[dict[str, Any], list[str]]:
    """Start the attempt's nmap under a detached supervisor (:func:`launch`), or attach to the job that exists:
    an attempt is never started twice. ``p``: the module's options (nmap, options, versiondb, stats_every,
    script_args, user, group, timeout, kill_grace). Returns its status with ``action``, and warnings."""
    current = job.status()
    if current["state"] != "absent" and os.path.exists(job.path("job.json")):
        current["action"] = "attached" if current["state"] == "running" else "none"
        return current, []
    try:
        uid = pwd.getpwnam(p["user"]).pw_uid
        gid = grp.getgrnam(p["group"]).gr_gid
    except KeyError as exc:
        raise JobError(f"scanner user/group {exc} does not exist on this host: run playbooks/provision.yml "
                       "first") from None
    if not os.access(p["nmap"], os.X_OK):
        raise JobError(f"{p['nmap']}: no nmap binary here; run playbooks/provision.yml first")
    lines = attempt.get("lines") or []
    if not lines:
        raise JobError(f"attempt {job.id}: no target lines")
    argv, versiondb, warnings = command(job, attempt, p)
    current = {"id": job.id, "dir": job.dir, "state": "running", "action": "started", "argv": argv,
               "versiondb": versiondb}
    if check_mode:
        return current, warnings
    _mkdir(os.path.dirname(job.dir), 0, gid, 0o750)
    _mkdir(job.dir, 0, gid, 0o750)
    _mkdir(job.path("out"), uid, gid, 0o750)
    write_file(job.path("targets"), "".join(line + "\n" for line in lines), 0o640, 0, gid)
    secrets = []
    if p["script_args"]:
        write_file(job.path(SECRETS), p["script_args"], 0o640, 0, gid)
        secrets.append(job.path(SECRETS))
    config = {"dir": job.dir, "argv": argv, "user": p["user"], "group": p["group"], "timeout": p["timeout"],
              "kill_grace": p["kill_grace"], "secrets": secrets}
    description = {"argv": argv, "versiondb": versiondb, "created": time.time(), "lines": len(lines)}
    # job.json first: from here on the attempt is never started twice
    write_file(job.path("job.json"), json.dumps(description), 0o640, 0, gid)
    pid = launch(job, config, gid)
    description.update(supervisor=pid, supervisor_ticks=start_time(pid))
    write_file(job.path("job.json"), json.dumps(description), 0o640, 0, gid)
    for _ in range(100):  # until nmap runs (pid.json) or the supervisor gave up (exit.json)
        if os.path.exists(job.path("pid.json")) or os.path.exists(job.path("exit.json")):
            break
        time.sleep(0.05)
    current.update(job.status())
    current["action"] = "started"
    if current["state"] == "exited" and current.get("reason") == "error" and current.get("rc") is None \
            and current.get("detail"):
        raise JobError(f"attempt {job.id}: {current['detail']}", current)
    return current, warnings


def launch(job: Job, config: dict[str, Any], gid: int) -> int:
    """Start the supervisor of ``job`` detached (its own session, stdio on /dev/null, cwd /): this file's own
    source, written into the job's directory (root:GID 0640), run by this Python in isolated mode. Its PID."""
    source = job.path(SOURCE)
    write_file(source, inspect.getsource(sys.modules[__name__]), 0o640, 0, gid)
    proc = subprocess.Popen([sys.executable, "-I", source, json.dumps(config)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True,
                            start_new_session=True, cwd="/")
    return proc.pid


def stop(job: Job, reason: str, grace: float, *, check_mode: bool = False,
         exit_wait: float = 10.0) -> dict[str, Any]:
    """End the running nmap of ``job`` by its recorded PID, checked against its start time (a reused PID is
    never signalled): SIGTERM and SIGCONT, SIGKILL after ``grace`` seconds. ``reason`` (one of
    :data:`STOP_REASONS`) goes to stop.json, for the supervisor's exit record; when the supervisor has not
    written that within ``exit_wait`` seconds, the stop writes it."""
    current = job.status()
    if current["state"] != "running":
        current["action"] = "none"
        return current
    current["action"] = "stopped"
    if check_mode:
        return current
    pid_info = read_json(job.path("pid.json")) or {}
    write_file(job.path("stop.json"), json.dumps({"reason": reason, "time": time.time()}), 0o640, 0, 0)
    pid, ticks = pid_info.get("pid"), pid_info.get("ticks")
    if alive(pid, ticks):
        os.kill(pid, signal.SIGTERM)
        os.kill(pid, signal.SIGCONT)  # a stopped (SIGSTOP) nmap must run to act on SIGTERM
        end = time.time() + grace
        while alive(pid, ticks) and time.time() < end:
            time.sleep(0.2)
        if alive(pid, ticks):
            os.kill(pid, signal.SIGKILL)
    end = time.time() + exit_wait
    while not os.path.exists(job.path("exit.json")) and time.time() < end:
        time.sleep(0.2)
    if not os.path.exists(job.path("exit.json")):  # the supervisor is gone too: record it ourselves
        write_file(job.path("exit.json"), json.dumps({"rc": None, "reason": reason, "started": pid_info.get(
            "started"), "ended": time.time()}), 0o640, 0, 0)
    current.update(job.status())
    current["action"] = "stopped"
    return current


# --------------------------------------------------------------------------------------------------
# The supervisor (this file run as a script)
#
# nmap >= 7.94 prints no --stats-every lines when it cannot open /dev/tty (nmap issue #3175: tty_init() then
# sets noninteractive, which keyWasPressed() checks before the stats schedule). So nmap gets a pseudo-terminal
# as its controlling terminal (its own session, TIOCSCTTY on the pty's slave as stdin) while its output goes
# to nmap.log. The supervisor holds the master side open for nmap's lifetime and drains it.


def _controlling_tty() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _drain(master: int) -> None:
    while select.select([master], [], [], 0)[0]:
        try:
            if not os.read(master, 4096):
                return
        except OSError:
            return


# nmap holds one descriptor per service probe in flight (the build's nmap_build_service_parallelism, 4,000 by
# default) and per NSE script socket: the usual soft limit of 1024 would make its connects fail (a connect scan
# raises its own limit, a SYN scan does not). The supervisor (root) starts nmap with the soft limit at the
# hard limit, and a hard limit below this floor raised to it.
OPEN_FILES_FLOOR = 16384


def raise_open_files(floor: int = OPEN_FILES_FLOOR) -> tuple[int, int]:
    """Raise this process's RLIMIT_NOFILE (inherited by the nmap it starts): the soft limit to the hard limit,
    both to ``floor`` when the hard limit is below it and the process may raise it (root). A limit that cannot
    be raised is left as it is. Returns the (soft, hard) limits now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < floor:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (floor, floor))
            soft, hard = floor, floor
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def supervise(cfg: dict[str, Any]) -> int:
    """Run nmap (``cfg``: dir, argv, user, group, timeout, kill_grace, secrets) and record it: pid.json once it
    runs, exit.json when it ends (rc and reason, see :data:`WORDS`). Returns the exit status of the script."""
    d = cfg["dir"]

    reserve = os.path.join(d, RESERVE)
    with contextlib.suppress(OSError), open(reserve, "wb") as f:  # room for the exit record, taken while
        f.write(b" " * 4096)  # the disk has some

    def record(name: str, data: dict[str, Any]) -> None:
        text = json.dumps(data)
        try:
            write_file(os.path.join(d, name), text)
        except OSError as exc:  # a full disk: the record goes into the room taken at the start
            if name != "exit.json" or exc.errno not in (errno.ENOSPC, errno.EDQUOT) or len(text) > 4096:
                raise
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(d, f".{name}.tmp"))
            with open(reserve, "r+b") as f:
                f.write(text.encode().ljust(4096))
                f.flush()
                os.fsync(f.fileno())
            os.rename(reserve, os.path.join(d, name))
            return
        if name == "exit.json":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(reserve)

    def forget() -> None:
        for path in cfg["secrets"]:
            with contextlib.suppress(OSError):
                os.unlink(path)

    started = time.time()
    open_files = raise_open_files()
    log = os.open(os.path.join(d, "nmap.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    master, slave = os.openpty()
    try:
        uid, gid = pwd.getpwnam(cfg["user"]).pw_uid, grp.getgrnam(cfg["group"]).gr_gid
        os.fchown(slave, uid, gid)
        proc = subprocess.Popen(cfg["argv"], cwd=os.path.join(d, "out"), stdin=slave, stdout=log,
                                stderr=subprocess.STDOUT, user=uid, group=gid, extra_groups=[], umask=0o027,
                                close_fds=True, start_new_session=True, preexec_fn=_controlling_tty)
    except (OSError, KeyError, subprocess.SubprocessError) as exc:
        forget()
        record("exit.json", {"rc": None, "reason": "error", "detail": f"cannot run nmap: {exc}",
                             "started": started, "ended": time.time()})
        return 1
    os.close(slave)
    try:
        record("pid.json", {"pid": proc.pid, "ticks": start_time(proc.pid), "supervisor": os.getpid(),
                            "supervisor_ticks": start_time(os.getpid()), "started": started,
                            "open_files": list(open_files)})
    except OSError as exc:  # a full disk: an nmap nobody could find by its PID must not run on
        proc.kill()
        proc.wait()
        forget()
        record("exit.json", {"rc": None, "reason": "error", "started": started, "ended": time.time(),
                             "detail": disk_full(os.path.join(d, "out")) or f"cannot record nmap's PID: {exc}"})
        return 1
    deadline = started + cfg["timeout"] if cfg["timeout"] > 0 else None
    reason = None
    kill_at = None
    while True:
        _drain(master)
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
    if reason is None:
        stop_info = read_json(os.path.join(d, "stop.json"))
        if stop_info is not None:
            reason = stop_info.get("reason", "stopped")
        elif rc == 0:
            reason = "finished"
        elif rc < 0:
            reason = "signal"
        else:
            reason = "error"
    detail = None
    if reason in ("finished", "error"):
        detail = output_problem(d)
        if detail is not None:
            reason = "error"  # an empty or truncated output is never a finished job
    forget()  # after the disk was judged: removing the secrets frees blocks of a full disk
    record("exit.json", {"rc": rc, "reason": reason, "detail": detail, "started": started, "ended": time.time()})
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: job_model.py CONFIG_JSON (the supervisor of one scanfleet job)\n")
        return 2
    return supervise(json.loads(argv[0]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
