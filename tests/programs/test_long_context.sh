#!/usr/bin/env bash
# End-to-end test of polygrad_long_context, run by CTest (registered in examples/CMakeLists.txt):
#   test_long_context.sh <path to polygrad_long_context> <scratch directory>
# A small run of both routes and two exact sizes: every row of the table, the extrapolation
# labelled as such, progress lines per layer, the CSV; then usage errors.
source "$(dirname "$0")/lib.sh" "$@"

run 0 -n 300 --routes adjoint paper --exact-sizes 7 8 --out-dir out
for method in "poly adjoint" "poly paper"; do
  grep -q "^$method  *300 " out.txt || fail "no row for $method: $(cat out.txt)"
done
grep -q '^exact  *2^7 ' out.txt || fail "no measured exact row at 2^7: $(cat out.txt)"
grep -q '^exact  *300 .*EXTRAPOLATED, not measured' out.txt || fail "no labelled extrapolation: $(cat out.txt)"
grep -q 'recomputation on' out.txt || fail "recomputation is not the default: $(cat out.txt)"
grep -q 'poly paper, n = 300: backward layer 1/4' err.txt || fail "no progress line per layer: $(cat err.txt)"
[ -s out/long_context.csv ] || fail "out/long_context.csv was not written"
grep -q '^exact,300,.*,extrapolated,' out/long_context.csv || fail "the CSV does not mark the extrapolation: $(cat out/long_context.csv)"
awk '/^poly adjoint/ { if ($6 < 1.0 || $8 <= 0) bad = 1 } END { exit bad }' out.txt ||
  fail "implausible wall/attention or peak memory: $(cat out.txt)"

run 0 -n 64 --routes adjoint --exact-sizes 0 --no-recompute --dtype double -q
grep -q 'recomputation off' out.txt || fail "--no-recompute was not used: $(cat out.txt)"
[ -s err.txt ] && fail "--quiet still printed progress: $(cat err.txt)"

run 2 --routes none --exact-sizes 0
expect_stderr "nothing to run"
run 2 --routes sideways
run 2 --tokens 0
run 0 --help
grep -q "Usage:" out.txt || fail "--help printed no usage"

finish "long_context"
