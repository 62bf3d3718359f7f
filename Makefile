# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# A second stamp for the bench extra: `make test` installs only .[dev] and
# never removes what `make bench` added, so the two stamps do not fight.
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: test demo lint typecheck pytest etcd chromium iproute2 bench bench-cluster clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check ergo_py tests benchmarks examples
	$(VENV)/bin/ruff format --check ergo_py tests benchmarks examples
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# The suite runs on the standard asyncio loop; the network-facing part runs
# again on uvloop, which nodes use whenever it is installed (its TLS layer
# and transports behave differently in the corners).
UVLOOP_TESTS := tests/test_network.py tests/test_tls_refusals.py tests/test_tls_rotation.py \
	tests/test_handover.py tests/test_live_rotation.py tests/test_keepalive.py \
	tests/test_acceptor_budget.py tests/test_meta_tcp.py tests/test_meta_web.py \
	tests/interop/test_ergo_interop.py \
	tests/test_observe.py tests/test_observer_page.py tests/test_process_observe.py \
	tests/test_link_faults.py tests/test_netns.py tests/test_send_batches.py

pytest: $(STAMP)
	$(PY) -m pytest -q
	ERGO_PY_LOOP=uvloop $(PY) -m pytest -q $(UVLOOP_TESTS)

# The etcd registrar's tests run a real etcd: Debian's etcd-server, installed
# here when missing. Without apt (or root) this says so and the tests skip.
etcd:
	@command -v etcd >/dev/null 2>&1 || { \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server) \
	    >/dev/null 2>&1 || echo "etcd-server could not be installed: the etcd registrar tests will skip"; }

# The observer page's test drives a real headless browser: Debian's chromium,
# installed here when missing. Without apt (or root) this says so and the test skips.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
	    >/dev/null 2>&1 || echo "chromium could not be installed: the observer page's browser test will skip"; }

# Nodes on real addresses (Cluster(netns=True)) need iproute2's ip, and root:
# installed here when missing; without it the netns tests skip and say why.
iproute2:
	@command -v ip >/dev/null 2>&1 || test -x /usr/sbin/ip || test -x /sbin/ip || { \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2) \
	    >/dev/null 2>&1 || echo "iproute2 could not be installed: the netns tests will skip"; }

test: lint typecheck etcd chromium iproute2 pytest

demo: $(STAMP)
	$(PY) -m ergo_py.cli.main demo

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

# Full run (under 10 minutes on 2 cores); BENCH_QUICK=1 for a smoke run.
bench: $(BENCH_STAMP)
	$(PY) benchmarks/run.py

# The 16-node scale scenario (about a minute): network namespaces when root
# with iproute2, processes on loopback otherwise. Exits 1 if a message is lost.
bench-cluster: $(STAMP)
	$(PY) benchmarks/cluster.py

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache
