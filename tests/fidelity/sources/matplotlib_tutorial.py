# %% [markdown]
# # matplotlib in a few cells
# In the style of the matplotlib "quick start": pyplot and the object API, subplots, saving to a buffer.

# %%
import io
import numpy as np
import matplotlib.pyplot as plt

x = np.linspace(0, 2 * np.pi, 100)
plt.plot(x, np.sin(x))
plt.title("pyplot")
plt.show()

# %%
plt.plot(x, np.cos(x), label="cos")
plt.legend()

# %%
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(x, np.sin(x), label="sin")
ax.plot(x, np.cos(x), "--", label="cos")
ax.set(xlabel="x", ylabel="y", title="object API")
ax.legend()
plt.show()

# %%
ax.get_title(), len(ax.get_lines()), fig.get_size_inches().tolist()

# %%
fig, axs = plt.subplots(2, 2, figsize=(6, 5), layout="constrained")
rng = np.random.default_rng(0)
axs[0, 0].hist(rng.normal(size=500), bins=20)
axs[0, 1].scatter(rng.random(30), rng.random(30), c=rng.random(30))
axs[1, 0].bar(["a", "b", "c"], [3, 7, 5])
axs[1, 1].imshow(rng.random((8, 8)))
for i, a in enumerate(axs.flat):
    a.set_title(f"panel {i}")
plt.show()

# %%
[a.get_title() for a in axs.flat]

# %%
buffer = io.BytesIO()
fig.savefig(buffer, format="png", dpi=50)
png_header = buffer.getvalue()[:8]
png_header, buffer.tell() > 1000

# %%
fig3, ax3 = plt.subplots()
ax3.plot([1, 2, 3], [3, 1, 2])
ax3.set_title("left at the end")
fig3

# %%
plt.close("all")
fig4 = plt.figure(figsize=(3, 2))
fig4.add_subplot(1, 1, 1).plot([0, 1], [1, 0])
plt.close(fig4)
print("closed", plt.get_fignums())

# %%
fig5, ax5 = plt.subplots()
line, = ax5.plot([0, 1], [0, 1])
line.set_color("red")
ax5.annotate("peak", xy=(1, 1))
plt.show()

# %%
line.get_color(), len(ax5.texts)
