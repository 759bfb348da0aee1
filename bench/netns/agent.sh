#!/bin/sh
# Open MPI's launch agent for the emulated two-node cluster (bench/netns-cluster.sh
# passes it as --mca plm_rsh_agent): mpirun calls it as it would call ssh,
#   agent.sh HOST COMMAND WORDS...
# and it runs the command line in HOST's network namespace, under HOST's own host name
# (a UTS namespace of its own), instead of logging in anywhere. HOST is a namespace
# name or its address; SPECD_NETNS_NAME and SPECD_NETNS_NET (inherited from the
# script through mpirun) say which namespaces and addresses are ours.
set -eu
name=${SPECD_NETNS_NAME:-specd}
net=${SPECD_NETNS_NET:-10.77.0}
# ssh-style options before the host (none today, but mpirun may add some).
while [ $# -gt 0 ]; do
	case $1 in
	-*) shift ;;
	*) break ;;
	esac
done
[ $# -ge 2 ] || { echo "agent.sh: usage: agent.sh HOST COMMAND..." >&2; exit 2; }
host=$1
shift
case $host in
"$name-n0" | "$net.1") ns=$name-n0 ;;
"$name-n1" | "$net.2") ns=$name-n1 ;;
*) echo "agent.sh: $host is not a node of the emulated cluster ($name-n0, $name-n1)" >&2; exit 2 ;;
esac
# Like ssh, the words form one command line for a shell.
exec ip netns exec "$ns" unshare --uts sh -c "hostname $ns && $*"
