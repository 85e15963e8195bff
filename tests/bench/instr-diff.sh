#!/usr/bin/env bash
# A function's instructions per request, from the two callgrind files of
# one row that instr-xlate.sh keeps (MF_INSTR_PROFILES): the difference
# of its counts divided by the difference of the requests, which cancels
# start-up and shutdown. Exclusive counts by default, with -i inclusive.
#   tests/bench/instr-diff.sh [-i] N1.callgrind N2.callgrind REQUESTS [TOP]
set -euo pipefail
INC=no
if [ "${1:-}" = -i ]; then INC=yes; shift; fi
counts() {
  callgrind_annotate --auto=no --inclusive="$INC" --threshold=100 "$1" 2>/dev/null |
    perl -ne 'print "$1 $2\n" if /^\s*([\d,]+)\s+\([^)]*\)\s+(?:\*\s+)?(\S+)/ && $2 ne "PROGRAM" && $2 ne "=>"' |
    tr -d ,
}
join -1 2 -2 2 -a 2 -e 0 -o 0,1.1,2.1 \
  <(counts "$1" | sort -k2,2) <(counts "$2" | sort -k2,2) |
  awk -v n="$3" '{ d = ($3 - $2) / n; if (d >= 50) printf "%9.0f %s\n", d, $1 }' |
  sort -rn | head -"${4:-40}"
