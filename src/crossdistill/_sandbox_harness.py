"""Child-side harness of :mod:`crossdistill.sandbox` (read the threat model there first).

This file is **not imported by the parent**.  The parent compiles this source once, marshals the code
object and streams it over stdin into a fresh ``python -S -s -B -c <bootstrap>`` child, followed by the
job (nonce, candidate code, pre-compiled tests, limits).  Everything below runs inside that child,
before and around the untrusted candidate code.

Rules for editing this file (``tests/test_sandbox.py::test_harness_is_closure_free`` checks 1-3):

1. ``_sbx_main`` has no cell variables and every nested function is closure-free and never loads a
   global/builtin name: all its state comes in through (keyword-only) default arguments.  Untrusted
   code can reach some of these functions (test helpers, the wrappers installed into ``_imp``,
   ``_thread``, ``_signal``, ``posix``) and ``__closure__``/``__globals__`` are not audited, while reading
   or setting ``__defaults__``/``__kwdefaults__``/``__code__`` of a harness function is refused by the
   audit hook.  Private state that a reachable wrapper needs (the original ``_imp.create_dynamic``) lives
   in the frame of a suspended generator (``gi_frame`` is refused too).
2. The nonce, the result fd and the pass counters are plain *fast locals* of ``_sbx_main``; the nonce is
   never stored anywhere else.  No Python-level API can reach another frame's fast locals once frame
   access (``sys._getframe``, ``tb_frame``, ``gi_frame``, tracing, signal handlers ...) is refused.
3. After the ``UNTRUSTED CODE MAY RUN BELOW THIS LINE`` marker, ``_sbx_main`` does not import and does
   not load global or builtin names: it only uses references captured before (``_type``, ``_write`` ...),
   so replacing ``builtins.*`` or module attributes cannot change what the harness does.
"""


def _sbx_main():  # noqa: C901 - deliberately one function: see rule 2 above
    import sys
    import posix
    import marshal
    import gc
    import builtins
    import _imp
    import _thread
    import _signal
    import _collections
    import _operator

    _read = posix.read
    _write = posix.write
    _exit = posix._exit

    def _readn(n, *, _read=_read, _exit=_exit, _len=len):
        buf = b""
        while _len(buf) < n:
            chunk = _read(0, n - _len(buf))
            if not chunk:
                _exit(71)
            buf += chunk
        return buf

    job = marshal.loads(_readn(int(_readn(12))))
    nonce = job["nonce"]
    res_fd = job["res_fd"]
    tmp = job["tmp"]
    max_procs = job["max_procs"]

    # stdin -> /dev/null: nothing more can be read from the parent.
    _fd = posix.open("/dev/null", posix.O_RDONLY)
    posix.dup2(_fd, 0)
    posix.close(_fd)
    # Forget the bootstrap's globals (the harness keeps nothing in module globals).
    _maind = sys.modules["__main__"].__dict__
    for _k in list(_maind):
        if _k not in ("__name__", "__builtins__", "__doc__"):
            del _maind[_k]
    del _maind, _k, _fd

    # ------------------------------------------------------------------ captured references
    _type = type
    _len = len
    _str = str
    _bytes = bytes
    _int = int
    _list = list
    _tuple = tuple
    _dict = dict
    _set = set
    _frozenset = frozenset
    _bool = bool
    _id = id
    _repr = repr
    _issubclass = issubclass
    _exec = exec
    _BaseException = BaseException
    _MemoryError = MemoryError
    _AssertionError = AssertionError
    _PermissionError = PermissionError
    _ValueError = ValueError
    _TypeError = TypeError
    _OSError = OSError
    _str_exact = str.__str__
    _float_exact = float.__float__
    _int_exact = int.__int__
    _complex_real = complex.__dict__["real"].__get__
    _complex_imag = complex.__dict__["imag"].__get__
    _bytes_getitem = bytes.__getitem__
    _list_iter = list.__iter__
    _tuple_iter = tuple.__iter__
    _set_iter = set.__iter__
    _frozenset_iter = frozenset.__iter__
    _dict_items = dict.items
    _tflags = type.__dict__["__flags__"].__get__
    _tmro = type.__dict__["__mro__"].__get__
    _tdict = type.__dict__["__dict__"].__get__
    _tname = type.__dict__["__name__"].__get__
    _tmodule = type.__dict__["__module__"].__get__
    _tqualname = type.__dict__["__qualname__"].__get__
    _object_eq = object.__dict__["__eq__"]
    _deque = _collections.deque
    _deque_iter = _deque.__iter__
    _NS = type(sys.implementation)  # types.SimpleNamespace, without importing types
    _getframe = sys._getframe
    _lstat = posix.lstat
    _stat = posix.stat
    _readlink = posix.readlink
    _getcwd = posix.getcwd
    _fstat = posix.fstat
    _open = posix.open
    _close = posix.close
    _getpid = posix.getpid
    _gc_disable = gc.disable
    _tcount = _thread._count
    _stdout0 = sys.stdout
    _stderr0 = sys.stderr
    HEAP = 1 << 9
    CodeType = type(_readn.__code__)
    GenType = None

    _SCALARS = frozenset({type(None), bool, int, float, complex, str, bytes, range,
                          type(...), type(NotImplemented)})
    _BUILTIN_CALLABLES = frozenset({type(len), type([].append), type(list.append),
                                    type(object.__init__), type((1).__add__),
                                    type(dict.__dict__["fromkeys"])})
    _dkeys_t = type({}.keys())
    _ditems_t = type({}.items())
    _VALUE_TYPES = frozenset({("decimal", "Decimal"), ("datetime", "date"), ("datetime", "datetime"),
                              ("datetime", "time"), ("datetime", "timedelta"), ("datetime", "timezone"),
                              ("array", "array")})
    _OD = _collections.OrderedDict
    _DD = _collections.defaultdict
    import math  # noqa: E401 - also pre-imported below so that its namespace is restored
    _gcd = math.gcd
    IMMUT = 1 << 8  # Py_TPFLAGS_IMMUTABLETYPE: a C type whose attributes cannot be set
    FunctionType = type(_readn)
    _typetype = type
    _callable = callable
    _Exception = Exception
    _object_new = object.__new__
    _object_getattribute = object.__getattribute__
    _type_setattr = type.__setattr__
    _type_delattr = type.__delattr__
    _tuple_new = tuple.__new__
    _float_ratio = float.as_integer_ratio
    INF = float("inf")
    _tuplegetter = _collections._tuplegetter
    _is = _operator.is_
    _MEMBER_DESCR = type(type.__dict__["__weakrefoffset__"])
    _C_DESCR = frozenset({type(str.join), type(object.__init__), type(type.__dict__["__dict__"]),
                          _MEMBER_DESCR, type(dict.__dict__["fromkeys"])})
    # Class attributes of candidate-defined Enum / named-tuple classes that Python only uses when
    # the class is created, an instance is built or copied/pickled (all checked elsewhere), or that
    # are plain metadata.
    SAFE_DUNDERS = frozenset({
        "__module__", "__qualname__", "__doc__", "__annotations__", "__orig_bases__",
        "__firstlineno__", "__static_attributes__", "__type_params__", "__parameters__",
        "__slots__", "__match_args__", "__new__", "__init__", "__init_subclass__",
        "__class_getitem__", "__getnewargs__", "__getnewargs_ex__", "__reduce__", "__reduce_ex__",
        "__copy__", "__deepcopy__"})
    # Bookkeeping that EnumType writes into every enum class (used by class-level lookups, repr
    # and member creation; members themselves compare by identity).
    ENUM_INTERNAL = frozenset({
        "_generate_next_value_", "_new_member_", "_use_args_", "_member_names_", "_member_map_",
        "_value2member_map_", "_unhashable_values_", "_unhashable_values_map_", "_member_type_",
        "_value_repr_", "_numeric_repr_", "_boundary_", "_flag_mask_", "_singles_mask_",
        "_all_bits_", "_inverted_", "_missing_", "_order_", "_ignore_"})
    ENUM_HOOKS = frozenset({"_iter_member_", "_iter_member_by_value_", "_iter_member_by_def_"})
    # Side-effect-free builtins that a candidate function may shadow in the tests' namespace (see
    # _shadow_call; the parent's _SHADOWABLE names the same builtins); a candidate's definition of
    # any other builtin name is not seen by the tests.
    PURE = frozenset(map(id, (
        abs, all, any, ascii, bin, bool, bytes, callable, chr, complex, dict, divmod, float, format,
        frozenset, hash, hex, int, isinstance, issubclass, len, list, max, min, oct, ord, pow, repr,
        round, set, sorted, str, sum, tuple, type)))
    # Stdlib modules worth importing before the candidate runs when the tests/setup import them or
    # the candidate names them: their namespaces are then restored before the tests, and their
    # classes are known to be genuine (objects the tests build from them; Fraction, Enum ...).
    PREIMPORT_OK = frozenset({
        "abc", "array", "base64", "binascii", "bisect", "calendar", "cmath", "collections",
        "contextlib", "copy", "dataclasses", "datetime", "decimal", "difflib", "enum", "fnmatch",
        "fractions", "functools", "hashlib", "heapq", "itertools", "json", "keyword", "math",
        "numbers", "operator", "pprint", "random", "re", "reprlib", "statistics", "string",
        "struct", "textwrap", "time", "types", "typing", "unicodedata", "zlib"})

    st0 = _fstat(res_fd)
    res_ident = (st0.st_dev, st0.st_ino)
    my_pid = _getpid()
    del st0

    # ------------------------------------------------------------------ resource limits
    import resource as _res

    def _setlim(which, value, *, _res=_res, _VE=_ValueError, _OE=_OSError):
        try:
            soft, hard = _res.getrlimit(which)
            if hard != _res.RLIM_INFINITY and value > hard:
                value = hard
            _res.setrlimit(which, (value, value))
        except (_VE, _OE):
            pass

    _ru = _res.getrusage(_res.RUSAGE_SELF)
    _cpu_soft = int(_ru.ru_utime + _ru.ru_stime + job["cpu_s"]) + 1
    try:
        _res.setrlimit(_res.RLIMIT_CPU, (_cpu_soft, _cpu_soft + 1))
    except (ValueError, OSError):
        _setlim(_res.RLIMIT_CPU, _cpu_soft)
    if job["fsize_mb"] > 0:
        _setlim(_res.RLIMIT_FSIZE, job["fsize_mb"] << 20)
    _setlim(_res.RLIMIT_CORE, 0)
    _setlim(_res.RLIMIT_NOFILE, 256)
    if job["nproc"] is not None:
        _setlim(_res.RLIMIT_NPROC, job["nproc"])
    if job["mem_mb"] > 0:
        _setlim(_res.RLIMIT_AS, job["mem_mb"] << 20)
    del _ru, _cpu_soft

    # ------------------------------------------------------------------ reporting
    def _emit(status, n_tests, n_passed, reason, nonce, res_fd, payload="", *, _write=_write,
              _str=_str):
        line = "\nSBX1 %s %s %d %d %s %s\n" % (nonce, status, n_tests, n_passed,
                                              reason.encode("utf-8", "replace").hex(),
                                              payload.encode("utf-8", "surrogatepass").hex())
        data = line.encode("ascii")
        while data:
            n = _write(res_fd, data)
            data = data[n:]

    if job["uid"] is not None:
        try:
            posix.setgroups([])
            posix.setresgid(job["gid"], job["gid"], job["gid"])
            posix.setresuid(job["uid"], job["uid"], job["uid"])
        except OSError as e:
            _emit("error", 0, 0, "sandbox: could not drop privileges: %s" % (e,), nonce, res_fd)
            _exit(0)

    # ------------------------------------------------------------------ path policy
    def _realpath(p, *, _lstat=_lstat, _readlink=_readlink, _getcwd=_getcwd, _OSError=_OSError,
                  _len=_len):
        if not p.startswith("/"):
            p = _getcwd() + "/" + p
        pending = [c for c in p.split("/") if c and c != "."]
        pending.reverse()
        resolved = ""
        links = 0
        while pending:
            comp = pending.pop()
            if comp == "..":
                resolved = resolved.rpartition("/")[0]
                continue
            cand = resolved + "/" + comp
            try:
                mode = _lstat(cand).st_mode
            except _OSError:
                resolved = cand
                continue
            if mode & 0o170000 == 0o120000:
                links += 1
                if links > 40:
                    return None
                target = _readlink(cand)
                if target.startswith("/"):
                    resolved = ""
                more = [c for c in target.split("/") if c and c != "."]
                more.reverse()
                pending.extend(more)
            else:
                resolved = cand
        return resolved or "/"

    def _under(path, roots):  # noqa: E306
        if "/site-packages" in path or "/dist-packages" in path:
            return False  # third-party code (and its native modules) is not the stdlib
        for r in roots:
            if path == r or path.startswith(r + "/"):
                return True
        return False

    _roots = []
    for _p in sys.path:
        if _p:
            _rp = _realpath(_p)
            if _rp and _rp != "/":
                _roots.append(_rp)
    _rp = _realpath(posix.getcwd())  # noqa: F841 - cwd is tmp
    STDLIB_ROOTS = tuple(_roots)
    TMP_ROOTS = (tmp,)
    READ_ROOTS = STDLIB_ROOTS + TMP_ROOTS + ("/usr/share/zoneinfo",)
    READ_FILES = frozenset({"/dev/null", "/dev/zero", "/dev/urandom", "/dev/random", "/dev/full",
                            "/etc/localtime"})
    WRITE_FILES = frozenset({"/dev/null"})
    del _roots, _p, _rp

    # ------------------------------------------------------------------ strict values
    # Shared state of the strict-mode helpers.  Filled in before the candidate runs, except SHADOW,
    # WATCH and the classes of a setup that runs after the candidate.
    VIOL = []
    CLS_SNAP = {}    # id(stdlib heap class) -> (class, snapshot of its dict, mro, module dict,
    #                                          snapshot of the module dict); snapshot: _snapshot()
    WATCH = {}       # id -> (kind, owner, live mapping, snapshot, mro): what accepted values rely on
    SHADOW = {}      # id(candidate callable bound to a builtin's name) -> (that builtin, the name)
    trusted = _set()         # ids of classes defined by the (trusted) setup code
    GENUINE_CODES = _set()   # ids of the code objects of genuine namedtuple methods
    KEEPALIVE = []
    FRAC_TAG = object()      # (FRAC_TAG, n, d): a Fraction that no float equals, in strict copies
    ENUM_TAG = object()      # (ENUM_TAG, qualname, id): an enum member (identity semantics)
    _MISSING = object()

    def _in_mro(t, c, *, _tmro=_tmro):
        for x in _tmro(t):
            if x is c:
                return True
        return False

    def _inert(v, d, *, _self=None, _type=_type, _SCALARS=_SCALARS, _list=_list, _tuple=_tuple,
               _dict=_dict, _set=_set, _frozenset=_frozenset, _dict_items=_dict_items):
        """``v`` is exact builtin data: no subclasses, iterators or objects of other classes."""
        t = _type(v)
        if t in _SCALARS:
            return True
        if d > 20:
            return False
        if t is _list or t is _tuple or t is _set or t is _frozenset:
            for x in v:
                if not _self(x, d + 1):
                    return False
            return True
        if t is _dict:
            for k, x in _dict_items(v):
                if not (_self(k, d + 1) and _self(x, d + 1)):
                    return False
            return True
        return False

    _inert.__kwdefaults__["_self"] = _inert

    def _snapshot(live, *, _dict=_dict, _tuple=_tuple):
        d = _dict(live)
        return (d, _tuple(d), _tuple(d.values()))

    def _same(live, snap, *, _len=_len, _all=all, _map=map, _is=_is, _dict_items=_dict_items,
              _M=_MISSING):
        """The mapping ``live`` holds exactly the objects of ``snap`` (a :func:`_snapshot`), by
        identity (never ``==``: a replaced value could claim to be equal)."""
        d, keys, vals = snap
        if _len(live) != _len(keys):
            return False
        if _all(_map(_is, live.values(), vals)) and _all(_map(_is, live, keys)):
            return True  # fast path: same order
        get = live.get
        for k, x in _dict_items(d):
            if get(k, _M) is not x:
                return False
        return True

    def _same_seq(a, b, *, _len=_len):
        if _len(a) != _len(b):
            return False
        i = 0
        for x in a:
            if x is not b[i]:
                return False
            i += 1
        return True

    def _intact(c, *, _snap=CLS_SNAP, _tmro=_tmro, _tdict=_tdict, _id=_id, _type=_type,
                _same=_same, _same_seq=_same_seq):
        """The stdlib heap classes in the MROs of ``c`` and of its metaclass, and their modules'
        namespaces, are as they were before the candidate ran."""
        for mro in (_tmro(c), _tmro(_type(c))):
            for b in mro:
                s = _snap.get(_id(b))
                if s is None:
                    continue
                if not (_same_seq(_tmro(b), s[2]) and _same(_tdict(b), s[1])
                        and (s[3] is None or _same(s[3], s[4]))):
                    return False
        return True

    def _watch(t, inst, *, _w=WATCH, _snap=CLS_SNAP, _tmro=_tmro, _tdict=_tdict, _tflags=_tflags,
               HEAP=HEAP, IMMUT=IMMUT, _id=_id, _type=_type, _snapshot=_snapshot,
               _oga=_object_getattribute):
        """Remember the state of the classes (those in the MROs of ``t`` and of its metaclass) and of
        the instance dict that a value let into the tests relies on; :func:`_check_watch` verifies
        it after every call the tests make."""
        for b in (*_tmro(t), *_tmro(_type(t))):
            fl = _tflags(b)
            if not (fl & HEAP) or fl & IMMUT or _id(b) in _w:
                continue
            s = _snap.get(_id(b))
            if s is None:
                live = _tdict(b)
                _w[_id(b)] = (0, b, live, _snapshot(live), _tmro(b))
            else:
                _w[_id(b)] = (0, b, _tdict(b), s[1], s[2])
                if s[3] is not None and _id(s[3]) not in _w:
                    _w[_id(s[3])] = (1, s[3], s[3], s[4], None)
        if inst is not None and _id(inst) not in _w:
            live = _oga(inst, "__dict__")
            _w[_id(inst)] = (2, inst, live, _snapshot(live), None)

    def _check_watch(*, _w=WATCH, _same=_same, _same_seq=_same_seq, _tmro=_tmro,
                     _oga=_object_getattribute, _viol=VIOL, _E=_PermissionError,
                     _tqualname=_tqualname, _BE=_BaseException):
        for kind, owner, live, snap, mro in _w.values():
            if kind == 0:
                ok = _same_seq(_tmro(owner), mro) and _same(live, snap)
            elif kind == 1:
                ok = _same(live, snap)
            else:
                try:
                    ok = _oga(owner, "__dict__") is live and _same(live, snap)
                except _BE:  # noqa: B036
                    ok = False
            if not ok:
                what = ("class %s" % (_tqualname(owner),) if kind == 0 else
                        "a module namespace" if kind == 1 else "an enum member")
                _w.clear()
                _viol.append("modified %s while the tests ran" % (what,))
                raise _E("sandbox: %s was modified after strict mode accepted a value relying on it"
                         % (what,))

    def _fcanon(v, *, _fnum=None, _fden=None, _gcd=_gcd, _type=_type, _int=_int, _TE=_TypeError,
                FRAC_TAG=FRAC_TAG):
        """Exact builtin form of a Fraction, read from its slots: an int, the float that equals it
        exactly, or ``(FRAC_TAG, n, d)`` (no float equals it)."""
        n = _fnum(v)
        d = _fden(v)
        if _type(n) is not _int or _type(d) is not _int or d == 0:
            raise _TE("sandbox: malformed Fraction")
        if d < 0:
            n = -n
            d = -d
        g = _gcd(n, d)
        if g != 1:
            n //= g
            d //= g
        if d == 1:
            return n
        if not (d & (d - 1)) and d <= (1 << 1000) and -(1 << 53) < n < (1 << 53):
            return n / d
        return (FRAC_TAG, n, d)

    def _rkey(x, *, _type=_type, _int=_int, _bool=_bool, _float=float, _complex=complex,
              _tuple=_tuple, _len=_len, _ratio=_float_ratio, _creal=_complex_real,
              _cimag=_complex_imag, FRAC_TAG=FRAC_TAG, INF=INF):
        """(n, d) for exact numbers, 1 / -1 for +-inf, "nan", or None (not a real number)."""
        t = _type(x)
        if t is _tuple and _len(x) == 3 and x[0] is FRAC_TAG:
            return (x[1], x[2])
        if t is _int or t is _bool:
            return (_int(x), 1)
        if t is _complex:
            if _cimag(x) != 0:
                return None
            x = _creal(x)
            t = _float
        if t is _float:
            if x != x:
                return "nan"
            if x == INF:
                return 1
            if x == -INF:
                return -1
            return _ratio(x)
        return None

    def _ratcmp(op, a, b, *, _rkey=_rkey, _core=None, _type=_type, _tuple=_tuple, _int=_int,
                _str=_str, _complex=complex, _len=_len, FRAC_TAG=FRAC_TAG, _TE=_TypeError):
        """Exact comparison when one side is ``(FRAC_TAG, n, d)`` (Python compares Fractions with
        ints and floats exactly)."""
        if op == 8 or op == 9:
            if _type(b) is _tuple and _len(b) == 3 and b[0] is FRAC_TAG:
                raise _TE("argument of type 'Fraction' is not iterable")
            return _core(op, a, b)
        ka = _rkey(a)
        kb = _rkey(b)
        if op < 2:
            eq = (_type(ka) is _tuple and _type(kb) is _tuple
                  and ka[0] * kb[1] == kb[0] * ka[1])
            return eq if op == 0 else not eq
        if ka is None or kb is None or _type(a) is _complex or _type(b) is _complex:
            raise _TE("ordering comparison not supported between these values")
        if _type(ka) is _str or _type(kb) is _str:
            return False  # nan
        if _type(ka) is _int:
            left, right = ka, 0
        elif _type(kb) is _int:
            left, right = 0, kb
        else:
            left, right = ka[0] * kb[1], kb[0] * ka[1]
        if op == 2:
            return left < right
        if op == 3:
            return left <= right
        if op == 4:
            return left > right
        return left >= right

    def _class_ok(t, kind, *, _snap=CLS_SNAP, _trusted=trusted, _tmro=_tmro, _tdict=_tdict,
                  _tflags=_tflags, HEAP=HEAP, IMMUT=IMMUT, _id=_id, _type=_type, _str=_str,
                  _SAFE=SAFE_DUNDERS, _ENUM_INT=ENUM_INTERNAL, _ENUM_HOOKS=ENUM_HOOKS,
                  _C_DESCR=_C_DESCR, _FT=FunctionType, _sm=staticmethod, _cm=classmethod,
                  _tg=_tuplegetter, _inert=_inert, _in_mro=_in_mro, _codes=GENUINE_CODES,
                  _M=_MISSING):
        """Structural check of the candidate-defined classes in ``t``'s MRO (kind 1: an Enum, 2: a
        named tuple): nothing Python calls implicitly (comparisons, hashing, conversions, container
        protocols, attribute hooks, descriptors) may come from candidate code.  Stdlib classes in
        the MRO are checked by :func:`_intact` instead."""
        mro = _tmro(t)
        for c in mro:
            fl = _tflags(c)
            if not (fl & HEAP) or fl & IMMUT or _id(c) in _snap or _id(c) in _trusted:
                continue
            cd = _tdict(c)
            if kind == 2 and ("__slots__" not in cd or "__dict__" in cd):
                return False
            for k, x in cd.items():
                if _type(k) is not _str:
                    return False
                tx = _type(x)
                dunder = k[:2] == "__" and k[-2:] == "__"
                if dunder and k in _SAFE:
                    continue
                if kind == 1 and k in _ENUM_INT:
                    continue
                if dunder or (kind == 1 and k in _ENUM_HOOKS):
                    if tx in _C_DESCR and x.__name__ == k:
                        f2 = _tflags(x.__objclass__)
                        if not (f2 & HEAP) or f2 & IMMUT:
                            continue  # C code of a builtin type, e.g. int.__format__
                        return False
                    if tx is _FT and _id(x.__code__) in _codes:
                        continue      # genuine namedtuple method
                    for g in mro:     # copied from a stdlib base (Flag.__or__ ...)
                        if _id(g) in _snap and _tdict(g).get(k, _M) is x:
                            break
                    else:
                        return False
                    continue
                if tx is _FT or tx is _tg:
                    continue          # methods: calling them from a test is checked by h_call
                if tx is _sm or tx is _cm:
                    if _type(x.__func__) is _FT:
                        continue
                    return False
                if kind == 1 and _in_mro(tx, t):
                    continue          # the members
                if _inert(x, 0):
                    continue
                return False
        return True

    def _enum_ok(v, t, d, *, _g=None, _oga=_object_getattribute, _type=_type, _dict=_dict,
                 _str=_str, _int=_int, _dict_items=_dict_items, _issubclass=_issubclass,
                 _typetype=_typetype, _TE=_TypeError, _VE=_ValueError, _AE=AttributeError):
        """The member's own attributes are plain: ``_name_`` a str (or None) and ``_value_`` (and the
        rest) values that strict mode passes on unchanged."""
        try:
            idict = _oga(v, "__dict__")
        except _AE:
            return False
        if _type(idict) is not _dict:
            return False
        for k, x in _dict_items(idict):
            if _type(k) is not _str:
                return False
            if k == "_name_":
                if _type(x) is not _str and x is not None:  # None: a Flag pseudo-member
                    return False
            elif k == "__objclass__":
                if not _issubclass(_type(x), _typetype):
                    return False
            elif k == "_sort_order_":
                if _type(x) is not _int:
                    return False
            else:
                try:
                    if _g(x, d) is not x:
                        return False
                except (_TE, _VE):
                    return False
        return True

    def _vkeep(v, t, d, *, _g=None, _frac=None, _fnum=None, _fden=None, _fnum_set=None,
               _fden_set=None, _enum=None, _enum_meta=None, _object_new=_object_new, _gcd=_gcd,
               _type=_type, _int=_int, _tuple=_tuple, _issubclass=_issubclass, _in_mro=_in_mro,
               _tuple_iter=_tuple_iter, _tuple_new=_tuple_new, _intact=_intact, _class_ok=_class_ok,
               _enum_ok=_enum_ok, _watch=_watch, _w=WATCH, _id=_id, _viol=VIOL,
               _E=_PermissionError, _tqualname=_tqualname):
        """Strict mode's answer for an instance of a non-builtin class that is a value type: a
        ``fractions.Fraction`` (or subclass), a member of an ``enum.Enum`` subclass, a named tuple.
        Returns what the tests get (``v`` itself, or an exact genuine copy), None if ``v`` is not
        such a value (or its classes do not pass the checks).  Classes already in WATCH passed the
        checks before and are unchanged since (h_call verifies WATCH right after each call)."""
        f = _frac
        if f is not None and _in_mro(t, f):
            n = _fnum(v)
            dn = _fden(v)
            if _type(n) is not _int or _type(dn) is not _int or dn == 0:
                return None
            if _id(f) not in _w and not _intact(f):
                _viol.append("modified class Fraction")
                raise _E("sandbox: fractions.Fraction was modified")
            if dn < 0:
                n = -n
                dn = -dn
            g = _gcd(n, dn)
            if t is not f or g != 1 or dn != _fden(v):
                v = _object_new(f)  # exact, normalised, built without running Fraction code
                _fnum_set(v, n // g)
                _fden_set(v, dn // g)
            _watch(f, None)
            return v
        kind = 0
        if _enum is not None and _in_mro(t, _enum):
            if _type(t) is not _enum_meta:
                return None
            kind = 1
        elif _issubclass(t, _tuple):
            kind = 2
        else:
            return None
        if _id(t) not in _w:
            if not _intact(t):
                _viol.append("modified a stdlib base class of %s" % (_tqualname(t),))
                raise _E("sandbox: a stdlib base class of %s was modified" % (_tqualname(t),))
            if not _class_ok(t, kind):
                return None
        if kind == 1:
            if _id(v) not in _w:
                if not _enum_ok(v, t, d):
                    return None
                _watch(t, v)
            return v
        out = []
        changed = False
        for x in _tuple_iter(v):
            gx = _g(x, d)
            if gx is not x:
                changed = True
            out.append(gx)
        if changed:
            v = _tuple_new(t, out)
        _watch(t, None)
        return v

    def _plain(v, d, *, _self=None, _type=_type, _SCALARS=_SCALARS, _issubclass=_issubclass,
               _list=_list, _tuple=_tuple, _dict=_dict, _set=_set, _frozenset=_frozenset,
               _int=_int, _float=float, _complex=complex, _str=_str, _bytes=_bytes,
               _str_exact=_str_exact, _float_exact=_float_exact, _int_exact=_int_exact,
               _complex_real=_complex_real, _complex_imag=_complex_imag,
               _bytes_getitem=_bytes_getitem, _list_iter=_list_iter, _tuple_iter=_tuple_iter,
               _set_iter=_set_iter, _frozenset_iter=_frozenset_iter, _dict_items=_dict_items,
               _deque=_deque, _deque_iter=_deque_iter, _dkeys_t=_dkeys_t, _ditems_t=_ditems_t,
               _bytearray=bytearray, _tflags=_tflags, _tmro=_tmro, _tdict=_tdict,
               _tmodule=_tmodule, _tqualname=_tqualname, _object_eq=_object_eq, HEAP=HEAP,
               IMMUT=IMMUT, _VALUE_TYPES=_VALUE_TYPES, _trusted=trusted, _id=_id,
               _TypeError=_TypeError, _ValueError=_ValueError, _tname=_tname,
               _slice_all=slice(None), _frac=None, _fcanon=_fcanon, _enum=None, _in_mro=_in_mro,
               ENUM_TAG=ENUM_TAG):
        """Exact builtin-data copy of ``v`` (never calls methods that user code can override)."""
        t = _type(v)
        if t in _SCALARS:
            return v
        if d > 200:
            raise _ValueError("sandbox: value nested too deeply for strict comparison")
        d += 1
        if t is _list or (t is not _tuple and _issubclass(t, _list)):
            out = []
            for x in _list_iter(v):
                out.append(_self(x, d))
            return out
        if t is _tuple or _issubclass(t, _tuple):
            out = []
            for x in _tuple_iter(v):
                out.append(_self(x, d))
            return _tuple(out)
        if t is _dict or _issubclass(t, _dict):
            out = {}
            for k, x in _dict_items(v):
                out[_self(k, d)] = _self(x, d)
            return out
        if t is _set or _issubclass(t, _set):
            out = _set()
            for x in _set_iter(v):
                out.add(_self(x, d))
            return out
        if t is _frozenset or _issubclass(t, _frozenset):
            out = _set()
            for x in _frozenset_iter(v):
                out.add(_self(x, d))
            return _frozenset(out)
        if _issubclass(t, _int):
            return _int_exact(v)
        if _issubclass(t, _float):
            return _float_exact(v)
        if _issubclass(t, _str):
            return _str_exact(v)
        if _issubclass(t, _bytes):
            return _bytes_getitem(v, _slice_all)
        if _issubclass(t, _complex):
            return _complex(_complex_real(v), _complex_imag(v))
        if t is _bytearray:
            return _bytes(v)
        if t is _dkeys_t or t is _ditems_t:
            out = _set()
            for x in v:
                out.add(_self(x, d))
            return out
        if _issubclass(t, _deque):
            out = []
            for x in _deque_iter(v):
                out.append(_self(x, d))
            return ("\x00deque", out)
        if _frac is not None and _in_mro(t, _frac):
            return _fcanon(v)       # by value, read from the slots (the class's methods unused)
        if _enum is not None and _in_mro(t, _enum):
            return (ENUM_TAG, _str_exact(_tqualname(t)), _id(v))  # members: identity
        if _id(t) in _trusted:
            return v
        fl = _tflags(t)
        if not (fl & HEAP) or fl & IMMUT:
            if (_tmodule(t), _tqualname(t)) in _VALUE_TYPES:
                return v
            for c in _tmro(t):
                cd = _tdict(c)
                if "__eq__" in cd:
                    if cd["__eq__"] is _object_eq:
                        return v  # identity semantics (functions, classes, modules ...)
                    break
        raise _TypeError("sandbox: strict comparison does not support values of type %s"
                         % (_tname(t),))

    _plain.__kwdefaults__["_self"] = _plain

    def _giter(it, *, _g=None):
        for x in it:
            yield _g(x, 0)

    def _guard(v, d, *, _self=None, _giter=_giter, _type=_type, _SCALARS=_SCALARS,
               _issubclass=_issubclass, _list=_list, _tuple=_tuple, _dict=_dict, _set=_set,
               _frozenset=_frozenset, _int=_int, _float=float, _complex=complex, _str=_str,
               _bytes=_bytes, _plain=_plain, _tflags=_tflags, _tmro=_tmro, _tdict=_tdict, HEAP=HEAP,
               IMMUT=IMMUT, _deque=_deque, _OD=_OD, _DD=_DD, _trusted=trusted, _id=_id,
               _TypeError=_TypeError, _ValueError=_ValueError, _tname=_tname, _len=_len,
               _dict_items=_dict_items, _keep=_vkeep):
        """Check a value returned to test code by a non-builtin callable.

        Exact builtin data passes (the same object when nothing had to change); value types
        (Fraction, Enum members, named tuples: see :func:`_vkeep`) pass when their classes pass the
        checks; other instances of heap subclasses of builtins are converted to exact builtin values;
        iterators are wrapped so that every produced item is checked; other static (C) types pass;
        anything else is refused."""
        t = _type(v)
        if t in _SCALARS:
            return v
        if d > 200:
            raise _ValueError("sandbox: value nested too deeply")
        d += 1
        if t is _list or t is _tuple or t is _set or t is _frozenset:
            out = []
            changed = False
            for x in v:
                g = _self(x, d)
                if g is not x:
                    changed = True
                out.append(g)
            if not changed:
                return v
            return out if t is _list else (_tuple(out) if t is _tuple else t(out))
        if t is _dict or t is _OD or t is _DD:
            out = {}
            changed = False
            for k, x in _dict_items(v):
                gk = _self(k, d)
                gx = _self(x, d)
                if gk is not k or gx is not x:
                    changed = True
                out[gk] = gx
            return out if changed else v
        if t is _deque:
            for x in v:
                if _self(x, d) is not x:
                    return _self(_plain(v, 0)[1], d)
            return v
        fl = _tflags(t)
        if fl & HEAP and not fl & IMMUT:
            if _id(t) in _trusted:
                return v
            k = _keep(v, t, d)
            if k is not None:
                return k
            for base in (_int, _float, _complex, _str, _bytes, _list, _tuple, _dict, _set,
                         _frozenset, _deque):
                if _issubclass(t, base):
                    p = _plain(v, 0)
                    if base is _deque:
                        return _deque(p[1])
                    return p
            raise _TypeError("sandbox: the candidate produced an instance of the non-builtin class "
                             "%r; strict mode only accepts builtin data" % (_tname(t),))
        for c in _tmro(t):
            if "__next__" in _tdict(c):
                return _giter(v)
        return v

    _guard.__kwdefaults__["_self"] = _guard
    _giter.__kwdefaults__["_g"] = _guard
    _vkeep.__kwdefaults__["_g"] = _guard
    _enum_ok.__kwdefaults__["_g"] = _guard

    def _cmp_core(op, a, b, *, _VE=_ValueError):
        if op == 0:
            return a == b
        if op == 1:
            return a != b
        if op == 2:
            return a < b
        if op == 3:
            return a <= b
        if op == 4:
            return a > b
        if op == 5:
            return a >= b
        if op == 8:
            return a in b
        if op == 9:
            return a not in b
        raise _VE("bad op")  # unreachable: op codes come from the parent's transformer

    _ratcmp.__kwdefaults__["_core"] = _cmp_core

    def _enum_in(op, a, b, *, _vkeep=_vkeep, _type=_type, _TE=_TypeError, _tname=_tname):
        """``a in b`` for an enum member ``b`` (``Flag.__contains__``): both must be members that
        strict mode accepts as they are (genuine enum code, checked candidate classes)."""
        for x in (a, b):
            if _vkeep(x, _type(x), 0) is not x:
                raise _TE("sandbox: strict comparison does not support 'in' with %s"
                          % (_tname(_type(x)),))
        r = a in b
        return r if op == 8 else not r

    LAST = [None]

    def h_cmp(op, a, b, *, _p=_plain, _core=_cmp_core, _bool=_bool, _last=LAST, _type=_type,
              _tuple=_tuple, _len=_len, FRAC_TAG=FRAC_TAG, ENUM_TAG=ENUM_TAG, _ratcmp=_ratcmp,
              _enum_in=_enum_in):
        if op == 6:
            return a is b
        if op == 7:
            return a is not b
        pa = _p(a, 0)
        pb = _p(b, 0)
        if ((_type(pa) is _tuple and _len(pa) == 3 and pa[0] is FRAC_TAG)
                or (_type(pb) is _tuple and _len(pb) == 3 and pb[0] is FRAC_TAG)):
            r = _ratcmp(op, pa, pb)
        elif op >= 8 and _type(pb) is _tuple and _len(pb) == 3 and pb[0] is ENUM_TAG:
            r = _enum_in(op, a, b)
        else:
            r = _core(op, pa, pb)
        if r is not True and r is not False:
            r = _bool(_p(r, 0))
        if not r:
            _last[0] = (op, pa, pb)
        return r

    def h_truth(v, *, _p=_plain, _bool=_bool, _type=_type, _tuple=_tuple, _len=_len,
                ENUM_TAG=ENUM_TAG, _vkeep=_vkeep, _TE=_TypeError, _tname=_tname):
        p = _p(v, 0)
        if _type(p) is _tuple and _len(p) == 3 and p[0] is ENUM_TAG:  # Flag(0) is false
            if _vkeep(v, _type(v), 0) is not v:
                raise _TE("sandbox: strict mode cannot take the truth value of %s"
                          % (_tname(_type(v)),))
            return _bool(v)
        return _bool(p)

    def h_chain(ops, first, *thunks, _cmp=h_cmp, _len=_len):
        prev = first
        i = 0
        n = _len(ops)
        while i < n:
            cur = thunks[i]()
            if not _cmp(ops[i], prev, cur):
                return False
            prev = cur
            i += 1
        return True

    def _made(f, r, *, _g=_guard, _type=_type, _snap=CLS_SNAP, _id=_id, _intact=_intact,
              _watch=_watch, _w=WATCH, _viol=VIOL, _E=_PermissionError, _tqualname=_tqualname):
        """Test code called the stdlib class ``f`` (e.g. ``random.Random(42)``): an object of a
        stdlib class that the tests build themselves is accepted as it is (its classes and their
        modules must be unmodified)."""
        t = _type(r)
        if _id(t) not in _snap:
            return _g(r, 0)
        if _id(t) in _w:
            return r
        if not _intact(t):
            _viol.append("modified class %s" % (_tqualname(t),))
            raise _E("sandbox: stdlib class %s was modified" % (_tqualname(t),))
        _watch(t, None)
        return r

    def _shadow_call(f, literal, args, kwargs, *, _sh=SHADOW, _g=_guard, _p=_plain,
                     _bc=_BUILTIN_CALLABLES, _type=_type, _id=_id, _tmro=_tmro, _tdict=_tdict,
                     _list=_list, _tuple=_tuple, _TE=_TypeError, _AE=_AssertionError,
                     _dict_items=_dict_items):
        """A test calls, by a side-effect-free builtin's name, the candidate's function bound to that
        name (MBPP 126: ``assert sum(10, 15) == 6`` with ``def sum(a, b)``).  The builtin runs first
        (iterator arguments are read into lists so that both see the same items).  When it accepts
        the arguments the candidate's function must agree with it, so that redefining ``abs``,
        ``all``, ``sorted`` ... cannot make the tests' own checks lie.  When it refuses them
        (TypeError) the candidate's result is used only if the arguments are constants written in
        the test (the call is then the test of the candidate's function, not a check applied to
        something the candidate returned: ``all(f(x))`` with ``f`` returning None stays a TypeError)."""
        b, name = _sh[_id(f)]
        args = _list(args)
        i = 0
        for a in args:
            for c in _tmro(_type(a)):
                if "__next__" in _tdict(c):
                    args[i] = _list(a)
                    break
            i += 1
        for k, a in _dict_items(kwargs):
            for c in _tmro(_type(a)):
                if "__next__" in _tdict(c):
                    kwargs[k] = _list(a)
                    break
        args = _tuple(args)
        try:
            rb = b(*args, **kwargs)
        except _TE:
            if not literal:
                raise
            r = f(*args, **kwargs)
            return r if _type(f) in _bc else _g(r, 0)
        r = f(*args, **kwargs)
        if _type(f) not in _bc:
            r = _g(r, 0)
        try:
            pa = _p(r, 0)
            pb = _p(rb, 0)
            same = pa == pb or (pa != pa and pb != pb)
        except _TE:
            same = False
        if not same:
            raise _AE("sandbox: %s() defined by the candidate shadows the builtin and disagrees "
                      "with it on the same arguments" % (name,))
        return r

    def h_call(__sbx_f, /, *args, _sbx_g=_guard, _sbx_bc=_BUILTIN_CALLABLES, _sbx_type=_type,
               _sbx_id=_id, _sbx_snap=CLS_SNAP, _sbx_made=_made, _sbx_w=WATCH,
               _sbx_cw=_check_watch, **kwargs):
        r = __sbx_f(*args, **kwargs)
        if _sbx_type(__sbx_f) in _sbx_bc:
            return r
        if _sbx_w:  # candidate code may have run: the classes behind accepted values are unchanged
            _sbx_cw()
        if _sbx_id(__sbx_f) in _sbx_snap:
            return _sbx_made(__sbx_f, r)
        return _sbx_g(r, 0)

    def h_bcall(__sbx_name, __sbx_lit, __sbx_f, /, *args, _sbx_sh=SHADOW, _sbx_id=_id,
                _sbx_shc=_shadow_call, _sbx_call=h_call, _sbx_w=WATCH, _sbx_cw=_check_watch,
                **kwargs):
        """A call written with the name of a side-effect-free builtin (see _shadow_call)."""
        if _sbx_sh and _sbx_id(__sbx_f) in _sbx_sh:
            r = _sbx_shc(__sbx_f, __sbx_lit, args, kwargs)
            if _sbx_w:
                _sbx_cw()
            return r
        return _sbx_call(__sbx_f, *args, **kwargs)

    # Observations for the parent (see sandbox._Splitter): an assert arrives here as
    # ``h_obs(site, lambda: probe0, ...)``; the values go back as plain data and the parent, which
    # alone knows what they are compared with, decides.
    OBS = []
    TOK = []
    CUR = [0, 0]     # current test index, encoded bytes so far

    def _enc(v, d, *, _self=None, _type=_type, _int=_int, _float=float, _str=_str, _bytes=_bytes,
             _complex=complex, _list=_list, _tuple=_tuple, _set=_set, _frozenset=_frozenset,
             _dict=_dict, _bool=_bool, _hex=hex, _fhex=float.hex, _dict_items=_dict_items,
             _creal=_complex_real, _cimag=_complex_imag, _tname=_tname, _len=_len,
             FRAC_TAG=FRAC_TAG, ENUM_TAG=ENUM_TAG, _str_exact=_str_exact, _TE=_TypeError, _dec=None,
             _p=_plain, _tmro=_tmro, _tdict=_tdict, _tmodule=_tmodule, _tqualname=_tqualname,
             _range=range, _VALUE_TYPES=_VALUE_TYPES):
        t = _type(v)
        if v is None or t is _bool or t is _str:
            return v
        if t is _int:
            return v if -(1 << 53) < v < (1 << 53) else ["I", _hex(v)]
        if t is _float:
            return ["F", _fhex(v)]
        if d > 200:
            raise _TE("sandbox: value nested too deeply")
        d += 1
        if t is _list or t is _tuple or t is _set or t is _frozenset:
            if t is _tuple and _len(v) == 3 and v[0] is FRAC_TAG:
                return ["Q", _hex(v[1]), _hex(v[2])]
            if t is _tuple and _len(v) == 3 and v[0] is ENUM_TAG:
                return ["N", _str_exact(v[1]), v[2]]
            out = ["L" if t is _list else "T" if t is _tuple else "S" if t is _set else "Z"]
            for x in v:
                out.append(_self(x, d))
            return out
        if t is _dict:
            out = ["D"]
            for k, x in _dict_items(v):
                out.append([_self(k, d), _self(x, d)])
            return out
        if t is _bytes:
            return ["B", v.hex()]
        if t is _complex:
            return ["C", _fhex(_creal(v)), _fhex(_cimag(v))]
        if _dec is not None and t is _dec:
            return ["M", _str_exact(_str(v))]
        if t is _range:
            return ["R", v.start, v.stop, v.step]
        mq = (_tmodule(t), _tqualname(t))
        if mq in _VALUE_TYPES and mq[0] == "datetime":
            if mq[1] == "timedelta":
                return ["Y", "timedelta", v.days, v.seconds, v.microseconds]
            if mq[1] != "timezone":
                return ["Y", mq[1], _str_exact(v.isoformat())]
        for c in _tmro(t):
            if "__next__" in _tdict(c):  # an iterator (already guarded): its items, up to a bound
                out = ["G"]
                for x in v:
                    if _len(out) > 100000:
                        raise _TE("sandbox: iterator too long to check outside the sandbox")
                    out.append(_self(_p(x, 0), d))
                return out
        return ["X", _str_exact(_tname(t))]

    _enc.__kwdefaults__["_self"] = _enc

    def h_obs(site, *thunks, _p=_plain, _enc=_enc, _obs=OBS, _cur=CUR, _repr=_repr, _len=_len,
              _tname=_tname, _type=_type, _str_exact=_str_exact, _BE=_BaseException,
              _VE=_ValueError, CAP=2 << 20, _tuple=_tuple, _safe=None, _MemErr=_MemoryError):
        vals = []
        for th in thunks:
            try:
                e = _enc(_p(th(), 0), 0)
            except _MemErr:
                raise
            except _BE as ex:  # noqa: B036 - the parent fails the assert when it reads this value
                e = ["E", _str_exact(_tname(_type(ex))) + ": " + _safe(ex, 200)]
            vals.append(e)
        item = (_cur[0], site, vals)
        _cur[1] += _len(_repr(item))
        if _cur[1] > CAP:
            raise _VE("sandbox: the values the tests observed exceed %d bytes" % (CAP,))
        _obs.append(item)

    SENT = {"\x00sbx:call\x00": h_call, "\x00sbx:cmp\x00": h_cmp,
            "\x00sbx:truth\x00": h_truth, "\x00sbx:chain\x00": h_chain, "\x00sbx:bcall\x00": h_bcall,
            "\x00sbx:obs\x00": h_obs}

    def _patch_code(co, *, _self=None, SENT=SENT, CodeType=CodeType, _type=_type, _str=_str,
                    _tuple=_tuple):
        consts = []
        for c in co.co_consts:
            if _type(c) is _str and c in SENT:
                c = SENT[c]
            elif _type(c) is CodeType:
                c = _self(c)
            consts.append(c)
        return co.replace(co_consts=_tuple(consts))

    _patch_code.__kwdefaults__["_self"] = _patch_code

    def _deny(*args, _name="operation", _viol=VIOL, _E=_PermissionError, **kwargs):
        _viol.append(_name)
        raise _E("sandbox: %s is not allowed" % (_name,))

    def _mk_deny(name, *, _deny=_deny):
        def denied(*args, _sbx_d=_deny, _sbx_n=name, **kwargs):
            return _sbx_d(_name=_sbx_n)
        return denied

    # ------------------------------------------------------------------ load the job's code
    status = "pass"
    reason = ""
    n_tests = _len(job["tests"])
    test_codes = []
    test_srcs = job["test_srcs"]
    for _b in job["tests"]:  # marshalled code, or transformed source from a parent of another version
        test_codes.append(_patch_code(marshal.loads(_b) if type(_b) is bytes
                                      else compile(_b, "<test>", "exec", 0, True, 0)))
    ug = {"__name__": "__sbx_candidate__", "__builtins__": builtins, "__doc__": None}
    ucode = None
    setup_src = job["setup"]
    # Setup that uses names it does not define (e.g. a class of the candidate's solution) runs in
    # the candidate's namespace after the candidate; self-contained setup runs before it.
    setup_after = bool(job.get("setup_after", False))
    preimport = []
    for _m in job.get("preimport", ()):
        if type(_m) is str:
            preimport.append(_m)
    try:
        ucode = compile(job["code"], "<candidate>", "exec", 0, True)
    except BaseException as e:  # noqa: B036
        status = "error"
        reason = "candidate does not compile: %s: %s" % (type(e).__name__, str(e)[:500])
    setup_code = None
    if status == "pass" and setup_src:
        try:
            setup_code = compile(setup_src, "<setup>", "exec", 0, True)
        except BaseException as e:  # noqa: B036
            status = "error"
            reason = "setup code failed: %s: %s" % (type(e).__name__, str(e)[:500])
    if ucode is not None:  # value-type modules the candidate names: import them before it runs
        _names = set()
        _stack = [ucode]
        while _stack:
            _co = _stack.pop()
            _names.update(_co.co_names)
            for _c in _co.co_consts:
                if type(_c) is CodeType:
                    _stack.append(_c)
        for _n, _m in (("fractions", "fractions"), ("Fraction", "fractions"), ("enum", "enum"),
                       ("Enum", "enum"), ("IntEnum", "enum"), ("namedtuple", "collections"),
                       ("NamedTuple", "collections")):
            if _n in _names and _m not in preimport:
                preimport.append(_m)
        del _names, _stack, _co, _n, _m
        _c = None
    del job  # the only remaining copy of the nonce is the fast local ``nonce``

    # ------------------------------------------------------------------ lock the interpreter down
    # (a) native-module loading: refuse dangerous modules and re-creation of already loaded builtins
    #     (fresh copies of _signal/_thread/posix would come without our patches).
    DENY_MODULES = frozenset({
        "ctypes", "_ctypes", "cffi", "_cffi_backend", "_testcapi", "_testinternalcapi",
        "_testbuffer", "_testmultiphase", "_testsinglephase", "_testimportmultiple", "_testclinic",
        "_xxsubinterpreters", "_xxinterpchannels", "_xxinterpqueues", "_xxtestfuzz",
        "_interpreters", "_interpchannels", "_interpqueues", "xxsubtype", "xxlimited",
        "xxlimited_35", "_dbm", "_gdbm", "_posixshmem", "_multiprocessing", "_lsprof"}
        # native subsystems with their own file / process access that no audit event covers
        # (Tcl's exec, readline history files, sqlite ATTACH / VACUUM INTO, /etc/shadow ...),
        # unless the trusted tests or setup import them
        | ({"_tkinter", "tkinter", "readline", "_sqlite3", "sqlite3", "spwd", "_curses", "curses",
            "_curses_panel", "nis", "crypt", "_crypt", "termios", "ossaudiodev", "_uuid"}
           - set(preimport)))
    loaded_builtins = _set()
    for _n in sys.modules:
        if _n in sys.builtin_module_names:
            loaded_builtins.add(_n)
    loaded_builtins = frozenset(loaded_builtins)

    loaded_dynamic = _set()  # extension modules loaded before the hook (filled in below)

    def _loader_gen(orig_builtin, orig_dynamic, deny, loaded, read_roots, max_procs, deny_fork,
                    _NS, _type, _str, _realpath, _under, _viol, _E, _BE, loaded_dyn):
        # Validates a load request and hands back (loader, clean spec, post-patch).  The originals live
        # only in this suspended generator frame and, during a load, in the wrapper's fast locals
        # (re-entrant: loading one extension may import others).
        out = None
        while True:
            kind, spec, file = yield out
            try:
                name = spec.name
                if _type(name) is not _str:
                    raise _E("sandbox: bad module spec")
                bad = False
                for part in name.split("."):
                    if part in deny:
                        bad = True
                origin = spec.origin
                if _type(origin) is _str:  # the extension's file: x/_tkinter.cpython-311-...so
                    if origin.rpartition("/")[2].partition(".")[0] in deny:
                        bad = True
                if bad:
                    _viol.append("import " + name)
                    raise _E("sandbox: importing %s is not allowed" % (name,))
                patch = deny_fork if (max_procs == 0 and name.rpartition(".")[2] == "_posixsubprocess"
                                      ) else None
                if kind == 0:
                    if name in loaded:
                        _viol.append("re-create " + name)
                        raise _E("sandbox: re-creating builtin module %s is not allowed" % (name,))
                    out = (True, (orig_builtin, _NS(name=name, origin="built-in"), patch))
                else:
                    if name in loaded_dyn:  # a fresh copy would come without our patches
                        _viol.append("re-create " + name)
                        raise _E("sandbox: re-creating extension module %s is not allowed" % (name,))
                    if _type(origin) is not _str or file is not None:
                        raise _E("sandbox: bad extension module spec")
                    rp = _realpath(origin)
                    if rp is None or not _under(rp, read_roots):
                        _viol.append("load " + origin)
                        raise _E("sandbox: loading native code from %s is not allowed" % (origin,))
                    out = (True, (orig_dynamic, _NS(name=name, origin=origin), patch))
            except _BE as e:  # noqa: B036 - the generator must survive every error
                out = (False, e)

    _lg = _loader_gen(_imp.create_builtin, _imp.create_dynamic, DENY_MODULES, loaded_builtins,
                      STDLIB_ROOTS, max_procs, _mk_deny("_posixsubprocess.fork_exec"), _NS, _type,
                      _str, _realpath, _under, VIOL, _PermissionError, _BaseException, loaded_dynamic)
    next(_lg)

    def create_builtin(spec, *, _sbx_send=_lg.send):
        ok, val = _sbx_send((0, spec, None))
        if not ok:
            raise val
        loader, clean, patch = val
        val = None
        return loader(clean)

    def create_dynamic(spec, file=None, *, _sbx_send=_lg.send):
        ok, val = _sbx_send((1, spec, file))
        if not ok:
            raise val
        loader, clean, patch = val
        val = None
        mod = loader(clean)
        if patch is not None:
            mod.fork_exec = patch
        return mod

    _imp.create_builtin = create_builtin
    _imp.create_dynamic = create_dynamic
    # (b) Python-level signal handlers would receive the interrupted (harness) frame: refuse them.
    _signal.signal = _mk_deny("signal.signal")
    # (c) threads/processes and a few un-audited posix calls.
    _patched = [create_builtin, create_dynamic, _signal.signal]
    if max_procs == 0:
        for _n in list(vars(_thread)):
            if _n.startswith("start_"):
                setattr(_thread, _n, _mk_deny("_thread." + _n))
                _patched.append(getattr(_thread, _n))
    # Calls that raise no audit event but reach other processes, the clock, the terminal or memory
    # outside RLIMIT_AS (pidfd_send_signal stops the parent, setpriority / sched_setaffinity on other
    # pids, memfd, ioctl, clock_settime, setuid games when root could not be dropped ...).
    import fcntl as _fcntl_mod
    for _mod, _pre, _names in (
            (posix, "os.", ("mkfifo", "mknod", "chroot", "unshare", "setns", "setsid", "setpgid",
                            "setpgrp", "pidfd_open", "setpriority", "sched_setaffinity",
                            "sched_setscheduler", "sched_setparam", "memfd_create", "nice",
                            "tcsetpgrp", "login_tty", "openpty", "setuid", "seteuid", "setreuid",
                            "setresuid", "setgid", "setegid", "setregid", "setresgid", "setgroups",
                            "initgroups", "eventfd", "posix_fallocate", "pwritev", "copy_file_range",
                            "splice")),
            (_signal, "signal.", ("pidfd_send_signal", "sigwait", "sigwaitinfo", "sigtimedwait")),
            (sys.modules["time"], "time.", ("clock_settime", "clock_settime_ns")),
            (_fcntl_mod, "fcntl.", ("ioctl", "flock", "lockf")),
            (gc, "gc.", ("set_debug",))):  # DEBUG_SAVEALL keeps frames that lead to the harness
        for _n in _names:
            if hasattr(_mod, _n):
                setattr(_mod, _n, _mk_deny(_pre + _n))
                _patched.append(getattr(_mod, _n))
    del _mod, _pre, _names, _fcntl_mod
    # Pre-imported (before the hook): ``types`` needs ``tb_frame`` at import time; ``math`` so that its
    # namespace is snapshotted and restored before the tests; the stdlib modules the tests / setup
    # import and the value-type modules the candidate names (see PREIMPORT_OK), for the same reason
    # and so that strict mode knows their classes are genuine.
    import types  # noqa: F401
    import math  # noqa: F401
    _nv = len(VIOL)
    for _m in preimport:
        if _m in PREIMPORT_OK:
            try:
                __import__(_m)
            except BaseException:  # noqa: B036
                pass
    del VIOL[_nv:]  # not the candidate's doing
    del _nv

    # Trusted, self-contained setup code (e.g. MBPP test_setup_code) runs here, after the patches
    # above, so that modules it imports (os, subprocess ...) bind the patched functions, and before
    # the audit hook.  Module names it binds stay bound to those modules in the tests' namespace.
    pins = {}
    if status == "pass" and setup_code is not None and not setup_after:
        try:
            _exec(setup_code, ug)
        except BaseException as e:  # noqa: B036
            status = "error"
            reason = "setup code failed: %s: %s" % (type(e).__name__, str(e)[:500])
        setup_code = None
        for _k, _v in ug.items():
            if isinstance(_v, type):
                trusted.add(_id(_v))  # classes defined by the setup code are accepted as values
            elif type(_v) is type(sys) and type(_k) is str and not _k.startswith("__"):
                pins[_k] = _v
        _k = _v = None

    # Value types strict mode knows (only when their module was loaded before the candidate).
    _fm = sys.modules.get("fractions")
    _F = vars(_fm).get("Fraction") if _fm is not None else None
    if (isinstance(_F, type) and type(_F.__dict__.get("_numerator")) is _MEMBER_DESCR
            and type(_F.__dict__.get("_denominator")) is _MEMBER_DESCR):
        _dn = _F.__dict__["_numerator"]
        _dd = _F.__dict__["_denominator"]
        _vkeep.__kwdefaults__.update(_frac=_F, _fnum=_dn.__get__, _fden=_dd.__get__,
                                     _fnum_set=_dn.__set__, _fden_set=_dd.__set__)
        _fcanon.__kwdefaults__.update(_fnum=_dn.__get__, _fden=_dd.__get__)
        _plain.__kwdefaults__["_frac"] = _F
        del _dn, _dd
    _em = sys.modules.get("enum")
    _E = vars(_em).get("Enum") if _em is not None else None
    if isinstance(_E, type):
        _vkeep.__kwdefaults__.update(_enum=_E, _enum_meta=type(_E))
        _plain.__kwdefaults__["_enum"] = _E
    _cm = sys.modules.get("collections")
    if _cm is not None:
        try:
            _probe = _cm.namedtuple("_sbx_probe", "a")
            GENUINE_CODES.add(_id(_probe.__repr__.__code__))
            KEEPALIVE.append(_probe)
            _probe = None
        except Exception:  # noqa: BLE001
            pass
    del _fm, _F, _em, _E, _cm

    # (d) the audit hook
    D, GETFRAME, GETATTR, SETATTR, OPEN, CHDIR, PATHS, KILL, IMPORT, MARSHAL, SQLITE, PROC = range(12)
    POLICY = {
        "sys._getframe": GETFRAME, "sys._getframemodulename": GETFRAME,
        "sys._current_frames": D, "sys._current_exceptions": D,
        "sys.settrace": D, "sys.setprofile": D, "sys.addaudithook": D,
        "sys.monitoring.register_callback": D, "sys.remote_exec": D,
        "gc.get_objects": D, "gc.get_referrers": D, "gc.get_referents": D,
        "code.__new__": D, "resource.setrlimit": D, "resource.prlimit": D,
        "os.killpg": D, "signal.pthread_kill": D, "os.link": D, "os.symlink": D, "os.chown": D,
        "os.chflags": D, "os.lchflags": D, "shutil.chown": D, "os.startfile": D,
        "sqlite3.enable_load_extension": D, "sqlite3.load_extension": D, "webbrowser.open": D,
        "syslog.openlog": D, "syslog.syslog": D, "urllib.Request": D,
        "object.__getattr__": GETATTR, "object.__setattr__": SETATTR, "object.__delattr__": SETATTR,
        "open": OPEN, "os.chdir": CHDIR, "os.kill": KILL, "import": IMPORT,
        "marshal.loads": MARSHAL, "marshal.load": D, "sqlite3.connect": SQLITE,
        "os.fork": PROC, "os.forkpty": PROC, "os.exec": PROC, "os.posix_spawn": PROC,
        "os.spawn": PROC, "os.system": PROC, "subprocess.Popen": PROC, "pty.spawn": PROC,
        # (paths that must stay inside tmp, dir_fd argument positions)
        "os.mkdir": PATHS, "os.rmdir": PATHS, "os.remove": PATHS, "os.rename": PATHS,
        "os.chmod": PATHS, "os.utime": PATHS, "os.truncate": PATHS, "os.setxattr": PATHS,
        "os.removexattr": PATHS, "shutil.rmtree": PATHS, "shutil.copyfile": PATHS,
        "shutil.copymode": PATHS, "shutil.copystat": PATHS, "shutil.copytree": PATHS,
        "shutil.move": PATHS, "shutil.make_archive": PATHS, "shutil.unpack_archive": PATHS,
        "tempfile.mkstemp": PATHS, "tempfile.mkdtemp": PATHS,
    }
    PATHSPEC = {  # event: (path arg positions that must be inside tmp, dir_fd positions, int path ok)
        "os.mkdir": ((0,), (2,), False), "os.rmdir": ((0,), (1,), False),
        "os.remove": ((0,), (1,), False), "os.rename": ((0, 1), (2, 3), False),
        "os.chmod": ((0,), (2,), False), "os.utime": ((0,), (3,), False),
        "os.truncate": ((0,), (), True), "os.setxattr": ((0,), (), False),
        "os.removexattr": ((0,), (), False), "shutil.rmtree": ((0,), (1,), False),
        "shutil.copyfile": ((1,), (), False), "shutil.copymode": ((1,), (), False),
        "shutil.copystat": ((1,), (), False), "shutil.copytree": ((1,), (), False),
        "shutil.move": ((0, 1), (), False), "shutil.make_archive": ((0,), (), False),
        "shutil.unpack_archive": ((1,), (), False), "tempfile.mkstemp": ((0,), (), False),
        "tempfile.mkdtemp": ((0,), (), False),
    }
    DENY_PREFIX = frozenset({"socket", "ctypes", "ftplib", "http", "imaplib", "nntplib", "poplib",
                             "smtplib", "telnetlib", "_winapi", "winreg", "msvcrt"})
    FRAME_ATTRS = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back", "f_locals",
                             "f_globals", "f_builtins", "f_code", "f_trace", "f_lineno"})
    PROTECTED = _set()
    BUSY = [0]

    def _path_ok(p, write, *, _type=_type, _str=_str, _bytes=_bytes, _realpath=_realpath,
                 _under=_under, TMP_ROOTS=TMP_ROOTS, READ_ROOTS=READ_ROOTS, READ_FILES=READ_FILES,
                 WRITE_FILES=WRITE_FILES, _stat=_stat, _OSError=_OSError):
        t = _type(p)
        if t is _bytes:
            p = p.decode("utf-8", "surrogateescape")
        elif t is not _str:
            return False
        if "\x00" in p:
            return False
        rp = _realpath(p)
        if rp is None:
            return False
        if write:
            if not (_under(rp, TMP_ROOTS) or rp in WRITE_FILES):
                return False
        elif not (_under(rp, READ_ROOTS) or rp in READ_FILES):
            return False
        return True

    def _is_dir(p, *, _type=_type, _str=_str, _bytes=_bytes, _realpath=_realpath, _stat=_stat,
                _OSError=_OSError, _TypeError=_TypeError):
        if _type(p) is _bytes:
            p = p.decode("utf-8", "surrogateescape")
        try:
            return _stat(_realpath(p)).st_mode & 0o170000 == 0o040000
        except (_OSError, _TypeError):
            return False

    def _hook(event, args, *, _pol=POLICY, _pathspec=PATHSPEC, _deny_prefix=DENY_PREFIX,
              _frame_attrs=FRAME_ATTRS, _protected=PROTECTED, _busy=BUSY, _viol=VIOL,
              _path_ok=_path_ok, _is_dir=_is_dir, _type=_type, _str=_str, _int=_int,
              _bytes=_bytes, _id=_id, _E=_PermissionError, _VE=_ValueError, _getframe=_getframe,
              _realpath=_realpath, _under=_under, STDLIB_ROOTS=STDLIB_ROOTS, TMP_ROOTS=TMP_ROOTS,
              _open=_open, _read=_read, _close=_close, _memoryview=memoryview, _len=_len,
              my_pid=my_pid, max_procs=max_procs, deny_modules=DENY_MODULES,
              D=D, GETFRAME=GETFRAME, GETATTR=GETATTR, SETATTR=SETATTR, OPEN=OPEN, CHDIR=CHDIR,
              PATHS=PATHS, KILL=KILL, IMPORT=IMPORT, MARSHAL=MARSHAL, SQLITE=SQLITE, PROC=PROC,
              _BE=_BaseException, _files=[0], MAX_FILES=256):
        if _busy[0]:
            return
        code = _pol.get(event)
        if code is None:
            if event.partition(".")[0] in _deny_prefix:
                code = D
            else:
                return
        if code == OPEN:
            path, mode, flags = args
            if _type(path) is _int:
                return
            write = False
            if _type(mode) is _str:
                for ch in "wax+":
                    if ch in mode:
                        write = True
            if _type(flags) is _int and flags & 0o3103:  # O_WRONLY|O_RDWR|O_CREAT|O_TRUNC|O_APPEND
                write = True
            if _path_ok(path, write) and not _is_dir(path):
                if write:
                    _files[0] += 1
                    if _files[0] > MAX_FILES:
                        _viol.append("more than %d files written" % (MAX_FILES,))
                        raise _E("sandbox: too many files written")
                return
            _viol.append("open(%r, %s)" % (path, "write" if write else "read"))
            raise _E("sandbox: opening %r for %s is not allowed" % (path, "writing" if write
                                                                      else "reading"))
        if code == GETATTR:
            if args[1] in _frame_attrs or _id(args[0]) in _protected:
                _viol.append("getattr %s" % (args[1],))
                raise _E("sandbox: access to %s is not allowed" % (args[1],))
            return
        if code == SETATTR:
            if _id(args[0]) in _protected:
                _viol.append("setattr %s" % (args[1],))
                raise _E("sandbox: modifying harness functions is not allowed")
            return
        if code == GETFRAME:
            raise _VE("sandbox: call stack introspection is disabled")
        if code == IMPORT:
            name = args[0]
            bad = _type(name) is not _str
            if not bad:
                for part in name.split("."):
                    if part in deny_modules:
                        bad = True
            if bad:
                _viol.append("import " + name)
                raise _E("sandbox: importing %s is not allowed" % (name,))
            return
        if code == MARSHAL:
            ok = False
            data = args[0]
            _busy[0] = 1
            try:
                f = _getframe(1)
                co = f.f_code
                if (co.co_name == "_compile_bytecode"
                        and co.co_filename == "<frozen importlib._bootstrap_external>"
                        and (_type(data) is _bytes or _type(data) is _memoryview)):
                    bp = f.f_locals.get("bytecode_path")
                    if _type(bp) is _str:
                        rp = _realpath(bp)
                        if rp is not None and _under(rp, STDLIB_ROOTS):
                            fd = _open(rp, 0)
                            try:
                                chunks = []
                                while True:
                                    c = _read(fd, 1 << 20)
                                    if not c:
                                        break
                                    chunks.append(c)
                            finally:
                                _close(fd)
                            content = b"".join(chunks)
                            if _type(data) is _memoryview:
                                data = data.tobytes()
                            ok = _len(content) >= 16 and content[16:] == data
                del f, co
            except _BE:  # noqa: B036
                ok = False
            finally:
                _busy[0] = 0
            if ok:
                return
            _viol.append("marshal.loads")
            raise _E("sandbox: unmarshalling code is not allowed")
        if code == PATHS:
            spec = _pathspec.get(event)
            if spec is not None:
                paths, dirfds, int_ok = spec
                good = True
                n = _len(args)
                for i in dirfds:
                    if i < n and args[i] is not None and args[i] != -1:
                        good = False
                for i in paths:
                    if i < n:
                        p = args[i]
                        if _type(p) is _int:
                            if not int_ok:
                                good = False
                        elif not _path_ok(p, True):
                            good = False
                if good:
                    if event == "os.mkdir":
                        _files[0] += 1
                        if _files[0] > MAX_FILES:
                            _viol.append("more than %d files written" % (MAX_FILES,))
                            raise _E("sandbox: too many files written")
                    return
            _viol.append("%s%r" % (event, args))
            raise _E("sandbox: %s outside the sandbox directory is not allowed" % (event,))
        if code == CHDIR:
            p = args[0]
            if (_type(p) is _str or _type(p) is _bytes) and _path_ok(p, True):
                return
            _viol.append("os.chdir")
            raise _E("sandbox: leaving the sandbox directory is not allowed")
        if code == KILL:
            if args[0] == my_pid:
                return
            _viol.append("os.kill(%r)" % (args[0],))
            raise _E("sandbox: signalling other processes is not allowed")
        if code == PROC:
            if max_procs > 0:
                return
            _viol.append(event)
            raise _E("sandbox: starting processes is not allowed")
        if code == SQLITE:
            db = args[0]
            if db == ":memory:" or db == "" or _path_ok(db, True):
                return
            _viol.append(event)
            raise _E("sandbox: sqlite database outside the sandbox directory")
        _viol.append(event)
        raise _E("sandbox: %s is not allowed" % (event,))

    def _safe_text(x, limit=300, *, _type=_type, _str=_str, _str_exact=_str_exact,
                   _BE=_BaseException):
        """str(x) as an exact str, truncated; never raises."""
        try:
            s = x if _type(x) is _str else _str(x)
            s = _str_exact(s)
        except _BE:  # noqa: B036
            return "<unprintable>"
        return s[:limit]

    def _brepr(v, *, _repr=_repr, _safe=_safe_text, _BE=_BaseException, _type=_type,
               _tuple=_tuple, _len=_len, FRAC_TAG=FRAC_TAG, ENUM_TAG=ENUM_TAG):
        try:
            if _type(v) is _tuple and _len(v) == 3:
                if v[0] is FRAC_TAG:
                    return _safe("Fraction(%d, %d)" % (v[1], v[2]), 200)
                if v[0] is ENUM_TAG:
                    return "<%s member>" % (_safe(v[1], 100),)
            return _safe(_repr(v), 200)
        except _BE:  # noqa: B036
            return "<unrepresentable>"

    # Snapshot of every loaded module's namespace and of the classes defined there (restored before
    # the tests run; the classes also tell strict mode which classes are genuine stdlib classes).
    mod_snap = []
    _by_name = {}
    _v = _d = _md2 = None
    for _n, _m in list(sys.modules.items()):
        if _n != "__main__" and _m is not None and _type(_m) is _type(sys):
            _md = vars(_m)
            _ms = _snapshot(_md)
            mod_snap.append((_n, _m, _md, _ms[0]))
            _by_name[_n] = (_md, _ms)
    for _n, (_md, _ms) in _by_name.items():
        for _v in _ms[2]:
            if (isinstance(_v, type) and _tflags(_v) & HEAP and not _tflags(_v) & IMMUT
                    and _id(_v) not in CLS_SNAP):
                _d = _snapshot(_tdict(_v))
                _md2 = _by_name.get(_d[0].get("__module__"), (_md, _ms))
                CLS_SNAP[_id(_v)] = (_v, _d, _tmro(_v), _md2[0], _md2[1])
    del _by_name, _v, _d, _md2
    sys_modules = sys.modules
    bdict = vars(builtins)
    bsnap = dict(bdict)
    builtin_names = frozenset(bsnap)

    def _restore_all(*, bdict=bdict, bsnap=bsnap, mod_snap=mod_snap, sys_modules=sys_modules,
                     _snap=CLS_SNAP, _same=_same, _same_seq=_same_seq, _tdict=_tdict, _tmro=_tmro,
                     _list=_list, _dict_items=_dict_items, _setattr=_type_setattr,
                     _delattr=_type_delattr, _viol=VIOL, _M=_MISSING, _tqualname=_tqualname):
        """Undo what the candidate did to the builtins, to the namespaces of the modules loaded
        before it ran (and sys.modules entries) and to the classes defined there."""
        for k in _list(bdict):
            if k not in bsnap:
                del bdict[k]
        for k, v in _dict_items(bsnap):
            if bdict.get(k) is not v:
                bdict[k] = v
        for n, m, md, snap in mod_snap:
            if sys_modules.get(n) is not m:
                sys_modules[n] = m
            for k, v in _dict_items(snap):
                if md.get(k) is not v:
                    md[k] = v
        for c, d, mro, md, ms in _snap.values():
            if not _same_seq(_tmro(c), mro):
                _viol.append("changed the bases of %s" % (_tqualname(c),))
            cd = _tdict(c)
            if _same(cd, d):
                continue
            d = d[0]
            for k in _list(cd):
                if k not in d:
                    _delattr(c, k)
            for k, v in _dict_items(d):
                if cd.get(k, _M) is not v:
                    _setattr(c, k, v)

    h_obs.__kwdefaults__["_safe"] = _safe_text
    _dm = sys.modules.get("decimal")
    if _dm is not None and isinstance(vars(_dm).get("Decimal"), type):
        _enc.__kwdefaults__["_dec"] = vars(_dm)["Decimal"]
    del _dm
    for _f in (_readn, _setlim, _emit, _enc, h_obs, _realpath, _under, _plain, _giter, _guard, _cmp_core, h_cmp,
               h_truth, h_chain, h_call, h_bcall, _patch_code, _deny, _mk_deny, _loader_gen,
               create_builtin, create_dynamic, _path_ok, _is_dir, _hook, _safe_text, _brepr,
               _in_mro, _inert, _same, _same_seq, _intact, _watch, _check_watch, _fcanon, _rkey,
               _ratcmp, _class_ok, _enum_ok, _vkeep, _enum_in, _made, _shadow_call, _restore_all,
               *_patched):
        PROTECTED.add(_id(_f))
    OPNAMES = ("==", "!=", "<", "<=", ">", ">=", "is", "is not", "in", "not in")
    _stdout_flush = _stdout0.flush
    _stderr_flush = _stderr0.flush
    n_passed = 0
    del _n, _m, _md, _ms, _f, _patched
    for _n, _m in list(sys.modules.items()):
        if _m is not None and _type(getattr(_m, "__file__", None)) is _str and _m.__file__.endswith(".so"):
            loaded_dynamic.add(_n)
    _n = _m = None
    sys.addaudithook(_hook)

    # ============================ UNTRUSTED CODE MAY RUN BELOW THIS LINE ============================
    if status == "pass" and ucode is not None:
        try:
            _exec(ucode, ug)
        except _BaseException as e:  # noqa: B036
            status = "error"
            reason = "candidate raised %s at import time: %s" % (_safe_text(_tname(_type(e))),
                                                                 _safe_text(e))
    ucode = None

    tg = None
    if status == "pass":
        # Restore what the tests rely on: builtins, module namespaces and their classes, sys.path &
        # co.  Setup code that needs the candidate's definitions runs now, in the candidate's
        # namespace (and the state is restored again: it may have run candidate code).  The tests
        # get their own namespace: the candidate's globals (a candidate function named like a builtin
        # included: see _shadow_call; other names that shadow builtins excluded; setup-bound modules
        # pinned), with a pristine copy of the builtins.
        try:
            _restore_all()
            if setup_code is not None:
                before = _set()
                for v in _dict_items(ug):
                    before.add(_id(v[1]))
                try:
                    _exec(setup_code, ug)
                except _BaseException as e:  # noqa: B036
                    status = "error"
                    reason = "setup code failed: %s: %s" % (_safe_text(_tname(_type(e))),
                                                            _safe_text(e))
                for k, v in _dict_items(ug):  # classes the setup code created (not the candidate's)
                    if _id(v) not in before and _issubclass(_type(v), _typetype):
                        trusted.add(_id(v))
                before = None
                _restore_all()
            if status == "pass":
                tg = {}
                for k, v in _dict_items(ug):
                    if _type(k) is not _str:
                        continue
                    if k in builtin_names:
                        b = bsnap.get(k)
                        if v is b or _id(b) not in PURE:
                            continue
                        tv = _type(v)
                        fl = _tflags(tv)
                        if tv is FunctionType or ((not (fl & HEAP) or fl & IMMUT) and _callable(v)
                                                  and not _issubclass(tv, _typetype)):
                            tg[k] = v
                            SHADOW[_id(v)] = (b, k)
                        continue
                    tg[k] = v
                for k, v in _dict_items(pins):
                    tg[k] = v
                tg["__builtins__"] = bsnap.copy()
                tg["__name__"] = "__sbx_tests__"
        except _BaseException as e:  # noqa: B036
            status = "fail"
            reason = "sandbox: could not restore the interpreter state (%s)" % (_safe_text(e),)
            tg = None
        k = v = b = tv = fl = None

    if status == "pass":
        i = 0
        first_fail = ""
        saw_memory_error = False
        for tc in test_codes:
            LAST[0] = None
            CUR[0] = i
            TOK.append(False)
            try:
                _exec(tc, tg)
                if WATCH:
                    _check_watch()
                n_passed += 1
                TOK[i] = True
            except _BaseException as e:  # noqa: B036 - SystemExit & co. from the candidate fail the test
                if _type(e) is _MemoryError:
                    saw_memory_error = True
                if not first_fail:
                    first_fail = "test %d failed: %s: %s" % (i, _safe_text(_tname(_type(e))),
                                                            _safe_text(e))
                    last = LAST[0]
                    if last is not None:
                        first_fail += " [strict check %s %s %s is False]" % (
                            _brepr(last[1]), OPNAMES[last[0]], _brepr(last[2]))
                    first_fail += " | test: " + test_srcs[i][:200]
                    last = None
            i += 1
        tg = None
        if n_passed != n_tests:
            status = "error" if saw_memory_error else "fail"
            reason = first_fail
    try:
        if VIOL:
            if status == "pass":
                status = "fail"
            reason = "sandbox violation: " + "; ".join(VIOL[:5])[:500] + (
                " || " + reason if reason else "")
    except _BaseException:  # noqa: B036
        status = "fail"
        reason = "sandbox violation"
    try:
        _stdout_flush()
    except _BaseException:  # noqa: B036
        pass
    try:
        _stderr_flush()
    except _BaseException:  # noqa: B036
        pass

    # Final phase: no untrusted code is expected to run from here on.
    _gc_disable()
    if max_procs == 0 and _tcount() != 0:
        status = "fail"
        reason = "sandbox: threads still running at the end of the tests"
    try:
        st = _fstat(res_fd)
        same = (st.st_dev, st.st_ino) == res_ident
    except _BaseException:  # noqa: B036
        same = False
    if not same:
        _exit(0)  # the result channel was replaced: report nothing
    try:
        try:
            payload = _repr([TOK, OBS])
        except _BaseException:  # noqa: B036
            payload = ""
        _emit(status, n_tests, n_passed, reason, nonce, res_fd, payload)
    finally:
        _exit(0)


if __name__ == "__main__":
    _sbx_main()
