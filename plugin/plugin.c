/*
 * C side of drm_plugin.so: the descriptor criu looks up, trampolines into
 * the Go hooks, and logging into criu's log.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "glue.h"

/* Go exports (main.go). */
extern int drmGoInit(int stage);
extern void drmGoExit(int stage, int ret);
extern int drmGoPauseDevices(int pid);
extern int drmGoDumpUnixSk(int fd, int id);
extern int drmGoResumeDevicesLate(int pid);

/* ---- criu symbols, resolved when the library is loaded ---- */

drm_criu_print_on_level_fn *drm_print_on_level;
static drm_criu_log_get_loglevel_fn *criu_log_get_loglevel;
static drm_criu_log_get_fd_fn *criu_log_get_fd;
static drm_criu_get_image_dir_fn *criu_get_image_dir_fn;
static void (*criu_log_get_logstart)(struct timeval *);

/* The thread and process that loaded us: criu's main thread. */
static pid_t main_tid;
static pid_t main_pid;

__attribute__((constructor)) static void drm_plugin_resolve(void)
{
	drm_print_on_level = (drm_criu_print_on_level_fn *)dlsym(RTLD_DEFAULT, "print_on_level");
	criu_log_get_loglevel = (drm_criu_log_get_loglevel_fn *)dlsym(RTLD_DEFAULT, "log_get_loglevel");
	criu_log_get_fd = (drm_criu_log_get_fd_fn *)dlsym(RTLD_DEFAULT, "log_get_fd");
	criu_get_image_dir_fn = (drm_criu_get_image_dir_fn *)dlsym(RTLD_DEFAULT, "criu_get_image_dir");
	criu_log_get_logstart = (void (*)(struct timeval *))dlsym(RTLD_DEFAULT, "log_get_logstart");
	main_tid = gettid();
	main_pid = getpid();
}

int drm_in_criu(void)
{
	return drm_print_on_level != NULL && criu_log_get_loglevel != NULL;
}

int drm_image_dir_fd(void)
{
	return criu_get_image_dir_fn ? criu_get_image_dir_fn() : -1;
}

/* ---- logging ---- */

/* Outside criu (a test program loading the library): info and above. */
#define FALLBACK_LOGLEVEL DRM_CRIU_LOG_INFO

int drm_log_enabled(unsigned int level)
{
	unsigned int cur = criu_log_get_loglevel ? criu_log_get_loglevel() : FALLBACK_LOGLEVEL;

	return level <= cur;
}

static void write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		buf += n;
		len -= (size_t)n;
	}
}

void drm_log_line(unsigned int level, const char *msg, size_t len)
{
	char line[4096];
	size_t off = 0;
	int fd, saved_errno = errno;

	if (len > (size_t)INT32_MAX)
		len = INT32_MAX;
	if (!drm_log_enabled(level))
		return;

	/*
	 * criu's print_on_level formats into one static buffer: it is safe on
	 * criu's main thread and in the single-threaded tasks criu forks, not
	 * from other threads (Go goroutines). Those write the line themselves,
	 * with one write() so it does not interleave with criu's own lines.
	 */
	if (drm_print_on_level && (gettid() == main_tid || getpid() != main_pid)) {
		drm_print_on_level(level, "drm_plugin: %.*s\n", (int)len, msg);
		errno = saved_errno;
		return;
	}

	fd = criu_log_get_fd ? criu_log_get_fd() : STDERR_FILENO;
	if (criu_log_get_logstart) {
		struct timeval start, now;

		criu_log_get_logstart(&start);
		if (start.tv_sec || start.tv_usec) { /* criu prints timestamps */
			gettimeofday(&now, NULL);
			timersub(&now, &start, &now);
			off = (size_t)snprintf(line, sizeof(line), "(%02u.%06u) ", (unsigned)now.tv_sec,
					       (unsigned)now.tv_usec);
		}
	}
	off += (size_t)snprintf(line + off, sizeof(line) - off, "drm_plugin: %.*s", (int)len, msg);
	if (off > sizeof(line) - 2)
		off = sizeof(line) - 2;
	line[off++] = '\n';
	write_all(fd, line, off);
	errno = saved_errno;
}

/* ---- hooks ---- */

static int drm_plugin_init(int stage)
{
	return drmGoInit(stage);
}

static void drm_plugin_exit(int stage, int ret)
{
	drmGoExit(stage, ret);
}

static int drm_plugin_dump_unix_sk(int fd, int id)
{
	return drmGoDumpUnixSk(fd, id);
}

static int drm_plugin_pause_devices(int pid)
{
	return drmGoPauseDevices(pid);
}

static int drm_plugin_resume_devices_late(int pid)
{
	return drmGoResumeDevicesLate(pid);
}

/* Compile-time checks of the hooks against the ABI signatures. */
__attribute__((unused)) static drm_criu_dump_unix_sk_fn *const check_dump_unix_sk = drm_plugin_dump_unix_sk;
__attribute__((unused)) static drm_criu_restore_unix_sk_fn *const check_restore_unix_sk = drm_restore_unix_sk;
__attribute__((unused)) static drm_criu_pid_hook_fn *const check_pause_devices = drm_plugin_pause_devices;
__attribute__((unused)) static drm_criu_pid_hook_fn *const check_resume_devices_late = drm_plugin_resume_devices_late;

/*
 * The descriptor. Its symbol name is what criu dlsym()s; it must stay
 * global and exported.
 */
__attribute__((visibility("default"))) struct drm_criu_plugin_desc CR_PLUGIN_DESC = {
	.name = DRM_PLUGIN_NAME,
	.init = drm_plugin_init,
	.exit = drm_plugin_exit,
	.version = DRM_CRIU_PLUGIN_VERSION,
	.max_hooks = DRM_PLUGIN_MAX_HOOKS,
	.hooks = {
		[DRM_CRIU_HOOK_DUMP_UNIX_SK] = (void *)drm_plugin_dump_unix_sk,
		[DRM_CRIU_HOOK_RESTORE_UNIX_SK] = (void *)drm_restore_unix_sk,
		[DRM_CRIU_HOOK_RESUME_DEVICES_LATE] = (void *)drm_plugin_resume_devices_late,
		[DRM_CRIU_HOOK_PAUSE_DEVICES] = (void *)drm_plugin_pause_devices,
	},
};

_Static_assert(DRM_PLUGIN_MAX_HOOKS <= DRM_CRIU_HOOK_COUNT_4_1, "more hooks than criu 4.1 knows");
_Static_assert(DRM_PLUGIN_MAX_HOOKS <= DRM_CRIU_HOOK_CHECKPOINT_DEVICES, "CHECKPOINT_DEVICES must stay out");
