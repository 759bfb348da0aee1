#!/usr/bin/env bash
# The main job, from a fresh clone: install what is missing, build, fetch the model,
# bring the cluster of configs/local.yaml up under mpirun (2 target shards + 1 draft
# rank), send a real prompt with specctl and stream the answer with its speculation
# stats, show the cluster's status, and shut it down cleanly with specctl shutdown.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

"$SPECD_ROOT/scripts/install-deps.sh"
ensure_models
configure_and_build "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo

CLUSTER=${CLUSTER:-$SPECD_ROOT/configs/local.yaml}
"$BUILD_DIR/daemon/specd" --check-config "$CLUSTER"
NP=$(awk '/ranks =/ {for (i = 1; i <= NF; i++) if ($i == "ranks") print $(i-1)}' \
	< <("$BUILD_DIR/daemon/specd" --check-config "$CLUSTER") | tr -dc 0-9)
[ -n "$NP" ] || die "could not read the rank count from --check-config"

LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
say "starting: mpirun -np $NP specd --cluster $CLUSTER"
mpirun --allow-run-as-root --oversubscribe --bind-to none -np "$NP" \
	"$BUILD_DIR/daemon/specd" --cluster "$CLUSTER" >"$LOG" 2>&1 &
MPIRUN=$!

# The leader prints the role table, then "serving on ADDR" once the model is loaded.
for _ in $(seq 1 600); do
	grep -q '^specd: serving on ' "$LOG" && break
	kill -0 "$MPIRUN" 2>/dev/null || { cat "$LOG"; die "the cluster did not come up"; }
	sleep 0.1
done
grep -q '^specd: serving on ' "$LOG" || { cat "$LOG"; die "the cluster did not start serving"; }
sed -n '/^specd /,$p' "$LOG" | grep -vE '^[0-9:.]+ (info|debug|warn)' || true
ADDR=$(sed -n 's/^specd: serving on \([^ ]*\).*/\1/p' "$LOG" | head -1)
SPECCTL="$BUILD_DIR/daemon/specctl --addr $ADDR"

PROMPT=${PROMPT:-"Once upon a time, there was a little robot named Bolt. One day, Bolt"}
say "specctl generate --prompt \"$PROMPT\" --max-tokens 160"
$SPECCTL generate --prompt "$PROMPT" --max-tokens 160 ||
	{ cat "$LOG"; die "generate failed"; }
say "specctl status"
$SPECCTL status

say "specctl shutdown: the leader drains its jobs, then every rank exits"
$SPECCTL shutdown
rc=0
wait "$MPIRUN" || rc=$?
grep -E 'stopped cleanly' "$LOG" | sed 's/^/    /' || true
[ "$rc" -eq 0 ] || { cat "$LOG"; die "mpirun exited $rc"; }
say "every rank stopped cleanly; mpirun exited 0"
