/*
 * fakecriu: loads drm_plugin.so as criu does and calls its hooks from a
 * script on the command line, so that tests can do to the plugin what real
 * criu cannot be made to do on demand (kill its helper between two hooks)
 * and time a hook against a bare round trip. It exports the criu symbols
 * the plugin resolves (print_on_level, log_get_loglevel, log_get_fd,
 * criu_get_image_dir); build with -rdynamic.
 *
 *   fakecriu PLUGIN.so IMAGES-DIR STEP...
 *
 * Steps: init STAGE | exit STAGE RET | pause PID | resume PID |
 * dumpsk FD INO | killhelper | threads | bench N | pingpong N
 * (STAGE: 0 dump, 2 restore). Each step prints one line "STEP: result".
 * The plugin's log goes to stderr.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int image_dir = -1;
static int helper_pid = -1;

/* ---- criu's exports ---- */

__attribute__((visibility("default"))) void print_on_level(unsigned int level, const char *fmt, ...)
{
	char line[4096];
	va_list ap;
	int n;

	(void)level;
	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(line) - 1)
		n = sizeof(line) - 1;
	/* remember the helper's pid, which the plugin logs at start */
	if (sscanf(line, "drm_plugin: helper process %d ready", &helper_pid) == 1)
		;
	if (n > 0 && write(2, line, (size_t)n) < 0)
		return;
}

__attribute__((visibility("default"))) unsigned int log_get_loglevel(void)
{
	return 4;
}

__attribute__((visibility("default"))) int log_get_fd(void)
{
	return 2;
}

__attribute__((visibility("default"))) int criu_get_image_dir(void)
{
	return image_dir;
}

/* ---- the plugin ---- */

struct desc {
	const char *name;
	int (*init)(int stage);
	void (*exit)(int stage, int ret);
	unsigned int version;
	unsigned int max_hooks;
	void *hooks[];
};

enum { DUMP_UNIX_SK = 0, RESUME_DEVICES_LATE = 9, PAUSE_DEVICES = 10 };

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int threads(void)
{
	char line[256];
	int n = -1;
	FILE *f = fopen("/proc/self/status", "r");

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "Threads: %d", &n) == 1)
			break;
	if (f)
		fclose(f);
	return n;
}

/* Baseline: n round trips of 4 bytes with a child over a socketpair. */
static long long pingpong(long n)
{
	int sv[2], i;
	char b[4] = { 0 };
	long long t0;
	pid_t child;

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
		return -1;
	child = fork();
	if (child == 0) {
		close(sv[0]);
		while (read(sv[1], b, sizeof(b)) == sizeof(b))
			if (write(sv[1], b, sizeof(b)) != sizeof(b))
				break;
		_exit(0);
	}
	close(sv[1]);
	t0 = now_ns();
	for (i = 0; i < n; i++)
		if (write(sv[0], b, sizeof(b)) != sizeof(b) || read(sv[0], b, sizeof(b)) != sizeof(b))
			return -1;
	t0 = now_ns() - t0;
	close(sv[0]);
	waitpid(child, NULL, 0);
	return t0;
}

int main(int argc, char **argv)
{
	int (*pid_hook)(int);
	struct desc *d;
	void *h;
	int i;

	if (argc < 3) {
		fprintf(stderr, "usage: fakecriu PLUGIN.so IMAGES-DIR STEP...\n");
		return 2;
	}
	image_dir = open(argv[2], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (image_dir < 0) {
		perror(argv[2]);
		return 2;
	}
	h = dlopen(argv[1], RTLD_LAZY);
	if (!h || !(d = dlsym(h, "CR_PLUGIN_DESC"))) {
		fprintf(stderr, "load %s: %s\n", argv[1], dlerror());
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);

	for (i = 3; i < argc; i++) {
		const char *s = argv[i];
		long a = i + 1 < argc ? strtol(argv[i + 1], NULL, 0) : 0;
		long b = i + 2 < argc ? strtol(argv[i + 2], NULL, 0) : 0;

		if (!strcmp(s, "init")) {
			printf("init %ld: %d\n", a, d->init((int)a));
			i++;
		} else if (!strcmp(s, "exit")) {
			d->exit((int)a, (int)b);
			printf("exit %ld %ld: done\n", a, b);
			i += 2;
		} else if (!strcmp(s, "pause") || !strcmp(s, "resume")) {
			pid_hook = d->hooks[!strcmp(s, "pause") ? PAUSE_DEVICES : RESUME_DEVICES_LATE];
			printf("%s %ld: %d\n", s, a, pid_hook((int)a));
			i++;
		} else if (!strcmp(s, "dumpsk")) {
			int (*sk_hook)(int, int) = d->hooks[DUMP_UNIX_SK];

			printf("dumpsk %ld %ld: %d\n", a, b, sk_hook((int)a, (int)b));
			i += 2;
		} else if (!strcmp(s, "killhelper")) {
			printf("killhelper %d: %d\n", helper_pid, helper_pid > 0 ? kill(helper_pid, SIGKILL) : -1);
			usleep(100 * 1000);
		} else if (!strcmp(s, "threads")) {
			printf("threads: %d\n", threads());
		} else if (!strcmp(s, "bench") || !strcmp(s, "pingpong")) {
			long long t0 = now_ns(), ns;
			long k;

			if (!strcmp(s, "bench")) {
				pid_hook = d->hooks[RESUME_DEVICES_LATE];
				for (k = 0; k < a; k++)
					if (pid_hook(0) != -EOPNOTSUPP)
						break;
				ns = k == a ? now_ns() - t0 : -1;
			} else {
				ns = pingpong(a);
			}
			printf("%s %ld: %lld ns/op\n", s, a, ns < 0 ? -1 : ns / a);
			i++;
		} else {
			fprintf(stderr, "unknown step %s\n", s);
			return 2;
		}
	}
	return 0;
}
