#!/usr/bin/env bash
# Runs every cargo-fuzz target (harness/{evidence,measure,agent}/fuzz) for a bounded time, seeded
# from harness/fixtures and the image cache. Needs a nightly toolchain (`cargo +nightly`); where
# there is none it says so and exits 0: the stable test `cargo test -p mrlab --test fuzz_targets`
# drives the same target bodies with seeded mutations of the same fixtures.
# FUZZ_SECONDS: time per target (default 30).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz: no nightly toolchain here; skipped (the stable fuzz_targets test ran instead)"
    exit 0
fi
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
seconds="${FUZZ_SECONDS:-30}"
fixtures="$PWD/harness/fixtures"
debs="$PWD/.cache/debs"

seed() { # seed TARGET_DIR FILE…: copy the files that exist into the corpus
    local dir="$1"
    shift
    mkdir -p "$dir"
    for f in "$@"; do
        [ -f "$f" ] && cp "$f" "$dir/" || true
    done
}

run() { # run CRATE TARGET; inputs that once crashed it (regressions/TARGET) go first
    (
        cd "harness/$1/fuzz"
        mkdir -p "corpus/$2"
        if [ -d "regressions/$2" ]; then cp regressions/"$2"/* "corpus/$2/"; fi
        # libFuzzer prints a line per coverage change: keep that in a log, show it on a crash.
        log="$PWD/artifacts/$2.log"
        mkdir -p artifacts
        if ! cargo +nightly fuzz run "$2" "corpus/$2" -- -max_total_time="$seconds" >"$log" 2>&1; then
            tail -n 60 "$log"
            echo "fuzz: $1/$2 failed; full output in harness/$1/fuzz/artifacts/$2.log" >&2
            exit 1
        fi
        echo "fuzz: $1/$2: $(grep -o 'Done [0-9]* runs in [0-9]* second(s)' "$log" | tail -1)"
    )
}

cd harness/evidence/fuzz
seed corpus/tcg "$fixtures"/tpm-eventlog/*/*.bin "$fixtures"/tpm-eventlog/*/binary_bios_measurements-*
seed corpus/ccel "$fixtures"/tdx-ccel/*/ccel_table.dat
for f in "$fixtures"/tdx-ccel/*/ccel_data.dat "$fixtures"/tdx-ccel/*/CCEL_data*; do
    case "$f" in *.json) continue ;; esac
    # CCEL areas are mostly fill after the log: keep the events.
    mkdir -p corpus/ccel && head -c 20000 "$f" >"corpus/ccel/$(basename "$f").cut"
done
for t in quote quote_verify; do
    seed "corpus/$t" "$fixtures"/tdx-quote/*/*quote* "$fixtures"/tdx-ccel/*/*quote*.dat
done
seed corpus/tdreport "$fixtures"/tdx-quote/*/tdx_report_1.bin
cd ../../measure/fuzz
seed corpus/tdvf "$debs"/ovmf-2022.11/usr/share/ovmf/OVMF.fd
seed corpus/pe "$debs"/systemd-boot-257/usr/lib/systemd/boot/efi/systemd-bootx64.efi
for t in devpath load_option gpt; do
    seed "corpus/$t" "$fixtures"/tpm-eventlog/*/*.bin
done
cd ../../..
mkdir -p harness/agent/fuzz/corpus/record

for t in tcg ccel quote quote_verify tdreport; do run evidence "$t"; done
for t in tdvf pe devpath load_option gpt; do run measure "$t"; done
run agent record
echo "fuzz: 11 targets, ${seconds} s each, no crash"
