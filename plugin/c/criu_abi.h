/*
 * Our own declarations of the CRIU plugin ABI, as criu 4.0 - 4.1.1 use it.
 * Written from the facts in criu's criu/include/criu-plugin.h and
 * criu/plugin.c (tag v4.1.1); no CRIU text is copied.
 *
 * How criu loads a plugin (criu/plugin.c):
 *  - dlopen()s every *.so in the plugin directory (--lib DIR, CRIU_LIBS_DIR,
 *    or /usr/lib/criu/) with RTLD_LAZY;
 *  - dlsym(h, "CR_PLUGIN_DESC") must find the descriptor object below (else
 *    criu falls back to the deprecated per-hook symbol names);
 *  - rejects the plugin as "corrupted" when desc.version is newer than its
 *    own plugin version or desc.max_hooks exceeds its own hook count;
 *  - calls desc.init(stage), then chains desc.hooks[i] for i < max_hooks;
 *  - at the end calls desc.exit(stage, ret) and dlclose()s the library.
 * A hook returns 0 (handled), -ENOTSUP (not mine: criu tries the next
 * plugin or does its default) or another negative errno (failure).
 */
#ifndef DRM_PLUGIN_CRIU_ABI_H
#define DRM_PLUGIN_CRIU_ABI_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

/* Plugin ABI version: (major << 16) | (minor << 8) | sublevel. criu 4.x
 * speaks 0.2.0; 0.1.0 is the legacy descriptor-less format. */
#define DRM_CRIU_PLUGIN_VERSION ((0u << 16) | (2u << 8) | 0u)

/* Hook ids: indexes into cr_plugin_desc.hooks. */
enum drm_criu_hook {
	DRM_CRIU_HOOK_DUMP_UNIX_SK = 0,	       /* int (int fd, int id) */
	DRM_CRIU_HOOK_RESTORE_UNIX_SK = 1,     /* int (int id) */
	DRM_CRIU_HOOK_DUMP_EXT_FILE = 2,       /* int (int fd, int id) */
	DRM_CRIU_HOOK_RESTORE_EXT_FILE = 3,    /* int (int id) */
	DRM_CRIU_HOOK_DUMP_EXT_MOUNT = 4,      /* int (char *mountpoint, int id) */
	DRM_CRIU_HOOK_RESTORE_EXT_MOUNT = 5,   /* int (int id, char *mountpoint, char *old_root, int *is_file) */
	DRM_CRIU_HOOK_DUMP_EXT_LINK = 6,       /* int (int index, int type, char *kind) */
	DRM_CRIU_HOOK_HANDLE_DEVICE_VMA = 7,   /* int (int fd, const struct stat *st) */
	DRM_CRIU_HOOK_UPDATE_VMA_MAP = 8,      /* int (const char *path, uint64_t addr, uint64_t old_pgoff,
						  uint64_t *new_pgoff, int *plugin_fd) */
	DRM_CRIU_HOOK_RESUME_DEVICES_LATE = 9, /* int (int pid) */
	DRM_CRIU_HOOK_PAUSE_DEVICES = 10,      /* int (int pid) */
	DRM_CRIU_HOOK_CHECKPOINT_DEVICES = 11, /* int (int pid); crashes criu 4.1.1 when registered: never use */

	/* criu 4.1.1 knows 12 hooks (0..11); 4.2 adds more. */
	DRM_CRIU_HOOK_COUNT_4_1 = 12,
};

/*
 * The hooks this plugin declares: 0 .. PAUSE_DEVICES. Keeping max_hooks at
 * 11 (below criu 4.0/4.1's 12) means criu never even reads a slot for
 * CHECKPOINT_DEVICES, and newer criu versions accept it too.
 */
#define DRM_PLUGIN_MAX_HOOKS (DRM_CRIU_HOOK_PAUSE_DEVICES + 1)

/* Stages passed to init and exit. */
enum drm_criu_stage {
	DRM_CRIU_STAGE_DUMP = 0,
	DRM_CRIU_STAGE_PRE_DUMP = 1,
	DRM_CRIU_STAGE_RESTORE = 2,
};

/* Hook signatures this plugin implements. */
typedef int drm_criu_dump_unix_sk_fn(int fd, int id); /* id: socket inode (u32) */
typedef int drm_criu_restore_unix_sk_fn(int id);      /* id: dump-time inode; returns the new fd */
typedef int drm_criu_pid_hook_fn(int pid);	      /* PAUSE_DEVICES, RESUME_DEVICES_LATE */

/*
 * The descriptor, found by criu under the symbol name CR_PLUGIN_DESC.
 * Layout: name, init, exit, version, max_hooks, hooks[]. criu reads only
 * hooks[0 .. max_hooks-1], so the array may be shorter than criu's own.
 */
struct drm_criu_plugin_desc {
	const char *name;
	int (*init)(int stage);
	void (*exit)(int stage, int ret);
	unsigned int version;
	unsigned int max_hooks;
	void *hooks[DRM_PLUGIN_MAX_HOOKS];
};

/*
 * Symbols the criu binary exports (criu is linked with --export-dynamic).
 * The plugin resolves them at run time with dlsym(RTLD_DEFAULT, ...) so the
 * library also loads into programs that are not criu.
 */
typedef int drm_criu_get_image_dir_fn(void);	/* criu_get_image_dir: fd of the images dir */
typedef void drm_criu_print_on_level_fn(unsigned int level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3))); /* print_on_level */
typedef unsigned int drm_criu_log_get_loglevel_fn(void); /* log_get_loglevel */
typedef int drm_criu_log_get_fd_fn(void);		  /* log_get_fd */
/* criu >= 4.0: the plugins a dump needs are listed in its inventory.
 * A plugin adds itself while dumping (add_inventory_plugin); at restore
 * init it takes itself off the list (check_and_remove_inventory_plugin,
 * true if it was listed or the images predate the list), and criu refuses
 * to restore when a listed plugin is left ("Missing required plugin"). */
typedef int drm_criu_add_inventory_plugin_fn(const char *name);
typedef _Bool drm_criu_check_and_remove_inventory_plugin_fn(const char *name, size_t n);

/* criu's log levels (criu/include/log.h); a message shows when its level
 * is <= criu's current level (-v0 .. -v4). */
enum drm_criu_log_level {
	DRM_CRIU_LOG_MSG = 0, /* always, to stdout */
	DRM_CRIU_LOG_ERROR = 1,
	DRM_CRIU_LOG_WARN = 2,
	DRM_CRIU_LOG_INFO = 3,
	DRM_CRIU_LOG_DEBUG = 4,
};

#endif /* DRM_PLUGIN_CRIU_ABI_H */
