#!/usr/bin/env bash
# polygrad_train under mpirun, run by CTest (label mpi; registered in examples/CMakeLists.txt):
#   test_train_mpi.sh <polygrad_train> <scratch directory> <polygrad_gradients> <mpiexec> <-n flag> [flags...]
# Every window split across 3 ranks (47 characters: a multiple of none) trains the model one
# process trains: after 4 steps the checkpoints of both runs (weights, AdamW state, loss curves)
# agree with the single process's within 1e-8 (double), and --resume continues on the ranks.
source "$(dirname "$0")/lib.sh" "$1" "$2"
gradients=$3
mpi_setup "$1" "$2" "${@:4}"

tiny=(--layers 1 --d-model 16 --heads 4 --d-ff 32 --seq-len 47 --batch 2 --eval-every 2
      --eval-seqs 2 --warmup 2 --lr 1e-2 -q --dtype double --threads 1)

for route in adjoint paper; do
  run 0 "${tiny[@]}" --route $route --steps 4 --out-dir one_$route
  mpi_run 3 0 "${tiny[@]}" --route $route --steps 4 --out-dir three_$route
  grep -q 'every window split across 3 ranks' out.txt || fail "the split is not reported: $(cat out.txt)"
  [ "$(grep -c '^held-out loss after 4 steps' out.txt)" -eq 1 ] ||
    fail "the summary is not printed once (by rank 0): $(cat out.txt)"
  for run_name in exact approx; do
    "$gradients" compare three_$route/train_$run_name.safetensors one_$route/train_$run_name.safetensors \
      --tolerance 1e-8 >compare.txt 2>&1 ||
      fail "$route, $run_name run on 3 ranks differs from one process: $(tail -3 compare.txt)"
    grep -q '^only in' compare.txt && fail "the checkpoints hold different tensors: $(cat compare.txt)"
  done
done

# Resume on 2 ranks from the 3-rank checkpoints: two more steps, as one process would take them.
mpi_run 2 0 "${tiny[@]}" --route adjoint --steps 6 --out-dir three_adjoint --resume
grep -q 'resumed at step 4' out.txt || fail "--resume did not start at step 4: $(cat out.txt)"
run 0 "${tiny[@]}" --route adjoint --steps 6 --out-dir one_adjoint --resume
"$gradients" compare three_adjoint/train_approx.safetensors one_adjoint/train_approx.safetensors \
  --tolerance 1e-8 >compare.txt 2>&1 || fail "resumed runs differ: $(tail -3 compare.txt)"

# More ranks than characters in a window: an error on every rank, no checkpoint.
mpi_run 3 1 --layers 1 --d-model 16 --heads 4 --d-ff 32 --seq-len 2 --steps 1 -q --out-dir short
expect_stderr "more ranks than rows"
[ -e short/train_exact.safetensors ] && fail "a refused run wrote a checkpoint"

finish "polygrad_train under mpirun"
