/*
 * pingpong64: the pingpong workload with each thread's own 64-byte rseq registration.
 *
 * usage: pingpong64 [ROUNDS=2000] [PIN=same|split|none]
 * glibc's registration is turned off (GLIBC_TUNABLES, by re-executing itself); each thread
 * then registers a 64-byte, 64-byte-aligned area of its own, which 7.1 treats as an
 * optimized (v2) registration and 6.19 like any other. Two threads bounce one byte
 * through a pair of pipes, as live/workloads/pingpong.c does.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define SIG 0x53053053

struct area64 {
	uint32_t cpu_id_start;
	uint32_t cpu_id;
	uint64_t rseq_cs;
	uint32_t flags;
	uint32_t node_id;
	uint32_t mm_cid;
	uint8_t rest[36];
} __attribute__((aligned(64)));

static __thread struct area64 area;
static int ab[2], ba[2];
static long rounds = 2000;
static const char *pin = "same";

static void pin_to(int cpu)
{
	cpu_set_t set;

	if (!strcmp(pin, "none"))
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	sched_setaffinity(0, sizeof(set), &set);
}

static void reg(void)
{
	area.cpu_id = (uint32_t)-1;
	if (syscall(__NR_rseq, &area, sizeof(area), 0, SIG)) {
		fprintf(stderr, "rseq register: %s\n", strerror(errno));
		exit(1);
	}
}

static void *b_main(void *arg)
{
	char c;

	(void)arg;
	reg();
	pin_to(!strcmp(pin, "split") ? 1 : 0);
	for (long i = 0; i < rounds; i++) {
		if (read(ab[0], &c, 1) != 1 || write(ba[1], &c, 1) != 1)
			exit(1);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_t b;
	char c = 'x';

	if (!getenv("PINGPONG64_CHILD")) {
		setenv("PINGPONG64_CHILD", "1", 1);
		setenv("GLIBC_TUNABLES", "glibc.pthread.rseq=0", 1);
		execv("/proc/self/exe", argv);
		perror("execv");
		return 2;
	}
	if (argc > 1)
		rounds = atol(argv[1]);
	if (argc > 2)
		pin = argv[2];
	reg();
	pin_to(0);
	if (pipe(ab) || pipe(ba) || pthread_create(&b, NULL, b_main, NULL))
		return 1;
	for (long i = 0; i < rounds; i++) {
		if (write(ab[1], &c, 1) != 1 || read(ba[0], &c, 1) != 1)
			return 1;
	}
	pthread_join(b, NULL);
	printf("rounds %ld\n", rounds);
	return 0;
}
