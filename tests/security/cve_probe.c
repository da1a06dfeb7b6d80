/* Probe for the runtime CVE tests (test_cve_runtime.py); runs inside a container.
 *
 *   cve_probe exe PID          readlink and open(O_RDONLY / O_WRONLY / O_PATH) of
 *                              /proc/PID/exe, then list /proc/PID/fd
 *   cve_probe scan STOPFILE    watch every other process until STOPFILE exists (or
 *                              20 s): print each distinct /proc/PID/exe outcome and,
 *                              for fds >= 3 of other processes, readlink and open results
 *   cve_probe grab STOPFILE    CVE-2019-5736 stage two: wait (20 s at most) for another
 *                              process whose exe is not busybox or this probe, open
 *                              its exe, wait for it to exit, then try to reopen that
 *                              file for writing through /proc/self/fd (never writes)
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
        char link[600], target[256];
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

/* Call visit(pid, "/proc/PID/exe") for every other process, again and again, until
 * STOPFILE exists, 20 s have passed or visit returns non-zero (then 1 is returned). */
static int watch(const char *stopfile, const char *banner,
                 int (*visit)(const char *pid, const char *exe_path)) {
    char self[16], path[300];
    snprintf(self, sizeof self, "%d", getpid());
    time_t end = time(NULL) + 20;
    printf("%s=OK\n", banner);
    fflush(stdout);
    while (access(stopfile, F_OK) != 0 && time(NULL) < end) {
        DIR *d = opendir("/proc");
        struct dirent *e;
        int stop = 0;
        while (!stop && d && (e = readdir(d)) != NULL) {
            if (e->d_name[0] < '0' || e->d_name[0] > '9' || strcmp(e->d_name, self) == 0)
                continue;
            snprintf(path, sizeof path, "/proc/%s/exe", e->d_name);
            stop = visit(e->d_name, path);
        }
        if (d)
            closedir(d);
        if (stop)
            return 1;
    }
    return 0;
}

static int scan_one(const char *pid, const char *path) {
    char line[1400], fds[1024], target[256];
    ssize_t n = readlink(path, target, sizeof target - 1);
    if (n < 0) {
        if (errno == ENOENT || errno == ESRCH)
            return 0; /* exited meanwhile, or a kernel thread */
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
    int r = list_fds(pid, fds, sizeof fds);
    if (r < 0) {
        if (r != -ENOENT && r != -ESRCH) {
            snprintf(line, sizeof line, "fd_dir=%s", ename(-r));
            note(line);
        }
    } else if (fds[0]) {
        snprintf(line, sizeof line, "fds_above_2=%s", fds);
        note(line);
    }
    return 0;
}

static int scan_mode(const char *stopfile) {
    watch(stopfile, "scanning", scan_one);
    printf("done=OK\n");
    return 0;
}

static int grab_one(const char *pid, const char *path) {
    char target[256], proc_dir[64], reopen[64];
    ssize_t n = readlink(path, target, sizeof target - 1);
    if (n < 0)
        return 0;
    target[n] = 0;
    if (strcmp(target, "/bin/busybox") == 0 || strcmp(target, "/home/cve_probe") == 0)
        return 0;
    int fd = open(path, O_RDONLY);
    printf("exe=%s\nopen=%s\n", target, fd < 0 ? ename(errno) : "OK");
    if (fd < 0)
        return 0;
    snprintf(proc_dir, sizeof proc_dir, "/proc/%s", pid);
    for (int i = 0; i < 500 && access(proc_dir, F_OK) == 0; i++)
        usleep(10000);
    usleep(100000);
    snprintf(reopen, sizeof reopen, "/proc/self/fd/%d", fd);
    int w = open(reopen, O_WRONLY | O_APPEND);
    printf("write_open=%s\n", w < 0 ? ename(errno) : "OK");
    if (w >= 0)
        close(w); /* the escape is the open: nothing is ever written */
    return 1;
}

static int grab_mode(const char *stopfile) {
    printf("%s\n", watch(stopfile, "grabbing", grab_one) ? "done=OK" : "done=NOTHING");
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 3 && strcmp(argv[1], "exe") == 0)
        return exe_mode(argv[2]);
    if (argc == 3 && strcmp(argv[1], "scan") == 0)
        return scan_mode(argv[2]);
    if (argc == 3 && strcmp(argv[1], "grab") == 0)
        return grab_mode(argv[2]);
    fprintf(stderr, "usage: cve_probe exe PID | scan STOPFILE | grab STOPFILE\n");
    return 2;
}
