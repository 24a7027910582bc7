#!/usr/bin/env bash
# Benchmarks of mrlab on this host, as ratios of paired runs measured here (not part of .ci/run:
# it boots dozens of VMs). Each ratio is the median over RUNS pairs, A and B run in turn, so a
# machine whose speed drifts moves both sides of a pair alike.
#
#   predict     `mrlab predict --platform tdx` of a VM with a 50 MiB initrd, against the floor:
#               `sha384sum` over its firmware, kernel and initrd plus one bare `qemu -S` start
#               and quit of the same QEMU.
#   boot        `mrlab run scenarios/kernel-smoke.toml` (prepare, boot, verdict) against the
#               run.sh it writes (the same VM by hand: swtpm + QEMU, no prediction).
#   matrix      wall time of `mrlab run MATRIX --jobs 1` against the default (every core), and
#               the peak RSS of the mrlab process itself in the default run (QEMU and swtpm are
#               children with their own memory, not counted).
#
# Usage: ci/bench.sh [predict] [boot] [matrix]   (default: all three)
#   RUNS=N            pairs per ratio (default 5 for predict, 3 for boot; matrix runs once)
#   MATRIX="F…|DIR"   scenarios for the matrix part (default: scenarios/)
#   MRLAB=PATH        the mrlab binary (default: a release build of this checkout)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(predict boot matrix)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ -z "${MRLAB:-}" ]; then
    cargo build --release --quiet -p mrlab
    MRLAB=$repo/target/release/mrlab
fi

echo "host: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(date -u +%Y-%m-%dT%H:%MZ)"

now() { date +%s%N; }

# Runs A then B, RUNS times; prints each pair's seconds and the median ratio A/B.
# $1 label, $2 runs, $3 A (a shell command), $4 B.
paired() {
    local label=$1 runs=$2 a=$3 b=$4 ratios=() i t0 t1 t2
    for ((i = 0; i < runs; i++)); do
        t0=$(now)
        sh -c "$a" >>"$work/$label.a.log" 2>&1 || { echo "$label: A failed: $a (see output below)"; tail -20 "$work/$label.a.log"; exit 1; }
        t1=$(now)
        sh -c "$b" >>"$work/$label.b.log" 2>&1 || { echo "$label: B failed: $b (see output below)"; tail -20 "$work/$label.b.log"; exit 1; }
        t2=$(now)
        ratios+=("$(awk -v a=$((t1 - t0)) -v b=$((t2 - t1)) 'BEGIN {printf "%.3f %.2f %.2f", a / b, a / 1e9, b / 1e9}')")
    done
    printf '%s\n' "${ratios[@]}" | sort -n | awk -v label="$label" '
        { r[NR] = $1; a[NR] = $2; b[NR] = $3 }
        END {
            m = int((NR + 1) / 2)
            printf "%-8s median ratio %.2f over %d pairs (median pair: %.2f s vs %.2f s; ratios %.2f..%.2f)\n", label, r[m], NR, a[m], b[m], r[1], r[NR]
        }'
}

# The managed QEMU as mrlab starts it: the root's own loader, library dirs and data dirs.
qemu_root=$repo/.cache/roots/qemu-7.2
qemu_cmd="QEMU_MODULE_DIR=$qemu_root/usr/lib/x86_64-linux-gnu/qemu $qemu_root/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 --inhibit-cache --library-path $qemu_root/lib/x86_64-linux-gnu:$qemu_root/usr/lib/x86_64-linux-gnu $qemu_root/usr/bin/qemu-system-x86_64 -L $qemu_root/usr/share/qemu -L $qemu_root/usr/share/seabios -L $qemu_root/usr/lib/ipxe/qemu"

for part in "${parts[@]}"; do
    case $part in
    predict)
        firmware=$repo/.cache/debs/ovmf-2022.11/usr/share/ovmf/OVMF.fd
        kernel=$(ls "$repo"/.cache/debs/kernel-6.1/boot/vmlinuz-*)
        head -c $((50 << 20)) /dev/urandom >"$work/initrd"
        cat >"$work/predict.toml" <<EOF
name = "bench-predict"
boot = "kernel"
cpus = 1
memory = "2G"
firmware = "ovmf-2022.11"
kernel = "kernel-6.1"
initrd = "$work/initrd"
cmdline = "console=ttyS0"
EOF
        # Warm the page cache and the image cache once, outside the pairs.
        "$MRLAB" predict "$work/predict.toml" --platform tdx --json >/dev/null
        paired predict "${RUNS:-5}" \
            "'$MRLAB' predict '$work/predict.toml' --platform tdx --json" \
            "sha384sum '$firmware' '$kernel' '$work/initrd' && echo quit | $qemu_cmd -S -nodefaults -no-user-config -display none -accel tcg -machine q35 -m 2048M -bios '$firmware' -monitor stdio"
        ;;
    boot)
        "$MRLAB" run scenarios/kernel-smoke.toml --results "$work/boot" >/dev/null 2>&1
        paired boot "${RUNS:-3}" \
            "'$MRLAB' run scenarios/kernel-smoke.toml --results '$work/boot'" \
            "RUN=\$(mktemp -d) sh '$work/boot/kernel-smoke/run.sh' && rm -rf \"\$RUN\""
        ;;
    matrix)
        # shellcheck disable=SC2206
        matrix=(${MATRIX:-scenarios/})
        peak=$work/peak
        t0=$(now)
        "$MRLAB" run "${matrix[@]}" --jobs 1 --results "$work/m1" >"$work/m1.log" 2>&1 || true
        t1=$(now)
        "$MRLAB" run "${matrix[@]}" --results "$work/mdefault" >"$work/mdefault.log" 2>&1 &
        pid=$!
        echo 0 >"$peak"
        # VmHWM is the process's own peak resident set; the last reading before it exits is
        # the run's peak.
        while kill -0 "$pid" 2>/dev/null; do
            hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
            [ -n "$hwm" ] && echo "$hwm" >"$peak"
            sleep 0.2
        done
        wait "$pid" || true
        t2=$(now)
        awk -v a=$((t1 - t0)) -v b=$((t2 - t1)) 'BEGIN {printf "matrix   --jobs 1 / default = %.2f (%.0f s vs %.0f s)\n", a / b, a / 1e9, b / 1e9}'
        echo "matrix   --jobs 1:  $(tail -1 "$work/m1.log")"
        echo "matrix   default:   $(tail -1 "$work/mdefault.log")"
        echo "rss      peak of mrlab run (default jobs, without QEMU/swtpm): $(awk '{printf "%.1f MiB", $1 / 1024}' "$peak")"
        ;;
    *)
        echo "unknown part $part (predict, boot, matrix)" >&2
        exit 2
        ;;
    esac
done
