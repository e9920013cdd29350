/*
 * seqclient: the process tests/criu dumps and restores. It connects a
 * SOCK_SEQPACKET socket to the server at argv[1], sends "hello", then
 * answers every packet P it receives with "echo:P", forever.
 * Single-threaded and libc-only, so criu has an easy time with it.
 */
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	char in[256], out[300];
	int sk;

	if (argc != 2 || strlen(argv[1]) >= sizeof(addr.sun_path)) {
		fprintf(stderr, "usage: seqclient SOCKET\n");
		return 2;
	}
	strcpy(addr.sun_path, argv[1]);
	sk = socket(AF_UNIX, SOCK_SEQPACKET, 0);
	if (sk < 0 || connect(sk, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		perror("seqclient: connect");
		return 1;
	}
	if (send(sk, "hello", 5, MSG_NOSIGNAL) != 5) {
		perror("seqclient: send");
		return 1;
	}
	for (;;) {
		ssize_t n = recv(sk, in, sizeof(in), 0);
		int m;

		if (n < 0) {
			perror("seqclient: recv");
			return 1;
		}
		if (n == 0)
			return 0;
		m = snprintf(out, sizeof(out), "echo:%.*s", (int)n, in);
		if (send(sk, out, (size_t)m, MSG_NOSIGNAL) != m) {
			perror("seqclient: send");
			return 1;
		}
	}
}
