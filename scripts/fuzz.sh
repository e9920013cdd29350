#!/usr/bin/env bash
# Runs every fuzz target of the module in turn, FUZZTIME each (default 2s):
# `go test -fuzz` fuzzes one target per invocation. The targets are found
# in the sources (every `func FuzzX(` of a _test.go file), so a new one is
# fuzzed without being listed here. Prints, for each target, how long it
# ran and how many inputs it tried; exits non-zero if any target failed,
# after the others ran. A failing input is written by go test to the
# package's testdata/fuzz/FuzzX/: once the bug is fixed, commit it, and it
# runs with every `go test` from then on. See docs/FUZZING.md.
#
# Environment: FUZZTIME (a duration, or Nx for N inputs), FUZZ (a regular
# expression: only the targets whose "package/FuzzX" matches),
# FUZZMINIMIZETIME (1s), FUZZTIMEOUT (go test's -timeout, 1h), GO.
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
FUZZTIME=${FUZZTIME:-2s}
FUZZ=${FUZZ:-.}
# Minimizing a new interesting input can take go test's default of a
# minute, without any input tried meanwhile: far more than a short run.
MINIMIZE=${FUZZMINIMIZETIME:-1s}
# go test's own timeout (10m by default) would end a long run.
TIMEOUT=${FUZZTIMEOUT:-1h}

targets=$(grep -rHo --include='*_test.go' -E '^func Fuzz[A-Za-z0-9_]+\(' . |
	sed -E 's#^\./(.*)/[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]+)\($#\1 \2#' | sort -u)

failed=()
total=0
start=$SECONDS
printf '%-40s %8s %10s %8s\n' target ran inputs per-sec
while read -r dir name; do
	[[ -n $dir ]] || continue
	[[ $dir/$name =~ $FUZZ ]] || continue
	total=$((total + 1))
	log=$(mktemp)
	t0=$SECONDS
	if "$GO" test -run '^$' -fuzz "^$name\$" -fuzztime "$FUZZTIME" -fuzzminimizetime "$MINIMIZE" -timeout "$TIMEOUT" "./$dir" >"$log" 2>&1; then
		status=ok
	elif grep -q '^    context deadline exceeded$' "$log" && ! grep -qE 'Failing input written|^panic:|seed corpus entry' "$log"; then
		# Go's own race at the end of a timed run (go.dev/issue/75804,
		# fixed in Go 1.27): the target failed on nothing.
		status="ok (go#75804)"
	else
		status=FAILED
		failed+=("$dir/$name")
	fi
	# The last progress line: "fuzz: elapsed: 2s, execs: 1234 (617/sec), ...".
	line=$(grep -E '^fuzz: elapsed: .*execs: [0-9]+' "$log" | tail -n 1 || true)
	execs=$(sed -E 's/.*execs: ([0-9]+).*/\1/' <<<"$line")
	# go prints the elapsed time as 59s, 1m0s or 1h2m3s.
	secs=0
	if [[ $line =~ elapsed:\ (([0-9]+)h)?(([0-9]+)m)?([0-9]+)s ]]; then
		secs=$((${BASH_REMATCH[2]:-0} * 3600 + ${BASH_REMATCH[4]:-0} * 60 + ${BASH_REMATCH[5]}))
	fi
	rate=-
	if [[ -n $execs ]] && ((secs > 0)); then
		rate=$((execs / secs))
	fi
	printf '%-40s %7ss %10s %8s %s\n' "$dir/$name" "$((SECONDS - t0))" "${execs:--}" "$rate" "$status"
	if [[ $status != ok ]]; then
		sed 's/^/    /' "$log"
	fi
	rm -f "$log"
done <<<"$targets"

echo "fuzzed $total target(s) for $FUZZTIME each in $((SECONDS - start))s"
if ((${#failed[@]} > 0)); then
	echo "FAILED: ${failed[*]}" >&2
	exit 1
fi
if ((total == 0)); then
	echo "no fuzz target matches FUZZ=$FUZZ" >&2
	exit 1
fi
