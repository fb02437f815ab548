"""Tests of the analysis part of bench/fleet_scale.py (issue 11's benchmark), without the lab.

The run directories are built with scanfleet's own writers (state.json by scanfleet.state and scanfleet.collect's
recorder, phase2.json by scanfleet.pairs' recorder) from the real nmap output of tests/fixtures/xml/two-phase
(make_two_phase.sh) and the real nmap log tests/fixtures/logs/nmap-sV-v.log (make_nmap_log.sh). Expected values come
from an independent reading of those files (ElementTree, plain string handling) and brute-force oracles, never
from the module's output.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import shutil
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from scanfleet import collect, pairs
from scanfleet.files import sha256_file
from scanfleet.state import Attempt, new_state, save_state
from scanfleet.targets import load_targets_file

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import fleet_scale as fs  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures"
TWO = FIXTURES / "xml" / "two-phase"
LOG = FIXTURES / "logs" / "nmap-sV-v.log"
SHARDS = (("001-scan1", "scan1"), ("002-scan2", "scan2"))
RUN_ID = "bench-t"


# ---- the oracle: an independent reading of the fixtures ------------------------------------------------------

def xml_span(path: Path) -> tuple[float, float]:
    """[nmaprun start, start + runstats elapsed] of a complete nmap XML."""
    root = ET.parse(path).getroot()
    start = float(root.get("start"))
    return start, start + float(root.find("runstats/finished").get("elapsed"))


def ticks(intervals, window=None, step=0.01) -> float:
    """Length of the union of INTERVALS by counting STEP-long ticks (brute force)."""
    covered = set()
    for start, end in intervals:
        if window:
            start, end = max(start, window[0]), min(end, window[1])
        covered.update(range(round(start / step), round(end / step)))
    return len(covered) * step


def open_ports(path: Path) -> dict[str, ET.Element]:
    out = {}
    for host in ET.parse(path).getroot().findall("host"):
        address = next(a.get("addr") for a in host.findall("address") if a.get("addrtype") == "ipv4")
        for port in host.iter("port"):
            if port.find("state").get("state") == "open":
                out[f"{address}:{port.get('portid')}/{port.get('protocol')}"] = port
    return out


def log_seconds(text: str) -> float:
    """Sum of the elapsed seconds of the log's 'Completed Service scan' and 'Completed NSE' lines."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(("Completed Service scan at", "Completed NSE at")):
            word = line.split(", ", 1)[1].split(" ", 1)[0]  # "6.01s"
            total += float(word.rstrip("s"))
    return total


# ---- run directories built with scanfleet's writers ----------------------------------------------------------

def one_phase_run(tmp_path: Path, *, log: bool = False) -> Path:
    """A finished run of the two phase-1 shards (scan1, scan2), recorded by scanfleet.collect."""
    targets = load_targets_file(TWO / "phase1" / "001-scan1.targets") | load_targets_file(
        TWO / "phase1" / "002-scan2.targets")
    now = time.time()
    state = new_state(RUN_ID, targets, ["-sS"], now)
    run = tmp_path / RUN_ID
    for attempt_id, host in SHARDS:
        lines = (TWO / "phase1" / f"{attempt_id}.targets").read_text().split()
        attempt = Attempt(id=attempt_id, host=host, family=4, lines=lines,
                          size=load_targets_file(TWO / "phase1" / f"{attempt_id}.targets").size, session="s",
                          round=1, created=now)
        state.attempts.append(attempt)
        directory = run / host / attempt_id
        directory.mkdir(parents=True)
        shutil.copy(TWO / "phase1" / attempt_id / "scan.xml", directory / "scan.xml")
        sums = {"scan.xml": sha256_file(directory / "scan.xml")}
        if log:
            shutil.copy(LOG, directory / "nmap.log")
            sums["nmap.log"] = sha256_file(directory / "nmap.log")
        collect.record_attempt(state, attempt, outcome="finished", directory=directory, remote_sha256=sums,
                               session="s", now=now)
        assert attempt.status == "finished"
    save_state(run, state)
    return run


def two_phase_run(tmp_path: Path) -> Path:
    """The same phase 1, and phase 2 as scanfleet pairs planned it (the fixture's phase2.json), each job's XML
    recorded by scanfleet.pairs.record_job."""
    run = one_phase_run(tmp_path)
    phase2 = pairs.load_phase2(TWO / "phase2")
    for job in phase2.jobs:
        directory = pairs.job_dir(run / "phase2", job)
        directory.mkdir(parents=True)
        shutil.copy(TWO / "phase2" / job.id / "scan.xml", directory / "scan.xml")
        pairs.record_job(phase2, job.id, directory / "scan.xml", now=time.time())
        assert job.status == "finished"
    pairs.save_phase2(run / "phase2", phase2)
    return run


def phase2_jobs() -> list[dict]:
    return json.loads((TWO / "phase2" / "phase2.json").read_text())["jobs"]


# ---- interval union, tail, overhead ----------------------------------------------------------------------------

def test_union_seconds_matches_brute_force():
    rng = random.Random(11)
    for _ in range(40):
        intervals = []
        for _ in range(rng.randint(0, 8)):
            start = rng.randint(0, 5000) / 100
            intervals.append((start, start + rng.randint(0, 2000) / 100))
        window = (rng.randint(0, 3000) / 100, rng.randint(3000, 7000) / 100)
        assert fs.union_seconds(intervals) == pytest.approx(ticks(intervals), abs=0.02)
        assert fs.union_seconds(intervals, window) == pytest.approx(ticks(intervals, window), abs=0.02)


def test_job_runs_reads_every_nmap_job_of_both_phases(tmp_path):
    runs = fs.job_runs(two_phase_run(tmp_path))
    expected = {("scan", host, attempt_id): xml_span(TWO / "phase1" / attempt_id / "scan.xml")
                for attempt_id, host in SHARDS}
    expected.update({("service", job["host"], job["id"]): xml_span(TWO / "phase2" / job["id"] / "scan.xml")
                     for job in phase2_jobs()})
    got = {(r["phase"], r["host"], r["id"]): (r["start"], r["end"]) for r in runs}
    assert got.keys() == expected.keys()
    for key, (start, end) in expected.items():
        assert got[key] == pytest.approx((start, end))


def test_tail_is_slowest_scanner_over_mean_per_phase(tmp_path):
    runs = fs.job_runs(two_phase_run(tmp_path))
    for phase, spans in (("scan", {h: [xml_span(TWO / "phase1" / a / "scan.xml")] for a, h in SHARDS}),
                         ("service", {})):
        if phase == "service":
            for job in phase2_jobs():
                spans.setdefault(job["host"], []).append(xml_span(TWO / "phase2" / job["id"] / "scan.xml"))
        per = {h: ticks(s) for h, s in spans.items()}
        result = fs.tail(runs, phase)
        assert result["seconds"] == pytest.approx(per, abs=0.02)
        assert result["tail"] == pytest.approx(max(per.values()) / (sum(per.values()) / len(per)), abs=0.002)
    assert fs.tail(runs, "nothing") is None


def test_tail_of_a_one_phase_run_has_no_service_phase(tmp_path):
    runs = fs.job_runs(one_phase_run(tmp_path))
    assert {r["phase"] for r in runs} == {"scan"}
    assert fs.tail(runs, "service") is None


def test_overhead_is_wall_time_outside_every_nmap_job(tmp_path):
    runs = fs.job_runs(two_phase_run(tmp_path))
    spans = [xml_span(TWO / "phase1" / a / "scan.xml") for a, _ in SHARDS] + [
        xml_span(TWO / "phase2" / j["id"] / "scan.xml") for j in phase2_jobs()]
    first, last = min(s for s, _ in spans), max(e for _, e in spans)
    for start, end in ((first - 12.5, last + 7.25), (first + 30, last - 20)):  # the second window cuts jobs
        inside = ticks(spans, (start, end))
        got = fs.overhead(runs, start, end)
        assert got["seconds"] == pytest.approx(end - start - inside, abs=0.03)
        assert got["share"] == pytest.approx((end - start - inside) / (end - start), abs=0.001)
        assert got["nmap_seconds"] == pytest.approx(inside, abs=0.03)


# ---- silent ports per second --------------------------------------------------------------------------------

def test_service_seconds_of_a_real_nmap_log():
    text = LOG.read_text()
    assert "Completed Service scan" in text
    assert fs.service_seconds(text) == pytest.approx(log_seconds(text))
    before = text.split("Initiating Service scan", 1)[0]
    assert fs.service_seconds(before) is None


def test_silent_rate_of_two_phase_is_silent_pairs_over_service_phase_time(tmp_path):
    run = two_phase_run(tmp_path)
    runs = fs.job_runs(run)
    # silent here: the open ports that phase 2 could not identify (no probe matched: method="table")
    silent = set()
    for job in phase2_jobs():
        for key, port in open_ports(TWO / "phase2" / job["id"] / "scan.xml").items():
            if port.find("service") is None or port.find("service").get("method") != "probed":
                address, rest = key.split(":")
                silent.add((address, int(rest.split("/")[0])))
    assert silent, "the fixture has an unidentified open port"
    expected = {}
    for job in phase2_jobs():
        mine = {(a, int(p)) for a, by_proto in job["pairs"].items() for spec in by_proto.values()
                for p in fs.port_numbers(spec)}
        expected.setdefault(job["host"], [0, []])
        expected[job["host"]][0] += len(mine & silent)
        expected[job["host"]][1].append(xml_span(TWO / "phase2" / job["id"] / "scan.xml"))
    got = fs.silent_rates(run, runs, silent)
    want = {h: count / ticks(spans) for h, (count, spans) in expected.items() if count}
    assert got.keys() == want.keys()
    for host, rate in want.items():
        assert got[host]["per_second"] == pytest.approx(rate, abs=0.06)


def test_silent_rate_of_one_phase_uses_the_service_scan_and_nse_lines(tmp_path):
    run = one_phase_run(tmp_path, log=True)
    runs = fs.job_runs(run)
    silent = {("127.0.0.4", 1337), ("127.0.0.6", 9), ("127.0.0.9", 9), ("10.0.0.1", 9)}
    per_log = log_seconds(LOG.read_text())
    got = fs.silent_rates(run, runs, silent)
    counts = {}
    for attempt_id, host in SHARDS:
        lo, hi = (TWO / "phase1" / f"{attempt_id}.targets").read_text().split()[0].split("-")
        first, last = int(lo.rsplit(".", 1)[1]), int(hi)
        counts[host] = sum(1 for a, _ in silent if a.startswith("127.0.0.") and first <= int(a.rsplit(".", 1)[1])
                           <= last)
    assert got == {h: {"silent": c, "seconds": round(per_log, 2), "per_second": round(c / per_log, 1)}
                   for h, c in counts.items() if c}


def test_silent_pairs_of_the_scale_lab_follow_its_layout():
    hostvars = {"target-web": {"targets_service_ports": {"ssh": [22], "nginx": [80]}, "targets_services": ["nginx"],
                               "targets_responder": [{"port": 81, "kind": "silent"}, {"port": 3000, "kind": "grafana"},
                                                     {"port": 9999, "kind": "silent"}]},
                "target-db": {"targets_service_ports": {"ssh": [22]}, "targets_responder": []},
                "target-mail": {"targets_service_ports": {"ssh": [22]},
                                "targets_responder": [{"port": 81, "kind": "silent"}]}}
    ports = range(1, 1025)
    got = fs.silent_pairs(hostvars, ports)
    web = [f"10.78.0.{i}" for i in range(1, 17)]
    mail = [f"10.78.0.{i}" for i in range(33, 49)]
    quiet = [f"10.78.1.{i}" for i in range(128)]
    want = {(a, 81) for a in web + mail} | {(a, p) for a in quiet for p in fs.SCALE_SILENT if p in ports}
    assert got == want  # 9999 and 1433, 5432, ... are outside PORTS, grafana is no silent port, target-db has none
    assert fs.host_ports(hostvars["target-web"]) == ({22, 80, 81, 3000, 9999}, {81, 9999})


# ---- services, ratios, goals ------------------------------------------------------------------------------------

def test_compare_services_names_the_variants_that_differ(tmp_path):
    run = two_phase_run(tmp_path)
    merged = tmp_path / "merged.xml"
    pairs.merge_run(run, run / "phase2", merged)
    phase1 = TWO / "phase1" / "001-scan1" / "scan.xml"
    want = {k: ((p.find("service").get("name") or "") if p.find("service") is not None else "",
                (p.find("service").get("product") or "") if p.find("service") is not None else "")
            for k, p in open_ports(merged).items()}
    full = fs.identified(merged)
    assert full == want
    part = fs.identified(phase1)
    same = fs.compare_services({"a": full, "b": dict(full)})
    assert same["same"] and same["reference"] == "a" and same["differ"] == {}
    diff = fs.compare_services({"a": full, "b": dict(full), "c": part})
    assert not diff["same"] and set(diff["differ"]) == {"c"}
    missing = sorted(set(full) - set(part))
    changed = sorted(k for k in set(full) & set(part) if full[k] != part[k])
    assert diff["differ"]["c"]["missing"] == missing and diff["differ"]["c"]["extra"] == sorted(set(part) - set(full))
    assert [c["port"] for c in diff["differ"]["c"]["changed"]] == changed
    assert missing or changed


def variant(name: str, seconds: float | None, **figures) -> dict:
    run = {"run_id": f"{name}-r1", "rc": 0 if seconds is not None else 2, "seconds": seconds, **figures}
    return fs.summarise(name, [run])


def test_ratios_to_one_scanner_and_to_stock():
    times = {"one_phase-contiguous-1": 300.0, "one_phase-contiguous-3": 140.0, "one_phase-interleaved-3": 110.0,
             "two_phase-1": 320.0, "two_phase-3": 100.0, "stock-1": 900.0, "sweep-1": 90.0, "sweep-3": 40.0}
    results = {n: variant(n, t) for n, t in times.items()}
    got = fs.ratios(results)
    assert got["one_phase-contiguous-3"]["to_one"] == round(times["one_phase-contiguous-1"] / 140.0, 2)
    # interleaved's one-scanner point is the contiguous one-scanner run (the same single shard)
    assert got["one_phase-interleaved-3"]["to_one"] == round(times["one_phase-contiguous-1"] / 110.0, 2)
    assert got["two_phase-3"]["to_one"] == round(times["two_phase-1"] / 100.0, 2)
    assert got["two_phase-3"]["to_stock"] == round(times["stock-1"] / 100.0, 2)
    assert got["sweep-3"]["to_one"] == round(90.0 / 40.0, 2) and got["sweep-3"]["to_stock"] is None
    assert got["two_phase-3"]["to_stock_is_lower_bound"] is False
    limited = dict(results, **{"stock-1": fs.summarise("stock-1", [{"run_id": "stock-1-r1", "rc": 2,
                                                                     "seconds": 200.0, "limited": True}])})
    assert fs.ratios(limited)["two_phase-3"]["to_stock"] == 2.0
    assert fs.ratios(limited)["two_phase-3"]["to_stock_is_lower_bound"] is True
    failed = dict(results, **{"two_phase-1": variant("two_phase-1", None)})
    assert fs.ratios(failed)["two_phase-3"]["to_one"] is None


def test_goals_are_checked_against_the_measured_figures(tmp_path):
    runs = fs.job_runs(two_phase_run(tmp_path))
    service_tail = fs.tail(runs, "service")
    over = fs.overhead(runs, min(r["start"] for r in runs) - 5, max(r["end"] for r in runs) + 5)
    for one, three in ((300.0, 105.0), (300.0, 120.0)):
        results = {"two_phase-1": variant("two_phase-1", one),
                   "two_phase-3": variant("two_phase-3", three, tail={"scan": None, "service": service_tail},
                                          overhead=over, silent={"scanner1": {"per_second": 120.0},
                                                                 "scanner2": {"per_second": 99.5}})}
        goals = {g["goal"].split(" ")[0]: g for g in fs.goals(results, fs.ratios(results))}
        assert goals["3"]["met"] is (round(one / three, 2) >= fs.GOAL_SPEEDUP)
        assert goals["two-phase"]["met"] is (service_tail["tail"] <= fs.GOAL_TAIL)
        assert goals["overhead"]["met"] is None  # no run lasted 300 s: not measured, and said so
        assert "lower --cap" in goals["overhead"]["why"]
        assert goals[">="]["met"] is False and "two_phase-3/scanner2" in goals[">="]["why"]
    long = {"two_phase-1": variant("two_phase-1", 400.0, overhead={"share": 0.08, "seconds": 32.0}),
            "two_phase-3": variant("two_phase-3", 301.0, overhead={"share": 0.12, "seconds": 36.1})}
    goal = next(g for g in fs.goals(long, fs.ratios(long)) if g["goal"].startswith("overhead"))
    assert goal["met"] is False and goal["figures"] == {"two_phase-1": 0.08, "two_phase-3": 0.12}


def test_markdown_reports_every_variant_and_every_goal(tmp_path):
    results = {"one_phase-contiguous-1": variant("one_phase-contiguous-1", 250.0),
               "one_phase-contiguous-3": variant("one_phase-contiguous-3", None)}
    results["one_phase-contiguous-3"]["failed"] = [{"run_id": "x", "rc": 2, "error": None, "tail": "boom"}]
    doc = {"variants": results, "ratios": fs.ratios(results), "goals": fs.goals(results, fs.ratios(results)),
           "services": {"same": True, "differ": {}}, "stock_limit": 180, "silent_ports": 0}
    text = fs.markdown(doc)
    assert "| one_phase-contiguous-1 | 1 | 250.0 |" in text and "FAILED (rc 2)" in text
    assert text.count("**not measured**") == len(doc["goals"])


# ---- ports and the estimate -------------------------------------------------------------------------------------

def test_port_list_expands_lab_and_compress_round_trips():
    assert fs.port_list("lab,1-3,8080", {22, 9100}) == [1, 2, 3, 22, 8080, 9100]
    rng = random.Random(3)
    for _ in range(20):
        ports = sorted(rng.sample(range(1, 2000), rng.randint(1, 60)))
        assert sorted(fs.port_numbers(fs.compress(ports))) == ports
    for bad in ("1-", "abc", "0-5", "9-3"):
        with pytest.raises(fs.ScanfleetError, match="--ports"):
            fs.port_numbers(bad)


def test_estimate_splits_the_probes_over_the_real_shards():
    live = sum(len(fs.addresses(block)) for block, _ in fs.LAYOUT)
    for targets, sweep, total in ((fs.TARGETS, False, 1024), (fs.SWEEP, True, 65536)):
        per_port = 1 if sweep else 100
        everything = live * per_port + (total - live) * fs.ARP_TRIES
        for mode in ("contiguous", "interleaved"):
            for n in (1, 2, 3):
                shards = fs.shard_probes(targets, n, mode, ports=100, sweep=sweep)
                assert len(shards) == n and sum(shards) == everything
    plan = fs.estimate(["one_phase-contiguous-1", "stock-1"], cap=1000, ports=100, stock_limit=10, repeat=2)
    assert plan["per_variant"]["one_phase-contiguous-1"] == round((live * 100 + (1024 - live) * fs.ARP_TRIES) / 1000
                                                                  + fs.RUN_ALLOWANCE)
    assert plan["per_variant"]["stock-1"] == round(10 + fs.RUN_ALLOWANCE)
    assert plan["total"] == 2 * sum(plan["per_variant"].values())


# ---- the playbook process: failure and time-out (real processes, no lab) ------------------------------------------

def test_run_playbook_reports_rc_and_output_tail(tmp_path):
    log = tmp_path / "run.log"
    result = fs.run_playbook([sys.executable, "-c", "print('first'); print('last words'); raise SystemExit(3)"], log,
                             60)
    assert result["rc"] == 3 and "last words" in result["tail"]
    assert result["maxrss_kib"] > 0 and result["end"] >= result["start"]


def test_run_playbook_ends_its_process_group_on_timeout(tmp_path):
    marker = tmp_path / "child.pid"
    code = (f"import subprocess, time; p = subprocess.Popen(['sleep', '60']); open({str(marker)!r}, 'w')"
            ".write(str(p.pid)); time.sleep(60)")
    result = fs.run_playbook([sys.executable, "-c", code], tmp_path / "run.log", 3)
    assert result["rc"] is None and "timed out" in result["error"]
    child = int(marker.read_text())
    for _ in range(50):  # the grandchild got the signal too (same process group): gone, or a zombie left to reap
        try:
            stat = Path(f"/proc/{child}/stat").read_text()
        except FileNotFoundError:
            break
        if stat[stat.rindex(")") + 2] == "Z":
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"process {child} of the playbook's group still runs")


# ---- what the benchmark gives the role ----------------------------------------------------------------------------

def test_every_variant_passes_role_variables_of_their_declared_type(tmp_path):
    import yaml

    from scanfleet.state import check_run_id

    spec = yaml.safe_load((ROOT / "roles" / "nmap_scan" / "meta" / "argument_specs.yml").read_text())
    options = spec["argument_specs"]["main"]["options"]
    kinds = {"str": str, "int": int, "list": list, "bool": bool, "dict": dict}
    work = tmp_path / "20261202T050000Z"
    for name, v in fs.VARIANTS.items():
        run_id = f"{work.name}-{name}-r1"
        assert check_run_id(run_id) == run_id
        extra = fs.extra_vars(name, run_id=run_id, results=work, ports="1-1024", cap=2000, stock_limit=180)
        for key, value in extra.items():
            assert key in options, f"{name}: {key} is no variable of the nmap_scan role"
            kind = kinds.get(options[key].get("type", "str"))
            assert kind is None or isinstance(value, kind), f"{name}: {key}={value!r} is not {options[key]['type']}"
            assert value in options[key].get("choices", [value]), f"{name}: {key}={value!r}"
        assert extra["nmap_scan_max_rate_per_scanner"] == 2000 and extra["nmap_scan_mode"] == v["mode"]
        assert extra["nmap_scan_targets"] == [fs.SWEEP if v["kind"] == "sweep" else fs.TARGETS]
        assert ("nmap_scan_nmap" in extra) is (v["kind"] == "stock")


# ---- the whole program, with a stand-in for ansible-playbook (no lab) -----------------------------------------------

FAKE_PLAYBOOK = '''#!{python}
"""Stands in for ansible-playbook: copies a finished run directory to RESULTS/RUN_ID (or fails, for FAIL)."""
import json, shutil, sys
from pathlib import Path
extra = json.loads(sys.argv[sys.argv.index("-e") + 1])
run = Path(extra["nmap_scan_results_dir"]) / extra["nmap_scan_run_id"]
Path({calls!r}).open("a").write(json.dumps([extra, sys.argv[sys.argv.index("--limit") + 1]]) + "\\n")
if {fail!r} in run.name:
    print("TASK [scanfleet.fleet.nmap_scan : Plan]\\nfatal: [localhost]: FAILED! => boom")
    sys.exit(4)
shutil.copytree({template!r}, run)
state = json.loads((run / "state.json").read_text())
state["run_id"] = run.name
(run / "state.json").write_text(json.dumps(state))
'''


def test_main_runs_every_variant_reports_a_failure_and_goes_on(tmp_path):
    template = two_phase_run(tmp_path / "template")
    pairs.merge_run(template, template / "phase2", template / "merged.xml")
    calls = tmp_path / "calls.jsonl"
    fake = tmp_path / "ansible-playbook"
    fake.write_text(FAKE_PLAYBOOK.format(python=sys.executable, calls=str(calls), fail="one_phase-contiguous-2",
                                         template=str(template)))
    fake.chmod(0o755)
    out, chart_png = tmp_path / "out.json", tmp_path / "chart.png"
    names = ["one_phase-contiguous-1", "one_phase-contiguous-2", "two_phase-1"]
    rc = fs.main(["--variants", ",".join(names), "--cap", "500", "--ports", "22,80", "--ansible-playbook", str(fake),
                  "--results", str(tmp_path / "results"), "--out", str(out), "--chart", str(chart_png)])
    assert rc == 1  # one variant failed
    doc = json.loads(out.read_text())
    assert list(doc["variants"]) == names
    failed = doc["variants"]["one_phase-contiguous-2"]
    assert failed["seconds"] is None and failed["failed"][0]["rc"] == 4 and "boom" in failed["failed"][0]["tail"]
    ok = doc["variants"]["two_phase-1"]
    assert ok["seconds"] is not None and ok["tail"]["service"]["tail"] == fs.tail(fs.job_runs(template),
                                                                                     "service")["tail"]
    assert doc["services"]["same"] and doc["services"]["reference"] == "one_phase-contiguous-1"
    assert doc["services"]["open_ports"] == len(open_ports(template / "merged.xml")) > 0
    assert sorted(doc["services"]["reference_services"]) == sorted(open_ports(template / "merged.xml"))
    assert "FAILED (rc 4)" in doc["markdown"]
    if importlib.util.find_spec("matplotlib") is None:  # bench/requirements.txt, not in make venv
        assert doc["chart"].startswith("no chart") and not chart_png.exists()
    else:
        assert doc["chart"] == str(chart_png) and chart_png.read_bytes().startswith(b"\x89PNG")
    sent = [json.loads(line) for line in calls.read_text().splitlines()]
    assert [limit for _, limit in sent] == ["scanner1", "scanner1:scanner2", "scanner1"]
    assert {e["nmap_scan_max_rate_per_scanner"] for e, _ in sent} == {500}
    assert {e["nmap_scan_ports"] for e, _ in sent} == {"22,80"}
    assert len({e["nmap_scan_run_id"] for e, _ in sent}) == len(names)


def test_job_runs_of_a_moved_results_directory(tmp_path):
    run = two_phase_run(tmp_path / "first")
    before = fs.job_runs(run)
    moved = tmp_path / "elsewhere" / RUN_ID
    moved.parent.mkdir()
    shutil.move(run, moved)  # phase2.json still names the XML at the old place
    after = fs.job_runs(moved)
    assert [(r["phase"], r["id"], r["start"], r["end"]) for r in after] == [
        (r["phase"], r["id"], r["start"], r["end"]) for r in before]
    assert all(r["xml"].startswith(str(moved)) for r in after)


def test_session_rss_sums_the_processes_of_the_session():
    import subprocess

    proc = subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30 & wait"], start_new_session=True)
    try:
        time.sleep(0.5)
        members = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                    status = (entry / "status").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[3]) == proc.pid:  # state ppid pgrp session
                    rss = [line for line in status.splitlines() if line.startswith("VmRSS:")]
                    members.append(int(rss[0].split()[1]) if rss else 0)
        assert len(members) == 3  # sh and its two sleeps
        assert fs.session_rss(proc.pid) == sum(members) > 0
    finally:
        fs.stop_group(proc.pid, (1, 5, 5))  # the sleeps ignore SIGINT (background jobs of sh): SIGTERM ends them
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)
