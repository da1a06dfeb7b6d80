"""Thin ctypes layer for the system calls Python 3.11 lacks.

Everything that talks to the kernel below the os module goes through here, so
there is one place that knows syscall numbers, flag values and errno handling.
"""
