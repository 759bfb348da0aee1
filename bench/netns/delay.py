#!/usr/bin/env python3
"""Holds every packet of one netfilter queue for a fixed time, then lets it go: the
emulated link's delay (bench/netns-cluster.sh) on kernels without the netem qdisc.

An iptables NFQUEUE rule on the veth hands each outgoing packet to this process
(metadata only, GSO packets whole); it accepts the packets DELAY after they arrived,
in arrival order, so the link keeps its ordering. Speaks nfnetlink_queue directly:
nothing beyond Python's standard library. Run inside the namespace, as root:

    python3 delay.py --queue N --delay-us D

It prints "ready" once bound (the rule may be added then) and runs until SIGTERM;
closing the socket makes the kernel drop what is still held.
"""
import argparse
import collections
import select
import signal
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_NO_ENOBUFS = 5
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLMSG_ERROR = 2
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_CONFIG = 2
NFQNL_MSG_VERDICT_BATCH = 3
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3
NFQA_CFG_MASK = 4
NFQA_CFG_FLAGS = 5
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NFQA_CFG_F_GSO = 1 << 2
NF_ACCEPT = 1
NLMSG_HDR = struct.Struct("=IHHII")


def attr(kind, payload):
    size = 4 + len(payload)
    return struct.pack("=HH", size, kind) + payload + b"\0" * (-size % 4)


class Queue:
    def __init__(self, num):
        self.num = num
        self.seq = 0
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        # A burst larger than the buffer must not end the loop with ENOBUFS.
        self.sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((0, 0))

    def send(self, msg, attrs, flags=NLM_F_REQUEST):
        self.seq += 1
        body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(self.num)) + b"".join(attrs)
        head = NLMSG_HDR.pack(NLMSG_HDR.size + len(body), (NFNL_SUBSYS_QUEUE << 8) | msg,
                              flags, self.seq, 0)
        self.sock.send(head + body)

    def configure(self, attrs):
        """Sends one config message and waits for the kernel's acknowledgement."""
        self.send(NFQNL_MSG_CONFIG, attrs, NLM_F_REQUEST | NLM_F_ACK)
        data = self.sock.recv(65536)
        _, kind, _, _, _ = NLMSG_HDR.unpack_from(data)
        if kind == NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", data, NLMSG_HDR.size)
            if code:
                raise OSError(-code, "nfnetlink_queue config of queue %d" % self.num)

    def bind(self, maxlen):
        self.configure([attr(NFQA_CFG_CMD, struct.pack(">BxH", NFQNL_CFG_CMD_BIND,
                                                          socket.AF_INET))])
        self.configure([attr(NFQA_CFG_PARAMS, struct.pack(">IB", 0, NFQNL_COPY_META)),
                        attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack(">I", maxlen)),
                        attr(NFQA_CFG_MASK, struct.pack(">I", NFQA_CFG_F_GSO)),
                        attr(NFQA_CFG_FLAGS, struct.pack(">I", NFQA_CFG_F_GSO))])

    def accept_through(self, packet_id):
        """Accepts every held packet up to and including packet_id (ids rise)."""
        self.send(NFQNL_MSG_VERDICT_BATCH,
                  [attr(NFQA_VERDICT_HDR, struct.pack(">II", NF_ACCEPT, packet_id))])

    def packet_ids(self, data):
        """The packet ids of the queue messages in one datagram."""
        off = 0
        while off + NLMSG_HDR.size <= len(data):
            size, kind, _, _, _ = NLMSG_HDR.unpack_from(data, off)
            if size < NLMSG_HDR.size:
                break
            if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                pos, end = off + NLMSG_HDR.size + 4, off + size
                while pos + 4 <= end:
                    alen, atype = struct.unpack_from("=HH", data, pos)
                    if alen < 4:
                        break
                    if atype & 0x3FFF == NFQA_PACKET_HDR:
                        yield struct.unpack_from(">I", data, pos + 4)[0]
                        break
                    pos += (alen + 3) & ~3
            off += (size + 3) & ~3


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queue", type=int, required=True)
    ap.add_argument("--delay-us", type=float, required=True)
    ap.add_argument("--maxlen", type=int, default=8192)
    args = ap.parse_args()
    delay = args.delay_us / 1e6
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    queue = Queue(args.queue)
    queue.bind(args.maxlen)
    print("ready", flush=True)
    held = collections.deque()  # (due, packet id), in arrival order
    while True:
        timeout = max(0.0, held[0][0] - time.monotonic()) if held else None
        if select.select([queue.sock], [], [], timeout)[0]:
            arrived = time.monotonic()
            while True:
                try:
                    data = queue.sock.recv(1 << 16, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                held.extend((arrived + delay, pid) for pid in queue.packet_ids(data))
        now, last = time.monotonic(), None
        while held and held[0][0] <= now:
            last = held.popleft()[1]
        if last is not None:
            queue.accept_through(last)


if __name__ == "__main__":
    main()
