"""Helpers shared by the patch tests: render the role's patch templates, evaluate its vars with Ansible."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import jinja2
import yaml

ROOT = Path(__file__).resolve().parent.parent
ROLE = ROOT / "roles" / "nmap_build"
PATCH_NAMES = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())["__nmap_build_patches"]
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
PATCH_VARS = ("nmap_build_service_wait_ms", "nmap_build_tcpwrapped_ms", "nmap_build_service_parallelism",
              "nmap_build_nse_timeout_cap_ms")


def render_patches(dest: Path, **overrides: int) -> list[Path]:
    """Render the role's patch templates with its defaults (and OVERRIDES) into DEST, in apply order."""
    values = {name: DEFAULTS[name] for name in PATCH_VARS} | overrides
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(ROLE / "templates" / "patches"),
                             keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in PATCH_NAMES:
        path = dest / name
        path.write_text(env.get_template(f"{name}.j2").render(**values))
        paths.append(path)
    return paths


def apply_patches(tree: Path, patches: list[Path], dry_run: bool = False, fuzz: int = 0,
                  verbose: bool = False) -> subprocess.CompletedProcess:
    """Apply PATCHES to TREE as the role does (patch -p1 --fuzz=0 --forward), stopping at the first that fails;
    FUZZ and VERBOSE (patch reports every hunk) are for the tests. The output is that of every patch applied."""
    outs = []
    for patch in patches:
        cmd = ["patch", "-p1", f"--fuzz={fuzz}", "--forward", "--batch", "-i", str(patch)]
        cmd += (["--dry-run"] if dry_run else []) + (["--verbose"] if verbose else [])
        outs.append(subprocess.run(cmd, cwd=tree, capture_output=True, text=True, check=False))
        if outs[-1].returncode != 0:
            break
    return subprocess.CompletedProcess([o.args for o in outs], outs[-1].returncode,
                                       "".join(o.stdout for o in outs), "".join(o.stderr for o in outs))


def role_var(name: str, version: str, source: str = "debian", system: str = "Debian-12") -> object:
    """The role variable NAME for nmap VERSION from SOURCE on SYSTEM, evaluated by Ansible from its vars files."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    proc = subprocess.run(
        ["ansible", "localhost", "-o", "-m", "ansible.builtin.debug", "-a", f"var={name}",
         "-e", f"@{ROLE / 'defaults' / 'main.yml'}", "-e", f"@{ROLE / 'vars' / 'main.yml'}",
         "-e", f"@{ROLE / 'vars' / (system + '.yml')}",
         "-e", json.dumps({"nmap_build_version": version, "nmap_build_source": source, "role_path": str(ROLE),
                           "playbook_dir": str(ROOT / "playbooks")})],
        capture_output=True, text=True, check=True, env=env, cwd=ROOT,
    )
    payload = proc.stdout.split("=>", 1)[1]
    return json.loads(payload)[name]


def role_configure_args(version: str, source: str = "debian", system: str = "Debian-12") -> list[str]:
    """The role's own configure arguments for VERSION, evaluated by Ansible from its vars files."""
    args = role_var("__nmap_build_configure_args", version, source, system)
    assert isinstance(args, list)
    return args


def role_version_pattern(version: str) -> str:
    """The regex the role's verify.yml searches `nmap --version` for when nmap_build_version is VERSION."""
    pattern = role_var("__nmap_build_version_reported", version)
    assert isinstance(pattern, str)
    return pattern
