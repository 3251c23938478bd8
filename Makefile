# skiff: `make demo`, `make test`, `make bench`; `make docs`.
#
# Every target but docs installs what it needs first (contrib/install-deps.sh, idempotent) and
# builds the workspace once, in release mode: the tests and benchmarks drive the release binaries.

CARGO ?= cargo
export SKIFF_BIN := $(CURDIR)/target/release/skiff
# cfsctl is installed with `cargo install`; the Go peers by contrib/install-deps.sh into
# $(SKIFF_PEERS_DIR)/bin.
export SKIFF_PEERS_DIR ?= /var/cache/skiff/go-peers
export PATH := $(SKIFF_PEERS_DIR)/bin:$(HOME)/.cargo/bin:/usr/local/go/bin:$(PATH)

.PHONY: all deps build test demo bench docs clean

all: build

deps:
	bash contrib/install-deps.sh

build: deps
	$(CARGO) build --release --workspace --all-targets

# Unit tests, then the end-to-end tests against skopeo, docker-registry and cfsctl.
test: build
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --release --workspace --no-fail-fast; \
	else \
		$(CARGO) test --release --workspace --no-fail-fast; \
	fi

demo: build
	./target/release/skiff-demo demo-work

bench: build
	./target/release/skiff-bench

# The man pages and completions are written from the clap definition into cli/doc and committed;
# `make test` fails (cli/tests/docs.rs) when they are not current.
docs:
	$(CARGO) run --release -p skiff --bin skiff-gen-docs -- cli/doc

clean:
	$(CARGO) clean
	rm -rf demo-work
