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

# mpi_setup <args after the scratch directory>: <mpiexec> <its -n flag> [its other flags...], for
# mpi_run.
mpi_setup() {
  shift 2
  mpiexec=$1
  ranks_flag=$2
  shift 2
  mpiexec_flags=("$@")
}

# mpi_run <ranks> <expected status: 0, or 1 for any failure> <args...>: as run, under mpiexec; a
# hang fails after 300 s.
mpi_run() {
  local ranks=$1 expected=$2
  shift 2
  timeout 300 "$mpiexec" "$ranks_flag" "$ranks" "${mpiexec_flags[@]}" "$program" "$@" >out.txt 2>err.txt
  local status=$?
  [ "$status" -eq 124 ] && fail "'$*' on $ranks ranks hung"
  if [ "$expected" -eq 0 ]; then
    [ "$status" -eq 0 ] || fail "'$*' on $ranks ranks exited with $status; stderr: $(cat err.txt)"
  else
    [ "$status" -ne 0 ] || fail "'$*' on $ranks ranks succeeded; it should have failed"
  fi
}

# finish <what was checked>: exits 1 if any check failed, else says that all passed.
finish() {
  if [ "$failures" -ne 0 ]; then
    echo "$failures check(s) failed" >&2
    exit 1
  fi
  echo "all $1 checks passed"
}
