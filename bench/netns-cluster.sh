#!/usr/bin/env bash
# An emulated two-node cluster on one machine (issue #13): two network namespaces,
# $NAME-n0 (10.77.0.1) and $NAME-n1 (10.77.0.2), joined by a veth pair whose link is
# shaped with tc, and Open MPI jobs whose ranks run on both sides and talk TCP over
# that link only: the target ranks 0..T-1 in n0, the last rank (the dedicated draft
# rank of `draft.placement: rank`) in n1. The selector's link probe then measures the
# emulated link, so its choice can be watched as the link changes.
#
#   bench/netns-cluster.sh up [--rate 100mbit] [--delay 1ms]   create (or reshape) it
#   bench/netns-cluster.sh shape --rate R --delay D             reshape the live link
#   bench/netns-cluster.sh run [--rate R] [--delay D] -- -np 3 build/daemon/specd --cluster F
#   bench/netns-cluster.sh decide [--rate R] [--delay D] [--build DIR] [--np N] FILE.yaml
#   bench/netns-cluster.sh exec n0|n1 -- COMMAND...             e.g. specctl in n0
#   bench/netns-cluster.sh status                               what is up, the shape
#   bench/netns-cluster.sh down                                 remove it all (idempotent)
#
# `run` adds to the mpirun arguments the launch agent (bench/netns/agent.sh runs the
# remote side under `ip netns exec` instead of ssh), --host $NAME-n0:N-1,$NAME-n1:1
# (unless the arguments name hosts), `--mca btl self,tcp` (so no pair of ranks shares
# memory past the link) with btl and oob restricted to the veth's subnet, and
# --oversubscribe --bind-to none. `decide` starts the cluster file's daemon that way,
# prints the measured link and the selector's decision with its reasons and `specctl
# status`, and shuts it down. `run` and `decide` bring the link up with the given shape
# when it is not up, and take it down again when they exit; a link that was up before
# is reshaped only when --rate or --delay is given, and left up.
#
# Shaping: --rate (tc units: bit, kbit, mbit, gbit; "none") is a tbf on each veth end;
# --delay (us, ms, s; 0 for none) is added on each end, so a round trip takes twice it:
# with the netem qdisc where the kernel has it, else (kernels built without
# CONFIG_NET_SCH_NETEM) by bench/netns/delay.py, which holds each packet leaving the
# veth for the delay through an iptables NFQUEUE rule (--delay-by netem|nfqueue|auto).
#
# Host names: each side runs in a UTS namespace of its own with the host name $NAME-n0
# or $NAME-n1 (what the census shows and what Open MPI calls the nodes), and the names
# resolve inside the namespaces through /etc/netns/$NAME-n*/hosts, which `ip netns exec`
# bind-mounts over /etc/hosts in its private mount namespace: the machine's own
# /etc/hosts is never written, and `down` removes the two files again.
#
# Needs root (CAP_NET_ADMIN); installs iproute2 (and, for the NFQUEUE delay, iptables)
# with apt-get when missing. Exit status 77: this machine cannot host the namespaces
# (not root, no CAP_NET_ADMIN, namespaces refused), with the reason on stderr.
# SPECD_NETNS_NAME (default specd) and SPECD_NETNS_NET (default 10.77.0) let two
# emulated clusters coexist.
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

NAME=${SPECD_NETNS_NAME:-specd}
NET=${SPECD_NETNS_NET:-10.77.0}
export SPECD_NETNS_NAME=$NAME SPECD_NETNS_NET=$NET
NS=("$NAME-n0" "$NAME-n1")
DEV=("$NAME-v0" "$NAME-v1")
ADDR=("$NET.1" "$NET.2")
STATE=/run/$NAME-netns
AGENT=$SPECD_ROOT/bench/netns/agent.sh
DELAYER=$SPECD_ROOT/bench/netns/delay.py
SKIP=77

usage() { sed -n '2,/^source/{/^source/d;/^# shellcheck/d;s/^# \{0,1\}//;p}' "$0"; }
cannot() { printf 'netns-cluster: cannot emulate the cluster here: %s\n' "$*" >&2; exit $SKIP; }

# --- dependencies -------------------------------------------------------------------

need_root() {
	[ "$(id -u)" -eq 0 ] || cannot "needs root (network namespaces, veth and tc need CAP_NET_ADMIN)"
}

# apt_install CMD PACKAGE: installs PACKAGE when CMD is missing, as scripts/install-deps.sh does.
apt_install() {
	command -v "$1" >/dev/null 2>&1 && return 0
	say "installing $2 (for $1)"
	export DEBIAN_FRONTEND=noninteractive
	{ apt-get update -qq && apt-get install -y -qq --no-install-recommends "$2"; } >/dev/null 2>&1 ||
		die "$1 is missing and apt-get could not install $2: install it by hand"
	command -v "$1" >/dev/null 2>&1 || die "$2 is installed but $1 is still missing"
}

need_tools() {
	need_root
	apt_install ip iproute2
	apt_install tc iproute2
	command -v unshare >/dev/null 2>&1 || die "unshare (util-linux) is missing"
}

# --- the namespaces and the link ----------------------------------------------------

# Both namespaces and the veth: anything less is a half-made link that bring_up
# removes before it starts again.
is_up() {
	ip -n "${NS[0]}" link show "${DEV[0]}" >/dev/null 2>&1 &&
		ip -n "${NS[1]}" link show "${DEV[1]}" >/dev/null 2>&1
}

# in_ns I CMD...: CMD in namespace I under its own host name. Each step execs the
# next, so a background in_ns's $! is CMD's own pid once it runs.
in_ns() {
	# shellcheck disable=SC2016 # $0 and $@ are the inner shell's
	exec ip netns exec "${NS[$1]}" unshare --uts sh -c 'hostname "$0" && exec "$@"' \
		"${NS[$1]}" "${@:2}"
}

create() {
	mkdir -p "$STATE"
	# A namespace refused here is the machine's limit (a container without
	# CAP_NET_ADMIN), not a bug: say so and exit 77.
	local why
	why=$(ip netns add "${NS[0]}" 2>&1) || cannot "ip netns add ${NS[0]}: $why"
	# Entering one can still be refused (a chroot whose / is no mount point: "mount
	# --make-rslave /" fails): that is the machine's limit too.
	why=$(ip netns exec "${NS[0]}" true 2>&1) || cannot "ip netns exec ${NS[0]}: $why"
	ip netns add "${NS[1]}"
	why=$(ip link add "${DEV[0]}" netns "${NS[0]}" type veth peer name "${DEV[1]}" \
		netns "${NS[1]}" 2>&1) || cannot "ip link add ... type veth: $why"
	[ -d /etc/netns ] || { mkdir /etc/netns && touch "$STATE/made-etc-netns"; }
	local i
	for i in 0 1; do
		ip -n "${NS[$i]}" addr add "${ADDR[$i]}/24" dev "${DEV[$i]}"
		ip -n "${NS[$i]}" link set lo up
		ip -n "${NS[$i]}" link set "${DEV[$i]}" up
		mkdir -p "/etc/netns/${NS[$i]}"
		{
			printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n'
			printf '%s\t%s\n' "${ADDR[0]}" "${NS[0]}" "${ADDR[1]}" "${NS[1]}"
		} >"/etc/netns/${NS[$i]}/hosts"
	done
}

any_alive() {
	local p
	for p; do kill -0 "$p" 2>/dev/null && return 0; done
	return 1
}

# Removes every piece that exists, in any state; never fails. Processes still in the
# namespaces (a job whose mpirun lost its remote side, the delay processes) go first:
# a namespace is only gone once nothing runs in it.
teardown() {
	local i pids=() _
	for i in 0 1; do
		mapfile -t -O ${#pids[@]} pids < <(ip netns pids "${NS[$i]}" 2>/dev/null || true)
	done
	if [ ${#pids[@]} -gt 0 ]; then
		kill "${pids[@]}" 2>/dev/null || true
		for _ in $(seq 30); do
			any_alive "${pids[@]}" || break
			sleep 0.1
		done
		kill -9 "${pids[@]}" 2>/dev/null || true
	fi
	for i in 0 1; do
		ip netns del "${NS[$i]}" 2>/dev/null || true # takes the veth, qdiscs and rules
		rm -rf "/etc/netns/${NS[$i]}"
	done
	[ ! -f "$STATE/made-etc-netns" ] || rmdir /etc/netns 2>/dev/null || true
	rm -rf "$STATE"
	return 0
}

# to_bits RATE: bits/s of a tc rate (bit, kbit, mbit, gbit).
to_bits() {
	local n=${1%%[a-zA-Z]*} u
	u=$(printf '%s' "${1#"$n"}" | tr '[:upper:]' '[:lower:]')
	[[ $n =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--rate $1: want a number and bit, kbit, mbit or gbit"
	case $u in
	bit) awk -v n="$n" 'BEGIN { printf "%.0f", n }' ;;
	kbit) awk -v n="$n" 'BEGIN { printf "%.0f", n * 1e3 }' ;;
	mbit) awk -v n="$n" 'BEGIN { printf "%.0f", n * 1e6 }' ;;
	gbit) awk -v n="$n" 'BEGIN { printf "%.0f", n * 1e9 }' ;;
	*) die "--rate $1: want a number and bit, kbit, mbit or gbit" ;;
	esac
}

# to_us DELAY: microseconds of a delay (us, ms, s).
to_us() {
	local n=${1%%[a-zA-Z]*} u
	u=$(printf '%s' "${1#"$n"}" | tr '[:upper:]' '[:lower:]')
	[[ $n =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--delay $1: want a number and us, ms or s"
	case $u in
	us | usec) awk -v n="$n" 'BEGIN { printf "%.0f", n }' ;;
	"" | ms | msec) awk -v n="$n" 'BEGIN { printf "%.0f", n * 1e3 }' ;;
	s | sec) awk -v n="$n" 'BEGIN { printf "%.0f", n * 1e6 }' ;;
	*) die "--delay $1: want a number and us, ms or s" ;;
	esac
}

have_netem() {
	tc -n "${NS[0]}" qdisc add dev "${DEV[0]}" root netem delay 1ms >/dev/null 2>&1 || return 1
	tc -n "${NS[0]}" qdisc del dev "${DEV[0]}" root >/dev/null 2>&1 || true
}

# start_delayer I US: bench/netns/delay.py on namespace I's veth, then the rule.
start_delayer() {
	local i=$1 us=$2
	local log=$STATE/delay-$i.log
	apt_install iptables-legacy iptables
	command -v python3 >/dev/null 2>&1 || die "python3 is missing (the NFQUEUE delay needs it)"
	# Real-time priority, as netem's timers have in the kernel: ranks spinning in MPI
	# waits must not hold back a packet that is due.
	local rt=()
	command -v chrt >/dev/null 2>&1 && chrt -f 1 true 2>/dev/null && rt=(chrt -f 20)
	ip netns exec "${NS[$i]}" "${rt[@]}" python3 "$DELAYER" --queue 0 --delay-us "$us" \
		>"$log" 2>&1 &
	echo $! >"$STATE/delay-$i.pid"
	local _
	for _ in $(seq 100); do
		grep -q '^ready' "$log" && break
		kill -0 "$(cat "$STATE/delay-$i.pid")" 2>/dev/null || break
		sleep 0.05
	done
	# A kernel or container without NFQUEUE cannot delay this way: the machine's limit.
	grep -q '^ready' "$log" || { cat "$log" >&2; cannot "the delay process did not start in ${NS[$i]}"; }
	local why
	why=$(ip netns exec "${NS[$i]}" iptables-legacy -t mangle -A POSTROUTING -o "${DEV[$i]}" \
		-j NFQUEUE --queue-num 0 2>&1) || cannot "iptables NFQUEUE rule: $why"
}

stop_delayer() {
	local i=$1
	ip netns exec "${NS[$i]}" iptables-legacy -t mangle -F POSTROUTING >/dev/null 2>&1 || true
	if [ -f "$STATE/delay-$i.pid" ]; then
		kill "$(cat "$STATE/delay-$i.pid")" 2>/dev/null || true
		rm -f "$STATE/delay-$i.pid"
	fi
}

# shape RATE DELAY BY: the same shape on both ends of the link.
shape() {
	local rate=$1 delay=$2 by=$3 bits=0 us i
	[ "$rate" = none ] || bits=$(to_bits "$rate")
	us=$(to_us "$delay")
	if [ "$us" -gt 0 ] && [ "$by" != nfqueue ]; then
		tc -n "${NS[0]}" qdisc del dev "${DEV[0]}" root >/dev/null 2>&1 || true
		if have_netem; then
			by=netem
		elif [ "$by" = netem ]; then
			die "this kernel has no netem qdisc (CONFIG_NET_SCH_NETEM): use --delay-by nfqueue or auto"
		else
			by=nfqueue
		fi
	fi
	[ "$us" -gt 0 ] || by=-
	# tbf: a millisecond's worth of burst, at least 16 KiB (several full frames);
	# a queue of 200 ms before it drops.
	local burst=$((bits / 8000 > 16384 ? bits / 8000 : 16384))
	local tbf=(tbf rate "${bits}bit" burst "$burst" latency 200ms)
	for i in 0 1; do
		stop_delayer "$i"
		tc -n "${NS[$i]}" qdisc del dev "${DEV[$i]}" root >/dev/null 2>&1 || true
		if [ "$by" = netem ]; then
			tc -n "${NS[$i]}" qdisc add dev "${DEV[$i]}" root handle 1: netem delay "${us}us" limit 100000
			[ "$bits" -eq 0 ] ||
				tc -n "${NS[$i]}" qdisc add dev "${DEV[$i]}" parent 1:1 handle 10: "${tbf[@]}"
		else
			[ "$bits" -eq 0 ] || tc -n "${NS[$i]}" qdisc add dev "${DEV[$i]}" root handle 1: \
				"${tbf[@]}" || cannot "tc cannot add a tbf qdisc (CONFIG_NET_SCH_TBF?)"
			[ "$by" != nfqueue ] || start_delayer "$i" "$us"
		fi
	done
	printf 'rate %s delay %s (%s us each way, by %s)\n' "$rate" "$delay" "$us" "$by" >"$STATE/shape"
	say "link ${NS[0]} <-> ${NS[1]}: $(cat "$STATE/shape")"
}

# bring_up RATE DELAY BY: creates the link unless it is up (OWNED=1 then: on_exit
# removes it after a failure, and after run and decide), then shapes it.
bring_up() {
	need_tools
	if ! is_up; then
		OWNED=1
		teardown
		create
	fi
	shape "$@"
}

# --- options ------------------------------------------------------------------------

RATE=100mbit DELAY=1ms DELAY_BY=auto SHAPE_GIVEN=0 BUILD=$BUILD_DIR NP="" WAIT_S=300
REST=()

parse_opts() {
	while [ $# -gt 0 ]; do
		case $1 in
		--rate) RATE=${2:?--rate needs a value}; SHAPE_GIVEN=1; shift 2 ;;
		--delay) DELAY=${2:?--delay needs a value}; SHAPE_GIVEN=1; shift 2 ;;
		--delay-by) DELAY_BY=${2:?--delay-by needs netem, nfqueue or auto}; shift 2 ;;
		--build) BUILD=${2:?--build needs a folder}; shift 2 ;;
		--np) NP=${2:?--np needs a count}; shift 2 ;;
		--wait) WAIT_S=${2:?--wait needs seconds}; shift 2 ;;
		--) shift; REST+=("$@"); return ;;
		-h | --help) usage; exit 0 ;;
		*) REST+=("$1"); shift ;;
		esac
	done
	case $DELAY_BY in netem | nfqueue | auto) ;; *) die "--delay-by $DELAY_BY: netem, nfqueue or auto" ;; esac
}

# For run and decide: the link with the given shape; one that was up before is
# reshaped only when a shape is given.
use_link() {
	if is_up && [ "$SHAPE_GIVEN" -eq 0 ]; then
		return 0
	fi
	bring_up "$RATE" "$DELAY" "$DELAY_BY"
}

# Whatever this invocation leaves behind: its mpirun, and the link when it made it
# and failed, or made it for run or decide (KEEP=0).
OWNED=0 KEEP=0 MPIRUN_PID="" LOG=""
on_exit() {
	local rc=$?
	if [ -n "$MPIRUN_PID" ]; then
		kill "$MPIRUN_PID" 2>/dev/null || true
		wait "$MPIRUN_PID" 2>/dev/null || true
	fi
	if [ "$OWNED" -eq 1 ] && { [ "$rc" -ne 0 ] || [ "$KEEP" -eq 0 ]; }; then
		teardown
	fi
	[ -z "$LOG" ] || rm -f "$LOG"
	return $rc
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
trap 'exit 141' PIPE

# Two "nodes" share this machine's cores: ranks spinning in MPI waits would starve the
# kernel's deferred packet work (ksoftirqd) and the delay processes, adding
# milliseconds to every message across the link (measured: 8 B round trips of 4-8 ms
# over a 100 us link). Ranks that yield when idle leave them the core, as separate
# nodes would; OMPI_MCA_mpi_yield_when_idle=0 in the environment turns it off.
export OMPI_MCA_mpi_yield_when_idle=${OMPI_MCA_mpi_yield_when_idle:-1}

# The mpirun command line for the emulated cluster, with the user's arguments last.
mpirun_cmd() {
	local np="" a prev="" hosts=1
	for a in "$@"; do
		case $prev in -np | -n | --np | -c) np=$a ;; esac
		case $a in -H | --host | --hostfile | --machinefile | -hostfile | -machinefile) hosts=0 ;; esac
		prev=$a
	done
	MPIRUN=(mpirun --mca plm_rsh_agent "$AGENT"
		--mca btl "self,tcp" --mca btl_tcp_if_include "$NET.0/24"
		--mca oob_tcp_if_include "$NET.0/24" --oversubscribe --bind-to none)
	if [ "$hosts" -eq 1 ]; then
		{ [ -n "$np" ] && [ "$np" -ge 2 ]; } || die "run: give -np N (N >= 2: ranks 0..N-2 in ${NS[0]}, rank N-1 in ${NS[1]})"
		MPIRUN+=(--host "${NS[0]}:$((np - 1)),${NS[1]}:1")
	fi
	MPIRUN+=("$@")
}

# --- subcommands --------------------------------------------------------------------

cmd_up() {
	KEEP=1
	bring_up "$RATE" "$DELAY" "$DELAY_BY"
}

cmd_shape() {
	is_up || die "the link is not up (bench/netns-cluster.sh up)"
	KEEP=1
	bring_up "$RATE" "$DELAY" "$DELAY_BY"
}

cmd_down() {
	[ "$(id -u)" -eq 0 ] || die "down needs root"
	teardown
	say "down: no ${NAME}-n* namespace, veth or delay process left"
}

cmd_status() {
	if ! is_up; then
		echo "down"
		return 0
	fi
	echo "up: ${NS[0]} (${ADDR[0]}, ${DEV[0]}) <-> ${NS[1]} (${ADDR[1]}, ${DEV[1]})"
	[ -f "$STATE/shape" ] && echo "shape: $(cat "$STATE/shape")"
	local i
	for i in 0 1; do
		echo "${NS[$i]} qdiscs:"
		tc -n "${NS[$i]}" qdisc show dev "${DEV[$i]}" | sed 's/^/  /'
		if [ -f "$STATE/delay-$i.pid" ]; then
			kill -0 "$(cat "$STATE/delay-$i.pid")" 2>/dev/null &&
				echo "  delay process $(cat "$STATE/delay-$i.pid") running" ||
				echo "  delay process $(cat "$STATE/delay-$i.pid") GONE: packets are dropped"
		fi
	done
}

cmd_exec() {
	need_root
	[ ${#REST[@]} -ge 2 ] || die "exec: exec n0|n1 -- COMMAND..."
	local i
	case ${REST[0]} in n0 | "${NS[0]}") i=0 ;; n1 | "${NS[1]}") i=1 ;; *) die "exec: n0 or n1, not ${REST[0]}" ;; esac
	is_up || die "the link is not up (bench/netns-cluster.sh up)"
	in_ns "$i" "${REST[@]:1}"
}

# mpirun in n0, in the background so that a signal to this script reaches on_exit
# (which ends it) at once.
start_mpirun() {
	command -v mpirun >/dev/null 2>&1 || die "mpirun is missing (scripts/install-deps.sh)"
	say "starting: ${MPIRUN[*]}"
	in_ns 0 "${MPIRUN[@]}" &
	MPIRUN_PID=$!
}

cmd_run() {
	need_root
	[ ${#REST[@]} -gt 0 ] || die "run: run [--rate R] [--delay D] -- MPIRUN ARGS..."
	mpirun_cmd "${REST[@]}"
	use_link
	start_mpirun
	local rc=0
	wait "$MPIRUN_PID" || rc=$?
	MPIRUN_PID=""
	return $rc
}

cmd_decide() {
	need_root
	[ ${#REST[@]} -eq 1 ] || die "decide: decide [--rate R] [--delay D] [--build DIR] [--np N] FILE.yaml"
	local cluster=${REST[0]} specd=$BUILD/daemon/specd specctl=$BUILD/daemon/specctl
	{ [ -x "$specd" ] && [ -x "$specctl" ]; } || die "no specd/specctl in $BUILD (--build DIR)"
	[ -f "$cluster" ] || die "no cluster file $cluster"
	if [ -z "$NP" ]; then
		NP=$(awk '/ranks =/ {for (i = 1; i <= NF; i++) if ($i == "ranks") print $(i-1)}' \
			< <("$specd" --check-config "$cluster") | tr -dc 0-9)
		[ -n "$NP" ] || die "could not read the rank count from specd --check-config $cluster"
	fi
	mpirun_cmd -np "$NP" "$specd" --cluster "$cluster"
	use_link
	LOG=$(mktemp)
	start_mpirun >"$LOG" 2>&1
	local _ served=0
	for _ in $(seq $((WAIT_S * 10))); do
		grep -q '^specd: serving on ' "$LOG" && { served=1; break; }
		kill -0 "$MPIRUN_PID" 2>/dev/null || break
		sleep 0.1
	done
	[ "$served" -eq 1 ] || { cat "$LOG" >&2; die "the cluster did not start serving"; }
	local addr
	addr=$(sed -n 's/^specd: serving on \([^ ]*\).*/\1/p' "$LOG" | head -1)
	say "specctl status"
	(in_ns 0 "$specctl" --addr "$addr" status) || die "specctl status failed"
	(in_ns 0 "$specctl" --addr "$addr" shutdown) >/dev/null || die "specctl shutdown failed"
	local rc=0
	wait "$MPIRUN_PID" || rc=$?
	MPIRUN_PID=""
	[ "$rc" -eq 0 ] || { cat "$LOG" >&2; die "mpirun exited $rc"; }
	# The census, the measured links, the calibration and the decision, without the
	# log records' time and place. Read once mpirun is done: the records are the ranks'
	# stderr, which mpirun forwards apart from the "serving on" line on stdout, so they
	# may reach the log after it.
	say "the cluster's census, links and decision"
	awk '/^rank +node/ { on = 1 } /^[0-9][0-9]:[0-9][0-9]:/ { on = 0 } on' "$LOG"
	grep -E 'link leader<->draft|all-reduce:|calibration|selector:' "$LOG" |
		sed -E 's/^[0-9:.]+ +[a-z]+ +r[0-9]+ [a-z]+ req=- [a-z_]+\.c:[0-9]+: //' || true
	say "every rank stopped cleanly; mpirun exited 0"
}

[ $# -ge 1 ] || { usage >&2; exit 2; }
sub=$1
shift
parse_opts "$@"
case $sub in
up) cmd_up ;;
shape) cmd_shape ;;
down) cmd_down ;;
status) cmd_status ;;
exec) cmd_exec ;;
run) cmd_run ;;
decide) cmd_decide ;;
-h | --help | help) usage ;;
*) usage >&2; die "unknown subcommand $sub" ;;
esac
