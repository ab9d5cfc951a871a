#!/usr/bin/env bash
# polygrad_decode_speed at small contexts: one line per context with positive times, the state's
# size, and a usage error for a bad context.
#   test_decode_speed.sh <path to polygrad_decode_speed> <scratch directory>
source "$(dirname "$0")/lib.sh" "$@"

run 0 --contexts 64,300 --steps 3 --layers 1
for context in 64 300; do
  line=$(awk -v n="$context" '$1 == n' out.txt)
  [ -n "$line" ] || fail "no line for context $context: $(cat out.txt)"
  echo "$line" | awk '{ exit !($2 > 0 && $3 > 0 && $4 > 0) }' || fail "bad times for $context: $line"
done
grep -q "polynomial state per head: k = 6435 features (degree 7, R = 2) x (d_h + 1) = 57915 numbers" out.txt ||
  fail "no state size: $(cat out.txt)"
run 2 --contexts 0

finish "decode_speed"
