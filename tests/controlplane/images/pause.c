/*
 * The pod sandbox process: PID 1 of a pod's namespaces. It holds them open, reaps the zombies
 * that get reparented to it, and exits 0 on SIGTERM or SIGINT. Built with `gcc -static` by
 * ./build; `pause -v` prints the version.
 *
 * Signals are taken synchronously with sigwaitinfo(), so nothing runs in a signal handler.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef VERSION
#define VERSION "dev"
#endif

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "-v") == 0) {
        printf("pause %s\n", VERSION);
        return 0;
    }
    if (getpid() != 1)
        fprintf(stderr, "pause: warning: not PID 1, orphans will not be reaped here\n");

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGCHLD);
    if (sigprocmask(SIG_BLOCK, &set, NULL) != 0) {
        perror("pause: sigprocmask");
        return 1;
    }
    for (;;) {
        int sig = sigwaitinfo(&set, NULL);
        if (sig == SIGCHLD) {
            while (waitpid(-1, NULL, WNOHANG) > 0)
                ;
        } else if (sig == SIGTERM || sig == SIGINT) {
            fprintf(stderr, "pause: got signal %d, exiting\n", sig);
            return 0;
        } else if (sig < 0 && errno != EINTR) {
            perror("pause: sigwaitinfo");
            return 1;
        }
    }
}
