/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Helpers newer than the 5.10 floor. The loader probes the running kernel
 * and sets these before load (bpf.Kernel.Configure); the verifier reads
 * them as constants, so the branch a kernel cannot run is dead code it
 * removes before it looks the helper up. Built once, loads on 5.10 and up.
 * The defaults are the newest kernel's. */
#ifndef PONTOON_KERNEL_H
#define PONTOON_KERNEL_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* bpf_check_mtu, Linux 5.12 */
volatile const __u32 kernel_has_check_mtu = 1;
/* bpf_ktime_get_coarse_ns, Linux 5.11 */
volatile const __u32 kernel_has_coarse_clock = 1;
/* tc ingress of an ipip device starts at the inner IP header, Linux 5.14
 * (7ad136fd288c); before, the outer Ethernet and IP headers come first. */
volatile const __u32 kernel_ipip_inner_at_ingress = 1;
/* bpf_cast_to_kern_ctx (Linux 6.2) and the byte and shift of ip_summed in
 * the running kernel's struct sk_buff, which only its BTF knows: no
 * default fits every build, so off unless the loader found them. */
volatile const __u32 kernel_has_skb_ip_summed = 0;
volatile const __u32 skb_ip_summed_byte = 0;
volatile const __u32 skb_ip_summed_shift = 0;

/* ip_summed values, include/linux/skbuff.h. */
#define SKB_CHECKSUM_NONE 0
#define SKB_CHECKSUM_UNNECESSARY 1
#define SKB_CHECKSUM_COMPLETE 2
#define SKB_CHECKSUM_PARTIAL 3
#define SKB_CHECKSUM_UNKNOWN 4 /* this kernel does not say */

extern void *bpf_cast_to_kern_ctx(void *obj) __ksym __weak;

/* The skb's ip_summed, or SKB_CHECKSUM_UNKNOWN. The kfunc becomes a move
 * and the read one load: the verifier knows the byte from the constant. */
static __always_inline __u32 skb_ip_summed(struct __sk_buff *skb)
{
	__u8 *kern;

	if (!kernel_has_skb_ip_summed)
		return SKB_CHECKSUM_UNKNOWN;
	kern = bpf_cast_to_kern_ctx(skb);
	return (kern[skb_ip_summed_byte] >> skb_ip_summed_shift) & 3;
}

#endif
