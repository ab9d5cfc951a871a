#!/usr/bin/env bash
# polygrad_gradients under mpirun, run by CTest (label mpi; registered in examples/CMakeLists.txt):
#   test_gradients_mpi.sh <polygrad_gradients> <scratch directory> <mpiexec> <-n flag> [flags...]
# The model and attention modes with the sequence split across 2, 3 and 4 ranks write the file
# one process writes (every tensor within 1e-12 in double, 1e-5 in float), for exact attention
# (ring) and both polynomial routes, causal and not, with n not a multiple of the ranks and
# shards shorter than a chunk. Errors end every rank with a message and write nothing.
source "$(dirname "$0")/lib.sh" "$@"
mpi_setup "$@"

# --- a 2-layer model, 37 rows (a multiple of none of 2, 3, 4) --------------------------------
run 0 init --out causal.safetensors --layers 2 --d-model 8 --heads 2 --d-ff 12 --qk-norm 2 --seed 3
run 0 init --out bidirectional.safetensors --layers 2 --d-model 8 --heads 2 --d-ff 12 --qk-norm 2 --no-causal --seed 5
run 0 make-data --model causal.safetensors --tokens 37 --out data.safetensors --seed 4

# Polynomial chunks of 8 rows would be shorter than no shard here; the default (64) is longer
# than every shard, so a shard sits inside one chunk.
methods=("--attention exact" "--attention poly --route adjoint --degree 3"
         "--attention poly --route paper --degree 3")
for model in causal bidirectional; do
  for m in "${!methods[@]}"; do
    method=${methods[$m]}
    tag="${model}_$m"
    # shellcheck disable=SC2086  # $method holds several flags
    run 0 --model $model.safetensors --data data.safetensors --out one_$tag.safetensors $method
    for ranks in 2 3 4; do
      # shellcheck disable=SC2086
      mpi_run "$ranks" 0 --model $model.safetensors --data data.safetensors --out p${ranks}_$tag.safetensors $method
      grep -q "split across $ranks ranks" out.txt || fail "$ranks ranks not reported: $(cat out.txt)"
      [ "$(grep -c '^loss ' out.txt)" -eq 1 ] || fail "the report is not printed once (by rank 0): $(cat out.txt)"
      run 0 compare p${ranks}_$tag.safetensors one_$tag.safetensors --tolerance 1e-12
      grep -q "^only in" out.txt && fail "$tag on $ranks ranks: the files hold different tensors: $(cat out.txt)"
    done
  done
done

# float, ring exact and the adjoint route on 3 ranks.
for method in "--attention exact" "--attention poly --route adjoint --degree 3"; do
  # shellcheck disable=SC2086
  run 0 --model causal.safetensors --data data.safetensors --out one_float.safetensors --dtype float $method
  # shellcheck disable=SC2086
  mpi_run 3 0 --model causal.safetensors --data data.safetensors --out p3_float.safetensors --dtype float $method
  run 0 compare p3_float.safetensors one_float.safetensors --tolerance 1e-5
done

# Recomputation per rank gives the same gradients.
mpi_run 2 0 --model causal.safetensors --data data.safetensors --out p2_recompute.safetensors --recompute --attention poly --degree 3
run 0 compare p2_recompute.safetensors one_causal_1.safetensors --tolerance 1e-12

# --- attention mode: [H, n, d_h] files, 23 rows -----------------------------------------------
run 0 make-data --heads 3 --head-dim 4 --tokens 23 --out qkv.safetensors --seed 6
for flags in "--causal --attention exact" "--attention exact" "--causal --qk-norm 2 --attention poly --degree 4" \
             "--qk-norm 2 --attention poly --route paper --degree 4"; do
  # shellcheck disable=SC2086
  run 0 attention --data qkv.safetensors --out attn_one.safetensors $flags
  for ranks in 2 4; do
    # shellcheck disable=SC2086
    mpi_run "$ranks" 0 attention --data qkv.safetensors --out attn_p.safetensors $flags
    run 0 compare attn_p.safetensors attn_one.safetensors --tolerance 1e-12
  done
done

# --- errors: every rank stops with a message, no output file, no temporary ---------------------
run 0 make-data --model causal.safetensors --tokens 3 --out short.safetensors --seed 1
mpi_run 4 1 --model causal.safetensors --data short.safetensors --out never.safetensors
expect_stderr "more ranks than rows"
[ -e never.safetensors ] && fail "a failed run wrote its output"

mpi_run 2 1 --model causal.safetensors --data data.safetensors --out missing_dir/grads.safetensors
expect_stderr "cannot write missing_dir/grads.safetensors"
ls missing_dir 2>/dev/null | grep -q . && fail "a failed write left files behind"

mpi_run 2 1 attention --data qkv.safetensors --out never.safetensors --attention poly --audit 4
expect_stderr "audit"
[ -e never.safetensors ] && fail "a refused audit wrote its output"

mpi_run 2 1 make-data --heads 1 --head-dim 2 --tokens 4 --out never.safetensors
expect_stderr "runs in one process"
[ -e never.safetensors ] && fail "make-data on 2 ranks wrote a file"

finish "polygrad_gradients under mpirun"
