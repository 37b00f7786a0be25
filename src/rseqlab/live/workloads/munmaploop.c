/* rseqlab workload: map a file, close it, unmap it, in a loop.
 *
 * usage: munmaploop [ITERATIONS=5000] [DIR=/tmp]
 * Each munmap() drops the last reference to the file, so its fput() is
 * deferred to task_work: a TIF_NOTIFY_RESUME with no RSEQ event behind it.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 5000;
	const char *dir = argc > 2 ? argv[2] : "/tmp";
	char path[4096];
	long sum = 0;
	int fd;

	snprintf(path, sizeof(path), "%s/rseqlab-munmap-XXXXXX", dir);
	fd = mkstemp(path);
	if (fd < 0 || ftruncate(fd, 4096)) {
		perror("mkstemp");
		return 2;
	}
	close(fd);
	for (long i = 0; i < n; i++) {
		char *p;

		fd = open(path, O_RDWR);
		if (fd < 0) {
			perror("open");
			return 2;
		}
		p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (p == MAP_FAILED) {
			perror("mmap");
			return 2;
		}
		close(fd);
		p[i % 4096] = (char)i;
		sum += p[0];
		munmap(p, 4096);
	}
	unlink(path);
	printf("iterations %ld checksum %ld\n", n, sum);
	return 0;
}
