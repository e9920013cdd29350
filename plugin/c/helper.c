/*
 * The helper process: where the plugin's Go logic runs.
 *
 * criu must stay single-threaded (setns into mount and user namespaces
 * refuses multi-threaded callers, and a Go thread would take criu's
 * SIGCHLD), so the Go runtime never starts in criu's process. Instead, the
 * init hook starts a helper: criu forks a child that forks the helper and
 * exits at once, so the helper is an orphan that criu never waits for (a
 * restore treats any exiting child as a failure) and that a subreaper such
 * as runc reaps without caring. The helper drops everything it inherited
 * from criu (signal handlers, mask, session, files) and dlopen()s the Go
 * library, which serves the channel (channel.h) until criu closes it.
 *
 * If the helper dies, every later hook fails; kernelsimd resumes whatever
 * the helper had paused and aborts its restore session when the helper's
 * connection closes, so nothing stays paused.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "channel.h"
#include "drm_plugin.h"

/* How long criu waits for the helper to be ready, and to be gone after the
 * exit hook (it then holds none of criu's files). */
#define START_TIMEOUT_MS (30 * 1000)
#define EXIT_TIMEOUT_MS (10 * 1000)

static int ch_fd = -1;
static pid_t helper_pid = -1;
static int helper_lost;

/* One received frame; the buffer grows as needed (criu's main process only). */
static uint8_t *frame_buf;
static size_t frame_cap;

/* Send one frame. fds ride on its first bytes. 0 or a negative errno. */
static int send_frame(int fd, uint32_t type, const void *payload, size_t len, const int *fds, int nfds)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * DRM_CH_MAX_FDS)];
	} ctl;
	uint8_t hdr[DRM_CH_HEADER_SIZE];
	size_t off = 0, total = sizeof(hdr) + len;

	if (len > DRM_CH_MAX_PAYLOAD || nfds < 0 || nfds > DRM_CH_MAX_FDS)
		return -EINVAL;
	drm_ch_put32(hdr, type);
	drm_ch_put32(hdr + 4, (uint32_t)len);

	while (off < total) {
		struct iovec iov[2];
		struct msghdr msg;
		int niov = 0;
		ssize_t n;

		if (off < sizeof(hdr)) {
			iov[niov].iov_base = hdr + off;
			iov[niov++].iov_len = sizeof(hdr) - off;
		}
		if (len > 0) {
			size_t poff = off > sizeof(hdr) ? off - sizeof(hdr) : 0;

			iov[niov].iov_base = (uint8_t *)payload + poff;
			iov[niov++].iov_len = len - poff;
		}
		memset(&msg, 0, sizeof(msg));
		msg.msg_iov = iov;
		msg.msg_iovlen = niov;
		if (off == 0 && nfds > 0) {
			struct cmsghdr *c;

			memset(&ctl, 0, sizeof(ctl));
			msg.msg_control = ctl.buf;
			msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
			c = CMSG_FIRSTHDR(&msg);
			c->cmsg_level = SOL_SOCKET;
			c->cmsg_type = SCM_RIGHTS;
			c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
			memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
		}
		n = sendmsg(fd, &msg, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EPIPE;
		off += (size_t)n;
	}
	return 0;
}

/* Wait until fd is readable; 0, -ETIMEDOUT or a negative errno. */
static int wait_readable(int fd, int timeout_ms)
{
	struct pollfd pfd = { fd, POLLIN, 0 };
	int r;

	do
		r = poll(&pfd, 1, timeout_ms);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return -errno;
	return r == 0 ? -ETIMEDOUT : 0;
}

/* Read exactly len bytes; -EPIPE at the end of the stream. Any fd the
 * helper might send is dropped by the kernel (plain read). */
static int read_full(int fd, void *buf, size_t len)
{
	uint8_t *p = buf;

	while (len > 0) {
		ssize_t n = read(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EPIPE;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Receive one frame into frame_buf. timeout_ms < 0 waits forever. */
static int recv_frame(uint32_t *type, uint32_t *len, int timeout_ms)
{
	uint8_t hdr[DRM_CH_HEADER_SIZE];
	int rc;

	if (timeout_ms >= 0 && (rc = wait_readable(ch_fd, timeout_ms)) < 0)
		return rc;
	if ((rc = read_full(ch_fd, hdr, sizeof(hdr))) < 0)
		return rc;
	*type = drm_ch_get32(hdr);
	*len = drm_ch_get32(hdr + 4);
	if (*len > DRM_CH_MAX_PAYLOAD)
		return -EPROTO;
	if (*len + 1 > frame_cap) {
		uint8_t *b = realloc(frame_buf, *len + 1);

		if (!b)
			return -ENOMEM;
		frame_buf = b;
		frame_cap = *len + 1;
	}
	if ((rc = read_full(ch_fd, frame_buf, *len)) < 0)
		return rc;
	frame_buf[*len] = 0;
	return 0;
}

/* The helper is unusable: every later hook fails. */
static int lost(const char *what, int err)
{
	drm_log(DRM_CRIU_LOG_ERROR, "the plugin's helper process (pid %d) is gone (%s: %s); GPU state cannot be handled",
		(int)helper_pid, what, strerror(-err));
	if (ch_fd >= 0)
		close(ch_fd);
	ch_fd = -1;
	helper_lost = 1;
	return -EPIPE;
}

int drm_helper_running(void)
{
	return ch_fd >= 0;
}

int drm_helper_lost(void)
{
	return helper_lost;
}

/* ---- in the helper, before Go ---- */

static int move_high(int fd)
{
	return fd < 0 ? -1 : fcntl(fd, F_DUPFD_CLOEXEC, 64);
}

static void close_from(int first)
{
	long max;
	int fd;

#ifdef SYS_close_range
	if (syscall(SYS_close_range, (unsigned)first, ~0u, 0) == 0)
		return;
#endif
	max = sysconf(_SC_OPEN_MAX);
	if (max < 0 || max > 1 << 20)
		max = 1 << 20;
	for (fd = first; fd < max; fd++)
		close(fd);
}

__attribute__((format(printf, 2, 3))) static void fail_hello(int fd, const char *fmt, ...)
{
	char text[1024];
	uint8_t log[4 + sizeof(text)], hello[12];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(text))
		n = sizeof(text) - 1;
	drm_ch_put32(log, DRM_CRIU_LOG_ERROR);
	memcpy(log + 4, text, (size_t)n);
	send_frame(fd, DRM_CH_LOG, log, 4 + (size_t)n, NULL, 0);
	drm_ch_put32(hello, DRM_CH_VERSION);
	drm_ch_put32(hello + 4, (uint32_t)-ELIBACC);
	drm_ch_put32(hello + 8, (uint32_t)getpid());
	send_frame(fd, DRM_CH_HELLO, hello, sizeof(hello), NULL, 0);
}

/* The helper process: a clean slate, then the Go library. */
__attribute__((noreturn)) static void helper_main(int ch, const char *core)
{
	sigset_t none;
	int (*serve)(int);
	int sig, logfd, in[2];
	void *h;

	setsid(); /* no terminal signals: criu's exit is seen as the channel's end */
	prctl(PR_SET_NAME, DRM_PLUGIN_NAME, 0, 0, 0);
	for (sig = 1; sig < NSIG; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			signal(sig, SIG_DFL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);

	/* 0: a pipe without a writer (reads see the end); 1 and 2: criu's
	 * log, where a crash of the Go runtime would print; 3: the channel.
	 * Nothing else of criu's stays open. No device is opened: when runc
	 * restores, criu already runs in the container's cgroup, whose device
	 * rules may refuse even /dev/null. */
	ch = move_high(ch);
	logfd = move_high(drm_log_fd());
	if (ch < 0 || pipe2(in, O_CLOEXEC) < 0)
		_exit(1);
	if (logfd < 0 && (logfd = open("/dev/null", O_WRONLY | O_CLOEXEC)) < 0)
		_exit(1);
	dup2(in[0], 0);
	dup2(logfd, 1);
	dup2(logfd, 2);
	dup2(ch, 3);
	close_from(4);
	if (chdir("/") < 0)
		_exit(1);

	h = dlopen(core, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		fail_hello(3, "cannot load the plugin's Go library: %s", dlerror());
		_exit(1);
	}
	serve = (int (*)(int))dlsym(h, DRM_CORE_ENTRY);
	if (!serve) {
		fail_hello(3, "%s has no %s", core, DRM_CORE_ENTRY);
		_exit(1);
	}
	_exit(serve(3) == 0 ? 0 : 1);
}

/* ---- in criu ---- */

/* The Go library: DRM_CORE_SUBDIR/DRM_CORE_LIB next to this library. */
static int core_path(char *buf, size_t len)
{
	char self[PATH_MAX];
	Dl_info info;
	char *slash;

	if (!dladdr((void *)core_path, &info) || !info.dli_fname) {
		drm_log(DRM_CRIU_LOG_ERROR, "cannot find the path of drm_plugin.so");
		return -ENOENT;
	}
	if (!realpath(info.dli_fname, self)) {
		drm_log(DRM_CRIU_LOG_ERROR, "cannot resolve %s: %s", info.dli_fname, strerror(errno));
		return -errno;
	}
	slash = strrchr(self, '/');
	if (slash)
		*slash = 0;
	if ((size_t)snprintf(buf, len, "%s/%s/%s", slash ? self : ".", DRM_CORE_SUBDIR, DRM_CORE_LIB) >= len)
		return -ENAMETOOLONG;
	return 0;
}

/* Wait for the helper's hello: it loaded the Go library and serves. */
static int wait_hello(void)
{
	for (;;) {
		uint32_t type, len;
		int rc = recv_frame(&type, &len, START_TIMEOUT_MS);

		if (rc < 0)
			return lost("start", rc);
		if (type == DRM_CH_LOG && len >= 4) {
			drm_log_line(drm_ch_get32(frame_buf), (const char *)frame_buf + 4, len - 4);
			continue;
		}
		if (type != DRM_CH_HELLO || len < 12)
			return lost("start", -EPROTO);
		helper_pid = (pid_t)drm_ch_get32(frame_buf + 8);
		if (drm_ch_get32(frame_buf) != DRM_CH_VERSION) {
			drm_log(DRM_CRIU_LOG_ERROR, "the plugin's Go library speaks channel version %u, drm_plugin.so %u: install both from one build",
				drm_ch_get32(frame_buf), DRM_CH_VERSION);
			return lost("start", -EPROTO);
		}
		rc = (int32_t)drm_ch_get32(frame_buf + 4);
		if (rc < 0) {
			lost("start", rc);
			return rc;
		}
		drm_log(DRM_CRIU_LOG_DEBUG, "helper process %d ready", (int)helper_pid);
		return 0;
	}
}

int drm_helper_start(void)
{
	char core[PATH_MAX];
	int sv[2], status, rc;
	pid_t mid;

	if ((rc = core_path(core, sizeof(core))) < 0)
		return rc;
	if (access(core, R_OK) < 0) {
		rc = -errno;
		drm_log(DRM_CRIU_LOG_ERROR, "cannot read the plugin's Go library %s (%s): install it with drm_plugin.so",
			core, strerror(errno));
		return rc;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		rc = -errno;
		drm_log(DRM_CRIU_LOG_ERROR, "socketpair: %s", strerror(errno));
		return rc;
	}
	mid = fork();
	if (mid < 0) {
		rc = -errno;
		drm_log(DRM_CRIU_LOG_ERROR, "fork: %s", strerror(errno));
		close(sv[0]);
		close(sv[1]);
		return rc;
	}
	if (mid == 0) {
		pid_t helper;

		close(sv[0]);
		helper = fork();
		if (helper == 0)
			helper_main(sv[1], core);
		_exit(helper < 0 ? 1 : 0);
	}
	close(sv[1]);
	/* Reap the middle child now; ECHILD if a handler of criu's got it. */
	while (waitpid(mid, &status, 0) < 0 && errno == EINTR)
		;
	ch_fd = sv[0];
	helper_lost = 0;
	return wait_hello();
}

int drm_helper_call(uint32_t type, const void *payload, size_t len, const int *fds, int nfds)
{
	int rc, entry_err = 0;

	if (ch_fd < 0)
		return -EPIPE;
	if ((rc = send_frame(ch_fd, type, payload, len, fds, nfds)) < 0)
		return lost("send", rc);
	for (;;) {
		uint32_t ftype, flen;

		if ((rc = recv_frame(&ftype, &flen, -1)) < 0)
			return lost("receive", rc);
		switch (ftype) {
		case DRM_CH_LOG:
			if (flen < 4)
				return lost("log frame", -EPROTO);
			drm_log_line(drm_ch_get32(frame_buf), (const char *)frame_buf + 4, flen - 4);
			break;
		case DRM_CH_RESTORE_ENTRY: {
			uint32_t path_len;

			if (flen < 16 || (path_len = drm_ch_get32(frame_buf + 12)) > flen - 16)
				return lost("restore entry", -EPROTO);
			rc = drm_restore_table_add(drm_ch_get64(frame_buf), (int)drm_ch_get32(frame_buf + 8),
						   (const char *)frame_buf + 16, path_len, frame_buf + 16 + path_len,
						   flen - 16 - path_len);
			if (rc < 0 && !entry_err) {
				drm_log(DRM_CRIU_LOG_ERROR, "restore entry for inode %llu: %s",
					(unsigned long long)drm_ch_get64(frame_buf), strerror(-rc));
				entry_err = rc;
			}
			break;
		}
		case DRM_CH_RESULT:
			if (flen < 4)
				return lost("result frame", -EPROTO);
			rc = (int32_t)drm_ch_get32(frame_buf);
			return rc < 0 ? rc : entry_err;
		default:
			return lost("unknown frame", -EPROTO);
		}
	}
}

void drm_helper_stop(void)
{
	uint8_t drain[256];
	int rc;

	if (ch_fd < 0)
		return;
	/* The helper exits when it sees the channel end; its exit closes
	 * its end, and only then has it let go of criu's files. */
	shutdown(ch_fd, SHUT_WR);
	for (;;) {
		ssize_t n;

		if ((rc = wait_readable(ch_fd, EXIT_TIMEOUT_MS)) < 0) {
			drm_log(DRM_CRIU_LOG_WARN, "helper process %d did not exit in %d ms (%s): killing it",
				(int)helper_pid, EXIT_TIMEOUT_MS, strerror(-rc));
			if (helper_pid > 0)
				kill(helper_pid, SIGKILL);
			break;
		}
		n = read(ch_fd, drain, sizeof(drain));
		if (n == 0 || (n < 0 && errno != EINTR))
			break;
	}
	close(ch_fd);
	ch_fd = -1;
	helper_pid = -1;
	free(frame_buf);
	frame_buf = NULL;
	frame_cap = 0;
}
