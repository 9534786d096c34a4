"""Which instructions the native executor may run on the host CPU, and what it must
check first.  Pure analysis of a decoded instruction: no KVM, no host state
except the host's CPUID.

The guest chooses the instruction and it would run inside the hypervisor,
so admission is a whitelist, and every condition is necessary:

- iced's CPUID features are all in ``ALLOWED`` (x87, MMX, SSE to SSE4.2 and
  SSE4A, AVX/AVX2/FMA/F16C, AVX-512 families, AES/PCLMULQDQ/SHA/GFNI/VAES/
  VPCLMULQDQ, POPCNT/LZCNT/BMI1/BMI2/ADX/MOVBE, CMOV, AMD's FMA4/XOP/TBM) and
  the host has them (CPUID bit per feature, below): nothing privileged,
  no system, I/O, segment, TSX, XSAVE-family or CPUID-family instruction,
  nothing that reads host state (RDTSC*, RDPID, RDPKRU, RD*BASE, XGETBV,
  SMSW...), no RDRAND.  The few state instructions of these families that
  are allowed features (LDMXCSR/STMXCSR and VEX forms) are dispatched to
  their dedicated handlers before this.
- flow control "next"; not a stack, string, save/restore or privileged
  instruction (iced's classification); no VSIB (gathers and scatters).
- operands: registers other than segment, control, debug, test, bound and
  tile registers, RIP and the stack pointer (RSP/ESP/SP/SPL); immediates;
  at most one explicit memory operand, and no memory access but that one
  (e.g. MASKMOVQ's implicit [rDI] is refused); no stack pointer in iced's
  used registers (implicit uses); no conditional memory accesses and no
  masked memory operand (VMASKMOV*, VPMASKMOV*, AVX-512 masking: those
  suppress faults on masked-out elements, which a whole-operand copy would
  not).

The result, a ``NativePlan``, says which architectural checks apply before
running (#UD/#NM/#MF/alignment) and how the memory operand is used.  An
instruction is SSE/AVX (the guest's vector state, MXCSR and XCR0 apply) if
it names a vector register or its op-code has a vector register-or-memory
operand, whichever this encoding chose (CVTSD2SI eax, [m64] is SSE too).
"""

from __future__ import annotations

from dataclasses import dataclass

from iced_x86 import (
    CpuidFeature,
    EncodingKind,
    FlowControl,
    Instruction,
    InstructionInfoFactory,
    MemorySizeExt,
    Mnemonic,
    OpAccess,
    OpCodeOperandKind,
    OpKind,
    Register,
    RegisterExt,
)

from pyxen.hv.emulate.faults import Unsupported
from pyxen.hv.emulate.host import HostCpu
from pyxen.hv.emulate.xstate import XFEATURE_SSE, XFEATURE_YMM, XFEATURES_AVX512

CF = CpuidFeature

# Allowed features and where the host reports them: (leaf, subleaf, register
# index eax=0 ebx=1 ecx=2 edx=3, bit).
FEATURE_BITS: dict[int, tuple[int, int, int, int]] = {
    CF.FPU: (1, 0, 3, 0), CF.FPU287: (1, 0, 3, 0), CF.FPU387: (1, 0, 3, 0),
    CF.CMOV: (1, 0, 3, 15), CF.MMX: (1, 0, 3, 23), CF.SSE: (1, 0, 3, 25),
    CF.SSE2: (1, 0, 3, 26),
    CF.SSE3: (1, 0, 2, 0), CF.PCLMULQDQ: (1, 0, 2, 1), CF.SSSE3: (1, 0, 2, 9),
    CF.FMA: (1, 0, 2, 12), CF.SSE4_1: (1, 0, 2, 19), CF.SSE4_2: (1, 0, 2, 20),
    CF.MOVBE: (1, 0, 2, 22), CF.POPCNT: (1, 0, 2, 23), CF.AES: (1, 0, 2, 25),
    CF.AVX: (1, 0, 2, 28), CF.F16C: (1, 0, 2, 29),
    CF.BMI1: (7, 0, 1, 3), CF.AVX2: (7, 0, 1, 5), CF.BMI2: (7, 0, 1, 8),
    CF.AVX512F: (7, 0, 1, 16), CF.AVX512DQ: (7, 0, 1, 17), CF.ADX: (7, 0, 1, 19),
    CF.AVX512_IFMA: (7, 0, 1, 21), CF.AVX512CD: (7, 0, 1, 28), CF.SHA: (7, 0, 1, 29),
    CF.AVX512BW: (7, 0, 1, 30), CF.AVX512VL: (7, 0, 1, 31),
    CF.AVX512_VBMI: (7, 0, 2, 1), CF.AVX512_VBMI2: (7, 0, 2, 6), CF.GFNI: (7, 0, 2, 8),
    CF.VAES: (7, 0, 2, 9), CF.VPCLMULQDQ: (7, 0, 2, 10), CF.AVX512_VNNI: (7, 0, 2, 11),
    CF.AVX512_BITALG: (7, 0, 2, 12), CF.AVX512_VPOPCNTDQ: (7, 0, 2, 14),
    CF.AVX_VNNI: (7, 1, 0, 4), CF.AVX512_BF16: (7, 1, 0, 5),
    CF.LZCNT: (0x8000_0001, 0, 2, 5), CF.SSE4A: (0x8000_0001, 0, 2, 6),
    CF.XOP: (0x8000_0001, 0, 2, 11), CF.FMA4: (0x8000_0001, 0, 2, 16),
    CF.TBM: (0x8000_0001, 0, 2, 21),
}
ALLOWED = frozenset(FEATURE_BITS)
X87_FEATURES = frozenset({CF.FPU, CF.FPU287, CF.FPU387})

# x87 instructions that do not wait for pending exceptions (the "FN" forms).
NO_WAIT = frozenset({Mnemonic.FNINIT, Mnemonic.FNCLEX, Mnemonic.FNSTCW, Mnemonic.FNSTSW,
                     Mnemonic.FNSTENV, Mnemonic.FNSAVE, Mnemonic.FNDISI, Mnemonic.FNENI,
                     Mnemonic.FNSETPM})
# x87 control instructions: they leave FIP, FDP and FOP alone (SDM 1 8.1.8);
# (F)INIT and (F)SAVE clear them, FLDENV and FRSTOR load them.
X87_CONTROL = NO_WAIT | frozenset({
    Mnemonic.FINIT, Mnemonic.FCLEX, Mnemonic.FSTCW, Mnemonic.FSTSW, Mnemonic.FSTENV,
    Mnemonic.FSAVE, Mnemonic.FLDCW, Mnemonic.FLDENV, Mnemonic.FRSTOR})
# Legacy SSE instructions whose 16-byte memory operand need not be aligned.
UNALIGNED_SSE = frozenset({Mnemonic.MOVUPS, Mnemonic.MOVUPD, Mnemonic.MOVDQU, Mnemonic.LDDQU,
                           Mnemonic.PCMPESTRI, Mnemonic.PCMPESTRM, Mnemonic.PCMPISTRI,
                           Mnemonic.PCMPISTRM, Mnemonic.PCMPESTRI64, Mnemonic.PCMPESTRM64})
# Moves that require natural alignment in every encoding.
ALIGNED_MOVES = frozenset({
    Mnemonic.MOVAPS, Mnemonic.MOVAPD, Mnemonic.MOVDQA, Mnemonic.MOVNTPS, Mnemonic.MOVNTPD,
    Mnemonic.MOVNTDQ, Mnemonic.MOVNTDQA, Mnemonic.VMOVAPS, Mnemonic.VMOVAPD,
    Mnemonic.VMOVDQA, Mnemonic.VMOVDQA32, Mnemonic.VMOVDQA64, Mnemonic.VMOVNTPS,
    Mnemonic.VMOVNTPD, Mnemonic.VMOVNTDQ, Mnemonic.VMOVNTDQA})
MASKED_MOVES = frozenset({Mnemonic.VMASKMOVPS, Mnemonic.VMASKMOVPD, Mnemonic.VPMASKMOVD,
                          Mnemonic.VPMASKMOVQ, Mnemonic.MASKMOVQ, Mnemonic.MASKMOVDQU,
                          Mnemonic.VMASKMOVDQU})
_STACK_POINTERS = frozenset({Register.RSP, Register.ESP, Register.SP, Register.SPL})
_ACCESS = {OpAccess.READ: (True, False), OpAccess.WRITE: (False, True),
           OpAccess.READ_WRITE: (True, True), OpAccess.NONE: (False, False),
           OpAccess.NO_MEM_ACCESS: (False, False)}
_info_factory = InstructionInfoFactory()
_KIND_NAMES = {name: kind for name, kind in vars(OpCodeOperandKind).items() if name.isupper()}
_VECTOR_KINDS = frozenset(kind for name, kind in _KIND_NAMES.items()
                          if name.startswith(("XMM", "YMM", "ZMM")))


def _operand_kinds(instr: Instruction) -> frozenset[int]:
    """The operand kinds of the instruction's op-code (register-or-memory kinds
    included, whichever this encoding chose)."""
    op_code = instr.op_code()
    return frozenset(op_code.op_kind(i) for i in range(op_code.op_count))


@dataclass(frozen=True, slots=True)
class NativePlan:
    x87: bool  # an x87 instruction: CR0.EM/TS -> #NM, FIP/FDP/FOP bookkeeping
    x87_control: bool  # ... one that leaves FIP/FDP/FOP alone
    mmx: bool  # uses MMX registers: CR0.EM -> #UD, CR0.TS -> #NM
    waits: bool  # takes a pending x87 exception first (#MF)
    sse: bool  # legacy SSE on XMM registers: CR0.EM or !CR4.OSFXSR -> #UD, TS -> #NM
    xcr0: int  # XCR0 bits VEX/EVEX need (with CR4.OSXSAVE), 0 for none
    vex_gpr: bool  # VEX-encoded general-register instruction (#UD in real/V86 mode)
    vector: bool  # touches x87/MMX/SSE/AVX state at all (else no XSAVE round trip)
    mem_size: int  # bytes of the memory operand, 0 without one
    mem_read: bool
    mem_write: bool
    align: int  # alignment the memory operand needs (0: none); see aligned_to()
    align_unless_mm: bool  # legacy-SSE alignment, lifted by AMD's MXCSR.MM


def _check_operands(instr: Instruction) -> int | None:
    memory = None
    for i in range(instr.op_count):
        kind = instr.op_kind(i)
        if kind == OpKind.REGISTER:
            reg = instr.op_register(i)
            if (RegisterExt.is_segment_register(reg) or RegisterExt.is_cr(reg)
                    or RegisterExt.is_dr(reg) or RegisterExt.is_tr(reg)
                    or RegisterExt.is_bnd(reg) or RegisterExt.is_tmm(reg)
                    or RegisterExt.is_ip(reg)):
                raise Unsupported("a segment, control, debug, bound, tile or instruction "
                                  "pointer register operand")
            if reg in _STACK_POINTERS:
                raise Unsupported("the stack pointer as an operand")
        elif kind == OpKind.MEMORY:
            if memory is not None:
                raise Unsupported("two memory operands")
            memory = i
        elif kind not in (OpKind.IMMEDIATE8, OpKind.IMMEDIATE8_2ND, OpKind.IMMEDIATE16,
                          OpKind.IMMEDIATE32, OpKind.IMMEDIATE64, OpKind.IMMEDIATE8TO16,
                          OpKind.IMMEDIATE8TO32, OpKind.IMMEDIATE8TO64,
                          OpKind.IMMEDIATE32TO64):
            raise Unsupported(f"operand kind {kind} is not allowed natively")
    return memory


def analyse(instr: Instruction, host: HostCpu) -> NativePlan:
    """The plan for running ``instr`` natively, or Unsupported saying why it may not."""
    features = set(instr.cpuid_features())
    if not features or not features <= ALLOWED:
        raise Unsupported("not in the native executor's whitelist")
    for f in features:
        if not host.has(*FEATURE_BITS[f]):
            raise Unsupported(f"the host CPU lacks CPUID feature {f}")
    if instr.flow_control != FlowControl.NEXT:
        raise Unsupported("changes control flow")
    if (instr.is_privileged or instr.is_stack_instruction or instr.is_string_instruction
            or instr.is_save_restore_instruction or instr.is_vsib):
        raise Unsupported("privileged, stack, string, save/restore or VSIB instruction")
    if instr.mnemonic in MASKED_MOVES:
        raise Unsupported("masked memory access")
    memory = _check_operands(instr)
    info = _info_factory.info(instr)
    # The memory operand's base and index only form the guest's address (the
    # executed copy addresses the scratch buffer); any other use is refused.
    addressing = {instr.memory_base, instr.memory_index} if memory is not None else set()
    for used in info.used_registers():
        if used.register in _STACK_POINTERS and used.register not in addressing:
            raise Unsupported("uses the stack pointer")
    accesses = info.used_memory()
    mem_read = mem_write = False
    mem_size = 0
    if accesses:
        if memory is None or len(accesses) != 1:
            raise Unsupported("implicit memory access")
        access = accesses[0].access
        if access not in _ACCESS:
            raise Unsupported("conditional memory access")
        mem_read, mem_write = _ACCESS[access]
        if instr.has_op_mask:
            raise Unsupported("masked memory operand")
    if memory is not None:
        mem_size = MemorySizeExt.size(instr.memory_size)
        if not 0 < mem_size <= 512:
            raise Unsupported(f"memory operand of {mem_size} bytes")
    regs = [instr.op_register(i) for i in range(instr.op_count)
            if instr.op_kind(i) == OpKind.REGISTER]
    regs += [used.register for used in info.used_registers()]  # implicit ones too
    x87 = bool(features & X87_FEATURES)
    # The op-code's operand kinds too: an "xmm/m64" operand that is memory in this
    # encoding (CVTSD2SI eax, [m64]) names no vector register, yet the instruction is
    # SSE/AVX (MXCSR, CR0.TS, XCR0) like its register form.
    # (Not so for MMX: CVTPI2PS xmm, [m64] makes no MMX transition and takes no #MF.)
    mmx = any(RegisterExt.is_mm(r) for r in regs) or instr.mnemonic == Mnemonic.EMMS
    xmm = (any(RegisterExt.is_vector_register(r) for r in regs)
           or bool(_operand_kinds(instr) & _VECTOR_KINDS))
    kregs = any(RegisterExt.is_k(r) for r in regs) or instr.has_op_mask
    encoding = instr.encoding
    if encoding == EncodingKind.EVEX or kregs:
        xcr0 = XFEATURE_SSE | XFEATURE_YMM | XFEATURES_AVX512
    elif encoding in (EncodingKind.VEX, EncodingKind.XOP):
        xcr0 = XFEATURE_SSE | XFEATURE_YMM if xmm else 0  # BMI, TBM: general registers
    elif encoding == EncodingKind.LEGACY:
        xcr0 = 0
    else:
        raise Unsupported("an encoding (3DNow!/MVEX) not allowed natively")
    sse = encoding == EncodingKind.LEGACY and xmm
    align = 0
    align_unless_mm = False
    if mem_size:
        if instr.mnemonic in ALIGNED_MOVES:
            align = mem_size
        elif sse and mem_size == 16 and instr.mnemonic not in UNALIGNED_SSE:
            align, align_unless_mm = 16, True
    return NativePlan(
        x87=x87, x87_control=x87 and instr.mnemonic in X87_CONTROL, mmx=mmx,
        waits=(x87 and instr.mnemonic not in NO_WAIT) or mmx, sse=sse, xcr0=xcr0,
        vex_gpr=encoding != EncodingKind.LEGACY and not xmm and not kregs,
        vector=x87 or mmx or xmm or kregs, mem_size=mem_size, mem_read=mem_read,
        mem_write=mem_write, align=align, align_unless_mm=align_unless_mm)
