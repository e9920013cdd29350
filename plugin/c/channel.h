/*
 * The channel between drm_plugin.so, in criu's process, and its helper
 * process, which runs the plugin's Go logic (package drmcr/plugin mirrors
 * every constant here; its tests check that they agree).
 *
 * A SOCK_STREAM socketpair carries frames:
 *
 *   u32 type, u32 len (little-endian), then len bytes of payload.
 *
 * File descriptors travel with SCM_RIGHTS on a frame's first bytes, at most
 * DRM_CH_MAX_FDS per frame. criu's side sends one request per hook and
 * reads frames until DRM_CH_RESULT: log lines (which it prints through
 * criu's own logging, so they land in criu's log in order, at criu's
 * verbosity, and errors become criu's reported error) and, for init at
 * restore, the restore table. Nothing else is ever in flight.
 */
#ifndef DRM_PLUGIN_CHANNEL_H
#define DRM_PLUGIN_CHANNEL_H

#include <stdint.h>

#define DRM_CH_VERSION 1
#define DRM_CH_HEADER_SIZE 8
#define DRM_CH_MAX_FDS 2
/* Sanity bound on one frame; the restore table is sent one entry per frame. */
#define DRM_CH_MAX_PAYLOAD (16u << 20)

enum drm_ch_type {
	/* helper -> criu */
	DRM_CH_HELLO = 1,	  /* u32 version, i32 rc (0: ready; <0: could not start) */
	DRM_CH_LOG = 2,		  /* u32 level, text (no newline) */
	DRM_CH_RESTORE_ENTRY = 3, /* u64 ino, u32 kind, u32 path_len, path, request */
	DRM_CH_RESULT = 4,	  /* i32 rc: 0, -ENOTSUP, or a negative errno */

	/* criu -> helper */
	DRM_CH_INIT = 16,		 /* u32 stage, u32 loglevel, then "NAME=value\0"...; fd: images dir */
	DRM_CH_PAUSE_DEVICES = 17,	 /* i32 pid */
	DRM_CH_DUMP_UNIX_SK = 18,	 /* u32 inode; fd: criu's copy of the socket */
	DRM_CH_RESUME_DEVICES_LATE = 19, /* i32 pid */
	DRM_CH_EXIT = 20,		 /* u32 stage, i32 ret */
};

/* Environment variables of criu's that init forwards to the helper: the
 * plugin's own settings. */
#define DRM_CH_ENV_PREFIX_1 "KERNELSIM_"
#define DRM_CH_ENV_PREFIX_2 "DRMCR_"

/* Little-endian fields of frames. */
static inline void drm_ch_put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static inline uint32_t drm_ch_get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t drm_ch_get64(const uint8_t *p)
{
	return (uint64_t)drm_ch_get32(p) | (uint64_t)drm_ch_get32(p + 4) << 32;
}

#endif /* DRM_PLUGIN_CHANNEL_H */
