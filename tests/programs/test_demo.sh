#!/usr/bin/env bash
# polygrad_demo at tiny sizes (the defaults take minutes): the table has its three methods with
# small gradient errors, the sweep writes its CSV and SVG, and bad flags or an unwritable output
# directory fail with a message.
#   test_demo.sh <path to polygrad_demo> <scratch directory>
source "$(dirname "$0")/lib.sh" "$@"

tiny=(--tokens 160 --layers 2 --d-model 16 --heads 4 --d-ff 24 --sweep-min 5 --sweep-max 7
      --sweep-max-exact 6)

run 0 "${tiny[@]}" --out-dir out
rows=$(grep -cE '^(exact|poly paper|poly adjoint) ' out.txt)
[ "$rows" -eq 3 ] || fail "the table has $rows method rows, expected 3: $(cat out.txt)"
grep -q 'against the exact run in float' out.txt || fail "the error reference is not stated"
# The polynomial rows: degree 7 (tau = 2, eps = 1e-3), k = C(4 + 7, 7), error well under 1%.
for route in paper adjoint; do
  line=$(grep -E "^poly $route " out.txt)
  echo "$line" | awk '{ if ($3 != 7 || $4 != 330 || !($7 + 0 < 1e-2) || !($7 + 0 > 0)) exit 1 }' ||
    fail "unexpected poly $route row: $line"
done
[ -s out/demo_scaling.csv ] || fail "out/demo_scaling.csv was not written"
head -1 out/demo_scaling.csv | grep -q '^n,method,seconds' || fail "CSV header: $(head -1 out/demo_scaling.csv)"
# 3 sizes for each polynomial route, 2 for exact.
csv_rows=$(($(wc -l <out/demo_scaling.csv) - 1))
[ "$csv_rows" -eq 8 ] || fail "the CSV has $csv_rows rows, expected 8: $(cat out/demo_scaling.csv)"
grep -q '^128,poly adjoint,' out/demo_scaling.csv || fail "no poly adjoint row at n = 128"
grep -q '^128,exact,' out/demo_scaling.csv && fail "exact ran past --sweep-max-exact"
grep -q '<svg' out/demo_scaling.svg && grep -q '</svg>' out/demo_scaling.svg ||
  fail "out/demo_scaling.svg is not an SVG document"
for name in exact 'poly paper' 'poly adjoint'; do
  grep -qF ">$name</text>" out/demo_scaling.svg || fail "the plot has no legend entry '$name'"
done

# double, the table only; the sweep only.
run 0 "${tiny[@]}" --dtype double --skip-sweep --epsilon 1e-6 --family taylor -q
grep -q 'against the exact run in double' out.txt || fail "--dtype double not reported"
[ -s err.txt ] && fail "--quiet still printed progress: $(cat err.txt)"
run 0 "${tiny[@]}" --skip-table --out-dir sweep_only -q
[ -s sweep_only/demo_scaling.csv ] || fail "--skip-table wrote no CSV"

# Errors.
run 2 --no-such-flag
expect_stderr "Usage:"
run 2 --heads 3
expect_stderr "--heads"
run 2 --skip-table --skip-sweep
run 2 --degree 5 --epsilon 1e-3
run 2 --sweep-min 12 --sweep-max 10
printf 'x' >a_file
run 1 "${tiny[@]}" --skip-table --out-dir a_file/sub -q
expect_stderr "polygrad_demo: "

finish "demo"
