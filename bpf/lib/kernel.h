/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Helpers newer than the 5.10 floor. The loader probes the running kernel
 * and sets these before load (bpf.Kernel.Configure); the verifier reads
 * them as constants, so the branch a kernel cannot run is dead code it
 * removes before it looks the helper up. Built once, loads on 5.10 and up.
 * The defaults are the newest kernel's. */
#ifndef PONTOON_KERNEL_H
#define PONTOON_KERNEL_H

#include <linux/types.h>

/* bpf_check_mtu, Linux 5.12 */
volatile const __u32 kernel_has_check_mtu = 1;
/* bpf_ktime_get_coarse_ns, Linux 5.11 */
volatile const __u32 kernel_has_coarse_clock = 1;
/* tc ingress of an ipip device starts at the inner IP header, Linux 5.14
 * (7ad136fd288c); before, the outer Ethernet and IP headers come first. */
volatile const __u32 kernel_ipip_inner_at_ingress = 1;

#endif
