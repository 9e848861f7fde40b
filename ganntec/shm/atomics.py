"""Atomic memory access for shared counters, as numba intrinsics.

Every cross-process counter in Ganntec is read and written through these functions and
nothing else (DESIGN §4). They take a raw *address* (an int64: segment base + offset), never an
array: a small @njit helper that takes arrays makes numba emit NRT incref/decref calls around
every call, which was measured at 6.5 -> 128 ns per message. Integer-only helpers compile to a
bare `load atomic`/`store atomic` and inline into the caller.

Memory orders (LLVM names):
  load_acquire / store_release   the publish/consume pair of every SPSC counter
  load_relaxed / store_relaxed   a side's own counter, statistics, heartbeats
  exchange_seqcst                sleep/wake handshake (the waker claims the sleeper's flag)
  compare_exchange_seqcst        claiming a ring role (one producer, one consumer)
  copy_bytes                     slot payload copies (plain memcpy; ordered by the counters)
  fence_seqcst                   store->load ordering of the sleep/wake handshake
  fence_acquire / fence_release  seqlock readers and writers

A plain load in a spin loop may be hoisted by LLVM into an infinite `jmp .` (measured on this
machine); an atomic load never is. `cpu_pause` and `rdtsc` are for spin loops and latency
stamps only; engines never read the TSC.
"""

from __future__ import annotations

import platform

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

_I64 = ir.IntType(64)
_I64_PTR = _I64.as_pointer()
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")


def _ptr(builder, addr):
    return builder.inttoptr(addr, _I64_PTR)


def _address_arg(addr) -> bool:
    return isinstance(addr, types.Integer)


@intrinsic
def load_acquire(typingctx, addr):
    """int64 at `addr`, loaded with acquire ordering."""
    if not _address_arg(addr):
        return None

    def codegen(context, builder, sig, args):
        a = context.cast(builder, args[0], sig.args[0], types.int64)
        return builder.load_atomic(_ptr(builder, a), "acquire", 8)

    return types.int64(addr), codegen


@intrinsic
def load_relaxed(typingctx, addr):
    """int64 at `addr`, loaded atomically with no ordering (LLVM monotonic)."""
    if not _address_arg(addr):
        return None

    def codegen(context, builder, sig, args):
        a = context.cast(builder, args[0], sig.args[0], types.int64)
        return builder.load_atomic(_ptr(builder, a), "monotonic", 8)

    return types.int64(addr), codegen


def _make_store(order: str, doc: str):
    @intrinsic
    def store(typingctx, addr, value):
        if not (_address_arg(addr) and isinstance(value, types.Integer)):
            return None

        def codegen(context, builder, sig, args):
            a = context.cast(builder, args[0], sig.args[0], types.int64)
            v = context.cast(builder, args[1], sig.args[1], types.int64)
            builder.store_atomic(v, _ptr(builder, a), order, 8)
            return context.get_dummy_value()

        return types.none(addr, value), codegen

    store.__doc__ = doc
    return store


store_release = _make_store("release", "Store int64 `value` at `addr` with release ordering.")
store_relaxed = _make_store("monotonic", "Store int64 `value` at `addr` atomically, no ordering.")
store_seqcst = _make_store("seq_cst", "Store int64 `value` at `addr`, sequentially consistent.")


@intrinsic
def exchange_seqcst(typingctx, addr, value):
    """Atomically replace the int64 at `addr` with `value`; return the old value."""
    if not (_address_arg(addr) and isinstance(value, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        a = context.cast(builder, args[0], sig.args[0], types.int64)
        v = context.cast(builder, args[1], sig.args[1], types.int64)
        return builder.atomic_rmw("xchg", _ptr(builder, a), v, "seq_cst")

    return types.int64(addr, value), codegen


@intrinsic
def fetch_add_seqcst(typingctx, addr, value):
    """Atomically add `value` to the int64 at `addr`; return the old value."""
    if not (_address_arg(addr) and isinstance(value, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        a = context.cast(builder, args[0], sig.args[0], types.int64)
        v = context.cast(builder, args[1], sig.args[1], types.int64)
        return builder.atomic_rmw("add", _ptr(builder, a), v, "seq_cst")

    return types.int64(addr, value), codegen


@intrinsic
def compare_exchange_seqcst(typingctx, addr, expected, desired):
    """If the int64 at `addr` equals `expected`, store `desired`. Returns the value found."""
    if not (_address_arg(addr) and isinstance(expected, types.Integer) and isinstance(desired, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        a = context.cast(builder, args[0], sig.args[0], types.int64)
        e = context.cast(builder, args[1], sig.args[1], types.int64)
        d = context.cast(builder, args[2], sig.args[2], types.int64)
        pair = builder.cmpxchg(_ptr(builder, a), e, d, "seq_cst", "seq_cst")
        return builder.extract_value(pair, 0)

    return types.int64(addr, expected, desired), codegen


@intrinsic
def copy_bytes(typingctx, dst, src, nbytes):
    """memcpy(dst, src, nbytes) between addresses (plain, non-atomic: slot payloads)."""
    if not (_address_arg(dst) and _address_arg(src) and isinstance(nbytes, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        i8p = ir.IntType(8).as_pointer()
        d = builder.inttoptr(context.cast(builder, args[0], sig.args[0], types.int64), i8p)
        s = builder.inttoptr(context.cast(builder, args[1], sig.args[1], types.int64), i8p)
        n = context.cast(builder, args[2], sig.args[2], types.int64)
        fn = builder.module.declare_intrinsic("llvm.memcpy", [i8p, i8p, _I64])
        builder.call(fn, [d, s, n, ir.Constant(ir.IntType(1), 0)])
        return context.get_dummy_value()

    return types.none(dst, src, nbytes), codegen


def _make_fence(order: str, doc: str):
    @intrinsic
    def fence(typingctx):
        def codegen(context, builder, sig, args):
            builder.fence(order)
            return context.get_dummy_value()

        return types.none(), codegen

    fence.__doc__ = doc
    return fence


fence_seqcst = _make_fence("seq_cst", "Full fence: no load moves above an earlier store.")
fence_acquire = _make_fence("acquire", "No later access moves above earlier loads.")
fence_release = _make_fence("release", "No earlier access moves below later stores.")


@intrinsic
def cpu_pause(typingctx):
    """PAUSE: tell the core we are spinning (frees the sibling hyperthread, saves power)."""

    def codegen(context, builder, sig, args):
        if _X86:
            fn = builder.module.declare_intrinsic("llvm.x86.sse2.pause", fnty=ir.FunctionType(ir.VoidType(), []))
            builder.call(fn, [])
        return context.get_dummy_value()

    return types.none(), codegen


@intrinsic
def rdtsc(typingctx):
    """The CPU's cycle counter (TSC on x86). For spin budgets and benchmark stamps only."""

    def codegen(context, builder, sig, args):
        fn = builder.module.declare_intrinsic("llvm.readcyclecounter", fnty=ir.FunctionType(_I64, []))
        return builder.call(fn, [])

    return types.int64(), codegen


# Thin Python entry points (tests, tools). Each costs a Python->numba call (~70 ns); hot
# paths call the intrinsics directly from @njit code.
@njit(cache=True, nogil=True)
def py_load_acquire(addr):
    return load_acquire(addr)


@njit(cache=True, nogil=True)
def py_store_release(addr, value):
    store_release(addr, value)


@njit(cache=True, nogil=True)
def py_exchange(addr, value):
    return exchange_seqcst(addr, value)


@njit(cache=True, nogil=True)
def py_compare_exchange(addr, expected, desired):
    return compare_exchange_seqcst(addr, expected, desired)


@njit(cache=True, nogil=True)
def py_store_relaxed(addr, value):
    store_relaxed(addr, value)


@njit(cache=True, nogil=True)
def py_load_relaxed(addr):
    return load_relaxed(addr)


@njit(cache=True, nogil=True)
def py_rdtsc():
    return rdtsc()
