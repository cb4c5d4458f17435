"""AArch64 programs built and run on any x86-64 machine with PyPI tools only: the NEON
kernels of the CPU backend checked without an ARM machine, a cross toolchain or qemu.

- `build_ggml`: static libggml-base.a and libggml-cpu.a for aarch64-linux-musl from a
  patched tree, with cmake and zig (the `ziglang` wheel) as the C/C++ compiler; cached
  under the tqllama cache by a hash of the tree's ggml sources and the toolchain.
- `build_program`: a test program of tests/c/ linked statically against them, with the
  kernel files compiled into it for one `Target` (with or without the dot product).
- `run`: that static ELF run under unicorn (the `unicorn` wheel, QEMU's CPU as a library)
  as a Linux process: its segments loaded, the kernel's initial stack, and the few system
  calls a single-threaded musl program makes answered here.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import shlex
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tqlab.tools import kernel_sources
from tqllama import paths, proc
from tqllama.build import hash_files
from tqllama.errors import TqError

ZIG_TARGET = "aarch64-linux-musl"

# Linux's AT_HWCAP bits for AArch64 (arch/arm64/include/uapi/asm/hwcap.h)
HWCAP_FP = 1 << 0
HWCAP_ASIMD = 1 << 1
HWCAP_ASIMDDP = 1 << 20


@dataclass(frozen=True)
class Target:
    """One AArch64 code path: `march` as gcc and clang spell it, `mcpu` as zig does (zig cc
    reads -march as a CPU name), and the AT_HWCAP a CPU of that kind reports."""

    march: str
    mcpu: str
    hwcap: int


DOTPROD = Target("armv8.2-a+dotprod", "generic+v8_2a+dotprod",
                 HWCAP_FP | HWCAP_ASIMD | HWCAP_ASIMDDP)
BASELINE = Target("armv8-a", "generic", HWCAP_FP | HWCAP_ASIMD)


@dataclass(frozen=True)
class Exit:
    """How an emulated program ended: its exit status (minus the signal's number when it
    killed itself, as abort() does: like subprocess's returncode) and what it wrote to fd 1
    and 2."""

    status: int
    stdout: str
    stderr: str


class EmulationError(TqError):
    """The program did something the emulation does not provide, or did not exit."""


# ---------------------------------------------------------------------------------------
# the toolchain

# What the static libraries are built with, besides the compiler: no llama.cpp tools or
# tests, no OpenMP (musl has none, and the kernels run single-threaded), no -mcpu=native
# (the host is x86): the baseline armv8-a, whose NEON every AArch64 CPU has.
_CMAKE_ARGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DCMAKE_SYSTEM_NAME=Linux",
    "-DCMAKE_SYSTEM_PROCESSOR=aarch64",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DGGML_NATIVE=OFF",
    "-DGGML_OPENMP=OFF",
    "-DLLAMA_BUILD_COMMON=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_TOOLS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
)
_LIBRARIES = ("libggml-cpu.a", "libggml-base.a")  # in link order: cpu needs base


def _root() -> Path:
    return paths.cache_dir() / "aarch64"


def _zig(*args: str) -> list[str]:
    if importlib.util.find_spec("ziglang") is None:
        raise TqError("zig not found: pip install -e '.[dev]' (the ziglang wheel)")
    return [sys.executable, "-m", "ziglang", *args]


def toolchain() -> dict[str, Path]:
    """Wrapper scripts around zig for cmake, which takes one executable per tool: `cc` and
    `c++` for aarch64-linux-musl, `ar` and `ranlib` (the host's binutils may not know
    AArch64 objects, and lld wants an archive index)."""
    bin_dir = _root() / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    tools: dict[str, Path] = {}
    for tool in ("cc", "c++", "ar", "ranlib"):
        target = ["-target", ZIG_TARGET] if tool in ("cc", "c++") else []
        script = f'#!/bin/sh\nexec {shlex.join(_zig(tool, *target))} "$@"\n'
        path = bin_dir / f"zig-{tool}"
        if not path.is_file() or path.read_text() != script:
            path.write_text(script)
            path.chmod(0o755)
        tools[tool] = path
    return tools


def _zig_version() -> str:
    result = subprocess.run(_zig("version"), capture_output=True, text=True, check=True)
    return result.stdout.strip()


# ---------------------------------------------------------------------------------------
# the static libraries


@contextmanager
def _lock() -> Iterator[None]:
    """One build at a time across processes: pytest runs of several people share the cache."""
    _root().mkdir(parents=True, exist_ok=True)
    with (_root() / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _key(tree: Path) -> str:
    """What the libraries depend on: ggml's sources and the top-level CMake files that
    configure them, the build options and zig's version."""
    digest = hashlib.sha256()
    hash_files(digest, "ggml", tree / "ggml")
    hash_files(digest, "cmake", tree / "cmake")
    digest.update((tree / "CMakeLists.txt").read_bytes())
    digest.update("\0".join([*_CMAKE_ARGS, _zig_version()]).encode())
    return digest.hexdigest()


def build_ggml(tree: Path) -> dict[str, Path]:
    """libggml-base.a and libggml-cpu.a for aarch64 from the patched llama.cpp `tree`:
    {file name: path}, in link order.

    Minutes when cold (zig also builds musl and libc++ once into its own cache); with the
    same sources a stamp says the libraries are current and nothing runs. One build
    directory, so a changed tree recompiles only what changed.
    """
    if shutil.which("cmake") is None:
        raise TqError("cmake not found: install CMake 3.14+ (e.g. `pip install cmake`)")
    tools = toolchain()
    key = _key(tree)
    bdir = _root() / "build"
    stamp = bdir / "tqlab-key"
    libs = {name: bdir / "ggml" / "src" / name for name in _LIBRARIES}
    with _lock():
        if stamp.is_file() and stamp.read_text() == key and all(p.is_file() for p in libs.values()):
            return libs
        stamp.unlink(missing_ok=True)
        # a stale cache would keep a tree or compiler path of the last configure
        (bdir / "CMakeCache.txt").unlink(missing_ok=True)
        log = bdir / "build.log"
        generator = ["-G", "Ninja"] if shutil.which("ninja") else []
        proc.run(["cmake", "-S", str(tree), "-B", str(bdir), *generator, *_CMAKE_ARGS,
                  f"-DCMAKE_C_COMPILER={tools['cc']}", f"-DCMAKE_CXX_COMPILER={tools['c++']}",
                  f"-DCMAKE_AR={tools['ar']}", f"-DCMAKE_RANLIB={tools['ranlib']}"],
                 log, what="cmake configure (aarch64)")
        with proc.BuildSteps() as steps:
            proc.run(["cmake", "--build", str(bdir), "-j", str(os.cpu_count() or 2),
                      "--target", "ggml-base", "ggml-cpu"],
                     log, append=True, what="the aarch64 build of ggml", on_line=steps.line)
        missing = [name for name, path in libs.items() if not path.is_file()]
        if missing:
            raise TqError(f"the aarch64 build finished without {', '.join(missing)}; see {log}")
        stamp.write_text(key)
    return libs


def build_program(tree: Path, source: Path, target: Target, out_dir: Path) -> Path:
    """`source` (a C file) and the kernel files compiled for `target`, linked statically
    with the aarch64 libggml-cpu.a and libggml-base.a: the executable's path.

    The kernel files are also in libggml-cpu.a, built for the baseline. A linker takes a
    member out of an archive only for a symbol that no object given to it defines, and
    the program's objects define every kernel symbol, so the library's copies are never
    taken (if one ever were, for a symbol only it has, lld would stop at the duplicates
    instead of choosing). The rest of the library (the type traits, q8_0) serves both
    targets.
    """
    libs = build_ggml(tree)
    ggml = tree / "ggml"
    out_dir.mkdir(parents=True, exist_ok=True)
    tools = toolchain()
    objects = []
    for src in [source, *kernel_sources(tree, "arm")]:
        obj = out_dir / f"{src.parent.name}-{src.stem}.o"
        # -ffp-contract=off as the build gives these files: the quantizer is bit-exact with
        # the reference only without fused multiply-adds
        _compile([str(tools["cc"]), "-O2", "-std=gnu11", "-ffp-contract=off",
                  f"-mcpu={target.mcpu}", "-I", str(ggml / "src"),
                  "-I", str(ggml / "src" / "ggml-cpu"), "-I", str(ggml / "include"),
                  "-c", str(src), "-o", str(obj)])
        objects.append(str(obj))
    exe = out_dir / source.stem
    # zig c++ links libc++, which libggml's C++ objects need; no -mcpu here, so zig's
    # libc and libc++ for the baseline serve every target from its cache
    _compile([str(tools["c++"]), "-static", *objects, *(str(p) for p in libs.values()),
              "-o", str(exe)])
    return exe


def _compile(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise TqError(f"{Path(cmd[0]).name} failed: {result.stderr.strip()[-2000:]}")


# ---------------------------------------------------------------------------------------
# the emulator

_PAGE = 0x1000
# Where the stack, the program break and anonymous mappings live: low enough for the
# emulated CPU's physical address space (unicorn runs with the MMU off), apart enough
# that none can grow into another.
_STACK_TOP = 0x7F_0000_0000
_STACK_SIZE = 8 << 20
_MMAP_BASE = 0x40_0000_0000

# Linux's AArch64 system call numbers (the generic table, include/uapi/asm-generic/unistd.h)
_SYS = {
    "ioctl": 29, "openat": 56, "close": 57, "read": 63, "write": 64, "writev": 66,
    "exit": 93, "exit_group": 94, "set_tid_address": 96, "futex": 98, "clock_gettime": 113,
    "sched_getaffinity": 123, "tkill": 130, "tgkill": 131, "rt_sigaction": 134,
    "rt_sigprocmask": 135, "getpid": 172, "gettid": 178, "brk": 214, "munmap": 215,
    "mremap": 216, "mmap": 222, "mprotect": 226, "madvise": 233, "getrandom": 278,
}
_ENOENT, _EBADF, _ENOMEM, _EINVAL, _ENOTTY = 2, 9, 12, 22, 25
_MAP_FIXED, _MAP_ANONYMOUS = 0x10, 0x20
_MREMAP_MAYMOVE = 1
_MADV_DONTNEED = 4

# auxiliary vector keys (include/uapi/linux/auxvec.h)
_AT_NULL, _AT_PHDR, _AT_PHENT, _AT_PHNUM, _AT_PAGESZ = 0, 3, 4, 5, 6
_AT_ENTRY, _AT_UID, _AT_EUID, _AT_GID, _AT_EGID = 9, 11, 12, 13, 14
_AT_HWCAP, _AT_CLKTCK, _AT_SECURE, _AT_RANDOM, _AT_HWCAP2, _AT_EXECFN = 16, 17, 23, 25, 26, 31


def _page_up(n: int) -> int:
    return (n + _PAGE - 1) & ~(_PAGE - 1)


class _Process:
    """One emulated Linux process: memory, the program break, mappings, output."""

    def __init__(self, elf_path: Path, argv: Sequence[str], hwcap: int) -> None:
        from elftools.elf.elffile import ELFFile
        from unicorn import UC_ARCH_ARM64, UC_HOOK_INTR, UC_MODE_ARM, Uc
        from unicorn import arm64_const as arm

        self.arm = arm
        self.uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
        # QEMU's "max" CPU: every extension a -mcpu may select (dotprod among them)
        self.uc.ctl_set_cpu_model(arm.UC_CPU_ARM64_MAX)
        self.out: dict[int, bytearray] = {1: bytearray(), 2: bytearray()}
        self.status: int | None = None

        with elf_path.open("rb") as f:
            elf = ELFFile(f)
            if elf["e_machine"] != "EM_AARCH64" or elf["e_type"] != "ET_EXEC":
                raise EmulationError(f"{elf_path}: not a static AArch64 executable "
                                     f"({elf['e_machine']}, {elf['e_type']})")
            loads = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
            if any(s["p_type"] == "PT_INTERP" for s in elf.iter_segments()):
                raise EmulationError(f"{elf_path}: dynamically linked; link it with -static")
            # segments may share a page: map the union of their pages, then fill each
            spans: list[list[int]] = []
            for seg in sorted(loads, key=lambda s: s["p_vaddr"]):
                lo = seg["p_vaddr"] & ~(_PAGE - 1)
                hi = _page_up(seg["p_vaddr"] + seg["p_memsz"])
                if spans and lo <= spans[-1][1]:
                    spans[-1][1] = max(spans[-1][1], hi)
                else:
                    spans.append([lo, hi])
            for lo, hi in spans:
                self.uc.mem_map(lo, hi - lo)
            for seg in loads:
                self.uc.mem_write(seg["p_vaddr"], seg.data())  # the rest (bss) stays zero
            # the program headers in memory, for musl's static TLS set-up (AT_PHDR)
            phoff = elf["e_phoff"]
            home = next((s for s in loads
                         if s["p_offset"] <= phoff < s["p_offset"] + s["p_filesz"]), None)
            if home is None:
                raise EmulationError(f"{elf_path}: its program headers are in no segment")
            phdr = home["p_vaddr"] + phoff - home["p_offset"]
            entry, phnum, phent = elf["e_entry"], elf["e_phnum"], elf["e_phentsize"]

        self.brk = self.brk_start = self.brk_mapped = spans[-1][1]
        self.next_mmap = _MMAP_BASE
        self.uc.mem_map(_STACK_TOP - _STACK_SIZE, _STACK_SIZE)
        sp = self._initial_stack(argv, hwcap, {_AT_PHDR: phdr, _AT_PHENT: phent,
                                               _AT_PHNUM: phnum, _AT_ENTRY: entry})
        self.uc.reg_write(arm.UC_ARM64_REG_SP, sp)
        # FP/SIMD on (CPACR_EL1.FPEN): unicorn starts with it trapping, Linux runs EL0 with it on
        self.uc.reg_write(arm.UC_ARM64_REG_CPACR_EL1, 3 << 20)
        # Linux starts a process with FPCR 0: round to nearest, no flush-to-zero, no default
        # NaN; the kernels' denormal and NaN cases depend on it
        self.uc.reg_write(arm.UC_ARM64_REG_FPCR, 0)
        self.uc.hook_add(UC_HOOK_INTR, self._interrupt)
        self.entry = entry

    def _initial_stack(self, argv: Sequence[str], hwcap: int, aux: dict[int, int]) -> int:
        """The stack the kernel hands a new process: argc, argv, envp (empty), auxv, with
        the strings and AT_RANDOM's 16 bytes above them; the stack pointer."""
        top = _STACK_TOP
        pointers = []
        for arg in argv:
            data = arg.encode() + b"\0"
            top -= len(data)
            self.uc.mem_write(top, data)
            pointers.append(top)
        top = (top - 16) & ~15
        self.uc.mem_write(top, os.urandom(16))
        at_random = top
        auxv = {**aux, _AT_PAGESZ: _PAGE, _AT_HWCAP: hwcap, _AT_HWCAP2: 0, _AT_CLKTCK: 100,
                _AT_UID: 0, _AT_EUID: 0, _AT_GID: 0, _AT_EGID: 0, _AT_SECURE: 0,
                _AT_RANDOM: at_random, _AT_EXECFN: pointers[0] if pointers else 0}
        words = [len(argv), *pointers, 0, 0]  # argc, argv, NULL, envp: NULL
        for k, v in auxv.items():
            words += [k, v]
        words += [_AT_NULL, 0]
        sp = (top - 8 * len(words)) & ~15  # the ABI's 16-byte alignment
        self.uc.mem_write(sp, struct.pack(f"<{len(words)}Q", *words))
        return sp

    def run(self, timeout_s: float) -> Exit:
        from unicorn import UcError

        try:
            self.uc.emu_start(self.entry, 0, timeout=int(timeout_s * 1e6))
        except UcError as exc:  # a fault: an unmapped address, an undefined instruction
            pc = self.uc.reg_read(self.arm.UC_ARM64_REG_PC)
            raise EmulationError(f"the program stopped at pc {pc:#x}: {exc}{self._said()}"
                                 ) from None
        except EmulationError as exc:
            raise EmulationError(f"{exc}{self._said()}") from None
        if self.status is None:
            raise EmulationError(f"the program did not exit within {timeout_s:g} s"
                                 f"{self._said()}")
        return Exit(self.status, self.out[1].decode(errors="replace"),
                    self.out[2].decode(errors="replace"))

    def _said(self) -> str:
        """What the program wrote to stderr last, for the one line of an error."""
        return f"; its stderr ends {bytes(self.out[2][-300:])!r}" if self.out[2] else ""

    # -- system calls ------------------------------------------------------------------

    def _interrupt(self, _uc: object, intno: int, _user_data: object) -> None:
        arm = self.arm
        if intno != 2:  # EXCP_SWI: svc; anything else is a fault the program cannot take
            pc = self.uc.reg_read(arm.UC_ARM64_REG_PC)
            raise EmulationError(f"CPU exception {intno} at pc {pc:#x}")
        nr = self.uc.reg_read(arm.UC_ARM64_REG_X8)
        args = [self.uc.reg_read(getattr(arm, f"UC_ARM64_REG_X{i}")) for i in range(6)]
        result = self._syscall(nr, args)
        if result is not None:  # None: the process ended
            self.uc.reg_write(arm.UC_ARM64_REG_X0, result & 0xFFFF_FFFF_FFFF_FFFF)

    def _syscall(self, nr: int, a: list[int]) -> int | None:
        s = _SYS
        if nr == s["write"]:
            return self._write(a[0], bytes(self.uc.mem_read(a[1], a[2])))
        if nr == s["writev"]:
            iov = struct.unpack(f"<{2 * a[2]}Q", self.uc.mem_read(a[1], 16 * a[2]))
            data = b"".join(bytes(self.uc.mem_read(iov[2 * i], iov[2 * i + 1]))
                            for i in range(a[2]))
            return self._write(a[0], data)
        if nr in (s["exit"], s["exit_group"]):
            self.status = a[0] & 0xFF
            self.uc.emu_stop()
            return None
        if nr in (s["tkill"], s["tgkill"]):  # abort(): the only thread signals itself
            self.status = -a[1 if nr == s["tkill"] else 2]
            self.uc.emu_stop()
            return None
        if nr == s["brk"]:
            return self._brk(a[0])
        if nr == s["mmap"]:
            return self._mmap(a[1], a[3])
        if nr == s["munmap"]:
            self._unmap(a[0], a[1])
            return 0
        if nr == s["mremap"]:
            return self._mremap(a[0], a[1], a[2], a[3])
        if nr == s["madvise"]:
            if a[2] == _MADV_DONTNEED:  # anonymous pages read back as zeros afterwards
                self.uc.mem_write(a[0], bytes(_page_up(a[1])))
            return 0
        if nr == s["mprotect"]:
            return 0  # everything is mapped read-write-execute
        if nr in (s["set_tid_address"], s["getpid"], s["gettid"]):
            return 1  # the only thread of process 1
        if nr == s["ioctl"]:
            return -_ENOTTY  # no terminal: stdio buffers fully
        if nr == s["rt_sigprocmask"]:
            if a[2]:
                self.uc.mem_write(a[2], bytes(a[3]))  # the old mask: nothing blocked
            return 0
        if nr == s["rt_sigaction"]:
            if a[2]:
                self.uc.mem_write(a[2], bytes(32))  # the old action: SIG_DFL
            return 0
        if nr == s["clock_gettime"]:
            ns = time.clock_gettime_ns(a[0])
            self.uc.mem_write(a[1], struct.pack("<qq", ns // 10**9, ns % 10**9))
            return 0
        if nr == s["getrandom"]:
            self.uc.mem_write(a[0], os.urandom(a[1]))
            return a[1]
        if nr == s["sched_getaffinity"]:
            if a[1] < 8:
                return -_EINVAL
            self.uc.mem_write(a[2], struct.pack("<Q", 1))  # one CPU: CPU 0
            return 8
        if nr == s["openat"]:
            return -_ENOENT  # no file system
        if nr == s["read"]:
            return 0 if a[0] == 0 else -_EBADF  # stdin is empty
        if nr == s["close"]:
            return 0 if a[0] <= 2 else -_EBADF
        if nr == s["futex"]:
            return 0  # one thread: no one to wait for or to wake
        pc = self.uc.reg_read(self.arm.UC_ARM64_REG_PC)
        raise EmulationError(f"system call {nr} (x0-x2 {a[0]:#x} {a[1]:#x} {a[2]:#x}) at pc "
                             f"{pc:#x} is not emulated")

    def _write(self, fd: int, data: bytes) -> int:
        if fd not in self.out:
            return -_EBADF
        self.out[fd] += data
        return len(data)

    def _brk(self, want: int) -> int:
        """Move the break; below its start or into the mappings it stays where it is, which
        is how Linux says no. Pages given up read as zeros when the break comes back."""
        if want < self.brk_start or want >= _MMAP_BASE:
            return self.brk
        top = _page_up(want)
        if top < self.brk_mapped:
            self.uc.mem_write(top, bytes(self.brk_mapped - top))
        if top > self.brk_mapped:
            self.uc.mem_map(self.brk_mapped, top - self.brk_mapped)
            self.brk_mapped = top
        self.brk = want
        return self.brk

    def _mmap(self, length: int, flags: int) -> int:
        if not flags & _MAP_ANONYMOUS:
            return -_EBADF  # no files to map
        if flags & _MAP_FIXED:
            raise EmulationError("mmap with MAP_FIXED is not emulated")
        if length == 0:
            return -_EINVAL
        # fresh addresses every time, never reused: a use after munmap faults
        addr, self.next_mmap = self.next_mmap, self.next_mmap + _page_up(length)
        self.uc.mem_map(addr, _page_up(length))
        return addr

    def _unmap(self, addr: int, length: int) -> None:
        self.uc.mem_unmap(addr, _page_up(length))

    def _mremap(self, old: int, old_len: int, new_len: int, flags: int) -> int:
        old_len, new_len = _page_up(old_len), _page_up(new_len)
        if new_len <= old_len:
            if new_len < old_len:
                self._unmap(old + new_len, old_len - new_len)
            return old
        if not flags & _MREMAP_MAYMOVE:
            return -_ENOMEM
        new = self._mmap(new_len, _MAP_ANONYMOUS)
        self.uc.mem_write(new, bytes(self.uc.mem_read(old, old_len)))
        self._unmap(old, old_len)
        return new


def run(elf: Path, hwcap: int = BASELINE.hwcap, timeout_s: float = 600.0) -> Exit:
    """Run a static AArch64 Linux executable (no arguments, no environment) to its exit
    under unicorn: its status, stdout and stderr. `hwcap` is what getauxval(AT_HWCAP)
    says. EmulationError for a system call not emulated, a fault or no exit in time."""
    for module, wheel in (("unicorn", "unicorn"), ("elftools", "pyelftools")):
        if importlib.util.find_spec(module) is None:
            raise TqError(f"{module} not found: pip install -e '.[dev]' (the {wheel} wheel)")
    return _Process(elf, [elf.name], hwcap).run(timeout_s)
