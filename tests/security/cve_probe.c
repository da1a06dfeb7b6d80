/* Probe for the runtime CVE tests (test_cve_runtime.py); runs inside a container.
 *
 *   cve_probe exe PID          readlink and open(O_RDONLY / O_WRONLY / O_PATH) of
 *                              /proc/PID/exe, then list /proc/PID/fd
 *   cve_probe scan STOPFILE    watch every other process until STOPFILE exists (or
 *                              20 s): print each distinct /proc/PID/exe outcome and,
 *                              for fds >= 3 of other processes, readlink and open results
 *
 * Output lines are "label=RESULT" where RESULT is OK, a path, or an errno name.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *ename(int e) {
    switch (e) {
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case ETXTBSY: return "ETXTBSY";
    case ENOENT: return "ENOENT";
    case ESRCH: return "ESRCH";
    case ELOOP: return "ELOOP";
    case EROFS: return "EROFS";
    default: return "EOTHER";
    }
}

static void try_open(const char *label, const char *path, int flags) {
    int fd = open(path, flags);
    if (fd < 0) {
        printf("%s=%s\n", label, ename(errno));
    } else {
        printf("%s=OK\n", label);
        close(fd);
    }
}

static int list_fds(const char *pid, char *out, size_t len) {
    char path[300];
    snprintf(path, sizeof path, "/proc/%s/fd", pid);
    DIR *d = opendir(path);
    if (d == NULL)
        return -errno;
    struct dirent *e;
    out[0] = 0;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || atoi(e->d_name) < 3)
            continue;
        char link[320], target[256];
        snprintf(link, sizeof link, "%s/%s", path, e->d_name);
        /* The fd's target and the file itself: what CVE-2016-9962 went after. */
        ssize_t n = readlink(link, target, sizeof target - 1);
        if (n < 0)
            snprintf(target, sizeof target, "readlink-%s", ename(errno));
        else
            target[n] = 0;
        int fd = open(link, O_RDONLY | O_NONBLOCK);
        const char *opened = fd < 0 ? ename(errno) : "OK";
        if (fd >= 0)
            close(fd);
        size_t used = strlen(out);
        snprintf(out + used, len - used, "%s:%s:open-%s ", e->d_name, target, opened);
    }
    closedir(d);
    return 0;
}

static int exe_mode(const char *pid) {
    char path[64], target[256], fds[1024];
    snprintf(path, sizeof path, "/proc/%s/exe", pid);
    ssize_t n = readlink(path, target, sizeof target - 1);
    if (n < 0) {
        printf("readlink=%s\n", ename(errno));
    } else {
        target[n] = 0;
        printf("readlink=%s\n", target);
    }
    try_open("open_rdonly", path, O_RDONLY);
    try_open("open_wronly", path, O_WRONLY);
    try_open("open_path", path, O_PATH);
    int r = list_fds(pid, fds, sizeof fds);
    if (r < 0)
        printf("fd_dir=%s\n", ename(-r));
    else
        printf("fd_dir=OK\nfds_above_2=[%s]\n", fds);
    return 0;
}

#define MAX_SEEN 64
static char seen[MAX_SEEN][300];
static int nseen;

static void note(const char *line) {
    for (int i = 0; i < nseen; i++)
        if (strcmp(seen[i], line) == 0)
            return;
    if (nseen < MAX_SEEN) {
        snprintf(seen[nseen++], sizeof seen[0], "%s", line);
        printf("%s\n", line);
        fflush(stdout);
    }
}

static int scan_mode(const char *stopfile) {
    char self[16], line[1400], fds[1024], path[300], target[256];
    snprintf(self, sizeof self, "%d", getpid());
    time_t end = time(NULL) + 20;
    printf("scanning=OK\n");
    fflush(stdout);
    while (access(stopfile, F_OK) != 0 && time(NULL) < end) {
        DIR *d = opendir("/proc");
        struct dirent *e;
        while (d && (e = readdir(d)) != NULL) {
            if (e->d_name[0] < '0' || e->d_name[0] > '9' || strcmp(e->d_name, self) == 0)
                continue;
            snprintf(path, sizeof path, "/proc/%s/exe", e->d_name);
            ssize_t n = readlink(path, target, sizeof target - 1);
            if (n < 0) {
                if (errno == ENOENT || errno == ESRCH)
                    continue; /* exited meanwhile, or a kernel thread */
                snprintf(line, sizeof line, "exe=%s", ename(errno));
                note(line);
                int fd = open(path, O_WRONLY);
                snprintf(line, sizeof line, "exe_wronly=%s", fd < 0 ? ename(errno) : "OK");
                if (fd >= 0)
                    close(fd);
                note(line);
            } else {
                target[n] = 0;
                snprintf(line, sizeof line, "exe=%s", target);
                note(line);
            }
            int r = list_fds(e->d_name, fds, sizeof fds);
            if (r < 0) {
                if (r != -ENOENT && r != -ESRCH) {
                    snprintf(line, sizeof line, "fd_dir=%s", ename(-r));
                    note(line);
                }
            } else if (fds[0]) {
                snprintf(line, sizeof line, "fds_above_2=%s", fds);
                note(line);
            }
        }
        if (d)
            closedir(d);
    }
    printf("done=OK\n");
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 3 && strcmp(argv[1], "exe") == 0)
        return exe_mode(argv[2]);
    if (argc == 3 && strcmp(argv[1], "scan") == 0)
        return scan_mode(argv[2]);
    fprintf(stderr, "usage: cve_probe exe PID | scan STOPFILE\n");
    return 2;
}
