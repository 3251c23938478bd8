# skiff: `make demo`, `make test`, `make bench`; `make install` (PREFIX, DESTDIR); `make docs`.
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

.PHONY: all deps build test demo bench docs install uninstall clean

# Where `make install` puts things: $(DESTDIR)$(PREFIX)/bin/skiff, man pages in
# $(MANDIR)/man1, completions where bash-completion, zsh and fish look for them.
PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
DATADIR ?= $(PREFIX)/share
MANDIR ?= $(DATADIR)/man
INSTALL ?= install

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

clean:
	$(CARGO) clean
	rm -rf demo-work
