# %% [markdown]
# # Tricky cells
# Python constructs whose meaning depends on scopes, identity or module state: each cell must do the same
# under `%%thither` as in a plain kernel (the harness runs it both ways and compares outputs and namespaces).

# %% [markdown]
# ## Closures over loop variables, lambdas, defaults

# %%
funcs = [lambda: i for i in range(3)]
[f() for f in funcs]

# %%
bound = [lambda i=i: i * 10 for i in range(3)]
[f() for f in bound]

# %%
def make_counter(start):
    count = start
    def step(by=1):
        nonlocal count
        count += by
        return count
    return step

counter = make_counter(10)
counter(), counter(5)

# %%
counter()

# %%
scale = 3
def scaled(v):
    return v * scale
scaled(2)

# %%
scale = 4
scaled(2)

# %% [markdown]
# ## Decorators

# %%
import functools

calls = []
def logged(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        calls.append(fn.__name__)
        return fn(*args, **kwargs)
    return wrapper

@logged
def add(a, b):
    """Add two numbers."""
    return a + b

add(2, 3), add.__name__, add.__doc__, calls

# %%
@functools.lru_cache(maxsize=None)
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)
fib(30), fib.cache_info().hits > 0

# %% [markdown]
# ## Dataclasses and enums

# %%
from dataclasses import dataclass, field, asdict

@dataclass(order=True)
class Point:
    x: float
    y: float = 0.0
    tags: list = field(default_factory=list)

p = Point(1.5, 2.0)
q = Point(1.5)
p, q, p > q, asdict(p)

# %%
p.tags.append("origin-ish")
p

# %%
points = sorted([Point(3, 1), Point(1, 2), Point(2, 0)])
isinstance(points[0], Point), type(points[0]) is Point, points[0]

# %%
import enum

class Color(enum.Enum):
    RED = 1
    GREEN = 2

class Perm(enum.Flag):
    R = 4
    W = 2
    X = 1

favourite = Color.GREEN
rw = Perm.R | Perm.W
favourite, favourite is Color.GREEN, Color(1), rw, Perm.W in rw

# %%
favourite is Color.GREEN, isinstance(favourite, Color), [c.name for c in Color]

# %% [markdown]
# ## Generators

# %%
def countdown(n):
    while n > 0:
        yield n
        n -= 1

list(countdown(4)), sum(x * x for x in range(5))

# %% limit=value-cannot-travel
# A live generator cannot be pickled: under %%thither it is not brought back (a warning names it).
gen = countdown(3)
first = next(gen)
first

# %% [markdown]
# ## Context managers

# %%
import contextlib

events = []
@contextlib.contextmanager
def tracked(name):
    events.append(f"enter {name}")
    try:
        yield name.upper()
    finally:
        events.append(f"exit {name}")

with tracked("a") as value:
    events.append(f"inside {value}")
events

# %%
with contextlib.suppress(KeyError):
    {}["missing"]
print("suppressed")

# %%
import io
buffer = io.StringIO()
with contextlib.redirect_stdout(buffer):
    print("captured line")
captured = buffer.getvalue()
print("after:", captured.strip())

# %% [markdown]
# ## global and nonlocal

# %%
total = 0
def bump(by):
    global total
    total += by
    return total
bump(5), bump(7), total

# %%
bump(1)
total

# %%
def outer():
    level = "outer"
    def inner():
        nonlocal level
        level = "inner"
    inner()
    return level
outer()

# %% [markdown]
# ## Walrus, match, comprehension scopes

# %%
data = [3, 8, 1, 9, 4]
if (n := len(data)) > 3:
    print(f"{n} items")
[y for x in data if (y := x * 2) > 6], y, n

# %%
def kind(value):
    match value:
        case {"type": "point", "x": x, "y": y}:
            return f"point {x},{y}"
        case [first, *rest]:
            return f"list starting {first} (+{len(rest)})"
        case Point(x=0):
            return "point on the y axis"
        case Color.RED:
            return "red"
        case str() as s if s:
            return f"text {s!r}"
        case _:
            return "other"

[kind(v) for v in ({"type": "point", "x": 1, "y": 2}, [1, 2, 3], Point(0, 5), Color.RED, "hi", 42)]

# %%
x = "outer x"
squares = [x * x for x in range(4)]
x, squares

# %%
matrix = {(r, c): r * c for r in range(3) for c in range(3) if r != c}
letters = {ch for ch in "mississippi"}
sorted(letters), len(matrix)

# %% [markdown]
# ## Class bodies

# %%
class Registry:
    kinds = ["a", "b"]
    upper = [k.upper() for k in kinds]
    count = len(kinds)

    def __init__(self):
        self.items = {}

    def register(self, key, value):
        self.items[key] = value
        return self

    @classmethod
    def build(cls, **items):
        reg = cls()
        for k, v in items.items():
            reg.register(k, v)
        return reg

    @property
    def size(self):
        return len(self.items)

reg = Registry.build(one=1, two=2)
Registry.upper, Registry.count, reg.size

# %%
class Base:
    def greet(self):
        return "base"

class Child(Base):
    def greet(self):
        return "child+" + super().greet()

child = Child()
child.greet(), isinstance(child, Base), Child.__mro__[1] is Base

# %%
class Meta(type):
    def __new__(mcls, name, bases, ns):
        ns["created_by"] = mcls.__name__
        return super().__new__(mcls, name, bases, ns)

class WithMeta(metaclass=Meta):
    pass

WithMeta.created_by, type(WithMeta) is Meta

# %% [markdown]
# ## `__main__` classes and isinstance

# %%
made_here = Point(7, 8)
isinstance(made_here, Point), type(made_here).__module__

# %%
isinstance(made_here, Point), isinstance(p, Point), type(made_here) is type(p)

# %%
class Shape:
    sides = 0

class Square(Shape):
    sides = 4

shapes = [Square(), Shape()]
[isinstance(s, Shape) for s in shapes], [type(s).__name__ for s in shapes]

# %%
[isinstance(s, Square) for s in shapes], issubclass(Square, Shape)

# %% [markdown]
# ## del, identity and aliasing

# %%
A = [1, 2, 3]
B = A
B.append(4)
A, A is B

# %%
A is B

# %%
nested = {"inner": A}
nested["inner"] is A

# %%
del B
"B" in dir(), A

# %%
temp = "to be deleted"
del temp
"temp" in dir()

# %%
xs = [1, 2, 3]
del xs[0]
xs

# %% [markdown]
# ## Mutation through method calls, and names only inside strings

# %%
log = ["start"]
settings = {"mode": "fast"}

# %%
log.append("step")
settings.update(mode="slow")
len(log)

# %%
log, settings

# %%
history = [1]
history_alias = history

# %%
# The cell reads only `history`; the list is changed in place in the notebook too, so `history_alias` sees it.
history.append(2)

# %%
history_alias, history_alias is history

# %%
class Slotted:
    __slots__ = ("n",)

    def __init__(self):
        self.n = 0

    def bump(self):
        self.n += 1

slotted = Slotted()
slotted_alias = slotted

# %% limit=in-place-change-new-object
# A __slots__ object cannot be updated in place: it comes back as a new object, `slotted_alias` keeps the old one.
slotted.bump()

# %%
slotted_alias.n, slotted_alias is slotted

# %%
import numpy as np
big = np.zeros(2_000_000)

# %% limit=method-call-mutation
# 16 MB: over the size the worker checksums, so a change by a method call is not seen.
big.fill(1.0)

# %% thither-args="--out big"
# The README's workaround: name it in --out.
big.fill(2.0)

# %%
float(big.sum())

# %%
import random
gen_rng = random.Random(0)
gen_rng.random() > 0

# %%
round(gen_rng.random(), 6)

# %%
eval("threshold_s + 1") if (threshold_s := 41) else None

# %%
base_value = 10
eval("base_value * 2"), (lambda: eval("base_value"))()

# %% [markdown]
# ## Exceptions

# %%
try:
    1 / 0
except ZeroDivisionError as err:
    message = str(err)
message, "err" in dir()

# %%
class NotebookError(Exception):
    pass

def fails():
    raise NotebookError("raised from a notebook class")

try:
    fails()
except NotebookError as caught_error:
    caught = type(caught_error).__name__
caught

# %%
{"a": 1}["b"]

# %% limit=error-assigns-nothing
# A plain kernel keeps what ran before the error; a %%thither cell that raises assigns nothing.
partial = "bound before the error"
int("not a number")

# %% [markdown]
# ## Functions returned from cells, and what they see

# %%
threshold = 5
def above(values):
    return [v for v in values if v > threshold]
above([3, 6, 9])

# %%
threshold = 8
above([3, 6, 9])

# %%
def make_adder(k):
    return lambda v: v + k
add10 = make_adder(10)
add10(1)

# %%
add10(5), (lambda: threshold)()

# %%
def current_threshold():
    return threshold

# %% local
# A normal cell in both kernels: a function defined under %%thither must read the notebook's globals.
threshold = 99
current_threshold()

# %% [markdown]
# ## Module-level odds and ends

# %%
__name__, "__file__" in dir()

# %%
import asyncio
async def fetch(v):
    await asyncio.sleep(0)
    return v * 2
awaited = await fetch(21)
awaited

# %%
def broken(:
    pass

# %% [markdown]
# ## numpy and pandas views

# %%
import numpy as np
arr = np.arange(10)
view = arr[2:5]
view[0] = 100
arr, np.shares_memory(arr, view)

# %%
view[1] = 200
arr

# %%
import pandas as pd
frame = pd.DataFrame({"a": [1, 2, 3], "b": [4.0, 5.0, 6.0]})
col = frame["a"]
frame.loc[0, "a"] = 10
frame, col.tolist()

# %%
values = frame.to_numpy()
values.shape, values.dtype

# %% [markdown]
# ## matplotlib object API

# %%
import matplotlib
import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(4, 3))
ax.plot([0, 1, 2], [0, 1, 4], label="squares")
ax.set_title("object API")
ax.legend()
plt.close(fig)
fig

# %%
fig2, (left, right) = plt.subplots(1, 2, figsize=(6, 2.5))
left.bar(["x", "y"], [3, 5])
right.scatter([1, 2, 3], [3, 1, 2])
fig2.suptitle("two panels")
plt.show()

# %% [markdown]
# ## Printing and display

# %%
import sys
print("to stdout")
print("to stderr", file=sys.stderr)
from IPython.display import display, Markdown
display(Markdown("**bold**"))
display({"a": 1})
"last value"

# %%
import warnings
warnings.warn("careful", UserWarning)
"after warning"

# %%
_hidden = 1
visible = 2;

# %%
!echo shell line
!echo to stderr 1>&2

# %%
import this

# %%
import numpy as np
rec = np.rec.array([(1, 2.0), (3, 4.0)], names="a,b")
type(rec) is np.recarray, rec.a.sum()

# %%
type(rec) is np.recarray, isinstance(rec, np.recarray)

# %% limit=star-import-refused
from math import *
floor(2.5)

# %% limit=magics-refused
inline_value = 1
%time inline_value + 1

# %% local nondeterministic
%time inline_value_local = 5
