# Mercato developer commands. `make help` lists them.
SHELL := bash
.DEFAULT_GOAL := help
CARGO ?= cargo

.PHONY: help setup dev dev-reset test lint fmt clippy crds e2e

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

setup: ## Fetch dependencies and check for PostgreSQL and cargo-nextest
	$(CARGO) fetch
	@command -v cargo-nextest >/dev/null || $(CARGO) install --locked cargo-nextest
	@scripts/postgres.sh >/dev/null && echo "setup: PostgreSQL is available"

dev: ## Run the whole store here: gateway on 127.0.0.1:8080 (PORT_BASE=9080 to move it)
	@url="$$(scripts/postgres.sh)" && \
	MERCATO_POSTGRES_URL="$$url" exec $(CARGO) run -q -p mercato-devstack --bin mercato-dev

dev-reset: ## Like `make dev`, but first drop its databases and generated credentials
	@url="$$(scripts/postgres.sh)" && \
	MERCATO_POSTGRES_URL="$$url" RESET=true exec $(CARGO) run -q -p mercato-devstack --bin mercato-dev

test: ## Run every test against a real PostgreSQL (found or started by scripts/postgres.sh)
	@url="$$(scripts/postgres.sh)" && \
	if command -v cargo-nextest >/dev/null; then \
	  DATABASE_URL="$$url" $(CARGO) nextest run --workspace --all-features --no-fail-fast; \
	else \
	  DATABASE_URL="$$url" $(CARGO) test --workspace --all-features --no-fail-fast; \
	fi

lint: ## Formatting and clippy, warnings are errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --all-features -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all

clippy: lint
