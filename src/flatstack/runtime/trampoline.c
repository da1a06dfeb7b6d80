/* flatrun's exec trampoline (see trampoline.py): argv = {"flatrun-exec", PATH, ARGV0, ...};
 * execve(PATH, ARGV0..., envp). No libc, so it is a few KiB and starts in microseconds. */
typedef unsigned long ulong;

#if defined(__x86_64__)
#define SYS_write 1
#define SYS_execve 59
#define SYS_exit_group 231
#define SYS_rt_sigaction 13
#define SYS_rt_sigprocmask 14
static long sys4(long n, long a, long b, long c, long d) {
    long ret;
    register long r10 __asm__("r10") = d;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10)
                     : "rcx", "r11", "memory");
    return ret;
}
__asm__(".globl _start\n_start:\n xor %rbp, %rbp\n mov %rsp, %rdi\n"
        " and $-16, %rsp\n call trampoline_main\n hlt\n");
#elif defined(__aarch64__)
#define SYS_write 64
#define SYS_execve 221
#define SYS_exit_group 94
#define SYS_rt_sigaction 134
#define SYS_rt_sigprocmask 135
static long sys4(long n, long a, long b, long c, long d) {
    register long x8 __asm__("x8") = n;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    register long x3 __asm__("x3") = d;
    __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3) : "memory");
    return x0;
}
__asm__(".globl _start\n_start:\n mov x0, sp\n bl trampoline_main\n");
#else
#error "unsupported architecture"
#endif
#define sys3(n, a, b, c) sys4(n, a, b, c, 0)

/* A clean slate: what the caller ignored or blocked (Python ignores SIGPIPE and
 * SIGXFSZ; a shell's background job ignores SIGINT; a test harness may block
 * anything) must not reach the container, since ignored dispositions and the
 * signal mask survive execve. Handlers are reset by execve anyway. */
static void reset_signals(void) {
    unsigned long action[4] = {0, 0, 0, 0}; /* SIG_DFL, no flags, empty mask */
    unsigned long empty = 0;
    for (long sig = 1; sig <= 64; sig++)
        sys4(SYS_rt_sigaction, sig, (long)action, 0, 8); /* KILL/STOP: EINVAL, fine */
    sys4(SYS_rt_sigprocmask, 2 /* SIG_SETMASK */, (long)&empty, 0, 8);
}

static ulong length(const char *s) {
    ulong n = 0;
    while (s[n]) n++;
    return n;
}

static void say(const char *s) { sys3(SYS_write, 2, (long)s, (long)length(s)); }

static const char *reason(long err) {
    switch (err) {
    case 2: return "no such file or directory";
    case 13: return "permission denied";
    case 8: return "exec format error";
    case 20: return "not a directory";
    case 40: return "too many levels of symbolic links";
    case 7: return "argument list too long";
    case 12: return "cannot allocate memory";
    case 26: return "text file busy";
    case 1: return "operation not permitted";
    case 21: return "is a directory";
    default: return "exec failed";
    }
}

static int is_marker(const char *s) {
    const char *m = "flatrun-exec";
    while (*m && *s == *m) { s++; m++; }
    return *m == 0 && *s == 0;
}

__attribute__((used, noreturn)) void trampoline_main(long *sp) {
    long argc = sp[0];
    char **argv = (char **)(sp + 1);
    char **envp = argv + argc + 1;
    long err;
    if (argc < 3 || !is_marker(argv[0])) {
        say("flatrun-exec: not an interpreter; refusing to run\n");
        sys3(SYS_exit_group, 126, 0, 0);
    }
    reset_signals();
    err = -sys3(SYS_execve, (long)argv[1], (long)(argv + 2), (long)envp);
    say("flatrun: exec ");
    say(argv[1]);
    say(": ");
    say(reason(err));
    say("\n");
    sys3(SYS_exit_group, err == 2 ? 127 : 126, 0, 0);
    for (;;) {}
}
