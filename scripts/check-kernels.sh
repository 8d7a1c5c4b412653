#!/usr/bin/env bash
# Checks the C kernels without Python: builds the harness in csrc/tests and runs it
#   1. natively, at every level this CPU has (x86: scalar, avx2, avx512_vpopcntdq);
#   2. cross-compiled for aarch64 (Debian's gcc-aarch64-linux-gnu) under qemu-user, at scalar and
#      neon. Linked statically, OpenMP included (the cross toolchain's libgomp.a), so qemu needs no
#      aarch64 sysroot and the 2-thread cases really run on 2 threads.
# Installs the two Debian packages with apt-get when missing (needs root); when they cannot be had,
# prints one line saying the aarch64 check was skipped and why, and still runs the native part.
# The last line sums both runs: "N passed, N failed". Exit status non-zero when any check failed.
set -uo pipefail
cd "$(dirname "$0")/.."

TESTS=csrc/tests
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
passed=0 failed=0 status=0

# run_harness LABEL CMD...: runs one harness binary, adds its "N passed, N failed" to the totals
run_harness() {
  local label=$1 out line start=$SECONDS
  shift
  echo "== $label"
  out=$(timeout 600 "$@" 2>&1)
  local rc=$?
  printf '%s\n' "$out"
  line=$(printf '%s\n' "$out" | tail -n 1)
  if [[ $line =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
    passed=$((passed + BASH_REMATCH[1])) failed=$((failed + BASH_REMATCH[2]))
  else
    echo "Error: $label: the harness did not finish (exit $rc)"
    failed=$((failed + 1))
  fi
  [ "$rc" -eq 0 ] || status=1
  echo "== $label: $((SECONDS - start)) s"
}

build() { # build LABEL make-args...: the harness build, its errors shown
  local label=$1 log
  shift
  # (static glibc warns about libgomp's dlopen; shown only when the build fails)
  if ! log=$(make -s -C "$TESTS" "$@" 2>&1); then
    printf '%s\n' "$log"
    echo "Error: could not build the $label harness"
    failed=$((failed + 1)) status=1
    return 1
  fi
}

# ---- native
if build native OUT=build/native; then
  run_harness "native ($(uname -m))" "$TESTS/build/native/test_kernels"
fi

# ---- the timing tool (csrc/tests/bench_gemm.c, docs/performance.md's C-level numbers) builds and runs
# each of its modes once at a small size, so that it does not rot between the sessions that use it
echo "== bench_gemm (one call each: binary GEMMs; w1a4 linears on the pool)"
if build bench bench OUT=build/native; then
  if ! { "$TESTS/build/native/bench_gemm" --repeats 1 8 && \
         "$TESTS/build/native/bench_gemm" --lsq --shape minilm --threads 2 --pool --repeats 1 16; } >/dev/null; then
    echo "Error: bench_gemm failed"
    failed=$((failed + 1)) status=1
  fi
fi

# ---- aarch64 under qemu-user
aarch64_missing() {
  command -v aarch64-linux-gnu-gcc >/dev/null || echo gcc-aarch64-linux-gnu
  command -v qemu-aarch64 >/dev/null || command -v qemu-aarch64-static >/dev/null || echo qemu-user
}
skip=""
missing=$(aarch64_missing | tr '\n' ' ')
if [ -n "$missing" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    skip="${missing% } not installed, and not root to apt-get install them"
  elif ! command -v apt-get >/dev/null; then
    skip="${missing% } not installed, and no apt-get here"
  else
    echo "== apt-get install ${missing% }"
    export DEBIAN_FRONTEND=noninteractive
    aptlog=$(mktemp)
    # shellcheck disable=SC2086 # word splitting of the package list is intended
    if ! { apt-get -q update -o DPkg::Lock::Timeout=120 &&
      apt-get -q install -y -o DPkg::Lock::Timeout=120 $missing; } >"$aptlog" 2>&1; then
      skip="apt-get could not install ${missing% } ($(grep -E '^(E|W):' "$aptlog" | tail -n 1))"
    fi
    rm -f "$aptlog"
    missing=$(aarch64_missing | tr '\n' ' ')
    [ -z "$skip" ] && [ -n "$missing" ] && skip="${missing% } still missing after apt-get install"
  fi
fi
if [ -n "$skip" ]; then
  echo "aarch64 check skipped: $skip"
else
  QEMU=$(command -v qemu-aarch64 || command -v qemu-aarch64-static)
  if build aarch64 CC=aarch64-linux-gnu-gcc OUT=build/aarch64 LDFLAGS=-static; then
    run_harness "aarch64 under $(basename "$QEMU") (static, OpenMP on)" "$QEMU" "$TESTS/build/aarch64/test_kernels"
  fi
fi

[ "$failed" -eq 0 ] || status=1
echo "$passed passed, $failed failed"
exit "$status"
