"""Triton building blocks shared by sixn's kernels: the one block product.

Import the helpers by name (`from .blocks import dot`): a @triton.jit function called from a kernel
must be a global of the calling module, both in the interpreter and compiled. The constexprs come
from runtime.dot_policy (PRECISION, UPCAST) on the host.
"""

import triton
import triton.language as tl


@triton.jit
def dot(a, b, acc, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """acc + a @ b in fp32 (acc None: a @ b), the only tl.dot of the kernels. PRECISION is tl.dot's
    input_precision ("ieee" or "tf32"); UPCAST multiplies the blocks as fp32 (bf16 in the
    interpreter, see runtime.DotPolicy)."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    else:
        return tl.dot(a, b, acc, input_precision=PRECISION)
