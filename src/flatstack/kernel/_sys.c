/*
 * flatstack.kernel._sys: raw system calls for the runtime, without ctypes.
 *
 * `import ctypes` costs about 3 ms here (libffi, and the Python half of ctypes
 * builds dozens of classes), a tenth of a `flatrun create`.  This module is
 * the whole of what the runtime needs from C: syscall(2) with integer and
 * buffer arguments, the syscall numbers of the machine it was built on, fork
 * into a cgroup (clone3 with the interpreter's fork bookkeeping) and loading a
 * seccomp filter (its struct holds a pointer).
 *
 * Built by scripts/install-launcher.sh against the stable ABI (abi3), so the
 * venv's interpreter and the system's python3.11 both load it.
 */
#define PY_SSIZE_T_CLEAN
#define Py_LIMITED_API 0x030B0000
#include <Python.h>

#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_ARGS 6

/* Fill *word from an int (two's complement for negatives), None (0) or a
 * buffer (its address; writable when the object allows it). */
static int to_word(PyObject *obj, long *word, Py_buffer *view, int *held)
{
    if (obj == Py_None) {
        *word = 0;
        return 0;
    }
    if (PyLong_Check(obj)) {
        int overflow = 0;
        long long value = PyLong_AsLongLongAndOverflow(obj, &overflow);
        if (overflow > 0) {
            unsigned long long big = PyLong_AsUnsignedLongLong(obj);
            if (big == (unsigned long long)-1 && PyErr_Occurred())
                return -1;
            *word = (long)big;
            return 0;
        }
        if (overflow < 0 || (value == -1 && PyErr_Occurred())) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_OverflowError, "syscall argument out of range");
            return -1;
        }
        *word = (long)value;
        return 0;
    }
    if (PyObject_GetBuffer(obj, view, PyBUF_WRITABLE) != 0) {
        PyErr_Clear();
        if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) != 0) {
            PyErr_Format(PyExc_TypeError,
                         "syscall arguments are int, None or a buffer, not %R", obj);
            return -1;
        }
    }
    *held = 1;
    *word = (long)view->buf;
    return 0;
}

PyDoc_STRVAR(syscall_doc,
"syscall(number, *args) -> int\n\n"
"Invoke system call `number` with up to six arguments: ints (negative ones in\n"
"two's complement), None (NULL) or buffers, passed by address (bytes are\n"
"NUL-terminated; a bytearray is writable).  Raises OSError on failure.");

static PyObject *sys_syscall(PyObject *self, PyObject *args)
{
    Py_ssize_t count = PyTuple_Size(args);
    long number, words[MAX_ARGS] = {0};
    Py_buffer views[MAX_ARGS];
    int held[MAX_ARGS] = {0};
    PyObject *result = NULL;
    long ret;
    int saved;

    if (count < 1 || count > MAX_ARGS + 1) {
        PyErr_SetString(PyExc_TypeError, "syscall takes a number and up to 6 arguments");
        return NULL;
    }
    number = PyLong_AsLong(PyTuple_GetItem(args, 0));
    if (number == -1 && PyErr_Occurred())
        return NULL;
    for (Py_ssize_t i = 1; i < count; i++) {
        if (to_word(PyTuple_GetItem(args, i), &words[i - 1], &views[i - 1],
                    &held[i - 1]) != 0)
            goto done;
    }
    errno = 0;
    ret = syscall(number, words[0], words[1], words[2], words[3], words[4], words[5]);
    saved = errno;
    if (ret == -1) {
        errno = saved;
        PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    result = PyLong_FromLong(ret);
done:
    for (int i = 0; i < MAX_ARGS; i++)
        if (held[i])
            PyBuffer_Release(&views[i]);
    return result;
}

/* struct clone_args up to .cgroup (CLONE_ARGS_SIZE_VER2). */
struct clone_args_v2 {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls,
        set_tid, set_tid_size, cgroup;
};

#define FLATSTACK_CLONE_INTO_CGROUP 0x200000000ULL

PyDoc_STRVAR(clone3_doc,
"clone3(flags, cgroup_fd=-1) -> int\n\n"
"Fork with clone3(2): `flags` are CLONE_NEW* namespace flags; with a cgroup_fd,\n"
"CLONE_INTO_CGROUP starts the child in that cgroup2 directory.  Returns 0 in the\n"
"child and its pid in the parent, with the interpreter's fork bookkeeping\n"
"(PyOS_BeforeFork and AfterFork) around the call, as os.fork does.  Raises\n"
"OSError, making no child, when the kernel refuses.  Only for a single-threaded\n"
"caller (the C library's fork handlers do not run).");

static PyObject *sys_clone3(PyObject *self, PyObject *args)
{
    struct clone_args_v2 ca = {0};
    unsigned long long flags;
    int fd = -1;
    long pid;
    int saved;

    if (!PyArg_ParseTuple(args, "K|i", &flags, &fd))
        return NULL;
#ifdef SYS_clone3
    ca.flags = flags;
    if (fd >= 0) {
        ca.flags |= FLATSTACK_CLONE_INTO_CGROUP;
        ca.cgroup = (uint64_t)fd;
    }
    ca.exit_signal = SIGCHLD;
    PyOS_BeforeFork();
    pid = syscall(SYS_clone3, &ca, sizeof(ca));
    if (pid == 0) {
        PyOS_AfterFork_Child();
        return PyLong_FromLong(0);
    }
    saved = errno;
    PyOS_AfterFork_Parent();
    if (pid < 0) {
        errno = saved;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromLong(pid);
#else
    (void)ca; (void)pid; (void)saved; (void)flags;
    errno = ENOSYS;
    return PyErr_SetFromErrno(PyExc_OSError);
#endif
}

PyDoc_STRVAR(seccomp_filter_doc,
"seccomp_filter(flags, program) -> int\n\n"
"seccomp(SECCOMP_SET_MODE_FILTER, flags, &prog) for a BPF `program` (struct\n"
"sock_filter array, 8 bytes an instruction): the listener fd with\n"
"SECCOMP_FILTER_FLAG_NEW_LISTENER, else 0 (or a thread id TSYNC could not\n"
"synchronise).  Raises OSError.");

static PyObject *sys_seccomp_filter(PyObject *self, PyObject *args)
{
    unsigned long flags;
    Py_buffer program;
    struct sock_fprog fprog;
    long ret;
    int saved;

    if (!PyArg_ParseTuple(args, "ky*", &flags, &program))
        return NULL;
    if (program.len == 0 || program.len % sizeof(struct sock_filter) != 0 ||
        program.len / sizeof(struct sock_filter) > BPF_MAXINSNS) {
        PyBuffer_Release(&program);
        PyErr_SetString(PyExc_ValueError, "not a BPF program");
        return NULL;
    }
    fprog.len = (unsigned short)(program.len / sizeof(struct sock_filter));
    fprog.filter = program.buf;
    ret = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &fprog);
    saved = errno;
    PyBuffer_Release(&program);
    if (ret == -1) {
        errno = saved;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromLong(ret);
}

static PyMethodDef methods[] = {
    {"syscall", sys_syscall, METH_VARARGS, syscall_doc},
    {"clone3", sys_clone3, METH_VARARGS, clone3_doc},
    {"seccomp_filter", sys_seccomp_filter, METH_VARARGS, seccomp_filter_doc},
    {NULL, NULL, 0, NULL},
};

/* The numbers the runtime uses, as this machine's headers define them. */
static const struct { const char *name; long number; } numbers[] = {
#define NR(name) {#name, SYS_##name},
    NR(mount) NR(umount2) NR(pivot_root) NR(unshare) NR(setns) NR(prctl)
    NR(prlimit64) NR(fstatfs) NR(sethostname) NR(setdomainname) NR(capget) NR(capset)
    NR(personality) NR(ioprio_set) NR(ioprio_get) NR(sched_setattr) NR(sched_getattr)
    NR(seccomp)
#ifdef SYS_pidfd_send_signal
    NR(pidfd_send_signal)
#endif
#ifdef SYS_open_tree
    NR(open_tree) NR(move_mount) NR(fsopen) NR(fsconfig) NR(fsmount)
#endif
#ifdef SYS_pidfd_open
    NR(pidfd_open)
#endif
#ifdef SYS_clone3
    NR(clone3)
#endif
#ifdef SYS_close_range
    NR(close_range)
#endif
#ifdef SYS_openat2
    NR(openat2)
#endif
#ifdef SYS_pidfd_getfd
    NR(pidfd_getfd)
#endif
#ifdef SYS_mount_setattr
    NR(mount_setattr)
#endif
#ifdef SYS_landlock_create_ruleset
    NR(landlock_create_ruleset) NR(landlock_add_rule) NR(landlock_restrict_self)
#endif
#undef NR
};

static int sys_exec(PyObject *module)
{
    PyObject *table = PyDict_New();
    if (table == NULL)
        return -1;
    for (size_t i = 0; i < sizeof(numbers) / sizeof(numbers[0]); i++) {
        PyObject *value = PyLong_FromLong(numbers[i].number);
        if (value == NULL || PyDict_SetItemString(table, numbers[i].name, value) != 0) {
            Py_XDECREF(value);
            Py_DECREF(table);
            return -1;
        }
        Py_DECREF(value);
    }
    if (PyModule_AddObject(module, "NUMBERS", table) != 0) {
        Py_DECREF(table);
        return -1;
    }
    return 0;
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, sys_exec},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "flatstack.kernel._sys",
    "Raw system calls for the runtime, without ctypes.", 0, methods, slots,
    NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__sys(void)
{
    return PyModuleDef_Init(&module_def);
}
