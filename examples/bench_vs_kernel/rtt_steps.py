#!/usr/bin/env python3
"""Cut a `perf script` trace of the ping test into round trips and print where each one's time went
(README "Latency and busy-poll"). Record and convert (as root, idle machine):

    ev="-e sched:sched_waking -e sched:sched_switch -e power:cpu_idle"
    ev="$ev -e irq_vectors:reschedule_entry -e irq_vectors:call_function_single_entry"
    for s in poll read writev sendmmsg recvmmsg sendto recvmsg; do
      ev="$ev -e syscalls:sys_enter_$s -e syscalls:sys_exit_$s"; done
    perf record -a -m 4096 $ev -o ping.data -- target/release/examples/bench_vs_kernel \\
      --only overlayd --seconds 2 --runs 1 --tests ping --workers 2
    perf script -i ping.data -F comm,pid,tid,cpu,time,event,trace > ping.txt
    python3 examples/bench_vs_kernel/rtt_steps.py ping.txt

(`write` is left out on purpose: perf's own writes of the trace would be traced.) A round trip runs from
ping's `sendto` to its `recvmsg` returning the reply. Prints the median of each step over the round trips
that took the four-hop path (TX loop of host A, RX loop of host B, TX loop of host B, RX loop of host A;
host A is the daemon whose TX loop is woken first), then every wake-up of an overlayd thread or ping by role
and by whether it ran on the waker's vCPU, over all round trips. With kernel VXLAN only the round trip's
length is meaningful (no overlayd thread). With `--worker-loops combined` (one `ovl-wk<i>` thread per worker)
the step table stays empty (it follows the split loops' four hops); the round trip's length and the wake-ups
are counted as with split loops (role `WK`, host A the daemon whose worker is woken first)."""
import re
import statistics
import sys

EV = re.compile(r'^\s*(.+?)\s+(\d+)/(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(\S+):\s*(.*)$')


def load(path):
    evs = []
    for line in open(path):
        m = EV.match(line)
        if m:
            comm, pid, tid, cpu, t, ev, rest = m.groups()
            evs.append((float(t) * 1e6, comm.strip(), int(pid), int(tid), int(cpu), ev, rest))
    return evs


def field(rest, name):
    return int(re.search(name + r'=(\d+)', rest).group(1))


def main():
    evs = load(sys.argv[1])
    ping = {e[3] for e in evs if e[1] == 'ping'}
    ovl = {e[3]: (e[1], e[2]) for e in evs if e[1].startswith('ovl-')}
    rtts, cur = [], None
    for e in evs:
        if e[3] in ping and e[5] == 'syscalls:sys_enter_sendto':
            cur = [e]
            continue
        if cur is None:
            continue
        cur.append(e)
        if e[3] in ping and e[5] == 'syscalls:sys_exit_recvmsg' and not e[6].strip().startswith('0xfff'):
            rtts.append(cur)
            cur = None
    total = [r[-1][0] - r[0][0] for r in rtts]
    print(f"{len(rtts)} round trips, median {statistics.median(total) if total else 0:.1f} us")
    if not ovl:
        return
    steps(rtts, ping, ovl)
    wakes(rtts, ping, ovl)


def nxt(rtt, i, pred):
    for j in range(i, len(rtt)):
        if pred(rtt[j]):
            return j
    raise KeyError


def steps(rtts, ping, ovl):
    inp = {'ovl-tx': 'read', 'ovl-rx': 'recvmmsg'}
    out = {'ovl-tx': 'sendmmsg', 'ovl-rx': 'writev'}
    names = ['TX A', 'RX B', 'TX B', 'RX A']
    kpath = ['ping sendto -> TAP wakes TX A', 'sendmmsg -> RX B woken', 'writev -> TX B woken (container echo)',
             'sendmmsg -> RX A woken', 'writev -> ping woken']
    rows, ok = {}, 0
    for rtt in rtts:
        row = {}
        try:
            woke = lambda e, want: e[5] == 'sched:sched_waking' and field(e[6], 'pid') in want
            i = nxt(rtt, 0, lambda e: woke(e, ovl))
            last = rtt[0][0]
            for h in range(4):
                w = rtt[i]
                tt = field(w[6], 'pid')
                kind = ovl[tt][0][:6]
                if kind not in inp:
                    raise KeyError
                row[(h, 0, f"kernel: {kpath[h]}")] = w[0] - last
                r = nxt(rtt, i, lambda e: e[5] == 'sched:sched_switch' and field(e[6], 'next_pid') == tt)
                row[(h, 1, f"{names[h]}: woken -> running")] = rtt[r][0] - w[0]
                p = nxt(rtt, r, lambda e: e[3] == tt and e[5] == 'syscalls:sys_exit_poll')
                row[(h, 2, f"{names[h]}: running -> poll returns")] = rtt[p][0] - rtt[r][0]
                a = nxt(rtt, p, lambda e: e[3] == tt and e[5] == f'syscalls:sys_enter_{inp[kind]}')
                row[(h, 3, f"{names[h]}: poll returned -> {inp[kind]}")] = rtt[a][0] - rtt[p][0]
                b = nxt(rtt, a, lambda e: e[3] == tt and e[5] == f'syscalls:sys_exit_{inp[kind]}')
                row[(h, 4, f"{names[h]}: {inp[kind]}")] = rtt[b][0] - rtt[a][0]
                o = nxt(rtt, b, lambda e: e[3] == tt and e[5] == f'syscalls:sys_enter_{out[kind]}')
                row[(h, 5, f"{names[h]}: {inp[kind]} returned -> {out[kind]}")] = rtt[o][0] - rtt[b][0]
                last = rtt[o][0]
                want = ping if h == 3 else set(ovl)
                i = nxt(rtt, o, lambda e: woke(e, want) and e[3] == tt)
            row[(4, 0, f"kernel: {kpath[4]}")] = rtt[i][0] - last
            r = nxt(rtt, i, lambda e: e[5] == 'sched:sched_switch' and field(e[6], 'next_pid') in ping)
            row[(4, 1, "ping: woken -> running")] = rtt[r][0] - rtt[i][0]
            row[(4, 2, "ping: running -> recvmsg returns")] = rtt[-1][0] - rtt[r][0]
            row[(5, 0, "whole round trip")] = rtt[-1][0] - rtt[0][0]
        except KeyError:
            continue
        ok += 1
        for k, v in row.items():
            rows.setdefault(k, []).append(v)
    if ok == 0 and any(c.startswith('ovl-wk') for c, _ in ovl.values()):
        print("no split four-hop path: combined workers (ovl-wk); see the wake-ups below")
        return
    print(f"{ok} round trips took the four-hop path; medians:")
    for k in sorted(rows):
        print(f"{statistics.median(rows[k]):7.1f} us  {k[2]}")


def wakes(rtts, ping, ovl):
    stats, cross = {}, []
    for rtt in rtts:
        host_a, n, pend = None, 0, {}
        for t, comm, pid, tid, cpu, ev, rest in rtt:
            if ev == 'sched:sched_waking':
                tt = field(rest, 'pid')
                if tt in ovl or tt in ping:
                    pend[tt] = (t, cpu)
            elif ev == 'sched:sched_switch':
                nt = field(rest, 'next_pid')
                if nt not in pend:
                    continue
                tw, wc = pend.pop(nt)
                if nt in ping:
                    role = 'ping'
                else:
                    c, p = ovl[nt]
                    if host_a is None and c.startswith(('ovl-tx', 'ovl-wk')):
                        host_a = p
                    role = c[4:6].upper() + ' ' + ('A' if p == host_a else 'B')
                other = wc != cpu
                n += other
                stats.setdefault((role, 'other vCPU' if other else 'same vCPU'), []).append(t - tw)
        cross.append(n)
    print("wake-ups (waking -> running), by role and vCPU:")
    for k in sorted(stats):
        v = stats[k]
        print(f"  {k[0]:5} {k[1]:10} n={len(v):3}  median {statistics.median(v):6.1f} us")
    print(f"wake-ups to the other vCPU per round trip: {statistics.mean(cross):.2f}")


if __name__ == '__main__':
    main()
