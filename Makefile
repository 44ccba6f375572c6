# ambit: the two set-up commands are `make demo` and `make test` (run as root on a fresh Debian machine).
# Each installs the system packages it needs, builds what it runs, and cleans up after itself.

SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)
CARGO ?= cargo
# What the local cluster and the tests need at run time: ip, nft, curl (a client nobody here wrote),
# setpriv (util-linux, to check the not-root message), ps, python3 (the demo and bench scripts read JSON with it).
APT_PACKAGES := iproute2 nftables curl procps util-linux python3 tcpdump nginx-light
AMBIT := target/release/ambit

.PHONY: all deps build demo test lint unit e2e bench clean

all: build

deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

build: deps
	$(CARGO) build --release --locked --bin ambit

demo: build
	scripts/demo.sh $(AMBIT)

lint:
	$(CARGO) fmt --all -- --check
	@# Sans-IO cores stay free of the async runtime, and rustls keeps one crypto provider (aws-lc-rs, never ring).
	@for c in ambit-types ambit-policy ambit-config ambit-l7; do \
	  if $(CARGO) tree --locked -e normal -p $$c | grep -qE '(^|[ ─])tokio v'; then echo "$$c must not depend on tokio"; exit 1; fi; \
	done
	@if $(CARGO) tree --locked -e normal,build | grep -qE '(^|[ ─])ring v'; then echo "ring must not be in the build"; exit 1; fi
	$(CARGO) clippy --locked --workspace --all-targets --features ambit/netns-tests,ambit-capture/netns-tests,ambit-node/netns-tests,ambit-agent/netns-tests -- -D warnings

unit:
	$(CARGO) test --locked --workspace

# End-to-end tests on real network namespaces: they need root and fail (never skip) without it.
e2e: deps
	$(CARGO) test --locked -p ambit --features netns-tests --test local_cluster -- --test-threads=2
	$(CARGO) test --locked -p ambit --features netns-tests --test mesh -- --test-threads=2
	$(CARGO) test --locked -p ambit --features netns-tests --test proxy_config
	$(CARGO) test --locked -p ambit --features netns-tests --test agent -- --test-threads=2
	$(CARGO) test --locked -p ambit --features netns-tests --test waypoint
	$(CARGO) test --locked -p ambit-capture --features netns-tests --test capture
	$(CARGO) test --locked -p ambit-agent --features netns-tests --test netns
	$(CARGO) test --locked -p ambit-node --features netns-tests --lib

test: deps lint unit e2e

bench: build
	scripts/bench.sh $(AMBIT)

clean:
	-$(AMBIT) cluster down --all
	$(CARGO) clean
