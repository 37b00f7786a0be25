/* rseqlab workload: fork children that exit at once, one after the other.
 *
 * usage: forkloop [CHILDREN=200]
 * Each child inherits the parent's rseq registration (the kernel's rseq_fork) and
 * returns to user space once before _exit(); the parent waits for it (a blocking
 * wait4). Prints "ns_per_fork <float>".
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 200;
	struct timespec t0, t1;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (long i = 0; i < n; i++) {
		pid_t pid = fork();
		if (pid < 0) {
			perror("fork");
			return 1;
		}
		if (pid == 0)
			_exit(0);
		int status;
		if (waitpid(pid, &status, 0) != pid) {
			perror("waitpid");
			return 1;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("ns_per_fork %.1f\n", n ? ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / n : 0.0);
	return 0;
}
