#!/usr/bin/env bash
# polygrad_train killed with SIGKILL at random moments -- during steps and while it writes its
# training state -- and resumed each time, until it finishes: its final runs are the same files,
# byte for byte, as those of a run that was never interrupted, and a torn or missing state is
# never loaded (a half-written temporary is ignored; a truncated state is a clear error).
#   test_train_kill.sh <path to polygrad_train> <scratch directory>
source "$(dirname "$0")/lib.sh" "$@"

# A state written after every step, so that many kills land in a write.
tiny=(--layers 1 --d-model 16 --heads 4 --d-ff 32 --seq-len 48 --batch 2 --eval-every 3
      --eval-seqs 2 --warmup 2 --lr 1e-2 --checkpoint-every 1 --threads 1 -q)

steps=100
run 0 "${tiny[@]}" --steps $steps --out-dir whole
[ -s whole/train_exact.safetensors ] || fail "the uninterrupted run wrote no run file: $(cat err.txt)"

# Attempts alternate between two ways to die. Odd ones: killed after a random delay -- the
# start-up time (about 0.35 s here) plus up to 0.3 s, some 25 steps of about 12 ms; after an
# attempt that saved nothing the delay grows by 0.1 s, so that a slower machine still gets on.
# Even ones: killed while a temporary of the state is being written.
RANDOM=20261202
kills=0 resumes=0 in_write=0 base=350
for attempt in $(seq 1 200); do
  flags=("${tiny[@]}" --steps $steps --out-dir killed)
  [ -e killed/train_state.safetensors ] && flags+=(--resume) && resumes=$((resumes + 1))
  before=$(cksum killed/train_state.safetensors 2>/dev/null)
  if ((attempt % 2)); then
    delay_ms=$((base + RANDOM % 300))
    timeout -s KILL "$((delay_ms / 1000)).$(printf '%03d' $((delay_ms % 1000)))" "$program" "${flags[@]}" >out.txt 2>err.txt
    status=$?
  else
    # Seen a temporary: stop the program at once; if the temporary is still there it is caught
    # mid-write and killed, else (renamed meanwhile) it goes on. SECONDS bounds the wait.
    "$program" "${flags[@]}" >out.txt 2>err.txt &
    pid=$!
    start=$SECONDS
    while kill -0 $pid 2>/dev/null && ((SECONDS - start < 60)); do
      [ -e killed/train_state.safetensors.tmp ] || continue
      kill -STOP $pid 2>/dev/null
      if [ -e killed/train_state.safetensors.tmp ]; then
        kill -KILL $pid 2>/dev/null
        break
      fi
      kill -CONT $pid 2>/dev/null
    done
    kill -KILL $pid 2>/dev/null  # still running after 60 s
    wait $pid
    status=$?
  fi
  if [ "$status" -eq 0 ]; then break; fi
  if [ "$status" -ne 137 ]; then
    fail "attempt $attempt exited with $status (not killed): $(cat err.txt)"
    break
  fi
  kills=$((kills + 1))
  # A temporary left behind: this kill landed while the state was being written.
  [ -e killed/train_state.safetensors.tmp ] && in_write=$((in_write + 1))
  [ "$(cksum killed/train_state.safetensors 2>/dev/null)" == "$before" ] && base=$((base + 100))
done
[ "$status" -eq 0 ] || fail "the killed run never finished in 200 attempts"
[ "$kills" -ge 3 ] || fail "only $kills kills landed; the test did not interrupt the run enough"
[ "$in_write" -ge 2 ] || fail "only $in_write kills landed while the state was written"
[ "$resumes" -ge 1 ] || fail "no attempt resumed from a training state"
echo "killed $kills times ($in_write of them while writing the state), resumed $resumes times"
for run_name in exact approx; do
  cmp -s whole/train_$run_name.safetensors killed/train_$run_name.safetensors ||
    fail "the $run_name run killed $kills times differs from the uninterrupted one"
done
cmp -s whole/train_state.safetensors killed/train_state.safetensors ||
  fail "the final training states differ"

# A half-written temporary beside the state is ignored; a torn state is refused with a message.
cp whole/train_state.safetensors torn.safetensors
mkdir -p torn
head -c 1000 torn.safetensors >torn/train_state.safetensors.tmp
cp torn.safetensors torn/train_state.safetensors
run 0 "${tiny[@]}" --steps $((steps + 1)) --out-dir torn --resume
grep -q "resumed at step $steps" out.txt || fail "did not resume beside a stray temporary: $(cat out.txt)"
head -c 3000 torn.safetensors >torn/train_state.safetensors
run 1 "${tiny[@]}" --steps $((steps + 2)) --out-dir torn --resume
expect_stderr "polygrad_train: torn/train_state.safetensors"

finish "train killed and resumed"
