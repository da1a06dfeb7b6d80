# flatstack: make install (idempotent), make run (the demo), make test (the suite).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || echo /root/.pyenv/versions/3.11.7/bin/python3.11)
VENV := .venv
APT_PACKAGES := busybox-static runc crun podman containerd uidmap umoci skopeo docker-registry \
	libseccomp2 libseccomp-dev strace iproute2 iptables procps util-linux jq gcc libc6-dev \
	sysbench fio iperf3 sockperf qemu-system-x86 runsc linux-image-amd64 cpio prometheus
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench clean

install: $(STAMP)
	@scripts/install-launcher.sh

$(STAMP): pyproject.toml scripts/install-deps.sh Makefile
	@scripts/install-deps.sh $(APT_PACKAGES)
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

run: install
	@$(VENV)/bin/python -m flatstack.demo

test: install
	@$(VENV)/bin/ruff check src tests benchmarks
	@$(VENV)/bin/pytest -q tests

lint: install
	@$(VENV)/bin/ruff check src tests benchmarks

bench: install
	@$(VENV)/bin/python benchmarks/lifecycle.py
	@$(VENV)/bin/python benchmarks/run_latency.py
	@$(VENV)/bin/python benchmarks/contract.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
