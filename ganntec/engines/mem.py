"""Plain (non-atomic) typed loads and stores at raw addresses, for engine-private state.

Engines keep their state in numpy arrays but their compiled helpers take the arrays' base
*addresses* (ints): a small @njit helper that takes arrays gets NRT incref/decref calls around
every call (measured 6.5 -> 128 ns per message), while int-only helpers compile to bare loads
and stores and inline into the caller. Every load returns int64 (zero- or sign-extended) so
engine arithmetic never mixes unsigned and signed types (numba turns uint64 + int64 into a
float). Stores truncate an int64 to the field's width.

Shared counters between processes never use these: they go through `ganntec.shm.atomics`.
"""

from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic


def _make_load(bits: int, signed: bool, doc: str):
    ity = ir.IntType(bits)

    @intrinsic
    def load(typingctx, addr):
        if not isinstance(addr, types.Integer):
            return None

        def codegen(context, builder, sig, args):
            a = context.cast(builder, args[0], sig.args[0], types.int64)
            v = builder.load(builder.inttoptr(a, ity.as_pointer()), align=1 if bits > 8 else None)
            if bits == 64:
                return v
            return builder.sext(v, ir.IntType(64)) if signed else builder.zext(v, ir.IntType(64))

        return types.int64(addr), codegen

    load.__doc__ = doc
    return load


def _make_store(bits: int, doc: str):
    ity = ir.IntType(bits)

    @intrinsic
    def store(typingctx, addr, value):
        if not (isinstance(addr, types.Integer) and isinstance(value, (types.Integer, types.Boolean))):
            return None

        def codegen(context, builder, sig, args):
            a = context.cast(builder, args[0], sig.args[0], types.int64)
            v = context.cast(builder, args[1], sig.args[1], types.int64)
            if bits != 64:
                v = builder.trunc(v, ity)
            builder.store(v, builder.inttoptr(a, ity.as_pointer()), align=1 if bits > 8 else None)
            return context.get_dummy_value()

        return types.none(addr, value), codegen

    store.__doc__ = doc
    return store


ld_i64 = _make_load(64, True, "int64 at addr")
ld_i32 = _make_load(32, True, "int32 at addr, as int64")
ld_u32 = _make_load(32, False, "uint32 at addr, as int64")
ld_u16 = _make_load(16, False, "uint16 at addr, as int64")
ld_u8 = _make_load(8, False, "uint8 at addr, as int64")
st_i64 = _make_store(64, "store int64 at addr")
st_i32 = _make_store(32, "store the low 32 bits at addr")
st_u16 = _make_store(16, "store the low 16 bits at addr")
st_u8 = _make_store(8, "store the low 8 bits at addr")
st_u32 = st_i32


@intrinsic
def bit_length(typingctx, value):
    """Bits needed to write a non-negative int64 (0 for 0): one `lzcnt`, where a shift loop
    costs a step per bit (stats histograms bucket every value by it)."""
    if not isinstance(value, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        v = context.cast(builder, args[0], sig.args[0], types.int64)
        i64 = ir.IntType(64)
        ctlz = builder.module.declare_intrinsic("llvm.ctlz", [i64, ir.IntType(1)])
        zeros = builder.call(ctlz, [v, ir.Constant(ir.IntType(1), 0)])  # defined for 0: 64
        return builder.sub(ir.Constant(i64, 64), zeros)

    return types.int64(value), codegen


@intrinsic
def zero_bytes(typingctx, addr, nbytes):
    """memset(addr, 0, nbytes)."""
    if not (isinstance(addr, types.Integer) and isinstance(nbytes, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        i8p = ir.IntType(8).as_pointer()
        a = builder.inttoptr(context.cast(builder, args[0], sig.args[0], types.int64), i8p)
        n = context.cast(builder, args[1], sig.args[1], types.int64)
        fn = builder.module.declare_intrinsic("llvm.memset", [i8p, ir.IntType(64)])
        builder.call(fn, [a, ir.Constant(ir.IntType(8), 0), n, ir.Constant(ir.IntType(1), 0)])
        return context.get_dummy_value()

    return types.none(addr, nbytes), codegen


@intrinsic
def move_bytes(typingctx, dst, src, nbytes):
    """memmove(dst, src, nbytes): overlapping ranges allowed (sorted-array inserts/deletes)."""
    if not (isinstance(dst, types.Integer) and isinstance(src, types.Integer) and isinstance(nbytes, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        i8p = ir.IntType(8).as_pointer()
        d = builder.inttoptr(context.cast(builder, args[0], sig.args[0], types.int64), i8p)
        s = builder.inttoptr(context.cast(builder, args[1], sig.args[1], types.int64), i8p)
        n = context.cast(builder, args[2], sig.args[2], types.int64)
        fn = builder.module.declare_intrinsic("llvm.memmove", [i8p, i8p, ir.IntType(64)])
        builder.call(fn, [d, s, n, ir.Constant(ir.IntType(1), 0)])
        return context.get_dummy_value()

    return types.none(dst, src, nbytes), codegen


# --- free lists: an int32 stack of free slot indexes and its count (an int64 at count_addr) ---
@njit(cache=True, nogil=True)
def slot_take(stack, count_addr):
    """Pop a free slot index (the caller checked the count is > 0)."""
    n = ld_i64(count_addr) - 1
    st_i64(count_addr, n)
    return ld_i32(stack + 4 * n)


@njit(cache=True, nogil=True)
def slot_give(stack, count_addr, slot):
    """Push a slot index back onto the free list."""
    n = ld_i64(count_addr)
    st_i32(stack + 4 * n, slot)
    st_i64(count_addr, n + 1)
