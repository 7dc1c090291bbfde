# %% [markdown]
# # pandas in a few cells
# In the style of "10 minutes to pandas": building frames, selection, groupby, merge, pivot, query, strings, dates.
# The data is made here (seeded), nothing is downloaded.

# %%
import numpy as np
import pandas as pd

rng = np.random.default_rng(0)
n = 24
sales = pd.DataFrame({
    "date": pd.date_range("2024-01-01", periods=n, freq="D"),
    "store": rng.choice(["north", "south", "east"], size=n),
    "product": rng.choice(["apple", "pear", "plum"], size=n),
    "units": rng.integers(1, 20, size=n),
    "price": rng.uniform(0.5, 3.0, size=n).round(2),
})
sales.head()

# %%
sales.dtypes, sales.shape

# %%
sales.describe().round(2)

# %%
sales["revenue"] = sales["units"] * sales["price"]
sales[["units", "revenue"]].sum().round(2)

# %%
sales.loc[sales["store"] == "north", ["date", "product", "units"]].head(3)

# %%
sales.iloc[2:5, 1:4]

# %%
by_store = sales.groupby("store")["revenue"].agg(["sum", "mean", "count"]).round(2)
by_store

# %%
summary = sales.groupby(["store", "product"], as_index=False).agg(units=("units", "sum"), revenue=("revenue", "sum"))
summary.head()

# %%
managers = pd.DataFrame({"store": ["north", "south", "east"], "manager": ["Ana", "Ben", "Cy"]})
merged = sales.merge(managers, on="store", how="left")
merged[["store", "manager"]].drop_duplicates().sort_values("store")

# %%
pivot = sales.pivot_table(index="store", columns="product", values="units", aggfunc="sum", fill_value=0)
pivot

# %%
min_units = 10
big = sales.query("units > @min_units")
len(big), big["units"].min()

# %%
expensive = sales.query("price > 2 and store == 'south'")
expensive.shape

# %%
limit_price = 1.5
cheap_count = int(pd.eval("sales.price < limit_price").sum())
cheap_count

# %%
sales["code"] = sales["store"].str.upper().str[:2] + "-" + sales["product"].str.title()
sales["code"].value_counts().sort_index()

# %%
sales["product"].str.contains("p").sum(), sales["store"].str.len().max()

# %%
sales["weekday"] = sales["date"].dt.day_name()
sales["month"] = sales["date"].dt.month
sales.groupby("weekday")["units"].sum().sort_index()

# %%
weekly = sales.set_index("date")["revenue"].resample("W").sum().round(2)
weekly

# %%
rolling = sales["units"].rolling(window=3).mean()
rolling.isna().sum(), rolling.dropna().round(2).iloc[:3].tolist()

# %%
sales.loc[sales["units"] < 3, "flag"] = "low"
sales["flag"] = sales["flag"].fillna("ok")
sales["flag"].value_counts()

# %%
long = pivot.reset_index().melt(id_vars="store", var_name="product", value_name="units")
long.sort_values(["store", "product"]).head()

# %%
ranked = sales.sort_values("revenue", ascending=False).reset_index(drop=True)
ranked.loc[0, ["store", "product", "revenue"]]

# %%
categories = sales["product"].astype("category")
categories.cat.categories.tolist(), categories.cat.codes.iloc[:5].tolist()

# %%
def top_n(frame, column, n=3):
    return frame.nlargest(n, column)[[column, "store"]]

top_n(sales, "units")

# %%
sales.to_csv("sales.csv", index=False)
reloaded = pd.read_csv("sales.csv", parse_dates=["date"])
reloaded.shape, (reloaded["units"] == sales["units"]).all()
