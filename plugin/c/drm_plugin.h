/*
 * Internal interface of drm_plugin.so, the part of the DRM plugin that criu
 * loads. It is C only: the plugin's logic is Go and runs in a helper
 * process (helper.c starts it), because the Go runtime must not run in
 * criu's process (../../docs/architecture.md, "Where the code runs").
 */
#ifndef DRM_PLUGIN_H
#define DRM_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#include "criu_abi.h"

/* Stable plugin name: criu records it in the inventory at dump and refuses
 * to restore without a plugin of the same name. */
#define DRM_PLUGIN_NAME "drm_plugin"

/* Where the Go library lives, relative to the directory of drm_plugin.so.
 * Not a *.so directly in criu's plugin directory: criu would load it. */
#define DRM_CORE_SUBDIR "drm_plugin.d"
#define DRM_CORE_LIB "drm_plugin_core.so"
/* kernelsimd's runtime directory unless KERNELSIM_RUNTIME_DIR says
 * otherwise (kernelsim.DefaultRuntimeDir). */
#define DRM_DEFAULT_RUNTIME_DIR "/run/kernelsim"
/* The plugin's settings when criu's environment lacks them
 * (plugin.DefaultConfigFile); DRMCR_CONFIG names another file. */
#define DRM_DEFAULT_CONFIG "/etc/criu/drm_plugin.conf"
/* Every image the plugin writes is named drm-* (package images). */
#define DRM_IMAGE_PREFIX "drm-"

/* What the Go library exports: serve the channel on fd until it closes. */
#define DRM_CORE_ENTRY "drmcr_core_serve"

/* ---- criu's symbols and logging (log.c) ---- */

/* criu's current log level (or a default outside criu). */
unsigned int drm_log_level(void);
/* One line "drm_plugin: <msg>" at level, through criu's print_on_level.
 * msg need not be NUL-terminated. */
void drm_log_line(unsigned int level, const char *msg, size_t len);
void drm_log(unsigned int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* criu's log fd (log_get_fd()), or -1 outside criu. */
int drm_log_fd(void);
/* criu_get_image_dir(), or -1 outside criu. */
int drm_image_dir_fd(void);
/* Record in criu's inventory that restoring this dump needs the plugin.
 * 0 or -1 (criu is out of memory). */
int drm_inventory_add(void);
/* At restore: does criu's inventory list the plugin (taking it off the
 * list criu checks)? 1 yes (or images older than the list), 0 no, -1
 * criu cannot tell. */
int drm_inventory_take(void);

/* ---- the helper process (helper.c) ---- */

/* Start the helper and wait until it is ready. 0 or a negative errno
 * (logged). */
int drm_helper_start(void);
/* Is a helper running? */
int drm_helper_running(void);
/* Did a helper die or break the protocol? Then every hook fails. */
int drm_helper_lost(void);
/*
 * Send one request (type, payload, optional fds) and process the helper's
 * answer: log lines, restore entries, then the result, which is returned
 * (0, -ENOTSUP or a negative errno). If the helper is gone the call fails
 * with -EPIPE, logged.
 */
int drm_helper_call(uint32_t type, const void *payload, size_t len, const int *fds, int nfds);
/* Close the channel and wait (bounded) for the helper to exit. */
void drm_helper_stop(void);

/* ---- restore table (restore.c) ---- */

#define DRM_RESTORE_PATH_MAX 108 /* sizeof(sockaddr_un.sun_path) */

/* Values of drmcore.RestoreKind. */
enum drm_restore_kind {
	DRM_RESTORE_DRM_FILE = 1,
	DRM_RESTORE_DMA_BUF = 2,
	DRM_RESTORE_DRM_CHANNEL = 3, /* a reply channel of a drm file: restored as a drm file is */
};

/* Add one entry (copies path and req). 0 or a negative errno. */
int drm_restore_table_add(uint64_t ino, int kind, const char *path, size_t path_len, const void *req,
			  size_t req_len);
/* Make the table ready for lookups (after the last add). 0 or -EEXIST
 * when an inode is listed twice. */
int drm_restore_table_seal(void);
void drm_restore_table_free(void);

/* RESTORE_UNIX_SK: runs in a restored task; syscalls only. */
int drm_restore_unix_sk(int id);

#endif /* DRM_PLUGIN_H */
