"""The scale lab's layout (inventory/lab/targets.yml, docs/lab.md "Scale lab") holds what the scans and the
benchmark rely on: every scale address inside the scale space and held by one host only, the target set
10.78.0.0/22 with the documented mix, molecule/scan's slice 10.78.0.0/26 carrying the three target hosts'
services, and the declared scopes covering the lab's two ranges and nothing more."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
INVENTORY = ROOT / "inventory" / "lab" / "targets.yml"
SPACE = ipaddress.ip_network("10.78.0.0/16")
TARGET_SET = ipaddress.ip_network("10.78.0.0/22")
SLICE = ipaddress.ip_network("10.78.0.0/26")


def scale_hosts() -> dict[str, tuple[str, dict, list[ipaddress.IPv4Address]]]:
    """name -> (group, host vars, its scale addresses), for every lab target host."""
    children = yaml.safe_load(INVENTORY.read_text())["all"]["children"]
    hosts = {}
    for group in ("targets", "scale_targets"):
        for name, hv in children[group]["hosts"].items():
            r = hv.get("targets_scale_addresses")
            addresses = ([ipaddress.ip_address(f"{r['net']}.{i}") for i in range(r["first"], r["last"] + 1)]
                         if r else [])
            hosts[name] = (group, hv, addresses)
    return hosts


def test_scale_addresses_lie_in_the_space_and_belong_to_one_host_each():
    seen: dict[ipaddress.IPv4Address, str] = {}
    for name, (_, hv, addresses) in scale_hosts().items():
        assert addresses, f"{name} has no scale addresses"
        for address in addresses:
            assert address in SPACE, f"{name}: {address} outside {SPACE}"
            assert address not in seen, f"{address} on both {seen[address]} and {name}"
            seen[address] = name
        assert ipaddress.ip_address(hv["ansible_host"]) not in SPACE


def test_the_target_set_has_services_silent_closed_and_dead_addresses():
    hosts = scale_hosts()
    in_set = {name: [a for a in addresses if a in TARGET_SET] for name, (_, _, addresses) in hosts.items()}
    services = sum(len(in_set[n]) for n, (group, _, _) in hosts.items() if group == "targets")
    silent = hosts["target-silent"][1]["targets_responder"]
    assert {entry["kind"] for entry in silent} == {"silent"} and len(silent) == 8
    assert hosts["target-closed"][1]["targets_services"] == [] and "targets_responder" not in hosts["target-closed"][1]
    assert (services, len(in_set["target-silent"]), len(in_set["target-closed"])) == (48, 128, 128)
    live = sum(len(v) for v in in_set.values())
    assert TARGET_SET.num_addresses - live == 720  # dead: nothing answers ARP


def test_molecule_slice_holds_the_target_hosts_services():
    for name, (group, _, addresses) in scale_hosts().items():
        inside = [a for a in addresses if a in SLICE]
        assert (len(inside) == 16) if group == "targets" else not inside, (name, inside)


def test_the_lab_scopes_cover_the_two_lab_ranges_and_nothing_more():
    for path in (ROOT / "inventory" / "lab" / "group_vars" / "all.yml",
                 ROOT / "molecule" / "shared" / "group_vars" / "all.yml"):
        scope = yaml.safe_load(path.read_text())["scanfleet_scope"]
        assert scope == ["10.77.0.0/24", str(SPACE)], path
