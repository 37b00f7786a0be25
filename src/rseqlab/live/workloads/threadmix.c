/* rseqlab workload: a multi-threaded mix of the ways threads leave user space.
 *
 * usage: threadmix [SECONDS_X100=30] [THREADS=4]
 * Threads alternate CPU-bound bursts (preempted by the tick), short sleeps,
 * a contended mutex (futex waits), sched_yield() and pipe hand-overs, for
 * SECONDS_X100 hundredths of a second. Prints "ops <n>".
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static volatile long shared;
static int chan[2];
static struct timespec deadline;

static int expired(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec > deadline.tv_sec ||
	       (now.tv_sec == deadline.tv_sec && now.tv_nsec >= deadline.tv_nsec);
}

static void *worker(void *arg)
{
	long id = (long)arg, ops = 0;
	struct timespec nap = { 0, 200000 };
	volatile unsigned long x = 0;
	char c = 'm';

	while (!expired()) {
		for (unsigned long i = 0; i < 300000; i++)
			x += i * id;
		for (int i = 0; i < 50; i++) {
			pthread_mutex_lock(&lock);
			shared++;
			pthread_mutex_unlock(&lock);
		}
		switch (ops++ % 4) {
		case 0:
			nanosleep(&nap, NULL);
			break;
		case 1:
			sched_yield();
			break;
		case 2:
			if (id & 1) {
				if (write(chan[1], &c, 1) != 1)
					exit(3);
			} else {
				nanosleep(&nap, NULL);
			}
			break;
		default:
			if (!(id & 1)) {
				/* drain whatever odd threads have written, without blocking */
				char buf[64];

				if (read(chan[0], buf, sizeof(buf)) < 0) {
					/* EAGAIN: nothing queued */
				}
			}
			break;
		}
	}
	return (void *)ops;
}

int main(int argc, char **argv)
{
	long centis = argc > 1 ? atol(argv[1]) : 30;
	long nthreads = argc > 2 ? atol(argv[2]) : 4, total = 0;
	pthread_t th[64];

	if (nthreads < 1 || nthreads > 64 || pipe2(chan, 0x800 /* O_NONBLOCK */)) {
		fprintf(stderr, "threadmix: bad arguments\n");
		return 2;
	}
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += centis / 100;
	deadline.tv_nsec += (centis % 100) * 10000000L;
	if (deadline.tv_nsec >= 1000000000L) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000L;
	}
	for (long i = 0; i < nthreads; i++)
		if (pthread_create(&th[i], NULL, worker, (void *)i))
			return 2;
	for (long i = 0; i < nthreads; i++) {
		void *ops;

		pthread_join(th[i], &ops);
		total += (long)ops;
	}
	printf("ops %ld\n", total);
	return 0;
}
