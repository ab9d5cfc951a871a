#!/usr/bin/env bash
# Runs polygrad_quickstart (the README's snippet, examples/quickstart.cpp) and checks what it
# prints: the loss before and after one AdamW step (lower after), and a polynomial plan; --help
# says what it does without running it, and an option it does not know is an error.
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

"$program" --help >help.txt 2>&1 || fail "--help exited with $?"
grep -q '^usage: .*polygrad_quickstart' help.txt || fail "--help printed no usage: $(cat help.txt)"
grep -q '^loss' help.txt && fail "--help ran the example: $(cat help.txt)"
"$program" --steps 3 >bad.txt 2>&1 && fail "an unknown option was accepted: $(cat bad.txt)"

finish "quickstart"
