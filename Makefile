# Mercato developer commands. `make help` lists them.
SHELL := bash
.DEFAULT_GOAL := help
CARGO ?= cargo

.PHONY: help setup dev dev-reset test fuzz lint fmt clippy crds e2e check-deploy bench

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

setup: ## Fetch dependencies and check for PostgreSQL, Chromium and cargo-nextest
	$(CARGO) fetch
	@command -v cargo-nextest >/dev/null || $(CARGO) install --locked cargo-nextest
	@scripts/postgres.sh >/dev/null && echo "setup: PostgreSQL is available"
	@scripts/chromium.sh >/dev/null && echo "setup: Chromium and ChromeDriver are available"

SERVICE_BINS := -p mercato-auth -p mercato-product -p mercato-order -p mercato-payment -p mercato-gateway -p mercato-storefront -p mercato-devstack
BIN_DIR := $(or $(CARGO_TARGET_DIR),target)/debug

dev: ## Run the whole store here: the shop and its API on http://127.0.0.1:8080/ (PORT_BASE=9080 to move it)
	@$(CARGO) build -q --bins $(SERVICE_BINS)
	@url="$$(scripts/postgres.sh)" && \
	MERCATO_POSTGRES_URL="$$url" MERCATO_BIN_DIR="$(BIN_DIR)" exec $(BIN_DIR)/mercato-dev

dev-reset: ## Like `make dev`, but first drop its databases and generated credentials
	@$(CARGO) build -q --bins $(SERVICE_BINS)
	@url="$$(scripts/postgres.sh)" && \
	MERCATO_POSTGRES_URL="$$url" MERCATO_BIN_DIR="$(BIN_DIR)" RESET=true exec $(BIN_DIR)/mercato-dev

e2e: ## Operator end-to-end suite against the cluster in KUBECONFIG (kind: see README); skips without one
	$(CARGO) run -q -p mercato-operator --example e2e

PERF_DIR := $(or $(CARGO_TARGET_DIR),target)/perf

bench: ## Benchmark the store and the operator (optimised build); writes bench/results.json, bench/operator.json
	$(CARGO) build --profile perf --bins $(SERVICE_BINS) -p mercato-bench -p mercato-operator --example bench
	@url="$$(scripts/postgres.sh)" && \
	MERCATO_POSTGRES_URL="$$url" $(PERF_DIR)/mercato-bench --bin-dir $(PERF_DIR)
	$(PERF_DIR)/examples/bench --out bench/operator.json

FUZZ_EXAMPLES ?= 100
TEST_FUZZ_EXAMPLES ?= 10

test: ## Check the README's and NOTES.txt's commands, run every test (real PostgreSQL, headless Chromium), then a short `make fuzz`
	@scripts/check-docs.sh
	@url="$$(scripts/postgres.sh)" && browser="$$(scripts/chromium.sh)" && eval "$$browser" && \
	export CHROMIUM CHROMEDRIVER && \
	if command -v cargo-nextest >/dev/null; then \
	  DATABASE_URL="$$url" $(CARGO) nextest run --workspace --all-features --no-fail-fast; \
	else \
	  DATABASE_URL="$$url" $(CARGO) test --workspace --all-features --no-fail-fast; \
	fi
	@$(MAKE) --no-print-directory fuzz FUZZ_EXAMPLES=$(TEST_FUZZ_EXAMPLES)

fuzz: ## schemathesis (every check) against every service's and the gateway's OpenAPI document on a store of its own
	@$(CARGO) build -q --bins $(SERVICE_BINS)
	@MERCATO_BIN_DIR="$(BIN_DIR)" FUZZ_EXAMPLES="$(FUZZ_EXAMPLES)" scripts/fuzz.sh

lint: check-deploy ## Formatting, clippy (warnings are errors), and the deployment checks
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --all-features -- -D warnings

check-deploy: ## Static checks of the Dockerfile, chart, CRD, examples, operator objects, kind and Tilt
	scripts/check-deploy.sh

crds: ## Regenerate crds/store.yaml and the chart's copy, and the chart's RBAC rules, from the Rust code
	$(CARGO) run --quiet -p mercato-operator -- crd > crds/store.yaml.tmp
	mv crds/store.yaml.tmp crds/store.yaml
	cp crds/store.yaml charts/mercato-operator/crds/store.yaml
	$(CARGO) run --quiet -p mercato-operator -- rbac > charts/mercato-operator/files/operator-rules.yaml.tmp
	mv charts/mercato-operator/files/operator-rules.yaml.tmp charts/mercato-operator/files/operator-rules.yaml

fmt: ## Format the code
	$(CARGO) fmt --all

clippy: lint
