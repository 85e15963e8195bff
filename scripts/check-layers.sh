#!/usr/bin/env bash
# Checks that the host's layers call only downward: every
# `#include "<layer>/..."` in host/, cli/ and plugins/ must name the same
# layer or a lower one. Prints file:line for each include pointing up and
# exits 1; exits 0 when there is none. There is no exceptions list.
#
# The order, lowest first (docs/ARCHITECTURE.md says what each holds):
#   core config http pipeline routing svc proto request api lua control
# host/main.c sits above every layer; cli/ may include any host layer and
# cli/. Plugins may include only the SDK (<manifold/...>) and
# plugins/common ("../common/..." or "common/...").
set -uo pipefail
cd "$(dirname "$0")/.."

layers=(core config http pipeline routing svc proto request api lua control)
declare -A rank
for i in "${!layers[@]}"; do rank[${layers[$i]}]=$i; done
top=${#layers[@]}

bad=0
complain() { echo "$1:$2: $3"; bad=1; }

# the rank of the file's own layer
own_rank() {
    case $1 in
    host/main.c | cli/*) echo "$top" ;;
    host/*/*)
        local l=${1#host/}
        l=${l%%/*}
        if [[ -n ${rank[$l]+x} ]]; then echo "${rank[$l]}"; else echo -1; fi
        ;;
    *) echo -1 ;;
    esac
}

shopt -s globstar nullglob
for f in host/**/*.[ch] cli/**/*.[ch]; do
    r=$(own_rank "$f")
    if [[ $r == -1 ]]; then
        complain "$f" 1 "not in a known layer (host/<layer>/, host/main.c or cli/)"
        continue
    fi
    while IFS=: read -r line text; do
        inc=$(sed -E 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"([^"]*)".*/\1/' <<<"$text")
        case $inc in
        */*) ;;
        *)
            complain "$f" "$line" "\"$inc\": name the layer (\"<layer>/$inc\")"
            continue
            ;;
        esac
        l=${inc%%/*}
        if [[ $l == cli ]]; then
            [[ $r == "$top" ]] ||
                complain "$f" "$line" "\"$inc\": a host layer includes cli/"
            continue
        fi
        if [[ -z ${rank[$l]+x} ]]; then
            complain "$f" "$line" "\"$inc\": unknown layer \"$l\""
        elif ((rank[$l] > r)); then
            complain "$f" "$line" "\"$inc\" points up (${l} is above ${layers[$r]:-main})"
        fi
    done < <(grep -nE '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$f")
done

for f in plugins/**/*.[ch]; do
    while IFS=: read -r line text; do
        inc=$(sed -E 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"([^"]*)".*/\1/' <<<"$text")
        case $inc in
        ../common/* | common/*) ;;
        */*) complain "$f" "$line" "\"$inc\": a plugin includes only the SDK and plugins/common" ;;
        *)
            # a file of its own folder
            [[ -e $(dirname "$f")/$inc ]] ||
                complain "$f" "$line" "\"$inc\": a plugin includes only the SDK and plugins/common"
            ;;
        esac
    done < <(grep -nE '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$f")
    # <layer/...> through an include path reaches the host too
    while IFS=: read -r line text; do
        complain "$f" "$line" "a plugin includes a host header: $text"
    done < <(grep -nE "^[[:space:]]*#[[:space:]]*include[[:space:]]*<(host|cli|$(
        IFS='|'
        echo "${layers[*]}"
    ))/" "$f")
done

if ((bad)); then
    echo "check-layers: includes must point to the same layer or below"
    echo "(order: ${layers[*]}, then host/main.c and cli/)"
fi
exit $bad
