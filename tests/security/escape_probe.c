/* escape_probe: attempts the syscalls behind known container escapes, one per
 * argument, and prints "step=OK" or "step=ERRNAME" for each.  Compiled
 * statically by tests/security/_harness.py and bind-mounted into containers. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/if_ether.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static const char *ename(int e) {
    switch (e) {
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case ENOSYS: return "ENOSYS";
    case ESRCH: return "ESRCH";
    case EROFS: return "EROFS";
    case EINVAL: return "EINVAL";
    case ENOENT: return "ENOENT";
    case EBADF: return "EBADF";
    case EAGAIN: return "EAGAIN";
    case EFAULT: return "EFAULT";
    case EBUSY: return "EBUSY";
    case ENOEXEC: return "ENOEXEC";
    default: return "OTHER";
    }
}

static void report(const char *step, long rc) {
    if (rc < 0)
        printf("%s=%s\n", step, ename(errno));
    else
        printf("%s=OK\n", step);
    fflush(stdout);
}

static long write_file(const char *path, const char *data) {
    int fd = open(path, O_WRONLY);
    if (fd < 0)
        return -1;
    long rc = write(fd, data, strlen(data));
    close(fd);
    return rc < 0 ? -1 : 0;
}

static long map_root(uid_t uid, gid_t gid) {
    char line[64];
    if (write_file("/proc/self/setgroups", "deny") < 0)
        return -1;
    snprintf(line, sizeof line, "0 %u 1", (unsigned)uid);
    if (write_file("/proc/self/uid_map", line) < 0)
        return -1;
    snprintf(line, sizeof line, "0 %u 1", (unsigned)gid);
    return write_file("/proc/self/gid_map", line);
}

static long raise_cap(int cap) {
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &hdr, data) < 0)
        return -1;
    data[cap / 32].effective |= 1u << (cap % 32);
    data[cap / 32].permitted |= 1u << (cap % 32);
    data[cap / 32].inheritable |= 1u << (cap % 32);
    return syscall(SYS_capset, &hdr, data);
}

int main(int argc, char **argv) {
    uid_t uid = geteuid();
    gid_t gid = getegid();
    for (int i = 1; i < argc; i++) {
        char label[256];
        snprintf(label, sizeof label, "%s", argv[i]);
        char *step = argv[i];
        char *arg = strchr(step, ':');
        if (arg)
            *arg++ = '\0';
        long rc;
        errno = 0;
        if (!strcmp(step, "keyctl"))
            rc = syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -3 /* session */, 1);
        else if (!strcmp(step, "add_key"))
            rc = syscall(SYS_add_key, "user", "flatstack", "x", 1, -2 /* process */);
        else if (!strcmp(step, "request_key"))
            rc = syscall(SYS_request_key, "user", "flatstack", NULL, -2);
        else if (!strcmp(step, "init_module")) {
            static char image[4096];
            rc = syscall(SYS_init_module, image, sizeof image, "");
        } else if (!strcmp(step, "finit_module")) {
            int fd = open(arg ? arg : "/bin/busybox", O_RDONLY | O_CLOEXEC);
            rc = fd < 0 ? -1 : syscall(SYS_finit_module, fd, "", 0);
        } else if (!strcmp(step, "delete_module"))
            rc = syscall(SYS_delete_module, arg ? arg : "loop", O_NONBLOCK);
        else if (!strcmp(step, "ptrace"))
            rc = ptrace(PTRACE_ATTACH, atoi(arg), 0, 0);
        else if (!strcmp(step, "kill0"))
            rc = kill(atoi(arg), 0);
        else if (!strcmp(step, "raw_icmp"))
            rc = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
        else if (!strcmp(step, "packet"))
            rc = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
        else if (!strcmp(step, "unshare_user"))
            rc = unshare(CLONE_NEWUSER);
        else if (!strcmp(step, "unshare_umc"))
            rc = unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWCGROUP);
        else if (!strcmp(step, "map_root"))
            rc = map_root(uid, gid);
        else if (!strcmp(step, "mount_cgroup"))
            rc = mount("cgroup", "/tmp", "cgroup", 0, arg ? arg : "memory");
        else if (!strcmp(step, "mount_tmpfs"))
            rc = mount("none", arg ? arg : "/tmp", "tmpfs", 0, NULL);
        else if (!strcmp(step, "write"))
            rc = write_file(arg, "/flatstack-escape\n");
        else if (!strcmp(step, "capset_sys_admin"))
            rc = raise_cap(CAP_SYS_ADMIN);
        else if (!strcmp(step, "ambient_sys_admin"))
            rc = prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_SYS_ADMIN, 0, 0);
        else if (!strcmp(step, "status")) {
            /* /proc/self/status as is (uids and capability sets) */
            FILE *f = fopen("/proc/self/status", "r");
            char buf[512];
            rc = f ? 0 : -1;
            while (f && fgets(buf, sizeof buf, f))
                fputs(buf, stdout);
            if (f)
                fclose(f);
        } else if (!strcmp(step, "open_by_handle_at"))
            rc = syscall(SYS_open_by_handle_at, AT_FDCWD, NULL, O_RDONLY);
        else {
            printf("%s=UNKNOWN\n", label);
            return 2;
        }
        report(label, rc);
    }
    return 0;
}
