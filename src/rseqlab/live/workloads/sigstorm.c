/* rseqlab workload: a thread signals itself in a loop (one handler frame per signal).
 *
 * usage: sigstorm [SIGNALS=20000]
 * Each kill() is delivered on the way out of that same syscall, so every
 * iteration is one syscall return with a signal frame. Prints "ns_per_signal <float>".
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t seen;

static void on_usr1(int sig)
{
	(void)sig;
	seen++;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 20000;
	struct sigaction sa = { .sa_handler = on_usr1 };
	struct timespec t0, t1;
	pid_t self = getpid();

	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGUSR1, &sa, NULL)) {
		perror("sigaction");
		return 2;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (long i = 0; i < n; i++)
		kill(self, SIGUSR1);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (seen != n) {
		fprintf(stderr, "sigstorm: %ld signals sent, %d handled\n", n, (int)seen);
		return 3;
	}
	printf("ns_per_signal %.1f\n",
	       ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / n);
	return 0;
}
