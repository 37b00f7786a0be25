"""The step-file format: a ``rseqlab check`` scenario written by hand.

A small line format (``#`` starts a comment; indentation is for the reader)::

    scenario NAME                     # optional (default: the file's stem)
    summary ONE LINE OF TEXT          # optional
    cpus N                            # optional (default 2)
    memory NAME = V, V, ...           # u64 words; a value may be an address: node[2]
    thread cpu N                      # a thread starting on CPU N, its steps, then 'end'
        STEPS
    end
    handler                           # optional: what SIGUSR1's handler runs
        STEPS
    end
    invariant EXPR                    # over the final memory; repeat for several

Steps (each instruction is an instruction boundary where the checker may
land an interrupt)::

    x = EXPR                          # registers: no instruction
    x = load(ADDR)                    # one load;  store(ADDR, V), add(ADDR, V): one store / add
    x = cpu_id_start()                # one load of the rseq area (also cpu_id(), mm_cid(), node_id())
    x = PRIMITIVE(ARGS)               # one of librseq's seven, e.g. load_add_store(counter[cpu], 1, cpu)
    syscall()  sched_yield()  insn()  # getpid(), sched_yield(), a plain instruction
    repeat N ... end                  # loops
    loop ... until EXPR
    if EXPR ... end
    section NAME [nocheck] ... end    # a hand-written critical section: arms rseq_cs, compares
                                      # cpu_id with register 'cpu' (unless nocheck), then one
                                      # instruction per load/store/add/syscall step; the last is
                                      # the commit; exit_if(EXPR) leaves early. Sets ret to 0,
                                      # 1 (exit_if) or -1 (aborted).

In steps and memory values ``name[i]`` is the *address* of word ``i`` of a
memory symbol (``name`` alone: word 0); in an invariant ``name[i]`` is its
final *value* and ``name`` the list of its words, with ``sum``, ``len``,
``min``, ``max``, ``sorted`` available. Every mistake is reported as
``FILE:LINE: what is wrong``.

Limits (an exhaustive checker explores every interleaving, so small is the point): at most
``MAX_THREADS`` threads, ``repeat N`` with N up to ``MAX_REPEAT``, lines up to ``MAX_LINE``
characters, integer values within 64 bits (a shift by 64 or more is refused), and at most
``MAX_ITERATIONS`` loop and repeat iterations per thread in one execution (a loop whose
``until`` never holds is reported, not run forever). The search re-executes each prefix it
backtracks into, so its cost grows with the square of an execution's length: 1,000 iterations
of a short loop take seconds, 5,000 take many minutes.
"""

from __future__ import annotations

import ast
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BadInput
from ..userprog import primitives as P
from ..userprog.image import PLAIN_IP
from .model import WORD, Cs, Final, Scenario, ThreadSpec

_INSNS = {"load": 1, "store": 2, "add": 2, "cpu_id_start": 0, "cpu_id": 0, "mm_cid": 0, "node_id": 0,
          "syscall": 0, "sched_yield": 0, "insn": 0}
_IN_SECTION = {"load", "store", "add", "syscall"}
_PRIMS = {**P.PRIMITIVES, **P.ALIASES}
_FUNCS = {"sum": sum, "len": len, "min": min, "max": max, "sorted": sorted}
_KEYWORDS = {"scenario", "summary", "cpus", "memory", "thread", "handler", "invariant", "end",
             "repeat", "loop", "until", "if", "section", "exit_if"}
_DIRECTIVES = {"scenario", "summary", "cpus", "memory", "thread", "handler", "invariant"}

MAX_THREADS = 8
MAX_REPEAT = 1_000
MAX_LINE = 1_000
MAX_ITERATIONS = 1_000
MAX_FILE = 1 << 20
_U64_SPAN = 1 << 64


def _shift_left(value: int, by: int) -> int:
    """``<<`` in an expression: a shift of 64 or more has no meaning on u64 words, and a huge
    one would allocate gigabytes before any check could run."""
    if not 0 <= by < 64:
        raise ValueError(f"shift by {by}: expected 0..63")
    return value << by


def _shown(text: str, limit: int = 60) -> str:
    """``text`` for an error message, cut to ``limit`` characters."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"
_OPS = (ast.Add, ast.Sub, ast.Mult, ast.FloorDiv, ast.Mod, ast.BitAnd, ast.BitOr, ast.BitXor,
        ast.LShift, ast.RShift, ast.USub, ast.Invert, ast.Not, ast.And, ast.Or, ast.Eq, ast.NotEq,
        ast.Lt, ast.LtE, ast.Gt, ast.GtE)


class StepFileError(BadInput):
    pass


@dataclass
class Stmt:
    line: int
    kind: str  # "set", "insn", "prim", "repeat", "loop", "if", "section", "exit_if"
    target: str | None = None
    name: str = ""
    args: list[Any] = field(default_factory=list)  # compiled expressions
    body: list[Stmt] = field(default_factory=list)
    cond: Any = None
    count: int = 0
    check_cpu: bool = True


class _Parser:
    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()
        self.pos = 0
        self.symbols: list[str] = []

    def error(self, line: int, message: str) -> StepFileError:
        return StepFileError(f"{self.path}:{line}: {message}")

    def next_line(self) -> tuple[int, str] | None:
        while self.pos < len(self.lines):
            self.pos += 1
            text = self.lines[self.pos - 1].split("#", 1)[0].strip()
            if len(text) > MAX_LINE:
                raise self.error(self.pos, f"line too long ({len(text):,} characters; the limit is {MAX_LINE:,})")
            if text:
                return self.pos, text
        return None

    # ------------------------------------------------------------------
    def parse(self) -> Scenario:
        name, summary, cpus = Path(self.path).stem, "", 2
        memory: dict[str, list[Any]] = {}
        mem_lines: dict[str, tuple[int, list[ast.expr]]] = {}
        threads: list[tuple[int, int, list[Stmt]]] = []
        handler: list[Stmt] | None = None
        invariants: list[tuple[int, str, Any]] = []
        while (item := self.next_line()) is not None:
            line, text = item
            word, _, rest = text.partition(" ")
            rest = rest.strip()
            if word == "scenario" and rest:
                name = rest
            elif word == "summary":
                summary = rest
            elif word == "cpus":
                if not rest.isdigit() or not 1 <= int(rest) <= 8:
                    raise self.error(line, f"cpus needs a number 1..8, got {rest!r}")
                cpus = int(rest)
            elif word == "memory":
                sym, eq, values = rest.partition("=")
                sym = sym.strip()
                if not eq or not sym.isidentifier() or sym in _KEYWORDS or sym in _FUNCS:
                    raise self.error(line, "expected 'memory NAME = VALUE, VALUE, ...'")
                if sym in mem_lines:
                    raise self.error(line, f"memory {sym!r} is defined twice")
                exprs = self._exprs(line, values)
                mem_lines[sym] = (line, exprs)
                self.symbols.append(sym)
            elif word == "thread":
                parts = rest.split()
                if len(parts) != 2 or parts[0] != "cpu" or not parts[1].isdigit():
                    raise self.error(line, "expected 'thread cpu N'")
                if len(threads) == MAX_THREADS:
                    raise self.error(line, f"more than {MAX_THREADS} threads: too many to explore exhaustively")
                threads.append((line, int(parts[1]), self.block(line, "end")))
            elif word == "handler":
                if handler is not None:
                    raise self.error(line, "only one handler")
                handler = self.block(line, "end")
            elif word == "invariant":
                invariants.append((line, rest, self._invariant(line, rest)))
            else:
                raise self.error(line, f"unknown directive {word!r}; expected scenario, summary, cpus, "
                                       "memory, thread, handler or invariant")
        if not threads:
            raise self.error(len(self.lines), "no thread")
        if not invariants:
            raise self.error(len(self.lines), "no invariant")
        for line, cpu, _ in threads:
            if cpu >= cpus:
                raise self.error(line, f"thread on cpu {cpu} but the machine has {cpus} CPUs (cpus N)")
        # Now every symbol is known: check the names used everywhere.
        for sym, (line, exprs) in mem_lines.items():
            memory[sym] = [self._compile(line, e, "value", set()) for e in exprs]
        for _, _, body in threads:
            self._resolve(body, set())
        if handler is not None:
            self._resolve(handler, set())
        return _build(self, name, summary or f"step file {self.path}", cpus, memory, threads, handler,
                      invariants)

    def block(self, start: int, closer: str) -> list[Stmt]:
        body: list[Stmt] = []
        while True:
            item = self.next_line()
            if item is None:
                raise self.error(start, f"block opened here is never closed with '{closer}'")
            line, text = item
            word, _, rest = text.partition(" ")
            if word == closer:
                if closer == "until":
                    body.append(Stmt(line, "until", cond=self._expr(line, rest.strip())))
                return body
            if word in ("end", "until"):
                raise self.error(line, f"unexpected '{word}' (expected '{closer}')")
            if word in _DIRECTIVES:
                raise self.error(start, f"block opened here is never closed with '{closer}' "
                                        f"(line {line} starts '{word}')")
            body.append(self.statement(line, text))

    def statement(self, line: int, text: str) -> Stmt:
        word, _, rest = text.partition(" ")
        rest = rest.strip()
        if word == "repeat":
            if not rest.isdigit() or not 1 <= int(rest) <= MAX_REPEAT:
                raise self.error(line, f"expected 'repeat N' with N in 1..{MAX_REPEAT:,}, got {_shown(rest)}")
            return Stmt(line, "repeat", count=int(rest), body=self.block(line, "end"))
        if word == "loop":
            body = self.block(line, "until")
            return Stmt(line, "loop", body=body[:-1], cond=body[-1].cond)
        if word == "if":
            return Stmt(line, "if", cond=self._expr(line, rest), body=self.block(line, "end"))
        if word == "section":
            parts = rest.split()
            if not parts or not parts[0].isidentifier() or parts[1:] not in ([], ["nocheck"]):
                raise self.error(line, "expected 'section NAME' or 'section NAME nocheck'")
            body = self.block(line, "end")
            for s in body:
                if s.kind not in ("set", "insn", "exit_if") or (s.kind == "insn" and s.name not in _IN_SECTION):
                    raise self.error(s.line, "a section holds only load, store, add, syscall, exit_if and "
                                             "register assignments")
            if not body or body[-1].kind != "insn" or body[-1].name != "store":
                raise self.error(line, "a section must end with its commit: a store()")
            return Stmt(line, "section", name=parts[0], body=body, check_cpu=parts[1:] == [])
        try:
            tree = ast.parse(text, mode="exec").body
        except SyntaxError as exc:
            raise self.error(line, f"syntax error: {exc.msg}") from None
        except (MemoryError, RecursionError):
            raise self.error(line, "expression nested too deeply") from None
        if len(tree) != 1:
            raise self.error(line, "one step per line")
        node = tree[0]
        target = None
        if isinstance(node, ast.Assign):
            if len(node.targets) != 1 or not isinstance(node.targets[0], ast.Name):
                raise self.error(line, "assign to one register: 'x = ...'")
            target = node.targets[0].id
            if target in _KEYWORDS:
                raise self.error(line, f"{target!r} is a keyword, not a register name")
            value = node.value
        elif isinstance(node, ast.Expr):
            value = node.value
        else:
            raise self.error(line, f"not a step: {text!r}")
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Name):
            fname = value.func.id
            if value.keywords:
                raise self.error(line, "no keyword arguments")
            if fname == "exit_if":
                if len(value.args) != 1 or target:
                    raise self.error(line, "expected 'exit_if(EXPR)'")
                return Stmt(line, "exit_if", cond=value.args[0])
            if fname in _INSNS:
                if len(value.args) != _INSNS[fname]:
                    raise self.error(line, f"{fname}() takes {_INSNS[fname]} argument(s)")
                return Stmt(line, "insn", target, fname, list(value.args))
            if fname in _PRIMS:
                want = len(inspect.signature(_PRIMS[fname]).parameters) - 2  # th, opts
                if len(value.args) != want:
                    raise self.error(line, f"{fname}() takes {want} arguments, got {len(value.args)}")
                return Stmt(line, "prim", target, fname, list(value.args))
            raise self.error(line, f"unknown step {fname!r}; instructions: {', '.join(_INSNS)}; "
                                   f"primitives: {', '.join(P.PRIMITIVES)}")
        if target is None:
            raise self.error(line, f"not a step: {text!r}")
        return Stmt(line, "set", target, args=[value])

    # ------------------------------------------------------------------
    def _exprs(self, line: int, text: str) -> list[ast.expr]:
        try:
            node = ast.parse(f"({text},)", mode="eval").body
        except SyntaxError as exc:
            raise self.error(line, f"syntax error: {exc.msg}") from None
        except (MemoryError, RecursionError):
            raise self.error(line, "expression nested too deeply") from None
        assert isinstance(node, ast.Tuple)
        return list(node.elts)

    def _expr(self, line: int, text: str) -> ast.expr:
        try:
            return ast.parse(text, mode="eval").body
        except SyntaxError as exc:
            raise self.error(line, f"syntax error in {_shown(text)}: {exc.msg}") from None
        except (MemoryError, RecursionError):
            raise self.error(line, "expression nested too deeply") from None

    def _invariant(self, line: int, text: str) -> ast.expr:
        return self._expr(line, text)

    def _resolve(self, body: list[Stmt], regs: set[str]) -> None:
        """Compile every expression of a block; registers must be set before they are read."""
        regs |= {"cpu", "ret"}
        for s in body:
            if s.kind in ("set", "insn", "prim"):
                s.args = [self._compile(s.line, a, "step", regs) for a in s.args]
            if s.kind in ("if", "exit_if"):
                s.cond = self._compile(s.line, s.cond, "step", regs)
            if s.target:
                regs.add(s.target)
            if s.body:
                self._resolve(s.body, regs)
            if s.kind == "loop":
                s.cond = self._compile(s.line, s.cond, "step", regs)

    def _compile(self, line: int, node: ast.expr, mode: str, regs: set[str]) -> Any:
        """Check ``node`` against the allowed forms and compile it. ``mode``: step, value, invariant."""
        try:
            node = _Rewrite(self, line, mode, regs).visit(node)
            ast.fix_missing_locations(node)
            return compile(ast.Expression(node), f"{self.path}:{line}", "eval")
        except (MemoryError, RecursionError):
            raise self.error(line, "expression nested too deeply") from None


class _Rewrite(ast.NodeTransformer):
    """Symbols become address (or, in invariants, value) lookups; anything else is refused."""

    def __init__(self, parser: _Parser, line: int, mode: str, regs: set[str]) -> None:
        self.p, self.line, self.mode, self.regs = parser, line, mode, regs

    def generic_visit(self, node: ast.AST) -> ast.AST:
        allowed = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.IfExp,
                   ast.Constant, ast.Load, ast.List, ast.Tuple, *_OPS)
        if not isinstance(node, allowed):
            raise self.p.error(self.line, f"not allowed in an expression: {type(node).__name__}")
        if isinstance(node, ast.Constant) and not isinstance(node.value, int):
            raise self.p.error(self.line, f"only integers, not {node.value!r}")
        if isinstance(node, ast.Constant) and not -_U64_SPAN < node.value < _U64_SPAN:
            raise self.p.error(self.line, "an integer beyond 64 bits")
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.LShift):
            return self._call("__shl__", self.visit(node.left), self.visit(node.right))
        return super().generic_visit(node)

    def _call(self, fn: str, *args: ast.expr) -> ast.Call:
        return ast.Call(ast.Name(fn, ast.Load()), list(args), [])

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in self.p.symbols:
            fn = "__words__" if self.mode == "invariant" else "__addr__"
            return self._call(fn, ast.Constant(node.id), *(() if self.mode == "invariant" else [ast.Constant(0)]))
        if self.mode == "step" and node.id in self.regs:
            return node
        known = "registers set before this line and memory symbols" if self.mode == "step" else "memory symbols"
        raise self.p.error(self.line, f"unknown name {node.id!r} (expressions may use {known})")

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        if not isinstance(node.value, ast.Name) or node.value.id not in self.p.symbols:
            raise self.p.error(self.line, "only memory symbols can be indexed: name[i]")
        fn = "__word__" if self.mode == "invariant" else "__addr__"
        return self._call(fn, ast.Constant(node.value.id), self.visit(node.slice))

    def visit_Call(self, node: ast.Call) -> ast.AST:
        if self.mode != "invariant" or not isinstance(node.func, ast.Name) or node.func.id not in _FUNCS:
            raise self.p.error(self.line, f"calls allowed here: {', '.join(_FUNCS)} (in an invariant)")
        if len(node.args) != 1 or node.keywords:
            raise self.p.error(self.line, f"{node.func.id}() takes one argument")
        return self._call(node.func.id, self.visit(node.args[0]))


# ----------------------------------------------------------------------
# Running a step program
# ----------------------------------------------------------------------
class StepRuntimeError(BadInput):
    pass


class _Thread:
    """Runs one thread's (or the handler's) statements on the machine's Thread."""

    def __init__(self, path: str, th: Any, mem: Any) -> None:
        self.path, self.th, self.mem = path, th, mem
        # On the object, not in a frame local: the checker's state hash reads the locals, and a
        # counter there would make every iteration a new state.
        self.iterations = 0

    def ev(self, code: Any, regs: dict[str, int], line: int) -> Any:
        env = dict(regs)
        env["__addr__"] = self.mem.addr
        env["__shl__"] = _shift_left
        try:
            value = eval(code, {"__builtins__": {}}, env)
        except Exception as exc:  # noqa: BLE001 - any error in a user expression is reported by line
            raise StepRuntimeError(f"{self.path}:{line}: {type(exc).__name__}: {exc}") from None
        if not isinstance(value, int):
            raise StepRuntimeError(f"{self.path}:{line}: expected an integer, got {type(value).__name__}")
        if not -_U64_SPAN < value < _U64_SPAN:
            raise StepRuntimeError(f"{self.path}:{line}: a value beyond 64 bits")
        return value

    def iterate(self, line: int) -> None:
        self.iterations += 1
        if self.iterations > MAX_ITERATIONS:
            raise StepRuntimeError(f"{self.path}:{line}: more than {MAX_ITERATIONS:,} loop iterations in one "
                                   "thread (a loop whose 'until' never holds?)")

    def block(self, body: list[Stmt], regs: dict[str, int]) -> None:
        # The position lives in plain locals (i, n, k): the checker's state hash reads them.
        i = 0
        while i < len(body):
            s = body[i]
            line = s.line
            if s.kind == "set":
                regs[s.target] = self.ev(s.args[0], regs, line)
            elif s.kind == "insn":
                value = self.insn(s, [self.ev(a, regs, line) for a in s.args])
                if s.target:
                    regs[s.target] = value
            elif s.kind == "prim":
                args = [self.ev(a, regs, line) for a in s.args]
                value = _PRIMS[s.name](self.th, *args)
                if s.target:
                    regs[s.target] = value
            elif s.kind == "repeat":
                n = 0
                while n < s.count:
                    self.iterate(line)
                    self.block(s.body, regs)
                    n += 1
            elif s.kind == "loop":
                while True:
                    self.iterate(line)
                    self.block(s.body, regs)
                    if self.ev(s.cond, regs, line):
                        break
            elif s.kind == "if":
                if self.ev(s.cond, regs, line):
                    self.block(s.body, regs)
            elif s.kind == "section":
                regs["ret"] = self.section(s, regs)
            i += 1

    def insn(self, s: Stmt, args: list[int]) -> int:
        th = self.th
        if s.name == "load":
            return th.load(args[0])
        if s.name == "store":
            th.store(args[0], args[1])
            return 0
        if s.name == "add":
            th.add(args[0], args[1])
            return 0
        if s.name in ("cpu_id_start", "cpu_id", "mm_cid", "node_id"):
            return th.area_field(s.name)
        if s.name == "syscall":
            return th.getpid()
        if s.name == "sched_yield":
            return th.sched_yield()
        th.insn(PLAIN_IP)
        return 0

    def section(self, s: Stmt, regs: dict[str, int]) -> int:
        n = 1 + sum(1 for x in s.body if x.kind == "insn")
        cs = Cs(self.th, f"step_{s.name}", n, check_cpu=s.check_cpu)

        def body(c: Cs) -> int:
            k = 0
            for j, x in enumerate(s.body):
                if x.kind == "set":
                    regs[x.target] = self.ev(x.args[0], regs, x.line)
                elif x.kind == "exit_if":
                    if self.ev(x.cond, regs, x.line):
                        return 1
                else:
                    k += 1
                    args = [self.ev(a, regs, x.line) for a in x.args]
                    value = 0
                    if x.name == "load":
                        value = c.load(args[0], k)
                    elif x.name == "store":
                        c.store(args[0], args[1], k)
                    elif x.name == "add":
                        self.th.add(args[0], args[1], ip=c.site.ip(k))
                    else:
                        value = c.syscall(k)
                    if x.target:
                        regs[x.target] = value
            return 0

        return cs.run(regs.get("cpu", -1), body)


def _build(p: _Parser, name: str, summary: str, cpus: int, memory: dict[str, list[Any]],
           threads: list[tuple[int, int, list[Stmt]]], handler: list[Stmt] | None,
           invariants: list[tuple[int, str, Any]]) -> Scenario:
    path = p.path

    def program(body: list[Stmt]):
        def run(th, mem) -> None:
            _Thread(path, th, mem).block(body, {"cpu": -1, "ret": 0})

        return run

    def value(code: Any):
        def at_layout(m) -> int:
            try:
                value = eval(code, {"__builtins__": {}}, {"__addr__": m.addr, "__shl__": _shift_left})
            except Exception as exc:  # noqa: BLE001 - any error in a user expression is reported by line
                raise StepRuntimeError(f"{code.co_filename}: {type(exc).__name__}: {exc}") from None
            if not isinstance(value, int) or not -_U64_SPAN < value < _U64_SPAN:
                raise StepRuntimeError(f"{code.co_filename}: a memory word must be a 64-bit integer, got {value!r:.40}")
            return value

        return at_layout

    compiled_memory = {sym: [value(c) for c in codes] for sym, codes in memory.items()}
    inv = [(line, text, p._compile(line, node, "invariant", set())) for line, text, node in invariants]

    def check(f: Final) -> str | None:
        env = {"__words__": f.words, "__word__": f.word, "__shl__": _shift_left, **_FUNCS}
        for line, text, code in inv:
            try:
                ok = eval(code, {"__builtins__": {}}, env)
            except Exception as exc:  # noqa: BLE001 - any error in a user expression is reported by line
                raise StepRuntimeError(f"{path}:{line}: {type(exc).__name__}: {exc}") from None
            if not ok:
                return f"invariant {text} (line {line}) does not hold"
        return None

    return Scenario(name, summary, " and ".join(text for _, text, _ in inv), check,
                    [ThreadSpec(cpu, program(body)) for _, cpu, body in threads],
                    memory=compiled_memory, handler=program(handler) if handler is not None else None,
                    cpus=cpus, source=path)


def shipped_examples() -> dict[str, str]:
    """The step files installed with rseqlab (``rseqlab/examples/*.rseq``): file name -> path."""
    from importlib.resources import files

    root = files("rseqlab") / "examples"
    return {p.name: str(p) for p in sorted(root.iterdir(), key=lambda p: p.name) if p.name.endswith(".rseq")}


def find_step_file(name: str) -> str:
    """``name`` as given when it exists (or names a directory), else the shipped example of that
    file name (``percpu-counter.rseq``), else ``name`` (whose loading then says it is missing)."""
    from pathlib import Path

    if "/" in name or Path(name).exists():
        return name
    return shipped_examples().get(name, name)


def load_step_file(path: str) -> Scenario:
    """Parse a step file; any mistake is a :class:`StepFileError` naming the line."""
    from ..files import open_regular

    try:
        with open_regular(path, "step file") as f:
            data = f.read(MAX_FILE + 1)
    except BadInput as exc:  # the step file's own error class, with the same message
        raise StepFileError(str(exc)) from None
    if len(data) > MAX_FILE:
        raise StepFileError(f"{path}: larger than {MAX_FILE:,} bytes: not a step file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StepFileError(f"{path}: not a step file (not UTF-8 text: byte {exc.start})") from None
    if "\0" in text:
        raise StepFileError(f"{path}: not a step file (binary data)")
    return _Parser(path, text).parse()


def parse_step_text(text: str, path: str = "<text>") -> Scenario:
    return _Parser(path, text).parse()


__all__ = ["WORD", "StepFileError", "StepRuntimeError", "load_step_file", "parse_step_text"]
