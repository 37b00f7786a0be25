/* rseqlab workload: two threads bounce one byte through a pair of pipes.
 *
 * usage: pingpong [ROUNDS=20000] [PIN=same|split|none]
 *   same:  both threads on CPU 0 (every hand-over is a context switch there)
 *   split: thread A on CPU 0, thread B on CPU 1
 *   none:  no pinning
 * Prints "ns_per_round <float>" on stdout.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int ab[2], ba[2];
static long rounds = 20000;
static const char *pin = "same";

static void pin_to(int cpu)
{
	cpu_set_t set;

	if (!strcmp(pin, "none"))
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set)) {
		perror("sched_setaffinity");
		exit(2);
	}
}

static void *echo(void *arg)
{
	char c;

	(void)arg;
	pin_to(strcmp(pin, "split") ? 0 : 1);
	for (long i = 0; i < rounds; i++) {
		if (read(ab[0], &c, 1) != 1 || write(ba[1], &c, 1) != 1)
			exit(3);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	struct timespec t0, t1;
	pthread_t th;
	char c = 'x';

	if (argc > 1)
		rounds = atol(argv[1]);
	if (argc > 2)
		pin = argv[2];
	if (pipe(ab) || pipe(ba)) {
		perror("pipe");
		return 2;
	}
	pin_to(0);
	if (pthread_create(&th, NULL, echo, NULL)) {
		perror("pthread_create");
		return 2;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (long i = 0; i < rounds; i++) {
		if (write(ab[1], &c, 1) != 1 || read(ba[0], &c, 1) != 1)
			return 3;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	pthread_join(th, NULL);
	printf("ns_per_round %.1f\n",
	       ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / rounds);
	return 0;
}
