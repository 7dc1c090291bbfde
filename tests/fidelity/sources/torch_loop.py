# fidelity: requires=torch
# %% [markdown]
# # A small torch training loop
# Runs only where torch is installed (the harness reports "not run (torch absent)" elsewhere).

# %%
import torch
from torch import nn

torch.manual_seed(0)
X = torch.randn(64, 3)
true_w = torch.tensor([[1.5], [-2.0], [0.5]])
y = X @ true_w + 0.1 * torch.randn(64, 1)
X.shape, y.shape

# %%
model = nn.Linear(3, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
loss_fn = nn.MSELoss()

# %%
losses = []
for epoch in range(50):
    optimizer.zero_grad()
    loss = loss_fn(model(X), y)
    loss.backward()
    optimizer.step()
    losses.append(loss.item())
round(losses[0], 4), round(losses[-1], 4)

# %%
model.weight.detach().round(decimals=2), optimizer.param_groups[0]["params"][0] is model.weight

# %%
with torch.no_grad():
    prediction = model(torch.tensor([[1.0, 1.0, 1.0]]))
prediction.round(decimals=2)
