#!/usr/bin/env bash
# polygrad_error_table on a short sequence: a row per degree with the certified error and four
# gradient errors that shrink with the degree, progress on stderr unless --quiet, --threads.
#   test_error_table.sh <path to polygrad_error_table> <scratch directory>
source "$(dirname "$0")/lib.sh" "$@"

run 0 --tokens 64 --min-degree 3 --max-degree 5 --threads 1
for g in 3 4 5; do
  awk -v g="$g" '$1 == g' out.txt | grep -q . || fail "no row for degree $g: $(cat out.txt)"
done
# Columns: g, rank, exp error, |, layer adj, layer paper, |, model adj, model paper.
awk '$1 == 3 { e3 = $8 } $1 == 5 { e5 = $8 } END { exit !(e5 > 0 && e5 < e3) }' out.txt ||
  fail "the model's adjoint error does not shrink from degree 3 to 5: $(cat out.txt)"
expect_stderr "degree 5, paper route, model"
run 0 --tokens 16 --min-degree 2 --max-degree 2 --quiet
[ -s err.txt ] && fail "--quiet still printed progress: $(cat err.txt)"
run 2 --threads -1

finish "error_table"
