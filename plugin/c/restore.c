/*
 * RESTORE_UNIX_SK.
 *
 * criu calls this hook inside a restored task that it forked. It only
 * makes syscalls, working from the table that the init hook received from
 * the helper before criu forked (fork copied it); nothing opened before the
 * fork is open here (criu closed it). No malloc and no stdio: criu clones
 * restored tasks without glibc's fork handlers.
 *
 * For the inode criu asks for: connect a SOCK_SEQPACKET socket to the
 * entry's path (as the task sees it: inside a container, its bind mount of
 * kernelsimd's runtime dir), send its request, read one reply, check its
 * header (kernelsim/uapi: u32 magic "KSIM" at 0, u16 version at 4, u32 seq
 * at 8, i32 status at 12), and return
 *   DRM_FILE, DRM_CHANNEL: the connected socket itself;
 *   DMA_BUF:  the one fd the reply carried (SCM_RIGHTS); the socket is closed.
 * A refusal is logged with the daemon's reason.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "drm_plugin.h"

#define KSIM_MAGIC 0x4d49534bu
#define KSIM_VERSION 1u
#define KSIM_HEADER_SIZE 16
#define REPLY_BUF_SIZE (64 * 1024)
/* How long a restored task waits for the daemon's reply. Generous: the
 * daemon may be recreating shared buffers for other tasks first. */
#define REPLY_TIMEOUT_MS (60 * 1000)
/* connect retries on EINTR/EAGAIN: 200 x 5 ms. */
#define CONNECT_TRIES 200
#define CONNECT_RETRY_NS (5 * 1000 * 1000)

struct drm_restore_entry {
	uint64_t ino; /* dump-time inode: the id criu passes to RESTORE_UNIX_SK */
	int kind;     /* enum drm_restore_kind */
	char path[DRM_RESTORE_PATH_MAX];
	uint32_t path_len; /* bytes of path used (a leading NUL: abstract socket) */
	uint32_t req_len;
	uint8_t *req; /* malloc'd request packet */
};

/* Sorted by inode once sealed. */
static struct drm_restore_entry *table;
static size_t table_len, table_cap;

/* Per-process buffers: a restored task is single-threaded while criu
 * restores its files, and the stack of criu's clone()d tasks is not the
 * place for 64 KiB. */
static uint8_t reply_buf[REPLY_BUF_SIZE];

/* ---- table, filled in criu's main process ---- */

void drm_restore_table_free(void)
{
	size_t i;

	for (i = 0; i < table_len; i++)
		free(table[i].req);
	free(table);
	table = NULL;
	table_len = table_cap = 0;
}

int drm_restore_table_add(uint64_t ino, int kind, const char *path, size_t path_len, const void *req,
			  size_t req_len)
{
	struct drm_restore_entry *e;

	if (ino == 0 || ino > UINT32_MAX)
		return -EINVAL; /* criu names sockets by a u32 inode */
	if (kind != DRM_RESTORE_DRM_FILE && kind != DRM_RESTORE_DMA_BUF && kind != DRM_RESTORE_DRM_CHANNEL)
		return -EINVAL;
	/* a pathname socket needs its NUL; an abstract one (leading NUL) may
	 * use all of sun_path */
	if (path_len == 0 || path_len > DRM_RESTORE_PATH_MAX ||
	    (path[0] != '\0' && path_len >= DRM_RESTORE_PATH_MAX))
		return -ENAMETOOLONG;
	if (req_len < KSIM_HEADER_SIZE || req_len > UINT32_MAX)
		return -EINVAL;

	if (table_len == table_cap) {
		size_t cap = table_cap ? 2 * table_cap : 64;
		struct drm_restore_entry *t = realloc(table, cap * sizeof(*t));

		if (!t)
			return -ENOMEM;
		table = t;
		table_cap = cap;
	}
	e = &table[table_len];
	memset(e, 0, sizeof(*e));
	e->req = malloc(req_len);
	if (!e->req)
		return -ENOMEM;
	memcpy(e->req, req, req_len);
	e->req_len = (uint32_t)req_len;
	memcpy(e->path, path, path_len);
	e->path_len = (uint32_t)path_len;
	e->ino = ino;
	e->kind = kind;
	table_len++;
	return 0;
}

static int cmp_ino(const void *a, const void *b)
{
	uint64_t x = ((const struct drm_restore_entry *)a)->ino, y = ((const struct drm_restore_entry *)b)->ino;

	return x < y ? -1 : x > y;
}

int drm_restore_table_seal(void)
{
	size_t i;

	qsort(table, table_len, sizeof(*table), cmp_ino);
	for (i = 1; i < table_len; i++)
		if (table[i].ino == table[i - 1].ino) {
			drm_log(DRM_CRIU_LOG_ERROR, "restore table lists inode %llu twice",
				(unsigned long long)table[i].ino);
			return -EEXIST;
		}
	drm_log(DRM_CRIU_LOG_DEBUG, "restore table: %zu socket(s)", table_len);
	return 0;
}

/* ---- the hook, in a restored task ---- */

static const struct drm_restore_entry *lookup(uint32_t ino)
{
	struct drm_restore_entry key;

	if (!table_len)
		return NULL;
	key.ino = ino;
	return bsearch(&key, table, table_len, sizeof(*table), cmp_ino);
}

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint16_t get_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static void close_keep_errno(int fd)
{
	int e = errno;

	if (fd >= 0)
		close(fd);
	errno = e;
}

static int connect_entry(const struct drm_restore_entry *e, uint32_t ino)
{
	struct sockaddr_un addr;
	socklen_t addrlen;
	int sk, tries;

	sk = socket(AF_UNIX, SOCK_SEQPACKET, 0);
	if (sk < 0) {
		drm_log(DRM_CRIU_LOG_ERROR, "RESTORE_UNIX_SK(ino %u): socket: errno %d", ino, errno);
		return -errno;
	}

	memset(&addr, 0, sizeof(addr));
	addr.sun_family = AF_UNIX;
	memcpy(addr.sun_path, e->path, e->path_len);
	addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + e->path_len);
	if (e->path[0] != '\0')
		addrlen++; /* the NUL */

	for (tries = 0;; tries++) {
		if (connect(sk, (struct sockaddr *)&addr, addrlen) == 0 || errno == EISCONN)
			return sk;
		if ((errno == EINTR || errno == EAGAIN) && tries < CONNECT_TRIES) {
			struct timespec ts = { 0, CONNECT_RETRY_NS };

			if (errno == EAGAIN)
				nanosleep(&ts, NULL);
			continue;
		}
		break;
	}
	drm_log(DRM_CRIU_LOG_ERROR, "RESTORE_UNIX_SK(ino %u): connect %s%.*s: errno %d", ino,
	     e->path[0] ? "" : "@", (int)e->path_len - (e->path[0] ? 0 : 1), e->path + (e->path[0] ? 0 : 1), errno);
	close_keep_errno(sk);
	return -errno;
}

/* Receive one reply into reply_buf. Returns its length or a negative errno;
 * *fdp gets the received fd or -1. */
static ssize_t recv_reply(int sk, uint32_t ino, int *fdp)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct iovec iov = { reply_buf, sizeof(reply_buf) };
	struct msghdr msg;
	struct cmsghdr *c;
	struct pollfd pfd = { sk, POLLIN, 0 };
	ssize_t n;
	int r;

	*fdp = -1;
	do
		r = poll(&pfd, 1, REPLY_TIMEOUT_MS);
	while (r < 0 && errno == EINTR);
	if (r == 0) {
		drm_log(DRM_CRIU_LOG_ERROR, "RESTORE_UNIX_SK(ino %u): no reply in %d ms", ino, REPLY_TIMEOUT_MS);
		return -ETIMEDOUT;
	}
	if (r < 0) {
		drm_log(DRM_CRIU_LOG_ERROR, "RESTORE_UNIX_SK(ino %u): poll: errno %d", ino, errno);
		return -errno;
	}

	do {
		memset(&msg, 0, sizeof(msg));
		memset(&ctl, 0, sizeof(ctl));
		msg.msg_iov = &iov;
		msg.msg_iovlen = 1;
		msg.msg_control = ctl.buf;
		msg.msg_controllen = sizeof(ctl.buf);
		n = recvmsg(sk, &msg, 0); /* no MSG_CMSG_CLOEXEC: criu sets fd flags */
	} while (n < 0 && errno == EINTR);
	if (n < 0) {
		drm_log(DRM_CRIU_LOG_ERROR, "RESTORE_UNIX_SK(ino %u): recvmsg: errno %d", ino, errno);
		return -errno;
	}

	for (c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
			size_t nfds = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			int fds[4];
			size_t i;

			if (nfds > sizeof(fds) / sizeof(fds[0]))
				nfds = sizeof(fds) / sizeof(fds[0]);
			memcpy(fds, CMSG_DATA(c), nfds * sizeof(int));
			for (i = 0; i < nfds; i++) {
				if (*fdp < 0)
					*fdp = fds[i];
				else
					close(fds[i]); /* only one expected */
			}
		}
	}

	if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
		drm_log(DRM_CRIU_LOG_ERROR, "RESTORE_UNIX_SK(ino %u): reply truncated (flags %#x)", ino, msg.msg_flags);
		close_keep_errno(*fdp);
		*fdp = -1;
		return -EBADMSG;
	}
	if (n == 0) {
		drm_log(DRM_CRIU_LOG_ERROR, "RESTORE_UNIX_SK(ino %u): daemon closed the connection", ino);
		close_keep_errno(*fdp);
		*fdp = -1;
		return -ECONNRESET;
	}
	return n;
}

/*
 * The reason text of an error reply: its payload is a protobuf ErrorReply
 * whose field 1 (a string) is the message; this reads just that field.
 */
static size_t reason(const uint8_t *p, size_t len, const char **text)
{
	uint64_t n = 0;
	size_t i = 1;
	int shift;

	*text = "no reason given";
	if (len < 2 || p[0] != 0x0a) /* field 1, length-delimited */
		return strlen(*text);
	for (shift = 0; i < len && shift < 64; shift += 7) {
		n |= (uint64_t)(p[i] & 0x7f) << shift;
		if (!(p[i++] & 0x80))
			break;
	}
	if (n > len - i)
		n = len - i;
	*text = (const char *)p + i;
	return (size_t)n;
}

int drm_restore_unix_sk(int id)
{
	uint32_t ino = (uint32_t)id;
	const struct drm_restore_entry *e;
	uint32_t magic, seq;
	uint16_t version;
	int32_t status;
	ssize_t n;
	int sk, fd = -1, ret;

	e = lookup(ino);
	if (!e)
		return -ENOTSUP;

	sk = connect_entry(e, ino);
	if (sk < 0)
		return sk;

	do
		n = send(sk, e->req, e->req_len, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n != (ssize_t)e->req_len) {
		ret = n < 0 ? -errno : -EIO;
		drm_log(DRM_CRIU_LOG_ERROR, "RESTORE_UNIX_SK(ino %u): send: %s %d", ino, n < 0 ? "errno" : "short",
		     n < 0 ? errno : (int)n);
		goto err;
	}

	n = recv_reply(sk, ino, &fd);
	if (n < 0) {
		ret = (int)n;
		goto err;
	}
	if (n < KSIM_HEADER_SIZE) {
		drm_log(DRM_CRIU_LOG_ERROR, "RESTORE_UNIX_SK(ino %u): short reply (%zd bytes)", ino, n);
		ret = -EBADMSG;
		goto err;
	}
	magic = get_le32(reply_buf);
	version = get_le16(reply_buf + 4);
	seq = get_le32(reply_buf + 8);
	status = (int32_t)get_le32(reply_buf + 12);
	if (magic != KSIM_MAGIC || version != KSIM_VERSION) {
		drm_log(DRM_CRIU_LOG_ERROR, "RESTORE_UNIX_SK(ino %u): bad reply header (magic %#x version %u)", ino,
		     magic, version);
		ret = -EBADMSG;
		goto err;
	}
	if (seq != get_le32(e->req + 8)) {
		drm_log(DRM_CRIU_LOG_ERROR, "RESTORE_UNIX_SK(ino %u): reply seq %u, request seq %u", ino, seq,
		     get_le32(e->req + 8));
		ret = -EBADMSG;
		goto err;
	}
	if (status < 0) {
		const char *why;
		size_t why_len = reason(reply_buf + KSIM_HEADER_SIZE, (size_t)n - KSIM_HEADER_SIZE, &why);

		drm_log(DRM_CRIU_LOG_ERROR, "RESTORE_UNIX_SK(ino %u): kernelsimd refused (%s): %.*s", ino,
			strerror(-status), (int)why_len, why);
		ret = status;
		goto err;
	}

	if (e->kind == DRM_RESTORE_DRM_FILE || e->kind == DRM_RESTORE_DRM_CHANNEL) {
		if (fd >= 0)
			close(fd);
		drm_log(DRM_CRIU_LOG_DEBUG, "RESTORE_UNIX_SK(ino %u): %s restored as fd %d", ino,
			e->kind == DRM_RESTORE_DRM_FILE ? "drm file" : "reply channel", sk);
		return sk;
	}

	/* DRM_RESTORE_DMA_BUF */
	if (fd < 0) {
		drm_log(DRM_CRIU_LOG_ERROR, "RESTORE_UNIX_SK(ino %u): reply carries no dma-buf fd", ino);
		ret = -EBADMSG;
		goto err;
	}
	close(sk);
	drm_log(DRM_CRIU_LOG_DEBUG, "RESTORE_UNIX_SK(ino %u): dma-buf restored as fd %d", ino, fd);
	return fd;

err:
	close_keep_errno(fd);
	close_keep_errno(sk);
	return ret;
}
