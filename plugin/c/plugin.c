/*
 * drm_plugin.so: the descriptor criu looks up and the hooks, each forwarded
 * to the helper process that runs the plugin's Go logic (helper.c).
 *
 * When there can be no GPU state (no kernelsimd at dump, no DRM images at
 * restore) no helper starts and every hook answers -ENOTSUP: criu then
 * behaves exactly as without the plugin, and the next plugin in criu's
 * chain (say, CRIU's amdgpu plugin on a real GPU host) still gets each hook.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "channel.h"
#include "drm_plugin.h"

extern char **environ;

static int cur_stage = -1;
static int in_inventory; /* listed in criu's inventory as needed to restore */

static const char *stage_name(int stage)
{
	switch (stage) {
	case DRM_CRIU_STAGE_DUMP:
		return "dump";
	case DRM_CRIU_STAGE_PRE_DUMP:
		return "pre-dump";
	case DRM_CRIU_STAGE_RESTORE:
		return "restore";
	}
	return "unknown";
}

/*
 * A setting from the plugin's config file (DRMCR_CONFIG, or
 * DRM_DEFAULT_CONFIG): "NAME = value" lines. The helper reads the whole
 * file (package plugin) and refuses what it does not know; here only the
 * runtime dir matters, to tell whether a helper is needed at all.
 */
static const char *config_setting(const char *name, char *buf, size_t len)
{
	const char *path = getenv("DRMCR_CONFIG");
	char line[4096];
	FILE *f;

	if (!path || !*path)
		path = DRM_DEFAULT_CONFIG;
	if (!(f = fopen(path, "re")))
		return NULL;
	while (fgets(line, sizeof(line), f)) {
		char *p = line, *end;

		while (*p == ' ' || *p == '\t')
			p++;
		if (strncmp(p, name, strlen(name)))
			continue;
		p += strlen(name);
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p++ != '=')
			continue;
		while (*p == ' ' || *p == '\t')
			p++;
		end = p + strlen(p);
		while (end > p && (end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
			*--end = 0;
		if ((size_t)snprintf(buf, len, "%s", p) < len) {
			fclose(f);
			return buf;
		}
	}
	fclose(f);
	return NULL;
}

/* Is kernelsimd serving (its control socket exists)? */
static int daemon_present(void)
{
	const char *dir = getenv("KERNELSIM_RUNTIME_DIR");
	char path[4096], conf[4096];
	struct stat st;

	if (!dir || !*dir)
		dir = config_setting("KERNELSIM_RUNTIME_DIR", conf, sizeof(conf));
	if (!dir || !*dir)
		dir = DRM_DEFAULT_RUNTIME_DIR;
	if ((size_t)snprintf(path, sizeof(path), "%s/control", dir) >= sizeof(path))
		return 1; /* let the helper say what is wrong */
	if (stat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		return 1;
	drm_log(DRM_CRIU_LOG_INFO, "no kernelsimd at %s: no GPU state to handle", dir);
	return 0;
}

/* Does the images directory hold any of the plugin's images? */
static int has_drm_images(int dirfd)
{
	struct dirent *de;
	int fd, found = 0;
	DIR *d;

	if (dirfd < 0)
		return 0;
	fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || !(d = fdopendir(fd))) {
		if (fd >= 0)
			close(fd);
		return 1; /* cannot tell: let the helper look */
	}
	while (!found && (de = readdir(d)))
		found = strncmp(de->d_name, DRM_IMAGE_PREFIX, strlen(DRM_IMAGE_PREFIX)) == 0;
	closedir(d);
	if (!found)
		drm_log(DRM_CRIU_LOG_INFO, "checkpoint has no GPU state");
	return found;
}

/* INIT's payload: u32 stage, u32 loglevel, then criu's variables that
 * configure the plugin, as "NAME=value\0" strings. */
static uint8_t *init_payload(int stage, size_t *lenp)
{
	size_t len = 8, off;
	uint8_t *p;
	char **e;

	for (e = environ; e && *e; e++)
		if (!strncmp(*e, DRM_CH_ENV_PREFIX_1, strlen(DRM_CH_ENV_PREFIX_1)) ||
		    !strncmp(*e, DRM_CH_ENV_PREFIX_2, strlen(DRM_CH_ENV_PREFIX_2)))
			len += strlen(*e) + 1;
	if (len > DRM_CH_MAX_PAYLOAD || !(p = malloc(len)))
		return NULL;
	drm_ch_put32(p, (uint32_t)stage);
	drm_ch_put32(p + 4, drm_log_level());
	off = 8;
	for (e = environ; e && *e; e++)
		if (!strncmp(*e, DRM_CH_ENV_PREFIX_1, strlen(DRM_CH_ENV_PREFIX_1)) ||
		    !strncmp(*e, DRM_CH_ENV_PREFIX_2, strlen(DRM_CH_ENV_PREFIX_2))) {
			size_t n = strlen(*e) + 1;

			memcpy(p + off, *e, n);
			off += n;
		}
	*lenp = len;
	return p;
}

/* ---- hooks ---- */

static int drm_plugin_init(int stage)
{
	int dirfd = drm_image_dir_fd(), need, rc;
	uint8_t *payload;
	size_t len;

	drm_log(DRM_CRIU_LOG_INFO, "init(%s)", stage_name(stage));
	drm_restore_table_free();
	cur_stage = stage;
	in_inventory = 0;
	if (stage == DRM_CRIU_STAGE_RESTORE) {
		/* Always ask: it takes us off the list of plugins criu checks. */
		need = drm_inventory_take() == 1;
		need = has_drm_images(dirfd) || need;
	} else {
		need = daemon_present();
	}
	if (!need)
		return 0;

	if ((rc = drm_helper_start()) < 0)
		return rc;
	if (!(payload = init_payload(stage, &len))) {
		drm_log(DRM_CRIU_LOG_ERROR, "init(%s): out of memory", stage_name(stage));
		drm_helper_stop();
		return -ENOMEM;
	}
	rc = drm_helper_call(DRM_CH_INIT, payload, len, &dirfd, dirfd >= 0 ? 1 : 0);
	free(payload);
	if (rc == 0 && stage == DRM_CRIU_STAGE_RESTORE)
		rc = drm_restore_table_seal();
	if (rc < 0) {
		drm_log(DRM_CRIU_LOG_ERROR, "init(%s) failed: %s", stage_name(stage), strerror(-rc));
		drm_helper_stop();
		drm_restore_table_free();
		return rc;
	}
	return 0;
}

static void drm_plugin_exit(int stage, int ret)
{
	uint8_t p[8];

	if (drm_helper_running()) {
		drm_ch_put32(p, (uint32_t)stage);
		drm_ch_put32(p + 4, (uint32_t)ret);
		drm_helper_call(DRM_CH_EXIT, p, sizeof(p), NULL, 0);
		drm_helper_stop();
	}
	drm_restore_table_free();
	drm_log(DRM_CRIU_LOG_INFO, "exit(%s, %d)", stage_name(stage), ret);
}

/* A hook for one pid or inode: -ENOTSUP without a helper, unless the helper
 * was lost, which fails it. */
static int forward(uint32_t type, uint32_t arg, int fd)
{
	uint8_t p[4];
	int rc;

	if (!drm_helper_running())
		return drm_helper_lost() ? -EPIPE : -ENOTSUP;
	drm_ch_put32(p, arg);
	rc = drm_helper_call(type, p, sizeof(p), &fd, fd >= 0 ? 1 : 0);
	/* A task or socket was ours: the dump holds GPU state, which only
	 * this plugin can restore. */
	if (rc == 0 && cur_stage == DRM_CRIU_STAGE_DUMP && !in_inventory &&
	    (type == DRM_CH_PAUSE_DEVICES || type == DRM_CH_DUMP_UNIX_SK)) {
		if (drm_inventory_add() < 0) {
			drm_log(DRM_CRIU_LOG_ERROR, "cannot record the plugin in criu's inventory");
			return -ENOMEM;
		}
		in_inventory = 1;
	}
	return rc;
}

static int drm_plugin_pause_devices(int pid)
{
	return forward(DRM_CH_PAUSE_DEVICES, (uint32_t)pid, -1);
}

static int drm_plugin_dump_unix_sk(int fd, int id)
{
	/* id: the socket's inode, a u32 that criu passes as an int */
	return forward(DRM_CH_DUMP_UNIX_SK, (uint32_t)id, fd);
}

/*
 * criu 4.x ignores this hook's result, so a restore that cannot go on must
 * kill the task: criu then fails to detach from it and fails the restore
 * before any task runs (the Go side does the same on damaged contents).
 * Here that is the helper lost during a restore: the GPU state of the
 * restore was never checked to be complete.
 */
static int drm_plugin_resume_devices_late(int pid)
{
	int rc = forward(DRM_CH_RESUME_DEVICES_LATE, (uint32_t)pid, -1);

	if (rc < 0 && cur_stage == DRM_CRIU_STAGE_RESTORE && drm_helper_lost()) {
		if (kill(pid, SIGKILL) == 0)
			drm_log(DRM_CRIU_LOG_ERROR,
				"RESUME_DEVICES_LATE(pid %d): the GPU state was not checked: killed pid %d so that criu fails the restore before any task resumes",
				pid, pid);
		else
			drm_log(DRM_CRIU_LOG_ERROR, "RESUME_DEVICES_LATE(pid %d): killing the task to fail the restore: errno %d",
				pid, errno);
	}
	return rc;
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
