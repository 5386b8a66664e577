#!/usr/bin/env python3
"""How much of the CPU per byte is copying and checksumming, kernel VXLAN against overlayd (issue 13).

Input: `perf record -a` profiles taken during the TCP 1-stream test of `bench_vs_kernel`, one per mode, with
the throughput that run reported. Output: per Gbit/s carried, the machine's busy share (all CPUs, idle left
out), the share spent in the kernel's copy routines (`_copy_from_iter`, `_copy_to_iter`, ...) and in
checksumming (overlayd's `checksum::sum`, the kernel's `csum_partial`), and the floor those give overlayd:
the kernel's whole cost plus overlayd's extra copies and its checksums, with nothing else.

    perf record -a -F 1999 -o kernel.data -- sleep 4     # while `bench_vs_kernel --only kernel --tests tcp1` runs
    perf record -a -F 1999 -o overlayd.data -- sleep 4   # while `--only overlayd --tests tcp1` runs
    python3 cpu_floor.py kernel.data 13.60 overlayd.data 8.13

The units are "% of all CPUs per Gbit/s", so the two modes compare at their own throughputs.
"""

import re
import subprocess
import sys

# Copy routines (the kernel's user<->kernel copies and skb copies, userspace memcpy/memmove). A routine that
# copies and sums at once counts as a copy.
COPY = re.compile(
    r"_copy_(from|to)_iter|copy_user|rep_movs|copy_page_(from|to)_iter|csum_and_copy|csum_partial_copy"
    r"|skb_copy_bits|skb_copy_and_csum|memcpy|memmove"
)
CSUM = re.compile(r"checksum::sum|csum_partial|do_csum|skb_checksum")
# The idle task's own idling (its other samples, interrupts and softirqs run from idle, are work).
IDLE = re.compile(r"halt|idle|mwait|tick_nohz")


def shares(perf_data):
    """(busy, copies, checksums) in % of all CPUs' samples."""
    out = subprocess.run(
        ["perf", "report", "-i", perf_data, "--no-children", "--sort", "comm,sym", "--stdio", "-g", "none",
         "-t", "|"],
        capture_output=True, text=True, check=True,
    ).stdout
    return parse(out)


def parse(report):
    """`perf report --sort comm,sym -t '|'` lines: "  16.98%  |iperf3   |[k] _copy_from_iter"."""
    busy = copies = csum = 0.0
    for line in report.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split("|")]
        m = re.fullmatch(r"([\d.]+)%", fields[0]) if len(fields) == 3 else None
        if not m:
            print(f"cpu_floor: not a sample line, left out: {line!r}", file=sys.stderr)
            continue
        pct, comm, sym = float(m.group(1)), fields[1], re.sub(r"^\[.\]\s*", "", fields[2])
        if comm == "swapper" and IDLE.search(sym):
            continue
        busy += pct
        if COPY.search(sym):
            copies += pct
        elif CSUM.search(sym):
            csum += pct
    return busy, copies, csum


SAMPLE = """\
# Samples: 15K of event 'cycles:P'
#
    16.98%  |iperf3          |[k] _copy_from_iter
     8.30%  |ovl-rx0         |[k] _copy_to_iter
     5.18%  |ovl-tx0         |[.] dataplane::offload::checksum::sum
     5.05%  |swapper         |[k] pv_native_safe_halt
     0.50%  |ksoftirqd/0     |[k] csum_partial
     0.20%  |swapper         |[k] handle_softirqs
     0.30%  |tokio rt worker |[.] __memmove_avx512_unaligned_erms
    63.50%  |ovl-tx0         |[k] do_syscall_64
"""


def self_test():
    busy, copies, csum = parse(SAMPLE)
    assert abs(busy - 94.96) < 1e-9, busy
    assert abs(copies - 25.58) < 1e-9, copies
    assert abs(csum - 5.68) < 1e-9, csum
    assert parse("") == (0.0, 0.0, 0.0)
    assert parse("garbage without fields") == (0.0, 0.0, 0.0)
    print("cpu_floor self-test passed")


def main(argv):
    if argv[1:] == ["--self-test"]:
        return self_test()
    if len(argv) != 5:
        sys.exit(__doc__)
    k_busy, k_cp, k_cs = (x / float(argv[2]) for x in shares(argv[1]))
    o_busy, o_cp, o_cs = (x / float(argv[4]) for x in shares(argv[3]))
    print("% of all CPUs per Gbit/s   busy   copies  checksums")
    print(f"kernel VXLAN              {k_busy:6.2f} {k_cp:7.2f} {k_cs:9.2f}")
    print(f"overlayd                  {o_busy:6.2f} {o_cp:7.2f} {o_cs:9.2f}")
    floor = k_busy + (o_cp - k_cp) + (o_cs - k_cs)
    print(f"overlayd / kernel: measured {o_busy / k_busy:.2f}; floor (kernel + extra copies + checksums) {floor / k_busy:.2f}")


if __name__ == "__main__":
    main(sys.argv)
