#!/usr/bin/env bash
# End-to-end test of polygrad_gradients, run by CTest (registered in examples/CMakeLists.txt):
#   test_gradients.sh <path to polygrad_gradients> <scratch directory>
# init -> make-data -> gradients (float and double) -> attention mode -> polynomial attention
# (poly routes against exact with `compare`, --qk-norm in both modes), then the error paths:
# a malformed or missing file must exit 1 with "polygrad_gradients: <message>", a usage error 2.
source "$(dirname "$0")/lib.sh" "$@"

# header_of <file>: the printable text of a file's first 64 KiB (its JSON header, with the tensor names).
header_of() {
  head -c 65536 "$1" | tr -c '[:print:]' '\n'
}

# --- the normal path ---------------------------------------------------------------------------
run 0 init --out model.safetensors --layers 2 --d-model 8 --heads 2 --d-ff 12 --no-qk-norm --seed 3
grep -q "no QK normalisation" out.txt || fail "init --no-qk-norm: $(cat out.txt)"
run 0 make-data --model model.safetensors --tokens 6 --out data.safetensors --seed 4

run 0 --model model.safetensors --data data.safetensors --out grads.safetensors
[ -s grads.safetensors ] || fail "grads.safetensors was not written"
grep -q '^loss ' out.txt || fail "no loss in the summary: $(cat out.txt)"
grep -q '^layer 1 ' out.txt || fail "no per-layer attention description: $(cat out.txt)"
loss_double=$(awk '/^loss /{print $2}' out.txt)
for name in output loss grad.input grad.blocks.0.attn.q.weight grad.blocks.1.mlp.fc2.bias grad.ln_f.bias; do
  header_of grads.safetensors | grep -qF "\"$name\"" || fail "grads.safetensors has no tensor $name"
done
header_of grads.safetensors | grep -qF '"F64"' || fail "double gradients are not stored as F64"

# Recomputation and thread counts change how, not what: the same gradients.
grep -q '^peak resident memory [0-9]* MiB' out.txt || fail "no peak memory reported: $(cat out.txt)"
grep -q 'backward layer 1/2' err.txt || fail "no progress line per layer: $(cat err.txt)"
run 0 --model model.safetensors --data data.safetensors --out grads_recompute.safetensors --recompute --threads 1
grep -q 'recomputation on' out.txt || fail "--recompute not reported: $(cat out.txt)"
run 0 compare grads_recompute.safetensors grads.safetensors --tolerance 1e-12

# The same run twice gives the same file, byte for byte.
run 0 --model model.safetensors --data data.safetensors --out grads2.safetensors
cmp -s grads.safetensors grads2.safetensors || fail "two identical runs wrote different files"

# float agrees with double to float precision.
run 0 --model model.safetensors --data data.safetensors --out grads_float.safetensors --dtype float
loss_float=$(awk '/^loss /{print $2}' out.txt)
header_of grads_float.safetensors | grep -qF '"F32"' || fail "float gradients are not stored as F32"
awk -v a="$loss_double" -v b="$loss_float" 'BEGIN {
  d = a - b; if (d < 0) d = -d; if (a <= 0 || d > 1e-4 * a) exit 1 }' ||
  fail "float loss $loss_float differs from double loss $loss_double"

# An F32 model and F32 data are read by the double computation too.
run 0 init --out model32.safetensors --layers 1 --d-model 6 --heads 3 --d-ff 5 --no-causal --qk-norm 2 --dtype float
run 0 make-data --model model32.safetensors --tokens 3 --out data32.safetensors --dtype float
run 0 --model model32.safetensors --data data32.safetensors --out grads32.safetensors --dtype double
grep -q 'non-causal' out.txt || fail "--no-causal was not recorded: $(cat out.txt)"

# Attention mode.
run 0 make-data --heads 2 --head-dim 4 --tokens 9 --out qkv.safetensors --seed 5
run 0 attention --data qkv.safetensors --out attn.safetensors --causal --scale 0.3
for name in o dq dk dv; do
  header_of attn.safetensors | grep -qF "\"$name\"" || fail "attn.safetensors has no tensor $name"
done
header_of attn.safetensors | grep -qF '[2,9,4]' || fail "attention outputs are not [H, n, d_h]"
run 0 attention --data qkv.safetensors --out attn_float.safetensors --dtype float
grep -q '^peak resident memory [0-9]* MiB' out.txt || fail "no peak memory reported: $(cat out.txt)"
run 0 attention --data qkv.safetensors --out attn_float1.safetensors --dtype float --threads 1
run 0 compare attn_float1.safetensors attn_float.safetensors --tolerance 1e-6

# --- polynomial attention ------------------------------------------------------------------------
# A QK-normalised model: R = tau is fixed, so the certified error bounds every head.
run 0 init --out qk.safetensors --layers 2 --d-model 8 --heads 2 --d-ff 12 --qk-norm 2 --seed 6
run 0 make-data --model qk.safetensors --tokens 40 --out qkdata.safetensors --seed 7
run 0 --model qk.safetensors --data qkdata.safetensors --out qk_exact.safetensors
for route in adjoint paper; do
  run 0 --model qk.safetensors --data qkdata.safetensors --out "qk_$route.safetensors" \
    --attention poly --route "$route" --epsilon 1e-4
  grep -q "^layer 1 head 1: poly $route chebyshev" out.txt || fail "no $route plan printed: $(cat out.txt)"
  grep -q "audit(32 rows)" out.txt || fail "the default audit did not run: $(cat out.txt)"
  header_of "qk_$route.safetensors" | grep -qF '"plan.layer1"' || fail "no plan.layer1 metadata ($route)"
  # Within 1e-3 of the exact gradients, but not identical: the polynomial path really ran.
  run 0 compare "qk_$route.safetensors" qk_exact.safetensors --tolerance 1e-3
  grep -q '^max ' out.txt || fail "compare printed no maximum: $(cat out.txt)"
  awk '/^max /{ if ($2 + 0 == 0) exit 1 }' out.txt || fail "$route gradients equal the exact ones exactly"
done
# A fixed low degree (Taylor, g = 2) is far from exact: compare must notice (exit 1).
run 0 --model qk.safetensors --data qkdata.safetensors --out qk_g1.safetensors --attention poly \
  --degree 2 --family taylor --audit 0
grep -q "poly adjoint taylor g=2" out.txt || fail "--degree 2 --family taylor not used: $(cat out.txt)"
grep -q "audit(" out.txt && fail "--audit 0 still audited: $(cat out.txt)"
run 1 compare qk_g1.safetensors qk_exact.safetensors --tolerance 1e-3
expect_stderr "above the tolerance"

# --qk-norm turns the normalisation on for a model saved without it, and is recorded.
run 0 --model model.safetensors --data data.safetensors --out qk_override.safetensors --qk-norm 2 \
  --attention auto
grep -q '(qk_norm)' out.txt || fail "--qk-norm did not reach the model: $(cat out.txt)"
header_of qk_override.safetensors | grep -qF '"qk_norm"' || fail "qk_norm is not in the metadata"

# Attention mode: raw q, k normalised per head; poly against exact, and against plain attention.
run 0 attention --data qkv.safetensors --out attn_qk_exact.safetensors --causal --qk-norm 2
run 0 attention --data qkv.safetensors --out attn_qk_poly.safetensors --causal --qk-norm 2 \
  --attention poly --route paper --bound 2
grep -q 'poly paper chebyshev g=[0-9]* k=[0-9]* R=2 (caller)' out.txt || fail "no caller-bound plan: $(cat out.txt)"
header_of attn_qk_poly.safetensors | grep -qF '"plan"' || fail "attention output has no plan metadata"
run 0 compare attn_qk_poly.safetensors attn_qk_exact.safetensors --tolerance 1e-2
run 1 compare attn_qk_exact.safetensors attn.safetensors --tolerance 1e-2
run 0 attention --data qkv.safetensors --out attn_poly.safetensors --attention poly --dtype float
run 0 compare attn_poly.safetensors attn_float.safetensors --tolerance 1e-2

# --- errors ------------------------------------------------------------------------------------
printf 'this is not a safetensors file' >garbage.safetensors
run 1 --model garbage.safetensors --data data.safetensors --out x.safetensors
expect_stderr "polygrad_gradients: garbage.safetensors"
[ -e x.safetensors ] && fail "an output file was written although the run failed"

head -c 100 model.safetensors >truncated.safetensors
run 1 --model truncated.safetensors --data data.safetensors --out x.safetensors
expect_stderr "polygrad_gradients: truncated.safetensors"

run 1 --model missing.safetensors --data data.safetensors --out x.safetensors
expect_stderr "polygrad_gradients: cannot read missing.safetensors: no such file"

# Data of the wrong width for the model.
run 1 --model model.safetensors --data data32.safetensors --out x.safetensors
expect_stderr "input must be [n, 8]"

# Attention data is not model data.
run 1 --model model.safetensors --data qkv.safetensors --out x.safetensors
expect_stderr "no tensor named 'input'"
run 1 attention --data data.safetensors --out x.safetensors
expect_stderr "no tensor named 'q'"

# Usage errors: exit 2 with the usage text.
run 2 --model model.safetensors --data data.safetensors
expect_stderr "--out is required"
expect_stderr "Usage:"
run 2 --model model.safetensors --data data.safetensors --out x.safetensors --attention nonsense
expect_stderr "Usage:"
run 2 --model model.safetensors --data data.safetensors --out x.safetensors --dtype half
run 2 init --out x.safetensors --scale -1
run 2 init --out x.safetensors --qk-norm 2 --no-qk-norm
# Without options, init writes the demo model.
run 0 init --out demo_shape.safetensors
grep -q "wrote a 4-layer model (d_model 64, 8 heads, d_ff 256, QK normalisation tau 2," out.txt ||
  fail "init's defaults are not the demo model: $(cat out.txt)"
# Bad combinations of the attention flags.
run 2 --model qk.safetensors --data qkdata.safetensors --out x.safetensors --attention poly --degree 5 --epsilon 1e-3
expect_stderr "excludes"
run 2 --model qk.safetensors --data qkdata.safetensors --out x.safetensors --route paper
expect_stderr "--attention poly"
run 2 --model qk.safetensors --data qkdata.safetensors --out x.safetensors --audit 8
run 2 --model qk.safetensors --data qkdata.safetensors --out x.safetensors --attention poly --family legendre
run 2 --model qk.safetensors --data qkdata.safetensors --out x.safetensors --attention poly --bound -1
run 2 --model qk.safetensors --data qkdata.safetensors --out x.safetensors --qk-norm 0
run 2 attention --data qkv.safetensors --out x.safetensors --qk-norm 2 --scale 0.5
run 2 attention --data qkv.safetensors --out x.safetensors --epsilon 1e-3
run 2 compare grads.safetensors
[ -e x.safetensors ] && fail "a usage error wrote an output file"
# A request no polynomial plan can meet is a run-time error, not a crash.
run 1 attention --data qkv.safetensors --out x.safetensors --attention poly --bound 100
expect_stderr "polygrad_gradients: "
# ... naming the remedies by this program's flags, and none it lacks (a maximum degree).
expect_stderr "(--epsilon)"
grep -qE "PolyOptions|max_degree|maximum degree" err.txt && fail "the refusal names options the program has no flag for: $(cat err.txt)"
run 0 --help
grep -q "Usage:" out.txt || fail "--help printed no usage"

finish "gradients"
