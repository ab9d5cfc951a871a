#!/usr/bin/env bash
# polygrad_train for a few steps of a tiny model: both runs report held-out losses (the approx run
# within 2% of the exact one), the time to exact's final loss and the unigram baseline are those
# of the curves and the text, the curves and checkpoints are written, --resume continues, and
# missing or unsuitable files fail with a message.
#   test_train.sh <path to polygrad_train> <scratch directory>
source "$(dirname "$0")/lib.sh" "$@"

tiny=(--layers 1 --d-model 16 --heads 4 --d-ff 32 --seq-len 48 --batch 2 --eval-every 2
      --eval-seqs 2 --warmup 2 --lr 1e-2 -q)

run 0 "${tiny[@]}" --steps 4 --out-dir out
summary=$(grep '^held-out loss after 4 steps' out.txt)
[ -n "$summary" ] || fail "no final held-out losses: $(cat out.txt)"
# "untrained U, exact-trained E, approx-trained A (...)": both trained below untrained, A ~ E.
echo "$summary" | sed 's/,//g' | awk '{ u = $10; e = $12; a = $14;
  if (!(e < u && a < u)) exit 1; d = a / e - 1; if (d < 0) d = -d; if (d > 0.02) exit 1 }' ||
  fail "unexpected losses: $summary"
# The step at which the approx run first reached the exact run's final held-out loss (to 10 float
# epsilons), from the CSV.
reach=$(awk -F, 'NR > 1 { step[NR] = $1; approx[NR] = $8; last = $7; n = NR }
  END { for (i = 2; i <= n; ++i) if (approx[i] <= last * (1 + 1.1920929e-6)) { print "at step " step[i] ","; exit }
        print "by step " step[n] }' out/train_curves.csv)
grep -Eq "^the approx-trained model (reached|did not reach) the exact-trained final held-out loss [0-9.]+ \(to 1.2e-06 relative, 10 float epsilons\) $reach" out.txt ||
  fail "the time to exact's final loss is not that of the curves ($reach): $(cat out.txt)"
grep -q 'approx plan, layer 0 sequence 0, head 0: poly adjoint' out.txt || fail "the approx run did not use poly: $(cat out.txt)"
[ "$(wc -l <out/train_curves.csv)" -eq 4 ] || fail "train_curves.csv: $(cat out/train_curves.csv)"
grep -q '</svg>' out/train_curves.svg || fail "train_curves.svg was not written"
grep -q '</svg>' out/train_clock.svg || fail "train_clock.svg was not written"
# Tokens are step x 2 x 48; each run's training seconds start at 0 and grow with the steps.
clock_ok() {
  awk -F, 'NR == 1 { if ($2 != "tokens" || $3 != "seconds_exact" || $4 != "seconds_approx") exit 1; next }
    { if ($2 != $1 * 96 || $3 == "" || $4 == "") exit 1
      if (NR == 2 && ($3 != 0 || $4 != 0)) exit 1
      if (NR > 2 && !($3 > e && $4 > a)) exit 1
      e = $3; a = $4 }' "$1"
}
clock_ok out/train_curves.csv || fail "tokens or seconds wrong: $(cat out/train_curves.csv)"
for run_name in exact approx; do
  [ -s "out/train_$run_name.safetensors" ] || fail "no checkpoint train_$run_name.safetensors"
  head -c 65536 "out/train_$run_name.safetensors" | tr -c '[:print:]' '\n' |
    grep -qF '"optim.exp_avg_sq.transformer.blocks.0.attn.q.weight"' ||
    fail "checkpoint train_$run_name holds no AdamW state"
done

[ -s out/train_state.safetensors ] || fail "no training state train_state.safetensors"

# Resume: two more steps, the curve grows by one point.
run 0 "${tiny[@]}" --steps 6 --out-dir out --resume
grep -q 'resumed at step 4' out.txt || fail "--resume did not start at step 4: $(cat out.txt)"
grep -q '^held-out loss after 6 steps' out.txt || fail "the resumed run did not reach step 6"
[ "$(wc -l <out/train_curves.csv)" -eq 5 ] || fail "resumed curve: $(cat out/train_curves.csv)"
# The seconds go on from those of step 4 (train_clock.csv); without that file they are unknown
# before the resumed step and count from the resumed session.
clock_ok out/train_curves.csv || fail "resumed seconds do not continue: $(cat out/train_curves.csv)"
rm out/train_clock.csv
run 0 "${tiny[@]}" --steps 8 --out-dir out --resume
grep -q 'no training clock for step 6' out.txt || fail "a missing clock was not reported: $(cat out.txt)"
awk -F, 'NR > 1 && NR < 6 && $3 != "" { exit 1 } NR == 6 && !($3 > 0) { exit 1 }' out/train_curves.csv ||
  fail "seconds before a lost clock should be empty: $(cat out/train_curves.csv)"

# The auto method and the paper route, on another text.
awk 'BEGIN { for (i = 0; i < 400; ++i) print "the quick brown fox jumps over the lazy dog " i }' >fox.txt
run 0 "${tiny[@]}" --steps 2 --text fox.txt --attention poly --route paper --out-dir fox
grep -q 'approx plan, layer 0 sequence 0, head 0: poly paper' out.txt || fail "--route paper not used: $(cat out.txt)"

# The unigram baseline: in "aab" repeated, held-out windows of 48 targets hold 32 a and 16 b, and
# the training frequencies are 2/3 and 1/3 (add-one smoothing moves them by 1e-4), so the
# cross-entropy is -(2/3 ln 2/3 + 1/3 ln 1/3) = 0.6365.
awk 'BEGIN { for (i = 0; i < 1000; ++i) printf "aab" }' >aab.txt
run 0 "${tiny[@]}" --steps 2 --text aab.txt --out-dir aab
grep -q '^unigram model (training-text character frequencies): 0.636[45]$' out.txt ||
  fail "unigram baseline of aab.txt: $(cat out.txt)"

# Errors.
run 1 "${tiny[@]}" --steps 2 --text missing.txt --out-dir err
expect_stderr "polygrad_train: cannot read missing.txt"
printf 'too short' >short.txt
run 1 "${tiny[@]}" --steps 2 --text short.txt --out-dir err
expect_stderr "use a longer text"
run 1 "${tiny[@]}" --steps 2 --out-dir empty --resume
expect_stderr "polygrad_train: cannot read"
run 1 "${tiny[@]}" --steps 8 --out-dir out --resume --seed 2
expect_stderr "cannot resume: metadata \"seed\""
printf 'garbage' >out/train_state.safetensors
run 1 "${tiny[@]}" --steps 8 --out-dir out --resume
expect_stderr "polygrad_train: out/train_state.safetensors"
run 2 --attention exact
run 2 --steps 0
run 2 --degree 5 --epsilon 1e-3
run 2 --no-such-flag
expect_stderr "Usage:"

finish "train"
