#!/usr/bin/env bash
# Bounded fuzzing run of every cargo-fuzz target, for `cargo xtask test`/CI.
#
#   fuzz/run-bounded.sh [seconds-per-target]      (default 60)
#
# 1. builds every target once: `cargo +nightly fuzz build -O -a` (release,
#    with debug assertions and overflow checks, AddressSanitizer);
# 2. per target: runs each committed regression input in
#    fuzz/regressions/<target>/ once, then fuzzes for the given time from a
#    temporary corpus seeded with the passing regressions and
#    fuzz/seeds/<target>/ (dictionary fuzz/dicts/<target>.dict if present);
# 3. prints per-target exec counts and exits non-zero if any regression
#    input fails or the fuzzer finds a crash, leak, timeout or OOM. New
#    crashing inputs are left in fuzz/artifacts/<target>/ (git-ignored):
#    minimise one with `cargo +nightly fuzz tmin -O -a <target> <file>` and
#    commit it under fuzz/regressions/<target>/.
#
# Targets are the [[bin]]s of fuzz/Cargo.toml (`cargo fuzz list`): a new one
# is picked up with its seeds/, dicts/ and regressions/ entries. The client
# core's targets (core_decode, core_session) also run with a 64 MB limit on
# any single allocation (-malloc_limit_mb): nothing they do needs more than
# about 1 MB at once.
#
# Environment: FUZZ_TOOLCHAIN (default "nightly"), FUZZ_TARGETS (space-
# separated subset), FUZZ_RSS_LIMIT_MB (default 2048), FUZZ_TIMEOUT (seconds
# per input, default 30). cargo-fuzz is installed from crates.io if missing.
set -uo pipefail

secs="${1:-60}"
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [ "$secs" -lt 1 ]; then
    echo "usage: $0 [seconds-per-target]" >&2
    exit 2
fi
cd "$(dirname "$0")"
fuzz_dir="$PWD"
toolchain="${FUZZ_TOOLCHAIN:-nightly}"
rss="${FUZZ_RSS_LIMIT_MB:-2048}"
timeout="${FUZZ_TIMEOUT:-30}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked || { echo "error: cannot install cargo-fuzz" >&2; exit 1; }
fi
if ! rustup run "$toolchain" rustc --version >/dev/null 2>&1; then
    echo "error: toolchain '$toolchain' is not installed (cargo fuzz needs nightly for -Zsanitizer)" >&2
    exit 1
fi

targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"
echo "== building fuzz targets ($toolchain): $(echo $targets)"
build_start=$SECONDS
if ! cargo "+$toolchain" fuzz build -O -a; then
    echo "error: fuzz build failed" >&2
    exit 1
fi
echo "== build took $((SECONDS - build_start)) s"
bin_dir="$fuzz_dir/target/$(rustc "+$toolchain" -vV | sed -n 's/^host: //p')/release"

work="$(mktemp -d "${TMPDIR:-/tmp}/audin-fuzz.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# The panic message of a failed run, or else the sanitizer / libFuzzer error.
report() {
    if grep -q "panicked at" "$1"; then
        grep -A3 "panicked at" "$1" | grep -v "^stack backtrace" | cut -c1-400 | head -n 8
    else
        grep -E -A2 "ERROR: (AddressSanitizer|libFuzzer|LeakSanitizer)|^SUMMARY:" "$1" | cut -c1-400 | head -n 8
    fi | sed 's/^/   /'
}

failed=0
summary=()
for t in $targets; do
    bin="$bin_dir/$t"
    if [ ! -x "$bin" ]; then
        echo "error: no binary for target $t at $bin" >&2
        failed=1
        summary+=("$(printf '%-18s %12s  %s' "$t" "-" "NOT BUILT")")
        continue
    fi
    corpus="$work/$t/corpus"
    mkdir -p "$corpus" "$fuzz_dir/artifacts/$t"
    status="ok"
    limits=(-rss_limit_mb="$rss" -timeout="$timeout")
    case "$t" in
        core_*) limits+=(-malloc_limit_mb=64) ;;
    esac

    # Committed regression inputs, once each.
    n_reg=0
    n_reg_fail=0
    if [ -d "regressions/$t" ]; then
        for f in "regressions/$t"/*; do
            [ -f "$f" ] || continue
            n_reg=$((n_reg + 1))
            if "$bin" "${limits[@]}" "$f" >"$work/reg.log" 2>&1; then
                cp "$f" "$corpus/"
            else
                n_reg_fail=$((n_reg_fail + 1))
                echo "!! $t: regression input $f FAILS:"
                report "$work/reg.log"
            fi
        done
    fi
    echo "== $t: $n_reg regression input(s), $n_reg_fail failing"
    [ "$n_reg_fail" -eq 0 ] || { status="REGRESSION FAILED"; failed=1; }

    # Bounded fuzzing.
    args=(-max_total_time="$secs" "${limits[@]}"
          -print_final_stats=1 -artifact_prefix="$fuzz_dir/artifacts/$t/")
    [ -f "dicts/$t.dict" ] && args+=(-dict="dicts/$t.dict")
    dirs=("$corpus")
    [ -d "seeds/$t" ] && dirs+=("seeds/$t")
    echo "== $t: fuzzing for ${secs} s"
    "$bin" "${args[@]}" "${dirs[@]}" >"$work/$t.log" 2>&1
    rc=$?
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t.log" | tail -n1)"
    execs="${execs:-?}"
    if [ "$rc" -ne 0 ]; then
        failed=1
        [ "$status" = "ok" ] && status="CRASH" || status="$status + CRASH"
        echo "!! $t: fuzzer exited with $rc:"
        report "$work/$t.log"
        grep -E "Test unit written to" "$work/$t.log" | sed 's/^/   /'
    fi
    echo "== $t: $execs execs, corpus $(ls "$corpus" | wc -l) files, $status"
    summary+=("$(printf '%-18s %12s  %s' "$t" "$execs" "$status")")
done

echo
echo "== fuzz summary (${secs} s per target)"
printf '%-18s %12s  %s\n' "target" "execs" "status"
printf '%s\n' "${summary[@]}"
exit "$failed"
