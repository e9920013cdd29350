/*
 * criu's exported symbols, resolved when the library is loaded, and
 * logging into criu's log through criu's own print_on_level: lines land in
 * order with criu's, at criu's verbosity and with its timestamps, and an
 * error line becomes the error criu reports (swrk callers such as runc show
 * it). criu's symbols are resolved at load time, so the library also loads
 * into programs that are not criu (tests); there it writes to stderr.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "drm_plugin.h"

static drm_criu_print_on_level_fn *print_on_level_fn;
static drm_criu_log_get_loglevel_fn *log_get_loglevel_fn;
static drm_criu_log_get_fd_fn *log_get_fd_fn;
static drm_criu_get_image_dir_fn *get_image_dir_fn;
static drm_criu_add_inventory_plugin_fn *add_inventory_plugin_fn;
static drm_criu_check_and_remove_inventory_plugin_fn *check_and_remove_inventory_plugin_fn;

/* Outside criu: info and above. */
#define FALLBACK_LOGLEVEL DRM_CRIU_LOG_INFO

__attribute__((constructor)) static void resolve_criu_symbols(void)
{
	print_on_level_fn = (drm_criu_print_on_level_fn *)dlsym(RTLD_DEFAULT, "print_on_level");
	log_get_loglevel_fn = (drm_criu_log_get_loglevel_fn *)dlsym(RTLD_DEFAULT, "log_get_loglevel");
	log_get_fd_fn = (drm_criu_log_get_fd_fn *)dlsym(RTLD_DEFAULT, "log_get_fd");
	get_image_dir_fn = (drm_criu_get_image_dir_fn *)dlsym(RTLD_DEFAULT, "criu_get_image_dir");
	add_inventory_plugin_fn = (drm_criu_add_inventory_plugin_fn *)dlsym(RTLD_DEFAULT, "add_inventory_plugin");
	check_and_remove_inventory_plugin_fn = (drm_criu_check_and_remove_inventory_plugin_fn *)dlsym(
		RTLD_DEFAULT, "check_and_remove_inventory_plugin");
}

int drm_inventory_add(void)
{
	return add_inventory_plugin_fn ? add_inventory_plugin_fn(DRM_PLUGIN_NAME) : 0;
}

int drm_inventory_take(void)
{
	if (!check_and_remove_inventory_plugin_fn)
		return -1;
	return check_and_remove_inventory_plugin_fn(DRM_PLUGIN_NAME, sizeof(DRM_PLUGIN_NAME));
}

unsigned int drm_log_level(void)
{
	return log_get_loglevel_fn ? log_get_loglevel_fn() : FALLBACK_LOGLEVEL;
}

int drm_log_fd(void)
{
	return log_get_fd_fn ? log_get_fd_fn() : -1;
}

int drm_image_dir_fd(void)
{
	return get_image_dir_fn ? get_image_dir_fn() : -1;
}

void drm_log_line(unsigned int level, const char *msg, size_t len)
{
	int saved_errno = errno;

	if (len > 64 * 1024)
		len = 64 * 1024;
	if (print_on_level_fn) {
		print_on_level_fn(level, "drm_plugin: %.*s\n", (int)len, msg);
	} else if (level <= FALLBACK_LOGLEVEL) {
		char line[4096];
		int n = snprintf(line, sizeof(line), "drm_plugin: %.*s\n", (int)len, msg);

		if (n > (int)sizeof(line))
			n = sizeof(line);
		if (n > 0 && write(STDERR_FILENO, line, (size_t)n) < 0) {
			/* nowhere left to report it */
		}
	}
	errno = saved_errno;
}

void drm_log(unsigned int level, const char *fmt, ...)
{
	/* Static: the tasks criu forks have small stacks, and each process
	 * logging here is single-threaded. */
	static char buf[1024];
	va_list ap;
	int n;

	if (level > drm_log_level())
		return;
	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(buf))
		n = sizeof(buf) - 1;
	drm_log_line(level, buf, (size_t)n);
}
