#!/usr/bin/env bash
# The selector's regret: on an emulated two-node cluster (bench/netns-cluster.sh: the
# target in one network namespace, the dedicated draft rank in the other, the link
# between them shaped with tc), each scenario (a prompt x a link) runs
#   - the sweep: every fixed (method, K) of none, ngram and draft_model (the 0.5B drafting
#     for the 1.5B Qwen2.5-Coder), K in the -k list;
#   - the selector: method and K auto (calibrated at start-up, then the online selector);
#   - the origin rule table: `speculation.measure: false`;
# and reports each one's tokens/s (Stats: from the job taking its slot) as a speed-up over
# plain decoding, the best fixed choice, and the selector's and the rule table's regret
# against it (1 - their tokens/s / the best's). docs/performance.md quotes it.
#
#   bench/run-regret.sh BUILD_DIR OUT_DIR [-n TOKENS] [-k "K..."] [--prompts "NAME..."]
#       [--links "NAME=RATE/DELAY..."] [--interval STEPS] [--setups "SETUP..."] [-r ROUNDS]
#
#   -n TOKENS     new tokens per request (default 48)
#   -r ROUNDS     measured rounds per prompt on each cluster, each bracketed by plain
#                 decoding; the table takes each choice's median speed-up (default 3)
#   -k "K..."     K values of the sweep (default "1 2 4 6 8")
#   --prompts     bench/prompts/NAME.txt files, the workloads (default "code story")
#   --links       link shapes, NAME=RATE/DELAY with bench/netns-cluster.sh's units, the
#                 delay added one way (default "lan=1gbit/100us wan=20mbit/20ms")
#   --interval    speculation.adapt_interval of the selector's cluster (default 16)
#   --setups      of draft_model ngram selector rule (default all four); a partial run's
#                 runs.tsv can be given to bench/regret_table.py after a full one's, whose
#                 rows of the same link and setup it then replaces
#
# One cluster per (link, setup): the sweep's clusters force a method with the largest K
# and ask for each smaller K per request (the Speculation override). On each cluster each
# prompt first gets one unmeasured request as the cluster runs it (so the page cache, and
# the online selector, are warm: a server sees a workload continuously); then ROUNDS
# rounds of its runs, each round bracketed by plain decoding (method none per request),
# each run's speed-up dividing by none interpolated between them. Greedy, one compute thread per
# rank. Every run's text is compared with plain decoding's (greedy speculation is
# lossless). OUT_DIR gets runs.tsv, the daemons' logs and regret.md.
# Needs root (network namespaces), Open MPI, and the Qwen pair (tools/fetch-models).
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

usage() { sed -n '13,26p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

[ $# -ge 2 ] || usage
build=$(cd "$1" && pwd) || die "no build folder $1"
out=$2
shift 2
tokens=48
ks="1 2 4 6 8"
prompt_names="code story"
links="lan=1gbit/100us wan=20mbit/20ms"
interval=16
setups="draft_model ngram selector rule"
rounds=3
while [ $# -gt 0 ]; do
	case $1 in
	-n) tokens=$2 ;;
	-r) rounds=$2 ;;
	-k) ks=$2 ;;
	--prompts) prompt_names=$2 ;;
	--links) links=$2 ;;
	--interval) interval=$2 ;;
	--setups) setups=$2 ;;
	*) usage ;;
	esac
	shift 2 || usage
done
k_top=0
for k in $ks; do [ "$k" -gt "$k_top" ] && k_top=$k; done

export SPECD_MODELS=${SPECD_MODELS:-$HOME/.cache/specd/models}
"$SPECD_ROOT/tools/fetch-models" qwen2.5-coder-1.5b qwen2.5-coder-0.5b >&2 ||
	die "the Qwen2.5-Coder pair is needed (tools/fetch-models --help)"
target=$SPECD_MODELS/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
draft=$SPECD_MODELS/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
netns=$SPECD_ROOT/bench/netns-cluster.sh
mkdir -p "$out"
out=$(cd "$out" && pwd)
sock=$out/specd.sock
runs=$out/runs.tsv
printf 'link\tsetup\tprompt\tmethod\tk\ttokens_per_s\tt\tsame_text\tdrafted\taccepted\tran\tround\n' \
	>"$runs"

# write_cluster FILE METHOD K [KEY=VALUE...]: the cluster file of one setup; the extra
# pairs are more speculation keys.
write_cluster() {
	local file=$1 method=$2 k=$3
	shift 3
	{
		cat <<EOF
cluster: {name: regret, log_level: info}
server: {listen: "unix:$sock", limits: {max_tokens: 512}}
target: {model: $target, tensor_parallel: 1, slots: 1, context: 1024, threads: 1}
draft: {placement: rank, threads: 1}
speculation:
  method: $method
  num_speculative_tokens: $k
  max_speculative_tokens: $k_top
  draft_model: {model: $draft}
EOF
		for kv in "$@"; do printf '  %s: %s\n' "${kv%%=*}" "${kv#*=}"; done
	} >"$file"
}

ctl() { "$build/daemon/specctl" --addr "unix:$sock" "$@"; }

# start_cluster FILE LOG: the daemon on the emulated cluster, waiting until it serves.
start_cluster() {
	rm -f "$sock"
	"$netns" run -- -np 2 "$build/daemon/specd" --cluster "$1" >"$2" 2>&1 &
	cluster_pid=$!
	for _ in $(seq 900); do
		ctl health >/dev/null 2>&1 && return 0
		kill -0 "$cluster_pid" 2>/dev/null || { tail -20 "$2" >&2; die "the cluster stopped"; }
		sleep 0.2
	done
	die "the cluster did not come up (see $2)"
}

stop_cluster() {
	ctl shutdown >/dev/null 2>&1 || true
	wait "$cluster_pid" || true
}

# request PROMPT_FILE [specctl generate options...]: prints "tokens_per_s drafted accepted
# method/K-run" and leaves the text in $out/last.txt.
request() {
	local file=$1
	shift
	ctl generate --chat "$(cat "$file")" --max-tokens "$tokens" --json "$@" >"$out/last.json"
	python3 - "$out/last.json" "$out/last.txt" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
open(sys.argv[2], "w").write(r["text"])
s = r.get("stats", {})
print(s.get("tokens_per_second", 0), s.get("drafted", 0), s.get("accepted", 0),
      "%s/%s" % (s.get("method", "?"), s.get("spec_tokens", "?")))
EOF
}

# measure LINK SETUP PROMPT METHOD K ROUND [options]: one measured request.
measure() {
	local link=$1 setup=$2 name=$3 method=$4 k=$5 round=$6
	shift 6
	local file=$SPECD_ROOT/bench/prompts/$name.txt
	read -r tps drafted accepted ran < <(request "$file" "$@")
	if [ "$setup" = selector ]; then
		# The K it chose at start-up and the K the online selector holds now.
		ran=$(ctl status --json | python3 -c 'import json, sys
s = json.load(sys.stdin)
d, a = s["decision"], s.get("adaptation", {})
on = a.get("active")
now = "%s K %s" % (a.get("method"), a.get("spec_tokens")) if on else d.get("spec_tokens")
print("%s/%s->%s" % (d.get("method"), d.get("spec_tokens"), now))')
	fi
	local same=-
	if [ "$method" = none ] && [ ! -f "$out/ref-$name.txt" ]; then
		cp "$out/last.txt" "$out/ref-$name.txt"
	fi
	if [ -f "$out/ref-$name.txt" ]; then
		cmp -s "$out/last.txt" "$out/ref-$name.txt" && same=yes || same=no
	fi
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$link" "$setup" "$name" \
		"$method" "$k" "$tps" "$(date +%s.%N)" "$same" "$drafted" "$accepted" "$ran" \
		"$round" >>"$runs"
	say "$link $setup $name round $round: $method K $k: $tps tokens/s (same text: $same)"
}

trap '"$netns" down >/dev/null 2>&1 || true' EXIT
for link in $links; do
	lname=${link%%=*}
	shape=${link#*=}
	"$netns" up --rate "${shape%/*}" --delay "${shape#*/}" >&2
	for setup in $setups; do
		file=$out/$lname-$setup.yaml
		case $setup in
		draft_model | ngram) write_cluster "$file" "$setup" "$k_top" ;;
		selector) write_cluster "$file" auto auto "adapt_interval=$interval" ;;
		rule) write_cluster "$file" auto auto measure=false ;;
		esac
		start_cluster "$file" "$out/$lname-$setup.log"
		for name in $prompt_names; do
			say "$lname $setup $name: warm-up"
			request "$SPECD_ROOT/bench/prompts/$name.txt" >/dev/null
			for round in $(seq "$rounds"); do
				# each round's plain runs bracket it; the next round's first is
				# this one's last
				r=$round
				[ "$r" = 1 ] && measure "$lname" "$setup" "$name" none 0 "$r" --method none
				case $setup in
				draft_model | ngram)
					for k in $ks; do
						measure "$lname" "$setup" "$name" "$setup" "$k" "$r" \
							--spec-tokens "$k"
					done
					;;
				*)
					measure "$lname" "$setup" "$name" "$setup" auto "$r"
					;;
				esac
				measure "$lname" "$setup" "$name" none 0 "$r" --method none
			done
		done
		ctl status >"$out/$lname-$setup.status" 2>&1 || true
		stop_cluster
	done
done
"$netns" down >&2
trap - EXIT
python3 "$SPECD_ROOT/bench/regret_table.py" "$runs" | tee "$out/regret.md"
