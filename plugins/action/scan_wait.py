"""Action plugin scanfleet.fleet.scan_wait: wait for a host's nmap jobs while showing nmap's own progress.

Runs on the controller, once per scanner host: polls the host with the scanfleet.fleet.scan_job module
(state=status) every ``poll`` seconds -- each poll is a short command, no connection is held for the length
of the scan -- prints one progress line per job from nmap's ``--stats-every`` figures, and ends a job by PID
(scan_job state=stopped) when it makes no progress for ``stall_timeout`` seconds or outlives ``timeout``.
The rules (outcome, progress, stall, the result) are scanfleet.jobs', over the words of
scanfleet.job_model; documentation: plugins/modules/scan_wait.py.
"""

from __future__ import annotations

import time

from ansible.errors import AnsibleActionFail, AnsibleConnectionFailure
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()

JOB_MODULE = "scanfleet.fleet.scan_job"


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = True
    _supports_check_mode = True
    _VALID_ARGS = frozenset(("run_id", "base_dir", "attempts", "poll", "stall_timeout", "timeout", "kill_grace",
                             "quiet_every"))

    def _job(self, task_vars, state, attempts, extra=None):
        args = {"state": state, "base_dir": self._task.args["base_dir"], "run_id": self._task.args["run_id"],
                "attempts": [{"id": a["id"]} for a in attempts]}
        args.update(extra or {})
        result = self._execute_module(module_name=JOB_MODULE, module_args=args, task_vars=task_vars)
        if result.get("failed"):
            raise AnsibleActionFail(f"{JOB_MODULE} state={state}: {result.get('msg', result)}")
        return {item["id"]: item for item in result.get("attempts", [])}

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        try:
            from scanfleet import jobs
        except ImportError as exc:
            raise AnsibleActionFail(f"the scanfleet package is not importable ({exc}): run ansible from the "
                                    "project's virtualenv (make venv; . .venv/bin/activate)") from None
        args = self._task.args
        attempts = list(args.get("attempts") or [])
        poll = max(1, int(args.get("poll", 10)))
        stall_timeout = int(args.get("stall_timeout", 600))
        timeout = int(args.get("timeout", 0))
        kill_grace = int(args.get("kill_grace", 10))
        quiet_every = int(args.get("quiet_every", 60))
        host = task_vars.get("inventory_hostname", "?")
        result.update(changed=False, outcomes=[], fetch=[], lost=False)
        if not attempts:
            result["msg"] = "no jobs on this host"
            return result
        if self._task.check_mode:
            result["msg"] = "check mode: nothing is waited for"
            return result

        sizes = {a["id"]: int(a.get("size", 0)) for a in attempts}
        watches = {a["id"]: jobs.StallWatch(stall_timeout) for a in attempts}
        last_line: dict[str, tuple[str, float]] = {}
        pending = {a["id"] for a in attempts}
        outcomes: dict[str, dict] = {}
        start = time.monotonic()
        deadline = start + timeout + kill_grace + 3 * poll if timeout > 0 else None
        last_contact = start
        while pending:
            now = time.monotonic()
            try:
                statuses = self._job(task_vars, "status", [{"id": i} for i in sorted(pending)])
                last_contact = now
            except AnsibleConnectionFailure as exc:
                if now - last_contact > max(stall_timeout, 3 * poll):
                    for attempt_id in sorted(pending):
                        outcomes[attempt_id] = jobs.unreachable_outcome(
                            attempt_id, f"no answer for {int(now - last_contact)} s: {exc}")
                        display.display(f"{host} {attempt_id}: the host stopped answering ({exc})")
                    break
                display.display(f"{host}: no answer ({exc}); trying again in {poll} s")
                time.sleep(poll)
                continue
            to_stop: dict[str, str] = {}
            for attempt_id in sorted(pending):
                status = statuses.get(attempt_id, {"state": "absent"})
                outcome = jobs.job_outcome(status)
                if outcome is not None:
                    outcomes[attempt_id] = jobs.attempt_outcome(attempt_id, outcome, status)
                    display.display(jobs.format_outcome(host, attempt_id, outcome, status))
                    continue
                progress = jobs.parse_stats(status.get("tail") or "")
                watch = watches[attempt_id]
                quiet = watch.update(jobs.progress_signature(status, progress), now)
                line = jobs.format_progress(host, attempt_id, sizes[attempt_id], status, progress, quiet_for=quiet)
                shown, when = last_line.get(attempt_id, ("", 0.0))
                if line != shown or now - when >= quiet_every:
                    display.display(line)
                    last_line[attempt_id] = (line, now)
                if watch.stalled(now):
                    to_stop[attempt_id] = "stalled"
                elif deadline is not None and now > deadline:
                    to_stop[attempt_id] = "timeout"
            for attempt_id in outcomes:
                pending.discard(attempt_id)
            for attempt_id, reason in sorted(to_stop.items()):
                display.display(f"{host} {attempt_id}: no progress for {int(watches[attempt_id].timeout)} s, ending "
                                "its nmap by PID" if reason == "stalled" else
                                f"{host} {attempt_id}: still running after the timeout, ending its nmap by PID")
                stopped = self._job(task_vars, "stopped", [{"id": attempt_id}],
                                    {"reason": reason, "kill_grace": kill_grace})
                status = stopped.get(attempt_id, {"state": "dead"})
                outcomes[attempt_id] = jobs.attempt_outcome(attempt_id, reason, status)
                result["changed"] = True
                pending.discard(attempt_id)
            if pending:
                time.sleep(poll)
        result["outcomes"] = [outcomes[a["id"]] for a in attempts if a["id"] in outcomes]
        result["fetch"] = jobs.fetch_list(result["outcomes"])
        result["lost"] = jobs.host_lost(result["outcomes"])
        return result
