"""The job model on a host (plugins/module_utils/job_model.py, as scanfleet.job_model): start, attach, the
detached supervisor, timeout, stop, a dead supervisor and a reused PID, against real short-lived processes.

"nmap" here is a small script (FAKE_NMAP) that prints a Stats line and its ids, then writes its -oA outputs and
exits, fails, or sleeps (honouring SIGTERM or not), as its ``--mode`` option says. The job module runs as root
(``become``: it chowns the job's directories and the supervisor switches to the scanner user), so these tests
do too. Every process a test starts is ended by its PID in the teardown.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import resource
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from scanfleet import collect, job_model, jobs
from scanfleet import state as runstate
from scanfleet.targets import parse_targets, plan_targets

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the job module runs as root (become): it chowns the "
                                                          "job's directories and switches to the scanner user")

FAKE_NMAP = """\
#!/usr/bin/python3
import os, signal, sys, time
args = sys.argv[1:]
mode = args[args.index("--mode") + 1]
out = args[args.index("-oA") + 1]
print("Starting Nmap 7.95 (fake)", flush=True)
print("Stats: 0:00:01 elapsed; 0 hosts completed (1 up), 1 undergoing Service Scan", flush=True)
print("ids", os.getuid(), os.getgid(), sorted(os.getgroups()), "tty", os.isatty(0), flush=True)
if "--script-args-file" in args:
    with open(args[args.index("--script-args-file") + 1]) as f:
        print("script args", len(f.read()), "bytes", flush=True)
if mode == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if mode in ("sleep", "ignore-term"):
    with open(out + ".xml", "w") as f:
        f.write('<?xml version="1.0"?>\\n<nmaprun>\\n<host></host>\\n')
    time.sleep(120)
    sys.exit(0)
if mode == "fail":
    sys.exit(3)
if mode == "fill":  # a disk that fills up while nmap runs: nmap ignores its failed writes and exits 0
    time.sleep(0.5)
    try:
        with open(os.path.join(os.path.dirname(out), "ballast"), "wb") as f:
            while True:
                f.write(b"x" * 4096)
                f.flush()
    except OSError:
        pass
    for ext in ("xml", "nmap", "gnmap"):
        try:
            with open(out + "." + ext, "w") as f:
                f.write("<nmaprun>\\n" * 1000)
        except OSError:
            pass
    sys.exit(0)
for ext, text in (("xml", '<nmaprun>\\n<host></host>\\n<host></host>\\n</nmaprun>\\n'), ("nmap", "n\\n"),
                  ("gnmap", "g\\n")):
    with open(out + "." + ext, "w") as f:
        f.write(text)
print("Nmap done: 2 IP addresses (2 hosts up)", flush=True)
"""


@pytest.fixture
def place():
    """A directory every user can traverse (the scanner user runs the fake nmap from it), removed after."""
    root = Path(tempfile.mkdtemp(prefix="sf-jobs-", dir="/tmp"))
    root.chmod(0o755)
    nmap = root / "nmap"
    nmap.write_text(FAKE_NMAP)
    nmap.chmod(0o755)
    (root / "runs").mkdir(mode=0o755)  # the role makes it (root:scanfleet 0750)
    yield root
    subprocess.run(["rm", "-rf", "--one-file-system", str(root)], check=True)


@pytest.fixture
def ended():
    """Processes to end after the test: (pid, start time), and job directories whose nmap and supervisor are
    ended by the PIDs they recorded (checked against their start times, as the module does)."""
    procs: list[tuple[int, str | None]] = []
    jobs_seen: list[job_model.Job] = []
    yield procs, jobs_seen
    for job in jobs_seen:
        for name in ("pid.json", "job.json"):
            info = job_model.read_json(job.path(name)) or {}
            procs.append((info.get("pid"), info.get("ticks")))
            procs.append((info.get("supervisor"), info.get("supervisor_ticks")))
    for pid, ticks in procs:
        if job_model.alive(pid, ticks):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def me() -> tuple[str, str]:
    return pwd.getpwuid(os.geteuid()).pw_name, grp.getgrgid(os.getegid()).gr_name


def params(place: Path, mode: str, **changes) -> dict:
    user, group = me()
    return {"nmap": str(place / "nmap"), "options": ["--mode", mode], "versiondb": "", "stats_every": 1,
            "script_args": "", "user": user, "group": group, "timeout": 0, "kill_grace": 1, **changes}


def launch(place: Path, ended, mode: str, attempt_id: str = "001-s1", **changes) -> tuple[job_model.Job, dict]:
    job = job_model.Job(str(place / "runs"), "r1", attempt_id)
    ended[1].append(job)
    info, warnings = job_model.start(job, {"id": attempt_id, "lines": ["127.0.0.1"]}, params(place, mode, **changes))
    assert warnings == []
    return job, info


def wait_for(job: job_model.Job, state: str, seconds: float = 20) -> dict:
    end = time.monotonic() + seconds
    while True:
        status = job.status()
        if status["state"] == state or time.monotonic() > end:
            assert status["state"] == state, status
            return status
        time.sleep(0.1)


def wait_running(job: job_model.Job) -> dict:
    """Until nmap runs and has begun its XML (the fake has set its signal handling by then)."""
    end = time.monotonic() + 20
    while True:
        status = job.status()
        if (status["state"] == "running" and status["hosts_done"]) or time.monotonic() > end:
            assert status["state"] == "running" and status["hosts_done"] == 1, status
            return status
        time.sleep(0.1)


def test_a_job_starts_detached_is_attached_to_and_records_its_end(place, ended):
    job, info = launch(place, ended, "finish", script_args='"smbpassword"="x"')
    assert info["action"] == "started" and info["argv"][:3] == [str(place / "nmap"), "--mode", "finish"]
    assert info["argv"][-2:] == ["--script-args-file", job.path("script-args")]
    # the supervisor is this file, written by root into the job's directory, not writable by anyone else
    source = Path(job.path("job_model.py"))
    assert source.read_text() == Path(job_model.__file__).read_text()
    assert stat.S_IMODE(source.stat().st_mode) == 0o640 and source.stat().st_uid == 0
    described = json.loads(Path(job.path("job.json")).read_text())
    status = wait_for(job, "exited")
    assert (status["rc"], status["reason"], jobs.job_outcome(status)) == (0, "finished", "finished")
    assert status["hosts_done"] == 2 and "Nmap done" in status["tail"]
    assert "script args 17 bytes" in status["tail"] and "tty True" in status["tail"]  # a pty: --stats-every
    assert not os.path.exists(job.path("script-args"))  # forgotten when nmap ended
    assert sorted(status["files"]) == ["nmap.log", "scan.gnmap", "scan.nmap", "scan.xml"]
    assert status["files"]["scan.xml"]["sha256"] == job_model.sha256_file(job.path("out", "scan.xml"))
    # the action plugin's result from it: every file is fetched, the host stays in the run
    outcome = jobs.attempt_outcome(job.id, jobs.job_outcome(status), status)
    assert [f["src"] for f in jobs.fetch_list([outcome])] == [job.path("nmap.log"), job.path("out", "scan.gnmap"),
                                                             job.path("out", "scan.nmap"), job.path("out", "scan.xml")]
    assert not jobs.host_lost([outcome])
    # started again (a re-run of the play): reported, never run twice
    again, _ = job_model.start(job, {"id": job.id, "lines": ["127.0.0.1"]}, params(place, "finish"))
    assert again["action"] == "none" and again["state"] == "exited"
    assert json.loads(Path(job.path("job.json")).read_text()) == described


def test_a_running_job_is_attached_to_not_started_again(place, ended):
    job, _ = launch(place, ended, "sleep")
    status = wait_running(job)
    pid_info = job_model.read_json(job.path("pid.json"))
    assert job_model.alive(pid_info["pid"], pid_info["ticks"]) and status["pid"] == pid_info["pid"]
    again, _ = job_model.start(job, {"id": job.id, "lines": ["127.0.0.1"]}, params(place, "sleep"))
    assert again["action"] == "attached" and again["pid"] == pid_info["pid"]
    assert job_model.read_json(job.path("pid.json")) == pid_info
    assert jobs.job_outcome(again) is None


def test_nmap_runs_as_the_scanner_user_with_no_supplementary_groups(place, ended):
    job, _ = launch(place, ended, "finish", user="nobody", group="nogroup")
    status = wait_for(job, "exited")
    nobody, nogroup = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    assert f"ids {nobody} {nogroup} [] tty True" in status["tail"], status["tail"]
    xml = os.stat(job.path("out", "scan.xml"))
    assert (xml.st_uid, xml.st_gid, stat.S_IMODE(xml.st_mode)) == (nobody, nogroup, 0o640)  # umask 027
    directory = os.stat(job.dir)
    assert (directory.st_uid, directory.st_gid, stat.S_IMODE(directory.st_mode)) == (0, nogroup, 0o750)


def open_files_seen(pid: int) -> list[int]:
    """The soft and hard RLIMIT_NOFILE of process PID, as the kernel reports them."""
    row = next(line for line in Path(f"/proc/{pid}/limits").read_text().splitlines()
               if line.startswith("Max open files"))
    return [int(value) for value in row.split()[3:5]]


def test_nmap_runs_with_the_soft_open_file_limit_at_the_hard_limit(place, ended):
    """nmap holds a descriptor per probe in flight: started from a process whose soft limit is 256, it runs with
    the soft limit at the hard limit. Read from /proc/PID/limits of the running nmap."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard >= job_model.OPEN_FILES_FLOOR, f"this test needs a hard limit of {job_model.OPEN_FILES_FLOOR}"
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        job, _ = launch(place, ended, "sleep")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    status = wait_running(job)
    assert open_files_seen(status["pid"]) == [hard, hard]
    assert job_model.read_json(job.path("pid.json"))["open_files"] == [hard, hard]


CAP_SYS_RESOURCE = 24


def test_a_hard_open_file_limit_below_the_floor_is_raised_when_allowed():
    """A hard limit of 1024 is raised to the floor by a process that may (CAP_SYS_RESOURCE, as root normally has);
    one that may not keeps it, with the soft limit raised to it (a separate process: a hard limit once lowered
    cannot be raised again without that capability)."""
    code = ("import resource, sys; from scanfleet import job_model; "
            "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 1024)); print(list(job_model.raise_open_files()))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    status = Path("/proc/self/status").read_text()
    effective = int(next(line for line in status.splitlines() if line.startswith("CapEff:")).split()[1], 16)
    want = job_model.OPEN_FILES_FLOOR if effective >> CAP_SYS_RESOURCE & 1 else 1024
    assert json.loads(proc.stdout) == [want, want]


def test_an_nmap_error_is_exited(place, ended):
    job, _ = launch(place, ended, "fail")
    status = wait_for(job, "exited")
    assert (status["rc"], status["reason"], jobs.job_outcome(status)) == (3, "error", "exited")


IN_FULL_DISK = """\
import json, subprocess, sys, time
sys.path[:0] = [sys.argv[3]]
from scanfleet import job_model
runs = sys.argv[1]
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0755", "sf-full", runs], check=True)
job = job_model.Job(runs, "r1", "001-s1")
params = json.loads(sys.argv[2])
job_model.start(job, {"id": job.id, "lines": ["127.0.0.1"]}, params)
end = time.monotonic() + 30
while job.status()["state"] == "running" and time.monotonic() < end:
    time.sleep(0.1)
print(json.dumps(job.status()))
"""


@pytest.mark.parametrize("script_args", ["", '"smbpassword"="x"'], ids=["no-secrets", "secrets"])
def test_a_full_disk_is_an_error_that_says_so_never_a_finished_job(place, ended, script_args):
    """A real full file system (a 256 KiB tmpfs as the run directory, in a mount namespace of its own): nmap's
    writes fail and it exits 0, as Debian's nmap does with -oA on a full disk (empty files, no message). The
    supervisor records an error whose detail says disk full (its exit record goes into the room it took at the
    start), so the wait hands the shard on and the record never takes the empty XML as complete. With secret
    script arguments, their file is removed when nmap ends: the disk is judged before that frees a block (seen
    in molecule/faults, where the freed block made the detail say only "incomplete")."""
    done = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c", IN_FULL_DISK,
                           str(place / "runs"), json.dumps(params(place, "fill", script_args=script_args)),
                           str(ROOT)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout.splitlines()[-1])
    assert (status["state"], status["rc"], status["reason"]) == ("exited", 0, "error"), status
    assert status["detail"].startswith("disk full on ") and "no space left on device" in status["detail"], status
    outcome = jobs.job_outcome(status)
    assert outcome == "exited" and jobs.host_lost([jobs.attempt_outcome("001-s1", outcome, status)])
    line = jobs.format_outcome("scanner2", "001-s1", outcome, status)
    assert "nmap exited with status 0 (disk full on " in line, line


@pytest.mark.parametrize(("mode", "rc", "at_least"), [
    ("sleep", -signal.SIGTERM, 3),  # SIGTERM at the timeout ends it
    ("ignore-term", -signal.SIGKILL, 4),  # it ignores SIGTERM: SIGKILL after the grace period
])
def test_the_supervisor_ends_nmap_at_the_timeout(place, ended, mode, rc, at_least):
    job, _ = launch(place, ended, mode, timeout=3, kill_grace=1)
    status = wait_for(job, "exited")
    assert (status["rc"], status["reason"], jobs.job_outcome(status)) == (rc, "timeout", "timeout")
    assert status["ended"] - status["started"] >= at_least


def test_a_stop_ends_nmap_by_pid_sigkill_after_the_grace_period(place, ended):
    job, _ = launch(place, ended, "ignore-term")
    wait_running(job)
    pid_info = job_model.read_json(job.path("pid.json"))
    begun = time.monotonic()
    status = job_model.stop(job, "stalled", 1)
    assert time.monotonic() - begun >= 1  # SIGTERM was ignored for the grace period
    assert status["action"] == "stopped" and status["state"] == "exited"
    assert (status["rc"], status["reason"], jobs.job_outcome(status)) == (-signal.SIGKILL, "stalled", "stalled")
    assert not job_model.alive(pid_info["pid"], pid_info["ticks"])
    assert job_model.stop(job, "stalled", 1)["action"] == "none"  # ended already


def test_a_killed_supervisor_leaves_a_dead_job_that_is_never_started_again(place, ended):
    job, _ = launch(place, ended, "sleep")
    wait_running(job)
    pid_info = job_model.read_json(job.path("pid.json"))
    os.kill(pid_info["supervisor"], signal.SIGKILL)
    # its nmap loses its terminal with it (the pty's master side closes: SIGHUP); end it if it lives on
    time.sleep(0.5)
    if job_model.alive(pid_info["pid"], pid_info["ticks"]):
        os.kill(pid_info["pid"], signal.SIGKILL)
    status = wait_for(job, "dead")
    assert jobs.job_outcome(status) == "dead" and "dead" in job_model.HOST_LOST_OUTCOMES
    assert "scan.xml" in status["files"]  # what it wrote is fetched and salvaged
    again, _ = job_model.start(job, {"id": job.id, "lines": ["127.0.0.1"]}, params(place, "sleep"))
    assert again["action"] == "none" and again["state"] == "dead"
    assert job_model.stop(job, "stopped", 1)["action"] == "none"


def stranger(ended) -> subprocess.Popen:
    """A live process that has nothing to do with any job."""
    proc = subprocess.Popen(["sleep", "120"])
    ended[0].append((proc.pid, job_model.start_time(proc.pid)))
    return proc


def records(place: Path, pid_info: dict, job_info: dict) -> job_model.Job:
    job = job_model.Job(str(place / "runs"), "r1", "001-s1")
    os.makedirs(job.path("out"), exist_ok=True)
    Path(job.path("job.json")).write_text(json.dumps({"argv": ["nmap"], "versiondb": "", "created": 1.0,
                                                      **job_info}))
    Path(job.path("pid.json")).write_text(json.dumps({"started": 1.0, **pid_info}))
    return job


def test_a_reused_pid_is_never_signalled(place, ended):
    """pid.json names a live process that is not the job's (its start time differs): the job is dead, and a
    stop sends it nothing."""
    other = stranger(ended)
    wrong = str(int(job_model.start_time(other.pid)) - 1)
    job = records(place, {"pid": other.pid, "ticks": wrong, "supervisor": other.pid, "supervisor_ticks": wrong},
                  {"supervisor": other.pid, "supervisor_ticks": wrong})
    assert job.status()["state"] == "dead"
    assert job_model.stop(job, "stalled", 1)["action"] == "none"
    time.sleep(0.3)
    assert other.poll() is None


def test_a_reused_nmap_pid_is_not_signalled_while_its_supervisor_runs(place, ended):
    """The supervisor runs (the job is running), nmap's PID now belongs to another process: the stop signals
    nothing and records the end itself when the supervisor does not."""
    other = stranger(ended)
    supervisor = stranger(ended)
    job = records(place, {"pid": other.pid, "ticks": str(int(job_model.start_time(other.pid)) - 1),
                          "supervisor": supervisor.pid, "supervisor_ticks": job_model.start_time(supervisor.pid)},
                  {})
    assert job.status()["state"] == "running"
    status = job_model.stop(job, "stalled", 1, exit_wait=0.5)
    assert status["action"] == "stopped" and (status["state"], status["reason"], status["rc"]) == (
        "exited", "stalled", None)
    time.sleep(0.3)
    assert other.poll() is None and supervisor.poll() is None


def test_the_supervisor_script_refuses_a_wrong_call():
    proc = subprocess.run([sys.executable, "-I", job_model.__file__], capture_output=True, text=True, check=False,
                          timeout=30)
    assert proc.returncode == 2 and "usage: job_model.py CONFIG_JSON" in proc.stderr


PLAY = """\
- name: A job through the collection's module and action plugin
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Start
      scanfleet.fleet.scan_job:
        state: started
        base_dir: "{base}"
        run_id: r1
        attempts: [{{id: 001-a, lines: [127.0.0.1], max_rate: 25}}]
        nmap: "{nmap}"
        options: [--mode, finish]
        user: nobody
        group: nogroup
        stats_every: 1
    - name: Wait
      scanfleet.fleet.scan_wait:
        run_id: r1
        base_dir: "{base}"
        attempts: [{{id: 001-a, size: 1}}, {{id: 002-a, size: 1}}]
        poll: 1
        progress_dir: "{base}/../progress"
        round_id: s-1
        total: 2
      register: waited
    - name: Show
      ansible.builtin.debug:
        msg: "RESULT {{{{ waited | to_json }}}} END"
"""


def run_play(tmp_path: Path, play: str) -> str:
    """Run ``play`` on localhost with the host's /usr/bin/python3 and this clone as scanfleet.fleet; its output
    (the play must succeed)."""
    collections = tmp_path / "collections" / "ansible_collections" / "scanfleet"
    collections.mkdir(parents=True)
    (collections / "fleet").symlink_to(ROOT)
    playbook = tmp_path / "play.yml"
    playbook.write_text(play)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(tmp_path / "collections"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="default",
               PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    proc = subprocess.run(["ansible-playbook", "-i", "localhost,", "-e", "ansible_python_interpreter=/usr/bin/python3",
                           str(playbook)], capture_output=True, text=True, env=env, cwd=ROOT, check=False,
                          timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    return output


def test_the_module_and_the_wait_run_a_job_on_a_host_with_its_own_python(place, ended, tmp_path):
    """Through Ansible, as the role does: scan_job (run by the host's /usr/bin/python3, from AnsiballZ, which
    is gone once it returns: the supervisor runs from its own copy) and the scan_wait action's result."""
    ended[1].append(job_model.Job(str(place / "runs"), "r1", "001-a"))
    output = run_play(tmp_path, PLAY.format(base=place / "runs", nmap=place / "nmap"))
    waited = json.loads(output.split("RESULT ", 1)[1].split(" END", 1)[0])
    assert [(o["id"], o["outcome"]) for o in waited["outcomes"]] == [("001-a", "finished"), ("002-a", "missing")]
    assert waited["lost"] and {f["name"] for f in waited["fetch"]} == set(job_model.OUTPUTS)
    job = job_model.Job(str(place / "runs"), "r1", "001-a")
    assert Path(job.path("job_model.py")).read_text() == Path(job_model.__file__).read_text()
    argv = json.loads(Path(job.path("job.json")).read_text())["argv"]
    assert argv[argv.index("--max-rate"):argv.index("--max-rate") + 2] == ["--max-rate", "25"]  # its rate share
    assert "fleet: 1/2 addresses done (50.0%), 1 scanner(s) reporting" in output  # 002-a is missing


STALE_PLAY = """
- hosts: all
  connection: local
  gather_facts: false
  tasks:
    - name: End the jobs of the run that it does not assign to this host
      ansible.builtin.include_role:
        name: scanfleet.fleet.nmap_scan
        tasks_from: stale.yml
      vars:
        nmap_scan_remote_dir: "{base}"
        nmap_scan_kill_grace: 1
        __nmap_scan_run: r1
        __nmap_scan_keep: [001-s1]
"""


def test_a_returning_scanner_has_the_jobs_the_run_no_longer_assigns_to_it_ended_by_pid(place, ended, tmp_path):
    """roles/nmap_scan/tasks/stale.yml, through Ansible: of the run's jobs on the host, the one still assigned
    (001) runs on, the stale running one (002, the attempt of a scanner recorded lost) is ended by PID, and one
    that ended already (003) is left as it was."""
    kept, _ = launch(place, ended, "sleep", "001-s1")
    stale, _ = launch(place, ended, "sleep", "002-s1")
    done, _ = launch(place, ended, "finish", "003-s1")
    wait_running(kept)
    wait_running(stale)
    before = wait_for(done, "exited")
    output = run_play(tmp_path, STALE_PLAY.format(base=place / "runs"))
    assert kept.status()["state"] == "running"
    status = wait_for(stale, "exited")
    assert status["reason"] == "stopped", status
    assert done.status() == before
    assert "ended by PID (not assigned to it by the run, output ignored): 002-s1" in output


def fetch_task() -> dict:
    """The role's own fetch task (roles/nmap_scan/tasks/jobs.yml, run by round.yml and phase2.yml), as it is."""

    def walk(tasks):
        for task in tasks:
            if str(task.get("name", "")).startswith("Fetch the outputs of the jobs"):
                return task
            found = walk(task.get("block", []))
            if found:
                return found
        return None

    return walk(yaml.safe_load((ROOT / "roles" / "nmap_scan" / "tasks" / "jobs.yml").read_text()))


def assigned(attempt_id: str) -> tuple[runstate.RunState, runstate.Attempt]:
    """A run state with one attempt on localhost, assigned (as the killed controller left it)."""
    now = time.time()
    addresses = plan_targets(parse_targets("127.0.0.1"), scope=["127.0.0.0/8"]).addresses
    state = runstate.new_state("r1", addresses, ["-sT"], now)
    attempt = runstate.Attempt(id=attempt_id, host="localhost", family=4, lines=addresses.to_lines(),
                               size=addresses.size, session="s0", round=1, created=now)
    state.attempts.append(attempt)
    return state, attempt


def test_a_half_written_result_is_found_by_its_checksum_and_fetched_again(place, ended, tmp_path):
    """The controller killed during a fetch leaves a half-written file in results/RUN/HOST/ATTEMPT/ and the
    attempt `assigned` in state.json; the resumed run attaches to the ended job and runs the same fetch. The
    record's sha256 check finds the truncated file (it would be a failed fetch, never a result), and the role's
    fetch task (ansible.builtin.fetch compares the local file's checksum with the host's) writes it again."""
    job, _ = launch(place, ended, "finish")
    status = wait_for(job, "exited")
    outcome = jobs.attempt_outcome(job.id, jobs.job_outcome(status), status)
    results = tmp_path / "results" / "r1"
    local = results / "localhost" / job.id
    local.mkdir(parents=True)
    for item in jobs.fetch_list([outcome]):  # in the role's order: the last one (scan.xml) was cut halfway
        whole = Path(item["src"]).read_bytes()
        (local / item["name"]).write_bytes(whole[: len(whole) // 2] if item["name"] == "scan.xml" else whole)

    state, attempt = assigned(job.id)
    before = collect.record_attempt(state, attempt, outcome="finished", directory=local,
                                    remote_sha256=outcome["files"], session="s1", now=time.time())
    assert attempt.status == "failed" and attempt.detail.startswith("fetch failed: scan.xml has sha256"), before

    task = fetch_task()
    play = [{"name": "The role's fetch task on a resumed run", "hosts": "localhost", "connection": "local",
             "gather_facts": False,
             "vars": {"__nmap_scan_run_fetch_dir": str(results / "localhost"), "nmap_scan_lost_after": 30,
                      "__nmap_scan_wait": {"fetch": jobs.fetch_list([outcome])}},
             "tasks": [task, {"name": "Fail when a fetch failed", "ansible.builtin.assert": {
                 "that": ["__nmap_scan_fetch is succeeded"]}}]}]
    run_play(tmp_path, json.dumps(play))
    for name, sha in outcome["files"].items():
        assert job_model.sha256_file(local / name) == sha, name
    state, attempt = assigned(job.id)
    collect.record_attempt(state, attempt, outcome="finished", directory=local,
                           remote_sha256=outcome["files"], session="s1", now=time.time())
    assert not (attempt.detail or "").startswith("fetch failed"), attempt.detail


REAL_NMAP_FULL_DISK = """\
import json, os, subprocess, sys, time
sys.path[:0] = [sys.argv[3]]
from scanfleet import job_model
runs, params = sys.argv[1], json.loads(sys.argv[2])
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
job = job_model.Job(runs, "r1", "001-s1")
os.makedirs(job.path("out"))
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "sf-full", job.path("out")], check=True)
with open(job.path("out", "ballast"), "wb", buffering=0) as f:
    try:
        while True:
            f.write(b"x" * 4096)
    except OSError:
        pass
job_model.start(job, {"id": job.id, "lines": ["127.0.0.1"]}, params)
end = time.monotonic() + 60
while job.status()["state"] == "running" and time.monotonic() < end:
    time.sleep(0.2)
print(json.dumps(job.status()))
"""


@pytest.mark.skipif(not os.access("/usr/bin/nmap", os.X_OK), reason="Debian's nmap is not installed")
def test_debians_nmap_on_a_full_disk_exits_0_and_the_job_says_disk_full(place, ended):
    """The real /usr/bin/nmap, -oA into a full 64 KiB tmpfs (its own mount and network namespaces, loopback
    only): it exits 0 with empty files, and the job's exit record says disk full."""
    user, group = me()
    params = {"nmap": "/usr/bin/nmap", "options": ["-sT", "-Pn", "-p", "1-200"], "versiondb": "",
              "stats_every": 1, "script_args": "", "user": user, "group": group, "timeout": 0, "kill_grace": 1}
    done = subprocess.run(["unshare", "-m", "-n", "--propagation", "private", sys.executable, "-c",
                           REAL_NMAP_FULL_DISK, str(place / "runs"), json.dumps(params), str(ROOT)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout.splitlines()[-1])
    assert (status["state"], status["rc"], status["reason"]) == ("exited", 0, "error"), status
    assert status["detail"].startswith("disk full on "), status
    assert jobs.job_outcome(status) == "exited"
