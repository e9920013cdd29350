/*
 * Internal interface between the C part of drm_plugin.so (plugin.c,
 * restore.c) and its Go part (package main in this directory).
 */
#ifndef DRM_PLUGIN_GLUE_H
#define DRM_PLUGIN_GLUE_H

#include <stddef.h>
#include <stdint.h>

#include "criu_abi.h"

/* Stable plugin name: criu records it in the inventory at dump and refuses
 * to restore without a plugin of the same name. */
#define DRM_PLUGIN_NAME "drm_plugin"

/* ---- logging (plugin.c) ---- */

/* drm_log_enabled: would a message of this level show in criu's log? */
int drm_log_enabled(unsigned int level);
/* drm_log_line: one line "drm_plugin: <msg>\n" at level. msg need not be
 * NUL-terminated. Safe from any thread. */
void drm_log_line(unsigned int level, const char *msg, size_t len);
/* drm_image_dir_fd: criu_get_image_dir(), or -1 outside criu. */
int drm_image_dir_fd(void);
/* Is this library running inside criu (criu's symbols resolved)? */
int drm_in_criu(void);

/* print_on_level, or NULL outside criu (restore.c logs with it). */
extern drm_criu_print_on_level_fn *drm_print_on_level;

/* ---- restore table (restore.c) ---- */

#define DRM_RESTORE_PATH_MAX 108 /* sizeof(sockaddr_un.sun_path) */

/* Values of drmcore.RestoreKind. */
enum drm_restore_kind {
	DRM_RESTORE_DRM_FILE = 1,
	DRM_RESTORE_DMA_BUF = 2,
};

struct drm_restore_entry {
	uint64_t ino; /* dump-time inode: the id criu passes to RESTORE_UNIX_SK */
	int kind;     /* enum drm_restore_kind */
	char path[DRM_RESTORE_PATH_MAX];
	uint32_t path_len; /* bytes of path used (a leading NUL: abstract socket) */
	uint32_t req_len;
	uint8_t *req; /* malloc'd request packet */
};

/* Replace the table with n zeroed entries (n may be 0). 0 or -ENOMEM. */
int drm_restore_table_reset(size_t n);
/* Fill entry i (copies path and req). 0 or a negative errno. */
int drm_restore_table_set(size_t i, uint64_t ino, int kind, const char *path, size_t path_len, const void *req,
			  size_t req_len);
void drm_restore_table_free(void);
size_t drm_restore_table_len(void);

/* RESTORE_UNIX_SK: runs in a restored task; pure C, syscalls only. */
int drm_restore_unix_sk(int id);

#endif /* DRM_PLUGIN_GLUE_H */
