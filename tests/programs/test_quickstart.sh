#!/usr/bin/env bash
# Runs polygrad_quickstart (the README's snippet, examples/quickstart.cpp) and checks what it
# prints: the loss before and after one AdamW step (lower after), and a polynomial plan.
#   test_quickstart.sh <path to polygrad_quickstart> <scratch directory>
source "$(dirname "$0")/lib.sh" "$@"

"$program" >out.txt 2>err.txt
status=$?
[ "$status" -eq 0 ] || fail "exited with $status; stderr: $(cat err.txt)"
before=$(awk '/^loss before:/{print $3}' out.txt)
after=$(awk '/^loss after:/{print $3}' out.txt)
[ -n "$before" ] && [ -n "$after" ] || fail "no loss before/after in: $(cat out.txt)"
awk -v a="$before" -v b="$after" 'BEGIN { exit !(b < a && b > 0) }' ||
  fail "the AdamW step did not lower the loss ($before -> $after)"
grep -q 'layer 0, head 0: poly adjoint chebyshev g=7 .*R=2 (qk-norm)' out.txt ||
  fail "no certified polynomial plan printed: $(cat out.txt)"

finish "quickstart"
