# %% [markdown]
# # numpy in a few cells
# In the style of the "numpy quickstart": creation, indexing, broadcasting, reductions, linear algebra.

# %%
import numpy as np
np.__name__

# %%
a = np.arange(15).reshape(3, 5)
a, a.shape, a.ndim, a.dtype.name, a.itemsize, a.size

# %%
b = np.array([6, 7, 8])
zeros = np.zeros((3, 4))
ones = np.ones((2, 3, 4), dtype=np.int16)
lin = np.linspace(0, 2, 9)
b, zeros.sum(), ones.shape, lin

# %%
rng = np.random.default_rng(0)
samples = rng.normal(size=(4, 3))
samples.round(3)

# %%
c = a * 2 + 1
d = a @ a.T
e = np.exp(lin)
c, d, e.round(4)

# %%
col_means = samples.mean(axis=0)
centered = samples - col_means
centered.mean(axis=0).round(12), samples.max(), samples.argmin()

# %%
mask = a % 3 == 0
a[mask], a[1, 2:4], a[:, -1], a[::2, ::2]

# %%
a[a > 10] = -1
a

# %%
stacked = np.vstack([b, b * 10])
split = np.hsplit(np.arange(12).reshape(2, 6), 3)
stacked, [s.tolist() for s in split]

# %%
flat = a.ravel()
view = a.reshape(5, 3)
copy = a.copy()
flat[0] = 99
a[0, 0], view[0, 0], copy[0, 0]

# %%
m = np.array([[3.0, 1.0], [1.0, 2.0]])
rhs = np.array([9.0, 8.0])
solution = np.linalg.solve(m, rhs)
eigvals = np.linalg.eigvals(m)
solution, np.sort(eigvals).round(6), np.allclose(m @ solution, rhs)

# %%
structured = np.array([("ann", 31, 1.6), ("bob", 27, 1.8)],
                      dtype=[("name", "U10"), ("age", "i4"), ("height", "f8")])
structured["age"].mean(), structured[structured["height"] > 1.7]["name"]

# %%
dates = np.arange("2024-01", "2024-06", dtype="datetime64[M]")
dates, np.diff(dates).astype(int)

# %%
hist, edges = np.histogram(rng.normal(size=1000), bins=5)
hist.sum(), edges.shape

# %%
def standardize(x):
    return (x - x.mean()) / x.std()

z = standardize(np.arange(10.0))
z.round(3), np.isclose(z.std(), 1.0)

# %%
np.set_printoptions(precision=2)
np.array([1 / 3, 2 / 3])

# %% local
# A normal cell in both kernels: set_printoptions made under %%thither holds in the kernel too (library_settings).
np.array([1 / 3, 2 / 3])

# %%
np.random.seed(0)

# %% local limit=module-state-in-worker
# A normal cell in both kernels: under %%thither the global RNG was seeded in the worker, not in this kernel.
float(np.random.rand() < 2), np.random.rand(2).round(3).tolist() == [0.715, 0.603]

# %%
np.set_printoptions(precision=8)
total = float(np.sum(np.arange(1, 101)))
total
