"""Action plugin scanfleet.fleet.scan_wait: wait for a host's nmap jobs while showing nmap's own progress.

Runs on the controller, once per scanner host: polls the host with the scanfleet.fleet.scan_job module
(state=status) every ``poll`` seconds -- each poll is a short command, no connection is held for the length
of the scan -- prints one progress line per job from nmap's ``--stats-every`` figures, and ends a job by PID
(scan_job state=stopped) when it makes no progress for ``stall_timeout`` seconds or outlives ``timeout``.
Every call to the host runs in a daemon thread and is waited for at most until nothing has answered for
``lost_after`` seconds: then the host's pending attempts are ``unreachable`` and the action returns at once
(the stuck call is abandoned). The loop and its rules (contact, outcome, progress, stall, the result) are
scanfleet.jobs' (wait_jobs), over the words of scanfleet.job_model; the fleet-wide line (addresses done of
the run's total, time left) is scanfleet.progress' (FleetBoard, shared through files in progress_dir); documentation:
plugins/modules/scan_wait.py.
"""

from __future__ import annotations

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
                             "quiet_every", "lost_after", "progress_dir", "round_id", "total", "covered", "unit"))

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
            from scanfleet import jobs, progress
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
        lost_after = float(args.get("lost_after", 90))
        if lost_after <= 0:
            raise AnsibleActionFail(f"lost_after must be > 0, got {lost_after}")
        host = task_vars.get("inventory_hostname", "?")
        result.update(changed=False, outcomes=[], fetch=[], lost=False)
        if not attempts:
            result["msg"] = "no jobs on this host"
            return result
        if self._task.check_mode:
            result["msg"] = "check mode: nothing is waited for"
            return result

        board = None
        if args.get("progress_dir"):  # the fleet-wide line, shared with the other scanners' waits
            board = progress.FleetBoard(args["progress_dir"], host, round_id=str(args.get("round_id", "")),
                                        total=int(args.get("total", 0)), covered=int(args.get("covered", 0)),
                                        unit=str(args.get("unit") or "addresses"),
                                        show=display.display, every=poll, quiet_every=quiet_every)
        outcomes, changed = jobs.wait_jobs(
            lambda state, ids, extra: self._job(task_vars, state, [{"id": i} for i in ids], extra),
            attempts, host=host, show=display.display, poll=poll, stall_timeout=stall_timeout, timeout=timeout,
            kill_grace=kill_grace, quiet_every=quiet_every, lost_after=lost_after,
            transient=(AnsibleConnectionFailure,), progress=board)
        result["changed"] = changed
        result["outcomes"] = outcomes
        result["fetch"] = jobs.fetch_list(result["outcomes"])
        result["lost"] = jobs.host_lost(result["outcomes"])
        if any(o["outcome"] == "unreachable" for o in outcomes):
            # a call to this host may still be stuck in its abandoned thread: the action's cleanup must not
            # make another remote call (removing a remote tmp dir) that would block in its turn
            self._connection._shell.tmpdir = None
        return result
