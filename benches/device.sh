#!/usr/bin/env bash
# The many-core scaling run, prepared so that a session lent a quiet
# 16-core machine (the `device` tool) spends its few minutes measuring,
# not building. See DEVELOPERS.md, "Measuring".
#
#   bash benches/device.sh build
#       Here: builds the release bench binaries (every feature the benches
#       use), strips them and copies them into `.bench-bins/`, which it adds
#       to `.git/info/exclude` so that it travels only when carried.
#
#   bash benches/device.sh run [SECONDS]
#       There (`run` with `carry: [".bench-bins"]`, `timeout_s` 600):
#       runs `scaling` (every shared hot path at 1, 2, 4, 8 and 16
#       threads beside its peers), then `pool`, `channel` and `tower`, then
#       any other executable put into `.bench-bins/` by hand (a branch's
#       bench, say `scaling_chan`), while time is left, stopping before
#       SECONDS (default 540) have passed. A file `.bench-bins/NAME.args`
#       holds the arguments for NAME (a criterion filter such as
#       `scaling/channel`); without one it runs every group. At most 8
#       files come back: keep to two such extras.
#       Writes under $OUT (at most 8 files come back): `machine.txt` (cores,
#       model, load averages), one `<bench>.log` per bench (criterion's
#       output with the load average before and after) and `medians.tsv`
#       (group, row, median ns, load before/after), for the tables in
#       benches/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
BINS=.bench-bins
# The benches, in the order they run: the scaling groups answer #17.
BENCHES=(scaling pool channel tower)

build() {
    local exclude
    exclude="$(git rev-parse --git-common-dir)/info/exclude"
    mkdir -p "$(dirname "$exclude")"
    grep -qxF "/$BINS/" "$exclude" 2>/dev/null || echo "/$BINS/" >>"$exclude"
    rm -rf "$BINS" && mkdir -p "$BINS"
    local args=()
    for b in "${BENCHES[@]}"; do args+=(--bench "$b"); done
    # The executables cargo built, one per bench, read from its JSON
    # messages (the names carry a hash).
    local json
    json=$(cargo bench --no-run --features tower "${args[@]}" --message-format=json) || {
        echo "device.sh: the bench build failed (see cargo's output above)" >&2
        exit 1
    }
    grep '"executable":"/' <<<"$json" |
        sed 's/.*"name":"\([A-Za-z0-9_-]*\)".*"executable":"\([^"]*\)".*/\1 \2/' |
        while read -r name exe; do
            strip -o "$BINS/$name" "$exe"
        done
    local n
    n=$(find "$BINS" -maxdepth 1 -type f -perm -u+x | wc -l)
    if [ "$n" -ne "${#BENCHES[@]}" ]; then
        echo "device.sh: $n bench executables in $BINS, expected ${#BENCHES[@]}" >&2
        exit 1
    fi
    ls -l "$BINS"
    du -sh "$BINS"
}

run() {
    local budget=${1:-540} out=${OUT:-/tmp/device-out} start=$SECONDS
    mkdir -p "$out"
    {
        date -u
        nproc
        grep -m1 'model name' /proc/cpuinfo || true
        echo "load at start: $(cat /proc/loadavg)"
    } >"$out/machine.txt"
    printf 'bench\tgroup/row\tmedian_ns\tload_before\tload_after\n' >"$out/medians.tsv"
    local all=("${BENCHES[@]}") f
    for f in "$BINS"/*; do
        f=$(basename "$f")
        [[ -f "$BINS/$f" && -x "$BINS/$f" && " ${BENCHES[*]} " != *" $f "* ]] && all+=("$f")
    done
    for b in "${all[@]}"; do
        [[ -f "$BINS/$b" && -x "$BINS/$b" ]] || continue
        # A bench is started only with 90 s left for it.
        if ((SECONDS - start > budget - 90)); then
            echo "skipped $b: $((SECONDS - start)) s gone of $budget" >>"$out/machine.txt"
            continue
        fi
        local before after left=$((budget - (SECONDS - start)))
        before=$(cut -d' ' -f1-3 /proc/loadavg)
        # `timeout` keeps one slow bench from eating the rest.
        local args=()
        # `|| true`: `read` fails on a file with no final newline, which
        # must not end the run under `set -e`.
        if [ -f "$BINS/$b.args" ]; then read -r -a args <"$BINS/$b.args" || true; fi
        (cd "$BINS" && timeout "$left" "./$b" --bench --noplot ${args[@]+"${args[@]}"}) >"$out/$b.log" 2>&1 || true
        after=$(cut -d' ' -f1-3 /proc/loadavg)
        echo "$b: load before $before, after $after, done at $((SECONDS - start)) s" >>"$out/machine.txt"
        # criterion prints "<id>\n  time: [low median high]" (or the id and
        # the times on one line when the id is short).
        awk -v b="$b" -v lb="$before" -v la="$after" '
            function ns(v, u) { return u == "ps" ? v / 1000 : u == "ns" ? v : u == "µs" || u == "us" ? v * 1000 : u == "ms" ? v * 1e6 : v * 1e9 }
            /time:/ {
                id = prev
                if ($1 != "time:") id = $1
                for (i = 1; i <= NF; i++) if ($i == "time:") break
                printf "%s\t%s\t%.2f\t%s\t%s\n", b, id, ns($(i + 3), $(i + 4)), lb, la
            }
            { if (NF == 1) prev = $1 }
        ' "$out/$b.log" >>"$out/medians.tsv"
    done
    echo "load at end: $(cat /proc/loadavg)" >>"$out/machine.txt"
}

case "${1:-}" in
build) build ;;
run) shift; run "$@" ;;
*)
    echo "usage: $0 build | run [SECONDS]" >&2
    exit 2
    ;;
esac
