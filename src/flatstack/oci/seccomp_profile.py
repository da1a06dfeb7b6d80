"""flatstack's default seccomp profile: an allowlist at least as strict as Docker's.

Every syscall not allowed below fails with EPERM (``SCMP_ACT_ERRNO``, errno 1);
syscalls numbered above the highest one the profile names fail with ENOSYS
instead (flatrun's compiler adds that stub, as runc does), so a C library
probing a syscall newer than the profile falls back.

Relative to Docker's default profile (moby ``profiles/seccomp``):

* Syscalls Docker allows only when the container holds an extra capability are
  not allowed at all, since flatstack's default capability set lacks those
  capabilities -- see :data:`BLOCKED` for the list and the reason for each.
* ``ptrace``, ``process_vm_readv`` and ``process_vm_writev`` are blocked.
  Docker allows them on kernels >= 4.8 (where ptrace can no longer be used to
  skip the seccomp filter); flatstack blocks them because debugging inside a
  container is rare and they widen the attack surface (ptrace-based kernel
  bugs, reading sibling processes' memory).  A profile of your own can allow
  them.
* ``clone`` is allowed only when its flags carry no namespace bit
  (``SCMP_CMP_MASKED_EQ``); ``clone3`` answers ENOSYS (its flags live in a
  struct seccomp cannot read), so the C library falls back to ``clone``.
* ``socket`` refuses ``AF_VSOCK``, which reaches the host or hypervisor, not
  the container's network.  (On 32-bit x86 ``socketcall`` multiplexes socket
  calls through a pointer seccomp cannot read; it stays allowed, as in
  Docker, or 32-bit programs could not use the network at all.)
* ``personality`` takes only the values Docker allows (Linux, 32-bit Linux,
  UNAME26 and the query 0xffffffff): no ``ADDR_NO_RANDOMIZE`` or
  ``READ_IMPLIES_EXEC``.
* ``io_uring_*`` is blocked (Docker dropped it too): io_uring bypasses
  syscall filtering and has been a steady source of kernel exploits.

Architectures: the native one plus its compat ABIs -- x86_64 with x86 and x32,
aarch64 with arm, s390x with s390 -- as in Docker's ``archMap``.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: Allowed unconditionally on every architecture.  Names unknown to libseccomp
#: or absent on an architecture are skipped by the compiler.
ALLOWED: tuple[str, ...] = tuple("""
accept accept4 access adjtimex alarm bind brk cachestat capget capset chdir chmod chown
chown32 chroot clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime
clock_gettime64 clock_nanosleep clock_nanosleep_time64 close close_range connect
copy_file_range creat dup dup2 dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old
epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd eventfd2 execve execveat exit
exit_group faccessat faccessat2 fadvise64 fadvise64_64 fallocate fanotify_mark fchdir fchmod
fchmodat fchmodat2 fchown fchown32 fchownat fcntl fcntl64 fdatasync fgetxattr flistxattr
flock fork fremovexattr fsetxattr fstat fstat64 fstatat64 fstatfs fstatfs64 fsync ftruncate
ftruncate64 futex futex_requeue futex_time64 futex_wait futex_waitv futex_wake futimesat
getcpu getcwd getdents getdents64 getegid getegid32 geteuid geteuid32 getgid getgid32
getgroups getgroups32 getitimer getpeername getpgid getpgrp getpid getppid getpriority
getrandom getresgid getresgid32 getresuid getresuid32 getrlimit get_robust_list getrusage
getsid getsockname getsockopt get_thread_area gettid gettimeofday getuid getuid32 getxattr
inotify_add_watch inotify_init inotify_init1 inotify_rm_watch io_cancel ioctl io_destroy
io_getevents io_pgetevents io_pgetevents_time64 ioprio_get ioprio_set io_setup io_submit ipc
kill landlock_add_rule landlock_create_ruleset landlock_restrict_self lchown lchown32
lgetxattr link linkat listen listxattr llistxattr _llseek lremovexattr lseek lsetxattr lstat
lstat64 madvise map_shadow_stack membarrier memfd_create memfd_secret mincore mkdir mkdirat
mknod mknodat mlock mlock2 mlockall mmap mmap2 mprotect mq_getsetattr mq_notify mq_open
mq_timedreceive mq_timedreceive_time64 mq_timedsend mq_timedsend_time64 mq_unlink mremap
msgctl msgget msgrcv msgsnd msync munlock munlockall munmap name_to_handle_at nanosleep
newfstatat _newselect open openat openat2 pause pidfd_open pidfd_send_signal pipe pipe2
pkey_alloc pkey_free pkey_mprotect poll ppoll ppoll_time64 prctl pread64 preadv preadv2
prlimit64 process_mrelease pselect6 pselect6_time64 pwrite64 pwritev pwritev2 read readahead
readlink readlinkat readv recv recvfrom recvmmsg recvmmsg_time64 recvmsg remap_file_pages
removexattr rename renameat renameat2 restart_syscall rmdir rseq rt_sigaction rt_sigpending
rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait
rt_sigtimedwait_time64 rt_tgsigqueueinfo sched_getaffinity sched_getattr sched_getparam
sched_get_priority_max sched_get_priority_min sched_getscheduler sched_rr_get_interval
sched_rr_get_interval_time64 sched_setaffinity sched_setattr sched_setparam
sched_setscheduler sched_yield seccomp select semctl semget semop semtimedop
semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto setfsgid setfsgid32
setfsuid setfsuid32 setgid setgid32 setgroups setgroups32 setitimer setpgid setpriority
setregid setregid32 setresgid setresgid32 setresuid setresuid32 setreuid setreuid32
setrlimit set_robust_list setsid setsockopt set_thread_area set_tid_address setuid setuid32
setxattr shmat shmctl shmdt shmget shutdown sigaltstack signalfd signalfd4 sigprocmask
sigreturn socketcall socketpair splice stat stat64 statfs statfs64 statx symlink symlinkat
sync sync_file_range syncfs sysinfo tee tgkill time timer_create timer_delete
timer_getoverrun timer_gettime timer_gettime64 timer_settime timer_settime64 timerfd_create
timerfd_gettime timerfd_gettime64 timerfd_settime timerfd_settime64 times tkill truncate
truncate64 ugetrlimit umask uname unlink unlinkat utime utimensat utimensat_time64 utimes
vfork vmsplice wait4 waitid waitpid write writev
""".split())  # noqa: SIM905 - a readable block of names

#: Allowed only on some architectures (keyed by the native ``uname -m``).
ARCH_ALLOWED: dict[str, tuple[str, ...]] = {
    "x86_64": ("arch_prctl", "modify_ldt"),
    "aarch64": ("arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint",
                "cacheflush", "set_tls"),
    "s390x": ("s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr"),
    "ppc64le": ("sync_file_range2", "swapcontext"),
    "riscv64": ("riscv_flush_icache",),
}

#: Native machine -> architectures the profile covers (Docker's archMap).
ARCH_MAP: dict[str, tuple[str, ...]] = {
    "x86_64": ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"),
    "aarch64": ("SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"),
    "s390x": ("SCMP_ARCH_S390X", "SCMP_ARCH_S390"),
    "ppc64le": ("SCMP_ARCH_PPC64LE",),
    "riscv64": ("SCMP_ARCH_RISCV64",),
}

#: What the profile refuses (EPERM) and why.  Docker allows the ``cap:`` groups
#: when the container holds that capability; flatstack's default set does not.
BLOCKED: dict[str, tuple[tuple[str, ...], str]] = {
    "namespaces": (("unshare", "setns"),
                   "new namespaces (user namespaces above all) open kernel attack surface "
                   "meant for root; cap: CAP_SYS_ADMIN"),
    "mounts": (("mount", "umount", "umount2", "pivot_root", "fsopen", "fsconfig", "fsmount",
                "fspick", "move_mount", "open_tree", "mount_setattr"),
               "the container's mount table is set up by the runtime; cap: CAP_SYS_ADMIN"),
    "keyring": (("keyctl", "add_key", "request_key"),
                "the kernel keyring is not namespaced: keys would leak between containers"),
    "bpf": (("bpf",), "loads code into the kernel; cap: CAP_SYS_ADMIN or CAP_BPF"),
    "perf": (("perf_event_open",),
             "exposes host-wide performance data and a large kernel surface; cap: "
             "CAP_SYS_ADMIN or CAP_PERFMON"),
    "modules": (("init_module", "finit_module", "delete_module", "create_module",
                 "query_module", "get_kernel_syms"),
                "kernel modules are host-wide; cap: CAP_SYS_MODULE"),
    "kexec": (("kexec_load", "kexec_file_load", "reboot"),
              "would replace or stop the host kernel; cap: CAP_SYS_BOOT"),
    "file handles": (("open_by_handle_at",),
                     "opens any inode on a mounted filesystem by handle, outside the "
                     "container's root (the 'shocker' escape); cap: CAP_DAC_READ_SEARCH"),
    "tracing": (("ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
                 "process_madvise"),
                "inspect or change other processes; Docker allows the first three on "
                "kernels >= 4.8, flatstack does not; cap: CAP_SYS_PTRACE"),
    "namespaced clone": (("clone3",),
                         "answers ENOSYS: its flags are in memory seccomp cannot inspect; "
                         "clone is allowed without namespace flags"),
    "io_uring": (("io_uring_setup", "io_uring_enter", "io_uring_register"),
                 "bypasses syscall filtering; frequent source of kernel exploits"),
    "userfaultfd": (("userfaultfd",),
                    "lets an exploit stall the kernel at a chosen page fault"),
    "clock": (("settimeofday", "stime", "clock_settime", "clock_settime64"),
              "the clock is host-wide; cap: CAP_SYS_TIME"),
    "host administration": (("acct", "swapon", "swapoff", "syslog", "quotactl", "quotactl_fd",
                             "lookup_dcookie", "sethostname", "setdomainname", "vhangup",
                             "iopl", "ioperm", "fanotify_init", "nfsservctl"),
                            "host-wide administration; cap: CAP_SYS_ADMIN, CAP_SYS_PACCT, "
                            "CAP_SYSLOG, CAP_SYS_TTY_CONFIG or CAP_SYS_RAWIO"),
    "NUMA policy": (("mbind", "set_mempolicy", "get_mempolicy", "set_mempolicy_home_node",
                     "migrate_pages", "move_pages"),
                    "moves memory between host NUMA nodes; cap: CAP_SYS_NICE"),
    "obsolete": (("uselib", "ustat", "sysfs", "_sysctl", "vm86", "vm86old", "afs_syscall",
                  "tuxcall", "security", "getpmsg", "putpmsg", "vserver", "bdflush"),
                 "obsolete interfaces nobody needs, with a history of bugs"),
}

#: Namespace flags ``clone`` may not carry: CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC |
#: NEWUSER | NEWPID | NEWNET.  (CLONE_NEWTIME, 0x80, shares its bit with clone's
#: exit-signal byte; only unshare and clone3 take it, and both are blocked.)
CLONE_NAMESPACE_FLAGS = 0x7E020000
#: Values of personality(2) allowed: PER_LINUX, PER_LINUX32, UNAME26,
#: UNAME26 | PER_LINUX32, and 0xffffffff (query the current persona).
PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)
AF_VSOCK = 40
ENOSYS = 38
EPERM = 1


def default_profile(machine: str | None = None) -> dict[str, Any]:
    """The runtime-spec ``linux.seccomp`` object flatstack uses by default.

    ``machine`` is a ``uname -m`` value; the running machine's by default.
    """
    if machine is None:
        import os

        machine = os.uname().machine
    machine = {"arm64": "aarch64", "amd64": "x86_64"}.get(machine, machine)
    arches = ARCH_MAP.get(machine, ())
    # s390 passes clone's flags in the second argument.
    clone_arg = 1 if machine == "s390x" else 0
    syscalls: list[dict[str, Any]] = [
        {"names": sorted(ALLOWED + ARCH_ALLOWED.get(machine, ())), "action": "SCMP_ACT_ALLOW"},
        {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": clone_arg, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0,
                   "op": "SCMP_CMP_MASKED_EQ"}]},
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
        {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_NE"}]},
    ]
    syscalls += [{"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                  "args": [{"index": 0, "value": value, "op": "SCMP_CMP_EQ"}]}
                 for value in PERSONALITIES]
    profile: dict[str, Any] = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": EPERM}
    if arches:
        profile["architectures"] = list(arches)
    profile["syscalls"] = syscalls
    return profile


def describe_default() -> str:
    """A human-readable summary of what the default profile blocks and why."""
    lines = ["default action: EPERM for every syscall not allowed (ENOSYS above the "
             "highest syscall the profile knows)",
             f"allowed: {len(ALLOWED)} syscalls, plus clone without namespace flags, "
             "socket except AF_VSOCK, personality with Docker's values",
             "blocked:"]
    for group, (names, why) in BLOCKED.items():
        lines.append(f"  {group}: {', '.join(names)} -- {why}")
    return "\n".join(lines)
