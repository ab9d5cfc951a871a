# Shared by the tests/programs/test_*.sh scripts, which source it first:
#   source "$(dirname "$0")/lib.sh" "$@"
# Arguments: <path to the program> <scratch directory>. Sets $program, empties the scratch
# directory and enters it, and defines the helpers below; finish() ends the script.
set -u
program=$1
work=$2
rm -rf "$work"
mkdir -p "$work"
cd "$work" || exit 1

failures=0

# fail <message>: records a failed check and goes on.
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

# run <expected status> <args...>: runs the program, keeping stdout and stderr in out.txt, err.txt.
run() {
  local expected=$1
  shift
  "$program" "$@" >out.txt 2>err.txt
  local status=$?
  [ "$status" -eq "$expected" ] || fail "'$*' exited with $status, expected $expected; stderr: $(cat err.txt)"
}

# expect_stderr <text>: the last run's stderr must contain text.
expect_stderr() {
  grep -qF -- "$1" err.txt || fail "stderr lacks '$1': $(cat err.txt)"
}

# finish <what was checked>: exits 1 if any check failed, else says that all passed.
finish() {
  if [ "$failures" -ne 0 ]; then
    echo "$failures check(s) failed" >&2
    exit 1
  fi
  echo "all $1 checks passed"
}
