# The front door. `make demo` and `make test` each do the whole set-up on a fresh Debian/Ubuntu.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export KEEPER_SHARED_DIR ?= $(abspath ../shared)

.PHONY: setup redis browser test lint typecheck unit demo bench clean artifacts artifacts-check

setup: $(VENV)/.installed node_modules/.installed

# setup.py compiles these with mypyc (the list is keeper/_compiled.py's): a changed source means a rebuild
COMPILED := keeper/domain/checks.py keeper/domain/screen/edges.py keeper/domain/screen/linear.py \
	keeper/domain/screen/rows.py keeper/domain/screen/screen.py keeper/domain/decide.py \
	keeper/domain/keeper_batch.py keeper/domain/exposure.py keeper/domain/intents.py keeper/domain/caps.py \
	keeper/domain/guards.py \
	keeper/domain/margin/health.py keeper/domain/margin/sizing.py \
	keeper/domain/margin/tiers.py keeper/replay/route.py keeper/store/lines.py

$(VENV)/.installed: pyproject.toml setup.py keeper/_compiled.py $(COMPILED)
	@scripts/ensure-system.sh python
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	@touch $@

# the chain venues' local node (anvil, node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil) and the
# protocol sources the committed artifacts were built from (a test checks their hashes): npm, from the lockfile
node_modules/.installed: package.json package-lock.json
	@scripts/ensure-system.sh node
	npm ci --ignore-scripts --no-audit --no-fund
	@touch $@

# Morpho Blue's bytecode from the pinned npm package with the compiler it pins (solc-js 0.8.19, via-IR):
# regenerates keeper/chain/artifacts/morpho-blue.json byte for byte; then the Aave v3 subset (the
# compiled artifacts @aave/core-v3 ships, with link references) into aave-v3.json.gz;
# artifacts-check fails if either differs
artifacts:
	@scripts/ensure-system.sh node
	npm ci --ignore-scripts --no-audit --no-fund
	@touch node_modules/.installed
	node scripts/build-artifacts.mjs
	node scripts/build-aave-artifacts.mjs

artifacts-check:
	node scripts/build-artifacts.mjs --check
	node scripts/build-aave-artifacts.mjs --check

redis:
	@scripts/ensure-system.sh redis

browser:
	@scripts/ensure-system.sh chromium || echo "no chromium: the status page test will skip"

lint: setup
	$(VENV)/bin/ruff check keeper tests bench

typecheck: setup
	$(VENV)/bin/mypy

unit: setup redis
	$(VENV)/bin/pytest -q

test: setup redis browser
	$(VENV)/bin/ruff check keeper tests bench
	$(VENV)/bin/mypy
	PYTHONASYNCIODEBUG=$${PYTHONASYNCIODEBUG:-0} $(VENV)/bin/pytest -q
	@# the pure-Python sources of the compiled modules (setup.py) must keep deciding the same
	KEEPER_PURE=1 $(VENV)/bin/pytest -q tests/domain tests/execution/test_keeper_exactly_once.py \
		tests/execution/test_keeper_runner.py tests/execution/test_keeper_reference_venue.py

demo: setup redis
	$(VENV)/bin/keeper demo

bench: setup redis
	$(PY) bench/run.py

# retention's soak at full size: 20M events through writer, keeper, executor group and retention,
# then archive + hot log replayed against the full copy (bench/bench_retention.py; ~20 min here)
.PHONY: soak
soak: setup redis
	BENCH_RETENTION_EVENTS=20000000 BENCH_RETENTION_SOAK_ONLY=1 $(PY) bench/bench_retention.py

# a local Redis Cluster (3 primaries, a replica each) of redis-servers on free loopback ports, data
# and cluster.json (ports, PIDs) in .keeper/cluster; prints its redis+cluster:// URL. cluster-stop
# stops it by PID (SIGTERM); a stopped cluster starts again as it was (same ports, its data)
.PHONY: cluster cluster-stop
cluster: setup redis
	$(PY) -m keeper.store.cluster start --dir .keeper/cluster

cluster-stop:
	$(PY) -m keeper.store.cluster stop --dir .keeper/cluster

clean:
	rm -rf $(VENV) node_modules .keeper .pytest_cache .mypy_cache .ruff_cache build *__mypyc*.so keeper/_compiled.json
	find keeper -name "*.so" -delete
