/* guestrec: the rseqlab recorder for a guest kernel (and any Linux host), in C with libc only.
 *
 * usage: guestrec [--buffer-kb N] [--cpus-hint N] OUTDIR -- CMD ARGS...
 *
 * Records CMD's whole process tree the way `rseqlab record` does (src/rseqlab/trace/record.py):
 * a private tracefs instance `rseqlab-<pid>` with the pid filter following forks
 * (options/event-fork) and the same events, a second instance `rseqlab-<pid>-mig` with
 * sched:sched_migrate_task system-wide, trace_clock=mono, buffer_percent=50, overwrite=0, and the
 * binary per_cpu/cpuN/trace_pipe_raw pages read with poll() while CMD runs (never the text pipe).
 * A third small instance, `rseqlab-<pid>-self`, records the recorder itself (pid filter on its own
 * pid, no event-fork) so the host can account for the recorder's own returns to user mode inside
 * the statistics window.
 *
 * /sys/kernel/debug/rseq/stats (CONFIG_RSEQ_STATS) is read immediately before CMD is released and
 * immediately after it exits (both files are opened beforehand, so the window holds only a read,
 * the gate write and the poll() that waits for CMD).
 *
 * OUTDIR (created if needed; see docs/guest-recording.md):
 *   raw/{main,mig,self}-cpuN.raw   the pages as read      stats/{main,mig,self}-cpuN   per_cpu stats
 *   events/header_page             events/SYS/EVENT/format for every recorded event
 *   uname                          `uname -r`             rseq_stats.before, rseq_stats.after (if any)
 *   config.gz or config            the kernel's config when the kernel exposes it
 *   manifest.json                  written last: its presence means the recording is complete
 *
 * Exit status: 0 recording complete (CMD's own status is in the manifest), 1 failure while
 * recording, 2 bad usage or CMD cannot be run, 3 the environment cannot record (not root, no
 * tracefs, no rseq tracepoints), 130 interrupted. Every exit path disables and removes the
 * instances and unmounts what it mounted.
 *
 * Build: gcc -static -O2 -o guestrec guestrec.c (rseqlab.vm.guestbuild does it).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <gnu/libc-version.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/rseq.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TRACEFS "/sys/kernel/tracing"
#define DEBUGFS "/sys/kernel/debug"
#define RSEQ_STATS DEBUGFS "/rseq/stats"
#define PREFIX "rseqlab-"
#define MIG_KB 2048
#define SELF_KB 2048
#define IP_KB 2048
#define TRACEFS_MAGIC_ 0x74726163
#define DEBUGFS_MAGIC_ 0x64626720
#define COMMIT_MASK ((1u << 30) - 1)

struct event {
	const char *sys, *name;
	int required;
	int present;
};

/* The main instance's events: the same list, in the same order, as record.py's EVENTS. */
static struct event events[] = {
	{"sched", "sched_switch", 1, 0},
	{"sched", "sched_process_fork", 1, 0},
	{"sched", "sched_process_exec", 1, 0},
	{"sched", "sched_process_exit", 1, 0},
	{"task", "task_newtask", 0, 0},
	{"raw_syscalls", "sys_enter", 1, 0},
	{"raw_syscalls", "sys_exit", 1, 0},
	{"signal", "signal_deliver", 1, 0},
	{"rseq", "rseq_update", 1, 0},
	{"rseq", "rseq_ip_fixup", 1, 0},
	{"irq_vectors", "local_timer_entry", 0, 0},
	{"irq_vectors", "reschedule_entry", 0, 0},
	{"irq_vectors", "call_function_entry", 0, 0},
	{"irq_vectors", "call_function_single_entry", 0, 0},
	{"irq_vectors", "irq_work_entry", 0, 0},
	{"irq", "irq_handler_entry", 0, 0},
	{"exceptions", "page_fault_user", 0, 0},
	{"exceptions", "page_fault_kernel", 0, 0},
	{"context_tracking", "user_enter", 0, 0}, /* only with user context tracking on */
	{"context_tracking", "user_exit", 0, 0},
	{"sched", "sched_migrate_task", 1, 0}, /* the migration instance's only event */
};
#define NEVENTS ((int)(sizeof(events) / sizeof(events[0])))
#define MIGRATION (NEVENTS - 1)

/* IP: the interrupt entries again, each followed by the task's user stack (options/userstacktrace),
 * whose first word is the user IP the interrupt saved; the replay needs it to place the interrupt
 * inside or outside a critical section. Only where the kernel has the option (ip_on). */
enum { MAIN, MIG, SELF, IP, NINST };
static const char *const tag[NINST] = {"main", "mig", "self", "ip"};

static char inst[NINST][256];
static int inst_made[NINST];
/* A file of each instance held open from its creation: tracefs refuses to remove an instance
 * with open files (EBUSY), which is how every rseqlab recorder tells a live instance from a
 * stale one, whatever PID namespace its owner runs in. */
static int inst_hold[NINST] = {-1, -1, -1, -1};
static int ip_on;
static int ncpus;
static int *rfd[NINST], *wfd[NINST];
static long long *raw_bytes[NINST];
static long pages_read;
static int mounted_sysfs, mounted_tracefs, mounted_debugfs;
static pid_t child;
static volatile sig_atomic_t stop_signal;
static int stop_pipe[2] = {-1, -1};
static const char *outdir;

/* ------------------------------------------------------------------ helpers */
static void cleanup(void);

static void die(int status, const char *fmt, ...)
{
	va_list ap;

	fputs("guestrec: error: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	cleanup();
	exit(status);
}

static int write_str(const char *path, const char *value)
{
	int fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
	ssize_t n, len = (ssize_t)strlen(value);

	if (fd < 0)
		return -errno;
	n = len ? write(fd, value, (size_t)len) : 0;
	if (n < 0) {
		int e = errno;

		close(fd);
		return -e;
	}
	close(fd);
	return 0;
}

static void set(int i, const char *rel, const char *value)
{
	char path[PATH_MAX];
	int err;

	snprintf(path, sizeof(path), "%s/%s", inst[i], rel);
	err = write_str(path, value);
	if (err)
		die(1, "cannot write %s to %s: %s", value, path, strerror(-err));
}

/* Read a whole (pseudo-)file; returns the length or -errno. */
static ssize_t read_all(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t got = 0;

	if (fd < 0)
		return -errno;
	while (got + 1 < size) {
		ssize_t n = read(fd, buf + got, size - 1 - got);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			n = -errno;
			close(fd);
			return n;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	buf[got] = 0;
	close(fd);
	return (ssize_t)got;
}

static void write_all_fd(int fd, const void *data, size_t len, const char *what)
{
	const char *p = data;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			die(1, "writing %s failed: %s", what, strerror(errno));
		}
		p += n;
		len -= (size_t)n;
	}
}

static void out_path(char *path, size_t size, const char *rel)
{
	snprintf(path, size, "%s/%s", outdir, rel);
}

static void mkdirs(const char *path)
{
	char tmp[PATH_MAX];
	size_t len = strlen(path);

	if (len >= sizeof(tmp))
		die(2, "path too long: %s", path);
	memcpy(tmp, path, len + 1);
	for (char *p = tmp + 1; *p; p++) {
		if (*p == '/') {
			*p = 0;
			if (mkdir(tmp, 0755) && errno != EEXIST)
				die(2, "cannot create %s: %s", tmp, strerror(errno));
			*p = '/';
		}
	}
	if (mkdir(tmp, 0755) && errno != EEXIST)
		die(2, "cannot create %s: %s", tmp, strerror(errno));
}

static void save_out(const char *rel, const char *data, size_t len)
{
	char path[PATH_MAX], dir[PATH_MAX];
	char *slash;
	int fd;

	out_path(path, sizeof(path), rel);
	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (slash) {
		*slash = 0;
		mkdirs(dir);
	}
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		die(1, "cannot create %s: %s", path, strerror(errno));
	write_all_fd(fd, data, len, path);
	if (close(fd))
		die(1, "writing %s failed: %s", path, strerror(errno));
}

static int is_dir(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static long fs_magic(const char *path)
{
	struct statfs sf;

	return statfs(path, &sf) == 0 ? (long)sf.f_type : -1;
}

static long long mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ------------------------------------------------------------------ tracefs instances */
static void teardown_dir(const char *dir)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/tracing_on", dir);
	write_str(path, "0");
	snprintf(path, sizeof(path), "%s/set_event", dir);
	write_str(path, "");
	snprintf(path, sizeof(path), "%s/set_event_pid", dir);
	write_str(path, "");
	for (int i = 0; i < 50; i++) {
		struct timespec ts = {0, 20 * 1000 * 1000};

		if (rmdir(dir) == 0 || errno == ENOENT || errno != EBUSY)
			return;
		nanosleep(&ts, NULL);
	}
}

/* Instances rseqlab-* that no recorder uses any more: the ones rmdir can remove. A live
 * recorder (Python's or ours) holds a file of each of its instances open, so its rmdir fails
 * with EBUSY and nothing is written to it; a pid in the name says nothing across namespaces. */
static void remove_stale_instances(void)
{
	DIR *d = opendir(TRACEFS "/instances");
	struct dirent *e;

	if (!d)
		return;
	while ((e = readdir(d))) {
		char path[PATH_MAX];

		if (strncmp(e->d_name, PREFIX, strlen(PREFIX)))
			continue;
		snprintf(path, sizeof(path), TRACEFS "/instances/%s", e->d_name);
		rmdir(path);
	}
	closedir(d);
}

static void close_readers(void)
{
	for (int i = 0; i < NINST; i++) {
		for (int c = 0; rfd[i] && c < ncpus; c++) {
			if (rfd[i][c] >= 0)
				close(rfd[i][c]);
			rfd[i][c] = -1;
		}
	}
}

static void kill_child(void)
{
	int sigs[2] = {SIGINT, SIGKILL};
	int waits_ms[2] = {2000, 5000};

	if (child <= 0)
		return;
	for (int s = 0; s < 2; s++) {
		if (kill(child, sigs[s]))
			break;
		for (int t = 0; t < waits_ms[s] / 20; t++) {
			struct timespec ts = {0, 20 * 1000 * 1000};

			if (waitpid(child, NULL, WNOHANG) == child) {
				child = 0;
				return;
			}
			nanosleep(&ts, NULL);
		}
	}
	waitpid(child, NULL, WNOHANG);
	child = 0;
}

static void cleanup(void)
{
	static int done;
	sigset_t all, old;

	if (done)
		return;
	done = 1;
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, &old);
	kill_child();
	for (int i = 0; i < NINST; i++) {
		char path[PATH_MAX];

		if (!inst_made[i])
			continue;
		snprintf(path, sizeof(path), "%s/tracing_on", inst[i]);
		write_str(path, "0");
	}
	close_readers();
	for (int i = 0; i < NINST; i++) {
		if (inst_hold[i] >= 0) {
			close(inst_hold[i]);
			inst_hold[i] = -1;
		}
		if (inst_made[i])
			teardown_dir(inst[i]);
	}
	/* A busy mount (an automounted tracefs below debugfs, say) is detached instead. */
	if (mounted_debugfs && umount(DEBUGFS))
		umount2(DEBUGFS, MNT_DETACH);
	if (mounted_tracefs && umount(TRACEFS))
		umount2(TRACEFS, MNT_DETACH);
	if (mounted_sysfs && umount("/sys"))
		umount2("/sys", MNT_DETACH);
	mounted_debugfs = mounted_tracefs = mounted_sysfs = 0;
	sigprocmask(SIG_SETMASK, &old, NULL);
}

static void on_signal(int sig)
{
	stop_signal = sig;
	if (stop_pipe[1] >= 0) {
		int e = errno;
		ssize_t r = write(stop_pipe[1], "x", 1);

		(void)r;
		errno = e;
	}
}

/* ------------------------------------------------------------------ JSON */
static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p < 0x20)
			fprintf(f, "\\u%04x", *p);
		else
			fputc(*p, f);
	}
	fputc('"', f);
}

/* ------------------------------------------------------------------ main */
static void usage(void)
{
	fputs("usage: guestrec [--buffer-kb N] [--cpus-hint N] OUTDIR -- CMD ARGS...\n", stderr);
	exit(2);
}

static long parse_positive(const char *opt, const char *text)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(text, &end, 10);
	if (errno || *end || v < 1) {
		fprintf(stderr, "guestrec: error: %s needs a positive integer (got %s)\n", opt, text);
		exit(2);
	}
	return v;
}

/* The executable CMD names, searched in PATH like shutil.which (done before fork, so the child
 * makes exactly one execve, as record.py's child does). */
static char *resolve(const char *cmd)
{
	static char buf[PATH_MAX];
	const char *path = getenv("PATH");

	if (strchr(cmd, '/'))
		return access(cmd, X_OK) == 0 ? (char *)cmd : NULL;
	if (!path)
		path = "/usr/local/bin:/usr/bin:/bin";
	while (*path) {
		const char *colon = strchr(path, ':');
		size_t len = colon ? (size_t)(colon - path) : strlen(path);
		struct stat st;

		snprintf(buf, sizeof(buf), "%.*s/%s", (int)len, len ? path : ".", cmd);
		if (stat(buf, &st) == 0 && S_ISREG(st.st_mode) && access(buf, X_OK) == 0)
			return buf;
		path += len + (colon ? 1 : 0);
		if (!colon)
			break;
	}
	return NULL;
}

static int page_size_of(const char *header)
{
	const char *p = strstr(header, "field: char data;");
	int off, size;

	if (!p || !(p = strstr(p, "offset:")) || sscanf(p, "offset:%d;", &off) != 1)
		return 4096;
	if (!(p = strstr(p, "size:")) || sscanf(p, "size:%d;", &size) != 1)
		return 4096;
	return off + size;
}

/* Drain one reader: every page until EAGAIN. The self instance records our own reads, so while
 * tracing is on it stops at the first page that is not at least half full (it has caught up). */
static void drain(int i, int c, char *page, int page_size, int bounded)
{
	for (;;) {
		ssize_t n = read(rfd[i][c], page, (size_t)page_size);

		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			die(1, "reading %s/per_cpu/cpu%d/trace_pipe_raw failed: %s", inst[i], c, strerror(errno));
		}
		if (n == 0)
			return;
		write_all_fd(wfd[i][c], page, (size_t)n, "a raw page");
		raw_bytes[i][c] += n;
		pages_read++;
		if (bounded && n >= 16) {
			uint64_t commit;

			memcpy(&commit, page + 8, sizeof(commit));
			if ((commit & COMMIT_MASK) < (uint64_t)(page_size - 16) / 2)
				return;
		}
	}
}

int main(int argc, char **argv)
{
	long buffer_kb = 32 * 1024, cpus_hint = 0;
	int argi = 1, page_size, gate[2], errp[2], pidfd, have_stats = 0;
	int stats_before_fd = -1, stats_after_fd = -1;
	char *exe, header[8192], buf[PATH_MAX], path[PATH_MAX], *page;
	char stats_before[4096], stats_after[4096];
	ssize_t nb = -1, na = -1;
	long long t_start, t_end, t_before, t_after;
	int status = 0, exec_errno = 0, mounts[2];
	pid_t root_pid;
	struct rusage ru_self0, ru_self1, ru_child;
	struct utsname un;
	struct sigaction sa;
	time_t wall;
	char utc[64];
	FILE *m;

	while (argi < argc && strncmp(argv[argi], "--", 2) == 0 && strcmp(argv[argi], "--")) {
		if (!strcmp(argv[argi], "--buffer-kb") && argi + 1 < argc)
			buffer_kb = parse_positive("--buffer-kb", argv[++argi]);
		else if (!strcmp(argv[argi], "--cpus-hint") && argi + 1 < argc)
			cpus_hint = parse_positive("--cpus-hint", argv[++argi]);
		else
			usage();
		argi++;
	}
	if (argi + 2 >= argc || strcmp(argv[argi + 1], "--"))
		usage();
	outdir = argv[argi];
	argv += argi + 2;
	argc -= argi + 2;
	exe = resolve(argv[0]);
	if (!exe) {
		fprintf(stderr, "guestrec: error: command not found: %s\n", argv[0]);
		return 2;
	}
	if (geteuid() != 0) {
		fputs("guestrec: error: recording needs root (tracefs and pid filters)\n", stderr);
		return 3;
	}
	mkdirs(outdir);
	{
		char probe[PATH_MAX];

		out_path(probe, sizeof(probe), "manifest.json");
		unlink(probe); /* an old manifest would claim this recording complete */
	}

	/* Stop cleanly on the usual signals: the poll loop sees the stop pipe. */
	if (pipe2(stop_pipe, O_CLOEXEC | O_NONBLOCK))
		die(1, "pipe: %s", strerror(errno));
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);

	/* tracefs (and sysfs below it, in a bare guest), mounted only if needed. */
	if (!is_dir(TRACEFS "/instances")) {
		if (!is_dir("/sys/kernel")) {
			if (mount("sysfs", "/sys", "sysfs", 0, NULL))
				die(3, "cannot mount sysfs on /sys: %s", strerror(errno));
			mounted_sysfs = 1;
		}
		if (fs_magic(TRACEFS) != TRACEFS_MAGIC_) {
			if (mount("nodev", TRACEFS, "tracefs", 0, NULL))
				die(3, "tracefs is not mounted at " TRACEFS " and mounting it failed: %s",
				    strerror(errno));
			mounted_tracefs = 1;
		}
		if (!is_dir(TRACEFS "/instances"))
			die(3, "tracefs at " TRACEFS " has no instances directory");
	}
	if (!is_dir(TRACEFS "/events/rseq/rseq_update"))
		die(3, "this kernel has no rseq:rseq_update tracepoint (needs CONFIG_RSEQ and tracepoints)");

	/* Layouts: header_page and every event's format file, copied verbatim. */
	if (read_all(TRACEFS "/events/header_page", header, sizeof(header)) < 0)
		die(3, "cannot read " TRACEFS "/events/header_page: %s", strerror(errno));
	page_size = page_size_of(header);
	save_out("events/header_page", header, strlen(header));
	for (int e = 0; e < NEVENTS; e++) {
		char text[16384], rel[PATH_MAX];
		ssize_t n;

		snprintf(path, sizeof(path), TRACEFS "/events/%s/%s/format", events[e].sys, events[e].name);
		n = read_all(path, text, sizeof(text));
		if (n < 0) {
			if (events[e].required)
				die(3, "this kernel has no %s:%s tracepoint", events[e].sys, events[e].name);
			continue;
		}
		events[e].present = 1;
		snprintf(rel, sizeof(rel), "events/%s/%s/format", events[e].sys, events[e].name);
		save_out(rel, text, (size_t)n);
	}
	{
		/* The layout of the IP instance's user stack entries (an ftrace-internal entry). */
		char text[16384];
		ssize_t n = read_all(TRACEFS "/events/ftrace/user_stack/format", text, sizeof(text));

		if (n > 0)
			save_out("events/ftrace/user_stack/format", text, (size_t)n);
	}
	remove_stale_instances();

	ncpus = cpus_hint ? (int)cpus_hint : (int)sysconf(_SC_NPROCESSORS_ONLN);
	if (ncpus < 1)
		ncpus = 1;
	for (int i = 0; i < NINST; i++) {
		rfd[i] = malloc(sizeof(int) * (size_t)ncpus);
		wfd[i] = malloc(sizeof(int) * (size_t)ncpus);
		raw_bytes[i] = calloc((size_t)ncpus, sizeof(long long));
		if (!rfd[i] || !wfd[i] || !raw_bytes[i])
			die(1, "out of memory");
		for (int c = 0; c < ncpus; c++)
			rfd[i][c] = wfd[i][c] = -1;
	}
	page = malloc((size_t)page_size);
	if (!page)
		die(1, "out of memory");

	/* The statistics file: mount debugfs for it if needed; open it twice now, read it later. */
	if (access(RSEQ_STATS, R_OK) && is_dir(DEBUGFS) && fs_magic(DEBUGFS) != DEBUGFS_MAGIC_) {
		if (mount("debugfs", DEBUGFS, "debugfs", 0, NULL) == 0) {
			mounted_debugfs = 1;
			if (access(RSEQ_STATS, R_OK)) {
				/* No statistics here: leave debugfs as found, lazily if the umount is refused
				 * (EBUSY, e.g. tracefs automounted under it by then). */
				if (umount(DEBUGFS))
					umount2(DEBUGFS, MNT_DETACH);
				mounted_debugfs = 0;
			}
		}
	}
	if (access(RSEQ_STATS, R_OK) == 0) {
		stats_before_fd = open(RSEQ_STATS, O_RDONLY | O_CLOEXEC);
		stats_after_fd = open(RSEQ_STATS, O_RDONLY | O_CLOEXEC);
		have_stats = stats_before_fd >= 0 && stats_after_fd >= 0;
	}

	{
		pid_t me = getpid();
		char kb[32];

		for (int i = 0; i < NINST; i++) {
			snprintf(inst[i], sizeof(inst[i]), TRACEFS "/instances/" PREFIX "%d%s", (int)me,
				 i == MAIN ? "" : i == MIG ? "-mig" : i == SELF ? "-self" : "-ip");
			if (mkdir(inst[i], 0755))
				die(1, "cannot create the tracefs instance %s: %s", inst[i], strerror(errno));
			inst_made[i] = 1;
			char hold[PATH_MAX];

			snprintf(hold, sizeof(hold), "%s/tracing_on", inst[i]);
			inst_hold[i] = open(hold, O_RDWR | O_CLOEXEC);
			set(i, "tracing_on", "0");
			set(i, "trace_clock", "mono");
			snprintf(kb, sizeof(kb), "%ld", i == MAIN ? buffer_kb : i == MIG ? MIG_KB : i == SELF ? SELF_KB : IP_KB);
			set(i, "buffer_size_kb", kb);
			set(i, "buffer_percent", "50");
			set(i, "options/overwrite", "0");
		}
		set(MAIN, "options/event-fork", "1");
		set(SELF, "options/event-fork", "0");
		set(IP, "options/event-fork", "1");
		{
			char opt[PATH_MAX];

			snprintf(opt, sizeof(opt), "%s/options/userstacktrace", inst[IP]);
			ip_on = write_str(opt, "1") == 0;
		}
		snprintf(kb, sizeof(kb), "%d", (int)me);
		set(SELF, "set_event_pid", kb);
	}

	if (pipe(gate) || pipe2(errp, O_CLOEXEC))
		die(1, "pipe: %s", strerror(errno));
	getrusage(RUSAGE_SELF, &ru_self0);
	child = fork();
	if (child < 0)
		die(1, "fork: %s", strerror(errno));
	if (child == 0) {
		char go[2];
		int e;

		close(gate[1]);
		close(errp[0]);
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		signal(SIGHUP, SIG_DFL);
		if (read(gate[0], go, 2) < 0)
			_exit(127);
		close(gate[0]);
		execv(exe, argv);
		e = errno ? errno : ENOEXEC;
		{
			char msg[16];
			int len = snprintf(msg, sizeof(msg), "%d", e);
			ssize_t r = write(errp[1], msg, (size_t)len);

			(void)r;
		}
		_exit(127);
	}
	root_pid = child;
	close(gate[0]);
	close(errp[1]);
	snprintf(buf, sizeof(buf), "%d", (int)child);
	set(MAIN, "set_event_pid", buf);
	set(IP, "set_event_pid", buf);
	for (int e = 0; e < NEVENTS; e++) {
		char rel[PATH_MAX];

		if (!events[e].present)
			continue;
		snprintf(rel, sizeof(rel), "events/%s/%s/enable", events[e].sys, events[e].name);
		if (e == MIGRATION) {
			set(MIG, rel, "1");
		} else {
			set(MAIN, rel, "1");
			set(SELF, rel, "1");
			if (ip_on && !strcmp(events[e].sys, "irq_vectors"))
				set(IP, rel, "1");
		}
	}
	for (int i = 0; i < NINST; i++) {
		for (int c = 0; c < ncpus; c++) {
			char rel[64];

			snprintf(path, sizeof(path), "%s/per_cpu/cpu%d/trace_pipe_raw", inst[i], c);
			rfd[i][c] = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
			if (rfd[i][c] < 0)
				die(1, "cannot open %s: %s", path, strerror(errno));
			snprintf(rel, sizeof(rel), "raw/%s-cpu%d.raw", tag[i], c);
			save_out(rel, "", 0);
			out_path(path, sizeof(path), rel);
			wfd[i][c] = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
			if (wfd[i][c] < 0)
				die(1, "cannot open %s: %s", path, strerror(errno));
		}
	}
	pidfd = (int)syscall(SYS_pidfd_open, child, 0);
	if (pidfd < 0)
		die(1, "pidfd_open: %s (needs Linux 5.3 or later)", strerror(errno));

	set(SELF, "tracing_on", "1");
	set(IP, "tracing_on", ip_on ? "1" : "0");
	set(MIG, "tracing_on", "1");
	set(MAIN, "tracing_on", "1");
	t_start = mono_ns();
	wall = time(NULL);
	{
		struct tm tm;

		gmtime_r(&wall, &tm);
		strftime(utc, sizeof(utc), "%Y-%m-%dT%H:%M:%S+00:00", &tm);
	}

	/* The statistics window: from here to the second read, only a read, the gate write and
	 * poll() (plus, in a long run, the page reads the self instance records). */
	t_before = mono_ns();
	if (have_stats)
		nb = read(stats_before_fd, stats_before, sizeof(stats_before) - 1);
	if (write(gate[1], "go", 2) != 2)
		die(1, "releasing the command failed: %s", strerror(errno));

	{
		int nfds = NINST * ncpus + 2;
		struct pollfd *pfd = calloc((size_t)nfds, sizeof(*pfd));
		int exited = 0;

		if (!pfd)
			die(1, "out of memory");
		for (int i = 0; i < NINST; i++)
			for (int c = 0; c < ncpus; c++) {
				pfd[i * ncpus + c].fd = rfd[i][c];
				pfd[i * ncpus + c].events = POLLIN;
			}
		pfd[nfds - 2].fd = pidfd;
		pfd[nfds - 2].events = POLLIN;
		pfd[nfds - 1].fd = stop_pipe[0];
		pfd[nfds - 1].events = POLLIN;
		while (!exited) {
			int r = poll(pfd, (nfds_t)nfds, -1);

			if (r < 0) {
				if (errno == EINTR)
					continue;
				die(1, "poll: %s", strerror(errno));
			}
			if (pfd[nfds - 2].revents) {
				t_after = mono_ns();
				if (have_stats)
					na = read(stats_after_fd, stats_after, sizeof(stats_after) - 1);
				exited = 1;
				break;
			}
			if (pfd[nfds - 1].revents || stop_signal) {
				fprintf(stderr, "guestrec: error: interrupted (%s)\n", strsignal(stop_signal));
				cleanup();
				return 130;
			}
			for (int i = 0; i < NINST; i++)
				for (int c = 0; c < ncpus; c++)
					if (pfd[i * ncpus + c].revents & POLLIN)
						drain(i, c, page, page_size, i == SELF);
		}
		free(pfd);
	}
	if (waitpid(child, &status, 0) != child)
		die(1, "waitpid: %s", strerror(errno));
	child = 0;
	t_end = mono_ns();
	{
		char msg[16];
		ssize_t n = read(errp[0], msg, sizeof(msg) - 1);

		if (n > 0) {
			msg[n] = 0;
			exec_errno = atoi(msg);
		}
	}
	set(MAIN, "tracing_on", "0");
	set(MIG, "tracing_on", "0");
	set(SELF, "tracing_on", "0");
	set(IP, "tracing_on", "0");
	getrusage(RUSAGE_CHILDREN, &ru_child);
	/* Tracing is off: whatever remains, partial pages included, is read without waiting. */
	for (int i = 0; i < NINST; i++)
		for (int c = 0; c < ncpus; c++)
			drain(i, c, page, page_size, 0);
	getrusage(RUSAGE_SELF, &ru_self1);
	for (int i = 0; i < NINST; i++)
		for (int c = 0; c < ncpus; c++) {
			char text[4096], rel[64];
			ssize_t n;

			close(wfd[i][c]);
			wfd[i][c] = -1;
			snprintf(path, sizeof(path), "%s/per_cpu/cpu%d/stats", inst[i], c);
			n = read_all(path, text, sizeof(text));
			if (n < 0)
				continue;
			snprintf(rel, sizeof(rel), "stats/%s-cpu%d", tag[i], c);
			save_out(rel, text, (size_t)n);
		}
	if (stats_before_fd >= 0)
		close(stats_before_fd);
	if (stats_after_fd >= 0)
		close(stats_after_fd);
	if (have_stats && nb >= 0 && na >= 0) {
		save_out("rseq_stats.before", stats_before, (size_t)nb);
		save_out("rseq_stats.after", stats_after, (size_t)na);
	} else if (have_stats) {
		fputs("guestrec: warning: reading " RSEQ_STATS " failed; no statistics recorded\n", stderr);
		have_stats = 0;
	}
	mounts[0] = mounted_tracefs;
	mounts[1] = mounted_debugfs;
	cleanup(); /* instances removed, file systems unmounted: only OUTDIR is written from here */

	uname(&un);
	snprintf(buf, sizeof(buf), "%s\n", un.release);
	save_out("uname", buf, strlen(buf));
	{
		static char cfg[1 << 20];
		ssize_t n = read_all("/proc/config.gz", cfg, sizeof(cfg));

		if (n > 0) {
			save_out("config.gz", cfg, (size_t)n);
		} else {
			snprintf(path, sizeof(path), "/boot/config-%s", un.release);
			n = read_all(path, cfg, sizeof(cfg));
			if (n > 0)
				save_out("config", cfg, (size_t)n);
		}
	}
	if (exec_errno) {
		fprintf(stderr, "guestrec: error: cannot run %s: %s\n", argv[0], strerror(exec_errno));
		return 2;
	}

	out_path(path, sizeof(path), "manifest.json.tmp");
	m = fopen(path, "w");
	if (!m)
		die(1, "cannot create %s: %s", path, strerror(errno));
	fprintf(m, "{\n  \"format\": \"rseqlab-guestrec\",\n  \"version\": 1,\n  \"command\": [");
	for (int i = 0; i < argc; i++) {
		if (i)
			fputs(", ", m);
		json_str(m, argv[i]);
	}
	fputs("],\n  \"executable\": ", m);
	json_str(m, exe);
	fputs(",\n  \"cwd\": ", m);
	json_str(m, getcwd(buf, sizeof(buf)) ? buf : "");
	fputs(",\n  \"uname\": {\"sysname\": ", m);
	json_str(m, un.sysname);
	fputs(", \"release\": ", m);
	json_str(m, un.release);
	fputs(", \"version\": ", m);
	json_str(m, un.version);
	fputs(", \"machine\": ", m);
	json_str(m, un.machine);
	fprintf(m, "},\n  \"start_utc\": \"%s\",\n", utc);
	fprintf(m, "  \"start_mono_ns\": %lld,\n  \"end_mono_ns\": %lld,\n", t_start, t_end);
	fprintf(m, "  \"window_mono_ns\": [%lld, %lld],\n", t_before, t_after);
	fprintf(m, "  \"exit_status\": %d,\n  \"wait_status\": %d,\n",
		WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? -WTERMSIG(status) : -1, status);
	fprintf(m, "  \"root_pid\": %d,\n  \"recorder_pid\": %d,\n", (int)root_pid, (int)getpid());
	fprintf(m, "  \"cpus\": %d,\n  \"page_size\": %d,\n", ncpus, page_size);
	fprintf(m, "  \"buffer_kb_per_cpu\": {\"main\": %ld, \"mig\": %d, \"self\": %d, \"ip\": %d},\n", buffer_kb,
		MIG_KB, SELF_KB, IP_KB);
	fprintf(m, "  \"user_stacks\": %s,\n", ip_on ? "true" : "false");
	fputs("  \"events\": [", m);
	for (int e = 0, first = 1; e < NEVENTS; e++) {
		if (!events[e].present)
			continue;
		fprintf(m, "%s\"%s:%s\"", first ? "" : ", ", events[e].sys, events[e].name);
		first = 0;
	}
	fputs("],\n  \"raw_bytes\": {", m);
	for (int i = 0; i < NINST; i++)
		for (int c = 0; c < ncpus; c++)
			fprintf(m, "%s\"%s-cpu%d\": %lld", i || c ? ", " : "", tag[i], c, raw_bytes[i][c]);
	fputs("},\n  \"node_of_cpu\": [", m);
	for (int c = 0; c < ncpus; c++) {
		int node = 0;
		DIR *d = opendir("/sys/devices/system/node");
		struct dirent *e;

		while (d && (e = readdir(d))) {
			char link[PATH_MAX];

			if (strncmp(e->d_name, "node", 4) || e->d_name[4] < '0' || e->d_name[4] > '9')
				continue;
			snprintf(link, sizeof(link), "/sys/devices/system/node/%s/cpu%d", e->d_name, c);
			if (access(link, F_OK) == 0)
				node = atoi(e->d_name + 4);
		}
		if (d)
			closedir(d);
		fprintf(m, "%s%d", c ? ", " : "", node);
	}
	{
		const char *tun = getenv("GLIBC_TUNABLES");
		struct rseq *area = (struct rseq *)((char *)__builtin_thread_pointer() + __rseq_offset);
		int registered = __rseq_size > 0 && (int32_t)area->cpu_id >= 0;

		fputs("],\n  \"glibc\": {\"version\": ", m);
		json_str(m, gnu_get_libc_version());
		fprintf(m, ", \"rseq_size\": %u, \"rseq_offset\": %ld, \"registered\": %s, \"rseq_addr\": %llu, "
			   "\"rseq_tunable_off\": %s},\n",
			__rseq_size, (long)__rseq_offset, registered ? "true" : "false",
			registered ? (unsigned long long)(uintptr_t)area : 0ULL,
			tun && strstr(tun, "glibc.pthread.rseq=0") ? "true" : "false");
	}
	fprintf(m, "  \"rseq_stats\": %s,\n", have_stats ? "true" : "false");
	fprintf(m, "  \"mounted_here\": {\"tracefs\": %s, \"debugfs\": %s},\n", mounts[0] ? "true" : "false",
		mounts[1] ? "true" : "false");
	fprintf(m, "  \"recorder\": {\"reader_cpu_s\": %.4f, \"pages\": %ld, \"workload_cpu_s\": %.4f}\n}\n",
		(ru_self1.ru_utime.tv_sec - ru_self0.ru_utime.tv_sec) + (ru_self1.ru_stime.tv_sec - ru_self0.ru_stime.tv_sec) +
			((ru_self1.ru_utime.tv_usec - ru_self0.ru_utime.tv_usec) +
			 (ru_self1.ru_stime.tv_usec - ru_self0.ru_stime.tv_usec)) / 1e6,
		pages_read,
		ru_child.ru_utime.tv_sec + ru_child.ru_stime.tv_sec + (ru_child.ru_utime.tv_usec + ru_child.ru_stime.tv_usec) / 1e6);
	if (fclose(m))
		die(1, "writing the manifest failed: %s", strerror(errno));
	{
		char final[PATH_MAX];

		out_path(final, sizeof(final), "manifest.json");
		if (rename(path, final))
			die(1, "cannot write %s: %s", final, strerror(errno));
	}
	return 0;
}
