#!/usr/bin/env bash
# polygrad_sample on the models a short polygrad_train run writes: the text continues the prompt
# with the number of characters asked, drawn from the vocabulary; the same seed gives the same
# text, temperature 0 the likeliest characters; bad files and prompts fail with a message.
#   test_sample.sh <path to polygrad_sample> <scratch directory> <path to polygrad_train>
source "$(dirname "$0")/lib.sh" "$1" "$2"
train=$3

awk 'BEGIN { for (i = 0; i < 300; ++i) print "the quick brown fox jumps over the lazy dog" }' >fox.txt
"$train" --text fox.txt --layers 1 --d-model 16 --heads 4 --d-ff 32 --seq-len 32 --batch 2 \
  --steps 30 --eval-every 30 --eval-seqs 2 --warmup 2 --lr 1e-2 -q --out-dir out >train.txt 2>&1 ||
  fail "polygrad_train failed: $(cat train.txt)"

for run_name in exact approx; do
  run 0 --model out/model_$run_name.safetensors --prompt "the quick" --tokens 80 --seed 3
  text=$(cat out.txt)
  [ "${#text}" -eq 89 ] || fail "$run_name: expected 9 + 80 characters, got ${#text}: $text"
  [ "${text:0:9}" == "the quick" ] || fail "$run_name: the output does not start with the prompt: $text"
  # Every character is one of the text's (letters, the space and the newline).
  [ -z "$(printf '%s' "$text" | tr -d 'a-z \n')" ] || fail "$run_name: characters outside the vocabulary: $text"
  run 0 --model out/model_$run_name.safetensors --prompt "the quick" --tokens 80 --seed 3
  [ "$(cat out.txt)" == "$text" ] || fail "$run_name: the same seed gave another text"
done

# Greedy: after 30 steps the likeliest continuation of "the quick" is not the same character over
# and over, and is the same whatever the seed.
run 0 --model out/model_exact.safetensors --prompt "the quick" --tokens 40 --temperature 0 --seed 1
greedy=$(cat out.txt)
run 0 --model out/model_exact.safetensors --prompt "the quick" --tokens 40 --temperature 0 --seed 2
[ "$(cat out.txt)" == "$greedy" ] || fail "temperature 0 depends on the seed"
# Past the context (32): the window slides.
run 0 --model out/model_approx.safetensors --prompt "the" --tokens 100 --top-k 3 --attention poly
[ "$(head -c 103 out.txt | wc -c)" -eq 103 ] || fail "sliding window: $(cat out.txt)"

# Method auto chooses each head's path from the length, which decoding token by token cannot.
run 1 --model out/model_approx.safetensors --attention auto
expect_stderr "decode with method poly or exact"
[ -s out.txt ] && fail "a refused model still printed the prompt: $(cat out.txt)"
run 2 --model out/model_exact.safetensors --route paper  # no backward pass: no route flag

run 1 --model missing.safetensors
expect_stderr "polygrad_sample: cannot read missing.safetensors"
run 1 --model out/train_state.safetensors
expect_stderr "not a LanguageModel file"
run 1 --model out/model_exact.safetensors --prompt "THE"
expect_stderr "the prompt's character 0 (byte 84) is not in the model's vocabulary"
run 2 --model out/model_exact.safetensors --prompt ""
run 2 --prompt "the"
run 2 --model out/model_exact.safetensors --temperature -1

finish "sample"
