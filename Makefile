# skiff: `make demo`, `make test`, `make bench`, `make fuzz`; `make install` (PREFIX, DESTDIR);
# `make docs`.
#
# Every target but install, uninstall and docs installs what it needs first
# (contrib/install-deps.sh, idempotent) and builds the workspace once, in release mode: the tests
# and benchmarks drive the release binaries.

CARGO ?= cargo
export SKIFF_BIN := $(CURDIR)/target/release/skiff
# cfsctl is installed with `cargo install`; the Go peers by contrib/install-deps.sh into
# $(SKIFF_PEERS_DIR)/bin.
export SKIFF_PEERS_DIR ?= /var/cache/skiff/go-peers
export PATH := $(SKIFF_PEERS_DIR)/bin:$(HOME)/.cargo/bin:/usr/local/go/bin:$(PATH)

.PHONY: all deps build test demo bench docs install uninstall clean fuzz fuzz-build fuzz-seeds

# Where `make install` puts things: $(DESTDIR)$(PREFIX)/bin/skiff, man pages in
# $(MANDIR)/man1, completions where bash-completion, zsh and fish look for them.
PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
DATADIR ?= $(PREFIX)/share
MANDIR ?= $(DATADIR)/man
INSTALL ?= install

# The cargo-fuzz targets (fuzz/fuzz_targets/): `make fuzz` runs each for FUZZ_SECONDS, `make test`
# for FUZZ_TEST_SECONDS (60 under CI, else 0: skipped). One target at a time: libFuzzer runs
# in-process on one core.
FUZZ_TARGETS := zstd_chunked_toc tar_split tar_diff delta_manifest byteranges image_ref layer_import
FUZZ_SECONDS ?= 3600
ifeq ($(CI),true)
FUZZ_TEST_SECONDS ?= 60
else
FUZZ_TEST_SECONDS ?= 0
endif
# Every input must finish within 10 s and 2 GiB, or the run fails as on a crash.
FUZZ_FLAGS ?= -rss_limit_mb=2048 -timeout=10
FUZZ_BIN := fuzz/target/x86_64-unknown-linux-gnu/release

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
	@if [ "$(FUZZ_TEST_SECONDS)" -gt 0 ]; then \
		$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=$(FUZZ_TEST_SECONDS); \
	else \
		echo "fuzz targets skipped (CI is not true): make fuzz FUZZ_SECONDS=60"; \
	fi

demo: build
	./target/release/skiff-demo demo-work

bench: build
	./target/release/skiff-bench

# The man pages and completions are written from the clap definition into cli/doc and committed;
# `make test` fails (cli/tests/docs.rs) when they are not current.
docs:
	$(CARGO) run --release -p skiff --bin skiff-gen-docs -- cli/doc

# Builds nothing: run `make` (or `cargo build --release -p skiff`) first, as yourself, then
# `sudo make install`, so that no root-owned files land in target/. The man pages and
# completions are the committed ones in cli/doc.
install:
	@test -x target/release/skiff || { \
		echo "make install: target/release/skiff is not built: run 'make' (or 'cargo build --release -p skiff') first" >&2; \
		exit 1; }
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 \
		$(DESTDIR)$(DATADIR)/bash-completion/completions $(DESTDIR)$(DATADIR)/zsh/site-functions \
		$(DESTDIR)$(DATADIR)/fish/vendor_completions.d
	$(INSTALL) -m 755 target/release/skiff $(DESTDIR)$(BINDIR)/skiff
	$(INSTALL) -m 644 cli/doc/man/*.1 $(DESTDIR)$(MANDIR)/man1/
	$(INSTALL) -m 644 cli/doc/completions/skiff.bash $(DESTDIR)$(DATADIR)/bash-completion/completions/skiff
	$(INSTALL) -m 644 cli/doc/completions/_skiff $(DESTDIR)$(DATADIR)/zsh/site-functions/_skiff
	$(INSTALL) -m 644 cli/doc/completions/skiff.fish $(DESTDIR)$(DATADIR)/fish/vendor_completions.d/skiff.fish

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/skiff \
		$(addprefix $(DESTDIR)$(MANDIR)/man1/,$(notdir $(wildcard cli/doc/man/*.1))) \
		$(DESTDIR)$(DATADIR)/bash-completion/completions/skiff \
		$(DESTDIR)$(DATADIR)/zsh/site-functions/_skiff \
		$(DESTDIR)$(DATADIR)/fish/vendor_completions.d/skiff.fish

# Release build with debug assertions and overflow checks, AddressSanitizer (cargo-fuzz's default).
fuzz-build: deps
	cd fuzz && $(CARGO) +nightly fuzz build -O -a

# Seeds made from the fixtures; the fuzzer adds what it finds to the same directories.
fuzz-seeds: build
	./target/release/skiff-fuzz-seeds fuzz/corpus

# Each target for FUZZ_SECONDS; its log is fuzz/logs/TARGET.log, a failing input is kept in
# fuzz/artifacts/TARGET/. Fails on the first crash, timeout or memory excess. Temporary
# repositories go to a directory removed afterwards.
fuzz: fuzz-build fuzz-seeds
	@mkdir -p fuzz/logs; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	for t in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/artifacts/$$t; \
		echo "fuzz: $$t for $(FUZZ_SECONDS) s"; \
		if ! TMPDIR=$$tmp $(FUZZ_BIN)/$$t $(FUZZ_FLAGS) -max_total_time=$(FUZZ_SECONDS) \
			-print_final_stats=1 -artifact_prefix=fuzz/artifacts/$$t/ fuzz/corpus/$$t \
			>fuzz/logs/$$t.log 2>&1; then \
			tail -n 60 fuzz/logs/$$t.log; echo "fuzz: $$t FAILED (fuzz/logs/$$t.log)"; exit 1; \
		fi; \
		grep -E '^Done|peak_rss' fuzz/logs/$$t.log | sed "s/^/fuzz: $$t: /"; \
	done

clean:
	$(CARGO) clean
	rm -rf demo-work fuzz/target fuzz/logs
