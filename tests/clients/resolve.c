/* A resolver probe built statically against musl (`musl-gcc -static`):
 * getaddrinfo for each name given, one line per name:
 *   NAME ok ADDR[,ADDR...]   or   NAME error MESSAGE
 * then, with --connect PORT, a TCP connect to the first address:
 *   connect ok | connect EPERM | connect error MESSAGE */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    const char *port = NULL;
    int i = 1;
    if (argc > 2 && strcmp(argv[1], "--connect") == 0) {
        port = argv[2];
        i = 3;
    }
    for (; i < argc; i++) {
        struct addrinfo hints = {0}, *res, *p;
        hints.ai_socktype = SOCK_STREAM;
        int rc = getaddrinfo(argv[i], port, &hints, &res);
        if (rc != 0) {
            printf("%s error %s\n", argv[i], gai_strerror(rc));
            continue;
        }
        printf("%s ok ", argv[i]);
        for (p = res; p; p = p->ai_next) {
            char buf[INET6_ADDRSTRLEN];
            void *a = p->ai_family == AF_INET
                          ? (void *)&((struct sockaddr_in *)p->ai_addr)->sin_addr
                          : (void *)&((struct sockaddr_in6 *)p->ai_addr)->sin6_addr;
            inet_ntop(p->ai_family, a, buf, sizeof buf);
            printf("%s%s", buf, p->ai_next ? "," : "\n");
        }
        if (port) {
            int s = socket(res->ai_family, SOCK_STREAM, 0);
            if (connect(s, res->ai_addr, res->ai_addrlen) == 0)
                printf("connect ok\n");
            else if (errno == EPERM)
                printf("connect EPERM\n");
            else
                printf("connect error %s\n", strerror(errno));
            close(s);
        }
        freeaddrinfo(res);
    }
    return 0;
}
