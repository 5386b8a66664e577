#!/usr/bin/env bash
# Bounded fuzz smoke run: builds every cargo-fuzz target and runs each for FUZZ_SECONDS (default 10) without
# a sanitizer (-s none: a panic or abort is what we look for here; the build is much faster). A longer run
# with AddressSanitizer: `cd fuzz && cargo +nightly fuzz run vxlan_rx -- -max_total_time=3600`.
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly toolchain (`rustup toolchain install nightly`).
set -uo pipefail
cd "$(dirname "$0")"
secs="${FUZZ_SECONDS:-10}"
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz/smoke.sh: no nightly toolchain: rustup toolchain install nightly" >&2
    exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz/smoke.sh: cargo-fuzz missing: cargo install cargo-fuzz" >&2
    exit 1
fi
targets=$(cargo +nightly fuzz list) || exit 1
cargo +nightly fuzz build -s none >&2 || { echo "fuzz: build failed"; exit 1; }
passed=0
failed=0
for t in $targets; do
    mkdir -p "corpus/$t"
    if cargo +nightly fuzz run -s none "$t" -- -max_total_time="$secs" -rss_limit_mb=2048 >"/tmp/fuzz-$t.log" 2>&1; then
        echo "fuzz $t: ok ($(grep -o 'Done [0-9]* runs' "/tmp/fuzz-$t.log" | tail -1))"
        passed=$((passed + 1))
    else
        echo "fuzz $t: FAILED, log /tmp/fuzz-$t.log:"
        tail -40 "/tmp/fuzz-$t.log"
        failed=$((failed + 1))
    fi
done
echo "fuzz smoke: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
