/*
 * leaky: open one TCP connection and never close it.
 *
 * The close-wait scenario tests use this program to leak a socket whose
 * creating stack is known: main() -> serve_requests() ->
 * open_leaky_connection() -> connect(). When the peer closes its end, our
 * socket enters CLOSE_WAIT and stays there until this process exits.
 *
 * Usage: leaky HOST PORT [--hold SECONDS]
 *   HOST     a numeric IPv4 or IPv6 address (tests give 127.0.0.1 or ::1)
 *   PORT     the port to connect to
 *   --hold   how long to keep running after connecting (default 30 s)
 *
 * stdout, one line once connected (flushed):
 *   connected fd=<fd> local=<ip>:<port> pid=<pid>
 * where <ip> is bracketed for IPv6 ("[::1]:40312"), so that the
 * address parses as a socket address.
 * stderr, one line at start (for symbolization tests):
 *   leaky: pid=<pid> open_leaky_connection=<address>
 *
 * Build: gcc -O0 -g -fno-omit-frame-pointer -o leaky leaky.c
 * (frame pointers let the kernel walk the whole user stack).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Print "ip:port" of a socket address into buf ("[ip]:port" for IPv6). */
static int format_addr(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	char ip[INET6_ADDRSTRLEN];

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip));
		return snprintf(buf, len, "%s:%u", ip, ntohs(sin->sin_port));
	}
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
		inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof(ip));
		return snprintf(buf, len, "[%s]:%u", ip, ntohs(sin6->sin6_port));
	}
	return snprintf(buf, len, "unknown-family-%d", ss->ss_family);
}

/*
 * Connect to host:port and return the socket. The socket is deliberately
 * never closed: this is the leak. Returns -1 on error (message on stderr).
 */
__attribute__((noinline)) int open_leaky_connection(const char *host, const char *port)
{
	struct addrinfo hints, *res;
	struct sockaddr_storage local;
	socklen_t local_len = sizeof(local);
	char local_str[INET6_ADDRSTRLEN + 16];
	int fd, rc;

	/* Numeric addresses only: never resolve names, never leave the address given. */
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
	rc = getaddrinfo(host, port, &hints, &res);
	if (rc != 0) {
		fprintf(stderr, "leaky: bad address %s port %s: %s\n", host, port, gai_strerror(rc));
		return -1;
	}

	fd = socket(res->ai_family, res->ai_socktype, res->ai_protocol);
	if (fd < 0) {
		fprintf(stderr, "leaky: socket: %s\n", strerror(errno));
		freeaddrinfo(res);
		return -1;
	}
	if (connect(fd, res->ai_addr, res->ai_addrlen) < 0) {
		fprintf(stderr, "leaky: connect to %s port %s: %s\n", host, port, strerror(errno));
		freeaddrinfo(res);
		close(fd);
		return -1;
	}
	freeaddrinfo(res);

	if (getsockname(fd, (struct sockaddr *)&local, &local_len) < 0) {
		fprintf(stderr, "leaky: getsockname: %s\n", strerror(errno));
		return -1;
	}
	format_addr(&local, local_str, sizeof(local_str));
	printf("connected fd=%d local=%s pid=%d\n", fd, local_str, (int)getpid());
	fflush(stdout);
	return fd; /* the caller forgets it: the socket stays open */
}

/* Stand-in for a server's request loop: opens the connection and moves on. */
__attribute__((noinline)) int serve_requests(const char *host, const char *port)
{
	return open_leaky_connection(host, port) < 0 ? -1 : 0;
}

/* Sleep for whole seconds, resuming after signal interruptions. */
static void hold(unsigned long seconds)
{
	struct timespec left = { .tv_sec = (time_t)seconds, .tv_nsec = 0 };

	while (nanosleep(&left, &left) < 0 && errno == EINTR)
		;
}

static int usage(void)
{
	fprintf(stderr, "usage: leaky HOST PORT [--hold SECONDS]\n");
	return 2;
}

int main(int argc, char **argv)
{
	unsigned long hold_secs = 30;
	char *end;

	if (argc != 3 && argc != 5)
		return usage();
	if (argc == 5) {
		if (strcmp(argv[3], "--hold") != 0)
			return usage();
		errno = 0;
		hold_secs = strtoul(argv[4], &end, 10);
		if (errno != 0 || *end != '\0' || argv[4][0] == '\0' || argv[4][0] == '-')
			return usage();
	}

	/* For symbolization tests: where the function that creates the socket lives. */
	fprintf(stderr, "leaky: pid=%d open_leaky_connection=%p\n", (int)getpid(),
		(void *)open_leaky_connection);

	if (serve_requests(argv[1], argv[2]) < 0)
		return 1;
	hold(hold_secs);
	return 0;
}
