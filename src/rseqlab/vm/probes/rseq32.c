/*
 * rseq32: how a kernel treats a 32-byte (original ABI) rseq registration.
 *
 * TCMalloc keeps a pointer whose upper half overlaps cpu_id_start and relies on the kernel
 * rewriting cpu_id_start after every preemption, even when the CPU did not change; and a
 * 32-byte registration owns bytes 28..31 (padding in the original ABI). The 6.19 rewrite
 * (kernel/rseq.c, rseq_set_ids_get_csaddr) writes the IDs only when they changed, and 7.0
 * also stores slice_ctrl at offset 28; the fix series "rseq: Cure refactoring regressions"
 * brings the old behaviour back for legacy registrations (7.1: rseq_sched_switch_event).
 *
 * Output, one "key=value" per line:
 *   register=<rc>            sys_rseq(32 bytes) return value (0 or -errno)
 *   tail_after_register=<hex> bytes 28..31 after registration (sentinel 0xa5a5a5a5)
 *   flags_after_register=<hex>
 *   rewrite_same_cpu=<n>/<N>  sleeps on a pinned CPU after which cpu_id_start was rewritten
 *   rewrite_migrate=<n>/<N>   migrations after which it was rewritten (needs 2 CPUs)
 *   tail_after_runs=<hex>
 * glibc's own registration is turned off (GLIBC_TUNABLES, by re-executing itself).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define SIG 0x53053053
#define SENTINEL 0xdeadbeefu
#define TAIL 0xa5a5a5a5u
#define N 20

struct rseq32 {
	uint32_t cpu_id_start;
	uint32_t cpu_id;
	uint64_t rseq_cs;
	uint32_t flags;
	uint32_t node_id;
	uint32_t mm_cid;
	uint32_t tail;
} __attribute__((aligned(32)));

static struct rseq32 area;

static void pin(int cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	sched_setaffinity(0, sizeof(set), &set);
}

int main(int argc, char **argv)
{
	(void)argc;
	if (!getenv("RSEQ32_CHILD")) {
		setenv("RSEQ32_CHILD", "1", 1);
		setenv("GLIBC_TUNABLES", "glibc.pthread.rseq=0", 1);
		execv("/proc/self/exe", argv);
		perror("execv");
		return 2;
	}
	memset(&area, 0, sizeof(area));
	area.cpu_id = (uint32_t)-1;
	area.tail = TAIL;
	long rc = syscall(__NR_rseq, &area, 32, 0, SIG);
	printf("register=%ld\n", rc == 0 ? 0L : -(long)errno);
	printf("tail_after_register=%#x\n", (unsigned)area.tail);
	printf("flags_after_register=%#x\n", (unsigned)area.flags);
	if (rc != 0)
		return 1;
	int ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
	struct timespec ts = {0, 2000000};
	int same = 0, mig = 0;
	pin(0);
	for (int i = 0; i < N; i++) {
		area.cpu_id_start = SENTINEL;
		nanosleep(&ts, NULL);
		if (area.cpu_id_start != SENTINEL)
			same++;
	}
	printf("rewrite_same_cpu=%d/%d\n", same, N);
	if (ncpu > 1) {
		for (int i = 0; i < N; i++) {
			area.cpu_id_start = SENTINEL;
			pin((i + 1) % 2);
			if (area.cpu_id_start != SENTINEL)
				mig++;
		}
		printf("rewrite_migrate=%d/%d\n", mig, N);
	}
	printf("tail_after_runs=%#x\n", (unsigned)area.tail);
	return 0;
}
