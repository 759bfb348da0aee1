#!/usr/bin/env bash
# The main job, from a fresh clone: install what is missing, build, fetch the model,
# bring the cluster of configs/local.yaml up under mpirun (2 target shards + 1 draft
# rank), show its role table, and shut it down cleanly through the leader.
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

# The leader prints the role table once every rank has reported in.
for _ in $(seq 1 300); do
	grep -q '^rank ' "$LOG" && [ "$(grep -cE '^[0-9]+ ' "$LOG")" -ge "$NP" ] && break
	kill -0 "$MPIRUN" 2>/dev/null || { cat "$LOG"; die "the cluster did not come up"; }
	sleep 0.1
done
sed -n '/^specd /,$p' "$LOG" | grep -vE '^[0-9:.]+ (info|debug)' || true
LEADER=$(awk '$4 ~ /^leader/ {print $3; exit}' "$LOG")
[ -n "$LEADER" ] || { cat "$LOG"; die "no leader in the role table"; }

say "cluster up; stopping it with SIGTERM to the leader (pid $LEADER)"
kill -TERM "$LEADER"
rc=0
wait "$MPIRUN" || rc=$?
grep -E 'shutting|stopped cleanly' "$LOG" | sed 's/^/    /' || true
[ "$rc" -eq 0 ] || { cat "$LOG"; die "mpirun exited $rc"; }
say "every rank stopped cleanly; mpirun exited 0"
