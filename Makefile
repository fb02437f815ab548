# scanfleet: one command for the demo, one for the tests, on a fresh Debian 12 machine as root.
#   make demo   lab up, provision, (probes, distributed scan, merged report)
#   make test   lint, unit tests, patch/build tests on nmap sources, molecule scenarios
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
ROOT := $(CURDIR)
VENV := $(ROOT)/.venv
BIN := $(VENV)/bin
# Ansible and molecule keep their state inside the checkout, not in the user's home.
export HOME := $(ROOT)/.cache/home
export ANSIBLE_LOCAL_TEMP := $(ROOT)/.cache/ansible/tmp
export ANSIBLE_CONFIG := $(ROOT)/ansible.cfg
export PATH := $(BIN):$(PATH)
export PYTHONDONTWRITEBYTECODE := 1

# Debian packages: lab (debootstrap, apt proxy, iproute2: ip and tc for the faults; nftables: packet loss where
# the kernel has no netem), controller-side tools (xmllint, xsltproc,
# gpg, dpkg-source), stock nmap for comparisons, nmap's ndiff (the tests check it reads the merged XML), and the
# build dependencies of the nmap sources the tests patch and compile (7.93: Lua 5.3 + PCRE; 7.95/7.991: Lua 5.4 + PCRE2).
APT_PACKAGES := python3 python3-venv python3-dev debootstrap apt-cacher-ng iproute2 util-linux \
  nftables openssh-client libxml2-utils xsltproc gnupg dpkg-dev patch xz-utils bzip2 nmap ndiff libcap2-bin \
  build-essential libpcap-dev libssl-dev zlib1g-dev libssh2-1-dev liblinear-dev lua-lpeg-dev \
  liblua5.3-dev liblua5.4-dev libpcre3-dev libpcre2-dev

.PHONY: help deps venv controller ee lint unit build-test lab-test molecule bench bench-quick bench-scale soak test demo lab-up lab-down provision clean

help:
	@echo "make demo | make test | make lint | make unit | make lab-up | make lab-down | make clean | make controller | make ee"

.cache/deps.stamp:
	@mkdir -p .cache
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null
	@touch $@

deps: .cache/deps.stamp

# The virtualenv of make lint/unit/test: runtime (requirements.txt) and development and test tools
# (requirements-dev.txt), both pinned by constraints.txt, and the scanfleet package of this clone.
$(BIN)/scanfleet: requirements.txt requirements-dev.txt constraints.txt pyproject.toml | .cache/deps.stamp
	test -x $(BIN)/python || /usr/bin/python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt -r requirements-dev.txt -c constraints.txt
	$(BIN)/pip install -q --no-deps -e .
	@touch $@

# The clone is the collection scanfleet.fleet: this link makes its FQCNs resolve (collections_path in ansible.cfg).
COLLECTION_LINK := .cache/collections/ansible_collections/scanfleet/fleet
venv: $(BIN)/scanfleet
	@mkdir -p $(HOME) $(ANSIBLE_LOCAL_TEMP) $(dir $(COLLECTION_LINK))
	ln -sfn ../../../.. $(COLLECTION_LINK)

# A controller for your own VMs, without root and without the lab's Debian packages: a virtualenv with the
# runtime requirements only and the scanfleet package (README: Quickstart on your own VMs). It is not the
# virtualenv of make test (make venv installs the test tools too, after make deps).
CONTROLLER_VENV ?= $(ROOT)/.venv-controller
controller:
	test -x $(CONTROLLER_VENV)/bin/python || python3 -m venv $(CONTROLLER_VENV)
	$(CONTROLLER_VENV)/bin/pip install -q -r requirements.txt -c constraints.txt
	$(CONTROLLER_VENV)/bin/pip install -q --no-deps -e .
	@mkdir -p $(HOME) $(ANSIBLE_LOCAL_TEMP) $(dir $(COLLECTION_LINK))
	ln -sfn ../../../.. $(COLLECTION_LINK)
	@for tool in ssh xmllint xsltproc gpg; do command -v $$tool >/dev/null || \
	  echo "missing on this controller: $$tool (see README: controller prerequisites)"; done

# The execution environment's build context (for AWX/AAP or ansible-navigator): the collection tarball, then
# ansible-builder renders execution-environment.yml into $(EE_CONTEXT) (no container engine needed). Build the
# image from it with: podman build -f $(EE_CONTEXT)/Containerfile -t scanfleet-ee $(EE_CONTEXT)
EE_CONTEXT ?= $(ROOT)/.cache/ee/context
ee: venv
	rm -rf .cache/ee/collection && mkdir -p .cache/ee/collection
	$(BIN)/ansible-galaxy collection build --force --output-path .cache/ee/collection .
	$(BIN)/ansible-builder create -f execution-environment.yml -c $(EE_CONTEXT) --output-filename Containerfile

lint: venv
	$(BIN)/ruff check .
	$(BIN)/yamllint -s .
	$(BIN)/ansible-lint -q

unit: venv
	$(BIN)/pytest -q -m "not build and not lab" tests

build-test: venv
	$(BIN)/pytest -q -m build tests

# Tests against real lab hosts over SSH (bad input to the playbooks, probe rules against lab targets).
# Their output is also kept in $(LOGS): a failed make test ends with a digest of what failed there.
LOGS := $(ROOT)/.cache/logs
lab-test: venv
	@mkdir -p $(LOGS)
	$(BIN)/pytest -q -m lab tests 2>&1 | tee $(LOGS)/lab-test.log

# Scenarios run one after the other (each brings its own lab hosts up and down).
SCENARIOS ?= default scan faults
molecule: venv
	@mkdir -p $(LOGS)
	for scenario in $(SCENARIOS); do $(BIN)/molecule test -s $$scenario 2>&1 | tee $(LOGS)/molecule-$$scenario.log; done

# The lab's target hosts serve the tests against real services; they are ended even when a stage fails,
# and a failure ends with a short digest of the failed tasks and tests (the full logs stay in .cache/logs).
# (The sub-make has a line of its own: make -n runs lines that call $(MAKE), and must not end the lab.)
test: lint unit build-test
	rm -rf $(LOGS) && mkdir -p $(LOGS)
	lab/targets.sh up
	$(MAKE) lab-test molecule || echo $$? > $(LOGS)/failed
	lab/targets.sh down
	lab/lab.sh gc
	if [ -f $(LOGS)/failed ]; then $(BIN)/python tests/failure_digest.py $(LOGS); exit 1; fi

lab-up: venv
	lab/lab.sh up

lab-down:
	lab/lab.sh down

provision: lab-up
	$(BIN)/ansible-playbook playbooks/provision.yml
	$(BIN)/ansible scanners -m ansible.builtin.command -a "/opt/scanfleet/nmap-current/bin/nmap --version" \
	  --become --become-user scanfleet -o

# The main job on the lab: target hosts up, then a distributed scan of all their ports by the 3 scanners,
# merged into results/RUN_ID/ (the run id follows from targets and options: running it again resumes).
demo: provision
	lab/targets.sh up
	$(BIN)/ansible-playbook playbooks/scan.yml -e '{"nmap_scan_target_groups": ["targets"], "nmap_scan_ports": "1-65535"}'

# Benchmarks (not tests): figures are printed and written to bench/results/*.json; see bench/RESULTS.md.
bench-quick: build-test
	$(BIN)/python bench/silent_port.py --nmap stock-7.93=/usr/bin/nmap \
	  --nmap patched-7.93=.cache/build-test/bookworm/prefix/bin/nmap \
	  --nmap patched-7.95=.cache/build-test/trixie/prefix/bin/nmap --out bench/results/silent_port.json
	$(BIN)/python bench/silent_port_rate.py --nmap patched-7.95=.cache/build-test/trixie/prefix/bin/nmap \
	  --nmap patched-7.93=.cache/build-test/bookworm/prefix/bin/nmap --ports 1000 --in-flight 200 \
	  --in-flight 1000 --in-flight build --out bench/results/silent_port_rate.json
	$(BIN)/python bench/silent_port_rate.py --nmap patched-7.95=.cache/build-test/trixie/prefix/bin/nmap \
	  --nmap patched-7.93=.cache/build-test/bookworm/prefix/bin/nmap --ports 4000 --in-flight build \
	  --out bench/results/silent_port_rate_4000.json

bench: bench-quick provision
	$(BIN)/pip install -q -r bench/requirements.txt -c constraints.txt
	lab/targets.sh up
	$(BIN)/python bench/custom_services.py --patched .cache/build-test/trixie/prefix \
	  --out bench/results/custom_services.json
	$(BIN)/python bench/lab_sweep.py
	$(BIN)/python bench/shard_bench.py
	$(BIN)/python bench/merge_scale.py --out bench/results/merge_scale.json

# Soak (a benchmark, not in make test): a fault-free scan of the lab targets, then 10 scans each with one fault
# drawn by a seeded random draw (bench/soak.py --seed); the table goes to bench/results/soak.json and is printed.
soak: provision
	lab/targets.sh up
	$(BIN)/python bench/soak.py --out bench/results/soak.json

# The fleet at scale (issue 11; a benchmark, not in make test): the scale lab (lab/scale.sh up: the target hosts,
# 10.78.0.0/22 and the /16 sweep space), then 1, 2 and 3 scanners one-phase and two-phase, stock nmap and the /16
# sweep, all at one per-scanner cap (docs/benchmarks.md). BENCH_SCALE_ARGS: e.g. --cap 1000 --variants two_phase-1,...
BENCH_SCALE_ARGS ?=
bench-scale: provision
	$(BIN)/pip install -q -r bench/requirements.txt -c constraints.txt
	lab/scale.sh up
	$(BIN)/python bench/fleet_scale.py $(BENCH_SCALE_ARGS)

clean: lab-down
	rm -rf .cache results
